"""The server proves its own TEE (docs/protocol.md §4), from Python: under uvicorn or any ASGI
server the app calls the evidence provider itself; under ``shield`` the same code runs in the
embedded interpreter.

- ``binding_cbor(tls_spki_sha256, hpke_key_config)``: §4's deterministic CBOR (RFC 8949
  §4.2.1) ``{1: bstr | null, 2: bstr | null, 3: 1}``, the ``k`` of the binding digest.
- ``attestation_document(provider, nonce, tls_spki=…, hpke_key_config=…, now=…)``: the JSON
  answer of ``GET /.well-known/shield/attestation?nonce=…``: fresh evidence carrying
  ``D(n = the client's nonce, k = binding_cbor(…))`` (§1.2, ``_native.binding_digest``).
- ``EvidenceProvider``: what produces evidence (blocking; called off the event loop).
  ``NativeEvidenceProvider(tee="auto", …)`` is this machine's TEE through the same C providers
  as ``shield --tee`` (``_native.Provider``: /dev/nsm, configfs-tsm, /dev/sev-guest,
  /dev/tdx_guest + the QGS, Gramine's /dev/attestation, the Confidential Space launcher, the
  Azure vTPM); a TEE named but absent raises ProviderUnavailable naming the missing device, and
  ``auto`` never picks ``simulated``.  ``SimulatedEvidenceProvider`` (``_native.
  simulated_evidence``, labelled ``simulated`` everywhere) is for development and tests, as is
  ``NativeEvidenceProvider("simulated")``.  Nothing picks the simulated TEE silently: the caller
  names it.
- ``ServerAttestation``: one server's state: the provider, the binding inputs, a per-client
  token bucket (503 + Retry-After beyond it), a bounded thread pool for generation, and the
  cached evidence of the health report (``health()``, with its age; 503 when the provider
  fails).  ``AttestationRouter`` (integrations/router.py) serves it with FastAPI.

cbor2 encodes the binding (``pip install cbor2``); it is imported when first needed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import hashlib
import math
import threading
import time
from typing import Callable, Optional

from shield_asgi import _native
from shield_asgi.attestation import _b64url

__all__ = [
    "BINDING_VERSION",
    "EvidenceProvider",
    "NativeEvidenceProvider",
    "SimulatedEvidenceProvider",
    "ServerAttestation",
    "ProviderUnavailable",
    "RateLimited",
    "attestation_document",
    "binding_cbor",
    "decode_binding",
    "spki_of_certificate",
]

BINDING_VERSION = 1
NONCE_LEN = 32
#: §4 attested TLS and the health report: cached evidence binds n = 32 zero bytes (no client
#: nonce exists for it; a client wanting a fresh proof calls the attestation endpoint)
CACHED_NONCE = bytes(NONCE_LEN)


def _cbor2():
    try:
        import cbor2
    except ImportError as e:  # pragma: no cover - cbor2 is in requirements.txt
        raise ImportError("server attestation needs cbor2: pip install cbor2") from e
    return cbor2


def binding_cbor(tls_spki_sha256: Optional[bytes], hpke_key_config: Optional[bytes]) -> bytes:
    """docs/protocol.md §4: the deterministic CBOR (RFC 8949 §4.2.1: shortest forms, definite
    lengths, map keys in bytewise order) of ``{1: tls_spki_sha256 | null, 2: hpke key config |
    null, 3: 1}``; cbor2's canonical mode is that encoding."""
    if tls_spki_sha256 is not None and len(tls_spki_sha256) != 32:
        raise ValueError("tls_spki_sha256 must be the 32-byte SHA-256 of the DER SPKI")
    doc = {
        1: None if tls_spki_sha256 is None else bytes(tls_spki_sha256),
        2: None if hpke_key_config is None else bytes(hpke_key_config),
        3: BINDING_VERSION,
    }
    return _cbor2().dumps(doc, canonical=True)


def decode_binding(data: bytes) -> tuple[Optional[bytes], Optional[bytes]]:
    """The inverse of ``binding_cbor``, strict: exactly keys 1, 2, 3 with the right types,
    version 1, and ``data`` must be the deterministic encoding itself (so two encodings of one
    binding cannot both be accepted).  ValueError otherwise."""
    cbor2 = _cbor2()
    try:
        doc = cbor2.loads(data)
    except Exception as e:  # cbor2 raises its own decode errors (and ValueError subclasses)
        raise ValueError(f"binding.cbor is not CBOR: {e}") from None
    if not isinstance(doc, dict) or set(doc) != {1, 2, 3}:
        raise ValueError("binding.cbor is not the map {1, 2, 3}")
    spki, hpke, version = doc[1], doc[2], doc[3]
    if version != BINDING_VERSION or isinstance(version, bool):
        raise ValueError(f"binding version {version!r} is not {BINDING_VERSION}")
    for v in (spki, hpke):
        if v is not None and not isinstance(v, bytes):
            raise ValueError("binding fields must be byte strings or null")
    if spki is not None and len(spki) != 32:
        raise ValueError("binding field 1 is not a SHA-256 digest")
    if binding_cbor(spki, hpke) != bytes(data):
        raise ValueError("binding.cbor is not deterministic CBOR (RFC 8949 §4.2.1)")
    return spki, hpke


def spki_of_certificate(cert: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (DER, or PEM text/bytes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if isinstance(cert, str):
        cert = cert.encode()
    c = (
        x509.load_pem_x509_certificate(cert)
        if cert.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(cert)
    )
    return c.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class ProviderUnavailable(Exception):
    """The TEE (the evidence provider) could not produce evidence."""


class RateLimited(Exception):
    """A client asked for fresh evidence beyond its token bucket, or the pool is full."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        self.message = message


class EvidenceProvider:
    """Produces this TEE's evidence binding ``D(nonce, binding)`` (§1.2).  ``generate`` blocks
    (device I/O, signing): callers run it off the event loop.  ``measurements`` reads them
    back from a piece of evidence (called once per binding: a TEE's measurements are fixed at
    launch); by default the native verifier does, with ``verify_kwargs`` as its inputs, so the
    measurements reported are the verifier's, never a second parser's.  A provider whose
    evidence needs inputs the server lacks (DCAP collateral) overrides it."""

    tee_type: str = ""

    def generate(self, nonce: bytes, binding: bytes, *, at: float) -> bytes:
        raise NotImplementedError

    def verify_kwargs(self) -> dict:
        return {}

    def measurements(self, evidence: bytes, nonce: bytes, binding: bytes, *, at: float) -> dict:
        """Fail closed: evidence the verifier refuses is a provider failure, never served."""
        r = _native.verify(
            evidence,
            self.tee_type,
            at=at,
            nonce=nonce,
            public_key=binding,
            allow_debug=True,  # the server reports what it is; clients apply their policy
            **self.verify_kwargs(),
        )
        if not r.verified:
            raise ProviderUnavailable(f"own evidence does not verify: {r.reason}: {r.message}")
        return dict(r.measurements or {})


class SimulatedEvidenceProvider(EvidenceProvider):
    """docs/protocol.md §1.7: Nitro-format evidence signed by the local development root
    (``data_dir``, default ``$XDG_DATA_HOME/shield``).  Development and tests only: clients
    accept it only with ``trust_simulated`` and this root.  ``pcrs``: {index: 48 bytes}."""

    tee_type = "simulated"

    def __init__(
        self,
        *,
        data_dir: Optional[str] = None,
        pcrs: Optional[dict] = None,
        debug: bool = False,
        lifetime: int = 0,
    ) -> None:
        self.data_dir = None if data_dir is None else str(data_dir)
        self.pcrs = dict(pcrs) if pcrs else None
        self.debug = debug
        self.lifetime = lifetime

    def generate(self, nonce: bytes, binding: bytes, *, at: float) -> bytes:
        try:
            return _native.simulated_evidence(
                nonce,
                binding,
                at=at,
                debug=self.debug,
                pcrs=self.pcrs,
                data_dir=self.data_dir,
                lifetime=self.lifetime,
            )
        except RuntimeError as e:
            raise ProviderUnavailable(str(e)) from None

    def root(self) -> bytes:
        """DER of the development root the evidence chains to (what clients must trust)."""
        return _native.simulated_root(self.data_dir)

    def verify_kwargs(self) -> dict:
        return {"trust_simulated": True, "simulated_root": self.root()}


class NativeEvidenceProvider(EvidenceProvider):
    """This machine's TEE, through attest/'s native providers (``_native.Provider``, the same C
    code as ``shield --tee``), for an app under uvicorn or any ASGI server.

    tee             ``auto`` (detect from the devices present; never ``simulated``) or a
                    docs/protocol.md §0 name: nitro, sev-snp, tdx, sgx, gcp, azure-snp,
                    azure-tdx, simulated (development: named explicitly, like
                    SimulatedEvidenceProvider)
    settings        the provider's, passed to ``_native.Provider``: root, simulated_dir,
                    gcp_socket, gcp_audience (required for gcp), gcp_timeout_ms, tpm_tcti,
                    azure_imds_url, azure_timeout_ms, azure_report_wait_ms, tdx_qgs,
                    tdx_qgs_timeout_ms (``shield --tee-*``'s)
    verify_options  extra keyword arguments of ``_native.verify`` when the measurements are
                    read back from the first evidence (``collateral=`` for tdx/sgx, ``jwks=``
                    for gcp, ``certs=`` …): evidence that does not verify is never served

    Raises ProviderUnavailable at construction when the TEE is absent (the message names the
    missing device or path), so a server does not start believing it is attested."""

    def __init__(
        self, tee: str = "auto", *, verify_options: Optional[dict] = None, **settings
    ) -> None:
        if not isinstance(tee, str):
            raise TypeError("tee must be a TEE type name (or 'auto')")
        self._simulated_dir = settings.get("simulated_dir")
        try:
            self._p = _native.Provider(tee, **settings)
        except RuntimeError as e:
            raise ProviderUnavailable(str(e)) from None
        self.tee_type = self._p.tee
        self.source = self._p.source
        self.verify_options = dict(verify_options or {})

    def generate(self, nonce: bytes, binding: bytes, *, at: float) -> bytes:
        D = _native.binding_digest(nonce, binding)  # §1.2: what the TEE's report data carries
        try:
            return self._p.evidence(D, nonce, binding, at=at)
        except RuntimeError as e:
            raise ProviderUnavailable(str(e)) from None

    def verify_kwargs(self) -> dict:
        kw = dict(self.verify_options)
        if self.tee_type == "simulated":
            sdir = None if self._simulated_dir is None else str(self._simulated_dir)
            kw.setdefault("trust_simulated", True)
            kw.setdefault("simulated_root", _native.simulated_root(sdir))
        return kw

    def close(self) -> None:
        """Releases the device (evidence calls still running finish first)."""
        self._p.close()

    def __repr__(self) -> str:
        return f"NativeEvidenceProvider(tee={self.tee_type!r}, source={self.source!r})"


def attestation_document(
    provider: EvidenceProvider,
    nonce: bytes,
    *,
    tls_spki: Optional[bytes] = None,
    hpke_key_config: Optional[bytes] = None,
    now: float,
    measurements: Optional[dict] = None,
) -> dict:
    """docs/protocol.md §4: the JSON answer to ``GET …/attestation?nonce=``.  ``tls_spki`` is
    the DER SubjectPublicKeyInfo of the TLS certificate (None without TLS in the TEE),
    ``hpke_key_config`` the RFC 9458 key config (None without EHBP).  Blocking (the provider
    signs); ``measurements`` skips reading them back from the evidence.  Raises
    ProviderUnavailable."""
    if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != NONCE_LEN:
        raise ValueError("the nonce must be 32 bytes")
    spki_sha = None if tls_spki is None else hashlib.sha256(tls_spki).digest()
    cbor = binding_cbor(spki_sha, hpke_key_config)
    evidence = provider.generate(bytes(nonce), cbor, at=now)
    if measurements is None:
        measurements = provider.measurements(evidence, bytes(nonce), cbor, at=now)
    return {
        "tee_type": provider.tee_type,
        "evidence": _b64url(evidence),
        "nonce": _b64url(bytes(nonce)),
        "binding": {
            "tls_spki_sha256": None if spki_sha is None else spki_sha.hex(),
            "hpke_key_config": _b64url(hpke_key_config) if hpke_key_config is not None else None,
            "version": BINDING_VERSION,
            "cbor": _b64url(cbor),
        },
        "measurements": measurements,
        "issued_at": int(now),
    }


class _Buckets:
    """Per-client token buckets (rate tokens/s, burst), at most `max_clients` remembered (the
    least recently seen are forgotten: a forgotten client starts with a full bucket)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 4096) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_clients = float(rate), int(burst), max_clients
        self._b: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, now: float) -> Optional[int]:
        """None when `client` may go on, else the seconds until its next token."""
        with self._lock:
            tokens, last = self._b.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            self._b[client] = (tokens, now)
            while len(self._b) > self.max_clients:
                self._b.popitem(last=False)
            return None if ok else math.ceil((1.0 - tokens) / self.rate)


class ServerAttestation:
    """One server's attestation state (docs/protocol.md §4).

    provider        the EvidenceProvider (required: nothing defaults to ``simulated``)
    tls_spki        DER SPKI of the TLS certificate, or ``tls_certfile`` (PEM/DER path); when
                    neither is given, ``document()`` takes the per-request ``tls_spki`` (the
                    router reads it from the connection's certificate under shield)
    hpke_key_config RFC 9458 key config bound with the TLS key (or None)
    rate, burst     fresh evidence per client address: a token bucket (default 2/s, burst 10);
                    beyond it RateLimited (503 + Retry-After)
    max_concurrent  generations running at once (the pool's size, default 4); beyond 4× that
                    queued, RateLimited (503 overloaded, Retry-After: 1)
    health_ttl      seconds the health report's cached evidence is served (default 300)
    clock           the time source (a test may pin it)
    """

    def __init__(
        self,
        provider: EvidenceProvider,
        *,
        tls_spki: Optional[bytes] = None,
        tls_certfile: Optional[str] = None,
        hpke_key_config: Optional[bytes] = None,
        rate: float = 2.0,
        burst: int = 10,
        max_concurrent: int = 4,
        health_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(provider, EvidenceProvider):
            raise TypeError(
                "provider must be an EvidenceProvider (for development: "
                "SimulatedEvidenceProvider(), named explicitly)"
            )
        if tls_certfile is not None:
            if tls_spki is not None:
                raise ValueError("give tls_spki or tls_certfile, not both")
            with open(tls_certfile, "rb") as f:
                tls_spki = spki_of_certificate(f.read())
        self.provider = provider
        self.tls_spki = tls_spki
        self.hpke_key_config = None if hpke_key_config is None else bytes(hpke_key_config)
        self.clock = clock
        self.health_ttl = float(health_ttl)
        self._buckets = _Buckets(rate, burst)
        self._max_concurrent = int(max_concurrent)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._max_concurrent, thread_name_prefix="shield-evidence"
        )
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._measurements: dict[bytes, dict] = {}  # binding -> measurements (one per binding)
        self._health: Optional[dict] = None
        self._health_lock: Optional[asyncio.Lock] = None

    # -- running generation off the event loop, bounded --------------------------------------
    async def _run(self, fn, *args, **kw):
        with self._queued_lock:
            if self._queued >= 4 * self._max_concurrent:
                raise RateLimited(1, "too many evidence generations in progress")
            self._queued += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kw))
        finally:
            with self._queued_lock:
                self._queued -= 1

    def _document(self, nonce: bytes, tls_spki: Optional[bytes], now: float) -> dict:
        spki = self.tls_spki if self.tls_spki is not None else tls_spki
        key = b"" if spki is None else hashlib.sha256(spki).digest()
        doc = attestation_document(
            self.provider,
            nonce,
            tls_spki=spki,
            hpke_key_config=self.hpke_key_config,
            now=now,
            measurements=self._measurements.get(key),
        )
        self._measurements[key] = doc["measurements"]
        return doc

    async def document(
        self, nonce: bytes, *, client: str = "", tls_spki: Optional[bytes] = None
    ) -> dict:
        """§4's answer for `client` (its address: the rate limit's key).  Raises
        RateLimited or ProviderUnavailable."""
        wait = self._buckets.take(client, time.monotonic())
        if wait is not None:
            raise RateLimited(wait, "fresh evidence is rate-limited per client")
        return await self._run(self._document, bytes(nonce), tls_spki, self.clock())

    async def health(self, *, tls_spki: Optional[bytes] = None) -> tuple[int, dict]:
        """(status, body) of the health report: cached evidence (n = 32 zero bytes, §4) and
        its age; 503 ``unavailable`` when the provider cannot produce evidence."""
        if self._health_lock is None:
            self._health_lock = asyncio.Lock()
        now = self.clock()
        async with self._health_lock:  # one refresh for every request waiting on it
            cached = self._health
            if cached is None or now - cached["issued_at"] >= self.health_ttl:
                try:
                    doc = await self._run(self._document, CACHED_NONCE, tls_spki, now)
                except RateLimited as e:
                    return 503, self._unavailable(e.message)
                except ProviderUnavailable as e:
                    self._health = None
                    return 503, self._unavailable(str(e))
                cached = self._health = {
                    "type": doc["tee_type"],
                    "measurements": doc["measurements"],
                    "evidence": doc["evidence"],
                    "issued_at": doc["issued_at"],
                }
        tee = dict(cached)
        tee["age"] = max(0, int(now - cached["issued_at"]))
        return 200, {"status": "ok", "tee": tee}

    def _unavailable(self, message: str) -> dict:
        return {
            "status": "unavailable",
            "tee": {"type": self.provider.tee_type},
            "message": message,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
