"""A small FastAPI app served by Shield.

    scripts/run                                              # the README's first command
    shield examples.hello:app --host 127.0.0.1 --port 8000   # from the repository root
    shield hello:app --app-dir examples                      # or point --app-dir here

Then:  curl localhost:8000/  ;  curl 'localhost:8000/items/42?q=tea'
       curl -X POST localhost:8000/items -H 'content-type: application/json' \
            -d '{"name": "tea", "price": 3.5}'

scripts/run starts it with client attestation on and the simulated TEE trusted
(--attest-types simulated --trust-simulated): `curl localhost:8000/whoami` passes without
evidence (attestation is optional there), and `.venv/bin/python examples/attest_client.py`
attests with simulated evidence (header mode, then a session) and shows what /whoami sees.
"""

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

app = FastAPI(title="Shield hello")


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0)
    tags: list[str] = []


class ItemOut(BaseModel):
    item_id: int
    q: str | None = None


class Created(BaseModel):
    item: Item
    message: str


@app.get("/")
async def hello() -> dict:
    return {"message": "Hello from Shield"}


@app.get("/items/{item_id}", response_model=ItemOut)
async def read_item(item_id: int, q: str | None = None) -> ItemOut:
    return ItemOut(item_id=item_id, q=q)


@app.post("/items", response_model=Created, status_code=201)
async def create_item(item: Item) -> Created:
    return Created(item=item, message=f"created {item.name}")


@app.get("/whoami")
async def whoami(request: Request) -> dict:
    """What the server verified about the caller, before this code ran (None: no evidence)."""
    att = getattr(request.state, "attestation", None)
    if att is None:
        return {"attested": False}
    return {
        "attested": True,
        "tee_type": att.tee_type,
        "mode": att.mode,
        "session": att.session,
        "measurements": att.measurements,
        "policy_sha256": att.policy_sha256,
    }
