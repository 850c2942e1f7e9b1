"""An ASGI app that looks at the asyncio Task each request runs in (test_asgi_tasks.py).

Shield drives each request's app coroutine through its own wrapper object inside a real
asyncio Task; these routes check that the app cannot tell: current_task(), asyncio.timeout(),
a context of its own per request, cancellation, an exception after a real suspension.
"""

import asyncio
import contextvars
import json

VAR = contextvars.ContextVar("shield_test_var", default="unset")


async def respond(send, status, body):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def task_info(send):
    task = asyncio.current_task()
    info = {"task": task is not None, "is_task": isinstance(task, asyncio.Task)}
    # Debugging aids keep working on the object the Task drives: repr and the app's stack.
    info["repr"] = repr(task)
    info["stack_ok"] = any(f.f_code.co_name == "app" for f in task.get_stack())
    if hasattr(asyncio, "timeout"):  # 3.11+: raises RuntimeError outside a task
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(0)
    info["same_after_sleep"] = asyncio.current_task() is task
    info["done"] = task.done()
    await respond(send, 200, info)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/context":
        # A request that set the variable must not leak it into the next one.
        seen = VAR.get()
        VAR.set(scope["query_string"].decode() or "set")
        await respond(send, 200, {"seen": seen})
    elif path == "/task":
        await task_info(send)
    elif path == "/sleep-then-fail":
        await asyncio.sleep(0.01)
        raise RuntimeError("tasks-fail-marker")
    elif path == "/cancel-self":
        asyncio.current_task().cancel()
        await asyncio.sleep(5)
    elif path == "/return-early":
        await asyncio.sleep(0)
    else:
        await respond(send, 404, {"path": path})
