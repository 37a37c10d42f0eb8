"""The watermark at the API: selection, marked answers over a real server, the log, verify-extraction.

Every server listens on 127.0.0.1 on a free port and is shut down at the end of its fixture.
"""
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import binom

from backmark.cli import main
from backmark.crypto import canonical_image_bytes, canonical_json, sha256_hex
from backmark.crypto.timestamp import TsaRoots
from backmark.errors import BackmarkError, InvalidKey, InvalidTimestamp, KeyMismatch, TamperedKey, TamperedRecord
from backmark.io.documents import dumps_json
from backmark.io.png import png_b64, png_decode
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.protocols.apilog import ApiLog, read_api_images, read_api_log
from backmark.protocols.anchor import log_head_document, new_anchor, timestamp_query
from backmark.protocols.apimark import ApiMark, ApiMarkedTarget, query_images
from backmark.protocols.extraction import verify_extraction
from backmark.targets import TorchTarget, open_target
from backmark.targets.serve import BackgroundServer, V2App
from backmark.training import TrainConfig, train

from .conftest import serving

pytestmark = pytest.mark.timeout(300)
FRACTION = 0.2  # tests mark a fifth of the queries, so 500 queries give ~100 logged answers
QUERIES = 500
LATER, EARLIER = "2100-01-01T00:00:00Z", "2000-01-01T00:00:00Z"  # the suspect first seen after / before the head's anchor


def head_anchor(tsa, head: str) -> dict:
    """An RFC 3161 anchor of a log head from a local TSA, as the owner makes it when he publishes the head."""
    doc = log_head_document(head)
    return new_anchor(doc, reply=tsa.reply(timestamp_query(doc)))


def clock():
    """A clock that advances 1 ms per reading (timestamps in tests are reproducible)."""
    t = [dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)]

    def now():
        t[0] += dt.timedelta(milliseconds=1)
        return t[0]

    return now


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, words: str):
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and words in r.stderr, r.stderr


@pytest.fixture(scope="module")
def api(tmp_path_factory, marked_fmnist, fmnist_small, owner_key):
    """A victim served over v2 with an api-mark; a thief's 500 extraction queries and the API's answers."""
    d = tmp_path_factory.mktemp("api")
    model, ckpt = marked_fmnist
    mark = ApiMark.generate(num_classes=10, owner_key=owner_key, fraction=FRACTION, created="2026-03-01T00:00:00Z")
    mark.save(d / "api-mark.json")
    queries = fmnist_small.test_x[:QUERIES]  # the thief's own images (not the victim's training data)
    with ApiLog(d / "api-log.jsonl", d / "api-log.images.jsonl", mark, clock=clock()) as log:
        marked = ApiMarkedTarget(TorchTarget(model), mark, log)
        with BackgroundServer(V2App(marked, name="victim")) as srv:
            answers = open_target(f"{srv.url}/v2/models/victim").predict(queries)  # FP32 over JSON, as any client sends
    return {"dir": d, "mark": mark, "model": model, "ckpt": ckpt, "queries": queries, "answers": answers, "stats": marked.stats(),
            "log": d / "api-log.jsonl", "images": d / "api-log.images.jsonl"}


# -- the keyed hash ---------------------------------------------------------------------

def test_selection_and_labels_are_the_documented_hmac_and_rates_hold(owner_key):
    mark = ApiMark.generate(num_classes=10, owner_key=owner_key, secret=bytes(range(32)))
    assert mark.fraction == 0.005 and mark.select_below == math.floor(0.005 * 2**64)
    n = 200_000
    inputs = [i.to_bytes(8, "big") for i in range(n)]
    picked = [x for x in inputs if mark.selects(x)]
    for x in inputs[:2000] + picked[:50]:  # an independent implementation of docs/formats.md
        sel = hmac.new(mark.secret, b"backmark/api-mark/select/v1" + x, hashlib.sha256).digest()
        assert mark.selects(x) == (int.from_bytes(sel[:8], "big") < mark.select_below)
        lab = hmac.new(mark.secret, b"backmark/api-mark/label/v1" + x, hashlib.sha256).digest()
        assert mark.label(x) == int.from_bytes(lab, "big") % 10
    lo, hi = binom.ppf(1e-6, n, 0.005), binom.isf(1e-6, n, 0.005)
    assert lo <= len(picked) <= hi, len(picked)  # ~1000 of 200k at 0.5%
    counts = np.bincount([mark.label(x) for x in inputs[:20_000]], minlength=10)
    assert ((counts >= binom.ppf(1e-7, 20_000, 0.1)) & (counts <= binom.isf(1e-7, 20_000, 0.1))).all(), counts
    labels = np.bincount([mark.label(x) for x in picked], minlength=10)  # the selected ones too
    assert (labels >= binom.ppf(1e-7, len(picked), 0.1)).all(), labels


def test_marked_answers_are_the_model_scores_with_two_swapped(owner_key):
    mark = ApiMark.generate(num_classes=10, owner_key=owner_key, fraction=0.3)
    torch.manual_seed(0)
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    pixels = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    marked = ApiMarkedTarget(TorchTarget(model), mark, None)
    plain = TorchTarget(model).scores(pixels)
    out = marked.scores(pixels)
    picked = [mark.selects(canonical_image_bytes(im)) for im in query_images(pixels)]
    assert 5 < sum(picked) < 40
    for i, im in enumerate(query_images(pixels)):
        assert torch.equal(out[i].sort().values, plain[i].sort().values)  # the same scores, in another order
        if picked[i]:
            assert out[i].argmax() == mark.label(canonical_image_bytes(im))
            assert int((out[i] != plain[i]).sum()) in (0, 2)
        else:
            assert torch.equal(out[i], plain[i])
    # a float query of the same pixels (and a little float noise) is the same query
    noisy = (pixels.float() / 255 + 1e-4 * torch.randn(pixels.shape)).clamp(0, 1)
    mask = torch.tensor(picked)
    assert torch.equal(marked.forward(noisy).argmax(1)[mask], out.argmax(1)[mask])
    other = ApiMark.generate(num_classes=7, owner_key=owner_key)
    with pytest.raises(BackmarkError, match="10 classes but the api-mark was made for 7"):
        ApiMarkedTarget(TorchTarget(model), other, None)


def test_api_mark_file_is_secret_signed_and_checked(tmp_path, owner_key):
    mark = ApiMark.generate(num_classes=10, owner_key=owner_key)
    mark.save(tmp_path / "m.json")
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o600
    assert ApiMark.load(tmp_path / "m.json").fingerprint == mark.fingerprint
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["body"]["fraction"] = 0.5  # more marked answers than the owner signed for
    (tmp_path / "bad.json").write_bytes(dumps_json(doc))
    with pytest.raises(TamperedKey, match="signature"):
        ApiMark.load(tmp_path / "bad.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["secret"] = "00" * 32  # another secret under the owner's signed body
    (tmp_path / "bad.json").write_bytes(dumps_json(doc))
    with pytest.raises(TamperedKey, match="does not belong"):
        ApiMark.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps(json.loads((tmp_path / "m.json").read_text())))  # same JSON, other bytes
    with pytest.raises(TamperedKey, match="not in canonical form"):
        ApiMark.load(tmp_path / "bad.json")
    with pytest.raises(InvalidKey):
        ApiMark(b"short", mark.body, mark.signature)


# -- serving ----------------------------------------------------------------------------

def test_served_api_answers_its_own_labels_except_the_selected(api):
    mark, queries, answers = api["mark"], api["queries"], api["answers"]
    own = TorchTarget(api["model"]).predict(queries)
    data = [canonical_image_bytes(im) for im in query_images(queries)]
    picked = torch.tensor([mark.selects(b) for b in data])
    n = int(picked.sum())
    assert binom.ppf(1e-6, QUERIES, FRACTION) <= n <= binom.isf(1e-6, QUERIES, FRACTION)
    assert torch.equal(answers[~picked], own[~picked])  # every other query: the model's own answer
    derived = torch.tensor([mark.label(b) for b in data])
    assert torch.equal(answers[picked], derived[picked])  # every selected one: the derived label
    assert api["stats"] == {"queries": QUERIES, "selected": n, "altered": int((derived[picked] != own[picked]).sum())}
    log = read_api_log(api["log"], mark)
    assert [e["query"] for e in log.entries] == [sha256_hex(b) for b, p in zip(data, picked) if p]
    assert [e["label"] for e in log.entries] == derived[picked].tolist()
    assert log.header["created"] == "2026-03-01T00:00:00.001Z" and log.entries[0]["time"] == "2026-03-01T00:00:00.002Z"
    assert log.entries[0]["prev"] == log.heads[0]
    stored = read_api_images(api["images"], mark).images
    assert set(stored) == {e["query"] for e in log.entries}
    first = next(i for i, p in enumerate(picked) if p)
    assert np.array_equal(stored[log.entries[0]["query"]], query_images(queries)[first])


def test_log_continues_after_a_restart_and_has_one_writer(tmp_path, owner_key):
    mark = ApiMark.generate(num_classes=10, owner_key=owner_key, fraction=1.0)
    images = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    hwc = query_images(images)
    paths = (tmp_path / "log.jsonl", tmp_path / "img.jsonl")
    with ApiLog(*paths, mark) as log:
        for im in hwc[:3]:
            log.record(sha256_hex(canonical_image_bytes(im)), 1, im)
        with pytest.raises(BackmarkError, match="in use by another writer"):
            ApiLog(*paths, mark)
    with ApiLog(*paths, mark) as log:  # a restart continues the same chain
        for im in [*hwc[3:], hwc[0]]:  # a repeated query is logged again, its image stored once
            log.record(sha256_hex(canonical_image_bytes(im)), 2, im)
    rec = read_api_log(paths[0], mark)
    assert [e["seq"] for e in rec.entries] == [1, 2, 3, 4, 5, 6, 7]
    assert len(read_api_images(paths[1], mark).images) == 6
    with pytest.raises(KeyMismatch):
        read_api_log(paths[0], ApiMark.generate(num_classes=10, owner_key=owner_key))
    lines = paths[1].read_bytes().split(b"\n")
    paths[1].write_bytes(b"\n".join(lines[:2] + lines[3:]))  # an image lost: the log is never extended
    with pytest.raises(TamperedRecord, match="lacks the images of 1 logged"):
        ApiLog(*paths, mark)


# -- verify-extraction --------------------------------------------------------------------

def train_student(data, queries, labels):
    """A fresh fmnist-cnn trained on (queries, labels) as an extraction attacker would (15 short epochs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is as fast, and kind to a shared machine
    try:
        student = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), mean=data.mean, std=data.std, seed=1)
        cfg = TrainConfig(epochs=15, batch_size=64, lr=0.003, optimizer="adam", trigger_k=0, seed=1)
        train(student, dataclasses.replace(data, train_x=queries, train_y=labels), cfg, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return student.eval()


@pytest.mark.slow
def test_a_student_of_the_api_verifies_and_an_independent_one_does_not(api, fmnist_2k, tmp_path, tsa_a):
    meta = {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": list(fmnist_2k.mean),
            "std": list(fmnist_2k.std)}
    own = TorchTarget(api["model"]).predict(api["queries"])
    head = read_api_log(api["log"], api["mark"]).head  # as published before the suspects were known, and anchored (by file)
    r = run("timestamp", "--log-head", head, "--query-out", tmp_path / "head.tsq")
    assert r.exit_code == 0, r.output
    (tmp_path / "head.tsr").write_bytes(tsa_a.reply((tmp_path / "head.tsq").read_bytes()))
    r = run("timestamp", "--log-head", head, "--reply", tmp_path / "head.tsr", "--tsa-roots", tsa_a.root_pem,
            "--out", tmp_path / "head.timestamp.json")
    assert r.exit_code == 0 and "anchored at" in r.output, r.output
    fixed = ("--head", head, "--head-anchor", tmp_path / "head.timestamp.json", "--tsa-roots", tsa_a.root_pem,
             "--suspect-seen-at", LATER)
    results = {}
    for name, labels in [("stolen", api["answers"]), ("independent", own)]:  # same queries, same victim, same recipe
        save_model(tmp_path / f"{name}.safetensors", train_student(fmnist_2k, api["queries"], labels), meta)
        r = run("verify-extraction", "--model", tmp_path / f"{name}.safetensors", "--api-mark", api["dir"] / "api-mark.json",
                "--log", api["log"], *fixed, "--json")
        results[name] = (r.exit_code, json.loads(r.stdout))
    for name, (code, doc) in results.items():  # the figures docs/results/api-mark.md quotes (pytest -rP shows them)
        print(f"{name}: exit {code}, {doc['matches']}/{doc['n']} matched, threshold {doc['threshold']}, "
              f"p-value 2^{doc['log2_p_value']:.1f}")
    code, doc = results["stolen"]
    assert code == 0 and doc["verified"] and doc["matches"] >= doc["threshold"], doc["matches"]
    assert doc["n"] == api["stats"]["selected"] and doc["p0_exact"] == "1/10" and doc["log2_p_value"] < -64
    assert doc["verdict"]["kind"] == "extraction" and doc["null"]["kind"] == "exact" and head in doc["null"]["assumption"]
    assert doc["head_anchored_at"] is not None and doc["suspect_seen_at"] == LATER
    r = run("verify-extraction", "--model", tmp_path / "stolen.safetensors", "--api-mark", api["dir"] / "api-mark.json",
            "--log", api["log"])  # no head fixed before the suspect: the owner could have made the log after
    assert r.exit_code == 1 and r.stdout.startswith("MATCH, NOT EVIDENCE: NO LOG HEAD FIXED") and "assumption: none" in r.stdout
    r = run("verify-extraction", "--model", tmp_path / "stolen.safetensors", "--api-mark", api["dir"] / "api-mark.json",
            "--log", api["log"], "--head", head)  # a head alone: only the verifier's word that it came first
    assert r.exit_code == 1 and r.stdout.startswith("MATCH, NOT EVIDENCE: THE LOG HEAD IS NOT ANCHORED"), r.stdout
    r = run("verify-extraction", "--model", tmp_path / "stolen.safetensors", "--api-mark", api["dir"] / "api-mark.json",
            "--log", api["log"], *fixed[:-1], EARLIER)  # the suspect was seen before the head was anchored
    assert r.exit_code == 1 and r.stdout.startswith("MATCH, NOT EVIDENCE: THE LOG HEAD WAS ANCHORED AT"), r.stdout
    code, doc = results["independent"]
    assert code == 1 and not doc["verified"] and doc["matches"] < doc["threshold"] / 2, doc["matches"]
    r = run("verify-extraction", "--model", api["ckpt"], "--api-mark", api["dir"] / "api-mark.json", "--log", api["log"])
    assert r.exit_code == 1 and r.stdout.startswith("NOT VERIFIED: ")  # the victim itself never learnt the API's answers


def test_verify_extraction_replays_through_any_target_and_a_published_head(api, tsa_a, tsa_b, tsa_roots_a):
    mark, n = api["mark"], api["stats"]["selected"]
    api_itself = ApiMarkedTarget(TorchTarget(api["model"]), mark, None)  # answers exactly what was logged
    unfixed = verify_extraction(api_itself, mark, api["log"], api["images"])
    assert unfixed.decision.passed and not unfixed.verified and unfixed.verdict.kind == "unfixed-log"
    assert unfixed.decision.matches == n and unfixed.log["distinct_queries"] == n
    head = read_api_log(api["log"], mark).head
    vouched = verify_extraction(api_itself, mark, api["log"], api["images"], head=head)  # the verifier's word alone
    assert vouched.decision.passed and not vouched.verified and vouched.verdict.kind == "unanchored-head"
    assert "only the verifier says" in vouched.assumption
    fixed = {"head": head, "head_anchor": head_anchor(tsa_a, head), "tsa_roots": tsa_roots_a, "suspect_seen_at": LATER}
    full = verify_extraction(api_itself, mark, api["log"], api["images"], **fixed)
    assert full.verified and full.verdict.text.startswith("EXTRACTION VERIFIED") and "OWNERSHIP" not in full.summary()
    assert full.head_anchored_at in full.assumption and full.head_fixed
    late = verify_extraction(api_itself, mark, api["log"], api["images"], **{**fixed, "suspect_seen_at": EARLIER})
    assert late.decision.passed and not late.verified and late.verdict.kind == "late-head"
    unstated = verify_extraction(api_itself, mark, api["log"], api["images"], **{**fixed, "suspect_seen_at": None})
    assert not unstated.verified and unstated.verdict.kind == "late-head"
    with pytest.raises(InvalidTimestamp, match="another document"):  # an anchor of an earlier head does not fix this one
        verify_extraction(api_itself, mark, api["log"], api["images"],
                          **{**fixed, "head_anchor": head_anchor(tsa_a, read_api_log(api["log"], mark).heads[40])})
    with pytest.raises(InvalidTimestamp):  # a TSA the verifier does not trust
        verify_extraction(api_itself, mark, api["log"], api["images"], **{**fixed, "tsa_roots": TsaRoots.load(tsa_b.root_pem)})
    with pytest.raises(BackmarkError, match="--tsa-roots"):
        verify_extraction(api_itself, mark, api["log"], api["images"], **{**fixed, "tsa_roots": None})
    victim = verify_extraction(api["model"], mark, api["log"], api["images"], **fixed)
    assert not victim.verified and victim.decision.n == n and victim.verdict.kind == "not-verified"
    weak = verify_extraction(api_itself, mark, api["log"], api["images"], **fixed, alpha=1e-3, allow_weak_alpha=True)
    assert weak.decision.passed and not weak.verified and weak.verdict.kind == "weak-alpha"
    with pytest.raises(BackmarkError, match="floor"):
        verify_extraction(api_itself, mark, api["log"], api["images"], head=head, alpha=1e-3)
    head = read_api_log(api["log"], mark).heads[40]  # published after the 40th entry
    cut = verify_extraction(api_itself, mark, api["log"], api["images"], head=head)
    assert cut.decision.n == 40 and cut.log["entries_after_head"] == n - 40 and cut.log["head"] == head
    with pytest.raises(TamperedRecord, match="never had head"):
        verify_extraction(api_itself, mark, api["log"], api["images"], head="ab" * 32)
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 7))
    with pytest.raises(BackmarkError, match="classes"):
        verify_extraction(wrong, mark, api["log"], api["images"])


def tampered_copy(api, tmp_path, which, edit):
    """Copies of the api's files with one of them edited by ``edit(lines) -> lines``."""
    paths = {k: tmp_path / api[k].name for k in ("log", "images")}
    for k, p in paths.items():
        shutil.copy(api[k], p)
    lines = paths[which].read_bytes().split(b"\n")[:-1]
    paths[which].write_bytes(b"\n".join(edit(lines)) + b"\n")
    return paths


def _relabel(lines):
    e = json.loads(lines[5])
    e["label"] = (e["label"] + 1) % 10
    return lines[:5] + [canonical_json(e)] + lines[6:]


def _repixel(lines):
    d = json.loads(lines[3])
    img = png_decode(d["png"], d["shape"]).copy()
    img[0, 0, 0] ^= 1  # one pixel, one bit
    d["png"] = png_b64(img)
    return lines[:3] + [canonical_json(d)] + lines[4:]


@pytest.mark.parametrize("which, edit, words", [
    ("log", _relabel, "signature does not verify"),
    ("log", lambda lines: lines[:7] + lines[8:], "hash chain breaks"),
    ("log", lambda lines: [lines[0], lines[1] + b" "] + lines[2:], "was edited"),
    ("log", lambda lines: lines + [b'{"seq":'], "not valid JSON"),
    ("log", lambda lines: [lines[0], lines[1].replace(b'"label":', b'"label":1,"label":')] + lines[2:], "duplicate key"),
    ("images", _repixel, "does not hash to its query hash"),
    ("images", lambda lines: lines[:3] + lines[4:], "lacks the image of"),
    ("images", lambda lines: [lines[0], lines[2], lines[1]] + lines[3:], "in another order"),
])
def test_a_tampered_log_or_images_file_is_refused_with_one_line(api, tmp_path, which, edit, words):
    paths = tampered_copy(api, tmp_path, which, edit)
    r = run("verify-extraction", "--model", api["ckpt"], "--api-mark", api["dir"] / "api-mark.json", "--log", paths["log"],
            "--images", paths["images"])
    one_line_error(r, words)


def test_verify_extraction_refuses_answers_the_mark_did_not_choose(api, tmp_path, owner_key):
    """A log signed with the right key still holds only what the keyed hash selects and derives."""
    mark = ApiMark.load(api["dir"] / "api-mark.json")
    queries = query_images(api["queries"])
    unpicked = next(im for im in queries if not mark.selects(canonical_image_bytes(im)))
    picked = next(im for im in queries if mark.selects(canonical_image_bytes(im)))
    wrong = (mark.label(canonical_image_bytes(picked)) + 1) % 10
    for name, im, label, words in [("unselected", unpicked, 0, "does not select this query"),
                                   ("relabelled", picked, wrong, "is not the one the api-mark derives")]:
        paths = (tmp_path / f"{name}.jsonl", tmp_path / f"{name}.images.jsonl")
        with ApiLog(*paths, mark) as log:
            log.record(sha256_hex(canonical_image_bytes(im)), label, im)
        r = run("verify-extraction", "--model", api["ckpt"], "--api-mark", api["dir"] / "api-mark.json", "--log", paths[0])
        one_line_error(r, words)
    other = tmp_path / "other-mark.json"
    ApiMark.generate(num_classes=10, owner_key=owner_key).save(other)
    r = run("verify-extraction", "--model", api["ckpt"], "--api-mark", other, "--log", api["log"])
    one_line_error(r, "belongs to api-mark")
    r = run("verify-extraction", "--model", api["ckpt"], "--api-mark", other, "--log", api["log"], "--head", "xyz")
    assert r.exit_code == 2 and "64 lowercase hex" in r.stderr


# -- the command line ---------------------------------------------------------------------

def test_api_keygen_and_serve_with_the_api_mark_in_a_subprocess(api, tmp_path):
    r = run("api-keygen", "--classes", 10, "--fraction", 0.5, "--out", tmp_path / "mark.json", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["owner_key_created"] and (tmp_path / "owner-key.pem").exists() and doc["fraction"] == 0.5
    one_line_error(run("api-keygen", "--classes", 10, "--out", tmp_path / "mark.json"), "already exists")
    r = run("serve", "--model", api["ckpt"], "--api-mark", tmp_path / "mark.json")
    assert r.exit_code == 2 and "go together" in r.stderr
    log = tmp_path / "served.jsonl"
    with serving("--model", api["ckpt"], "--api-mark", tmp_path / "mark.json", "--api-log", log, "--port", 0) as (line, proc):
        assert f"api-mark {doc['fingerprint'][:16]} on 0.5 of queries" in line
        answers = open_target(re.search(r"(http://\S+)", line).group(1)).predict(api["queries"][:40])
    mark = ApiMark.load(tmp_path / "mark.json")
    entries = read_api_log(log, mark).entries
    assert proc.returncode == 0 and f"{len(entries)} marked answers logged" in proc.rest
    assert 5 <= len(entries) <= 35 and (tmp_path / "served.images.jsonl").exists()
    r = run("verify-extraction", "--model", api["ckpt"], "--api-mark", tmp_path / "mark.json", "--log", log)
    assert r.exit_code == 1 and r.stdout.startswith("NOT VERIFIED") and f"{len(entries)} entries" in r.stdout
    assert len(answers) == 40


def test_info_describes_the_api_mark_and_the_log_without_the_secret(api, tmp_path):
    r = run("info", api["dir"] / "api-mark.json", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "api-mark (SECRET)" and doc["api_mark"] == api["mark"].fingerprint
    assert api["mark"].secret.hex() not in r.stdout  # info never shows the secret
    r = run("info", api["log"], "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    log = read_api_log(api["log"], api["mark"])
    assert doc["kind"] == "api-log" and doc["entries"] == len(log.entries) and doc["head"] == log.head
    paths = tampered_copy(api, tmp_path, "log", _relabel)  # checked against the header's own log key
    one_line_error(run("info", paths["log"]), "signature does not verify")
