"""A man in the middle for tests/py/integrations/test_integrations_attested_client.py: it answers
GET /.well-known/shield/attestation with an attestation document recorded earlier (the JSON
file SHIELD_TEST_REPLAY) instead of fresh evidence.  SHIELD_TEST_REPLAY_ECHO=1 puts the
client's nonce into the answer, as a forger would (the evidence still binds the old one)."""

import json
import os

from fastapi import FastAPI, Request

app = FastAPI()


@app.get("/.well-known/shield/attestation")
async def attestation(request: Request):
    with open(os.environ["SHIELD_TEST_REPLAY"], encoding="utf-8") as f:
        doc = json.load(f)
    if os.environ.get("SHIELD_TEST_REPLAY_ECHO") == "1":
        doc["nonce"] = request.query_params["nonce"]
    return doc


@app.get("/data")
async def data():
    return {"ok": True}
