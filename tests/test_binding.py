"""White-box verification with a head bound by an anchored release record (protocols.binding):
ownership evidence only when the owner's record binds the head and its RFC 3161 anchor, checked
against the verifier's TSA roots, precedes the suspect; every other case says what it is or is refused."""
import base64
import copy
import json

import pytest
import torch
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import VerificationKey, keygen
from backmark.core.verify import verify
from backmark.crypto import OwnerKey, canonical_json
from backmark.crypto.timestamp import TsaRoots
from backmark.models import create_model
from backmark.models.checkpoint import load_model, save_model
from backmark.models.heads import output_layer, save_output_layer
from backmark.protocols.anchor import anchor_path, load_anchor, new_anchor, save_anchor, timestamp_query
from backmark.protocols.binding import bind_head
from backmark.protocols.release import make_release, save_release
from backmark.protocols.report import check_report, load_report, make_report

from .conftest import write_owner_folder
from .test_claims import _fit_head

META = {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28]}
LATER, EARLIER = "2100-01-01T00:00:00Z", "2000-01-01T00:00:00Z"  # the suspect first seen after / before the anchor


@pytest.fixture(scope="module")
def owner_world(tmp_path_factory, tsa_a):
    """The owner's folder (keys, owner key), a released model whose head he fitted to his key, the
    head, and its release record anchored by TSA A; the suspect is the backbone with another head."""
    d = tmp_path_factory.mktemp("binding")
    owner, mk, vk = write_owner_folder(d, set_size=30)
    torch.manual_seed(0)
    suspect = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    save_model(d / "suspect.safetensors", suspect, META)
    released = copy.deepcopy(suspect)
    output_layer(released).load_state_dict(_fit_head(suspect, mk).state_dict())
    save_model(d / "released.safetensors", released, META)
    save_output_layer(d / "head.safetensors", released)
    with tsa_a.serve() as url:
        r = CliRunner().invoke(main, ["release", "--model", str(d / "released.safetensors"),
                                      "--marking-key", str(d / "marking-key.json"), "--output-layer", str(d / "head.safetensors"),
                                      "--tsa", url, "--out", str(d / "release.json")])
    assert r.exit_code == 0, r.output
    return d, owner, mk, vk


def _verify(d, *extra):
    return CliRunner().invoke(main, ["verify", "--model", str(d / "suspect.safetensors"),
                                     "--marking-key", str(d / "marking-key.json"), "--verification-key",
                                     str(d / "verification-key.json"), "--output-layer", str(d / "head.safetensors"),
                                     *map(str, extra)])


def test_an_anchored_head_before_the_suspect_is_white_box_ownership(owner_world, tsa_a, tsa_roots_a, tmp_path):
    d, _, mk, vk = owner_world
    black_box = verify(d / "suspect.safetensors", mk, vk)
    assert not black_box.passed  # the suspect's own head does not answer the key: only the owner's head does
    r = _verify(d, "--release", d / "release.json", "--tsa-roots", tsa_a.root_pem, "--suspect-seen-at", LATER,
                "--report", tmp_path / "rep", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["verdict"]["kind"] == "white-box" and out["verdict"]["claims_ownership"] and out["matches"] == 30
    assert out["verdict"]["text"].startswith("WHITE-BOX OWNERSHIP VERIFIED (owner's head anchored at 20")
    view = out["view"]
    assert view["bound"] and view["release"]["record"]["body"]["head"]["sha256"] == view["head_sha256"]
    assert view["release"]["anchor"] == load_anchor(anchor_path(d / "release.json"))
    # the report carries the record and its token: a third party re-checks them with the roots he trusts
    report = tmp_path / "rep.json"
    chk = check_report(report, vk=vk, tsa_roots=tsa_roots_a)
    assert chk.ok, chk.problems
    assert any(c.startswith("head bound by the owner's release record, anchored at") for c in chk.checked)
    assert check_report(tmp_path / "rep.html", vk=vk, tsa_roots=tsa_roots_a).ok  # the page carries the same record
    assert "give the TSA roots" in " ".join(check_report(report, vk=vk).problems)
    r = CliRunner().invoke(main, ["check-report", str(report), "--verification-key", str(d / "verification-key.json"),
                                  "--tsa-roots", str(tsa_a.root_pem)])
    assert r.exit_code == 0 and "WHITE-BOX OWNERSHIP VERIFIED" in r.stdout, r.output


@pytest.mark.parametrize("extra, says", [
    (("--suspect-seen-at", LATER), "NOT anchored"),  # no roots: no anchor is checked, so none counts
    (("--tsa-roots", "{roots}", "--suspect-seen-at", EARLIER), "evidence only against a suspect that appeared after"),
    (("--tsa-roots", "{roots}"), "evidence only against a suspect that appeared after"),  # no suspect time: no claim
])
def test_unanchored_or_late_heads_are_not_ownership(owner_world, tsa_a, extra, says):
    d = owner_world[0]
    r = _verify(d, "--release", d / "release.json", *[str(tsa_a.root_pem) if a == "{roots}" else a for a in extra])
    assert r.exit_code == 1, r.output
    assert "WHITE-BOX MATCH" in r.stdout and says in r.stdout and "OWNERSHIP VERIFIED" not in r.stdout


def test_a_release_without_anchor_is_not_ownership(owner_world, tsa_a, tmp_path):
    d, owner, _, vk = owner_world
    save_release(make_release(vk, owner, d / "released.safetensors", head=d / "head.safetensors"), tmp_path / "plain.json")
    r = _verify(d, "--release", tmp_path / "plain.json", "--tsa-roots", tsa_a.root_pem, "--suspect-seen-at", LATER)
    assert r.exit_code == 1 and "NOT anchored" in r.stdout, r.output


def test_other_heads_owners_and_tokens_are_refused_in_one_line(owner_world, tsa_a, tsa_b, tmp_path):
    d, owner, mk, vk = owner_world
    roots = ("--tsa-roots", tsa_a.root_pem, "--suspect-seen-at", LATER)
    # another head than the record binds (a thief's head fitted to the same key)
    refitted = load_model(d / "released.safetensors")[0]
    with torch.no_grad():
        output_layer(refitted).weight.add_(0.01)
    thief_head = save_output_layer(tmp_path / "thief.safetensors", refitted)
    # another owner's record of his own key, binding this very head
    thief = OwnerKey.generate()
    _, thief_vk = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=thief, set_size=30)
    save_release(make_release(thief_vk, thief, d / "released.safetensors", head=d / "head.safetensors"), tmp_path / "thief.json")
    # the owner's record with a token of TSA B (not trusted) and with a tampered token
    (tmp_path / "b").mkdir()
    rec_b = tmp_path / "b" / "release.json"
    rec_b.write_bytes((d / "release.json").read_bytes())
    doc = json.loads(rec_b.read_text())
    save_anchor(new_anchor(doc, reply=tsa_b.reply(timestamp_query(doc))), anchor_path(rec_b))
    (tmp_path / "t").mkdir()
    rec_t = tmp_path / "t" / "release.json"
    rec_t.write_bytes((d / "release.json").read_bytes())
    anchor = load_anchor(anchor_path(d / "release.json"))
    token = bytearray(base64.b64decode(anchor["token"]))
    token[-5] ^= 1  # inside the signature value
    anchor["token"] = base64.b64encode(bytes(token)).decode()
    save_anchor(anchor, anchor_path(rec_t))
    cases = [
        (["--output-layer", thief_head, "--release", d / "release.json"], "no release record given binds this head"),
        (["--release", tmp_path / "thief.json"], "another owner key"),
        (["--release", rec_b], "does not verify"),
        (["--release", rec_t], "does not verify"),
        ([], "needs --release"),
    ]
    for args, message in cases:
        r = _verify(d, *args, *roots)
        assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.output)


def test_a_report_whose_owner_rewrites_the_anchored_time_is_refused(owner_world, tsa_a, tsa_b, tsa_roots_a):
    d, owner, mk, vk = owner_world
    binding = bind_head([d / "release.json"], vk, d / "head.safetensors", tsa_roots=tsa_roots_a)
    res = verify(d / "suspect.safetensors", mk, vk, output_layer=d / "head.safetensors", head=binding, suspect_seen_at=LATER)
    assert res.verified
    doc = make_report(res, mk, vk, owner)
    assert check_report(doc, vk=vk, tsa_roots=tsa_roots_a).ok

    def resigned(edit):
        forged = copy.deepcopy(doc)
        edit(forged["body"])
        forged["signature"] = owner.sign(canonical_json(forged["body"])).hex()  # the owner signs whatever he likes
        return check_report(forged, vk=vk, tsa_roots=tsa_roots_a)

    def earlier(body):  # back-date the head, verdict text to match
        body["verdict"]["text"] = body["verdict"]["text"].replace(body["view"]["anchored_at"], "2000-01-01T00:00:00Z")
        body["view"]["anchored_at"] = "2000-01-01T00:00:00Z"

    assert "the token says" in " ".join(resigned(earlier).problems)
    other = copy.deepcopy(binding.release["record"])
    other["body"]["head"]["sha256"] = "0" * 64
    assert resigned(lambda b: b["view"]["release"].update(record=other)).problems  # the record's signature breaks
    foreign = new_anchor(binding.release["record"], reply=tsa_b.reply(timestamp_query(binding.release["record"])))
    assert "does not verify" in " ".join(resigned(lambda b: b["view"]["release"].update(anchor=foreign)).problems)
    assert "carries no anchor" in " ".join(resigned(lambda b: b["view"]["release"].update(anchor=None)).problems)
    assert resigned(lambda b: b["view"].update(release=None)).problems


def test_verify_shows_the_keys_anchored_time(owner_world, tsa_a, tsa_b, tmp_path):
    d = owner_world[0]
    with tsa_a.serve() as url:
        r = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k"), "--size", "10", "--tsa", url])
    assert r.exit_code == 0, r.output
    base = ["verify", "--model", str(d / "suspect.safetensors"), "--marking-key", str(tmp_path / "k" / "marking-key.json"),
            "--verification-key", str(tmp_path / "k" / "verification-key.json")]
    r = CliRunner().invoke(main, [*base, "--tsa-roots", str(tsa_a.root_pem), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["key_anchor"]["anchored_at"].startswith("20"), r.output
    r = CliRunner().invoke(main, base)
    assert "not checked (give --tsa-roots)" in r.stdout, r.output
    r = CliRunner().invoke(main, [*base, "--tsa-roots", str(tsa_b.root_pem)])  # a TSA the verifier does not trust
    assert r.exit_code == 2 and "does not verify" in r.stderr, r.output
    # the report shows the key's anchored time with the token; check-report re-checks both
    r = CliRunner().invoke(main, [*base, "--tsa-roots", str(tsa_a.root_pem), "--report", str(tmp_path / "rep")])
    assert r.exit_code == 1 and (tmp_path / "rep.json").exists(), r.output
    vk = VerificationKey.load(tmp_path / "k" / "verification-key.json")
    doc = load_report(tmp_path / "rep.json")
    stated = doc["body"]["key_anchor"]["anchored_at"]
    assert f"key anchored at {stated}" in check_report(doc, vk=vk, tsa_roots=TsaRoots.load(tsa_a.root_pem)).checked
    assert "give the TSA roots" in " ".join(check_report(doc, vk=vk).problems)
    assert "does not verify" in " ".join(check_report(doc, vk=vk, tsa_roots=TsaRoots.load(tsa_b.root_pem)).problems)
    doc["body"]["key_anchor"]["anchored_at"] = "2000-01-01T00:00:00Z"  # the owner back-dates his key and re-signs
    doc["signature"] = OwnerKey.load(tmp_path / "k" / "owner-key.pem").sign(canonical_json(doc["body"])).hex()
    assert "the token says" in " ".join(check_report(doc, vk=vk, tsa_roots=TsaRoots.load(tsa_a.root_pem)).problems)
