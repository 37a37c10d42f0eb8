"""RFC 3161 timestamps and anchors, against local TSAs made by the tests (tests/tsa.py): HTTP on 127.0.0.1 and by file."""
import hashlib
import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import rfc3161_client
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from backmark.cli import main
from backmark.crypto import der
from backmark.crypto.timestamp import TsaRoots, make_query, request_timestamp, token_from_response, verify_token
from backmark.errors import InvalidFile, InvalidTimestamp
from backmark.protocols.anchor import (
    anchor_path,
    check_anchor,
    document_digest,
    find_anchor,
    load_anchor,
    new_anchor,
    save_anchor,
)

from .tsa import LocalTSA

DIGEST = hashlib.sha256(b"a document").digest()


@pytest.fixture(scope="module")
def url_a(tsa_a):
    with tsa_a.serve() as url:
        yield url


def _der(pem_path) -> bytes:
    return x509.load_pem_x509_certificate(pem_path.read_bytes()).public_bytes(serialization.Encoding.DER)


def _by_file(tsa, digest=DIGEST):
    query = make_query(digest)
    return token_from_response(tsa.reply(query.der), digest, nonce=query.nonce)


def test_http_round_trip_gives_the_tsa_time_and_certificate(tsa_a, url_a, tsa_roots_a):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = verify_token(request_timestamp(url_a, DIGEST), DIGEST, roots=tsa_roots_a)
    assert before - timedelta(seconds=2) <= stamp.gen_time <= datetime.now(timezone.utc) + timedelta(seconds=2)
    tsa_cert = x509.load_pem_x509_certificate((tsa_a.directory / "tsa.pem").read_bytes())
    assert stamp.tsa_fingerprint == tsa_cert.fingerprint(hashes.SHA256()).hex() and "TSA A" in stamp.tsa_subject
    assert stamp.policy == "1.3.6.1.4.1.99999.1.1"


def test_by_file_round_trip_and_a_bare_token_as_reply(tsa_a, tsa_roots_a):
    token = _by_file(tsa_a)
    assert verify_token(token, DIGEST, roots=tsa_roots_a).serial_number >= 2
    assert token_from_response(token, DIGEST) == token  # a bare token is accepted "by file" as well


def test_a_third_party_verifies_the_token_with_openssl_alone(tsa_a, tmp_path):
    (tmp_path / "t.der").write_bytes(_by_file(tsa_a))
    out = subprocess.run(["openssl", "ts", "-verify", "-digest", DIGEST.hex(), "-in", str(tmp_path / "t.der"), "-token_in",
                          "-CAfile", str(tsa_a.root_pem)], capture_output=True, text=True, timeout=30)
    assert "Verification: OK" in out.stdout, out.stderr


def test_other_digest_other_tsa_and_no_roots_are_refused(tsa_a, tsa_b, tsa_roots_a):
    token = _by_file(tsa_a)
    with pytest.raises(InvalidTimestamp, match="Mismatch between messages"):
        verify_token(token, hashlib.sha256(b"another").digest(), roots=tsa_roots_a)
    foreign = _by_file(tsa_b)  # B's reply carries B's own root: the stored token drops it, and it is never trusted
    with pytest.raises(InvalidTimestamp, match="unable to get local issuer certificate"):
        verify_token(foreign, DIGEST, roots=tsa_roots_a)
    with_root = der.with_certificates(foreign, sorted(der.token_parts(foreign)["certificates"] + [_der(tsa_b.root_pem)]))
    with pytest.raises(InvalidTimestamp, match="not in the form backmark stores"):  # bytes that change nothing: refused
        verify_token(with_root, DIGEST, roots=TsaRoots.load(tsa_b.root_pem))
    assert verify_token(foreign, DIGEST, roots=TsaRoots.load(tsa_b.root_pem))  # ... though it verifies for B's roots
    with pytest.raises(InvalidTimestamp, match="no trusted TSA root"):
        verify_token(token, DIGEST, roots=TsaRoots(()))


def test_a_foreign_tsa_certificate_that_claims_our_root_as_issuer_is_refused(tsa_a, tsa_roots_a, tmp_path):
    # A TSA whose certificate names A's root as issuer but is signed by another key (no partial chains).
    from cryptography.hazmat.primitives.asymmetric import ec

    impostor_root = (ec.generate_private_key(ec.SECP256R1()), x509.load_pem_x509_certificate(tsa_a.root_pem.read_bytes()))
    impostor = LocalTSA.create(tmp_path / "impostor", name="Impostor", embed_root=False, issuer=impostor_root)
    with pytest.raises(InvalidTimestamp, match="does not verify"):
        verify_token(_by_file(impostor), DIGEST, roots=tsa_roots_a)


def test_a_second_tsa_under_the_same_root_verifies_and_is_told_apart(tsa_a, tsa_roots_a, tmp_path):
    sibling = LocalTSA.create(tmp_path / "sibling", name="TSA A2", issuer=tsa_a.root)
    s1, s2 = verify_token(_by_file(tsa_a), DIGEST, roots=tsa_roots_a), verify_token(_by_file(sibling), DIGEST, roots=tsa_roots_a)
    assert s1.tsa_fingerprint != s2.tsa_fingerprint and "TSA A2" in s2.tsa_subject


def test_library_gotcha_intermediates_are_trust_anchors(tsa_a, tsa_b):
    # Why self-issued certificates from a token are never passed on: rfc3161-client trusts an
    # "intermediate" like a root. If this starts failing, the library changed; re-read timestamp.py.
    resp = rfc3161_client.decode_timestamp_response(der.as_response(_by_file(tsa_b)))
    builder = rfc3161_client.VerifierBuilder().add_root_certificate(x509.load_pem_x509_certificate(tsa_a.root_pem.read_bytes()))
    builder = builder.add_intermediate_certificate(x509.load_pem_x509_certificate(tsa_b.root_pem.read_bytes()))
    assert builder.build().verify(resp, DIGEST)


def test_library_gotcha_openssl_certificate_order(tsa_a):
    reply = tsa_a.reply(make_query(DIGEST).der)
    fixed = der.sort_certificate_set(reply)
    assert len(fixed) == len(reply)
    if fixed != reply:  # openssl wrote the SET in chain order: the library refuses it as it is
        with pytest.raises(ValueError, match="InvalidSetOrdering"):
            rfc3161_client.decode_timestamp_response(reply)
    assert rfc3161_client.decode_timestamp_response(fixed).tst_info.message_imprint.message == DIGEST


def test_every_truncation_and_garbage_is_one_invalid_timestamp(tsa_a, tsa_roots_a):
    token = _by_file(tsa_a)
    for cut in list(range(0, len(token), 5)) + [len(token) - 1]:
        with pytest.raises(InvalidTimestamp) as e:
            verify_token(token[:cut], DIGEST, roots=tsa_roots_a)
        assert "\n" not in str(e.value)
    for junk in (b"", b"\x30\x00", b"<html>not a token</html>", b"\x00" * 64):
        with pytest.raises(InvalidTimestamp):
            verify_token(junk, DIGEST, roots=tsa_roots_a)


def _tst_info_range(token: bytes) -> range:
    """Where the signed TSTInfo lies in a token: the content of the OCTET STRING after id-ct-TSTInfo."""
    at = token.index(der.oid("1.2.840.113549.1.9.16.1.4")) + 13
    _, s, e = der.read(token, at, len(token))  # [0] EXPLICIT
    _, s, e = der.read(token, s, e)  # OCTET STRING
    return range(s, e)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # flipped certificate serials
def test_no_bit_flip_verifies_to_anything_else(tsa_a, tsa_roots_a):
    token = _by_file(tsa_a)
    good = verify_token(token, DIGEST, roots=tsa_roots_a)
    signed = _tst_info_range(token)
    accepted = []
    for i in sorted(set(signed) | set(range(0, len(token), 4))):  # every signed byte, a quarter of the rest
        flipped = bytearray(token)
        flipped[i] ^= 1 << (i % 8)
        try:
            stamp = verify_token(bytes(flipped), DIGEST, roots=tsa_roots_a)
        except InvalidTimestamp:
            continue
        assert stamp == good
        accepted.append(i)
    # Unsigned bytes too (versions, signature algorithm, certificate set): one stored form, so no flip loads.
    assert len(signed) > 50 and not accepted


def test_a_forged_gen_time_is_refused(tsa_a, tsa_roots_a):
    token = _by_file(tsa_a)
    at = token.index(b"\x18\x0f") + 2  # GeneralizedTime YYYYMMDDHHMMSSZ inside the signed TSTInfo
    for year in (b"2025", b"2030"):
        forged = token[:at] + year + token[at + 4:]
        with pytest.raises(InvalidTimestamp):
            verify_token(forged, DIGEST, roots=tsa_roots_a)


def test_http_replays_garbage_and_unreachable_tsas_are_refused_in_one_line(tsa_a):
    first = {}

    def replay(query, reply):
        return first.setdefault("reply", reply)

    with tsa_a.serve(hook=replay) as url:
        request_timestamp(url, DIGEST)
        with pytest.raises(InvalidTimestamp, match="nonce"):
            request_timestamp(url, DIGEST)  # the first reply again: its nonce is another request's
    with tsa_a.serve(hook=lambda q, r: b"<html>hello</html>") as url:
        with pytest.raises(InvalidTimestamp, match="malformed timestamp"):
            request_timestamp(url, DIGEST)
    with tsa_a.serve() as url:
        pass  # closed again: nothing listens there now
    with pytest.raises(InvalidTimestamp, match="cannot reach"):
        request_timestamp(url, DIGEST, timeout=5)
    with pytest.raises(InvalidTimestamp, match="http or https"):
        request_timestamp("file:///etc/passwd", DIGEST)
    with pytest.raises(InvalidTimestamp, match="different digest"):
        token_from_response(tsa_a.reply(make_query(DIGEST).der), hashlib.sha256(b"other").digest())


# -- anchors -------------------------------------------------------------------------

@pytest.fixture()
def vk_doc(small_keys):
    return small_keys[1].to_document()


def test_anchor_round_trip_over_http_and_by_file(tmp_path, vk_doc, url_a, tsa_a, tsa_roots_a, small_keys):
    vk_path = tmp_path / "verification-key.json"
    small_keys[1].save(vk_path)
    assert anchor_path(vk_path) == tmp_path / "verification-key.timestamp.json"
    assert find_anchor(vk_path, vk_doc, tsa_roots_a) is None  # no anchor yet
    save_anchor(new_anchor(vk_doc, tsa=url_a), anchor_path(vk_path))
    stamp = find_anchor(vk_path, vk_doc, tsa_roots_a)
    assert stamp.tsa_fingerprint and find_anchor(vk_path, vk_doc, None) is None  # no roots: nothing verified
    a = load_anchor(anchor_path(vk_path))
    assert a["document"] == {"format": "backmark-verification-key", "sha256": document_digest(vk_doc).hex()}
    by_file = new_anchor(vk_doc, reply=tsa_a.reply(make_query(document_digest(vk_doc)).der))
    assert check_anchor(by_file, vk_doc, tsa_roots_a).gen_time >= stamp.gen_time


def test_anchor_of_another_document_or_tsa_is_refused(tmp_path, vk_doc, url_a, tsa_b, tsa_roots_a, small_keys):
    anchor = new_anchor(vk_doc, tsa=url_a)
    other = json.loads(json.dumps(vk_doc))
    other["signature"] = "00" * 64  # any change to what is stamped
    with pytest.raises(InvalidTimestamp, match="another document"):
        check_anchor(anchor, other, tsa_roots_a)
    foreign = new_anchor(vk_doc, reply=tsa_b.reply(make_query(document_digest(vk_doc)).der))
    with pytest.raises(InvalidTimestamp, match="does not verify"):
        check_anchor(foreign, vk_doc, tsa_roots_a)
    save_anchor(foreign, tmp_path / "verification-key.timestamp.json")
    with pytest.raises(InvalidTimestamp, match="verification-key.timestamp.json: the timestamp does not verify"):
        find_anchor(tmp_path / "verification-key.json", vk_doc, tsa_roots_a)  # a present anchor that fails is never ignored
    with pytest.raises(InvalidFile):
        document_digest({"format": "backmark-marking-key", "body": {}, "signature": ""})


@pytest.mark.parametrize("edit", [
    lambda d: d.update(extra=1),
    lambda d: d.update(version=1.0),
    lambda d: d.update(token=d["token"][:-1]),
    lambda d: d.update(token="!" + d["token"][1:]),
    lambda d: d["document"].update(sha256="AB" * 32),
    lambda d: d["document"].update(format="backmark-marking-key"),
    lambda d: d.update(tsa="http://tsa.example/"),  # an unsigned field
])
def test_malformed_anchor_files_are_refused_in_one_line(tmp_path, vk_doc, url_a, edit):
    anchor = new_anchor(vk_doc, tsa=url_a)
    edit(anchor)
    path = save_anchor(anchor, tmp_path / "a.timestamp.json")
    with pytest.raises((InvalidFile, InvalidTimestamp)) as e:
        load_anchor(path)
    assert "\n" not in str(e.value)


def test_an_anchor_edited_in_a_way_a_reader_would_not_see_is_refused(tmp_path, vk_doc, url_a):
    path = save_anchor(new_anchor(vk_doc, tsa=url_a), tmp_path / "a.timestamp.json")
    raw = path.read_text()
    path.write_text(raw.replace('"format": "backmark-timestamp",', '"format": "backmark-timestamp", "token": "AAAA",', 1))
    with pytest.raises(InvalidFile, match="duplicate key"):  # a duplicate key: two readers could see two documents
        load_anchor(path)


# -- CLI: keygen --tsa, timestamp ----------------------------------------------------

def test_keygen_tsa_and_the_timestamp_command(tmp_path, url_a, tsa_a, tsa_b):
    r = CliRunner()
    res = r.invoke(main, ["keygen", "--out", str(tmp_path / "k"), "--size", "10", "--tsa", url_a, "--json"])
    assert res.exit_code == 0, res.output
    vk_path, anchor = tmp_path / "k" / "verification-key.json", tmp_path / "k" / "verification-key.timestamp.json"
    assert json.loads(res.stdout)["anchor"] == str(anchor) and anchor.exists()
    res = r.invoke(main, ["timestamp", str(vk_path), "--tsa-roots", str(tsa_a.root_pem)])
    assert res.exit_code == 0 and res.stdout.startswith("OK: ") and "anchored at 20" in res.stdout, res.output
    res = r.invoke(main, ["timestamp", str(vk_path), "--tsa-roots", str(tsa_b.root_pem)])
    assert res.exit_code == 1 and "NOT ANCHORED" in res.stdout
    res = r.invoke(main, ["timestamp", str(vk_path), "--tsa", url_a])
    assert res.exit_code == 2 and "already exists" in res.stderr and res.stderr.count("\n") == 1
    # by file: the query goes to the TSA by other means, the reply comes back as a file
    res = r.invoke(main, ["timestamp", str(vk_path), "--query-out", str(tmp_path / "q.tsq"), "--json"])
    assert res.exit_code == 0, res.output
    (tmp_path / "r.tsr").write_bytes(tsa_b.reply((tmp_path / "q.tsq").read_bytes()))
    res = r.invoke(main, ["timestamp", str(vk_path), "--reply", str(tmp_path / "r.tsr"), "--out", str(tmp_path / "b.json"),
                          "--tsa-roots", str(tsa_b.root_pem)])
    assert res.exit_code == 0 and "TSA B" in res.stdout, res.output
    res = r.invoke(main, ["timestamp", str(vk_path), "--reply", str(tmp_path / "r.tsr"), "--out", str(tmp_path / "c.json"),
                          "--tsa-roots", str(tsa_a.root_pem)])
    assert res.exit_code == 2 and "does not verify" in res.stderr and not (tmp_path / "c.json").exists()


def test_timestamp_command_refuses_what_it_cannot_anchor(tmp_path, url_a):
    r = CliRunner()
    assert r.invoke(main, ["keygen", "--out", str(tmp_path), "--size", "5"]).exit_code == 0
    for args, message in [
        ([str(tmp_path / "marking-key.json"), "--tsa", url_a], "only a verification key or a release record"),
        ([str(tmp_path / "verification-key.json"), "--tsa", "ftp://x"], "http or https"),
        ([str(tmp_path / "verification-key.json"), "--tsa", "http://127.0.0.1:9/"], "cannot reach"),
        ([str(tmp_path / "nope.json"), "--tsa", url_a], "no such file"),
    ]:
        res = r.invoke(main, ["timestamp", *args])
        assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, (args, res.output)
    assert not (tmp_path / "verification-key.timestamp.json").exists()
    bad = tmp_path / "verification-key.json"
    doc = json.loads(bad.read_text())
    doc["body"]["statement"]["owner"] = "someone else"
    bad.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    res = r.invoke(main, ["timestamp", str(bad), "--tsa", url_a])
    assert res.exit_code == 2 and "signature" in res.stderr  # a tampered key is never anchored

