"""Just enough DER for RFC 3161: encode a TimeStampReq, walk a token, put its certificate SET in order.

rfc3161-client parses and verifies tokens, but cannot build a request for a digest computed
beforehand (its builder always hashes its input itself), and rejects tokens whose certificate
SET is in chain order (valid BER, not DER), which is how OpenSSL and other TSAs write it. This
module covers exactly those two gaps; nothing here decides whether a token is valid.
"""
from __future__ import annotations


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (single-byte tag)."""
    return bytes([tag]) + _length(len(content)) + content


def integer(value: int) -> bytes:
    """A DER INTEGER (two's complement, minimal length)."""
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def oid(dotted: str) -> bytes:
    """A DER OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def read(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; ValueError if it is not DER we read."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, first = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not supported")
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80 or first > 0x84:
        raise ValueError("indefinite or oversized DER length")
    else:
        n = first & 0x7F
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, element end) of each element between ``start`` and ``end``."""
    out, pos = [], start
    while pos < end:
        tag, cstart, cend = read(buf, pos, end)
        out.append((tag, pos, cstart, cend))
        pos = cend
    return out


def is_response(der: bytes) -> bool:
    """A TimeStampResp starts SEQUENCE { SEQUENCE (status) ...; a bare token SEQUENCE { OID ..."""
    try:
        _, start, end = read(der, 0, len(der))
    except ValueError:
        return False
    return start < end and der[start] == 0x30


def as_response(token: bytes) -> bytes:
    """A bare TimeStampToken wrapped in a TimeStampResp with status granted (what the parser takes)."""
    return tlv(0x30, tlv(0x30, integer(0)) + token)


def sort_certificate_set(der: bytes) -> bytes:
    """The token (or response) with the SignedData ``certificates`` SET OF in DER (sorted) order.

    The set is outside what the TSA signs, and its length does not change, so the token stays
    exactly as valid (``openssl ts -verify`` takes either order). Anything unexpected is returned
    unchanged, for the parser to refuse.
    """
    try:
        buf = bytearray(der)
        tag, s, e = read(der, 0, len(der))
        kids = children(der, s, e)
        if tag != 0x30 or not kids:
            return der
        if kids[0][0] == 0x30:  # a TimeStampResp: (PKIStatusInfo, token)
            if len(kids) < 2:
                return der
            _, s, _, e = kids[1]
            _, s, e = read(der, s, e)
            kids = children(der, s, e)
        if len(kids) != 2 or kids[0][0] != 0x06 or kids[1][0] != 0xA0:  # ContentInfo: OID, [0] SignedData
            return der
        tag, s, e = read(der, kids[1][2], kids[1][3])
        if tag != 0x30:
            return der
        for tag, _, cstart, cend in children(der, s, e):
            if tag == 0xA0:  # [0] IMPLICIT CertificateSet
                certs = [der[a:b] for _, a, _, b in children(der, cstart, cend)]
                buf[cstart:cend] = b"".join(sorted(certs))
                return bytes(buf)
        return der
    except ValueError:
        return der


def _signed_data(token: bytes) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """(the ContentInfo's OID element, the SignedData's children) of a bare token; ValueError if it is not one."""
    tag, s, e = read(token, 0, len(token))
    if tag != 0x30 or e != len(token):
        raise ValueError("not a DER SEQUENCE")
    kids = children(token, s, e)
    if len(kids) != 2 or kids[0][0] != 0x06 or kids[1][0] != 0xA0:
        raise ValueError("not a CMS ContentInfo")
    tag, s, e = read(token, kids[1][2], kids[1][3])
    if tag != 0x30 or e != kids[1][3]:
        raise ValueError("not a CMS SignedData")
    return token[kids[0][1]:kids[0][3]], children(token, s, e)


def token_parts(token: bytes) -> dict:
    """The parts of a bare token that the TSA's signature does not cover, as DER: the SignedData
    ``version``, the ``certificates``, whether it has ``crls``, and of its one signer the
    ``signer_version``, ``digest_algorithm``, ``signature_algorithm`` and ``unsigned_attributes``."""
    _, kids = _signed_data(token)
    raw = {tag: token[a:b] for tag, a, _, b in kids}
    certs = next(([token[a:b] for _, a, _, b in children(token, c, d)] for tag, _, c, d in kids if tag == 0xA0), [])
    signers = children(token, kids[-1][2], kids[-1][3]) if kids[-1][0] == 0x31 else []
    if len(signers) != 1:
        raise ValueError("not exactly one SignerInfo")
    si = children(token, signers[0][2], signers[0][3])
    tags = [t for t, *_ in si]
    if len(si) < 6 or tags[0] != 0x02 or tags[3] != 0xA0:
        raise ValueError("a SignerInfo without signed attributes")
    return {"version": raw.get(0x02), "certificates": certs, "crls": 0xA1 in raw,
            "signer_version": token[si[0][1]:si[0][3]], "digest_algorithm": token[si[2][1]:si[2][3]],
            "signature_algorithm": token[si[4][1]:si[4][3]], "unsigned_attributes": len(si) > 6}


def with_certificates(token: bytes, certs: list[bytes]) -> bytes:
    """The bare token with its certificate SET replaced by ``certs`` (in that order), lengths re-encoded."""
    content_type, kids = _signed_data(token)
    body = b"".join(tlv(0xA0, b"".join(certs)) if tag == 0xA0 else token[a:b] for tag, a, _, b in kids)
    return tlv(0x30, content_type + tlv(0xA0, tlv(0x30, body)))
