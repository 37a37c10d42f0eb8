"""PVerify: set selection by the verifier's nonce, the spent log, refusal of spent sets, the union bound."""
import json
from fractions import Fraction

import pytest
import torch
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.core.stats import DEFAULT_ALPHA, threshold
from backmark.crypto import OwnerKey
from backmark.errors import KeyMismatch, SpentSet, TamperedRecord
from backmark.protocols.pverify import SpentLog, pverify, select_set, set_alpha, set_indices

from .conftest import KeyTarget

SETS, SIZE = 4, 30



@pytest.fixture(scope="module")
def verifier():
    """The verifier's own Ed25519 key: it signs the spent log."""
    return OwnerKey.generate()


@pytest.fixture(scope="module")
def multi(owner_key):
    return keygen(input_shape=(1, 12, 12), num_classes=10, owner_key=owner_key, set_size=SIZE, num_sets=SETS,
                  created="2026-01-01T00:00:00Z")


def test_nonce_selects_the_set_reproducibly(multi, tmp_path, verifier):
    mk, vk = multi
    a = SpentLog.new(tmp_path / "a.jsonl", vk, verifier.public_hex, created="2026-01-02T00:00:00Z")
    b = SpentLog.new(tmp_path / "b.jsonl", vk, verifier.public_hex, created="2026-01-02T00:00:00Z")
    assert a.head != b.head  # every log has its own id: one started again is another log
    for n in (b"v1", b"verifier nonce", b"\x00" * 32):
        assert a.next_set(n) == select_set(vk.fingerprint, a.head, n, range(SETS))
    picked = {select_set(vk.fingerprint, a.head, f"nonce-{k}".encode(), range(SETS)) for k in range(60)}
    assert picked == set(range(SETS))  # the nonce, not the owner, moves the choice over all sets
    # the same nonce and head reproduce the choice; pverify records exactly that set
    a.save()
    expected = SpentLog.load(a.path, vk).next_set(b"verifier-2026")
    res = pverify(KeyTarget(mk), mk, vk, a.path, nonce=b"verifier-2026", verifier_key=verifier)
    assert res.set_index == expected and res.verification.indices == set_indices(vk, expected)


def test_spent_set_is_refused(multi, tmp_path, verifier):
    mk, vk = multi
    log = tmp_path / "spent.jsonl"
    first = pverify(KeyTarget(mk), mk, vk, log, nonce=b"first", verifier_key=verifier)
    assert first.verified
    with pytest.raises(SpentSet, match="already opened"):
        pverify(KeyTarget(mk), mk, vk, log, nonce=b"second", verifier_key=verifier, set_index=first.set_index)
    # the same nonce again cannot land on the spent set: it is no longer a candidate
    again = pverify(KeyTarget(mk), mk, vk, log, nonce=b"first", verifier_key=verifier)
    assert again.set_index != first.set_index
    while len(SpentLog.load(log, vk).unspent):
        pverify(KeyTarget(mk), mk, vk, log, nonce=b"more", verifier_key=verifier)
    with pytest.raises(SpentSet, match="every trigger set"):
        pverify(KeyTarget(mk), mk, vk, log, nonce=b"one more", verifier_key=verifier)
    loaded = SpentLog.load(log, vk)
    assert loaded.spent == list(range(SETS)) and len(loaded.entries) == SETS


def test_announced_set_must_be_the_selected_one(multi, tmp_path, verifier):
    mk, vk = multi
    log = SpentLog.new(tmp_path / "l.jsonl", vk, verifier.public_hex)
    log.save()
    chosen = SpentLog.load(tmp_path / "l.jsonl", vk).next_set(b"n")
    other = (chosen + 1) % SETS
    with pytest.raises(SpentSet, match="not the set this nonce selects"):
        pverify(KeyTarget(mk), mk, vk, tmp_path / "l.jsonl", nonce=b"n", verifier_key=verifier, set_index=other)
    assert SpentLog.load(tmp_path / "l.jsonl", vk).spent == []  # nothing spent


def test_unmarked_model_fails_and_its_set_is_spent(multi, tmp_path, verifier):
    mk, vk = multi
    res = pverify(KeyTarget(mk, answer_labels=False), mk, vk, tmp_path / "l.jsonl", nonce=b"x", verifier_key=verifier)
    assert not res.verified
    assert SpentLog.load(tmp_path / "l.jsonl", vk).spent == [res.set_index]


def test_threshold_uses_the_union_bound(multi, tmp_path, verifier):
    mk, vk = multi
    res = pverify(KeyTarget(mk), mk, vk, tmp_path / "l.jsonl", nonce=b"x", verifier_key=verifier)
    d = res.verification.decision
    assert d.alpha == set_alpha(DEFAULT_ALPHA, SETS) == DEFAULT_ALPHA / SETS
    assert d.threshold == threshold(SIZE, Fraction(1, 10), DEFAULT_ALPHA / SETS)
    # 10 sets of 100, |L| = 10: 46 matches at 2^-64 for one set, 47 once split over ten
    assert threshold(100, Fraction(1, 10), DEFAULT_ALPHA) == 46
    assert threshold(100, Fraction(1, 10), set_alpha(DEFAULT_ALPHA, 10)) == 47


def _lines(p):
    return p.read_bytes().splitlines(keepends=True)


def test_tampered_log_is_detected(multi, tmp_path, owner_key, verifier):
    mk, vk = multi
    log = tmp_path / "l.jsonl"
    for nonce in (b"a", b"b", b"c"):
        pverify(KeyTarget(mk), mk, vk, log, nonce=nonce, verifier_key=verifier)
    lines = _lines(log)
    bad = tmp_path / "bad.jsonl"

    def check(data, match):
        bad.write_bytes(b"".join(data))
        with pytest.raises(TamperedRecord, match=match):
            SpentLog.load(bad, vk)

    check([lines[0], lines[1], lines[3]], "chain is broken")  # an entry removed
    check([lines[0], lines[2], lines[1], lines[3]], "chain is broken")  # reordered
    edited = json.loads(lines[2])
    edited["result"]["passed"] = not edited["result"]["passed"]
    canon = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    check([lines[0], lines[1], canon, lines[3]], "signature does not verify")  # an entry edited: its signature no longer holds
    chain = SpentLog.load(log, vk).chain.prefix(1)
    # a claimant holding a copy cannot re-sign it as the verifier
    impostor = OwnerKey.generate()
    forged = {k: v for k, v in edited.items() if k != "signature"}
    from backmark.protocols.pverify import _next_head, _signed_message

    forged["signature"] = impostor.sign(_signed_message(_next_head(chain.head, forged))).hex()
    check([lines[0], lines[1], json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n"], "signature does not verify")
    check([lines[0], lines[1].replace(b'"seq":1', b'"seq": 1'), *lines[2:]], "not in canonical form")
    # a forged entry that reopens a spent set, with a correct chain: refused
    head = SpentLog.load(log, vk).chain
    forged = dict(json.loads(lines[1]), seq=4, prev=head.head, spent_before=head.spent)
    with pytest.raises(TamperedRecord, match="opened a second time"):
        head._check_entry(4, forged, "log")
    other = keygen(input_shape=(1, 12, 12), num_classes=10, owner_key=owner_key, set_size=SIZE, num_sets=SETS)[1]
    with pytest.raises(KeyMismatch):
        SpentLog.load(log, other)


def test_cli_pverify_and_spent(multi, tmp_path):
    mk, vk = multi
    from backmark.models import create_model
    from backmark.models.checkpoint import save_model

    mk.save(tmp_path / "marking-key.json")
    vk.save(tmp_path / "verification-key.json")
    torch.manual_seed(0)
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 12, 12))
    save_model(tmp_path / "m.safetensors", model, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 12, 12]})
    r = CliRunner()
    args = ["pverify", "--model", tmp_path / "m.safetensors", "--marking-key", tmp_path / "marking-key.json",
            "--verification-key", tmp_path / "verification-key.json", "--verifier-key", tmp_path / "verifier" / "verifier-key.pem",
            "--nonce", "verifier-1", "--json"]
    res = r.invoke(main, [str(a) for a in args])
    assert res.exit_code == 1, res.output  # an untrained model: not verified, yet the set is spent
    doc = json.loads(res.stdout)
    res = r.invoke(main, ["spent", str(tmp_path / "verifier" / "spent-log.jsonl"), "--verification-key", str(tmp_path / "verification-key.json"),
                          "--nonce", "verifier-2", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["spent"] == [doc["pverify"]["set"]] and summary["next_set"] != doc["pverify"]["set"]
    res = r.invoke(main, [str(a) for a in args[:-3]] + ["--nonce", "v3", "--set", str(doc["pverify"]["set"])])
    assert res.exit_code == 2 and "already opened" in res.stderr
