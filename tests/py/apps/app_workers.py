"""A raw ASGI app for the workers/flags tests: which process answered, slow and body-reading
routes.

Environment: SHIELD_TEST_LIFESPAN_LOG (append "startup PID"/"shutdown PID" lines).
"""

import asyncio
import json
import os
import urllib.parse


def _log(line):
    path = os.environ.get("SHIELD_TEST_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


async def _json(send, obj, status=200):
    body = json.dumps(obj).encode()
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


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                _log(f"startup {os.getpid()}")
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                _log(f"shutdown {os.getpid()}")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    q = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
    pid = os.getpid()
    if path == "/pid":
        return await _json(send, {"pid": pid})
    if path == "/sleep":
        await asyncio.sleep(float(q.get("s", "0.5")))
        return await _json(send, {"pid": pid, "slept": True})
    if path == "/scope":
        return await _json(
            send,
            {
                "pid": pid,
                "client": scope.get("client"),
                "scheme": scope["scheme"],
                "root_path": scope["root_path"],
            },
        )
    if path == "/body":
        n = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                _log(f"disconnect {pid}")
                return
            n += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        return await _json(send, {"pid": pid, "received": n})
    if path == "/version":
        return await _json(send, {"pid": pid, "version": "v1"})
    await _json(send, {"error": "not found"}, 404)
