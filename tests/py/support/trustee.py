"""confidential-containers/trustee's verifier test data (deps/verifier/test_data), read in place:
real Azure CVM reports as Azure wrote them.  Never copied into this repository.

`SHIELD_TRUSTEE_GIT` names a trustee clone: its git directory (e.g. a bare clone; files are read
with `git show HEAD:…`) or a checkout.  Default, when it exists:
/work/.mirror/confidential-containers+trustee/repo (tests/c/attest/test_azure.c: the same
variable and default).  Absent: the tests
that need it skip, naming the variable; named but unusable: they fail.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import cbor2
import pytest

DEFAULT = Path("/work/.mirror/confidential-containers+trustee/repo")
DATA = "deps/verifier/test_data"
GIVEN = bool(os.environ.get("SHIELD_TRUSTEE_GIT"))
DIR = Path(os.environ["SHIELD_TRUSTEE_GIT"]) if GIVEN else DEFAULT
CHECKOUT = (DIR / DATA).is_dir()

needs_trustee = pytest.mark.skipif(
    not GIVEN and not DIR.is_dir(),
    reason=f"no trustee clone at {DEFAULT}: set SHIELD_TRUSTEE_GIT to the git directory (or a "
    "checkout) of github.com/confidential-containers/trustee",
)


def read(rel: str) -> bytes:
    """deps/verifier/test_data/<rel> of the clone (a missing file fails the test)."""
    assert DIR.is_dir(), f"SHIELD_TRUSTEE_GIT={DIR} is not a directory"
    if CHECKOUT:
        return (DIR / DATA / rel).read_bytes()
    p = subprocess.run(
        ["git", f"--git-dir={DIR}", "show", f"HEAD:{DATA}/{rel}"], capture_output=True, timeout=60
    )
    assert p.returncode == 0, f"{DIR}: HEAD:{DATA}/{rel}: {p.stderr.decode(errors='replace')}"
    return p.stdout


def b64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def as_bytes(v) -> bytes:
    """A member of trustee's evidence JSON: base64url text or a list of byte values."""
    return bytes(v) if isinstance(v, list) else b64u(v)


def cbor_bundle(**members: bytes) -> bytes:
    """A CBOR map of text keys to byte strings (docs/protocol.md §1.5 bundles)."""
    return cbor2.dumps(members)
