"""Shared set-up of tests/py/integrations/test_integrations_server_attestation.py and
test_integrations_attested_client.py:
the certificates (tls_certs.make_pki), a simulated dev root of the run's own, and servers of
tests/py/apps/app_server_attest.py (AttestationRouter, docs/protocol.md §4) over TLS on
127.0.0.1, under uvicorn or the real shield binary."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from conftest import IS_UVICORN, ServerProcess
from support.tls_certs import make_pki

APP = "app_server_attest:app"
REPLAY_APP = "app_attest_replay:app"

_DIR = Path(tempfile.mkdtemp(prefix="shield-server-attest-"))
PKI = make_pki(_DIR / "pki")
DATA_HOME = _DIR / "data"  # XDG_DATA_HOME: the dev root of the shield gate and the provider
DATA_DIR = DATA_HOME / "shield"
DATA_DIR.mkdir(parents=True, exist_ok=True)

# the simulated TEE's default PCR0: SHA-384("shield-simulated-pcr0") (attest/simulated.c)
DEFAULT_PCR0 = hashlib.sha384(b"shield-simulated-pcr0").hexdigest()
OTHER_PCR0 = hashlib.sha384(b"another enclave image").hexdigest()

# the real server in either mode; "shield" is skipped when the suite runs against uvicorn
KINDS = ["uvicorn", "shield"]


def kinds_param():
    import pytest

    return pytest.mark.parametrize(
        "kind",
        [
            "uvicorn",
            pytest.param(
                "shield",
                marks=pytest.mark.skipif(IS_UVICORN, reason="the shield binary: shield mode only"),
            ),
        ],
    )


def env(**extra) -> dict:
    e = {"XDG_DATA_HOME": str(DATA_HOME), "SHIELD_TEST_DATA_DIR": str(DATA_DIR)}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def tls_args(cert: str = "server") -> tuple[str, ...]:
    return ("--ssl-certfile", str(PKI[f"{cert}.pem"]), "--ssl-keyfile", str(PKI[f"{cert}.key"]))


def start(fresh_server, kind: str, *args: str, app: str = APP, **extra) -> ServerProcess:
    return fresh_server(app, *args, env=env(**extra), kind=kind)


def dev_root() -> bytes:
    from shield_asgi import _native

    return _native.simulated_root(str(DATA_DIR))


def spki_sha256(cert: str = "server") -> bytes:
    from shield_asgi.server_attestation import spki_of_certificate

    return hashlib.sha256(spki_of_certificate(PKI[f"{cert}.pem"].read_bytes())).digest()


def ca_ctx():
    """An SSL context trusting the test CA (httpx's verify=)."""
    import ssl

    return ssl.create_default_context(cafile=str(PKI["ca.pem"]))


def b64e_nonce(b: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
