#!/usr/bin/env python3
"""One line saying what scripts/test skipped and why; fails when the shared vectors were there
but tests that need them skipped anyway.

Why: a suite that silently skips looks like a suite that passes.  When ../shared/vectors is
absent, skipping its tests is right, and this line says how many and why in aggregate.  When
the folder is present, a vectors skip means a test could not read what it should have (a moved
file, a wrong path): that is a failure.  Other reasons (no trustee clone, no vsock loopback)
name an input that is not the vectors; they are counted and shown, not failed.

Reads what the test steps wrote: meson's build/*/meson-logs/testlog.json (one JSON object per
line, "result": "SKIP" for a suite that exited 77) and pytest's JUnit XML (<skipped
type="pytest.skip" message="reason">; xfail is not a skip).

Usage: skip_summary.py --vectors DIR --c-vectors DIR [--meson-log FILE]... [--junit FILE]...
    --vectors    the folder pytest reads ($SHIELD_VECTORS)
    --c-vectors  the folder the C suites read ($SHIELD_VECTORS, else the <source
                 root>/../shared/vectors that tests/c/meson.build passes)
Exit status: 0, or 1 when a folder exists and tests that need it skipped.
"""

import argparse
import collections
import json
import os
import sys
import xml.etree.ElementTree as ET


def is_vectors_reason(reason):
    return "vectors" in reason.lower()


def meson_skips(path):
    """[(suite name, its last output line)] of the suites meson reported as SKIP."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            if t.get("result") != "SKIP":
                continue
            text = (t.get("stdout") or "") + "\n" + (t.get("stderr") or "")
            lines = [x.strip() for x in text.splitlines() if x.strip()]
            out.append((t.get("name", "?"), lines[-1] if lines else "exit 77"))
    return out


def pytest_skips(path):
    """[(test id, reason)] of the tests pytest skipped (not the xfails)."""
    out = []
    for case in ET.parse(path).iter("testcase"):
        sk = case.find("skipped")
        if sk is None or sk.get("type") == "pytest.xfail":
            continue
        out.append((f"{case.get('classname')}::{case.get('name')}", sk.get("message") or "?"))
    return out


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--c-vectors", required=True)
    ap.add_argument("--meson-log", action="append", default=[])
    ap.add_argument("--junit", action="append", default=[])
    a = ap.parse_args(argv)

    c_skips, py_skips, unreadable = [], [], []
    for p in a.meson_log:
        try:
            c_skips += meson_skips(p)
        except (OSError, ValueError) as e:
            unreadable.append(f"{p} ({e.__class__.__name__})")
    for p in a.junit:
        try:
            py_skips += pytest_skips(p)
        except (OSError, ET.ParseError) as e:
            unreadable.append(f"{p} ({e.__class__.__name__})")

    # Aggregate: every vectors reason is one (their paths differ per test), the rest by text.
    if os.path.isdir(a.vectors):
        vec_label = f"need the shared vectors, yet {a.vectors} exists"
    else:
        vec_label = f"shared vectors absent at {a.vectors} (set SHIELD_VECTORS)"
    groups = collections.Counter(vec_label if is_vectors_reason(r) else r for _, r in py_skips)
    parts = [f"{n} pytest: {r}" for r, n in groups.most_common()]
    if c_skips:
        names = ", ".join(sorted({n for n, _ in c_skips}))
        reasons = "; ".join(sorted({r for _, r in c_skips}))
        suites = "C suite" if len(c_skips) == 1 else "C suites"
        parts.append(f"{len(c_skips)} {suites} ({names}) exited 77: {reasons}")
    total = len(py_skips) + len(c_skips)
    noun = "test" if total == 1 else "tests"
    line = f"== {total} {noun} skipped: " + "; ".join(parts) if total else "== no test skipped"
    if unreadable:
        line += f" (results not read: {', '.join(unreadable)})"
    print(line, flush=True)

    failed = False
    c_vec = [(n, r) for n, r in c_skips if is_vectors_reason(r)]
    if c_vec and os.path.isdir(a.c_vectors):
        print(
            f"FAIL: C suites {', '.join(n for n, _ in c_vec)} reported SKIP although the "
            f"shared vectors exist at {a.c_vectors}: a suite that cannot read them must fail, "
            "not skip (their output: meson-logs/testlog.txt in the build dir).",
            file=sys.stderr,
        )
        failed = True
    vec = [t for t, r in py_skips if is_vectors_reason(r)]
    if vec and os.path.isdir(a.vectors):
        shown = ", ".join(vec[:5]) + (f" and {len(vec) - 5} more" if len(vec) > 5 else "")
        print(
            f"FAIL: {len(vec)} pytest tests skipped for a vectors reason although "
            f"{a.vectors} exists: {shown}",
            file=sys.stderr,
        )
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
