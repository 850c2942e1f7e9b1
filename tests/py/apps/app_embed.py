"""Raw ASGI app that reports on the embedded interpreter and its event loop (test_asgi_embed.py)."""

import asyncio
import json
import sys


async def _get(port: int, path: str) -> bytes:
    # A real client connection made through the app's own event loop: under --loop uvloop this
    # runs on uvloop's bundled libuv while shield's own (static, hidden) libuv serves it.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/ping":
        body = b"pong"
    elif scope["path"] == "/selfcall":
        reply = await _get(scope["server"][1], "/ping")
        body = json.dumps({"reply_ok": reply.endswith(b"pong") and b" 200 " in reply}).encode()
    else:
        loop = asyncio.get_running_loop()
        info = {
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "loop_module": type(loop).__module__,
            "uvloop_loaded": "uvloop" in sys.modules,
            "argv0": sys.argv[0] if sys.argv else None,
        }
        try:
            import fastapi  # noqa: F401  (site-packages of the venv are importable)

            info["fastapi"] = True
        except ImportError:
            info["fastapi"] = False
        body = json.dumps(info).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
