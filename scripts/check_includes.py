#!/usr/bin/env python3
"""Fails when a C file includes another module's private header.

Why: each module (common/ server/ gate/ attest/ crypto/ cli/ pyshim/) is a small library with
one public header in its include/ folder; everything else in the folder is private to it.  The
build already puts only include/ on a dependent's include path, but a relative path ("../x.h")
or a test's own include_directories() could still reach a private header: this check reads
the #include lines themselves, so the boundary holds whatever the build files say.

Rules, for every tracked *.c and *.h:
  - a module's own files may include its private headers;
  - tests/c/<module>/ (white-box tests of that module) may include <module>'s private headers;
  - tests/c/ files may include tests/c/'s own helpers (testutil.h, tests/c/<module>/*.h);
  - anything else may include public headers (<module>/include/*.h) and system headers only.
An include ("x.h" or <x.h>) that names no header of the repository is a system or library
header.

Usage: scripts/check_includes.py [ROOT]   (default: the repository holding this script)
Exit status: 0 clean, 1 with one line per violation (file:line: what and why).
"""

import os
import re
import subprocess
import sys

MODULES = ("common", "server", "gate", "attest", "crypto", "cli", "pyshim")
INCLUDE = re.compile(r'^\s*#\s*include\s*["<]([^">]+)[">]')


def owner(path):
    """The module a tracked file belongs to (tests/c/<m>/ files count as m's tests), or None."""
    parts = path.split("/")
    if parts[0] in MODULES:
        return parts[0], False
    if parts[:2] == ["tests", "c"] and len(parts) > 3 and parts[2] in MODULES:
        return parts[2], True
    return None, parts[:2] == ["tests", "c"]


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = subprocess.run(
        ["git", "-C", root, "ls-files", "*.c", "*.h"], capture_output=True, text=True, check=True
    ).stdout.split()
    private = {}  # header basename -> {module, ...} holding it as a private header
    public = set()
    test_helpers = set()
    for f in files:
        parts = f.split("/")
        if not f.endswith(".h"):
            continue
        name = parts[-1]
        if parts[0] in MODULES and "include" in parts[1:-1]:
            public.add(name)
        elif parts[0] in MODULES:
            private.setdefault(name, set()).add(parts[0])
        elif parts[:2] == ["tests", "c"]:
            test_helpers.add(name)

    bad = []
    for f in files:
        mod, is_test = owner(f)
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                name = os.path.basename(m.group(1))
                if name in public and name not in private:
                    continue
                if is_test and mod is None and name in test_helpers:
                    continue
                if is_test and name in test_helpers:
                    continue
                holders = private.get(name)
                if not holders:
                    continue  # not a header of this repository: system or library
                if mod in holders:
                    continue
                bad.append(
                    f"{f}:{n}: includes {m.group(1)}, private to {'/'.join(sorted(holders))}/ "
                    f"(use its public header in {sorted(holders)[0]}/include/, or add what is "
                    "missing there)"
                )
    for b in bad:
        print(b)
    if bad:
        print(f"check_includes: {len(bad)} include(s) of another module's private header")
        return 1
    print(f"check_includes: {len(files)} C files, no cross-module private include")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
