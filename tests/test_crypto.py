import numpy as np
import pytest

from backmark.crypto import (
    OwnerKey,
    canonical_image_bytes,
    canonical_json,
    commit_image,
    commit_label,
    derive_nonce,
    verify_signature,
)
from backmark.errors import InvalidFile, TamperedKey

IMG = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
SEED = bytes(range(32))


def test_canonical_image_bytes_layout():
    b = canonical_image_bytes(IMG)
    assert b[:4] == b"IMG1" and b[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert b[16:] == IMG.tobytes()
    with pytest.raises(ValueError):
        canonical_image_bytes(IMG.astype(np.float32))


def test_canonical_json_is_order_free():
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1}) == b'{"a":[1,2],"b":1}'


# Known answers: the SHA-256 commitment recomputed from its specification (docs/formats.md),
# and a fixed Pedersen vector: a change to any encoding or tag breaks existing keys, so it must be deliberate.
def test_sha256_commitment_matches_its_specification():
    import hashlib

    nonce = derive_nonce(SEED, 7)
    assert nonce == hashlib.sha256(b"backmark/nonce/image/v1" + SEED + (7).to_bytes(4, "big")).digest()
    item = b"IMG1" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (3).to_bytes(4, "big") + IMG.tobytes()
    expected = hashlib.sha256(b"backmark/commit/image/v1" + (7).to_bytes(4, "big") + nonce + item).digest()
    assert commit_image("sha256", 7, nonce, IMG) == expected
    assert expected.hex() == "5a4bf05d4a55d9e1e4aa402078d16741b861ea9030a139970156275a37c66bb4"


def test_pedersen_known_answer_is_a_curve_point():
    from nacl.bindings import crypto_core_ed25519_is_valid_point

    c = commit_image("pedersen", 7, derive_nonce(SEED, 7), IMG)
    assert c.hex() == "bb144cd9589227cf27f35b42fa4c651497648faea254572ced5ce8943afbc476"
    assert crypto_core_ed25519_is_valid_point(c)


@pytest.mark.parametrize("scheme", ["sha256", "pedersen"])
def test_commitments_bind_index_nonce_and_item(scheme):
    n0, n1 = derive_nonce(SEED, 0), derive_nonce(SEED, 1)
    base = commit_image(scheme, 0, n0, IMG)
    other = IMG.copy()
    other[0, 0, 0] ^= 1
    assert len(base) == 32
    assert base == commit_image(scheme, 0, n0, IMG)
    assert len({base, commit_image(scheme, 1, n0, IMG), commit_image(scheme, 0, n1, IMG), commit_image(scheme, 0, n0, other)}) == 4
    assert commit_label(scheme, 0, n0, 3) != commit_label(scheme, 0, n0, 4)


def test_nonces_differ_per_index_and_kind():
    assert derive_nonce(SEED, 0) != derive_nonce(SEED, 1) != derive_nonce(SEED, 1, "label")


def test_owner_key_roundtrip_and_signature(tmp_path, monkeypatch):
    key = OwnerKey.generate()
    path = key.save(tmp_path / "owner.pem")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = OwnerKey.load(path)
    assert again.public_hex == key.public_hex
    sig = key.sign(b"message").hex()
    verify_signature(key.public_hex, sig, b"message")
    with pytest.raises(TamperedKey):
        verify_signature(key.public_hex, sig, b"messagE")
    monkeypatch.setenv("BACKMARK_OWNER_PASSPHRASE", "correct horse")
    enc = key.save(tmp_path / "enc.pem")
    assert b"ENCRYPTED" in enc.read_bytes()
    assert OwnerKey.load(enc).public_hex == key.public_hex
    monkeypatch.setenv("BACKMARK_OWNER_PASSPHRASE", "wrong")
    with pytest.raises(InvalidFile):
        OwnerKey.load(enc)
