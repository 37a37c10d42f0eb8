"""train/embed into files: a watermark that did not take is said (exit 1), and a saved run is never
silently changed (--resume with other options) or discarded (a rerun without --resume)."""
import json

import pytest
from safetensors import safe_open

from .test_cli import run

QUICK = ["--dataset", "fashion-mnist", "--train-size", "300", "--test-size", "100", "-q"]


def meta_of(path):
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["backmark"])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf")
    code, _, err = run("keygen", "--dataset", "fashion-mnist", "--out", d, "--size", "30")
    assert code == 0, err
    return d


def test_a_watermark_that_did_not_take_warns_and_exits_1(keys, tmp_path):
    mk = keys / "marking-key.json"
    code, out, err = run("train", *QUICK, "--epochs", "1", "-k", "1", "--watermark", mk, "--out", tmp_path / "weak.safetensors")
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the watermark did not take"), err
    assert "needs 83%" in err and "--epochs" in err and "-k, now 1" in err and "--lr" in err  # 25 of 30 at alpha 2^-64
    assert out.startswith("wrote ")  # nothing is lost: the checkpoint is written
    w = meta_of(tmp_path / "weak.safetensors")["watermark"]
    assert w["held"] is False and w["trigger_acc"] < w["needed"] == 25 / 30
    code, _, err = run("train", *QUICK, "--epochs", "1", "--out", tmp_path / "clean.safetensors")
    assert code == 0, err  # NO-WM: no watermark to take, no warning
    code, out, err = run("embed", *QUICK, "--model", tmp_path / "clean.safetensors", "--watermark", mk, "--epochs", "1",
                         "-k", "1", "--out", tmp_path / "embedded.safetensors", "--json")
    assert code == 1 and "epoch cap (1)" in err and "--until 1 --hold N" in err, err
    assert json.loads(out)["warning"] in err


@pytest.fixture
def crashed(tmp_path):
    """A NO-WM run as `train QUICK --epochs 2 --out OUT` makes it, interrupted after its first epoch: OUT.state is left."""
    from backmark.data import load_dataset
    from backmark.experiments.workflow import state_path_for, train_file
    from backmark.training.recipes import recipe_for

    class Crash(Exception):
        pass

    class Stop:
        def start_epoch(self, epoch, epochs, steps):
            if epoch == 2:
                raise Crash

        def step(self, loss):
            pass

        def end_epoch(self, stats):
            pass

    out = tmp_path / "m.safetensors"
    recipe = recipe_for("fashion-mnist")
    data = load_dataset("fashion-mnist", None, train_size=300, test_size=100, seed=0)
    with pytest.raises(Crash):
        train_file(data=data, model_name=recipe.model, cfg=recipe.train.replace(epochs=2), out=out, reporter=Stop())
    assert state_path_for(out).exists() and not out.exists()
    return out


def test_resume_refuses_a_changed_config(crashed):
    code, _, err = run("train", *QUICK, "--epochs", "2", "--lr", "0.1", "--out", crashed, "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--resume" in err and "lr 0.05 -> 0.1" in err and "epochs" not in err, err
    code, _, err = run("train", *QUICK, "--epochs", "3", "--train-size", "400", "--out", crashed, "--resume")
    assert code == 2 and "epochs 2 -> 3" in err and "train_size 300 -> 400" in err, err
    code, out, err = run("train", *QUICK, "--epochs", "2", "--out", crashed, "--resume", "--json")
    assert code == 0, err  # the same run continues
    assert [h["epoch"] for h in json.loads(out)["history"]] == [1, 2]


def test_a_saved_state_is_never_discarded_without_force(crashed):
    from backmark.experiments.workflow import state_path_for

    code, _, err = run("train", *QUICK, "--epochs", "2", "--out", crashed)
    assert code == 2 and "pass --resume to continue it, or --force to start afresh" in err, err
    assert state_path_for(crashed).exists() and not crashed.exists()
    code, _, err = run("train", *QUICK, "--epochs", "1", "--out", crashed, "--force")
    assert code == 0, err  # --force: the state is deleted and a fresh run made
    assert crashed.exists() and not state_path_for(crashed).exists()


def test_embed_defaults_are_the_pretrained_sweeps_best(keys, tmp_path):
    """`embed` with no recipe options fine-tunes with the cheapest recipe of docs/results/pretrained-sweep.md."""
    from backmark.training.recipes import recipe_for

    best = recipe_for("fashion-mnist").embed
    assert (best.trigger_k, best.lr, best.layers, best.epoch_steps, best.schedule, best.batch_size) == (
        24, 0.01, "last:2", 10, "constant", 128)
    assert (best.bn_stats, best.cooldown_steps) == ("batch", 0)
    code, _, err = run("train", *QUICK, "--epochs", "1", "--out", tmp_path / "clean.safetensors")
    assert code == 0, err
    code, out, err = run("embed", *QUICK, "--model", tmp_path / "clean.safetensors", "--watermark", keys / "marking-key.json",
                         "--epochs", "1", "--out", tmp_path / "embedded.safetensors", "--json")
    assert code in (0, 1), err  # one short epoch: the watermark may not take, the recipe is what is checked
    assert meta_of(tmp_path / "embedded.safetensors")["config"] == best.replace(epochs=1).to_dict()


def test_attacks_on_a_pretrained_victim_spend_the_epochs_of_its_training(keys, tmp_path, monkeypatch):
    """The paper's budget, "the victim's epochs", is its training's (recorded by embed), never the embedding's cap
    (100 short epochs of 10 steps); where only a recipe in short epochs is recorded, the CLI asks for --epochs."""
    import dataclasses

    from backmark.attacks import base
    from backmark.training import TrainConfig

    clean, embedded = tmp_path / "clean.safetensors", tmp_path / "embedded.safetensors"
    assert run("train", *QUICK, "--epochs", "2", "--out", clean)[0] == 0
    code, _, err = run("embed", *QUICK, "--model", clean, "--watermark", keys / "marking-key.json", "--epochs", "1",
                       "--out", embedded)
    assert code in (0, 1), err
    victim = base.victim_config(meta_of(embedded), str(embedded))
    assert victim == TrainConfig.from_dict(meta_of(clean)["config"]) and victim.epochs == 2 and victim.epoch_steps is None
    short = dataclasses.replace(victim, epoch_steps=10)  # e.g. an older embedded checkpoint: only the embedding's recipe
    monkeypatch.setattr(base, "victim_config", lambda meta, source: short)
    args = ["attack", "ftal", "--model", embedded, "--train-size", "300", "--test-size", "100", "-q"]
    code, _, err = run(*args, "--out", tmp_path / "a.safetensors")
    assert code == 2 and "short epochs of 10 steps" in err and "give --epochs" in err, err
    assert run(*args, "--epochs", "1", "--out", tmp_path / "b.safetensors")[0] == 0
