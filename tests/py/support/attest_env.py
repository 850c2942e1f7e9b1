"""One simulated-TEE dev root and one state secret per test run, shared by every module that
serves or produces simulated evidence (the middleware under uvicorn, the native gate, the
workers, the policy matrix): importing this module creates them and points XDG_DATA_HOME at
the dev root, so the servers started with ENV and this process sign and verify with the same
root."""

from __future__ import annotations

import atexit
import hashlib
import os
import secrets
import shutil
import tempfile

DATA_HOME = tempfile.mkdtemp(prefix="shield-attest-home-")
atexit.register(shutil.rmtree, DATA_HOME, True)
os.environ["XDG_DATA_HOME"] = DATA_HOME  # the servers and this process share the dev root
SECRET = os.path.join(DATA_HOME, "state-secret")
with open(SECRET, "wb") as f:
    f.write(secrets.token_bytes(32))
DEFAULT_PCR0 = hashlib.sha384(b"shield-simulated-pcr0").hexdigest()
ENV = {
    "SHIELD_TEST_ATTEST_SECRET": SECRET,
    "SHIELD_TEST_ATTEST_PCR0": DEFAULT_PCR0,
    "XDG_DATA_HOME": DATA_HOME,
}
