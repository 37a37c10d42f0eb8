"""PRETRAINED's stopping rule: stop once the watermark holds, or hold it N more epochs."""
import pytest

from backmark.core.mark import watermark_held
from backmark.training import EpochStats


def _run(rule, trigger_accs):
    """The epochs a training run with these per-epoch trigger accuracies would spend."""
    for epoch, acc in enumerate(trigger_accs, 1):
        if rule(EpochStats(epoch=epoch, train_loss=0.1, test_acc=0.9, trigger_acc=acc, seconds=1.0, lr=0.01)):
            return epoch
    return len(trigger_accs)


def test_stops_as_soon_as_the_watermark_holds():
    assert _run(watermark_held(1.0), [0.3, 0.9, 1.0, 1.0, 1.0]) == 3
    assert _run(watermark_held(0.9), [0.3, 0.9, 1.0]) == 2
    assert _run(watermark_held(1.0), [0.3, 0.9, 0.99]) == 3  # never held: the epoch cap ends it


def test_hold_keeps_training_after_the_watermark_holds():
    assert _run(watermark_held(1.0, hold=2), [0.3, 1.0, 1.0, 1.0, 1.0, 1.0]) == 4
    # an epoch that dips below does not count towards the hold
    assert _run(watermark_held(1.0, hold=2), [1.0, 0.98, 1.0, 1.0, 1.0]) == 4
    assert _run(watermark_held(1.0, hold=1), [None, 1.0, 1.0]) == 3  # no trigger score: not held


# -- short epochs (TrainConfig.epoch_steps): PRETRAINED can stop within one pass -----------------

class StepCounter:
    def __init__(self):
        self.steps = []

    def start_epoch(self, epoch, epochs, steps):
        self.steps.append(0)

    def step(self, loss):
        self.steps[-1] += 1

    def end_epoch(self, stats):
        pass


def test_short_epochs_let_pretrained_stop_within_a_pass(fmnist_2k, small_keys):
    import torch

    from backmark.core.mark import mark_pretrained
    from backmark.experiments.workflow import new_model
    from backmark.training import TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: kind to a shared machine
    try:
        model = new_model("fmnist-cnn", fmnist_2k, seed=0)
        counter = StepCounter()
        cfg = TrainConfig(epochs=30, batch_size=32, lr=0.05, schedule="constant", trigger_k=30, epoch_steps=4)
        history = mark_pretrained(model, fmnist_2k, small_keys[0], cfg, reporter=counter, device="cpu")
    finally:
        torch.set_num_threads(threads)
    one_pass = -(-len(fmnist_2k.train_y) // cfg.batch_size)  # 63 steps
    assert history[-1].trigger_acc == 1.0 and len(history) < 30  # stopped by the rule, not the cap
    assert counter.steps == [4] * len(history) and 4 * len(history) < one_pass
    assert all(h.trigger_acc < 1.0 for h in history[:-1])  # checked after every short epoch


def test_epoch_steps_options():
    import dataclasses

    import pytest

    from backmark.attacks.base import CleanTraining
    from backmark.cli.common import train_config
    from backmark.training import TrainConfig

    base = TrainConfig(epoch_steps=10)
    opts = dict.fromkeys(["epochs", "batch_size", "lr", "optimizer", "schedule", "augment", "trigger_k", "precision",
                          "hardening", "margin_epsilon", "margin_steps", "margin_step_size"])
    opts["compile_mode"] = None
    assert train_config(base, {**opts, "seed": 0, "epoch_steps": None}).epoch_steps == 10  # the recipe's
    assert train_config(base, {**opts, "seed": 0, "epoch_steps": 25}).epoch_steps == 25
    assert train_config(base, {**opts, "seed": 0, "epoch_steps": 0}).epoch_steps is None  # one whole pass
    with pytest.raises(ValueError, match="epoch_steps"):
        dataclasses.replace(base, epoch_steps=-1)
    # an attack on a PRETRAINED model trains whole passes, not the embedding's short epochs
    assert CleanTraining().train_config(TrainConfig(epoch_steps=10, trigger_k=32), epochs=3).epoch_steps is None


def test_frozen_batchnorm_keeps_the_running_statistics(fmnist_2k, small_keys):
    import torch

    from backmark.core.mark import TriggerMixer
    from backmark.experiments.workflow import new_model
    from backmark.training import TrainConfig, train

    data = fmnist_2k.subset(256, seed=0, test_size=64)
    for bn_stats, moved in (("batch", True), ("frozen", False)):
        model = new_model("fmnist-cnn", data, seed=0)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        before = [(m.running_mean.clone(), m.running_var.clone(), m.weight.detach().clone()) for m in bns]
        cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, trigger_k=8, bn_stats=bn_stats)
        train(model, data, cfg, mixer=TriggerMixer.from_key(small_keys[0], k=8), device="cpu")
        after = [(m.running_mean, m.running_var, m.weight.detach()) for m in bns]
        same_stats = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(before, after))
        assert same_stats != moved, bn_stats
        assert not all(torch.equal(a[2], b[2]) for a, b in zip(before, after))  # the affine weights train either way
        assert all(m.training is False for m in bns)  # train() leaves the model in eval mode


def test_cooldown_after_the_stopping_rule(fmnist_2k):
    """Once stop_when fires, cooldown_steps more steps run at a learning rate falling linearly to 0, then training stops."""
    from backmark.experiments.workflow import new_model
    from backmark.training import TrainConfig, train

    data = fmnist_2k.subset(512, seed=0, test_size=64)
    model = new_model("fmnist-cnn", data, seed=0)
    cfg = TrainConfig(epochs=20, batch_size=32, lr=0.04, schedule="constant", trigger_k=0, epoch_steps=3, cooldown_steps=4)
    counter = StepCounter()
    history = train(model, data, cfg, stop_when=lambda s: s.epoch == 2, reporter=counter, device="cpu")
    # 2 epochs of 3 steps at 0.04, then 4 cool-down steps (a short epoch of 3, then 1) at 0.04 x 4/5, 3/5, 2/5, 1/5
    assert counter.steps == [3, 3, 3, 1] and [h.epoch for h in history] == [1, 2, 3, 4]
    assert [h.lr for h in history] == pytest.approx([0.04, 0.04, 0.016, 0.008])  # each epoch's last step
    model = new_model("fmnist-cnn", data, seed=0)
    history = train(model, data, cfg.replace(epochs=3), stop_when=lambda s: s.epoch == 2, device="cpu")
    assert len(history) == 3  # the epoch cap bounds the cool-down too


def test_layers_choose_what_trains(fmnist_2k):
    import torch
    from click.testing import CliRunner

    from backmark.cli import main
    from backmark.experiments.workflow import new_model
    from backmark.training import TrainConfig, train

    data = fmnist_2k.subset(256, seed=0, test_size=64)
    model = new_model("fmnist-cnn", data, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, data, TrainConfig(epochs=1, batch_size=64, layers="last:2"), device="cpu")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k]) and "running" not in k and "num_batches" not in k}
    assert changed == {"hidden.1.weight", "hidden.1.bias", "fc.weight", "fc.bias"}
    assert all(p.requires_grad for p in model.parameters())  # the frozen ones are given back
    with pytest.raises(ValueError, match="'all' or 'last:N'"):
        TrainConfig(layers="head")
    args = ["embed", "--model", "x.safetensors", "--watermark", "mk.json", "--out", "o.safetensors", "--layers", "first"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "'all' or 'last:N'" in r.stderr and "Traceback" not in r.stderr


def test_short_epochs_score_part_of_the_test_set_and_the_last_epoch_all_of_it(fmnist_small, small_keys, monkeypatch):
    from backmark.core.mark import mark_pretrained
    from backmark.experiments.workflow import new_model
    from backmark.training import TrainConfig, accuracy, loop

    monkeypatch.setattr(loop, "SHORT_EPOCH_TEST_IMAGES", 300)
    data = fmnist_small.subset(1000, seed=0, test_size=1200)
    scored = []
    real = loop._accuracy
    monkeypatch.setattr(loop, "_accuracy", lambda model, x, y, ctx: scored.append(len(y)) or real(model, x, y, ctx))
    model = new_model("fmnist-cnn", data, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="constant", trigger_k=8, epoch_steps=2)
    history = mark_pretrained(model, data, small_keys[0], cfg, until=1.01, device="cpu")  # never held: every epoch runs
    assert len(history) == 3
    n_triggers = len(small_keys[0].labels)
    assert [n for n in scored if n != n_triggers] == [300, 300, 300, 1200]  # the last epoch again, on all 1200
    assert history[-1].test_acc == accuracy(model, data.test_x, data.test_y)
