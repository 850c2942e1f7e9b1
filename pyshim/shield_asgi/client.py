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
``SimulatedEvidenceProvider()``) the client also proves its own TEE to the server, in one of
§1.4's three ways, chosen by ``client_attestation=``:

- ``"header"`` (the default): each request carries fresh evidence — a nonce from the server's
  ``/.well-known/shield/nonce``, evidence bound to it with ``k`` empty,
  ``X-Attestation-Token``/``-Type``/``-Nonce``.  One extra round trip per request, and anyone
  who can read the header could race it (no proof of possession).
- ``"session"``: once per origin, evidence bound to a fresh nonce and ``k`` = the SPKI of
  ``client_key`` (an X25519, P-256 or RSA ≥ 2048 private key of ``cryptography``; a fresh
  X25519 key by default) is POSTed to ``/.well-known/shield/attest``; the server seals a
  32-byte session key to ``k`` (HPKE base mode, info ``shield-session-v1``, empty AAD — opened
  with ``cryptography``'s HPKE — or RSA-OAEP-256).  Every later request carries
  ``X-Attestation-Session`` and ``X-Attestation-Proof: t=<ms>, mac=…`` (``t`` strictly
  increasing) and, with a body, ``Content-Digest: sha-256=:…:`` (RFC 9530).  The session is
  re-established before it expires, and on a 401 ``session_unknown``/``session_expired``
  (the request is then sent once more: the server refused it before the app saw it; so is a
  request refused ``proof_invalid``, which concurrent requests of one session can cause when
  they overtake each other).  Works behind TLS-terminating proxies.
- ``"mtls"``: the client's TLS certificate is ``k``: ``client_cert=(certfile, keyfile[,
  password])``, or a fresh P-256 key and self-signed certificate (which only a server trusting
  it verifies).  On the connection the client attests over, it POSTs evidence bound to the
  certificate's SPKI to ``/.well-known/shield/attest``; later requests on that connection are
  attested by the TLS channel itself.  The connection is the session, so the client keeps one
  connection (``max_connections=1``): a new connection (the server closed the old one) is
  attested again before it is used, and a request that a connection replacement sent
  unattested and the server refused (401 ``missing``) is sent once more after attesting.

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
import base64
import hashlib
import hmac
import json
import os
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
from shield_asgi.integrations.protocol import ATTEST_PATH, NONCE_PATH, check_result
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
    "ClientAttestationError",
    "CLIENT_ATTESTATION_MODES",
    "MutualAttestationClient",
    "ServerAttestation",
    "ServerAttestationError",
]

ATTESTATION_PATH = "/.well-known/shield/attestation"
#: the certificate extension of attested TLS (docs/protocol.md §4; the TCG's CMW OID)
ATTESTED_TLS_OID = "2.23.133.5.4.9"
_EVIDENCE_MEDIA_TYPE = "application/vnd.shield.evidence+cbor"
_ATTESTING = "shield.attesting"  # request extension: the client's own attestation round trip
#: how the client presents its own evidence (docs/protocol.md §1.4 modes 1, 2, 3)
CLIENT_ATTESTATION_MODES = ("header", "session", "mtls")
SESSION_INFO = b"shield-session-v1"
#: re-establish a session this long before the server's expiry (clock drift, a slow request)
SESSION_MARGIN = 30.0
#: 401 reasons after which the client re-establishes its session and sends the request again
_SESSION_GONE = ("session_unknown", "session_expired")


class ServerAttestationError(AttestationError):
    """The server did not prove what the client requires.  ``reason`` is a §3 code
    (``binding_mismatch``, ``measurement_mismatch``, ``root_untrusted``, …); ``retry_after``
    is set when the server answered 503 with Retry-After."""

    def __init__(self, reason: str, message: str = "", retry_after: Optional[int] = None) -> None:
        super().__init__(reason, message)
        self.retry_after = retry_after


class ClientAttestationError(AttestationError):
    """The server did not accept the client's own evidence (session or mutual-TLS
    establishment): ``reason`` is the server's §3 code (``binding_mismatch``, ``nonce_invalid``,
    …) or ``malformed`` for an answer the client cannot use."""


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


def _ssl_context(kw: dict, pins: _HandshakePins, own: Optional["_Own"] = None) -> None:
    """The client's SSL context (httpx's own construction from verify/cert/trust_env), with the
    handshake check installed (and, in mutual-TLS mode, the client certificate); left alone
    when the caller brings a transport."""
    if "transport" in kw:
        if pins.attested is not None:
            raise ValueError(
                "attested_tls needs the client's own SSL context (it checks each handshake): "
                "do not pass transport="
            )
        if own is not None and own.mode == "mtls":
            raise ValueError("client_attestation='mtls' builds its own TLS context: no transport=")
        return
    verify = kw.pop("verify", True)
    if pins.attested is not None and not isinstance(verify, ssl.SSLContext):
        ctx = _attested_ssl_context(kw.pop("cert", None))
    elif verify is False:
        raise ValueError("AttestedClient needs TLS verification of the server (verify=False)")
    elif isinstance(verify, ssl.SSLContext):
        if kw.get("cert") is not None:
            raise ValueError("give the client certificate in your SSLContext, not cert=")
        ctx = verify
    else:
        ctx = httpx.create_ssl_context(
            verify=verify, cert=kw.pop("cert", None), trust_env=kw.get("trust_env", True)
        )
    pins.install(ctx)
    if own is not None and own.mode == "mtls":
        if kw.get("http2"):
            raise ValueError("client_attestation='mtls' needs HTTP/1.1 (http2=False)")
        own.spki = _load_client_cert(ctx, own.client_cert)
        # the connection is the session (§1.4 mode 3): one connection, attested before use
        kw["limits"] = httpx.Limits(max_connections=1, max_keepalive_connections=1)
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
        # docs/protocol.md §4: D(n = our nonce, k = binding.cbor) is checked by the verifier
        # (binding_mismatch), with the policy (measurements, debug, TCB) as its last step
        result = self.verify_evidence(declared, evidence, nonce, cbor)
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
            "X-Attestation-Token": _evidence_text(self.provider.tee_type, ev),
            "X-Attestation-Type": self.provider.tee_type,
            "X-Attestation-Nonce": _b64url(nonce),
        }


# ---- the client's own evidence in session and mutual-TLS mode (docs/protocol.md §1.4) ----


class _Session:
    """An established session (§1.4 mode 2): id, the unsealed key, when to renew, last t."""

    __slots__ = ("id", "key", "renew_at", "last_t", "lock")

    def __init__(self, sid: str, key: bytes, renew_at: float) -> None:
        self.id = sid
        self.key = key
        self.renew_at = renew_at
        self.last_t = 0
        self.lock = threading.Lock()  # t is strictly increasing across threads too


class _Connection:
    """A connection attested in mutual-TLS mode (§1.4 mode 3): its network stream."""

    __slots__ = ("stream", "renew_at")

    def __init__(self, stream, renew_at: float) -> None:
        self.stream = stream
        self.renew_at = renew_at


#: evidence types that are JWTs: sent as the token's text, never re-encoded (§1.4, §1.5)
_JWT_TYPES = ("maa", "gcp")


def _evidence_text(tee_type: str, ev) -> str:
    """Evidence as the protocol's JSON and headers carry it: a JWT as it is, binary evidence
    base64url."""
    if isinstance(ev, str):
        return ev
    if canonical_tee_type(tee_type) in _JWT_TYPES:
        return bytes(ev).decode("ascii")
    return _b64url(ev)


def _spki(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_client_key(key):
    """The session key pair k: the caller's, or a fresh X25519 one.  The types the server can
    seal to (§1.4: HPKE X25519 or P-256, RSA-OAEP-256 for RSA ≥ 2048 bits)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

    if key is None:
        return x25519.X25519PrivateKey.generate()
    if isinstance(key, x25519.X25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise TypeError(
        "client_key must be a cryptography X25519, P-256 or RSA (>= 2048 bits) private key"
    )


def _unseal(key, alg, enc: Optional[bytes], sealed: bytes) -> bytes:
    """The 32-byte session key sealed to `key` (§1.4 mode 2): HPKE base mode, info
    ``shield-session-v1``, empty AAD (cryptography's HPKE), or RSA-OAEP with SHA-256 and an
    empty label.  ClientAttestationError when the answer does not fit the key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hpke as _hpke
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

    kem = {
        "HPKE-X25519-SHA256-AES256GCM": (_hpke.KEM.X25519, x25519.X25519PrivateKey),
        "HPKE-P256-SHA256-AES256GCM": (_hpke.KEM.P256, ec.EllipticCurvePrivateKey),
    }.get(alg)
    try:
        if kem is not None and isinstance(key, kem[1]) and enc:
            suite = _hpke.Suite(kem[0], _hpke.KDF.HKDF_SHA256, _hpke.AEAD.AES_256_GCM)
            # cryptography's single-shot API takes enc ‖ ciphertext (RFC 9180 §6.1)
            skey = suite.decrypt(enc + sealed, key, info=SESSION_INFO)
        elif alg == "RSA-OAEP-256" and isinstance(key, rsa.RSAPrivateKey):
            oaep = padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
            )
            skey = key.decrypt(sealed, oaep)
        else:
            raise ClientAttestationError(
                "malformed", f"the session key is sealed with {alg!r}, which does not fit our key"
            )
    except ClientAttestationError:
        raise
    except Exception as e:  # cryptography's InvalidTag, ValueError: not sealed to our key
        raise ClientAttestationError(
            "malformed", f"cannot unseal the session key ({type(e).__name__})"
        ) from None
    if len(skey) != 32:
        raise ClientAttestationError("malformed", "the session key is not 32 bytes")
    return skey


def _self_signed_cert() -> tuple:
    """A fresh P-256 key and a self-signed certificate for it (PEM bytes): the mutual-TLS
    client's default identity when the caller gives none."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shield attested client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _load_client_cert(ctx: ssl.SSLContext, client_cert) -> bytes:
    """Loads the mutual-TLS client certificate into `ctx`; returns its SPKI (DER), k."""
    import tempfile

    if client_cert is None:
        cert_pem, key_pem = _self_signed_cert()
        # load_cert_chain reads files only: a private directory, removed at once
        with tempfile.TemporaryDirectory(prefix="shield-client-") as d:
            cf, kf = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            with open(cf, "wb") as f:
                f.write(cert_pem)
            with open(os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(key_pem)
            ctx.load_cert_chain(cf, kf)
        return spki_of_certificate(cert_pem)
    if isinstance(client_cert, (str, os.PathLike)):
        client_cert = (client_cert,)
    certfile, keyfile, password = (tuple(client_cert) + (None, None))[:3]
    ctx.load_cert_chain(certfile, keyfile, password)
    with open(certfile, "rb") as f:
        return spki_of_certificate(f.read())


class _Own:
    """The I/O-free part of the client's own attestation (shared by the sync and async
    clients): the requests to build, the answers to check, the session proofs."""

    def __init__(self, checker: "_Checker", mode: str, client_key, client_cert) -> None:
        if mode not in CLIENT_ATTESTATION_MODES:
            raise ValueError(
                f"client_attestation must be one of {', '.join(CLIENT_ATTESTATION_MODES)}"
            )
        if mode != "header" and checker.provider is None:
            raise ValueError(f"client_attestation={mode!r} needs provider= (the own evidence)")
        if client_key is not None and mode != "session":
            raise ValueError("client_key is the session-mode key: client_attestation='session'")
        if client_cert is not None and mode != "mtls":
            raise ValueError("client_cert is the mutual-TLS certificate: client_attestation='mtls'")
        self.checker = checker
        self.mode = mode if checker.provider is not None else None
        self.key = _check_client_key(client_key) if self.mode == "session" else None
        self.spki = _spki(self.key.public_key()) if self.key is not None else None
        self.client_cert = client_cert
        self.sessions: dict = {}  # origin -> _Session
        self.connections: dict = {}  # origin -> _Connection

    def evidence(self, response: httpx.Response) -> tuple[bytes, str]:
        """Evidence bound to the nonce the server issued (`response`) and k (§1.2)."""
        c = self.checker
        if response.status_code != 200:
            raise ClientAttestationError(
                "nonce_invalid", f"{c.nonce_path} answered {response.status_code}"
            )
        try:
            nonce = _b64url_decode(response.json()["nonce"])
        except (ValueError, KeyError, TypeError):
            raise ClientAttestationError(
                "malformed", f"{c.nonce_path}: no nonce in the answer"
            ) from None
        ev = c.provider.generate(nonce, self.spki, at=c.clock())
        return nonce, _evidence_text(c.provider.tee_type, ev)

    def establish_request(self, client, url: httpx.URL, nonce: bytes, ev: str) -> httpx.Request:
        body = {"type": self.checker.provider.tee_type, "evidence": ev, "nonce": _b64url(nonce)}
        if self.mode == "session":
            body["public_key"] = _b64url(self.spki)  # mTLS: k is the certificate's, not sent
        target = url.copy_with(path=ATTEST_PATH, query=None, fragment=None)
        return client.build_request(
            "POST", target, json=body, headers={"Accept": "application/json"}
        )

    def _refused(self, response: httpx.Response, body: bytes) -> ClientAttestationError:
        reason, message = "malformed", f"{ATTEST_PATH} answered {response.status_code}"
        try:
            err = json.loads(body)
            if isinstance(err, dict) and isinstance(err.get("reason"), str):
                reason, message = err["reason"], f"{message}: {err.get('message') or reason}"
        except ValueError:
            pass
        return ClientAttestationError(reason, message)

    def take_session(self, response: httpx.Response, body: bytes) -> _Session:
        """The establishment's answer -> the session (the key unsealed)."""
        if response.status_code != 200:
            raise self._refused(response, body)
        try:
            doc = json.loads(body)
            sid, ttl, alg = doc["session"], doc["expires_in"], doc["alg"]
            sealed = _b64url_decode(doc["sealed_key"])
            enc = _b64url_decode(doc["enc"]) if doc.get("enc") is not None else None
            if not isinstance(sid, str) or not sid or not isinstance(ttl, int) or ttl <= 0:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ClientAttestationError(
                "malformed", f"{ATTEST_PATH}: the answer is not a session (§1.4)"
            ) from None
        skey = _unseal(self.key, alg, enc, sealed)
        return _Session(sid, skey, self.checker.clock() + max(ttl - SESSION_MARGIN, ttl / 2))

    def take_connection(self, response: httpx.Response, body: bytes) -> _Connection:
        if response.status_code != 200:
            raise self._refused(response, body)
        try:
            doc = json.loads(body)
            ttl = doc["expires_in"]
            if doc.get("mode") != "mtls" or not isinstance(ttl, int) or ttl <= 0:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ClientAttestationError(
                "malformed",
                f"{ATTEST_PATH}: the server did not bind our TLS certificate (is it asking for "
                "client certificates and trusting ours?)",
            ) from None
        stream = response.extensions.get("network_stream")
        if stream is None:
            raise ClientAttestationError(
                "malformed", "the transport does not expose its connection (network_stream)"
            )
        return _Connection(stream, self.checker.clock() + max(ttl - SESSION_MARGIN, ttl / 2))

    def live_session(self, origin) -> Optional[_Session]:
        s = self.sessions.get(origin)
        return s if s is not None and self.checker.clock() < s.renew_at else None

    def live_connection(self, origin) -> Optional[_Connection]:
        c = self.connections.get(origin)
        if c is None or self.checker.clock() >= c.renew_at:
            return None
        # an idle connection that is readable was closed by the server: the pool will open a
        # new one, which has to be attested first
        try:
            if c.stream.get_extra_info("is_readable"):
                return None
        except Exception:  # a closed stream's socket is gone
            return None
        return c

    def sign(self, request: httpx.Request, s: _Session) -> None:
        """§1.4 mode 2: X-Attestation-Session, X-Attestation-Proof and Content-Digest on a
        request whose body is read (request.content)."""
        body = request.content
        digest = ""
        if body or "transfer-encoding" in request.headers:
            # RFC 9530: the server checks it as the body streams
            d = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
            digest = f"sha-256=:{d}:"
            request.headers["Content-Digest"] = digest
        else:
            request.headers.pop("Content-Digest", None)
        with s.lock:
            t = max(s.last_t + 1, int(self.checker.clock() * 1000))
            s.last_t = t
        target = request.url.raw_path  # the request-target exactly as httpx writes it
        msg = b"\x00".join(
            (
                b"shield-proof-v1",
                str(t).encode("ascii"),
                request.method.encode("ascii"),
                target,
                digest.encode("ascii"),
            )
        )
        mac = hmac.new(s.key, msg, hashlib.sha256).digest()
        request.headers["X-Attestation-Session"] = s.id
        request.headers["X-Attestation-Proof"] = f"t={t}, mac={_b64url(mac)}"

    @staticmethod
    def refusal(response: httpx.Response) -> Optional[str]:
        """The §3 reason of a 401 answer (None for anything else)."""
        if response.status_code != 401:
            return None
        try:
            doc = json.loads(response.content)
        except (ValueError, httpx.ResponseNotRead):
            return None
        return doc.get("reason") if isinstance(doc, dict) else None


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


def _split(kw: dict, base_url) -> tuple[_Checker, "_Own", dict]:
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
    own = _Own(
        checker,
        kw.pop("client_attestation", "header"),
        kw.pop("client_key", None),
        kw.pop("client_cert", None),
    )
    if base_url:
        url = httpx.URL(str(base_url))
        if url.scheme == "http":
            checker.check_plain_allowed(url)
            if checker.attested_certs is not None:
                raise ValueError("attested_tls needs an https:// server")
            if own.mode == "mtls":
                raise ValueError("client_attestation='mtls' needs https")
    return checker, own, kw


class AttestedClient(httpx.Client):
    """A sync ``httpx.Client`` that attests each origin before its first request (module
    docstring).  Keywords: ``tee_types``, ``expected_measurements``, ``policy`` (dict, JSON or
    path; the ``--attest-policy`` format), ``verifier`` (an AttestationProvider whose
    verification inputs, e.g. DCAP collateral, and expectations apply), ``allow_debug``,
    ``trust_simulated`` + ``simulated_root``, ``hpke_key_config``, ``allow_plain``,
    ``attestation_path``, ``provider`` (own evidence), ``client_attestation`` (``"header"``,
    ``"session"`` or ``"mtls"``: how the own evidence is presented), ``client_key`` (session
    mode), ``client_cert`` (mutual-TLS mode), ``nonce_path``, ``clock``, ``attested_tls``
    (verify the certificate's evidence instead of the endpoint); every other keyword is
    httpx's."""

    def __init__(self, base_url="", **kw) -> None:
        self._checker, self._own, kw = _split(kw, base_url)
        self._handshake = _HandshakePins(self._checker.attested_certs)
        _ssl_context(kw, self._handshake, self._own)
        self._ssl = kw.get("verify")
        hooks = dict(kw.pop("event_hooks", None) or {})
        hooks["response"] = [*hooks.get("response", ()), self._check_response]
        super().__init__(base_url=base_url, event_hooks=hooks, **kw)
        self._pins: dict = {}
        self._lock = threading.Lock()
        self._own_lock = threading.Lock()

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
        if request.extensions.get(_ATTESTING):
            return super().send(request, **kw)
        self._checker.check_plain_allowed(request.url)
        self.attest(request.url)
        mode = self._own.mode
        if mode == "session":
            return self._send_session(request, **kw)
        if mode == "mtls":
            return self._send_mtls(request, **kw)
        if mode == "header":
            nr = super().send(self._checker.nonce_request(self, request.url))
            try:
                nr.read()
                request.headers.update(self._checker.own_evidence_headers(nr))
            finally:
                nr.close()
        return super().send(request, **kw)

    # ---- session and mutual-TLS mode (docs/protocol.md §1.4 modes 2 and 3)

    def _establish(self, url: httpx.URL):
        """One establishment: a nonce, evidence bound to it and k, the POST; the _Session or
        the _Connection it made."""
        own = self._own
        nr = super().send(self._checker.nonce_request(self, url))
        try:
            nr.read()
            nonce, ev = own.evidence(nr)
        finally:
            nr.close()
        resp = super().send(own.establish_request(self, url, nonce, ev))
        try:
            body = resp.read()
            if own.mode == "session":
                return own.take_session(resp, body)
            return own.take_connection(resp, body)
        finally:
            resp.close()

    def _session(self, url: httpx.URL, renew: bool = False) -> _Session:
        origin = _origin(url)
        with self._own_lock:
            s = None if renew else self._own.live_session(origin)
            if s is None:
                s = self._own.sessions[origin] = self._establish(url)
            return s

    def _connection(self, url: httpx.URL, renew: bool = False) -> _Connection:
        origin = _origin(url)
        with self._own_lock:
            c = None if renew else self._own.live_connection(origin)
            if c is None:
                c = self._own.connections[origin] = self._establish(url)
            return c

    def _refused_for(self, response: httpx.Response, reasons) -> Optional[str]:
        """The reason when `response` is a 401 with one of `reasons` (then closed), else None."""
        if response.status_code != 401:
            return None
        response.read()
        reason = self._own.refusal(response)
        if reason in reasons:
            response.close()
            return reason
        return None

    def _send_session(self, request: httpx.Request, **kw) -> httpx.Response:
        request.read()  # the body's digest, and a body that can be sent twice
        s = self._session(request.url)
        self._own.sign(request, s)
        resp = super().send(request, **kw)
        reason = self._refused_for(resp, ("proof_invalid",) + _SESSION_GONE)
        if reason is None:
            return resp
        # refused by the server before the app saw it: once more, with a new session if the
        # old one is gone, or a new proof (a concurrent request overtook this one's t)
        self._own.sign(request, self._session(request.url, renew=reason in _SESSION_GONE))
        return super().send(request, **kw)

    def _send_mtls(self, request: httpx.Request, **kw) -> httpx.Response:
        request.read()
        c = self._connection(request.url)
        resp = super().send(request, **kw)
        if resp.extensions.get("network_stream") is c.stream:
            return resp
        # the pool replaced the connection between the attestation and this request: it went
        # out unattested; if the server refused it for that, attest the new one and resend
        if self._refused_for(resp, ("missing",)) is None:
            return resp
        self._connection(request.url, renew=True)
        return super().send(request, **kw)

    def _check_response(self, response: httpx.Response) -> None:
        self._checker.check_pinned(response, self._pins)


class AsyncAttestedClient(httpx.AsyncClient):
    """``AttestedClient`` for asyncio (``httpx.AsyncClient``); the same keywords.  The
    client's own evidence is produced off the event loop."""

    def __init__(self, base_url="", **kw) -> None:
        self._checker, self._own, kw = _split(kw, base_url)
        self._handshake = _HandshakePins(self._checker.attested_certs)
        _ssl_context(kw, self._handshake, self._own)
        self._ssl = kw.get("verify")
        hooks = dict(kw.pop("event_hooks", None) or {})
        hooks["response"] = [*hooks.get("response", ()), self._check_response]
        super().__init__(base_url=base_url, event_hooks=hooks, **kw)
        self._pins: dict = {}
        self._lock: Optional[asyncio.Lock] = None
        self._own_lock: Optional[asyncio.Lock] = None

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
        if request.extensions.get(_ATTESTING):
            return await super().send(request, **kw)
        self._checker.check_plain_allowed(request.url)
        await self.attest(request.url)
        mode = self._own.mode
        if mode == "session":
            return await self._send_session(request, **kw)
        if mode == "mtls":
            return await self._send_mtls(request, **kw)
        if mode == "header":
            nr = await super().send(self._checker.nonce_request(self, request.url))
            try:
                await nr.aread()
                loop = asyncio.get_running_loop()
                headers = await loop.run_in_executor(None, self._checker.own_evidence_headers, nr)
                request.headers.update(headers)
            finally:
                await nr.aclose()
        return await super().send(request, **kw)

    # ---- session and mutual-TLS mode (docs/protocol.md §1.4 modes 2 and 3)

    async def _establish(self, url: httpx.URL):
        own = self._own
        loop = asyncio.get_running_loop()
        nr = await super().send(self._checker.nonce_request(self, url))
        try:
            await nr.aread()
            # the provider blocks (device I/O, signing): off the event loop
            nonce, ev = await loop.run_in_executor(None, own.evidence, nr)
        finally:
            await nr.aclose()
        resp = await super().send(own.establish_request(self, url, nonce, ev))
        try:
            body = await resp.aread()
            if own.mode == "session":
                return await loop.run_in_executor(None, own.take_session, resp, body)
            return own.take_connection(resp, body)
        finally:
            await resp.aclose()

    def _own_locked(self) -> asyncio.Lock:
        if self._own_lock is None:
            self._own_lock = asyncio.Lock()
        return self._own_lock

    async def _session(self, url: httpx.URL, renew: bool = False) -> _Session:
        origin = _origin(url)
        async with self._own_locked():
            s = None if renew else self._own.live_session(origin)
            if s is None:
                s = self._own.sessions[origin] = await self._establish(url)
            return s

    async def _connection(self, url: httpx.URL, renew: bool = False) -> _Connection:
        origin = _origin(url)
        async with self._own_locked():
            c = None if renew else self._own.live_connection(origin)
            if c is None:
                c = self._own.connections[origin] = await self._establish(url)
            return c

    async def _refused_for(self, response: httpx.Response, reasons) -> Optional[str]:
        if response.status_code != 401:
            return None
        await response.aread()
        reason = self._own.refusal(response)
        if reason in reasons:
            await response.aclose()
            return reason
        return None

    async def _send_session(self, request: httpx.Request, **kw) -> httpx.Response:
        await request.aread()
        s = await self._session(request.url)
        self._own.sign(request, s)
        resp = await super().send(request, **kw)
        reason = await self._refused_for(resp, ("proof_invalid",) + _SESSION_GONE)
        if reason is None:
            return resp
        s = await self._session(request.url, renew=reason in _SESSION_GONE)
        self._own.sign(request, s)
        return await super().send(request, **kw)

    async def _send_mtls(self, request: httpx.Request, **kw) -> httpx.Response:
        await request.aread()
        c = await self._connection(request.url)
        resp = await super().send(request, **kw)
        if resp.extensions.get("network_stream") is c.stream:
            return resp
        if await self._refused_for(resp, ("missing",)) is None:
            return resp
        await self._connection(request.url, renew=True)
        return await super().send(request, **kw)

    async def _check_response(self, response: httpx.Response) -> None:
        self._checker.check_pinned(response, self._pins)


#: the Shield library's name for the client of mutual attestation (used with ``await``)
MutualAttestationClient = AsyncAttestedClient
