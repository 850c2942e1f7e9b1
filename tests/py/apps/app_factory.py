"""An application factory (served with --factory): create_app() builds the app."""

from fastapi import FastAPI

CALLS = {"n": 0}


def create_app() -> FastAPI:
    CALLS["n"] += 1
    app = FastAPI()

    @app.get("/factory")
    async def factory():
        return {"factory": True, "calls": CALLS["n"]}

    return app
