"""Apps in the shapes `--interface` must tell apart (uvicorn's ASGI 2 / ASGI 3 detection):
each answers with the interface it was called as ("asgi2" or "asgi3") and its own name."""

import functools


async def _answer(send, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _asgi3(name, scope, receive, send):
    if scope["type"] == "http":
        await _answer(send, f"asgi3 {name}")


# functools.partial of an async function: an ASGI 3 app
partial_app = functools.partial(_asgi3, "partial")


# a plain function returning a coroutine: an ASGI 3 app
def plain_def_app(scope, receive, send):
    return _asgi3("plain-def", scope, receive, send)


class _SyncCall:
    def __call__(self, scope, receive, send):
        return _asgi3("sync-call", scope, receive, send)


# an object whose (plain) __call__ returns a coroutine
sync_call_app = _SyncCall()


# a classic ASGI 2 app: app(scope) returns an instance awaited with (receive, send)
def asgi2_app(scope):
    async def instance(receive, send):
        if scope["type"] == "http":
            await _answer(send, "asgi2 asgi2-def")

    return instance


class Asgi2Class:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "http":
            await _answer(send, "asgi2 asgi2-class")


# callable either way: only --interface decides how it is called (auto: ASGI 2, as uvicorn)
def dual_app(scope, receive=None, send=None):
    if receive is None:

        async def instance(receive, send):
            if scope["type"] == "http":
                await _answer(send, "asgi2 dual")

        return instance
    return _asgi3("dual", scope, receive, send)
