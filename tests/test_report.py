"""Signed verification reports: written as JSON + self-contained HTML, checked, and tampering caught."""
import json

import pytest
import torch
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.core.verify import verify
from backmark.crypto import OwnerKey, canonical_json
from backmark.errors import KeyMismatch, TamperedRecord
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.protocols.pverify import pverify, select_set
from backmark.protocols.report import check_report, describe_model, load_report, make_report, write_report

from .conftest import KeyTarget


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    owner = OwnerKey.generate()
    owner.save(d / "owner-key.pem")
    mk, vk = keygen(input_shape=(1, 12, 12), num_classes=10, owner_key=owner, set_size=25, num_sets=2, created="2026-01-01T00:00:00Z")
    mk.save(d / "marking-key.json")
    vk.save(d / "verification-key.json")
    torch.manual_seed(0)
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 12, 12))
    save_model(d / "m.safetensors", model, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 12, 12]})
    return d, owner, mk, vk


def test_report_round_trip_json_and_html(setup, tmp_path):
    _d, owner, mk, vk = setup
    result = verify(KeyTarget(mk), mk, vk, indices=range(25))
    doc = make_report(result, mk, vk, owner, model_info={"name": "key-target", "sha256": None, "hashed": None}, seconds=0.5)
    j, h = write_report(doc, tmp_path / "evidence" / "report")
    assert (j.name, h.name) == ("report.json", "report.html")
    page = h.read_text()
    assert page.count("data:image/png;base64,") == 25 and "http://" not in page and "https://" not in page
    assert "OWNERSHIP VERIFIED" in page and vk.fingerprint in page
    for path in (j, h):
        chk = check_report(path, vk=vk)
        assert chk.ok, chk.problems
        assert chk.checked == ["signature", "arithmetic", "openings"]
    assert load_report(h) == load_report(j)
    with pytest.raises(KeyMismatch):
        make_report(result, mk, vk, OwnerKey.generate())


def _tamper_json(src, dst, edit):
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def test_tampered_report_fails(setup, tmp_path):
    d, owner, mk, vk = setup
    result = verify(d / "m.safetensors", mk, vk, indices=range(25))
    doc = make_report(result, mk, vk, owner, model_info=describe_model(d / "m.safetensors"))
    j, h = write_report(doc, tmp_path / "r")
    assert check_report(j, vk=vk, model=d / "m.safetensors").ok

    def flip_verdict(doc):
        doc["body"]["decision"]["verified"] = True
        doc["body"]["decision"]["matches"] = 25

    def swap_prediction(doc):
        doc["body"]["elements"][0]["prediction"] = doc["body"]["elements"][0]["label"]

    def other_signature(doc):
        doc["signature"] = OwnerKey.generate().sign(b"x").hex()

    for edit in (flip_verdict, swap_prediction, other_signature):
        chk = check_report(_tamper_json(j, tmp_path / f"{edit.__name__}.json", edit), vk=vk)
        assert not chk.ok and "signature" in chk.problems[0], edit.__name__
    # the visible page edited: the page no longer renders from its signed record
    page = h.read_text()
    (tmp_path / "edited.html").write_text(page.replace("NOT VERIFIED", "OWNERSHIP VERIFIED", 1))
    with pytest.raises(TamperedRecord):
        load_report(tmp_path / "edited.html")
    # a report the owner signed, but with an image that does not open its commitment
    bad = make_report(result, mk, vk, owner)
    els = bad["body"]["elements"]
    els[0]["image_png"], els[1]["image_png"] = els[1]["image_png"], els[0]["image_png"]
    bad["signature"] = owner.sign(canonical_json(bad["body"])).hex()
    chk = check_report(bad, vk=vk)
    assert chk.checked == ["signature", "arithmetic"] and "does not open" in chk.problems[0]
    # another model than the one reported
    torch.manual_seed(1)
    other = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 12, 12))
    save_model(tmp_path / "other.safetensors", other, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 12, 12]})
    chk = check_report(j, vk=vk, model=tmp_path / "other.safetensors")
    assert not chk.ok and "SHA-256" in chk.problems[0]


def test_pverify_report_checks_the_selection(setup, tmp_path):
    _d, owner, mk, vk = setup
    res = pverify(KeyTarget(mk), mk, vk, tmp_path / "log.jsonl", nonce=b"verifier")
    doc = make_report(res.verification, mk, vk, owner, kind="pverify", pverify=res.pverify_dict())
    chk = check_report(doc, vk=vk)
    assert chk.ok and "pverify selection" in chk.checked
    # the owner re-signs the record with a nonce that selects the other set: caught
    pv = res.pverify_dict()
    nonce = next(n for n in (f"n{k}".encode() for k in range(100))
                 if select_set(vk.fingerprint, pv["head_before"], n, [0, 1]) != res.set_index)
    doc2 = json.loads(json.dumps(doc))
    doc2["body"]["pverify"]["nonce"] = nonce.hex()
    doc2["signature"] = owner.sign(canonical_json(doc2["body"])).hex()
    chk = check_report(doc2, vk=vk)
    assert not chk.ok and "not the set the verifier's nonce selects" in chk.problems[0]


def test_cli_verify_report_and_check_report(setup, tmp_path):
    d, _owner, _mk, _vk = setup
    r = CliRunner()
    args = ["verify", "--model", d / "m.safetensors", "--marking-key", d / "marking-key.json",
            "--verification-key", d / "verification-key.json", "--report", tmp_path / "rep"]
    res = r.invoke(main, [str(a) for a in args])
    assert res.exit_code == 1, res.output  # untrained model: not verified, but the report is written
    assert (tmp_path / "rep.json").exists() and (tmp_path / "rep.html").exists()
    res = r.invoke(main, ["check-report", str(tmp_path / "rep.html"), "--verification-key", str(d / "verification-key.json"),
                          "--model", str(d / "m.safetensors")])
    assert res.exit_code == 0, res.output
    assert "report OK" in res.stdout and "model answers" in res.stdout
    doc = json.loads((tmp_path / "rep.json").read_text())
    doc["body"]["created"] = "2020-01-01T00:00:00Z"  # backdated
    (tmp_path / "back.json").write_text(json.dumps(doc))
    res = r.invoke(main, ["check-report", str(tmp_path / "back.json")])
    assert res.exit_code == 1 and "REPORT REJECTED" in res.stdout
    res = r.invoke(main, ["check-report", str(d / "verification-key.json")])
    assert res.exit_code == 2 and "expected a backmark-verification-report" in res.stderr
