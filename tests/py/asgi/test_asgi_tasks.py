"""Each request runs in a real asyncio Task with a context of its own, whatever object the
server hands the Task to drive the app (pyshim/request.c's Run): current_task(), asyncio.timeout,
contextvars, cancellation, and the end of the request when the app fails or returns early
after a real suspension."""

import json

import pytest

from conftest import RawConn, http_request, wait_for

APP = "app_tasks:app"


@pytest.fixture
def srv(server):
    return server(APP)


def get(srv, target):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", target))
        return c.read_response()


def test_app_runs_in_a_task(srv):
    r = get(srv, "/task")
    assert r.status == 200
    info = json.loads(r.body)
    # repr(task) names the app's coroutine and where it is, as for a Task running it directly
    assert "coro=<app() running at " in info.pop("repr"), r.body
    assert info == {
        "task": True,
        "is_task": True,
        "same_after_sleep": True,
        "done": False,
        "stack_ok": True,
    }


def test_context_is_per_request(srv):
    # Several requests on one connection and on fresh ones: none sees another's value.
    with RawConn.to(srv) as c:
        for i in range(3):
            c.send(http_request("GET", f"/context?{i}"))
            r = c.read_response()
            assert r.status == 200 and json.loads(r.body) == {"seen": "unset"}
    for i in range(3):
        assert json.loads(get(srv, f"/context?x{i}").body) == {"seen": "unset"}


def test_exception_after_suspension_gives_500_and_is_logged(srv):
    r = get(srv, "/sleep-then-fail")
    assert r.status == 500
    wait_for(lambda: "tasks-fail-marker" in srv.stderr_text(), what="traceback in stderr")
    assert "Exception in ASGI application" in srv.stderr_text()
    assert get(srv, "/task").status == 200


def test_cancelled_task_gives_500_without_traceback(srv):
    before = srv.stderr_text().count("Exception in ASGI application")
    r = get(srv, "/cancel-self")
    assert r.status == 500
    assert get(srv, "/task").status == 200
    assert srv.stderr_text().count("Exception in ASGI application") == before


def test_return_without_response_after_suspension(srv):
    r = get(srv, "/return-early")
    assert r.status == 500
    wait_for(
        lambda: "returned without starting response" in srv.stderr_text(),
        what="error line in stderr",
    )
    assert get(srv, "/task").status == 200
