"""Request driver for cases with a "client" (bench/README.md), started by bench.py per server
start, in the venv with the case's environment:

    python bench_client.py MODULE CLASS BASE_URL SERVER CONNECTIONS THREADS

It imports bench/apps/MODULE, makes CLASS(base_url, server, connections, threads) (which may
talk to the server, e.g. to establish sessions) and then answers one JSON command per stdin
line with one JSON line on stdout:

    {"op": "requests", "n": N}                        -> {"requests": [{method, path, headers,
                                                          body (base64)}, ...]}
    {"op": "file", "n": N, "path": P, "threads": T}  -> {"seconds": S, "valid_for": V|null}

"file" writes the next N requests as raw HTTP/1.1 to P.1 ... P.T (request i to P.(i mod T + 1)),
each as "<byte length>\n<bytes>", for the replay script bench.py gives wrk.  Errors: one line
{"error": "..."} and exit status 1.  The driver may use every CPU: it only works while no load
runs (before and between wrk runs).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"


def raw_request(r: dict, host: str) -> bytes:
    method = r.get("method", "GET").upper()
    body = r.get("body") or b""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {r.get('path', '/')} HTTP/1.1", f"Host: {host}"]
    for k, v in (r.get("headers") or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def main() -> int:
    module, cls, base_url, server, connections, threads = sys.argv[1:7]
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        pass
    sys.path.insert(0, str(APPS))
    host = base_url.split("://", 1)[1].split("/", 1)[0]
    out = sys.stdout
    try:
        client = getattr(importlib.import_module(module), cls)(
            base_url, server, int(connections), int(threads)
        )
        out.write(json.dumps({"ready": True}) + "\n")
        out.flush()
        for line in sys.stdin:
            cmd = json.loads(line)
            t0 = time.monotonic()
            if cmd["op"] == "requests":
                reqs = []
                for r in client.requests(int(cmd["n"])):
                    r = dict(r)
                    b = r.get("body") or b""
                    r["body"] = base64.b64encode(b.encode() if isinstance(b, str) else b).decode()
                    reqs.append(r)
                reply = {"requests": reqs}
            elif cmd["op"] == "file":
                nt = int(cmd["threads"])
                with contextlib.ExitStack() as stack:
                    files = [
                        stack.enter_context(open(f"{cmd['path']}.{t + 1}", "wb")) for t in range(nt)
                    ]
                    for i, r in enumerate(client.requests(int(cmd["n"]))):
                        raw = raw_request(r, host)
                        f = files[i % nt]
                        f.write(b"%d\n" % len(raw))
                        f.write(raw)
                reply = {"valid_for": getattr(client, "valid_for", None)}
            else:
                raise ValueError(f"unknown op {cmd['op']!r}")
            reply["seconds"] = time.monotonic() - t0
            out.write(json.dumps(reply) + "\n")
            out.flush()
    except Exception as e:  # noqa: BLE001 - reported to bench.py, which fails the case with it
        out.write(
            json.dumps({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            + "\n"
        )
        out.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
