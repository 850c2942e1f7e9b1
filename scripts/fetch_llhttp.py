#!/usr/bin/env python3
"""Obtain the C sources of a pinned llhttp release and print the folder that holds them.

Why: Debian's node-llhttp (8.1.0) predates the 2023 request-smuggling fixes, and no
third-party source may be committed to this repository.  The source distribution of PyPI's
`llhttp` package carries llhttp's generated C sources (lib/llhttp.c, api.c, http.c,
llhttp.h); we download it with pip, check it against a pinned SHA-256 and extract only lib/
into a cache folder.  meson.build runs this script when pkg-config has no llhttp >= 9.2.

Usage: fetch_llhttp.py [--cache DIR]      prints the folder containing llhttp.h
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "llhttp"
VERSION = "9.3.0.0"  # llhttp 9.3.0
SDIST = f"llhttp-{VERSION}.tar.gz"
SHA256 = "0d989363e7fb6f270b9d49956e7a3945c26778f8c70a166815264309ac6a8295"
FILES = ("llhttp.h", "llhttp.c", "api.c", "http.c")


def cache_root(argv):
    if "--cache" in argv:
        return argv[argv.index("--cache") + 1]
    base = os.environ.get("SHIELD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shield"
    )
    return base


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def download_hint(output):
    """Say what most likely went wrong, from pip's own output (not a guess about the network)."""
    if "bdist_wheel" in output or "setuptools" in output:
        return (
            "preparing the sdist's metadata needs setuptools >= 70.1 and wheel in this "
            "interpreter (scripts/bootstrap installs them from requirements.txt)."
        )
    if any(
        k in output
        for k in (
            "NewConnectionError",
            "Max retries",
            "Temporary failure",
            "No matching distribution",
            "ConnectionError",
        )
    ):
        return "pip could not reach a package index that has it (is PyPI reachable?)."
    return "see pip's output above."


def download(dest):
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-build-isolation",
        "-d",
        dest,
        f"{PACKAGE}=={VERSION}",
    ]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout)
        sys.exit(
            f"fetch_llhttp: 'pip download {PACKAGE}=={VERSION}' failed (exit {r.returncode}): "
            f"{download_hint(r.stdout)}  Alternatively install llhttp >= 9.2 with a "
            "pkg-config file."
        )
    path = os.path.join(dest, SDIST)
    if not os.path.exists(path):
        sys.exit(f"fetch_llhttp: pip did not produce {SDIST} in {dest}")
    got = sha256_file(path)
    if got != SHA256:
        sys.exit(
            f"fetch_llhttp: {SDIST} has SHA-256 {got}, expected {SHA256}; refusing to build with it"
        )
    return path


def extract(sdist, out):
    prefix = f"llhttp-{VERSION}/lib/"
    os.makedirs(out, exist_ok=True)
    with tarfile.open(sdist, "r:gz") as tar:
        for name in FILES:
            member = tar.getmember(prefix + name)
            if not member.isfile():
                sys.exit(f"fetch_llhttp: {member.name} is not a regular file")
            data = tar.extractfile(member).read()
            tmp = os.path.join(out, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(out, name))


def main(argv):
    out = os.path.join(cache_root(argv), f"llhttp-{VERSION}")
    stamp = os.path.join(out, ".sha256")
    try:
        with open(stamp) as f:
            if f.read().strip() == SHA256 and all(
                os.path.exists(os.path.join(out, n)) for n in FILES
            ):
                print(out)
                return 0
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        extract(download(tmp), out)
    with open(stamp, "w") as f:
        f.write(SHA256 + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
