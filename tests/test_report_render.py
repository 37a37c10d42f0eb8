"""The report for people: the HTML page in headless Chromium, the PDF read back as text, the chart's
numbers, the plain-language summary per verdict, determinism and escaping."""
import hashlib
import html
import io
import json
import math
import re
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.core.stats import binomial_tail, decide
from backmark.core.verify import verify
from backmark.crypto import OwnerKey
from backmark.errors import InvalidFile
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.protocols.report import load_report, make_report, write_report
from backmark.protocols.report_chart import null_chart
from backmark.protocols.report_claims import does_not_show, limitations, shows
from backmark.protocols.report_page import render_html
from backmark.protocols.report_pdf import FOOTER, render_pdf

from .conftest import KeyTarget

SHAPE, N = (1, 12, 12), 40
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]
FILE_INFO = {"name": "evidence/wm.safetensors", "sha256": "5e" * 32, "hashed": "file"}


@pytest.fixture(scope="module")
def keys():
    owner = OwnerKey.generate()
    mk, vk = keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=N, created="2026-01-01T00:00:00Z")
    return owner, mk, vk


@pytest.fixture(scope="module")
def marked(keys):
    owner, mk, vk = keys
    return make_report(verify(KeyTarget(mk), mk, vk), mk, vk, owner, model_info=FILE_INFO, seconds=0.5)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_page_says_what_was_tested_and_what_the_count_means(marked, keys):
    _owner, _mk, vk = keys
    page = render_html(marked)
    text = flat(html.unescape(re.sub(r"<[^>]+>", " ", page.split('<script type="application/json"')[0])))
    # 40 of 40 at p0 = 1/10: P[X >= 40] = 10^-40 exactly, said in words
    assert binomial_tail(N, N, Fraction(1, 10)) == Fraction(1, 10**40)
    assert ("If the model had never seen this key, the chance of matching 40 or more of the 40 labels would be "
            "about 1 in 10⁴⁰") in text
    assert f"carries the watermark of verification key {vk.fingerprint[:16]}" in text
    assert "file evidence/wm.safetensors (SHA-256 " + "5e" * 32 in text
    assert "What this shows. This model was trained with this key's secret trigger set" in text
    assert "What it does not show." in text and "Limitations" in text and "owner's machine clock" in text
    assert "backmark check-report REPORT.html --verification-key verification-key.json --model evidence/wm.safetensors" in text
    # the chart: one bar per count 0..40, the rejecting ones red, the threshold and the observed count marked
    t = decide(N, N, Fraction(1, 10)).threshold
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<rect") == N + 1 and svg.count('fill="#c0392b"/>') == N + 1 - t
    assert f"threshold: {t} or more" in svg and f"observed: {N}" in svg
    assert "http:" not in page and "https:" not in page and "url(" not in page  # self-contained
    assert page.count('src="data:image/png;base64,') == N


def test_the_chart_is_the_exact_binomial():
    c = null_chart(100, Fraction(1, 10), threshold=46, observed=100)
    assert c.log10_pmf[100] == pytest.approx(-100) and c.log10_tail == pytest.approx(-100)
    assert c.log10_pmf[10] == pytest.approx(math.log10(math.comb(100, 10) * 0.1**10 * 0.9**90))
    assert null_chart(5, Fraction(1), threshold=6, observed=5).log10_pmf == (None,) * 5 + (0.0,)  # p0 = 1: only n can happen


@pytest.mark.parametrize("kind", ["ownership", "calibrated", "white-box", "not-verified", "owner-chosen-labels", "weak-alpha"])
def test_every_verdict_kind_is_explained(marked, kind):
    doc = json.loads(json.dumps(marked))
    body = doc["body"]
    body["verdict"] = {"kind": kind, "text": kind.upper(), "claims_ownership": kind == "ownership"}
    if kind == "calibrated":
        body["null"] = {"kind": "calibrated", "p0": "3/20", "alpha_bound": 2.0**-65, "pooled_matches": 9, "pooled_trials": 80,
                        "references": [{"name": f"ref{i}.safetensors", "sha256": "ab" * 32, "matches": 4 + i, "n": N}
                                       for i in (0, 1)]}
    if kind == "white-box":
        body["view"] = {"kind": "white-box-head", "head_sha256": "cd" * 32, "bound": True,
                        "anchored_at": "2026-01-02T00:00:00Z", "suspect_seen_at": None, "release": {}}
    assert shows(body) and does_not_show(body) and limitations(body)
    page = flat(html.unescape(render_html(doc)))  # the whole page renders for every kind
    assert f'id="verdict">{kind.upper()}</p>' in page and "What it does not show." in page
    if kind == "calibrated":
        assert "2 reference models trained independently of the owner matched 9 of 80" in page and "ref1.safetensors" in page
    if kind == "white-box":
        assert "White-box view: the answers come from the model with the owner's head (SHA-256 " + "cd" * 32 in page
    body["verdict"]["kind"] = "something-new"
    with pytest.raises(ValueError, match="unknown verdict kind"):
        shows(body)


def test_weak_and_owner_chosen_verdicts_say_what_they_are(keys):
    owner, mk, vk = keys
    weak = make_report(verify(KeyTarget(mk), mk, vk, alpha=0.01, allow_weak_alpha=True), mk, vk, owner)
    text = flat(html.unescape(render_html(weak)))
    assert "PASSED AT A WEAK ALPHA" in text and "a level the claimant chose above the 2⁻⁶⁴ floor" in text
    chosen_mk, chosen_vk = keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=N, labels=[3] * N)
    chosen = make_report(verify(KeyTarget(chosen_mk), chosen_mk, chosen_vk), chosen_mk, chosen_vk, owner)
    text = flat(html.unescape(render_html(chosen)))
    assert "NOT EVIDENCE: OWNER-CHOSEN LABELS" in text and "trigger accuracy only: no p-value was computed" in text
    assert "<svg" not in text and "No chart: with owner-chosen labels" in text


def test_the_pdf_reads_back_with_the_verdict_the_fingerprint_and_the_recheck_command(marked, keys):
    _owner, _mk, vk = keys
    data = render_pdf(marked)
    assert data.startswith(b"%PDF") and render_pdf(marked) == data  # invariant: same document, same bytes
    text = pdf_text(data)
    assert "OWNERSHIP VERIFIED" in text and "about 1 in 10⁴⁰" in flat(text)
    assert vk.fingerprint in re.sub(r"\s+", "", text)  # the table wraps long hashes
    joined = flat(text.replace(" \\\n", " "))
    assert "backmark check-report REPORT.html --verification-key verification-key.json --model evidence/wm.safetensors" in joined
    assert flat(FOOTER) in flat(text) and re.search(r"Page 1 of [2-9]", text)
    from pypdf import PdfReader

    images = sum(len(p.images) for p in PdfReader(io.BytesIO(data)).pages)
    assert images == N  # every opened trigger image, as a thumbnail


def test_user_text_is_escaped_in_both_renderings(keys):
    owner, mk, vk = keys
    evil = "<b>x</b> & <font size=40>李</font>"
    doc = make_report(verify(KeyTarget(mk), mk, vk), mk, vk, owner, model_info={"name": evil, "sha256": None, "hashed": None})
    page = render_html(doc)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt; &amp; &lt;font size=40&gt;李" in page
    text = flat(pdf_text(render_pdf(doc)))
    assert "<b>x</b> & <font size=40>\\u674e</font>" in text  # literal, and the glyph DejaVu lacks as a visible escape


def test_a_malformed_record_is_one_clear_error_and_no_hang(marked, tmp_path):
    _j, h, _p = write_report(marked, tmp_path / "r")
    page = h.read_bytes()
    bad = json.loads(json.dumps(marked))
    bad["body"]["null"]["p0"] = "1/0"
    (tmp_path / "bad.html").write_text(f'<script type="application/json" id="backmark-report">{json.dumps(bad)}</script>')
    with pytest.raises(InvalidFile, match="malformed report"):
        load_report(tmp_path / "bad.html")
    huge = json.loads(json.dumps(marked))
    huge["body"]["decision"]["n"] = 10**7  # a forged count: drawn as no chart (check_report flags it), not computed
    assert "No chart" in render_html(huge)
    assert load_report(h) == marked and h.read_bytes() == page


def test_renders_are_byte_identical_across_processes(marked, tmp_path):
    (tmp_path / "doc.json").write_text(json.dumps(marked))
    code = ("import hashlib, json, sys; from backmark.protocols.report_page import render_html; "
            "from backmark.protocols.report_pdf import render_pdf; d = json.load(open(sys.argv[1])); "
            "print(hashlib.sha256(render_html(d).encode()).hexdigest(), hashlib.sha256(render_pdf(d)).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "doc.json")], capture_output=True, text=True, check=True,
                         timeout=120)
    here = (hashlib.sha256(render_html(marked).encode()).hexdigest(), hashlib.sha256(render_pdf(marked)).hexdigest())
    assert tuple(out.stdout.split()) == here


def _chromium(args, tmp_path):
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=120,
                          env={"HOME": str(profile), "PATH": "/usr/bin:/bin"}, check=False)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs Debian's chromium)")
def test_the_page_in_headless_chromium(marked, tmp_path):
    _j, h, _p = write_report(marked, tmp_path / "r")
    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1200,2400", h.resolve().as_uri()], tmp_path)
    assert r.returncode == 0 and shot.exists(), r.stderr[-500:]
    im = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert im.shape == (2400, 1200, 3)
    assert (im.min(axis=2) < 200).mean() > 0.05  # not blank: text, the chart, the images
    red = (abs(im - [0xc0, 0x39, 0x2b]).sum(axis=2) < 30).sum()
    blue = (abs(im - [0x2c, 0x6f, 0xbb]).sum(axis=2) < 30).sum()
    assert red > 500 and blue > 500, (red, blue)  # the chart's rejection region and null bars were drawn
    r = _chromium(["--dump-dom", h.resolve().as_uri()], tmp_path)
    dom = flat(r.stdout.decode())
    assert r.returncode == 0 and '<p class="verdict ok" id="verdict">OWNERSHIP VERIFIED</p>' in dom
    assert "the chance of matching 40 or more of the 40 labels would be about 1 in 10⁴⁰" in dom


def test_cli_writes_the_pdf_beside_and_check_report_refuses_it(tmp_path):
    owner = OwnerKey.generate()
    owner.save(tmp_path / "owner-key.pem")
    mk, vk = keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=N)
    mk.save(tmp_path / "marking-key.json")
    vk.save(tmp_path / "verification-key.json")
    model = create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE, seed=0)
    save_model(tmp_path / "m.safetensors", model, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE)})
    r = CliRunner()
    vk_file = str(tmp_path / "verification-key.json")
    res = r.invoke(main, ["verify", "--model", str(tmp_path / "m.safetensors"), "--marking-key",
                          str(tmp_path / "marking-key.json"), "--verification-key", vk_file, "--report", str(tmp_path / "rep")])
    assert res.exit_code == 1, res.output  # an untrained model: NOT VERIFIED, and the report says so in words
    assert f"{tmp_path / 'rep.pdf'} (the PDF is for people" in res.stdout
    text = flat(pdf_text((tmp_path / "rep.pdf").read_bytes()))
    assert "NOT VERIFIED" in text and "Nothing about ownership" in text
    res = r.invoke(main, ["check-report", str(tmp_path / "rep.pdf"), "--verification-key", vk_file])
    assert res.exit_code == 2 and "not a backmark report" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(60)
def test_a_remote_check_names_the_endpoint_and_the_audit_log_head(keys, tmp_path):
    from backmark.targets import TorchTarget, open_target
    from backmark.targets.client import RemoteOptions
    from backmark.targets.serve import BackgroundServer, V2App

    owner, mk, vk = keys
    with BackgroundServer(V2App(TorchTarget(KeyTarget(mk)), name="wm")) as srv:  # 127.0.0.1, a free port
        url = f"{srv.url}/v2/models/wm"
        result = verify(open_target(url, remote=RemoteOptions(timeout=5.0, audit_log=str(tmp_path / "audit.jsonl"))), mk, vk)
    doc = make_report(result, mk, vk, owner, model_info={"name": url, "sha256": None, "hashed": None})
    head = doc["body"]["query"]["queries"]["audit_head"]
    assert result.verified and len(head) == 64
    text = flat(html.unescape(re.sub(r"<[^>]+>", " ", render_html(doc))))
    assert f"the model served at {url} (" in text and f"The audit log (head {head}) records every request and answer" in text
    assert "not identified by a hash" in text
    recheck = re.search(r"backmark check-report [^\n<]*", render_html(doc)).group(0)
    assert "--model" not in recheck  # nothing to re-query offline: the audit log is the record of the answers


def test_named_parties_and_class_names_are_shown_when_the_record_has_them(marked):
    """The proposed optional body fields ``parties`` and ``classes``: shown as recorded; absent, the page says so."""
    text = flat(html.unescape(render_html(marked)))
    assert "which belongs to the holder of owner key" in text and "not named in this report" in text
    named = json.loads(json.dumps(marked))
    fmnist = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    named["body"].update(parties={"owner": "Example Vision Ltd", "verifier": "J. Analyst"}, classes=fmnist)
    text = flat(html.unescape(render_html(named)))
    el = named["body"]["elements"][0]
    assert "J. Analyst tested whether the model" in text and "which belongs to Example Vision Ltd." in text
    assert f"#0: label {el['label']} ({fmnist[el['label']]}), answer {el['prediction']} ({fmnist[el['prediction']]})" in text
    assert "0 T-shirt/top, 1 Trouser" in text
