"""A small FastAPI app served by Shield.

    shield examples.hello:app --host 127.0.0.1 --port 8000   # from the repository root
    shield hello:app --app-dir examples                      # or point --app-dir here

Then:  curl localhost:8000/  ;  curl 'localhost:8000/items/42?q=tea'
       curl -X POST localhost:8000/items -H 'content-type: application/json' \
            -d '{"name": "tea", "price": 3.5}'
"""

from fastapi import FastAPI
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
