"""examples/hello.py, served the way the README says."""

import httpx
import pytest

from conftest import REPO, scaled


@pytest.fixture
def client(server):
    # the README's command: `shield examples.hello:app` from the repository root
    srv = server("examples.hello:app", "--app-dir", str(REPO))
    with httpx.Client(base_url=srv.url, timeout=scaled(10)) as c:
        yield c


def test_hello(client):
    r = client.get("/")
    assert r.status_code == 200 and r.json() == {"message": "Hello from Shield"}


def test_read_item(client):
    assert client.get("/items/42", params={"q": "tea"}).json() == {"item_id": 42, "q": "tea"}
    assert client.get("/items/x").status_code == 422


def test_create_item(client):
    r = client.post("/items", json={"name": "tea", "price": 3.5})
    assert r.status_code == 201
    assert r.json() == {"item": {"name": "tea", "price": 3.5, "tags": []}, "message": "created tea"}
    assert client.post("/items", json={"name": "tea"}).status_code == 422


def test_openapi_served(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.json()["info"]["title"] == "Shield hello"
