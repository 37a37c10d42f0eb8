"""Signed verification reports: written as JSON + self-contained HTML, checked, and every forgery caught."""
import json
from fractions import Fraction

import pytest
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.core.stats import DEFAULT_ALPHA, decide
from backmark.core.verify import verify
from backmark.crypto import OwnerKey, canonical_json
from backmark.errors import InvalidFile, KeyMismatch, TamperedRecord, WeakAlpha
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.protocols.pverify import SpentLog, pverify
from backmark.protocols.report import check_report, load_report, make_report, render_html, write_report
from backmark.targets import describe

from .conftest import KeyTarget

SHAPE = (1, 12, 12)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    owner = OwnerKey.generate()
    owner.save(d / "owner-key.pem")
    mk, vk = keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=25, num_sets=2, created="2026-01-01T00:00:00Z")
    mk.save(d / "marking-key.json")
    vk.save(d / "verification-key.json")
    model = create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE, seed=0)
    save_model(d / "m.safetensors", model, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE)})
    return d, owner, mk, vk


def signed(doc: dict, owner: OwnerKey) -> dict:
    """What a cheating owner does after editing a report: sign it again with his own key."""
    doc["signature"] = owner.sign(canonical_json(doc["body"])).hex()
    return doc


def test_report_round_trip_json_and_html(setup, tmp_path):
    _d, owner, mk, vk = setup
    result = verify(KeyTarget(mk), mk, vk)
    doc = make_report(result, mk, vk, owner, model_info={"name": "key-target", "sha256": None, "hashed": None}, seconds=0.5)
    j, h, p = write_report(doc, tmp_path / "evidence" / "report")
    assert (j.name, h.name, p.name) == ("report.json", "report.html", "report.pdf")
    page = h.read_text()
    assert page.count("data:image/png;base64,") == 50 and "http://" not in page and "https://" not in page
    assert "OWNERSHIP VERIFIED" in page and vk.fingerprint in page
    for path in (j, h):
        chk = check_report(path, vk=vk)
        assert chk.ok, chk.problems
        assert chk.checked == ["signature", "decision and verdict", "openings of the prescribed elements"]
    assert load_report(h) == load_report(j)
    with pytest.raises(KeyMismatch):
        make_report(result, mk, vk, OwnerKey.generate())
    assert not check_report(j).ok  # without the verification key nothing about the openings is known


def test_edits_are_caught(setup, tmp_path):
    d, owner, mk, vk = setup
    result = verify(d / "m.safetensors", mk, vk)
    doc = make_report(result, mk, vk, owner, model_info=describe(d / "m.safetensors"))
    j, h, _ = write_report(doc, tmp_path / "r")
    assert check_report(j, vk=vk, model=d / "m.safetensors").ok
    # any edit without a new signature
    for edit in ("verdict", "prediction", "signature"):
        bad = json.loads(json.dumps(doc))
        if edit == "verdict":
            bad["body"]["verdict"] = {"kind": "ownership", "text": "OWNERSHIP VERIFIED", "claims_ownership": True}
        elif edit == "prediction":  # always a change: to the label where it missed, away from it where it matched
            e = bad["body"]["elements"][0]
            e["prediction"] = e["label"] if e["prediction"] != e["label"] else (e["label"] + 1) % vk.num_classes
            assert e != doc["body"]["elements"][0]
        else:
            bad["signature"] = OwnerKey.generate().sign(b"x").hex()
        chk = check_report(bad, vk=vk)
        assert not chk.ok and "signature" in chk.problems[0], edit
    # the owner re-signs a report whose verdict does not follow from its matches
    lie = json.loads(json.dumps(doc))
    lie["body"]["verdict"] = {"kind": "ownership", "text": "OWNERSHIP VERIFIED", "claims_ownership": True}
    lie["body"]["decision"]["passed"] = True
    assert "outcome does not follow" in check_report(signed(lie, owner), vk=vk).problems[0]
    # the visible page edited, or the JSON file re-encoded: no longer the file its record makes
    (tmp_path / "edited.html").write_text(h.read_text().replace("NOT VERIFIED", "OWNERSHIP VERIFIED", 1))
    with pytest.raises(TamperedRecord):
        load_report(tmp_path / "edited.html")
    (tmp_path / "compact.json").write_text(json.dumps(doc))
    with pytest.raises(TamperedRecord):
        load_report(tmp_path / "compact.json")
    # an image that does not open its commitment, re-signed by the owner
    bad = json.loads(json.dumps(doc))
    els = bad["body"]["elements"]
    els[0]["image_png"], els[1]["image_png"] = els[1]["image_png"], els[0]["image_png"]
    chk = check_report(signed(bad, owner), vk=vk)
    assert chk.checked == ["signature", "decision and verdict"] and "does not open" in chk.problems[0]
    # another model than the one reported
    other = create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE, seed=1)
    save_model(tmp_path / "other.safetensors", other, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE)})
    chk = check_report(j, vk=vk, model=tmp_path / "other.safetensors")
    assert not chk.ok and "SHA-256" in chk.problems[0]


def test_two_readings_of_one_file_are_refused(setup, tmp_path):
    """A duplicate key: one JSON reader keeps the first value, another the last. Never accepted."""
    _d, owner, mk, vk = setup
    j, _, _ = write_report(make_report(verify(KeyTarget(mk, answer_labels=False), mk, vk), mk, vk, owner), tmp_path / "r")
    text = j.read_text()
    doubled = text.replace('"body": {', '"body": {\n    "verdict": {"kind": "ownership", "text": "OWNERSHIP VERIFIED", "claims_ownership": true},', 1)
    (tmp_path / "two.json").write_text(doubled)
    with pytest.raises(InvalidFile, match="duplicate key"):
        load_report(tmp_path / "two.json")


def test_reports_of_chosen_elements_are_refused(setup, tmp_path):
    """One chance match repeated n times, or only a key's chance matches: signed by the owner, refused."""
    _d, owner, mk, vk = setup
    common = max(range(10), key=list(mk.labels).count)  # at least 5 of the 50 labels: some match, never all
    chance = verify(KeyTarget(mk, answer_labels=False, other=common), mk, vk)  # one class everywhere: its labels match
    doc = make_report(chance, mk, vk, owner)
    hits = [el for el in doc["body"]["elements"] if el["label"] == el["prediction"]]
    assert 0 < len(hits) < 50
    for elements in ([hits[0]] * 50, hits):
        forged = json.loads(json.dumps(doc))
        b = forged["body"]
        b["elements"] = elements
        b["decision"].update(matches=len(elements), n=len(elements))
        chk = check_report(signed(forged, owner), vk=vk)
        assert not chk.ok
    # with the arithmetic and verdict made consistent too, the element set itself is what is refused
    forged = json.loads(json.dumps(doc))
    forged["body"]["elements"] = [hits[0]] * 50
    forged["body"]["decision"]["matches"] = 50
    d = decide(50, 50, Fraction(1, 10), DEFAULT_ALPHA)
    forged["body"]["decision"].update(threshold=d.threshold, p_value=d.p_value, log2_p_value=d.log2_p_value, passed=True)
    forged["body"]["verdict"] = {"kind": "ownership", "text": "OWNERSHIP VERIFIED", "claims_ownership": True}
    chk = check_report(signed(forged, owner), vk=vk)
    assert chk.checked == ["signature", "decision and verdict"]
    assert "not every element of the key, in order, each once" in chk.problems[0]


def test_the_bar_is_the_verifiers(setup, tmp_path):
    _d, owner, mk, vk = setup
    with pytest.raises(WeakAlpha, match="floor"):
        verify(KeyTarget(mk), mk, vk, alpha=0.9)
    partial = KeyTarget(mk)
    partial.table = dict(list(partial.table.items())[:8])  # 8 of 50 labels (and chance): passes at 0.9, never at 2^-64
    weak = verify(partial, mk, vk, alpha=0.9, allow_weak_alpha=True)
    assert weak.passed and not weak.verified and weak.verdict.kind == "weak-alpha"
    assert "WEAK ALPHA" in weak.summary()
    chk = check_report(make_report(weak, mk, vk, owner), vk=vk)
    assert chk.ok and "WEAK ALPHA" in chk.body["verdict"]["text"]
    # the owner re-labels a weak-alpha report as ownership evidence: the verdict no longer follows
    doc = make_report(weak, mk, vk, owner)
    doc["body"]["verdict"] = {"kind": "ownership", "text": "OWNERSHIP VERIFIED", "claims_ownership": True}
    assert "verdict should read" in check_report(signed(doc, owner), vk=vk).problems[0]


def test_every_field_is_escaped_in_the_page(setup, tmp_path):
    _d, owner, mk, vk = setup
    evil = "<script>alert(1)</script><!--"
    doc = make_report(verify(KeyTarget(mk), mk, vk), mk, vk, owner, model_info={"name": evil, "sha256": None, "hashed": None})
    j, h, _ = write_report(doc, tmp_path / "r")
    page = h.read_text()
    assert "<script>alert" not in page and "<!--" not in page and page.count("</script>") == 1  # only the record's own
    assert load_report(h)["body"]["model"]["name"] == evil and check_report(h, vk=vk).ok


def test_one_time_reports_carry_the_verifiers_signed_chain(setup, tmp_path):
    _d, owner, mk, vk = setup
    verifier = OwnerKey.generate()
    log = tmp_path / "log.jsonl"
    first = pverify(KeyTarget(mk), mk, vk, log, nonce=b"verifier-1", verifier_key=verifier)
    doc1 = make_report(first.verification, mk, vk, owner, selection=first.selection())
    chk = check_report(doc1, vk=vk, verifier=verifier.public_hex)
    assert chk.ok and any(c.startswith("one-time selection") for c in chk.checked), chk.problems
    # the owner swaps in another nonce (selecting the other set) and re-signs: the verifier's entry says otherwise
    doc2 = json.loads(json.dumps(doc1))
    doc2["body"]["selection"]["nonce"] = b"chosen-by-owner".hex()
    assert not check_report(signed(doc2, owner), vk=vk).ok
    # a spent log invented by the owner (a "verifier" key of his own): refused against the real verifier
    fake_log = tmp_path / "fake.jsonl"
    fake = pverify(KeyTarget(mk), mk, vk, fake_log, nonce=b"any", verifier_key=OwnerKey.generate())
    invented = make_report(fake.verification, mk, vk, owner, selection=fake.selection())
    assert check_report(invented, vk=vk).ok  # well formed...
    assert "not by the one given" in check_report(invented, vk=vk, verifier=verifier.public_hex).problems[0]  # ...but not the verifier's
    # rollback: the log is deleted and the first set opened again; the later report does not extend the earlier one
    log.unlink()
    SpentLog.new(log, vk, verifier.public_hex).save()
    fresh = SpentLog.load(log, vk)
    nonce = next(n for n in (f"again-{k}".encode() for k in range(100)) if fresh.next_set(n) == first.set_index)
    again = pverify(KeyTarget(mk), mk, vk, log, nonce=nonce, verifier_key=verifier)
    assert again.set_index == first.set_index  # re-opened: the deleted log no longer knew it was spent
    doc3 = make_report(again.verification, mk, vk, owner, selection=again.selection())
    chk = check_report(doc3, vk=vk, earlier=doc1)
    assert not chk.ok and "different spent logs" in chk.problems[-1]
    # the honest sequence: a second set opened after the first; the later report extends the earlier one
    log.unlink()
    a = pverify(KeyTarget(mk), mk, vk, log, nonce=b"n1", verifier_key=verifier)
    b = pverify(KeyTarget(mk), mk, vk, log, nonce=b"n2", verifier_key=verifier)
    ra = make_report(a.verification, mk, vk, owner, selection=a.selection())
    rb = make_report(b.verification, mk, vk, owner, selection=b.selection())
    assert check_report(rb, vk=vk, earlier=ra).ok
    assert "rolled back" in check_report(ra, vk=vk, earlier=rb).problems[-1]  # the earlier one does not contain the later


def test_cli_verify_report_and_check_report(setup, tmp_path):
    d, _owner, _mk, _vk = setup
    r = CliRunner()
    args = ["verify", "--model", d / "m.safetensors", "--marking-key", d / "marking-key.json",
            "--verification-key", d / "verification-key.json", "--report", tmp_path / "rep"]
    res = r.invoke(main, [str(a) for a in args])
    assert res.exit_code == 1, res.output  # untrained model: not verified, but the report is written
    assert (tmp_path / "rep.json").exists() and (tmp_path / "rep.html").exists()
    assert f"wrote {tmp_path / 'rep.json'}, {tmp_path / 'rep.html'}" in res.stdout
    res = r.invoke(main, ["check-report", str(tmp_path / "rep.html"), "--verification-key", str(d / "verification-key.json"),
                          "--model", str(d / "m.safetensors")])
    assert res.exit_code == 0, res.output
    assert "report OK" in res.stdout and "model answers" in res.stdout and "at alpha 2^-64 (floor 2^-64)" in res.stdout
    doc = json.loads((tmp_path / "rep.json").read_text())
    doc["body"]["created"] = "2020-01-01T00:00:00Z"  # backdated
    (tmp_path / "back.json").write_text(json.dumps(doc))
    res = r.invoke(main, ["check-report", str(tmp_path / "back.json"), "--verification-key", str(d / "verification-key.json")])
    assert res.exit_code == 2 and "differs from the signed record" in res.stderr
    res = r.invoke(main, ["check-report", str(d / "verification-key.json"), "--verification-key", str(d / "verification-key.json")])
    assert res.exit_code == 2 and "expected a backmark-verification-report" in res.stderr
    res = r.invoke(main, [str(a) for a in args[:-2]] + ["--alpha", "0.5"])
    assert res.exit_code == 2 and "floor" in res.stderr


def test_the_report_names_the_parties_and_classes_as_signed(setup, tmp_path):
    d, owner, mk, vk = setup
    named = keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=10, owner="Example Vision Ltd")
    result = verify(KeyTarget(named[0]), *named)
    classes = [f"class {i}" for i in range(10)]
    doc = make_report(result, *named, owner, verifier_name="Independent Lab", classes=classes)
    assert doc["body"]["parties"] == {"owner": "Example Vision Ltd", "verifier": "Independent Lab"}
    assert check_report(doc, vk=named[1]).ok and "Example Vision Ltd" in render_html(doc) and "class 3" in render_html(doc)
    forged = json.loads(json.dumps(doc))
    forged["body"]["parties"]["owner"] = "Someone Else"
    assert "another owner" in check_report(signed(forged, owner), vk=named[1]).problems[0]
    with pytest.raises(ValueError, match="10 classes"):
        make_report(result, *named, owner, classes=["a", "b"])
    # a backmark checkpoint records its class names: the report carries them
    from backmark.models.checkpoint import save_model as save
    from backmark.protocols.report import _class_names

    save(tmp_path / "c.safetensors", create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE),
         {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE), "classes": classes})
    assert _class_names(tmp_path / "c.safetensors", vk) == classes and _class_names(d / "m.safetensors", vk) is None
