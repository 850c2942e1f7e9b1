"""Differential test: the same requests to shield and to uvicorn serving the same FastAPI
app must give the same status, body and headers (minus date and server).

With SHIELD_TEST_SERVER=uvicorn the subject is uvicorn (httptools, uvloop) and the reference
uvicorn (h11, asyncio): a check of the test itself."""

import hashlib
import json

import pytest

from conftest import IS_UVICORN, RawConn, uvicorn_available

APP = "app_fastapi:app"
HOST = "testserver"  # fixed Host so absolute URLs (redirects) match across servers
IGNORED = {"date", "server"}


def req(method, target, headers=(), body=b"", chunked=False):
    hs = [("Host", HOST), *headers]
    if chunked:
        hs.append(("Transfer-Encoding", "chunked"))
        data = b""
        for i in range(0, len(body), 1000):
            part = body[i : i + 1000]
            data += b"%x\r\n" % len(part) + part + b"\r\n"
        payload = data + b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            hs.append(("Content-Length", str(len(body))))
        payload = body
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs)
    return head.encode("latin-1") + b"\r\n" + payload


def multipart(boundary, fields, files):
    out = b""
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for name, filename, ctype, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


JSON = [("Content-Type", "application/json")]
BLOB = hashlib.sha256(b"differential").digest() * 10_000  # 320 KB, deterministic
MP = multipart(
    "XyZzy123",
    [("note", "hi there")],
    [("file", "f.bin", "application/octet-stream", BLOB[:50_000])],
)

CASES = [
    ("root", "GET", "/", (), b""),
    ("sync", "GET", "/sync", (), b""),
    ("async", "GET", "/async", (), b""),
    ("item", "GET", "/items/42?q=x&limit=3", (), b""),
    ("item-pct-digit", "GET", "/items/%34%32", (), b""),
    ("item-euro-query", "GET", "/items/5?q=%E2%82%AC+and%20more", (), b""),
    ("item-422-path", "GET", "/items/abc", (), b""),
    ("item-422-query", "GET", "/items/1?limit=many", (), b""),
    ("create", "POST", "/items", JSON, b'{"name": "tea", "price": 3.5, "tags": ["a"]}'),
    ("create-422", "POST", "/items", JSON, b'{"name": "", "price": -1}'),
    ("create-bad-json", "POST", "/items", JSON, b'{"name": '),
    ("create-no-ctype", "POST", "/items", (), b'{"name": "tea", "price": 1}'),
    ("put", "PUT", "/items/7", JSON, b'{"name": "cup", "price": 2}'),
    ("delete-204", "DELETE", "/items/7", (), b""),
    ("404", "GET", "/nope", (), b""),
    ("405", "PATCH", "/items/1", (), b""),
    ("options-405", "OPTIONS", "/", (), b""),
    ("http-exc", "GET", "/missing/cat", (), b""),
    ("path-param", "GET", "/path/a%20b/c%2Fd/%7Euser?x=1&x=2", (), b""),
    ("unicode-path", "GET", "/caf%C3%A9/cr%C3%A8me", (), b""),
    ("query-multi", "GET", "/query?a=1&b=%20two&a=3&empty=&flag&plus=a+b", (), b""),
    (
        "headers",
        "GET",
        "/headers",
        [("X-Custom", "v1"), ("X-Multi", "a"), ("X-Multi", "b"), ("User-Agent", "diff")],
        b"",
    ),
    ("state", "GET", "/state", [("X-Request-Id", "abc-123")], b""),
    (
        "json-any",
        "POST",
        "/json",
        JSON,
        json.dumps({"nested": {"k": [1, 2.5, None, True]}, "uni": "café €"}).encode(),
    ),
    ("json-chunked", "POST", "/json", JSON, b'{"chunked": true}', True),
    (
        "form",
        "POST",
        "/form",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"name=Ada+L%C3%B6velace&age=36",
    ),
    (
        "form-422",
        "POST",
        "/form",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"name=Ada",
    ),
    (
        "multipart",
        "POST",
        "/upload",
        [("Content-Type", "multipart/form-data; boundary=XyZzy123")],
        MP,
    ),
    ("hash-320k", "POST", "/hash", (), BLOB),
    ("hash-chunked", "POST", "/hash", (), BLOB, True),
    ("download", "GET", "/download?size=200000", (), b""),
    ("stream", "GET", "/stream?n=3", (), b""),
    ("head", "HEAD", "/plain", (), b""),
    ("plain", "GET", "/plain", (), b""),
    ("html", "GET", "/html", (), b""),
    ("cookie", "GET", "/cookie", (), b""),
    ("redirect-302", "GET", "/redirect", (), b""),
    ("redirect-slashes", "GET", "/slash?keep=1", (), b""),
    ("status-304", "GET", "/status/304", (), b""),
    ("status-418", "GET", "/status/418", (), b""),
    ("boom-500", "GET", "/boom", (), b""),
]


def fetch(srv, case):
    _name, method, target, headers, body, *rest = case
    chunked = bool(rest and rest[0])
    with RawConn.to(srv, timeout=15) as c:
        c.send(req(method, target, headers, body, chunked))
        r = c.read_response(method)
    hs = sorted((k, v) for k, v in r.headers if k not in IGNORED)
    return r.status, hs, r.body


@pytest.fixture
def pair(server):
    if not uvicorn_available():
        pytest.skip("uvicorn (with httptools and uvloop) is not installed for the reference")
    if IS_UVICORN:
        subject = server(APP)
        reference = server(APP, "--http", "h11", "--loop", "asyncio", kind="uvicorn")
    else:
        subject = server(APP)
        reference = server(APP, kind="uvicorn")
    return subject, reference


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_as_uvicorn(pair, case):
    subject, reference = pair
    want = fetch(reference, case)
    got = fetch(subject, case)
    assert got[0] == want[0], f"status: got {got[0]}, uvicorn {want[0]}"
    assert got[1] == want[1], "headers differ (date/server ignored)"
    assert got[2] == want[2], "bodies differ"


def test_cases_cover_the_intended_statuses(pair):
    # guards the list itself: the reference must answer with every status we mean to compare
    _, reference = pair
    seen = {fetch(reference, case)[0] for case in CASES}
    assert {200, 201, 204, 302, 304, 307, 404, 405, 418, 422, 500} <= seen, seen
