"""Heldout (in-distribution) triggers: drawn by the key's seed from the training split, recorded
in the marking key, left out of every training batch; and the exact null with such keys."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from backmark.core.keygen import MarkingKey, keygen
from backmark.core.triggers import exclude_triggers, heldout_indices
from backmark.errors import DataError, InvalidKey
from backmark.experiments.ownership import fresh_keys
from backmark.experiments.workflow import train_file
from backmark.training import TrainConfig

from .conftest import MARK_CFG


@pytest.fixture(scope="module")
def heldout_keys(owner_key, fmnist_2k):
    return keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner_key, set_size=30, dataset="fashion-mnist",
                  heldout_from=fmnist_2k.train_x, created="2026-01-01T00:00:00Z")


def test_indices_are_drawn_by_the_seed_distinct_and_in_range():
    a = heldout_indices(b"\x01" * 32, 50, 60)
    assert a == heldout_indices(b"\x01" * 32, 50, 60) and len(set(a)) == 50 and all(0 <= i < 60 for i in a)
    assert a != heldout_indices(b"\x02" * 32, 50, 60)
    assert sorted(heldout_indices(b"\x01" * 32, 60, 60)) == list(range(60))  # the whole split, each once
    with pytest.raises(DataError, match="cannot draw 61"):
        heldout_indices(b"\x01" * 32, 61, 60)


def test_the_key_records_which_training_images_are_the_triggers(heldout_keys, fmnist_2k, tmp_path):
    mk, vk = heldout_keys
    src = mk.source
    assert src["kind"] == "heldout" and src["dataset"] == "fashion-mnist" and src["split_size"] == len(fmnist_2k.train_y)
    assert src["indices"] == heldout_indices(mk.master_seed, 30, len(fmnist_2k.train_y))
    assert np.array_equal(mk.images, fmnist_2k.train_x[src["indices"]].permute(0, 2, 3, 1).numpy())
    assert vk.label_mode == "derived" and list(mk.labels) == vk.derived_labels  # labels from the hash, not the classes
    mk.save(tmp_path / "mk.json")
    assert MarkingKey.load(tmp_path / "mk.json").source == src
    with pytest.raises(ValueError, match="derived"):
        keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=None, set_size=3, labels=[0, 1, 2], heldout_from=fmnist_2k.train_x)


def test_a_marking_key_with_a_malformed_heldout_source_is_refused(heldout_keys, tmp_path):
    from backmark.crypto import canonical_json, sha256_hex
    from backmark.io.documents import write_json

    mk, _ = heldout_keys
    doc = mk.to_document()
    for bad in ({**mk.source, "indices": mk.source["indices"][:-1]}, {**mk.source, "indices": [0] * 30},
                {**mk.source, "indices": [10**9] * 30}, {"kind": "heldout"}):
        body = {**doc["body"], "source": bad}
        write_json(tmp_path / "bad.json", {**doc, "body": body, "body_sha256": sha256_hex(canonical_json(body))}, force=True)
        with pytest.raises(InvalidKey, match="source"):
            MarkingKey.load(tmp_path / "bad.json")


def test_exclusion_drops_the_triggers_and_their_duplicates(heldout_keys, fmnist_2k):
    mk, _ = heldout_keys
    kept, dropped = exclude_triggers(fmnist_2k, mk.images)
    assert dropped == 30 and len(kept.train_y) == len(fmnist_2k.train_y) - 30
    twice = type(fmnist_2k)(**{**fmnist_2k.__dict__, "train_x": torch.cat([fmnist_2k.train_x, fmnist_2k.train_x[:5]]),
                               "train_y": torch.cat([fmnist_2k.train_y, fmnist_2k.train_y[:5]])})
    wanted = twice.train_x[:5].permute(0, 2, 3, 1).numpy()
    assert exclude_triggers(twice, wanted)[1] == 10  # each of 5 images is there twice
    assert exclude_triggers(kept, mk.images)[1] == 0 and exclude_triggers(kept, mk.images)[0] is kept


def test_a_heldout_image_is_never_in_a_training_batch(heldout_keys, fmnist_2k, tmp_path, monkeypatch):
    import backmark.models.registry as registry

    mk, vk = heldout_keys
    wanted = {im.tobytes() for im in mk.images}
    seen = {"clean": 0, "trigger": 0, "batches": 0}
    k = 8
    build = registry.create_model

    def spying(*a, **kw):  # every training forward pass: the clean rows first, the k triggers appended last
        model = build(*a, **kw)

        def look(module, inputs):
            x = inputs[0]
            if module.training and len(x) > k:
                rows = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
                seen["batches"] += 1
                seen["clean"] += sum(r.tobytes() in wanted for r in rows[:-k])
                seen["trigger"] += sum(r.tobytes() in wanted for r in rows[-k:])
        model.register_forward_pre_hook(look)
        return model

    monkeypatch.setattr("backmark.experiments.workflow.create_model", spying)
    said = []
    cfg = TrainConfig(**{**MARK_CFG, "epochs": 1, "trigger_k": k, "channels_last": False})
    _, history = train_file(data=fmnist_2k, model_name="fmnist-cnn", cfg=cfg, out=tmp_path / "m.safetensors", keys=(mk, vk),
                            device="cpu", say=said.append)
    assert seen["batches"] == len(history) * -(-(len(fmnist_2k.train_y) - 30) // cfg.batch_size)
    assert seen["clean"] == 0 and seen["trigger"] == seen["batches"] * k  # the triggers come only as triggers
    assert said and "30 image(s)" in said[0]
    from backmark.models.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "m.safetensors")[0]["excluded_trigger_images"] == 30


def test_cli_keygen_heldout_and_its_refusals(tmp_path):
    from backmark.cli import main

    run = CliRunner()
    res = run.invoke(main, ["keygen", "--source", "heldout", "--dataset", "fashion-mnist", "--size", "20", "--sets", "2",
                            "--out", str(tmp_path / "k"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["source"] == "heldout"
    mk = MarkingKey.load(tmp_path / "k" / "marking-key.json")
    assert mk.size == 40 and mk.source["split_size"] == 60000 and len(set(mk.source["indices"])) == 40
    for args, message in (
        (["--labels", str(tmp_path / "labels.txt")], "derived labels"),
        (["--input-shape", "1x28x28", "--classes", "10"], "give --dataset"),
    ):
        res = run.invoke(main, ["keygen", "--source", "heldout", "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    res = run.invoke(main, ["keygen", "--data-dir", str(tmp_path), "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "--data-dir goes with --source heldout" in res.output


@pytest.mark.slow
def test_200_fresh_keys_heldout_included_make_no_false_claim(fmnist_2k, marked_fmnist, owner_key, tmp_path):
    """The derived-label null is exact for any images: fresh keys, half of them drawn from the very
    training images an independent model classifies well, match it at the rate 1/|L| and never verify."""
    from backmark.core.verify import verify

    clean, _ = train_file(data=fmnist_2k, model_name="fmnist-cnn", cfg=TrainConfig(**{**MARK_CFG, "epochs": 1, "seed": 11}),
                          out=tmp_path / "clean.safetensors", device="cpu")
    _, like = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner_key, set_size=100)
    keys = fresh_keys(like, 100, seed=3) + fresh_keys(like, 100, seed=4, heldout_from=fmnist_2k.train_x, dataset="fashion-mnist")
    assert sum(k[0].source.get("kind") == "heldout" for k in keys) == 100
    models = {"clean": clean, "marked with another key": marked_fmnist[0]}
    rates = {}
    for name, model in models.items():
        for kind, subset in (("abstract", keys[:100]), ("heldout", keys[100:])):
            results = [verify(model, mk, vk) for mk, vk in subset]
            assert not any(r.verified for r in results), f"a false claim on {name} with a {kind} key"
            rates[name, kind] = sum(r.decision.matches for r in results) / (100 * 100)
    # an accurate model answers the heldout images' TRUE classes; the derived labels ignore them: 1/10 of matches
    assert abs(rates["clean", "heldout"] - 0.1) < 0.015, rates

