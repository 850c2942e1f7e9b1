"""The Prometheus text of `--metrics-port` (served by the supervisor, summed over workers) as a
dict {sample name with labels: value}, for the serving and gate tests."""

from __future__ import annotations

import urllib.request


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
