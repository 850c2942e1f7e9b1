"""ASGI lifespan: startup before serving, shutdown on SIGTERM, state reaching handlers,
apps without lifespan support, --lifespan on/off, failed startup, --factory."""

import signal
import time

import httpx

from conftest import RawConn, http_request, scaled


def lines(path):
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def test_raw_startup_and_shutdown(fresh_server, tmp_path):
    log = tmp_path / "lifespan.log"
    srv = fresh_server("app_raw:app", env={"SHIELD_TEST_LIFESPAN_LOG": str(log)})
    r = httpx.get(srv.url + "/text", timeout=scaled(10))
    assert r.status_code == 200
    assert lines(log) == ["startup"]
    srv.stop()
    assert lines(log) == ["startup", "shutdown"], srv.describe()


def test_fastapi_startup_and_shutdown(fresh_server, tmp_path):
    log = tmp_path / "lifespan.log"
    srv = fresh_server("app_fastapi:app", env={"SHIELD_TEST_LIFESPAN_LOG": str(log)})
    assert httpx.get(srv.url + "/", timeout=scaled(10)).json() == {"hello": "world"}
    assert lines(log) == ["startup"]
    srv.stop()
    assert lines(log) == ["startup", "shutdown"], srv.describe()


def test_requests_wait_for_slow_startup(fresh_server, tmp_path):
    # A server may accept connections before startup completes, but must not run the app
    # for a request until lifespan.startup.complete was sent.
    srv = fresh_server("app_raw:app", env={"SHIELD_TEST_STARTUP_DELAY": "1.0"})
    r = httpx.get(srv.url + "/scope", timeout=scaled(10))
    assert r.status_code == 200
    assert r.json()["scope"]["startup_done_before_request"] is True
    assert r.json()["scope"]["state_started"] is True


def test_lifespan_state_and_middleware_state(server):
    srv = server("app_fastapi:app")
    r = httpx.get(srv.url + "/state", headers={"x-request-id": "req-42"}, timeout=scaled(10))
    assert r.status_code == 200
    assert r.json() == {"db": "fake-db", "request_id": "req-42"}
    assert r.headers["x-request-id"] == "req-42"


def test_lifespan_state_is_shallow_copied_per_request(server):
    # ASGI: each request gets a shallow copy of the lifespan state: a key added by one
    # request is not seen by the next, but mutable objects from startup are shared.
    srv = server("app_raw:app")
    with httpx.Client(base_url=srv.url, timeout=scaled(10)) as c:
        first = c.get("/state-mutate").json()
        second = c.get("/state-mutate").json()
    assert first["saw_added"] is False and second["saw_added"] is False
    assert second["counter"] == first["counter"] + 1


def test_gc_freeze_after_startup_by_default(fresh_server):
    # The app's start-up objects go to the permanent generation (gc.freeze) unless
    # --no-gc-freeze: full collections under load then skip them (bench/RESULTS.md).
    frozen = fresh_server("app_raw:app")
    assert int(httpx.get(frozen.url + "/gc", timeout=scaled(10)).text) > 1000
    plain = fresh_server("app_raw:app", "--no-gc-freeze")
    assert httpx.get(plain.url + "/gc", timeout=scaled(10)).text == "0"


def test_app_without_lifespan_tolerated_in_auto_mode(fresh_server):
    srv = fresh_server("app_nolifespan:app", "--lifespan", "auto")
    r = httpx.get(srv.url + "/", timeout=scaled(10))
    assert r.status_code == 200
    assert r.text == "no lifespan here"
    # auto mode: "lifespan unsupported" is an info line (as in uvicorn), not a traceback
    assert "Traceback" not in srv.stderr_text()


def test_app_without_lifespan_fails_with_lifespan_on(fresh_server):
    srv = fresh_server("app_nolifespan:app", "--lifespan", "on", wait=False)
    rc = srv.wait_exit(scaled(15))
    assert rc is not None and rc != 0, f"expected non-zero exit, got {rc}\n{srv.describe()}"


def test_lifespan_off_never_calls_lifespan(fresh_server, tmp_path):
    log = tmp_path / "lifespan.log"
    srv = fresh_server(
        "app_raw:app", "--lifespan", "off", env={"SHIELD_TEST_LIFESPAN_LOG": str(log)}
    )
    r = httpx.get(srv.url + "/scope", timeout=scaled(10))
    assert r.status_code == 200
    assert r.json()["scope"]["state_started"] in (False, None)
    srv.stop()
    assert lines(log) == []


def test_failed_startup_exits_nonzero(fresh_server):
    srv = fresh_server(
        "app_raw:app",
        "--lifespan",
        "on",
        env={"SHIELD_TEST_FAIL_STARTUP": "db-unreachable-marker"},
        wait=False,
    )
    rc = srv.wait_exit(scaled(15))
    assert rc is not None and rc != 0, f"expected non-zero exit, got {rc}\n{srv.describe()}"
    assert "db-unreachable-marker" in srv.stderr_text()


def test_factory(fresh_server):
    srv = fresh_server("app_factory:create_app", "--factory")
    r = httpx.get(srv.url + "/factory", timeout=scaled(10))
    assert r.status_code == 200
    assert r.json() == {"factory": True, "calls": 1}


def test_bad_app_reference_exits_nonzero(fresh_server):
    srv = fresh_server("app_raw:does_not_exist", wait=False)
    rc = srv.wait_exit(scaled(15))
    assert rc is not None and rc != 0, srv.describe()
    assert "does_not_exist" in srv.stderr_text()


def test_sigterm_lets_inflight_request_finish(fresh_server):
    # graceful shutdown: a request in flight when SIGTERM arrives still gets its response
    srv = fresh_server("app_raw:app")
    with RawConn.to(srv) as c:
        # The listener opens before the worker's interpreter is up (slow under ASan): answer
        # one request first so the app is surely serving, then the slow one.
        c.send(http_request("GET", "/text"))
        assert c.read_response().status == 200
        c.send(http_request("GET", "/sleep?s=0.5"))
        # make sure the request reached the app before signalling
        time.sleep(scaled(0.2))
        srv.signal(signal.SIGTERM)
        r = c.read_response()
        assert r.status == 200 and r.body == b"slept"
    assert srv.wait_exit(scaled(10)) is not None, "server did not exit after SIGTERM"
