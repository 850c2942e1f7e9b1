#!/usr/bin/env python3
"""Turn a Python source file into a C header holding it as a byte array (used by meson to
compile pyshim/bridge.py into the `shield` binary, so the binary and its bridge always match)."""

import sys

src, out = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
name = "sh_bridge_py"
with open(out, "w") as f:
    f.write("/* generated from %s by scripts/embed_py.py; do not edit */\n" % src.split("/")[-1])
    f.write("static const char %s[] = {\n" % name)
    for i in range(0, len(data), 16):
        f.write("  " + ", ".join(str(b) for b in data[i : i + 16]) + ",\n")
    f.write("  0\n};\n")
