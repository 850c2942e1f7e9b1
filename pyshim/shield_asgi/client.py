"""``AttestedClient``: an httpx client that checks the server's TEE before it sends anything
(docs/protocol.md §4), and can prove its own (§1.4 header mode) so two services attest each other.

    from shield_asgi.client import AttestedClient

    ca = ssl.create_default_context(cafile="ca.pem")
    with AttestedClient("https://svc:8443", verify=ca, tee_types=["sev-snp"],
                        expected_measurements={"measurement": "ab12…"}) as c:
        r = c.get("/data")        # attests first; raises ServerAttestationError on any failure

Before the first request to an origin (scheme, host, port) the client fetches
``attestation_path?nonce=<32 fresh random bytes>`` (default ``/.well-known/shield/attestation``;
``/attestation`` for an ``AttestationRouter`` mounted at the root) and checks, failing closed:

1. the answer echoes its nonce, and ``binding.cbor`` is §4's deterministic CBOR (RFC 8949
   §4.2.1) whose JSON fields agree with it;
2. the evidence, natively (``shield_asgi._native.verify``): signatures, chains to pinned roots,
   ``D(n = its nonce, k = binding.cbor)`` (§1.2), the caller's policy (measurements, debug, TCB:
   the ``--attest-policy`` format), then ``tee_types`` and ``expected_measurements``;
3. over TLS, that ``binding.tls_spki_sha256`` is the SHA-256 of the SPKI of the certificate of
   the very connection that answered (``response.extensions["network_stream"]``); over plain
   HTTP that ``binding.hpke_key_config`` is the caller's ``hpke_key_config`` — or nothing, with
   an explicit ``allow_plain=True`` (development, or a channel secured otherwise: then nothing
   ties the attested TEE to the peer);
4. it pins that certificate: every later response from the origin must come over a connection
   with the same certificate, else ``ServerAttestationError`` (the response is closed).

Only then is the caller's request sent.  The pin is checked twice: when a new TLS connection to
an attested host finishes its handshake, before a byte of a request goes over it (the client's
SSL context makes its sockets check it: ``SSLContext.sslsocket_class``/``sslobject_class``),
and on every response (its connection's certificate, for the origin of its request).  With a
``transport=`` of the caller's own only the second check applies; HTTP/2 is not supported
(its responses do not expose their connection: they are refused).  Simulated evidence (§1.7)
is accepted only with ``trust_simulated=True`` and the development root it must chain to
(``simulated_root``, DER).

Mutual attestation: with ``provider=`` (an ``EvidenceProvider``, e.g.
``SimulatedEvidenceProvider()``), each request also carries the client's own evidence in
header mode (§1.4 mode 1): a nonce from the server's ``/.well-known/shield/nonce``, evidence
bound to it with ``k`` empty, ``X-Attestation-Token``/``-Type``/``-Nonce``.  Session and
mutual-TLS modes are not built here.

Attested TLS (``attested_tls=True``, for a server run with ``--tls-attested``): the server's
self-signed certificate carries its evidence (extension ``2.23.133.5.4.9``, docs/protocol.md
§4) and the client verifies that instead of calling the attestation endpoint.  Every TLS
handshake with an attested host is checked before a byte of a request is written: the
certificate's extension is parsed (``certificate_evidence``), its binding must be §4's CBOR of
*this certificate's* SPKI, and the evidence is verified natively with ``D(n = 32 zero bytes,
k = binding)`` and the same policy, ``tee_types`` and ``expected_measurements`` as above.  The
client pins the key: a certificate the server re-issued (same key, new evidence: it does so
every ``--tls-attested-ttl``) is accepted on a new connection once its own extension verifies;
a certificate with another key, or whose evidence fails, is refused
(``ServerAttestationError``).  The CA chain and host name are not checked in this mode (the
certificate is self-signed; the evidence is the trust) unless ``verify=`` is an
``ssl.SSLContext`` of the caller's.  The certificate's evidence is not fresh (its nonce is
zero): for a fresh proof, use the endpoint mode.  ``transport=`` is refused in this mode (the
handshake check needs the client's own SSL context).  ``attest()`` opens one TLS connection of
its own to read the certificate before the first request.

``MutualAttestationClient`` (the Shield library's name) is ``AsyncAttestedClient``, like the
Shield library's class it is used with ``await``.  httpx is needed (``pip install httpx``), and
cryptography to read certificates.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
import ssl
import threading
import time
from typing import Callable, Iterable, Mapping, Optional

import httpx

from shield_asgi import _native
from shield_asgi.attestation import AttestationResult, _b64url, _b64url_decode, policy_text
from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.protocol import NONCE_PATH, check_result
from shield_asgi.integrations.providers import AttestationProvider, canonical_tee_type
from shield_asgi.server_attestation import (
    EvidenceProvider,
    _cbor2,
    decode_binding,
    spki_of_certificate,
)

__all__ = [
    "ATTESTATION_PATH",
    "ATTESTED_TLS_OID",
    "certificate_evidence",
    "AttestedClient",
    "AsyncAttestedClient",
    "MutualAttestationClient",
    "ServerAttestation",
    "ServerAttestationError",
]

ATTESTATION_PATH = "/.well-known/shield/attestation"
#: the certificate extension of attested TLS (docs/protocol.md §4; the TCG's CMW OID)
ATTESTED_TLS_OID = "2.23.133.5.4.9"
_EVIDENCE_MEDIA_TYPE = "application/vnd.shield.evidence+cbor"
_ATTESTING = "shield.attesting"  # request extension: the client's own attestation round trip


class ServerAttestationError(AttestationError):
    """The server did not prove what the client requires.  ``reason`` is a §3 code
    (``binding_mismatch``, ``measurement_mismatch``, ``root_untrusted``, …); ``retry_after``
    is set when the server answered 503 with Retry-After."""

    def __init__(self, reason: str, message: str = "", retry_after: Optional[int] = None) -> None:
        super().__init__(reason, message)
        self.retry_after = retry_after


class ServerAttestation:
    """What one origin proved: the verified result, its binding and the pinned certificate."""

    __slots__ = ("origin", "result", "certificate", "tls_spki_sha256", "hpke_key_config")

    def __init__(self, origin, result, certificate, tls_spki_sha256, hpke_key_config) -> None:
        self.origin = origin
        self.result: AttestationResult = result
        self.certificate: Optional[bytes] = certificate  # DER, None over plain HTTP
        self.tls_spki_sha256: Optional[bytes] = tls_spki_sha256
        self.hpke_key_config: Optional[bytes] = hpke_key_config


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host, port


def _peer_certificate(response: httpx.Response) -> Optional[bytes]:
    """DER certificate of the connection that carried `response`; None without TLS."""
    stream = response.extensions.get("network_stream")
    if stream is None:
        raise ServerAttestationError(
            "binding_mismatch", "the transport does not expose its connection (network_stream)"
        )
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(True)
    if not der:
        raise ServerAttestationError("binding_mismatch", "the server sent no certificate")
    return der


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii").lower()


class _HandshakePins:
    """Certificates pinned per host name, checked when a TLS handshake completes: a connection
    to a host with pins whose certificate is none of them is refused before any request is
    written on it.  (The handshake knows the host name, not the port: the per-origin check is
    the response's, ``_Checker.check_pinned``.)"""

    def __init__(self, attested: Optional["_AttestedCertificates"] = None) -> None:
        self.by_host: dict[str, set] = {}
        self.attested = attested  # attested_tls: every handshake verifies the certificate

    def add(self, host: str, der: Optional[bytes]) -> None:
        if der is not None:
            self.by_host.setdefault(host, set()).add(der)

    def check(self, server_hostname: Optional[str], der: Optional[bytes]) -> None:
        if self.attested is not None:
            self.attested.check(server_hostname, der)
            return
        pins = self.by_host.get((server_hostname or "").lower())
        if pins and der not in pins:
            raise ServerAttestationError(
                "binding_mismatch",
                f"{server_hostname} presented a certificate other than the attested one "
                "(refused at the TLS handshake, before sending)",
            )

    def install(self, ctx: ssl.SSLContext) -> None:
        """Make `ctx`'s sockets (sync) and SSL objects (asyncio/anyio) run ``check`` after
        their handshake (the ssl module's documented hooks for custom socket classes)."""
        if getattr(ctx, "_shield_pins", None) is not None:
            raise ValueError("this SSLContext already serves another attested client")
        pins = self

        class PinnedSocket(ssl.SSLSocket):
            def do_handshake(self, *a, **kw):
                super().do_handshake(*a, **kw)
                try:
                    pins.check(self.server_hostname, self.getpeercert(True))
                except ServerAttestationError:
                    self.close()  # wrap_socket closes only on OSError and ValueError
                    raise

        class PinnedObject(ssl.SSLObject):
            def do_handshake(self):
                super().do_handshake()  # raises SSLWant* until the handshake is done
                pins.check(self.server_hostname, self.getpeercert(True))

        ctx.sslsocket_class = PinnedSocket
        ctx.sslobject_class = PinnedObject
        ctx._shield_pins = pins  # type: ignore[attr-defined]


def _ssl_context(kw: dict, pins: _HandshakePins) -> None:
    """The client's SSL context (httpx's own construction from verify/cert/trust_env), with the
    handshake check installed; left alone when the caller brings a transport."""
    if "transport" in kw:
        if pins.attested is not None:
            raise ValueError(
                "attested_tls needs the client's own SSL context (it checks each handshake): "
                "do not pass transport="
            )
        return
    verify = kw.pop("verify", True)
    if pins.attested is not None and not isinstance(verify, ssl.SSLContext):
        ctx = _attested_ssl_context(kw.pop("cert", None))
        pins.install(ctx)
        kw["verify"] = ctx
        return
    if verify is False:
        raise ValueError("AttestedClient needs TLS verification of the server (verify=False)")
    if isinstance(verify, ssl.SSLContext):
        if kw.get("cert") is not None:
            raise ValueError("give the client certificate in your SSLContext, not cert=")
        ctx = verify
    else:
        ctx = httpx.create_ssl_context(
            verify=verify, cert=kw.pop("cert", None), trust_env=kw.get("trust_env", True)
        )
    pins.install(ctx)
    kw["verify"] = ctx


# ---- attested TLS (docs/protocol.md §4: the certificate carries the evidence) ----


def certificate_evidence(cert: bytes) -> Optional[tuple[str, bytes, bytes, int]]:
    """The evidence an attested-TLS certificate (DER or PEM) carries in its extension
    ``2.23.133.5.4.9``: ``(tee_type, evidence, binding_cbor, issued_at)``, or None when it has
    no such extension.  ValueError when the extension is not §4's CBOR array
    ``[media type, bstr({1: tee_type, 2: evidence, 3: binding, 4: issued_at})]``."""
    from cryptography import x509

    if isinstance(cert, str):
        cert = cert.encode()
    c = (
        x509.load_pem_x509_certificate(cert)
        if cert.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(cert)
    )
    try:
        ext = c.extensions.get_extension_for_oid(x509.ObjectIdentifier(ATTESTED_TLS_OID))
    except x509.ExtensionNotFound:
        return None
    cbor2 = _cbor2()
    try:
        outer = cbor2.loads(ext.value.value)  # UnrecognizedExtension: the extnValue's content
        if not (isinstance(outer, list) and len(outer) == 2 and outer[0] == _EVIDENCE_MEDIA_TYPE):
            raise ValueError(f"not [{_EVIDENCE_MEDIA_TYPE!r}, bstr]")
        if not isinstance(outer[1], bytes):
            raise ValueError("the wrapped evidence is not a byte string")
        doc = cbor2.loads(outer[1])
        if not isinstance(doc, dict) or set(doc) != {1, 2, 3, 4}:
            raise ValueError("the wrapped CBOR is not the map {1, 2, 3, 4}")
        tee, evidence, binding, issued_at = doc[1], doc[2], doc[3], doc[4]
        if not (
            isinstance(tee, str)
            and isinstance(evidence, bytes)
            and isinstance(binding, bytes)
            and isinstance(issued_at, int)
            and not isinstance(issued_at, bool)
            and issued_at >= 0
        ):
            raise ValueError("a field of the wrapped CBOR has the wrong type")
    except ValueError as e:
        raise ValueError(f"the attested-TLS extension {ATTESTED_TLS_OID}: {e}") from None
    except Exception as e:  # cbor2's own decode errors
        raise ValueError(
            f"the attested-TLS extension {ATTESTED_TLS_OID} is not CBOR: {e}"
        ) from None
    return tee, evidence, binding, issued_at


def _attested_ssl_context(cert) -> ssl.SSLContext:
    """attested_tls: TLS without CA or host-name checks, since the certificate is self-signed
    and its evidence (checked at each handshake) is what the client trusts."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if cert is not None:  # httpx's forms: a path, (certfile, keyfile[, password])
        ctx.load_cert_chain(*((cert,) if isinstance(cert, (str, bytes)) else cert))
    return ctx


class _AttestedCertificates:
    """attested_tls: the certificates verified per host name.  The first one verified pins the
    host's key; a later certificate (the server re-issues) is accepted once its own extension
    verifies and only with that key.  Called from TLS handshakes, on any thread."""

    KEEP = 8  # verified certificates remembered per host (re-issues in a long session)

    def __init__(self, checker: "_Checker") -> None:
        self.checker = checker
        self.lock = threading.Lock()
        self.by_host: dict[str, tuple[bytes, dict]] = {}  # host -> (spki sha256, {der: att})

    def check(self, server_hostname: Optional[str], der: Optional[bytes]) -> "ServerAttestation":
        host = (server_hostname or "").lower()
        if not der:
            raise ServerAttestationError("binding_mismatch", "the server sent no certificate")
        with self.lock:
            entry = self.by_host.get(host)
            if entry is not None and der in entry[1]:
                return entry[1][der]
        att = self.checker.verify_certificate(der)  # outside the lock: native verification
        with self.lock:
            entry = self.by_host.setdefault(host, (att.tls_spki_sha256, {}))
            if not secrets.compare_digest(entry[0], att.tls_spki_sha256):
                raise ServerAttestationError(
                    "binding_mismatch",
                    f"{server_hostname} presented a certificate for another key than the "
                    "attested one (the certificate changed mid-session; refused before sending)",
                )
            certs = entry[1]
            certs[der] = att
            while len(certs) > self.KEEP:
                certs.pop(next(iter(certs)))
        return att

    def known(self, server_hostname: Optional[str], der: Optional[bytes]) -> bool:
        with self.lock:
            entry = self.by_host.get((server_hostname or "").lower())
            return entry is not None and der in entry[1]


def _probe_certificate(ctx: ssl.SSLContext, url: httpx.URL, timeout: Optional[float]) -> bytes:
    """attested_tls: one TLS handshake with the origin (its check verifies the certificate),
    so the client attests before its first request; the certificate (DER)."""
    _, host, port = _origin(url)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            return tls.getpeercert(True)


class _Checker:
    """The I/O-free part shared by the sync and async clients."""

    def __init__(
        self,
        *,
        tee_types: Optional[Iterable[str]],
        expected_measurements: Optional[Mapping[str, object]],
        policy,
        verifier: Optional[AttestationProvider],
        allow_debug: bool,
        trust_simulated: bool,
        simulated_root: Optional[bytes],
        hpke_key_config: Optional[bytes],
        allow_plain: bool,
        attestation_path: str,
        provider: Optional[EvidenceProvider],
        nonce_path: str,
        clock: Callable[[], float],
        attested_tls: bool = False,
    ) -> None:
        allowed = None
        if tee_types is not None:
            allowed = set()
            for t in tee_types:
                c = canonical_tee_type(t)
                if c is None:
                    raise ValueError(f"unknown TEE type {t!r}")
                allowed.add(c)
        if trust_simulated and simulated_root is None:
            raise ValueError(
                "trust_simulated needs simulated_root: the DER of the development root the "
                "server's simulated evidence chains to (docs/protocol.md §1.7)"
            )
        if allowed is not None and "simulated" in allowed and not trust_simulated:
            raise ValueError("tee_types names simulated: pass trust_simulated=True too")
        if provider is not None and not isinstance(provider, EvidenceProvider):
            raise TypeError("provider must be an EvidenceProvider (the client's own evidence)")
        self.allowed = allowed
        self.expected = dict(expected_measurements or {})
        self.policy = policy_text(policy)
        self.verifier = verifier
        self.allow_debug = allow_debug
        self.trust_simulated = trust_simulated
        self.simulated_root = simulated_root
        self.hpke_key_config = None if hpke_key_config is None else bytes(hpke_key_config)
        self.allow_plain = allow_plain
        self.attestation_path = attestation_path
        self.provider = provider
        self.nonce_path = nonce_path
        self.clock = clock
        self.attested_certs = _AttestedCertificates(self) if attested_tls else None
        if policy is not None and self.policy is not None:
            # a policy that does not load fails here, not at the first request
            try:
                json.loads(self.policy)
            except ValueError as e:
                raise ValueError(f"bad policy: {e}") from None

    def check_plain_allowed(self, url: httpx.URL) -> None:
        if url.scheme != "https" and self.hpke_key_config is None and not self.allow_plain:
            raise ServerAttestationError(
                "binding_mismatch",
                f"{url.scheme}:// has no TLS key to bind the attestation to: use https, give "
                "hpke_key_config (the attested HPKE key), or allow_plain=True",
            )

    def attestation_request(self, client, url: httpx.URL) -> tuple[httpx.Request, bytes]:
        nonce = secrets.token_bytes(32)
        target = url.copy_with(path=self.attestation_path, query=None, fragment=None)
        req = client.build_request(
            "GET",
            target,
            params={"nonce": _b64url(nonce)},
            headers={"Accept": "application/json"},
            extensions={_ATTESTING: True},
        )
        return req, nonce

    def verify(self, response: httpx.Response, nonce: bytes, body: bytes) -> ServerAttestation:
        """The whole check of one attestation answer (its body already read)."""
        origin = _origin(response.request.url)
        if response.status_code != 200:
            reason, message = (
                "malformed",
                f"the attestation endpoint answered {response.status_code}",
            )
            try:
                err = json.loads(body)
                if isinstance(err, dict) and isinstance(err.get("reason"), str):
                    reason = err["reason"]
                    message = f"{message}: {err.get('message') or reason}"
            except ValueError:
                pass
            retry = response.headers.get("retry-after")
            raise ServerAttestationError(
                reason, message, int(retry) if retry and retry.isdigit() else None
            )
        cert = _peer_certificate(response)
        try:
            doc = json.loads(body)
            binding = doc["binding"]
            cbor = _b64url_decode(binding["cbor"])
            evidence = _b64url_decode(doc["evidence"])
            echoed = _b64url_decode(doc["nonce"])
            declared = doc["tee_type"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ServerAttestationError(
                "malformed", "the attestation answer is not §4's JSON"
            ) from None
        if echoed != nonce:
            raise ServerAttestationError("binding_mismatch", "the answer is for another nonce")
        try:
            spki_sha, hpke = decode_binding(cbor)
        except ValueError as e:
            raise ServerAttestationError("malformed", str(e)) from None
        # the JSON fields are conveniences: they must say what the bound CBOR says
        if (
            binding.get("version") != 1
            or binding.get("tls_spki_sha256") != (None if spki_sha is None else spki_sha.hex())
            or binding.get("hpke_key_config") != (None if hpke is None else _b64url(hpke))
        ):
            raise ServerAttestationError(
                "binding_mismatch", "binding's JSON fields differ from binding.cbor"
            )
        tee = canonical_tee_type(declared)
        if tee is None:
            raise ServerAttestationError("unsupported_type", f"unknown TEE type {declared!r}")
        if tee == "simulated" and not self.trust_simulated:
            raise ServerAttestationError(
                "root_untrusted", "the server's evidence is simulated (trust_simulated is off)"
            )
        if self.allowed is not None and tee not in self.allowed:
            raise ServerAttestationError("policy_denied", f"TEE type {tee} is not allowed")
        kw = self.verifier.verify_kwargs() if self.verifier is not None else {}
        if tee == "simulated":
            kw.update(trust_simulated=True, simulated_root=self.simulated_root)
        # docs/protocol.md §4: D(n = our nonce, k = binding.cbor) is checked by the verifier
        # (binding_mismatch), with the policy (measurements, debug, TCB) as its last step
        result = _native.verify(
            evidence,
            tee,
            at=self.clock(),
            policy=self.policy,
            nonce=nonce,
            public_key=cbor,
            allow_debug=self.allow_debug,
            **kw,
        )
        if not result.verified:
            raise ServerAttestationError(
                result.reason or "malformed", f"server evidence: {result.message or ''}"
            )
        try:
            check_result(
                result,
                self.verifier,
                self.allowed,
                self.expected,
            )
        except AttestationError as e:
            raise ServerAttestationError(e.reason, f"server evidence: {e.message}") from None
        # the channel: the TLS key of this very connection, or the attested HPKE key
        if cert is not None:
            got = hashlib.sha256(spki_of_certificate(cert)).digest()
            if spki_sha is None:
                raise ServerAttestationError(
                    "binding_mismatch", "the evidence binds no TLS key, and this is TLS"
                )
            if not secrets.compare_digest(got, spki_sha):
                raise ServerAttestationError(
                    "binding_mismatch",
                    "the server's TLS certificate is not the one its evidence binds",
                )
        else:
            self.check_plain_allowed(response.request.url)
        if self.hpke_key_config is not None and hpke != self.hpke_key_config:
            raise ServerAttestationError(
                "binding_mismatch", "the evidence does not bind the expected HPKE key config"
            )
        return ServerAttestation(origin, result, cert, spki_sha, hpke)

    def verify_evidence(self, declared: str, evidence: bytes, nonce: bytes, cbor: bytes):
        """Native verification of server evidence bound to D(nonce, cbor), then the caller's
        tee_types and expected measurements; the verified result."""
        tee = canonical_tee_type(declared)
        if tee is None:
            raise ServerAttestationError("unsupported_type", f"unknown TEE type {declared!r}")
        if tee == "simulated" and not self.trust_simulated:
            raise ServerAttestationError(
                "root_untrusted", "the server's evidence is simulated (trust_simulated is off)"
            )
        if self.allowed is not None and tee not in self.allowed:
            raise ServerAttestationError("policy_denied", f"TEE type {tee} is not allowed")
        kw = self.verifier.verify_kwargs() if self.verifier is not None else {}
        if tee == "simulated":
            kw.update(trust_simulated=True, simulated_root=self.simulated_root)
        result = _native.verify(
            evidence,
            tee,
            at=self.clock(),
            policy=self.policy,
            nonce=nonce,
            public_key=cbor,
            allow_debug=self.allow_debug,
            **kw,
        )
        if not result.verified:
            raise ServerAttestationError(
                result.reason or "malformed", f"server evidence: {result.message or ''}"
            )
        try:
            check_result(result, self.verifier, self.allowed, self.expected)
        except AttestationError as e:
            raise ServerAttestationError(e.reason, f"server evidence: {e.message}") from None
        return result

    def verify_certificate(self, der: bytes) -> ServerAttestation:
        """attested_tls: the evidence in an attested-TLS certificate (DER), checked as the
        endpoint's would be, with n = 32 zero bytes and k = the binding of this certificate's
        own SPKI (docs/protocol.md §4)."""
        try:
            found = certificate_evidence(der)
        except ValueError as e:
            raise ServerAttestationError("malformed", str(e)) from None
        if found is None:
            raise ServerAttestationError(
                "missing",
                f"the server's certificate has no attested-TLS extension ({ATTESTED_TLS_OID}): "
                "is it running with --tls-attested?",
            )
        declared, evidence, cbor, _issued_at = found
        # the handshake checked no dates (no CA in this mode): the certificate's own validity
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        now = self.clock()
        if now > cert.not_valid_after_utc.timestamp():
            raise ServerAttestationError("expired", "the server's attested certificate expired")
        if now < cert.not_valid_before_utc.timestamp():
            raise ServerAttestationError(
                "not_yet_valid", "the server's attested certificate is not valid yet"
            )
        try:
            spki_sha, hpke = decode_binding(cbor)
        except ValueError as e:
            raise ServerAttestationError("malformed", f"the certificate's binding: {e}") from None
        got = hashlib.sha256(spki_of_certificate(der)).digest()
        if spki_sha is None or not secrets.compare_digest(got, spki_sha):
            raise ServerAttestationError(
                "binding_mismatch", "the certificate's evidence binds another key than its own"
            )
        if self.hpke_key_config is not None and hpke != self.hpke_key_config:
            raise ServerAttestationError(
                "binding_mismatch", "the evidence does not bind the expected HPKE key config"
            )
        result = self.verify_evidence(declared, evidence, bytes(32), cbor)
        return ServerAttestation(None, result, der, spki_sha, hpke)

    def check_pinned(self, response: httpx.Response, pins: dict) -> None:
        """Every response of an attested session: its origin was attested and its connection
        has the pinned certificate."""
        if response.request.extensions.get(_ATTESTING):
            return
        if self.attested_certs is not None:
            self.check_attested_connection(response, pins)
            return
        pin = pins.get(_origin(response.request.url))
        if pin is None:
            raise ServerAttestationError(
                "binding_mismatch", f"{response.request.url.host} was not attested (redirect?)"
            )
        cert = _peer_certificate(response)
        if pin.certificate is None:
            if cert is not None:
                raise ServerAttestationError("binding_mismatch", "the session was plain HTTP")
            return
        if cert is None or not secrets.compare_digest(cert, pin.certificate):
            raise ServerAttestationError(
                "binding_mismatch",
                "the server's certificate changed during the session (not the attested one)",
            )

    def check_attested_connection(self, response: httpx.Response, pins: dict) -> None:
        """attested_tls: the response came over a connection whose certificate was verified
        for its host (at its handshake), with the origin's pinned key."""
        url = response.request.url
        pin = pins.get(_origin(url))
        cert = _peer_certificate(response)
        if pin is None or cert is None or not self.attested_certs.known(_host(url), cert):
            raise ServerAttestationError(
                "binding_mismatch",
                f"{url.host}: the response did not come over a verified attested-TLS connection",
            )

    def attested_pin(self, url: httpx.URL, der: bytes) -> ServerAttestation:
        """attested_tls: the origin's ServerAttestation from a verified certificate."""
        att = self.attested_certs.check(_host(url), der)
        return ServerAttestation(
            _origin(url), att.result, der, att.tls_spki_sha256, att.hpke_key_config
        )

    def nonce_request(self, client, url: httpx.URL) -> httpx.Request:
        target = url.copy_with(path=self.nonce_path, query=None, fragment=None)
        return client.build_request("GET", target, headers={"Accept": "application/json"})

    def own_evidence_headers(self, response: httpx.Response) -> dict:
        """§1.4 mode 1: evidence bound to the server's nonce, k empty."""
        if response.status_code != 200:
            raise AttestationError(
                "nonce_invalid", f"{self.nonce_path} answered {response.status_code}"
            )
        try:
            nonce = _b64url_decode(response.json()["nonce"])
        except (ValueError, KeyError, TypeError):
            raise AttestationError("malformed", f"{self.nonce_path}: no nonce in the answer")
        ev = self.provider.generate(nonce, b"", at=self.clock())
        return {
            "X-Attestation-Token": _b64url(ev),
            "X-Attestation-Type": self.provider.tee_type,
            "X-Attestation-Nonce": _b64url(nonce),
        }


_CHECKER_KW = (
    "tee_types",
    "expected_measurements",
    "policy",
    "verifier",
    "allow_debug",
    "trust_simulated",
    "simulated_root",
    "hpke_key_config",
    "allow_plain",
    "attestation_path",
    "provider",
    "nonce_path",
    "clock",
    "attested_tls",
)


def _split(kw: dict, base_url) -> tuple[_Checker, dict]:
    opts = {
        "tee_types": None,
        "expected_measurements": None,
        "policy": None,
        "verifier": None,
        "allow_debug": False,
        "trust_simulated": False,
        "simulated_root": None,
        "hpke_key_config": None,
        "allow_plain": False,
        "attestation_path": ATTESTATION_PATH,
        "provider": None,
        "nonce_path": NONCE_PATH,
        "clock": time.time,
        "attested_tls": False,
    }
    for k in _CHECKER_KW:
        if k in kw:
            opts[k] = kw.pop(k)
    checker = _Checker(**opts)
    if base_url:
        url = httpx.URL(str(base_url))
        if url.scheme == "http":
            checker.check_plain_allowed(url)
            if checker.attested_certs is not None:
                raise ValueError("attested_tls needs an https:// server")
    return checker, kw


class AttestedClient(httpx.Client):
    """A sync ``httpx.Client`` that attests each origin before its first request (module
    docstring).  Keywords: ``tee_types``, ``expected_measurements``, ``policy`` (dict, JSON or
    path; the ``--attest-policy`` format), ``verifier`` (an AttestationProvider whose
    verification inputs, e.g. DCAP collateral, and expectations apply), ``allow_debug``,
    ``trust_simulated`` + ``simulated_root``, ``hpke_key_config``, ``allow_plain``,
    ``attestation_path``, ``provider`` (own evidence, header mode), ``nonce_path``, ``clock``,
    ``attested_tls`` (verify the certificate's evidence instead of the endpoint);
    every other keyword is httpx's."""

    def __init__(self, base_url="", **kw) -> None:
        self._checker, kw = _split(kw, base_url)
        self._handshake = _HandshakePins(self._checker.attested_certs)
        _ssl_context(kw, self._handshake)
        self._ssl = kw.get("verify")
        hooks = dict(kw.pop("event_hooks", None) or {})
        hooks["response"] = [*hooks.get("response", ()), self._check_response]
        super().__init__(base_url=base_url, event_hooks=hooks, **kw)
        self._pins: dict = {}
        self._lock = threading.Lock()

    @property
    def attestations(self) -> dict:
        """origin (scheme, host, port) -> ServerAttestation, for every origin attested."""
        return dict(self._pins)

    def attest(self, url=None) -> ServerAttestation:
        """Attest `url`'s origin now (the base URL's by default), if not done already."""
        url = self.build_request("GET", url if url is not None else "/").url
        with self._lock:
            pin = self._pins.get(_origin(url))
            if pin is None and self._checker.attested_certs is not None:
                der = _probe_certificate(self._ssl, url, self.timeout.connect)
                pin = self._pins[_origin(url)] = self._checker.attested_pin(url, der)
            if pin is None:
                req, nonce = self._checker.attestation_request(self, url)
                resp = super().send(req)
                try:
                    body = resp.read()
                    pin = self._checker.verify(resp, nonce, body)
                finally:
                    resp.close()
                self._handshake.add(_host(url), pin.certificate)
                self._pins[pin.origin] = pin
            return pin

    def send(self, request: httpx.Request, **kw) -> httpx.Response:
        if not request.extensions.get(_ATTESTING):
            self._checker.check_plain_allowed(request.url)
            self.attest(request.url)
            if self._checker.provider is not None:
                nr = super().send(self._checker.nonce_request(self, request.url))
                try:
                    nr.read()
                    request.headers.update(self._checker.own_evidence_headers(nr))
                finally:
                    nr.close()
        return super().send(request, **kw)

    def _check_response(self, response: httpx.Response) -> None:
        self._checker.check_pinned(response, self._pins)


class AsyncAttestedClient(httpx.AsyncClient):
    """``AttestedClient`` for asyncio (``httpx.AsyncClient``); the same keywords.  The
    client's own evidence is produced off the event loop."""

    def __init__(self, base_url="", **kw) -> None:
        self._checker, kw = _split(kw, base_url)
        self._handshake = _HandshakePins(self._checker.attested_certs)
        _ssl_context(kw, self._handshake)
        self._ssl = kw.get("verify")
        hooks = dict(kw.pop("event_hooks", None) or {})
        hooks["response"] = [*hooks.get("response", ()), self._check_response]
        super().__init__(base_url=base_url, event_hooks=hooks, **kw)
        self._pins: dict = {}
        self._lock: Optional[asyncio.Lock] = None

    @property
    def attestations(self) -> dict:
        return dict(self._pins)

    async def attest(self, url=None) -> ServerAttestation:
        url = self.build_request("GET", url if url is not None else "/").url
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            pin = self._pins.get(_origin(url))
            if pin is None and self._checker.attested_certs is not None:
                loop = asyncio.get_running_loop()
                der = await loop.run_in_executor(
                    None, _probe_certificate, self._ssl, url, self.timeout.connect
                )
                pin = self._pins[_origin(url)] = self._checker.attested_pin(url, der)
            if pin is None:
                req, nonce = self._checker.attestation_request(self, url)
                resp = await super().send(req)
                try:
                    body = await resp.aread()
                    loop = asyncio.get_running_loop()
                    # native verification releases the GIL: keep the event loop free
                    pin = await loop.run_in_executor(None, self._checker.verify, resp, nonce, body)
                finally:
                    await resp.aclose()
                self._handshake.add(_host(url), pin.certificate)
                self._pins[pin.origin] = pin
            return pin

    async def send(self, request: httpx.Request, **kw) -> httpx.Response:
        if not request.extensions.get(_ATTESTING):
            self._checker.check_plain_allowed(request.url)
            await self.attest(request.url)
            if self._checker.provider is not None:
                nr = await super().send(self._checker.nonce_request(self, request.url))
                try:
                    await nr.aread()
                    loop = asyncio.get_running_loop()
                    headers = await loop.run_in_executor(
                        None, self._checker.own_evidence_headers, nr
                    )
                    request.headers.update(headers)
                finally:
                    await nr.aclose()
        return await super().send(request, **kw)

    async def _check_response(self, response: httpx.Response) -> None:
        self._checker.check_pinned(response, self._pins)


#: the Shield library's name for the client of mutual attestation (used with ``await``)
MutualAttestationClient = AsyncAttestedClient
