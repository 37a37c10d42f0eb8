import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backmark.core.keygen import MarkingKey, VerificationKey, derive_labels, keygen, load_pair, open_elements
from backmark.errors import BackmarkError, InvalidFile, InvalidKey, KeyMismatch, OutputExists, TamperedKey


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_keys):
    d = tmp_path_factory.mktemp("keys")
    mk, vk = small_keys
    return mk.save(d / "mk.json"), vk.save(d / "vk.json")


def test_roundtrip(saved, small_keys):
    mk, vk = small_keys
    mk2, vk2 = load_pair(*saved)
    assert vk2.body == vk.body and vk2.fingerprint == vk.fingerprint
    assert np.array_equal(mk2.images, mk.images) and mk2.labels == mk.labels and mk2.master_seed == mk.master_seed
    assert oct(saved[0].stat().st_mode & 0o777) == "0o600"


def test_labels_are_derived_from_the_signed_body(small_keys):
    mk, vk = small_keys
    assert list(mk.labels) == vk.derived_labels == derive_labels(vk.body, 10, 30)
    assert "label_commitments" not in vk.body
    assert len(set(mk.labels)) > 3  # 30 uniform labels over 10 classes


def test_no_overwrite_without_force(saved, small_keys):
    mk, vk = small_keys
    with pytest.raises(OutputExists):
        vk.save(saved[1])
    vk.save(saved[1], force=True)
    assert VerificationKey.load(saved[1]).fingerprint == vk.fingerprint


def test_committed_labels_and_pedersen(owner_key):
    labels = [i % 10 for i in range(12)]
    mk, vk = keygen(input_shape=(3, 8, 8), num_classes=10, owner_key=owner_key, set_size=6, num_sets=2, labels=labels, commitment="pedersen")
    assert vk.label_mode == "committed" and len(vk.label_commitments) == 12 and vk.size == 12
    assert open_elements(mk, vk) == labels
    bad = MarkingKey(mk.master_seed, mk.images, tuple([1] + labels[1:]), mk.verification_key_fingerprint)
    with pytest.raises(TamperedKey, match="label 0"):
        open_elements(bad, vk)


def test_key_mismatch(owner_key, small_keys):
    mk, _ = small_keys
    _, other_vk = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner_key, set_size=30)
    with pytest.raises(KeyMismatch):
        open_elements(mk, other_vk)


def test_resigned_by_another_owner_changes_identity(small_keys):
    # Anyone can re-sign a copied body with their own key; the owner fingerprint then differs.
    from backmark.crypto import OwnerKey, canonical_json

    _, vk = small_keys
    thief = OwnerKey.generate()
    body = dict(vk.body, owner_public_key=thief.public_hex)
    forged = VerificationKey(body, thief.sign(canonical_json(body)).hex()).validate()
    assert forged.owner_fingerprint != vk.owner_fingerprint and forged.fingerprint != vk.fingerprint


def _flip(data: bytes, pos: int, value: int) -> bytes:
    pos %= len(data)
    new = value if value != data[pos] else (value + 1) % 256
    return data[:pos] + bytes([new]) + data[pos + 1 :]


def _load_both(tmp_path, mk_bytes, vk_bytes):
    (tmp_path / "m.json").write_bytes(mk_bytes)
    (tmp_path / "v.json").write_bytes(vk_bytes)
    return load_pair(tmp_path / "m.json", tmp_path / "v.json")


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(pos=st.integers(min_value=0), value=st.integers(0, 255))
def test_any_byte_change_to_verification_key_is_rejected(saved, tmp_path, pos, value):
    mk_bytes, vk_bytes = saved[0].read_bytes(), saved[1].read_bytes()
    with pytest.raises(BackmarkError):
        _load_both(tmp_path, mk_bytes, _flip(vk_bytes, pos, value))


@SETTINGS
@given(pos=st.integers(min_value=0), value=st.integers(0, 255))
def test_any_byte_change_to_marking_key_is_rejected(saved, tmp_path, pos, value):
    mk_bytes, vk_bytes = saved[0].read_bytes(), saved[1].read_bytes()
    with pytest.raises(BackmarkError):
        _load_both(tmp_path, _flip(mk_bytes, pos, value), vk_bytes)


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(min_value=0), value=st.integers(0, 255))
def test_any_byte_change_to_a_trigger_image_is_rejected(small_keys, pos, value):
    # Tamper with the decoded pixels (as a re-encoded picture would) rather than the file.
    mk, vk = small_keys
    raw = _flip(mk.images.tobytes(), pos, value)
    bad = MarkingKey(mk.master_seed, np.frombuffer(raw, np.uint8).reshape(mk.images.shape), mk.labels, mk.verification_key_fingerprint)
    with pytest.raises(TamperedKey, match="trigger image"):
        open_elements(bad, vk)


def test_semantically_equal_edits_are_refused(saved, tmp_path):
    # Whitespace or key order changes keep the JSON's meaning but not the written bytes.
    doc = json.loads(saved[1].read_bytes())
    (tmp_path / "v.json").write_text(json.dumps(doc))
    with pytest.raises(TamperedKey, match="canonical"):
        VerificationKey.load(tmp_path / "v.json")


def test_wrong_kind_and_version(saved, tmp_path):
    with pytest.raises(InvalidFile, match="expected a backmark-verification-key"):
        VerificationKey.load(saved[0])
    doc = json.loads(saved[1].read_bytes())
    doc["version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidFile, match="version 99"):
        VerificationKey.load(tmp_path / "v.json")
    with pytest.raises(InvalidFile, match="no such file"):
        VerificationKey.load(tmp_path / "missing.json")


# -- validation is total: a malformed key in memory raises InvalidKey / TamperedKey, nothing else ----------

@settings(max_examples=150, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_any_verification_key_body_in_memory_is_refused_or_the_same(small_keys, rng):
    # json.loads (not backmark's reader) keeps what a caller could pass: NaN, huge integers, wrong types.
    from backmark.crypto import canonical_json

    from .mutations import mutate

    _, vk = small_keys
    written = json.dumps(vk.to_document(), indent=2, sort_keys=True).encode() + b"\n"
    data, what = mutate(written, rng, style="pretty", family="json")
    try:
        doc = json.loads(data)
        body, signature = doc["body"], doc["signature"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return  # not a document with a body at all: nothing to build a key from
    try:
        built = VerificationKey(body=body, signature=signature)
    except InvalidKey:
        return
    assert canonical_json(built.body) == canonical_json(vk.body) and built.signature == vk.signature, what


@pytest.mark.parametrize("field, value, needle", [
    ("master_seed", b"short", "32 bytes"),
    ("images", np.zeros((2, 3), np.uint8), "uint8 array"),
    ("images", np.zeros((30, 28, 28, 1), np.float32), "uint8 array"),
    ("labels", [0] * 30, "as a tuple"),
    ("labels", (0,) * 29, "one label per image"),
    ("labels", (True,) + (0,) * 29, r"labels\[0\]: expected an integer"),
    ("labels", (-1,) + (0,) * 29, r"labels\[0\]"),
    ("verification_key_fingerprint", "AB" * 32, "verification_key_fingerprint"),
    ("source", {"path": float("nan")}, "source.path"),
    ("source", ["abstract"], "source: expected an object"),
])
def test_marking_key_fields_are_checked_when_built(small_keys, field, value, needle):
    import dataclasses

    mk, _ = small_keys
    with pytest.raises(InvalidKey, match=needle):
        dataclasses.replace(mk, **{field: value})


def test_label_outside_the_task_is_a_key_mismatch(owner_key):
    labels = [i % 10 for i in range(6)]
    mk, vk = keygen(input_shape=(1, 8, 8), num_classes=10, owner_key=owner_key, set_size=6, labels=labels)
    bad = MarkingKey(mk.master_seed, mk.images, (12,) + mk.labels[1:], mk.verification_key_fingerprint)
    with pytest.raises(KeyMismatch, match=r"label 0 of the marking key \(12\) is not a class"):
        open_elements(bad, vk)


def test_keygen_refuses_what_the_file_could_not_hold(owner_key):
    with pytest.raises(InvalidKey, match="statement.owner"):
        keygen(input_shape=(1, 8, 8), num_classes=10, owner_key=owner_key, set_size=2, owner="x" * 5000)
    with pytest.raises(InvalidKey, match="statement.created"):
        keygen(input_shape=(1, 8, 8), num_classes=10, owner_key=owner_key, set_size=2, created="yesterday")
