"""A realistic FastAPI app exercising what real deployments use: sync and async routes,
path/query params, pydantic bodies and 422s, forms and multipart uploads, streaming, large
bodies, background tasks, exceptions, lifespan state and middleware-set request.state.

Environment: SHIELD_TEST_LIFESPAN_LOG (append "startup"/"shutdown").
"""

import asyncio
import hashlib
import os
import threading
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, Field

# 64 KiB block the download route repeats; tests rebuild it to check integrity.
BLOCK = hashlib.sha256(b"shield").digest() * 2048
BG_STORE: dict = {}


class FakeDB:
    def __init__(self):
        self.name = "fake-db"
        self.queries = 0


def _log(line: str) -> None:
    path = os.environ.get("SHIELD_TEST_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@asynccontextmanager
async def lifespan(app: FastAPI):
    db = FakeDB()
    _log("startup")
    yield {"db": db}
    _log("shutdown")


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def request_id_middleware(request: Request, call_next):
    request.state.request_id = request.headers.get("x-request-id", "none")
    response = await call_next(request)
    response.headers["x-request-id"] = request.state.request_id
    return response


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    price: float = Field(gt=0)
    tags: list[str] = []
    description: str | None = None


class ItemOut(BaseModel):
    item_id: int
    q: str | None = None
    limit: int


@app.get("/")
async def root():
    return {"hello": "world"}


@app.get("/sync")
def sync_route():
    return {"sync": True, "in_main_thread": threading.current_thread() is threading.main_thread()}


@app.get("/async")
async def async_route():
    return {"async": True}


@app.get("/items/{item_id}", response_model=ItemOut)
async def read_item(item_id: int, q: str | None = None, limit: int = 10):
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"created": item.model_dump()}


@app.put("/items/{item_id}")
def replace_item(item_id: int, item: Item):
    return {"item_id": item_id, "item": item.model_dump()}


@app.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int):
    return Response(status_code=204)


@app.get("/missing/{thing}")
async def missing(thing: str):
    raise HTTPException(status_code=404, detail=f"no {thing}", headers={"x-why": "missing"})


@app.get("/path/{rest:path}")
async def path_param(rest: str, request: Request):
    return {"rest": rest, "path": request.url.path, "query": str(request.query_params)}


@app.get("/café/{name}")
async def unicode_route(name: str):
    return {"name": name}


@app.get("/query")
async def query(request: Request):
    return {"items": sorted(request.query_params.multi_items())}


@app.get("/headers")
async def headers(request: Request):
    return {
        "x-custom": request.headers.get("x-custom"),
        "x-multi": request.headers.getlist("x-multi"),
        "user-agent-present": "user-agent" in request.headers,
    }


@app.get("/state")
async def state(request: Request):
    db = request.state.db
    db.queries += 1
    return {"db": db.name, "request_id": request.state.request_id}


@app.get("/sleep")
async def sleep(s: float = 0.2):
    await asyncio.sleep(s)
    return {"slept": s}


@app.post("/json")
async def json_any(payload: dict):
    return {"received": payload, "keys": sorted(payload)}


@app.post("/form")
async def form(name: Annotated[str, Form()], age: Annotated[int, Form()]):
    return {"name": name, "age": age}


@app.post("/upload")
async def upload(file: Annotated[UploadFile, File()], note: Annotated[str, Form()] = ""):
    h = hashlib.sha256()
    size = 0
    while chunk := await file.read(1 << 16):
        h.update(chunk)
        size += len(chunk)
    return {
        "filename": file.filename,
        "content_type": file.content_type,
        "size": size,
        "sha256": h.hexdigest(),
        "note": note,
    }


@app.post("/hash")
async def hash_body(request: Request):
    h = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        h.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


@app.get("/download")
async def download(size: int = 1 << 20):
    async def gen():
        left = size
        while left > 0:
            n = min(left, len(BLOCK))
            yield BLOCK[:n]
            left -= n

    return StreamingResponse(gen(), media_type="application/octet-stream")


@app.get("/stream")
async def stream(n: int = 5):
    async def gen():
        for i in range(n):
            yield f"line {i}\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(gen(), media_type="text/plain")


@app.api_route("/plain", methods=["GET", "HEAD"])
async def plain():
    return PlainTextResponse("plain text\n")


@app.get("/html")
async def html():
    return HTMLResponse("<h1>hi</h1>")


@app.get("/cookie")
async def cookie():
    r = JSONResponse({"cookie": "set"})
    r.set_cookie("session", "abc123", httponly=True)
    return r


@app.get("/redirect")
async def redirect():
    return RedirectResponse("/", status_code=302)


@app.get("/slash/")
async def slash():
    return {"slash": True}


@app.get("/status/{code}")
async def status(code: int):
    return Response(status_code=code, content=b"" if code in (204, 304) else b"status")


def _bg_set(key: str, value: str) -> None:
    BG_STORE[key] = value


async def _bg_set_async(key: str, value: str) -> None:
    await asyncio.sleep(0.05)
    BG_STORE[key] = value


@app.post("/bg/{key}")
async def bg_start(key: str, value: str, tasks: BackgroundTasks, use_async: bool = True):
    tasks.add_task(_bg_set_async if use_async else _bg_set, key, value)
    return {"scheduled": key}


@app.get("/bg/{key}")
async def bg_read(key: str):
    return {"value": BG_STORE.get(key)}


@app.get("/boom")
async def boom():
    raise RuntimeError("fastapi-boom-marker")


@app.get("/boom-sync")
def boom_sync():
    raise ValueError("fastapi-boom-sync-marker")
