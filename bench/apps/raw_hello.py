"""Raw ASGI hello: 13-byte ``Hello, world!`` as text/plain with a content-length.

The smallest possible app, so the number measures the server, not the framework.
"""

BENCH = {
    "name": "raw_hello",
    "order": 10,
    "app": "app",
    "method": "GET",
    "path": "/",
    "expect_status": 200,
    "expect_body": "Hello, world!",
    "smoke": True,
    "memory": True,  # the app used for the idle keep-alive connection memory test
}

BODY = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
