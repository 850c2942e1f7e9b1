"""FastAPI JSON GET with a path parameter and a pydantic response model.

The typical real-world shape: routing, parameter validation, model serialisation.
"""

from fastapi import FastAPI
from pydantic import BaseModel

BENCH = {
    "name": "fastapi_json",
    "order": 30,
    "app": "app",
    "method": "GET",
    "path": "/items/42",
    "expect_status": 200,
    "expect_json": {"id": 42, "name": "item-42", "price": 4.2, "tags": ["bench", "shield"]},
    "requires": ["fastapi", "pydantic"],
}


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]


app = FastAPI()


@app.get("/items/{item_id}", response_model=Item)
async def read_item(item_id: int) -> Item:
    return Item(id=item_id, name=f"item-{item_id}", price=item_id / 10, tags=["bench", "shield"])
