"""A raw ASGI app for the workers/flags tests: which process answered, the shared state
table and secret (`_shield_state`, built into shield), slow and body-reading routes.

Environment: SHIELD_TEST_LIFESPAN_LOG (append "startup PID"/"shutdown PID" lines).
"""

import asyncio
import hashlib
import json
import os
import urllib.parse

try:
    import _shield_state as STATE
except ImportError:  # under uvicorn
    STATE = None


def _log(line):
    path = os.environ.get("SHIELD_TEST_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


async def _json(send, obj, status=200):
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _key(k):
    return hashlib.sha256(k.encode()).digest()


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
        return await _json(send, {"pid": pid, "client": scope.get("client"),
                                  "scheme": scope["scheme"], "root_path": scope["root_path"]})
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
    if path == "/state/put":
        ok = STATE.put(_key(q["k"]), q["v"].encode(), float(q.get("ttl", "60")),
                       q.get("absent") == "1")
        return await _json(send, {"pid": pid, "stored": ok})
    if path == "/state/get":
        v = STATE.get(_key(q["k"]))
        return await _json(send, {"pid": pid, "value": None if v is None else v.decode()})
    if path == "/state/secret":
        s = STATE.secret()
        return await _json(send, {"pid": pid, "sha256": hashlib.sha256(s).hexdigest(),
                                  "len": len(s)})
    if path == "/version":
        return await _json(send, {"pid": pid, "version": "v1"})
    await _json(send, {"error": "not found"}, 404)
