"""RFC 3161 trusted timestamps: a TSA's signed statement that a SHA-256 digest existed at its genTime.

    token = request_timestamp("http://tsa.example/", digest)             # over HTTP (--tsa URL)
    query = make_query(digest); ...; token = token_from_response(reply, digest)   # "by file"
    stamp = verify_token(token, digest, roots=TsaRoots.load("tsa-roots.pem"))
    stamp.gen_time, stamp.tsa_fingerprint

Only SHA-256 digests are stamped (everything backmark names is named by SHA-256). Verification
is offline and done by ``rfc3161-client`` (pinned ==1.0.9: 1.0.7 and 1.0.8 trust certificates
the token itself carries, so they accept a token from any TSA). Trust comes only from the
verifier's roots: certificates inside a token are untrusted input, and self-issued ones are
dropped before the rest is handed to the library as intermediates, because the library trusts
intermediates like roots. Checked: the CMS signature over the TSTInfo, the chain to a root
valid at genTime, a critical timeStamping EKU, the digest. Not checked: revocation (no CRL or
OCSP). Every failure is :class:`InvalidTimestamp` with one line.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import rfc3161_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..errors import InvalidTimestamp
from ..io.files import read_file
from . import der

SHA256_OID = "2.16.840.1.101.3.4.2.1"
QUERY_TYPE = "application/timestamp-query"
MAX_REPLY_BYTES = 1 << 20  # real TSA replies are a few KiB


def _tidy(exc: BaseException) -> str:
    """One short line out of rfc3161-client's multi-line Rust and OpenSSL error texts."""
    text = str(exc)
    for pattern in (r'data: "([^"]+)"', r'reason: "([^"]+)"'):
        if m := re.search(pattern, text):
            return m.group(1)
    if m := re.search(r"ParseError \{ kind: (\w+)", text):
        return f"ASN.1 parse error ({m.group(1)})"
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _library_errors():
    # Fuzzed tokens raise ValueError, KeyError and x509.InvalidVersion from the parsers and
    # VerificationError from the verifier; callers get one type and one line.
    try:
        yield
    except InvalidTimestamp:
        raise
    except rfc3161_client.VerificationError as e:
        raise InvalidTimestamp(f"the timestamp does not verify: {_tidy(e)}") from None
    except Exception as e:  # noqa: BLE001 (see above)
        raise InvalidTimestamp(f"malformed timestamp: {_tidy(e)}") from None


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise InvalidTimestamp("a timestamped digest must be 32 bytes of SHA-256")


def _parse(data: bytes) -> rfc3161_client.TimeStampResponse:
    """A TimeStampResp or a bare token, parsed (certificate set put in DER order first)."""
    data = der.sort_certificate_set(data)
    with _library_errors():
        return rfc3161_client.decode_timestamp_response(data if der.is_response(data) else der.as_response(data))


# -- requesting ----------------------------------------------------------------------

@dataclass(frozen=True)
class TimestampQuery:
    """A DER TimeStampReq (``.tsq``) for ``digest``, and the nonce its reply must echo."""

    der: bytes
    digest: bytes
    nonce: int


def make_query(digest: bytes) -> TimestampQuery:
    """A TimeStampReq for a SHA-256 digest: version 1, a 64-bit nonce, certReq TRUE."""
    _check_digest(digest)
    nonce = secrets.randbits(64)
    imprint = der.tlv(0x30, der.tlv(0x30, der.oid(SHA256_OID) + b"\x05\x00") + der.tlv(0x04, digest))
    body = der.integer(1) + imprint + der.integer(nonce) + b"\x01\x01\xff"
    return TimestampQuery(der=der.tlv(0x30, body), digest=digest, nonce=nonce)


def token_from_response(reply: bytes, digest: bytes, *, nonce: int | None = None) -> bytes:
    """The token (DER) of a TSA's reply (a TimeStampResp, or a bare token "by file") for ``digest``.

    Checks status granted, SHA-256, the digest, the TSA certificate included and, given, the
    nonce; the signature is checked by :func:`verify_token`, which needs the verifier's roots.
    """
    _check_digest(digest)
    resp = _parse(reply)
    with _library_errors():
        if resp.status not in (rfc3161_client.PKIStatus.GRANTED, rfc3161_client.PKIStatus.GRANTED_WITH_MODS):
            text = "; ".join(resp.status_string)
            raise InvalidTimestamp(f"the TSA refused the request (status {resp.status}{': ' + text if text else ''})")
        info = resp.tst_info
        if nonce is not None and info.nonce != nonce:
            raise InvalidTimestamp("the TSA's reply does not echo the request's nonce (a replayed or foreign reply)")
        if info.message_imprint.hash_algorithm.dotted_string != SHA256_OID:
            raise InvalidTimestamp("the TSA's token is not over a SHA-256 digest")
        if info.message_imprint.message != digest:
            raise InvalidTimestamp("the TSA's token is for a different digest than this document's")
        if not resp.signed_data.certificates:
            raise InvalidTimestamp("the TSA's token lacks the TSA certificate")
        return _stored_form(resp.time_stamp_token())


def _stored_form(token: bytes) -> bytes:
    """The one form a token is stored in: its certificate SET in DER order without self-issued
    certificates (which are never used, so they would be bytes that change nothing: another
    token that verifies alike). The set is outside what the TSA signs."""
    try:
        certs = der.token_parts(token)["certificates"]
        keep = [c for c in certs if (x := x509.load_der_x509_certificate(c)).issuer != x.subject]
        return der.with_certificates(token, sorted(keep))
    except (ValueError, x509.InvalidVersion):  # InvalidVersion: a certificate's version field flipped
        raise InvalidTimestamp("the timestamp token is not a DER CMS SignedData with one signer") from None


# AlgorithmIdentifier DER of each signature a TSA may use, by digest OID: CMS leaves the
# signatureAlgorithm (and both version numbers) outside the signature, so anything else is refused.
_SIGNATURES = {
    d: {der.tlv(0x30, der.oid(ec)), der.tlv(0x30, der.oid("1.2.840.113549.1.1.1") + b"\x05\x00"),
        der.tlv(0x30, der.oid(rsa) + b"\x05\x00")}
    for d, ec, rsa in (("2.16.840.1.101.3.4.2.1", "1.2.840.10045.4.3.2", "1.2.840.113549.1.1.11"),
                       ("2.16.840.1.101.3.4.2.2", "1.2.840.10045.4.3.3", "1.2.840.113549.1.1.12"),
                       ("2.16.840.1.101.3.4.2.3", "1.2.840.10045.4.3.4", "1.2.840.113549.1.1.13"))
}


def _check_stored_form(token: bytes) -> None:
    """Refuse a token whose unsigned parts differ from the one form backmark stores (see _stored_form)."""
    if _stored_form(token) != token:
        raise InvalidTimestamp("the timestamp token is not in the form backmark stores (its certificate set was changed)")
    try:
        parts = der.token_parts(token)
        digest_oid = der.children(parts["digest_algorithm"], 0, len(parts["digest_algorithm"]))
        _, a, _, b = der.children(parts["digest_algorithm"], digest_oid[0][2], digest_oid[0][3])[0]
        digest_alg = parts["digest_algorithm"][a:b]
    except (ValueError, IndexError):
        raise InvalidTimestamp("the timestamp token is not a DER CMS SignedData with one signer") from None
    allowed = next((v for d, v in _SIGNATURES.items() if der.oid(d) == digest_alg), set())
    if (parts["version"] != der.integer(3) or parts["signer_version"] != der.integer(1) or parts["crls"]
            or parts["unsigned_attributes"] or parts["signature_algorithm"] not in allowed):
        raise InvalidTimestamp("the timestamp token's unsigned fields (versions, signature algorithm, CRLs or unsigned "
                               "attributes) are not those of an RFC 3161 token as TSAs issue it")


def request_timestamp(url: str, digest: bytes, *, timeout: float = 15.0) -> bytes:
    """POST a TimeStampReq for ``digest`` to the TSA at ``url`` (http or https); the token, DER."""
    query = make_query(digest)
    try:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(url)
        request = urllib.request.Request(url, data=query.der, method="POST", headers={"Content-Type": QUERY_TYPE})
    except (ValueError, TypeError):
        raise InvalidTimestamp(f"--tsa must be an http or https URL, not {url!r}") from None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (scheme checked above)
            body = reply.read(MAX_REPLY_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise InvalidTimestamp(f"the TSA {url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise InvalidTimestamp(f"cannot reach the TSA {url}: {getattr(e, 'reason', None) or e}") from None
    if len(body) > MAX_REPLY_BYTES:
        raise InvalidTimestamp(f"the TSA {url} answered more than {MAX_REPLY_BYTES} bytes")
    try:
        return token_from_response(body, digest, nonce=query.nonce)
    except InvalidTimestamp as e:
        raise InvalidTimestamp(f"{e} (from {url})") from None


# -- verifying -----------------------------------------------------------------------

@dataclass(frozen=True)
class TsaRoots:
    """The TSA root certificates the VERIFIER trusts (never ones stored beside a token)."""

    certificates: tuple[x509.Certificate, ...]

    @classmethod
    def from_pem(cls, data: bytes, *, name: str = "TSA roots") -> "TsaRoots":
        try:
            certs = tuple(x509.load_pem_x509_certificates(data))
        except ValueError:
            raise InvalidTimestamp(f"{name}: not PEM certificates") from None
        return cls(certs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TsaRoots":
        """Read a PEM file of one or more trusted root certificates."""
        return cls.from_pem(read_file(path, what="PEM file of TSA root certificates"), name=str(Path(path)))

    @property
    def fingerprints(self) -> list[str]:
        return [c.fingerprint(hashes.SHA256()).hex() for c in self.certificates]


@dataclass(frozen=True)
class VerifiedTimestamp:
    """What a token that verified asserts."""

    gen_time: datetime  # timezone-aware UTC, whole seconds (the library drops fractions)
    tsa_fingerprint: str  # SHA-256 of the TSA signing certificate (DER), hex
    tsa_subject: str  # RFC 4514 subject of that certificate
    serial_number: int  # the TSA's serial number of this token
    policy: str  # the TSA policy OID


def _signer(resp: rfc3161_client.TimeStampResponse, certs: list[x509.Certificate]) -> x509.Certificate:
    infos = list(resp.signed_data.signer_infos)
    if len(infos) != 1:
        raise InvalidTimestamp(f"a timestamp token must have exactly one signer, this one has {len(infos)}")
    for cert in certs:
        if cert.issuer == infos[0].issuer and cert.serial_number == infos[0].serial_number:
            return cert
    raise InvalidTimestamp("the timestamp token does not carry the certificate of the TSA that signed it")


def verify_token(token: bytes, digest: bytes, *, roots: TsaRoots) -> VerifiedTimestamp:
    """Verify ``token`` over the SHA-256 ``digest`` against the verifier's ``roots``, offline."""
    _check_digest(digest)
    if not roots.certificates:
        raise InvalidTimestamp("no trusted TSA root certificate to verify the timestamp against")
    resp = _parse(token)
    _check_stored_form(token)
    with _library_errors():
        if resp.tst_info.message_imprint.hash_algorithm.dotted_string != SHA256_OID:
            raise InvalidTimestamp("the timestamp token is not over a SHA-256 digest")
        embedded = [x509.load_der_x509_certificate(c) for c in resp.signed_data.certificates]
        signer = _signer(resp, embedded)
        builder = rfc3161_client.VerifierBuilder()  # a fresh builder each time: its add_* share one list
        for root in roots.certificates:
            builder = builder.add_root_certificate(root)
        for cert in embedded:
            if cert.issuer != cert.subject:  # self-issued ones would become trust anchors
                builder = builder.add_intermediate_certificate(cert)
        builder.build().verify(resp, digest)
        info = resp.tst_info
        return VerifiedTimestamp(
            gen_time=info.gen_time,
            tsa_fingerprint=signer.fingerprint(hashes.SHA256()).hex(),
            tsa_subject=signer.subject.rfc4514_string(),
            serial_number=info.serial_number,
            policy=info.policy.dotted_string,
        )


__all__ = [
    "TimestampQuery",
    "TsaRoots",
    "VerifiedTimestamp",
    "make_query",
    "request_timestamp",
    "token_from_response",
    "verify_token",
]
