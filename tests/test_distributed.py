"""Data-parallel training under torchrun: 2 CPU processes (gloo) train like one process."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from backmark.core.verify import verify
from backmark.data import load_dataset
from backmark.experiments.workflow import train_file
from backmark.training.distributed import setup, split_batch
from backmark.training.recipes import recipe_for


def _json_objects(text: str) -> list[dict]:
    """Every JSON object printed in ``text``: two ranks' lines can interleave on one line."""
    dec, out, i = json.JSONDecoder(), [], text.find("{")
    while i != -1:
        obj, end = dec.raw_decode(text, i)
        out.append(obj)
        i = text.find("{", end)
    return out

TRAIN_SIZE, TEST_SIZE, EPOCHS, K = 4000, 1000, 3, 8


def torchrun(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node=2 ARGS``; kill the whole group on timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{err[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{err[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("n,k,world", [(100, 2, 2), (128, 2, 4), (7, 3, 3), (1, 2, 2), (5, 0, 3), (60, 0, 1)])
def test_split_batch_deals_every_item_to_exactly_one_rank(n, k, world):
    clean, triggers, sizes = [], [], []
    for rank in range(world):
        cs, ts = split_batch(n, k, rank, world)
        clean += list(range(n))[cs]
        triggers += list(range(k))[ts]
        sizes.append(len(range(n)[cs]) + len(range(k)[ts]))
    assert sorted(clean) == list(range(n)) and sorted(triggers) == list(range(k))
    assert max(sizes) - min(sizes) <= 1  # round-robin over clean + triggers: balanced shares


def test_without_torchrun_training_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.device) == (0, 1, True, torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    assert ctx.wrap(model) is model and ctx.all_sum([1.0, 2.0]) == [1.0, 2.0] and ctx.broadcast("x") == "x"


@pytest.mark.slow
def test_torchrun_cli_matches_single_process_and_the_watermark_verifies(tmp_path, small_keys):
    mk, vk = small_keys
    mk_path, vk_path = tmp_path / "mk.json", tmp_path / "vk.json"
    mk.save(mk_path)
    vk.save(vk_path)
    out = tmp_path / "ddp.safetensors"
    run = torchrun([
        "-m", "backmark", "train", "--dataset", "fashion-mnist", "--train-size", str(TRAIN_SIZE), "--test-size", str(TEST_SIZE),
        "--watermark", str(mk_path), "--verification-key", str(vk_path), "--epochs", str(EPOCHS), "-k", str(K),
        "--device", "cpu", "--out", str(out), "--json", "-q",
    ])
    ddp = json.loads(run.stdout)["history"]  # rank 0 alone printed: stdout holds one JSON document
    assert [h["epoch"] for h in ddp] == list(range(1, EPOCHS + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.safetensors", "mk.json", "vk.json"]  # no state file left

    # The same recipe in one process.
    data = load_dataset("fashion-mnist", train_size=TRAIN_SIZE, test_size=TEST_SIZE, seed=0)
    cfg = recipe_for("fashion-mnist").train.replace(epochs=EPOCHS, trigger_k=K)
    _, single = train_file(data=data, model_name="fmnist-cnn", cfg=cfg, out=tmp_path / "single.safetensors", keys=small_keys, device="cpu")
    assert ddp[-1]["test_acc"] == pytest.approx(single[-1].test_acc, abs=0.03)
    assert ddp[-1]["train_loss"] == pytest.approx(single[-1].train_loss, rel=0.15)
    assert ddp[-1]["trigger_acc"] >= 0.9 and single[-1].trigger_acc >= 0.9
    result = verify(out, mk, vk)
    assert result.verified, result.summary()


WORKER = textwrap.dedent("""
    import json, os, sys, torch
    from backmark.data import load_dataset
    from backmark.core.mark import TriggerMixer
    from backmark.models import create_model
    from backmark.training import TrainConfig, train

    state = sys.argv[1]
    data = load_dataset("fashion-mnist", train_size=1500, test_size=300, seed=0)
    g = torch.Generator().manual_seed(1)
    mixer = TriggerMixer(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (20,), generator=g), k=3)

    def fresh():
        torch.manual_seed(0)
        return create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), mean=data.mean, std=data.std)

    cfg = TrainConfig(epochs=2, batch_size=100, augment=True, trigger_k=3)
    first = train(fresh(), data, cfg.replace(epochs=1), mixer=mixer, state_path=state, device="cpu")
    model = fresh()
    ran = []  # the epochs the resumed call actually trains (stop_when sees each one as it ends)
    hist = train(model, data, cfg, mixer=mixer, state_path=state, resume=True, device="cpu", stop_when=lambda s: ran.append(s.epoch) or False)
    # FTLL-style: only the output layer trains, the rest stays frozen on every rank
    before = model.features[0].weight.detach().clone()
    train(model, data, cfg.replace(epochs=1), params=model.fc.parameters(), device="cpu")
    flat = torch.cat([p.detach().flatten() for p in model.parameters()] + [b.flatten().float() for b in model.buffers()])
    print(json.dumps({"rank": int(os.environ["RANK"]), "epochs": [h.epoch for h in hist], "ran": ran,
                      "first_kept": [hist[0].train_loss, hist[0].test_acc] == [first[0].train_loss, first[0].test_acc],
                      "acc": hist[-1].test_acc, "checksum": flat.double().sum().item(), "frozen": bool(torch.equal(before, model.features[0].weight)),
                      "grad_flags": all(p.requires_grad for p in model.parameters())}), flush=True)
""")


@pytest.mark.slow
def test_resume_and_frozen_layers_under_two_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    state = tmp_path / "run.state"
    # Each rank prints its own line here (library code, not the CLI).
    lines = _json_objects(torchrun([str(script), str(state)]).stdout)
    assert sorted(r["rank"] for r in lines) == [0, 1]
    a, b = lines
    assert a["epochs"] == b["epochs"] == [1, 2]
    assert a["ran"] == b["ran"] == [2]  # the second call resumed after epoch 1: it trained epoch 2 only
    assert a["first_kept"] and b["first_kept"]  # epoch 1's figures are those of the first call, read back from its state
    assert a["checksum"] == b["checksum"]  # weights and (averaged) BatchNorm statistics agree across ranks
    assert a["acc"] == b["acc"] and a["acc"] > 0.5
    assert a["frozen"] and b["frozen"] and a["grad_flags"] and b["grad_flags"]
    assert state.exists()  # written by rank 0
