"""Public claims: the Fiat-Shamir challenge, checks anyone can run, and a cheating owner caught at the predicted rate."""
import hashlib
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import keygen
from backmark.core.stats import binomial_tail
from backmark.core.triggers import abstract_images, generator_seed, render_abstract
from backmark.crypto import OwnerKey, canonical_json
from backmark.errors import BackmarkError, InvalidConfig
from backmark.io.documents import dumps_json
from backmark.protocols.public import (
    challenge,
    check_public_claim,
    claim_parameters,
    escape_probability,
    public_claim,
    soundness_error,
)
from backmark.targets import describe

from .conftest import KeyTarget

SHAPE = (1, 12, 12)



@pytest.fixture(scope="module")
def owner():
    return OwnerKey.generate()


@pytest.fixture(scope="module")
def honest(owner):
    """4n elements with n = 50."""
    return keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=50, num_sets=4, created="2026-01-01T00:00:00Z")


def test_challenge_is_half_and_fixed_by_the_key(honest):
    _, vk = honest
    e = challenge(vk.fingerprint, 200)
    assert len(e) == 100 == len(set(e)) and e == sorted(e) and all(0 <= i < 200 for i in e)
    assert challenge(vk.fingerprint, 200) == e
    assert challenge(vk.fingerprint, 200, extra=b"poseidon") != e
    assert challenge(hashlib.sha256(b"other").hexdigest(), 200) != e


def test_honest_claim_checks_out(honest, owner):
    mk, vk = honest
    model = KeyTarget(mk)
    claim = public_claim(mk, vk, owner, model_info=describe(model))
    body = claim["body"]
    assert [el["index"] for el in body["elements"]] == challenge(vk.fingerprint, 200)
    chk = check_public_claim(claim, vk)
    assert chk.valid and chk.checked == ["challenge", "openings"], chk.problems
    assert chk.parameters.unopened_threshold == body["parameters"]["unopened_threshold"]
    marked = check_public_claim(claim, vk, model=model)
    assert marked.verified and marked.decision.matches == 100 and marked.verdict.kind == "ownership"
    # a claim is about the model it names: on any other model it is refused, whatever that model answers
    clean = KeyTarget(mk, answer_labels=False)
    other = check_public_claim(claim, vk, model=clean)
    assert not other.valid and not other.verified and "not this one" in other.problems[0]
    clean_claim = public_claim(mk, vk, owner, model_info=describe(clean))
    chk = check_public_claim(clean_claim, vk, model=clean)
    assert chk.valid and not chk.verified and chk.verdict.kind == "not-verified"
    with pytest.raises(InvalidConfig, match="about one model"):
        public_claim(mk, vk, owner)
    # the secret half is not in the claim
    opened = {el["index"] for el in body["elements"]}
    text = json.dumps(claim)
    assert all(mk.opening(i)["image_nonce"].hex() not in text for i in range(200) if i not in opened)


def test_tampered_or_misdirected_claim_is_invalid(honest, owner):
    mk, vk = honest
    claim = public_claim(mk, vk, owner, model_info=describe(KeyTarget(mk)))
    edited = json.loads(json.dumps(claim))
    edited["body"]["elements"][0]["label"] = (edited["body"]["elements"][0]["label"] + 1) % 10
    assert "signature" in check_public_claim(edited, vk).problems[0]
    # the owner opens a half of their choosing instead of the challenge: refused
    resigned = json.loads(json.dumps(claim))
    resigned["body"]["challenge"]["opened"] = list(range(100))
    resigned["signature"] = owner.sign(canonical_json(resigned["body"])).hex()
    assert "Fiat-Shamir" in check_public_claim(resigned, vk).problems[0]


def _cheating_key(owner, trial: int, total: int, fakes: list[int]):
    """A key whose elements at ``fakes`` are not generator outputs (here: flat grey images,
    standing for images any model would match); the rest are genuine."""
    seed = hashlib.sha256(b"cheater" + trial.to_bytes(4, "big")).digest()
    images = abstract_images(generator_seed(seed), total, (1, 6, 6))
    images[fakes] = 128
    return keygen(input_shape=(1, 6, 6), num_classes=10, owner_key=owner, set_size=total, master_seed=seed,
                  images=images, created="2026-01-01T00:00:00Z")


@pytest.mark.parametrize("fakes", [[0], [1, 4, 6]])
def test_cheating_owner_caught_at_predicted_rate_full_checks(owner, fakes):
    """Whole path: key, claim the cheater signs, public check. 300 keys (each a fresh challenge)."""
    total, trials = 8, 300
    caught = 0
    for t in range(trials):
        mk, vk = _cheating_key(owner, t, total, fakes)
        model = KeyTarget(mk)
        claim = public_claim(mk, vk, owner, target=0.25, check_images=False, allow_weak_alpha=True, model_info=describe(model))
        chk = check_public_claim(claim, vk, model=model)
        assert chk.verdict is None or not chk.verified  # a weak target is never ownership evidence
        opened_fakes = set(fakes) & set(claim["body"]["challenge"]["opened"])
        assert set(chk.invalid_elements) == opened_fakes  # exactly the opened fakes are flagged
        assert all("not an abstract trigger" in p for p in chk.problems)
        caught += not chk.valid
    escape = float(escape_probability(total, total // 2, len(fakes)))  # 1/2 for one fake, 1/14 for three
    sigma = math.sqrt(escape * (1 - escape) / trials)
    assert abs((trials - caught) / trials - escape) < 4 * sigma


def test_cheating_owner_caught_at_predicted_rate_many_challenges():
    """At the level of openings: 20000 challenges, 3 fakes among 40."""
    total, fakes, trials = 40, {0, 1, 2}, 20000
    escaped = sum(not (fakes & set(challenge(hashlib.sha256(k.to_bytes(4, "big")).hexdigest(), total))) for k in range(trials))
    p = float(escape_probability(total, 20, 3))
    assert p == pytest.approx(20 * 19 * 18 / (40 * 39 * 38))
    assert abs(escaped / trials - p) < 4 * math.sqrt(p * (1 - p) / trials)


def test_soundness_analysis_numbers():
    # exact escape probability = hypergeometric P[no fake opened]
    from scipy.stats import hypergeom

    for n_total, f in ((400, 10), (40, 3), (8, 4)):
        assert float(escape_probability(n_total, n_total // 2, f)) == pytest.approx(hypergeom(n_total, f, n_total // 2).pmf(0))
    # the pruned maximum equals the brute-force maximum over every f
    p0 = Fraction(1, 10)
    for n_total, t in ((40, 9), (60, 12)):
        u = n_total - n_total // 2
        brute = max(escape_probability(n_total, n_total // 2, f) * binomial_tail(t - f, u - f, p0) for f in range(u + 1))
        assert soundness_error(n_total, n_total // 2, t, p0)[0] == brute
    # the default: 4n = 400 elements, |L| = 10, 2^-64 (docs/public-verification.md)
    p = claim_parameters(400, 10)
    assert (p.opened, p.open_threshold, p.unopened_threshold, p.worst_fakes) == (200, 68, 78, 43)
    assert p.soundness_log2 <= -64
    assert soundness_error(400, 200, 77, p0)[0] > Fraction(1, 2**64)  # 77 would not do
    with pytest.raises(BackmarkError, match="too few"):
        claim_parameters(40, 10)


def test_cli_public_claim_and_check(tmp_path, owner):
    from backmark.models import create_model
    from backmark.models.checkpoint import save_model

    mk, vk = keygen(input_shape=SHAPE, num_classes=10, owner_key=owner, set_size=100, num_sets=2)
    owner.save(tmp_path / "owner-key.pem")
    mk.save(tmp_path / "marking-key.json")
    vk.save(tmp_path / "verification-key.json")
    torch.manual_seed(0)
    save_model(tmp_path / "m.safetensors", create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE),
               {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE)})
    r = CliRunner()
    res = r.invoke(main, ["public-claim", "--marking-key", str(tmp_path / "marking-key.json"), "--verification-key",
                          str(tmp_path / "verification-key.json"), "--out", str(tmp_path / "claim.json"),
                          "--model", str(tmp_path / "m.safetensors")])
    assert res.exit_code == 0, res.output
    assert "100 of 200 elements opened" in res.stdout
    res = r.invoke(main, ["check-claim", str(tmp_path / "claim.json"), "--verification-key", str(tmp_path / "verification-key.json"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["valid"]
    res = r.invoke(main, ["check-claim", str(tmp_path / "claim.json"), "--verification-key", str(tmp_path / "verification-key.json"),
                          "--model", str(tmp_path / "m.safetensors")])
    assert res.exit_code == 1 and "NOT VERIFIED on the opened half" in res.stdout  # untrained model
    save_model(tmp_path / "other.safetensors", create_model("fmnist-cnn", num_classes=10, input_shape=SHAPE, seed=1),
               {"model": "fmnist-cnn", "num_classes": 10, "input_shape": list(SHAPE)})
    res = r.invoke(main, ["check-claim", str(tmp_path / "claim.json"), "--verification-key", str(tmp_path / "verification-key.json"),
                          "--model", str(tmp_path / "other.safetensors")])
    assert res.exit_code == 1 and "not this one" in res.stdout  # a claim made for one model, shown for another
    doc = json.loads((tmp_path / "claim.json").read_text())
    doc["body"]["elements"][3]["image_seed"] = "00" * 32
    (tmp_path / "bad.json").write_bytes(dumps_json(doc))  # written as backmark writes: the file is read, the claim refused
    res = r.invoke(main, ["check-claim", str(tmp_path / "bad.json"), "--verification-key", str(tmp_path / "verification-key.json")])
    assert res.exit_code == 1 and "CLAIM INVALID" in res.stdout
    (tmp_path / "bad.json").write_text(json.dumps(doc))  # another spelling of the JSON: not a claim file at all
    res = r.invoke(main, ["check-claim", str(tmp_path / "bad.json"), "--verification-key",
                          str(tmp_path / "verification-key.json")])
    assert res.exit_code == 2 and "canonical form" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_generator_seed_reveals_one_image(honest):
    from backmark.protocols.public import element_seed

    mk, _ = honest
    for i in (0, 77, 199):
        assert np.array_equal(render_abstract(element_seed(mk, i), SHAPE), mk.images[i])
