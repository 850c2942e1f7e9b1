"""``shield attest-server URL``: what a server proves about its TEE (docs/protocol.md §4).

The `shield` binary parses the command line (cli/attest_server.c: one option table for parsing
and --help) and calls ``main`` in its embedded interpreter with the settings as one JSON
argument.  The check is ``AttestedClient.attest`` — exactly what the client SDK does before it
sends: a fresh nonce, the attestation fetched over one connection, the evidence verified
natively (signatures, roots, ``D(n, k = binding.cbor)``), the policy, the allowed TEE types and
expected measurements, and the binding to that connection's TLS key.

Output: what the server proved (TEE type, measurements, the TLS key or HPKE key config it
bound, TCB status, the policy's hash) on stdout and exit 0; or the §3 reason and message on
stderr and exit 1.  With ``json`` the same as one JSON object on stdout either way.
"""

from __future__ import annotations

import json
import sys

__all__ = ["main"]

PROG = "shield attest-server"


def _load_root(path: str) -> bytes:
    """The simulated dev root, PEM or DER, as DER."""
    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip().startswith(b"-----"):
        import ssl

        return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
    return data


def _proved(url: str, pin) -> dict:
    r = pin.result
    return {
        "url": url,
        "verified": True,
        "tee_type": r.tee_type,
        "measurements": dict(r.measurements or {}),
        "debug": bool(r.debug),
        "tcb_status": r.tcb_status,
        "advisories": list(r.advisories or []),
        "tls_spki_sha256": None if pin.tls_spki_sha256 is None else pin.tls_spki_sha256.hex(),
        "hpke_key_config": (None if pin.hpke_key_config is None else pin.hpke_key_config.hex()),
        "policy_sha256": r.policy_sha256,
        "evidence_sha256": r.evidence_sha256,
    }


def _print_text(doc: dict) -> None:
    out = [f"{doc['url']}: the server proves"]
    tee = doc["tee_type"]
    note = " (simulated evidence: development only)" if tee == "simulated" else ""
    out.append(f"  TEE type        {tee}{note}")
    if doc["debug"]:
        out.append("  debug           yes (a debug enclave or VM: its memory is not private)")
    if doc["tcb_status"]:
        adv = f" (advisories: {', '.join(doc['advisories'])})" if doc["advisories"] else ""
        out.append(f"  TCB status      {doc['tcb_status']}{adv}")
    out.append("  measurements")
    for k in sorted(doc["measurements"]):
        out.append(f"    {k} = {doc['measurements'][k]}")
    if doc["tls_spki_sha256"]:
        out.append(
            f"  TLS binding     ok: this connection's key (SPKI SHA-256 {doc['tls_spki_sha256']})"
        )
    else:
        out.append("  TLS binding     none (plain HTTP: nothing ties the TEE to this peer)")
    if doc["hpke_key_config"]:
        out.append(f"  HPKE key config {doc['hpke_key_config']}")
    out.append(f"  policy          passed (sha256 {doc['policy_sha256']})")
    print("\n".join(out))


def main(config: str) -> int:
    cfg = json.loads(config)
    url = cfg["url"]
    try:
        import httpx

        from shield_asgi.client import AttestedClient, ServerAttestationError
    except ImportError as e:
        print(f"{PROG}: the client SDK needs {e.name}: pip install 'shield-asgi[client]'",
              file=sys.stderr)  # fmt: skip
        return 1

    def fail(reason: str, message: str, error: str | None = None) -> int:
        if cfg["json"]:
            doc = {"url": url, "verified": False, "error": error, "reason": reason}
            print(json.dumps({**doc, "message": message}))
        else:
            print(f"{PROG}: {url} does not prove it: {reason}: {message}", file=sys.stderr)
        return 1

    kw: dict = {
        "attestation_path": cfg["path"],
        "timeout": cfg["timeout"],
        "allow_plain": cfg["allow_plain"],
        "expected_measurements": cfg["measurements"] or None,
    }
    if cfg.get("tee_types"):
        kw["tee_types"] = cfg["tee_types"].split(",")
    if cfg.get("cafile"):
        import ssl

        try:
            kw["verify"] = ssl.create_default_context(cafile=cfg["cafile"])
        except (OSError, ssl.SSLError) as e:
            print(f"{PROG}: --cafile {cfg['cafile']}: {e}", file=sys.stderr)
            return 2
    try:
        if cfg.get("policy"):
            with open(cfg["policy"], "rb") as f:
                kw["policy"] = f.read()
        if cfg["trust_simulated"]:
            kw["trust_simulated"] = True
            kw["simulated_root"] = _load_root(cfg["simulated_root"])
    except OSError as e:
        print(f"{PROG}: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{PROG}: --simulated-root: not a PEM or DER certificate ({e})", file=sys.stderr)
        return 2
    try:
        with AttestedClient(url, **kw) as c:
            pin = c.attest()
    except ValueError as e:  # the policy or an option the client refuses
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except ServerAttestationError as e:
        return fail(e.reason, e.message, e.error)
    except httpx.HTTPError as e:
        return fail("unreachable", f"{type(e).__name__}: {e}")
    doc = _proved(url, pin)
    if cfg["json"]:
        print(json.dumps(doc))
    else:
        _print_text(doc)
    return 0
