"""Ownership experiments: fresh keys, non-trivial ownership (no false claims), piracy."""
import pytest

from backmark.ownership import fresh_keys, non_trivial_ownership, ownership_piracy
from backmark.train import TrainConfig
from backmark.workflow import new_model, train_file

CFG = TrainConfig(epochs=2, batch_size=128, lr=0.05, trigger_k=64)


@pytest.fixture(scope="module")
def data(fmnist_small):
    return fmnist_small.subset(2000, seed=1, test_size=400)


@pytest.fixture(scope="module")
def models(tmp_path_factory, data, small_keys):
    d = tmp_path_factory.mktemp("own")
    marked, _ = train_file(data=data, model_name="fmnist-cnn", cfg=CFG, out=d / "wm.safetensors", keys=small_keys, device="cpu")
    clean, _ = train_file(data=data, model_name="fmnist-cnn", cfg=CFG.replace(seed=7, epochs=1), out=d / "clean.safetensors", device="cpu")
    return marked, clean


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
    assert all(0 <= r["p_value"] <= 1 and r["n"] == small_keys[1].size for r in report["fresh_keys_vs_marked"])
    assert 0 <= report["share_null_p_below_0.05"] <= 1


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
