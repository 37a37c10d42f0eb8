"""Ownership experiments: fresh keys, non-trivial ownership (no false claims), piracy."""
from fractions import Fraction

import pytest

from backmark.core.stats import binomial_tail
from backmark.experiments.ownership import fresh_keys, non_trivial_ownership, ownership_piracy
from backmark.experiments.workflow import new_model, train_file
from backmark.training import TrainConfig

from .conftest import MARK_CFG

CFG = TrainConfig(**MARK_CFG)


@pytest.fixture(scope="module")
def data(fmnist_2k):
    return fmnist_2k


@pytest.fixture(scope="module")
def models(tmp_path_factory, data, marked_fmnist):
    clean, _ = train_file(data=data, model_name="fmnist-cnn", cfg=CFG.replace(seed=7, epochs=1),
                          out=tmp_path_factory.mktemp("own") / "clean.safetensors", device="cpu")
    return marked_fmnist[0], clean


def test_fresh_keys_are_reproducible_independent_and_shaped_like_the_owners(small_keys):
    _, vk = small_keys
    a, b = fresh_keys(vk, 3, seed=5), fresh_keys(vk, 3, seed=5)
    assert [k[1].fingerprint for k in a] == [k[1].fingerprint for k in b]
    assert len({k[1].fingerprint for k in a}) == 3 and vk.fingerprint not in {k[1].fingerprint for k in a}
    assert fresh_keys(vk, 1, seed=6)[0][1].fingerprint != a[0][1].fingerprint
    for mk, fk in a:
        assert fk.input_shape == vk.input_shape and fk.num_classes == vk.num_classes and fk.size == vk.size
        assert fk.label_mode == "derived" and mk.verification_key_fingerprint == fk.fingerprint


@pytest.mark.slow
def test_no_false_claims_and_the_owner_still_verifies(models, small_keys, data):
    marked, clean = models
    untrained = new_model("fmnist-cnn", data, 99).eval()
    report = non_trivial_ownership(clean={"clean": clean, "untrained": untrained}, marked={"marked": marked}, keys=small_keys,
                                   fresh_keys_count=40, seed=1)
    assert report["null_tests"] == 2 + 40 + 2 * 40
    assert report["false_claims"] == 0 and report["min_null_p_value"] > 2**-64
    assert [r["verified"] for r in report["owner_key_vs_marked"]] == [True]
    tests = report["owner_key_vs_clean"] + report["fresh_keys_vs_marked"] + report["fresh_keys_vs_clean"]
    for r in tests:  # each p-value is the exact binomial tail of its own match count, at p0 = 1/10
        assert r["n"] == small_keys[1].size and r["p_value"] == float(binomial_tail(r["matches"], r["n"], Fraction(1, 10)))
    assert report["share_null_p_below_0.05"] == sum(r["p_value"] <= 0.05 for r in tests) / len(tests)


@pytest.mark.slow
def test_piracy_leaves_the_pirate_with_both_marks_and_the_owner_with_one(models, small_keys, data):
    marked, _ = models
    before = {k: v.clone() for k, v in marked.state_dict().items()}
    report = ownership_piracy(marked, data, small_keys, CFG.replace(lr=0.01, epochs=3, schedule="constant"), device="cpu")
    assert all((v == before[k]).all() for k, v in marked.state_dict().items())  # the owner's model is not touched
    verdict = {(r["model"], r["key"]): r["verified"] for r in report["matrix"]}
    assert verdict[("owner's model", "owner's key")] and not verdict[("owner's model", "pirate's key")]
    assert verdict[("pirate's model", "pirate's key")]
    assert report["resolved"] == verdict[("pirate's model", "owner's key")]
    assert 1 <= report["pirate_embedding"]["epochs"] <= 3
