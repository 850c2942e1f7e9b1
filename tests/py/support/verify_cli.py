"""Where the attestation tests find the shared vectors and the `shield verify` command line.

The CLI is `$SHIELD_ATTEST_VERIFY` (e.g. a sanitizer build's test-only attest-verify), else
`shield verify` from `$SHIELD_BIN`, the venv or PATH, else the test-only `attest-verify` of any
build directory (cli/); the first one whose --help (exit 0, on stdout) mentions `feature` (a flag
the caller needs) wins.
"""

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO

VECTORS = Path(os.environ.get("SHIELD_VECTORS", REPO.parent / "shared" / "vectors")) / "attestation"


def find_verify_cmd(feature: str = "--type"):
    cands = []
    if os.environ.get("SHIELD_ATTEST_VERIFY"):
        cands.append([os.environ["SHIELD_ATTEST_VERIFY"]])
    if os.environ.get("SHIELD_BIN"):
        cands.append([os.environ["SHIELD_BIN"], "verify"])
    for name in ("shield", "shield-asgi"):  # the same binary (README: shield-crypto's `shield`)
        cands.append([str(REPO / ".venv" / "bin" / name), "verify"])
    for name in ("shield", "shield-asgi"):
        if shutil.which(name):
            cands.append([shutil.which(name), "verify"])
    cands += [[str(p)] for p in sorted((REPO / "build").glob("*/cli/attest-verify"))]
    for c in cands:
        if Path(c[0]).exists():
            p = subprocess.run(c + ["--help"], capture_output=True, text=True)
            if p.returncode == 0 and feature in p.stdout:
                return c
    return None
