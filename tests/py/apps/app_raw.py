"""A raw ASGI 3 app (no framework) for checking exactly what the server hands the app and
how it frames what the app sends back.  Dispatch is on scope["path"] minus root_path.

Environment (read at lifespan startup):
  SHIELD_TEST_LIFESPAN_LOG   file to append "startup"/"shutdown" lines to
  SHIELD_TEST_STARTUP_DELAY  seconds to sleep in startup (checks the server waits for it)
  SHIELD_TEST_FAIL_STARTUP   if set: answer lifespan.startup.failed with this message
"""

import asyncio
import base64
import hashlib
import json
import os
import urllib.parse

# Events recorded by the disconnect-aware routes, read back with GET /disconnects?id=...
DISCONNECTS: dict = {}
STARTED = {"done": False}


def _log(line: str) -> None:
    path = os.environ.get("SHIELD_TEST_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _jsonable(v):
    """Scope values to JSON, keeping the Python type visible."""
    if isinstance(v, bytes):
        return {"bytes": base64.b64encode(v).decode()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return {"repr": repr(v)}


def _types(scope) -> dict:
    out = {}
    for k, v in scope.items():
        out[k] = type(v).__name__
    for k in ("client", "server"):
        if scope.get(k) is not None:
            out[k + "_items"] = [type(x).__name__ for x in scope[k]]
    out["headers_items"] = sorted(
        {
            f"{type(h).__name__}:{type(h[0]).__name__}:{type(h[1]).__name__}"
            for h in scope.get("headers", [])
        }
    )
    return out


async def read_body(receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def respond(send, status, body: bytes, headers=(), content_length=True):
    hs = [(b"content-type", b"text/plain; charset=utf-8"), *headers]
    if content_length:
        hs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send, body, status):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            delay = float(os.environ.get("SHIELD_TEST_STARTUP_DELAY", "0") or 0)
            if delay:
                await asyncio.sleep(delay)
            fail = os.environ.get("SHIELD_TEST_FAIL_STARTUP")
            if fail:
                _log("startup-failed")
                await send({"type": "lifespan.startup.failed", "message": fail})
                return
            if "state" in scope:
                scope["state"]["started"] = True
                scope["state"]["counter"] = [0]
            STARTED["done"] = True
            _log("startup")
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            _log("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http", scope["type"]

    root = scope.get("root_path", "")
    path = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    q = dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1")))

    if path == "/scope" or path.startswith("/scope/"):
        body = await read_body(receive)
        s = {k: v for k, v in scope.items() if k != "state"}
        state = scope.get("state")
        s["state_keys"] = sorted(state.keys()) if isinstance(state, dict) else None
        s["state_started"] = bool(state.get("started")) if isinstance(state, dict) else None
        s["body_len"] = None if body is None else len(body)
        s["startup_done_before_request"] = STARTED["done"]
        return await _json(
            send, json.dumps({"scope": _jsonable(s), "types": _types(scope)}).encode(), 200
        )

    if path == "/state-mutate":
        # ASGI: scope["state"] is a *shallow copy* of the lifespan state per request
        st = scope["state"]
        saw_added = "added" in st
        st["added"] = True
        st["counter"][0] += 1
        return await _json(
            send, json.dumps({"saw_added": saw_added, "counter": st["counter"][0]}).encode(), 200
        )

    if path == "/echo":
        body = await read_body(receive)
        if body is None:
            return
        return await respond(
            send, 200, body, [(b"x-body-sha256", hashlib.sha256(body).hexdigest().encode())]
        )

    if path == "/echo-nocl":
        # one body message, no content-length from the app: shield adds content-length
        body = await read_body(receive)
        if body is None:
            return
        return await respond(send, 200, body, content_length=False)

    if path == "/text":
        return await respond(send, 200, b"hello world\n")

    if path == "/gc":  # --gc-freeze: what start-up made is out of the collector's reach
        import gc

        return await respond(send, 200, str(gc.get_freeze_count()).encode())

    if path == "/stream":
        n = int(q.get("n", "5"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for i in range(n):
            await send(
                {"type": "http.response.body", "body": f"chunk-{i}\n".encode(), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/status":
        code = int(q.get("code", "204"))
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return

    if path == "/close-header":
        return await respond(send, 200, b"bye", [(b"connection", b"close")])

    if path == "/sleep":
        await asyncio.sleep(float(q.get("s", "0.2")))
        return await respond(send, 200, b"slept")

    if path == "/fail-before":
        raise RuntimeError("raw-fail-before-marker")

    if path == "/fail-after":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        raise RuntimeError("raw-fail-after-marker")

    if path == "/fail-after-start":
        # raises after http.response.start, before any body: nothing has reached the wire
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-started", b"1")]}
        )
        raise RuntimeError("raw-fail-after-start-marker")

    if path == "/return-after-start":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        return

    if path == "/fail-after-cl":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        raise RuntimeError("raw-fail-after-cl-marker")

    if path == "/no-response":
        return  # returns without starting a response: the server answers 500

    if path == "/inject":
        # a header value with CR LF: a correct server refuses to emit it
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"x-ok", b"a\r\nx-injected: yes"),
                    (b"content-length", b"2"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
        return

    if path == "/inject-name":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-bad\r\nx-injected", b"yes"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
        return

    if path == "/overlong":
        # declares 5 bytes, sends 10: the server must not put more than 5 on the wire
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"5"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": False})
        return

    if path == "/expect":
        if q.get("read", "1") == "1":
            body = await read_body(receive)
            if body is None:
                return
            return await respond(send, 200, b"read:" + body)
        return await respond(send, 200, b"no-read")

    if path == "/disconnect-body":
        # reads the body; a client that leaves mid-body must show up as http.disconnect
        key = q.get("id", "x")
        got = 0
        DISCONNECTS[key] = "reading"
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                DISCONNECTS[key] = f"disconnect after {got} bytes"
                return
            got += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                DISCONNECTS[key] = f"complete {got} bytes"
                return await respond(send, 200, b"complete")

    if path == "/disconnect-stream":
        # streams until the client leaves; records how the app learnt it
        key = q.get("id", "x")
        DISCONNECTS[key] = "streaming"
        await read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        gone = asyncio.Event()

        async def watch():
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            for i in range(1000):  # ~20 s at most
                if gone.is_set():
                    DISCONNECTS[key] = "disconnect via receive"
                    return
                try:
                    await send(
                        {"type": "http.response.body", "body": b"x" * 1024, "more_body": True}
                    )
                except OSError as e:
                    DISCONNECTS[key] = f"send raised {type(e).__name__}"
                    return
                await asyncio.sleep(0.02)
            DISCONNECTS[key] = "never noticed"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    if path == "/disconnects":
        return await _json(
            send, json.dumps({"event": DISCONNECTS.get(q.get("id", "x"))}).encode(), 200
        )

    await respond(send, 404, b"not found")
