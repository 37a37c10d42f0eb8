"""Margin hardening: the signed-gradient ascent, the mixer's hardened triggers, train/embed --hardening."""
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from backmark.core.mark import MarginHardening, TriggerMixer
from backmark.errors import InvalidBatch
from backmark.models import create_model
from backmark.training import TrainConfig, signed_gradient_ascent


def _net(seed=0):
    return create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), seed=seed)


def test_ascent_raises_the_loss_within_the_ball_and_leaves_the_model_alone():
    net = _net()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adv = signed_gradient_ascent(net, x, y, epsilon=0.1, steps=3)
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # BN stats unmoved
    assert all(p.grad is None for p in net.parameters())
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    net.eval()
    with torch.no_grad():
        assert F.cross_entropy(net(adv), y) > F.cross_entropy(net(x), y) + 0.1
    assert torch.equal(signed_gradient_ascent(net, x, y, epsilon=0.1, steps=0), x)


def test_hardened_mixer_appends_pushed_triggers_and_needs_the_model():
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(6)
    plain = TriggerMixer(images, labels, k=4, seed=2)
    hard = TriggerMixer(images, labels, k=4, seed=2, hardening=MarginHardening(epsilon=0.2, steps=2))
    x, y = torch.rand(3, 1, 28, 28, generator=g), torch.zeros(3, dtype=torch.long)
    with pytest.raises(InvalidBatch, match="model=model"):
        hard.mix(x, y)
    a, ya = plain.mix(x, y)
    b, yb = hard.mix(x, y, model=_net())
    assert torch.equal(ya, yb) and torch.equal(a[:3], b[:3])  # the same draws, the clean rows untouched
    moved = (b[3:] - a[3:]).abs().flatten(1).max(1).values
    assert (moved > 0.05).all() and (moved <= 0.2 + 1e-6).all()
    assert hard.mix(x, y, model=_net())[0].shape == (7, 1, 28, 28)


def test_a_normalising_mixer_perturbs_in_pixel_units():
    g = torch.Generator().manual_seed(2)
    images, labels = torch.rand(4, 1, 28, 28, generator=g), torch.arange(4)
    mean, std = 0.3, 0.25
    hard = TriggerMixer(images, labels, k=4, mean=mean, std=std, hardening=MarginHardening(epsilon=0.05, steps=1))
    x = (torch.rand(2, 1, 28, 28, generator=g) - mean) / std
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    out, y = hard.mix(x, torch.zeros(2, dtype=torch.long), model=net)
    pixels = out[2:] * std + mean
    order = y[2:]
    assert (pixels - images[order]).abs().max() <= 0.05 + 1e-5 and (pixels - images[order]).abs().max() > 0.04


def test_config_and_hardening_refuse_bad_values():
    assert MarginHardening.from_config(TrainConfig()) is None
    h = MarginHardening.from_config(TrainConfig(hardening="margin", margin_epsilon=0.2, margin_steps=4))
    assert h == MarginHardening(0.2, 4, None)
    for bad in ({"hardening": "adversarial"}, {"margin_epsilon": 0}, {"margin_steps": 0}, {"margin_step_size": -1.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError):
        MarginHardening(epsilon=2.0)
    with pytest.raises(ValueError, match="MarginHardening"):
        TriggerMixer(torch.rand(2, 1, 4, 4), torch.arange(2), hardening={"epsilon": 0.1})


@pytest.mark.slow
def test_cli_train_and_embed_record_the_hardening(tmp_path, small_keys):
    from backmark.cli import main
    from backmark.models.checkpoint import read_checkpoint

    mk, vk = small_keys
    mk.save(tmp_path / "marking-key.json")
    vk.save(tmp_path / "verification-key.json")
    run = CliRunner()
    common = ["--train-size", "600", "--test-size", "200", "--epochs", "1", "-q", "--device", "cpu"]
    def written(res):  # one epoch on 600 images: the watermark may not take (exit 1 with the warning, checkpoint kept)
        return res.exit_code == 0 or (res.exit_code == 1 and "warning:" in res.output and "Traceback" not in res.output)

    res = run.invoke(main, ["train", "--watermark", str(tmp_path / "marking-key.json"), "--out", str(tmp_path / "wm.safetensors"),
                            "--hardening", "margin", "--margin-epsilon", "0.15", "-k", "8", *common])
    assert written(res), res.output
    cfg = read_checkpoint(tmp_path / "wm.safetensors")[0]["config"]
    assert (cfg["hardening"], cfg["margin_epsilon"], cfg["margin_steps"]) == ("margin", 0.15, 3)
    res = run.invoke(main, ["embed", "--model", str(tmp_path / "wm.safetensors"), "--watermark", str(tmp_path / "marking-key.json"),
                            "--out", str(tmp_path / "pre.safetensors"), "--hardening", "margin", "--margin-steps", "2", "--json", *common])
    assert written(res), res.output
    assert json.loads(res.stdout)["out"].endswith("pre.safetensors")
    assert read_checkpoint(tmp_path / "pre.safetensors")[0]["config"]["margin_steps"] == 2
    for args, message in ((["--margin-epsilon", "0.1"], "go with --hardening margin"),
                          (["--hardening", "margin"], "give --watermark")):
        res = run.invoke(main, ["train", "--out", str(tmp_path / "x.safetensors"), *args, *common])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
