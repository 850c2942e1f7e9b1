"""Client-attestation state shared through Redis (docs/protocol.md §1.1): two servers with the same
nonce secret file and --state-url refuse a nonce the other consumed and share sessions.  Starts
a real redis-server (Debian) on a free loopback port."""

from __future__ import annotations

import shutil

import httpx
import pytest

from support.attest_env import ENV  # sets XDG_DATA_HOME and the secret file
from support.attest_redis_cases import (  # noqa: F401  (shared cases, run here with this module's pair)
    test_nonce_consumed_on_one_server_is_refused_by_the_other,
    test_session_shared_and_proofs_monotonic_across_servers,
)

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


@pytest.fixture(scope="module")
def pair(server, redis_url):
    env = dict(ENV, SHIELD_TEST_ATTEST_STATE=redis_url)
    a = server("app_attest:app", env=env, kind="uvicorn")
    b = server("app_attest:app", "--timeout-keep-alive", "6", env=env, kind="uvicorn")
    with (
        httpx.Client(base_url=a.url, timeout=30) as ca,
        httpx.Client(base_url=b.url, timeout=30) as cb,
    ):
        yield ca, cb
