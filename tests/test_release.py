"""Release records: signed by the key's owner, bound to the weights (and head), anchored by a local TSA; forgeries refused."""
import json
from datetime import datetime, timezone

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.crypto import OwnerKey, canonical_json
from backmark.crypto.timestamp import TsaRoots, make_query
from backmark.errors import InvalidFile, InvalidTimestamp, ReleaseMismatch, TamperedRecord
from backmark.io.hashing import file_sha256
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.models.heads import head_sha256, output_layer, save_output_layer
from backmark.protocols.anchor import anchor_path, new_anchor, save_anchor
from backmark.protocols.release import check_head, check_model, load_release, make_release, read_release, save_release

from .conftest import write_owner_folder

FIXED = lambda: datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)  # noqa: E731 (the record's own, claimed, time)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An owner folder as keygen writes it, a released model and its head."""
    d = tmp_path_factory.mktemp("release")
    owner, _, vk = write_owner_folder(d, set_size=10)
    torch.manual_seed(0)
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    save_model(d / "m.safetensors", model, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28]})
    save_output_layer(d / "fc.safetensors", model)
    return d, owner, vk, model


def test_round_trip_binds_key_weights_and_head(world, tmp_path):
    d, owner, vk, model = world
    doc = make_release(vk, owner, d / "m.safetensors", head=d / "fc.safetensors", clock=FIXED)
    rec = load_release(save_release(doc, tmp_path / "r.json"), vk)
    assert rec.model_sha256 == file_sha256(d / "m.safetensors") and rec.model_name == "m.safetensors"
    assert rec.head_sha256 == head_sha256(d / "fc.safetensors") == head_sha256(model)
    assert rec.created == "2026-03-01T12:00:00Z" and rec.anchored_at is None and rec.tsa_fingerprint is None
    assert rec.body["verification_key"] == vk.fingerprint and len(rec.sha256) == 64
    for head in (d / "fc.safetensors", d / "m.safetensors", output_layer(model).state_dict(), model):
        check_head(rec, head)  # a head file, the checkpoint, a state dict, the model: one name
    check_model(rec, d / "m.safetensors")


def test_a_head_fitted_later_and_another_model_are_refused(world, tmp_path):
    d, owner, vk, model = world
    doc = make_release(vk, owner, d / "m.safetensors", head=d / "fc.safetensors")
    rec = load_release(save_release(doc, tmp_path / "r.json"), vk)
    thief_head = {k: v + 0.01 for k, v in output_layer(model).state_dict().items()}
    with pytest.raises(ReleaseMismatch, match="is not the one the release record binds"):
        check_head(rec, thief_head)
    with pytest.raises(ReleaseMismatch, match="not the released weights"):
        check_model(rec, d / "fc.safetensors")
    plain = load_release(save_release(make_release(vk, owner, d / "m.safetensors"), tmp_path / "p.json"), vk)
    with pytest.raises(ReleaseMismatch, match="binds no head"):
        check_head(plain, d / "fc.safetensors")


def test_only_the_keys_owner_can_release_and_a_record_is_for_one_key(world, tmp_path):
    d, owner, vk, _ = world
    thief = OwnerKey.generate()
    with pytest.raises(ReleaseMismatch, match="owner key is not the one"):
        make_release(vk, thief, d / "m.safetensors")
    # a thief's record for the victim's key, signed by his own key
    doc = make_release(vk, owner, d / "m.safetensors")
    doc["body"]["owner_public_key"] = thief.public_hex
    doc["signature"] = thief.sign(canonical_json(doc["body"])).hex()
    with pytest.raises(ReleaseMismatch, match="signed by another owner key"):
        load_release(save_release(doc, tmp_path / "thief.json"), vk)
    # the victim's owner named, the thief's signature: the signature does not verify
    doc = make_release(vk, owner, d / "m.safetensors")
    doc["signature"] = thief.sign(canonical_json(doc["body"])).hex()
    with pytest.raises(TamperedRecord, match="signature"):
        load_release(save_release(doc, tmp_path / "forged.json"), vk)
    _, other_vk = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner, set_size=10)
    with pytest.raises(ReleaseMismatch, match="for verification key"):
        load_release(save_release(make_release(other_vk, owner, d / "m.safetensors"), tmp_path / "o.json"), vk)


@pytest.mark.parametrize("edit, error", [
    (lambda doc: doc["body"]["model"].update(sha256="0" * 64), TamperedRecord),
    (lambda doc: doc["body"].update(created="2020-01-01T00:00:00Z"), TamperedRecord),  # back-dating the claim
    (lambda doc: doc["body"].update(head=None), TamperedRecord),
    (lambda doc: doc.update(version=True), InvalidFile),
    (lambda doc: doc.update(note="unsigned"), InvalidFile),
    (lambda doc: doc["body"].update(extra=1), InvalidFile),
    (lambda doc: doc["body"]["model"].update(sha256="A" * 64), InvalidFile),
    (lambda doc: doc["body"].update(created="yesterday"), InvalidFile),
    (lambda doc: doc.update(signature=doc["signature"].upper()), InvalidFile),
])
def test_tampered_records_are_refused_in_one_line(world, tmp_path, edit, error):
    d, owner, vk, _ = world
    doc = make_release(vk, owner, d / "m.safetensors", head=d / "fc.safetensors")
    edit(doc)
    path = save_release(doc, tmp_path / "r.json")
    with pytest.raises(error) as e:
        load_release(path, vk)
    assert "\n" not in str(e.value)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_byte_edit_is_refused_or_is_the_same_document(world, tmp_path_factory, data):
    d, owner, vk, _ = world
    path = tmp_path_factory.mktemp("mut") / "r.json"
    raw = save_release(make_release(vk, owner, d / "m.safetensors", head=d / "fc.safetensors", clock=FIXED), path).read_bytes()
    original = read_release(path)
    i = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.sampled_from([b"", b" ", b"0", b"a", b"}", b'"', b"\\", b"\xff", bytes([raw[i] ^ 1])]))
    path.write_bytes(raw[:i] + new + raw[i + 1:])
    try:
        assert read_release(path) == original  # only an edit that changes nothing (none exists) may load
    except (InvalidFile, TamperedRecord) as e:
        assert "\n" not in str(e)


# -- anchored records ----------------------------------------------------------------

def test_cli_release_with_a_local_tsa_round_trip(world, tmp_path, tsa_a, tsa_b, tsa_roots_a):
    d, _, vk, _ = world
    r = CliRunner()
    out = tmp_path / "release.json"
    with tsa_a.serve() as url:
        res = r.invoke(main, ["release", "--model", str(d / "m.safetensors"), "--marking-key", str(d / "marking-key.json"),
                              "--output-layer", str(d / "fc.safetensors"), "--tsa", url, "--tsa-roots", str(tsa_a.root_pem),
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["anchor"] == str(anchor_path(out)) and shown["anchored"]["gen_time"].startswith("20")
    rec = load_release(out, vk, tsa_roots=tsa_roots_a)
    assert rec.anchored_at is not None and rec.tsa_fingerprint == shown["anchored"]["tsa_fingerprint"] and rec.has_anchor_file
    assert load_release(out, vk).anchored_at is None  # no roots, no verified time
    with pytest.raises(InvalidTimestamp, match="does not verify"):
        load_release(out, vk, tsa_roots=TsaRoots.load(tsa_b.root_pem))
    # the anchor of this record on another record of the same owner: refused
    other = save_release(make_release(vk, world[1], d / "fc.safetensors"), tmp_path / "other.json")
    with pytest.raises(InvalidTimestamp, match="another document"):
        load_release(other, vk, tsa_roots=tsa_roots_a, anchor=anchor_path(out))
    # a token from another TSA for this very record
    doc = read_release(out)
    save_anchor(new_anchor(doc, reply=tsa_b.reply(make_query(bytes.fromhex(rec.sha256)).der)), tmp_path / "b.json")
    with pytest.raises(InvalidTimestamp, match="does not verify"):
        load_release(out, vk, tsa_roots=tsa_roots_a, anchor=tmp_path / "b.json")


def test_cli_release_errors_are_one_line_and_leave_nothing(world, tmp_path):
    d, _, _, _ = world
    r = CliRunner()
    base = ["release", "--model", str(d / "m.safetensors"), "--marking-key", str(d / "marking-key.json")]
    for extra, message in [
        (["--owner-key", str(tmp_path / "none.pem")], "no owner key"),
        (["--output-layer", str(d / "verification-key.json")], "not a safetensors"),
        (["--tsa", "http://127.0.0.1:9/"], "cannot reach"),
        (["--tsa-roots", str(d / "fc.safetensors")], "not PEM"),
    ]:
        res = r.invoke(main, [*base, *extra, "--out", str(tmp_path / "r.json")])
        lines = res.stderr.strip().splitlines()  # one line (a click usage error: its usage lines and one error line)
        assert res.exit_code == 2 and message in res.stderr, (extra, res.output)
        assert len(lines) == 1 or lines[0].startswith("Usage:"), res.stderr
        assert not (tmp_path / "r.json").exists() and not anchor_path(tmp_path / "r.json").exists()
    res = r.invoke(main, [*base, "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0 and "not anchored" in res.stdout
    res = r.invoke(main, [*base, "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and "already exists" in res.stderr
