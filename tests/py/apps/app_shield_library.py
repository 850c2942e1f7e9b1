"""A FastAPI app built on the Shield library (PyPI `shield-crypto`, import name `shield`),
unmodified, using each of its seven FastAPI / protection names the way the library's own
docstrings show them:

- ShieldMiddleware (shield.integrations.fastapi): every JSON response outside /protected,
  /plain and /docs is sent as the library's envelope {"encrypted": true, "data": <base64 of
  Shield.encrypt(body)>, "service": SERVICE}; other responses pass through (text, streams).
- shield_protected: /protected/* encrypt their own dict results; /protected/submit also
  decrypts an enveloped request body (`encrypt_request=True`).
- ShieldAPIKeyAuth / ShieldTokenAuth as `Depends(...)`: keys and tokens issued by the app
  (/apikey/issue, /token/issue) or made by the client with the same password and service.
- RateLimiter and TokenBucket called from dependencies, APIProtector.check_request with the
  peer address the server reports (scope["client"]); rejections are the library's 429/403
  with the headers of its CheckResult.

tests/py/integrations/test_integrations_shield_library_app.py serves this under the shield
binary and under uvicorn and compares the two.  The module creates every Shield object at
import (PBKDF2, 600,000 iterations each), so start-up takes a few seconds.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from shield.integrations.fastapi import (
    ShieldAPIKeyAuth,
    ShieldMiddleware,
    ShieldTokenAuth,
    shield_protected,
)
from shield.integrations.protection import APIProtector, RateLimiter, TokenBucket

PASSWORD = "library-app-password"
SERVICE = "library-app.example"

# Limits small enough for the test to reach; windows and refills long enough that nothing
# resets or refills during a run, so both servers see the same sequence of answers.
RATE_MAX, RATE_WINDOW = 3, 3600
BUCKET_CAPACITY, BUCKET_REFILL = 2, 0.001
PROTECT_MAX = 4

app = FastAPI(title="shield-crypto under shield")
app.add_middleware(
    ShieldMiddleware,
    password=PASSWORD,
    service=SERVICE,
    exclude_routes=["/docs", "/redoc", "/openapi.json", "/protected", "/plain"],
)

api_key_auth = ShieldAPIKeyAuth(password=PASSWORD, service=SERVICE, ttl=3600)
token_auth = ShieldTokenAuth(password=PASSWORD, service=SERVICE, ttl=3600)
limiter = RateLimiter(password=PASSWORD, service=SERVICE, max_requests=RATE_MAX, window=RATE_WINDOW)
bucket = TokenBucket(
    password=PASSWORD, service=SERVICE, capacity=BUCKET_CAPACITY, refill_rate=BUCKET_REFILL
)
protector = APIProtector(password=PASSWORD, service=SERVICE)
protector.add_rate_limit(max_requests=PROTECT_MAX, window=RATE_WINDOW)
protector.add_ip_whitelist(["127.0.0.0/8", "::1/128"], require=True)
protector.add_ip_blacklist(["203.0.113.0/24"])
# loopback is blacklisted here, and outside the allow-list there: both refusals are reachable
blocked = APIProtector(password=PASSWORD, service=SERVICE).add_ip_blacklist(["127.0.0.0/8"])
outsider = APIProtector(password=PASSWORD, service=SERVICE).add_ip_whitelist(
    ["10.0.0.0/8"], require=True
)


# -- ShieldMiddleware: plain JSON routes, enveloped on the way out ---------------------------


@app.get("/health")
async def health():
    return {"status": "ok", "service": SERVICE}


@app.get("/items/{item_id}")
async def get_item(item_id: int, q: str | None = None):
    if item_id == 404:
        raise HTTPException(status_code=404, detail="Item not found")
    return {"item_id": item_id, "q": q, "name": f"item-{item_id}", "price": item_id * 1.5}


@app.post("/echo")
async def echo(payload: dict):
    return {"received": payload, "keys": sorted(payload)}


@app.get("/large")
async def large(n: int = 20000):
    return {"rows": [{"i": i, "sq": i * i, "label": f"row-{i}"} for i in range(n)]}


@app.get("/headers")
async def headers_route():
    # a custom header and a cookie set by the app must survive the middleware
    return JSONResponse(
        {"note": "with headers"},
        status_code=201,
        headers={"X-App": "library-app", "Cache-Control": "no-store"},
    )


@app.get("/stream/json")
async def stream_json(n: int = 5):
    # ShieldMiddleware reads the whole stream, then sends one envelope
    async def gen():
        yield b"["
        for i in range(n):
            await asyncio.sleep(0)
            yield (b"," if i else b"") + json.dumps({"chunk": i}).encode()
        yield b"]"

    return StreamingResponse(gen(), media_type="application/json")


@app.get("/stream/text")
async def stream_text(n: int = 5):
    # not JSON: the middleware passes the stream through untouched (chunked)
    async def gen():
        for i in range(n):
            await asyncio.sleep(0)
            yield f"line {i}\n".encode()

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/plain/text")
async def plain_text():
    return PlainTextResponse("not encrypted: text/plain is left alone")


@app.get("/plain/json")
async def plain_json():
    return {"excluded": True}


@app.get("/boom")
async def boom():
    raise RuntimeError("the app failed")


# -- shield_protected -----------------------------------------------------------------------


@app.get("/protected/data")
@shield_protected(password=PASSWORD, service=SERVICE)
async def protected_data():
    return {"secret": "only for holders of the password", "level": 3}


@app.post("/protected/submit")
@shield_protected(password=PASSWORD, service=SERVICE, encrypt_request=True)
async def protected_submit(request: Request, body: dict | None = None):
    # `body` is the decrypted request payload the decorator substitutes for the envelope
    return {"decrypted": body, "path": request.url.path}


# -- ShieldAPIKeyAuth / ShieldTokenAuth ------------------------------------------------------


@app.post("/apikey/issue")
async def issue_api_key(payload: dict):
    key = api_key_auth.generate_key(
        user_id=payload["user_id"], permissions=payload.get("permissions", [])
    )
    return {"api_key": key}


@app.get("/apikey/me")
async def api_key_me(user: dict = Depends(api_key_auth)):
    return {"user_id": user["user_id"], "permissions": user["permissions"]}


@app.post("/token/issue")
async def issue_token(payload: dict):
    token = token_auth.create_token(user_id=payload["user_id"], roles=payload.get("roles", []))
    return {"access_token": token, "token_type": "bearer"}


@app.get("/token/me")
async def token_me(user: dict = Depends(token_auth)):
    return {"sub": user["sub"], "roles": user["roles"]}


# -- RateLimiter / TokenBucket / APIProtector ------------------------------------------------


def _client_id(request: Request) -> str:
    return request.headers.get("X-Client-Id") or request.client.host


async def rate_limited(request: Request) -> str:
    ident = _client_id(request)
    if not limiter.is_allowed(ident):
        raise HTTPException(
            status_code=429,
            detail="Rate limit exceeded",
            headers={
                "X-RateLimit-Limit": str(limiter.max_requests),
                "X-RateLimit-Remaining": str(limiter.get_remaining(ident)),
                "X-RateLimit-Reset": str(int(limiter.get_reset_time(ident))),
            },
        )
    return ident


async def bucket_limited(request: Request) -> str:
    ident = _client_id(request)
    if not bucket.consume(ident):
        raise HTTPException(
            status_code=429,
            detail="Too many requests",
            headers={"Retry-After": str(int(bucket.wait_time(ident)) + 1)},
        )
    return ident


@app.get("/limited")
async def limited(ident: str = Depends(rate_limited)):
    return {"ok": True, "remaining": limiter.get_remaining(ident)}


@app.get("/bucket")
async def bucket_route(ident: str = Depends(bucket_limited)):
    return {"ok": True}


def _protect(p: APIProtector, request: Request) -> JSONResponse | dict:
    result = p.check_request(
        client_ip=request.client.host if request.client else None,
        user_id=request.headers.get("X-Client-Id"),
    )
    if not result.allowed:
        status = 429 if "rate" in (result.reason or "").lower() else 403
        return JSONResponse({"error": result.reason}, status_code=status, headers=result.headers)
    return JSONResponse({"ok": True, "client": request.client.host}, headers=result.headers)


@app.get("/guarded")
async def guarded(request: Request):
    return _protect(protector, request)


@app.get("/guarded/blocked")
async def guarded_blocked(request: Request):
    return _protect(blocked, request)


@app.get("/guarded/outsider")
async def guarded_outsider(request: Request):
    return _protect(outsider, request)


@app.get("/guarded/audit")
async def guarded_audit():
    return {
        "events": [[e["action"], e["client_ip"], e["reason"]] for e in protector.get_audit_log()]
    }
