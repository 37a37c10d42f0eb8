"""Disputes: an owner and a pirate who embedded his own key into the owner's released model (paper: ownership piracy)."""
import json
import shutil
import time

import pytest
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.core.verify import verify
from backmark.crypto import OwnerKey
from backmark.crypto.timestamp import TsaRoots
from backmark.errors import InvalidConfig
from backmark.experiments.workflow import embed_file, new_model, train_file
from backmark.models.checkpoint import save_model
from backmark.protocols.anchor import anchor_path, new_anchor, save_anchor
from backmark.protocols.dispute import dispute
from backmark.protocols.release import make_release, save_release
from backmark.training import TrainConfig

from .conftest import MARK_CFG

pytestmark = pytest.mark.slow  # the pirate fine-tunes the owner's model once per session (tens of seconds on 2 cores)


@pytest.fixture(scope="module")
def url(tsa_a):
    with tsa_a.serve() as u:
        yield u


@pytest.fixture(scope="module")
def piracy(tmp_path_factory, fmnist_2k, small_keys, owner_key):
    """The owner's released model, and the pirate's copy: his own key embedded into it.

    Both marks must verify on the copy at 2^-64 (25 of 30). The pirate's fine-tuning erodes the
    owner's mark, so the owner marks for 4 epochs (conftest's 2-epoch marked_fmnist kept 24-26 of
    30 under the pirate's embed) and the pirate embeds gently (lr 0.003; measured 26-27 of 30 on a
    2-epoch owner model, with the pirate's own mark at 30 of 30)."""
    d = tmp_path_factory.mktemp("piracy")
    released = d / "released.safetensors"
    train_file(data=fmnist_2k, model_name="fmnist-cnn", cfg=TrainConfig(**MARK_CFG).replace(epochs=4), out=released,
               keys=small_keys, device="cpu")
    pirate_owner = OwnerKey.generate()
    pirate_keys = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=pirate_owner, set_size=30, owner="pirate")
    cfg = TrainConfig(**MARK_CFG).replace(lr=0.003, epochs=6, schedule="constant")
    embed_file(data=fmnist_2k, model_path=released, cfg=cfg, out=d / "pirated.safetensors", keys=pirate_keys, device="cpu")
    for model, keys, should in ((released, small_keys, True), (released, pirate_keys, False),
                                (d / "pirated.safetensors", small_keys, True), (d / "pirated.safetensors", pirate_keys, True)):
        r = verify(model, *keys)
        assert r.verified == should, (model, r.matches)  # the premise: both marks in the pirate's copy only
    return {"owner": (small_keys, owner_key, released), "pirate": (pirate_keys, pirate_owner, d / "pirated.safetensors")}


def party(root, name, keys, owner, *, key_url=None, releases=()):
    """A claimant's folder: keys, the key's anchor (from ``key_url``), release records of ``releases``
    = [(model file, url or None)] with their anchors, and the released model files."""
    d = root / name
    d.mkdir()
    keys[0].save(d / "marking-key.json")
    keys[1].save(d / "verification-key.json")
    if key_url:
        save_anchor(new_anchor(keys[1].to_document(), tsa=key_url), anchor_path(d / "verification-key.json"))
    for i, (model, rel_url) in enumerate(releases):
        shutil.copy(model, d / model.name)
        doc = make_release(keys[1], owner, d / model.name)
        save_release(doc, d / f"release-{i}.json")
        if rel_url:
            save_anchor(new_anchor(doc, tsa=rel_url), anchor_path(d / f"release-{i}.json"))
    return d


def _tests(result):
    """{(key's folder, "suspect" or the folder whose release was tested): verified}"""
    name = lambda path: path.rsplit("/", 1)[-1]  # noqa: E731
    return {(name(t["key"]), name(t["release_of"]) if t["release_of"] else "suspect"): t["counts"] for t in result.tests}


def test_the_owner_is_named_against_a_pirate_whose_anchored_release_carries_both_marks(piracy, tmp_path, url, tsa_a):
    (okeys, oown, released), (pkeys, pown, pirated) = piracy["owner"], piracy["pirate"]
    owner = party(tmp_path, "owner", okeys, oown, key_url=url, releases=[(released, url)])
    pirate = party(tmp_path, "pirate", pkeys, pown, key_url=url, releases=[(pirated, url)])
    roots = TsaRoots.load(tsa_a.root_pem)
    for order in ([owner, pirate], [pirate, owner]):
        res = dispute(pirated, order, tsa_roots=roots)
        assert (res.winner, res.rule) == (str(owner), "derived"), res.reason
        assert "carries" in res.reason and "a pirate's model carries both marks" in res.reason
        seen = _tests(res)
        assert seen[("owner", "suspect")] and seen[("pirate", "suspect")]  # both keys verify on the suspect
        assert seen[("owner", "owner")] and not seen[("pirate", "owner")]  # the owner's release: one mark
        assert seen[("owner", "pirate")] and seen[("pirate", "pirate")]  # the pirate's release: both
    r = CliRunner().invoke(main, ["dispute", "--suspect", str(pirated), "--party", str(pirate), "--party", str(owner),
                                  "--tsa-roots", str(tsa_a.root_pem)])
    assert r.exit_code == 0 and r.stdout.startswith(f"DISPUTE: {owner}'s claim is better supported"), r.output
    r = CliRunner().invoke(main, ["dispute", "--suspect", str(pirated), "--party", str(pirate), "--party", str(owner),
                                  "--tsa-roots", str(tsa_a.root_pem), "--json"])
    doc = json.loads(r.stdout)
    assert doc["winner"] == str(owner) and doc["decided"] and all(p["key_anchored_at"] for p in doc["parties"])


def test_a_pirate_who_anchored_his_key_first_loses_to_an_anchored_release(piracy, tmp_path, url, tsa_a):
    (okeys, oown, released), (pkeys, pown, pirated) = piracy["owner"], piracy["pirate"]
    pirate = party(tmp_path, "pirate", pkeys, pown, key_url=url)  # keys anchored in advance, no model shown
    time.sleep(1.1)  # genTime has whole seconds
    owner = party(tmp_path, "owner", okeys, oown, key_url=url, releases=[(released, url)])
    roots = TsaRoots.load(tsa_a.root_pem)
    res = dispute(pirated, [pirate, owner], tsa_roots=roots)
    assert (res.winner, res.rule) == (str(owner), "first-marked"), res.reason
    # without the release model, key order is all that is left: the weakest rule (docs/claims.md)
    bare = party(tmp_path, "owner-keys-only", okeys, oown, key_url=url)
    res = dispute(pirated, [pirate, bare], tsa_roots=roots)
    assert (res.winner, res.rule) == (str(pirate), "key-first"), res.reason


def test_without_trusted_anchors_nothing_is_decided(piracy, tmp_path, url, tsa_a, tsa_b):
    (okeys, oown, released), (pkeys, pown, pirated) = piracy["owner"], piracy["pirate"]
    owner = party(tmp_path, "owner", okeys, oown, key_url=url, releases=[(released, url)])
    pirate = party(tmp_path, "pirate", pkeys, pown, key_url=url)
    res = dispute(pirated, [owner, pirate])  # no roots: no anchor can be checked
    assert (res.winner, res.rule) == (None, "anchors") and "no TSA roots" in res.reason
    res = dispute(pirated, [owner, pirate], tsa_roots=TsaRoots.load(tsa_b.root_pem))  # roots of a TSA neither used
    assert res.winner is None and all("does not verify" in why for p in res.parties for why in p["rejected"])
    assert sum(len(p["rejected"]) for p in res.parties) == 3
    r = CliRunner().invoke(main, ["dispute", "--suspect", str(pirated), "--party", str(owner), "--party", str(pirate)])
    assert r.exit_code == 1 and "CANNOT DECIDE" in r.stdout
    bare_owner = party(tmp_path, "bare-owner", okeys, oown, releases=[(released, None)])
    bare_pirate = party(tmp_path, "bare-pirate", pkeys, pown)
    res = dispute(pirated, [bare_owner, bare_pirate], tsa_roots=TsaRoots.load(tsa_a.root_pem))
    assert (res.winner, res.rule) == (None, "anchors") and "neither party has a verified anchor" in res.reason
    # an unanchored claim never wins against an anchored one, whichever side it is
    res = dispute(pirated, [bare_owner, pirate], tsa_roots=TsaRoots.load(tsa_a.root_pem))
    assert (res.winner, res.rule) == (str(pirate), "anchors")
    res = dispute(pirated, [owner, bare_pirate], tsa_roots=TsaRoots.load(tsa_a.root_pem))
    assert (res.winner, res.rule) == (str(owner), "anchors")


def test_a_party_whose_own_anchored_release_carries_the_others_mark_never_wins(piracy, tmp_path, url, tsa_a):
    (okeys, oown, _), (pkeys, pown, pirated) = piracy["owner"], piracy["pirate"]
    bare_owner = party(tmp_path, "bare-owner", okeys, oown)
    pirate = party(tmp_path, "pirate", pkeys, pown, releases=[(pirated, url)])
    res = dispute(pirated, [bare_owner, pirate], tsa_roots=TsaRoots.load(tsa_a.root_pem))
    assert (res.winner, res.rule) == (None, "anchors") and "does not show it came first" in res.reason


def test_the_suspect_decides_when_one_key_or_none_verifies(piracy, tmp_path, fmnist_2k):
    (okeys, oown, released), (pkeys, pown, _) = piracy["owner"], piracy["pirate"]
    owner, pirate = party(tmp_path, "owner", okeys, oown), party(tmp_path, "pirate", pkeys, pown)
    res = dispute(released, [pirate, owner])
    assert (res.winner, res.rule) == (str(owner), "suspect")
    clean = tmp_path / "clean.safetensors"
    save_model(clean, new_model("fmnist-cnn", fmnist_2k, 99),
               {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28]})
    res = dispute(clean, [pirate, owner])
    assert (res.winner, res.rule) == (None, "suspect")


def test_bad_disputes_exit_2_in_one_line(piracy, tmp_path):
    (okeys, oown, released), _ = piracy["owner"], piracy["pirate"]
    owner = party(tmp_path, "owner", okeys, oown)
    with pytest.raises(InvalidConfig, match="same verification key"):
        dispute(released, [owner, owner])
    (tmp_path / "empty").mkdir()
    r = CliRunner()
    for parties, message in [([owner], "exactly twice"), ([owner, tmp_path / "empty"], "no such"),
                             ([owner, owner], "same verification")]:
        res = r.invoke(main, ["dispute", "--suspect", str(released), *[a for p in parties for a in ("--party", str(p))]])
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and message in res.stderr and (len(lines) == 1 or lines[0].startswith("Usage:")), res.output


def test_a_lone_verifying_key_does_not_win_against_an_earlier_anchored_release(piracy, tmp_path, url, tsa_a, fmnist_2k):
    # Only x's key verifies on the suspect, but y released an anchored model before x's first anchor: a pirate
    # who embedded his key into y's release and trained y's mark away would read the same, so no one is named.
    (okeys, oown, released), (pkeys, pown, _) = piracy["owner"], piracy["pirate"]
    other = tmp_path / "other.safetensors"
    save_model(other, new_model("fmnist-cnn", fmnist_2k, 98), {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28]})
    roots = TsaRoots.load(tsa_a.root_pem)
    early = party(tmp_path, "early", pkeys, pown, releases=[(other, url)])
    time.sleep(1.1)  # anchored times are whole seconds
    late = party(tmp_path, "late", okeys, oown, key_url=url)
    res = dispute(released, [late, early], tsa_roots=roots)
    assert (res.winner, res.rule) == (None, "suspect"), res.reason
    bare = party(tmp_path, "bare", okeys, oown)
    assert dispute(released, [bare, early], tsa_roots=roots).winner is None
    assert dispute(released, [late, early]).winner is None  # no roots: early's release anchors cannot be checked
    time.sleep(1.1)
    later_release = party(tmp_path, "later", pkeys, pown, releases=[(other, url)])
    res = dispute(released, [late, later_release], tsa_roots=roots)  # x's key anchored before y's release: x is named
    assert (res.winner, res.rule) == (str(late), "suspect"), res.reason
