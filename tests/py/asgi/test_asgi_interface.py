"""`--interface auto|asgi3|asgi2` (uvicorn's flag, issue 14): asgi3 and asgi2 force how the app
is called, auto detects it (uvicorn's rules, plus functools.partial of an async function and
callables that return a coroutine), wsgi and unknown values are refused."""

import subprocess

import pytest

from conftest import APPS_DIR, RawConn, http_request, scaled, shield_bin


def answer(srv) -> str:
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/"))
        r = c.read_response()
        assert r.status == 200, r
        return r.body.decode()


AUTO = {
    "partial_app": "asgi3 partial",
    "plain_def_app": "asgi3 plain-def",
    "sync_call_app": "asgi3 sync-call",
    "asgi2_app": "asgi2 asgi2-def",
    "Asgi2Class": "asgi2 asgi2-class",
    "dual_app": "asgi2 dual",
}


# uvicorn's auto detection calls partials and plain functions as ASGI 2 (they then fail).
@pytest.mark.shield_only
@pytest.mark.parametrize("attr", AUTO.keys())
def test_auto_detection(server, attr):
    srv = server(f"app_interface:{attr}", "--lifespan", "off")
    assert answer(srv) == AUTO[attr]


@pytest.mark.parametrize(
    "attr,want",
    [
        ("plain_def_app", "asgi3 plain-def"),
        ("partial_app", "asgi3 partial"),
        ("dual_app", "asgi3 dual"),
    ],
)
def test_interface_asgi3_forces_asgi3(server, attr, want):
    srv = server(f"app_interface:{attr}", "--lifespan", "off", "--interface", "asgi3")
    assert answer(srv) == want


@pytest.mark.parametrize(
    "attr,want", [("asgi2_app", "asgi2 asgi2-def"), ("dual_app", "asgi2 dual")]
)
def test_interface_asgi2_forces_asgi2(server, attr, want):
    srv = server(f"app_interface:{attr}", "--lifespan", "off", "--interface", "asgi2")
    assert answer(srv) == want


def test_interface_asgi2_on_an_asgi3_app_is_honoured(server):
    # the flag is not ignored: an ASGI 3 app called as ASGI 2 fails (500), as under uvicorn
    srv = server("app_raw:app", "--lifespan", "off", "--interface", "asgi2")
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        assert c.read_response().status == 500


@pytest.mark.shield_only
@pytest.mark.parametrize("value", ["wsgi", "asgi4", ""])
def test_bad_interface_values_are_refused(value):
    r = subprocess.run(
        [
            str(shield_bin()),
            "app_interface:asgi2_app",
            "--app-dir",
            str(APPS_DIR),
            f"--interface={value}",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--interface" in r.stderr
