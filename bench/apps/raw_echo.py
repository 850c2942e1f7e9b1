"""Raw ASGI echo: returns the request body unchanged (driven with a 10 KB POST).

Measures request-body delivery (receive()) and a larger response write.
"""

BENCH = {
    "name": "raw_echo",
    "order": 20,
    "app": "app",
    "method": "POST",
    "path": "/echo",
    "headers": {"content-type": "application/octet-stream"},
    "body_size": 10240,  # the harness generates this many bytes (see bench/README.md)
    "expect_status": 200,
    "expect_echo": True,  # the response body must equal the request body
    "smoke": True,
}


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
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
