"""A user's own model on the command line: ``--model-factory``, plain state dicts, plain safetensors,
and a model whose forward expects normalised inputs (docs/user-models.md)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from backmark.core.keygen import open_elements

from .conftest import REPO, serving
from .test_cli import run
from .test_targets import FMNIST_MEAN, FMNIST_STD, _normalised_model

FACTORY = "tests.user_models:TinyNet"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Keys, and a TinyNet trained with the watermark from the CLI, also saved as a plain state dict and plain safetensors."""
    d = tmp_path_factory.mktemp("user")
    code, _, err = run("keygen", "--dataset", "fashion-mnist", "--out", d / "keys", "--size", "30")
    assert code == 0, err
    code, out, err = run("train", "--dataset", "fashion-mnist", "--train-size", "2000", "--test-size", "400", "--epochs", "3",
                         "-k", "64", "--model-factory", "tests.user_models:make_tiny",
                         "--watermark", d / "keys" / "marking-key.json",
                         "--out", d / "user.safetensors", "-q", "--json")
    assert code == 0, err
    assert json.loads(out)["warning"] is None
    state = load_file(d / "user.safetensors")  # what the user gets back: their module's own state dict
    torch.save(state, d / "plain.pt")
    save_file(state, d / "plain.safetensors")
    return d


def keys(d):
    return ["--marking-key", d / "keys" / "marking-key.json", "--verification-key", d / "keys" / "verification-key.json"]


@pytest.mark.slow
def test_user_model_trained_verified_attacked_and_exported_with_a_factory(trained):
    d = trained
    for name in ("user.safetensors", "plain.pt", "plain.safetensors"):
        code, out, err = run("verify", "--model", d / name, "--model-factory", FACTORY, *keys(d))
        assert code == 0 and "OWNERSHIP VERIFIED" in out, (name, out, err)
        code, _, err = run("verify", "--model", d / name, *keys(d))
        assert code == 2 and "--model-factory" in err and len(err.strip().splitlines()) == 1, (name, err)
    code, out, err = run("attack", "ftll", "--model", d / "plain.pt", "--model-factory", FACTORY, "--dataset", "fashion-mnist",
                         "--train-size", "500", "--test-size", "200", "--epochs", "1", "--out", d / "ftll.safetensors",
                         "-q", "--json", *keys(d))
    assert code == 0, err
    assert json.loads(out)["blackbox"]["verdict"] == "ownership"
    code, out, err = run("verify", "--model", d / "ftll.safetensors", "--model-factory", FACTORY, *keys(d), "--json")
    assert code == 0 and json.loads(out)["verified"], err
    code, _, err = run("export", "--model", d / "plain.pt", "--model-factory", FACTORY, "--torchscript", d / "u.ts")
    assert code == 2 and "--input-shape" in err  # a plain state dict does not record it
    code, out, err = run("export", "--model", d / "plain.pt", "--model-factory", FACTORY, "--input-shape", "1x28x28",
                         "--torchscript", d / "u.pt", "--onnx", d / "u.onnx", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metadata"]["model"] == FACTORY and doc["torchscript"]["labels_agree"] == 16
    for export in ("u.pt", "u.onnx"):
        code, out, err = run("verify", "--target", d / export, *keys(d))
        assert code == 0 and "OWNERSHIP VERIFIED" in out, (export, err)


def test_factory_mistakes_are_one_line(tmp_path):
    for spec, why in (("nocolon", "MODULE:CALLABLE"), ("no_such_mod:f", "no module 'no_such_mod'"),
                      ("tests.user_models:not_a_module", "not a torch.nn.Module")):
        code, _, err = run("train", "--dataset", "fashion-mnist", "--model-factory", spec, "--train-size", "100", "--out",
                           tmp_path / "m.safetensors", "-q")
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run("train", "--dataset", "fashion-mnist", "--model", "fmnist-cnn", "--model-factory", FACTORY,
                       "--out", tmp_path / "m")
    assert code == 2 and "not both" in err
    code, _, err = run("train", "--dataset", "fashion-mnist", "--mean", "0.3", "--std", "0.3", "--train-size", "100",
                       "--out", tmp_path / "m")
    assert code == 2 and "--model-factory" in err  # a built-in model normalises itself


def test_a_normalised_model_verifies_with_mean_std_and_is_hinted_without(small_keys, tmp_path):
    mk, vk = small_keys
    mk.save(tmp_path / "mk.json")
    vk.save(tmp_path / "vk.json")
    model = _normalised_model(mk, open_elements(mk, vk), FMNIST_MEAN, FMNIST_STD)
    torch.save(model.state_dict(), tmp_path / "norm.pt")
    args = ["verify", "--model", tmp_path / "norm.pt", "--model-factory", FACTORY, "--marking-key", tmp_path / "mk.json",
            "--verification-key", tmp_path / "vk.json"]
    code, out, _ = run(*args)
    assert code == 1 and out.strip().splitlines()[-1] == "hint: if this model expects normalised inputs, pass --mean/--std"
    code, out, err = run(*args, "--mean", "0.2860", "--std", "0.3530", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verified"] and doc["matches"] == vk.size and doc["input_normalization"] == {"mean": [0.286], "std": [0.353]}
    code, _, err = run(*args, "--mean", "0.2860")
    assert code == 2 and "--mean and --std go together" in err


def test_serve_a_users_normalised_model_with_json_lines(small_keys, tmp_path):
    import re

    mk, vk = small_keys
    mk.save(tmp_path / "mk.json")
    vk.save(tmp_path / "vk.json")
    torch.save(_normalised_model(mk, open_elements(mk, vk), FMNIST_MEAN, FMNIST_STD).state_dict(), tmp_path / "norm.pt")
    args = ["--model", tmp_path / "norm.pt", "--model-factory", FACTORY, "--mean", "0.286", "--std", "0.353", "--port", "0", "--json"]
    with serving(*args, cwd=REPO) as (line, proc):  # the factory's module is found from the repository's root
        ready = json.loads(line)
        assert ready["event"] == "ready" and re.fullmatch(r"http://127\.0\.0\.1:\d+/v2/models/norm", ready["url"])
        code, out, err = run("verify", "--target", ready["url"], "--marking-key", tmp_path / "mk.json", "--verification-key",
                             tmp_path / "vk.json")
        assert code == 0 and "OWNERSHIP VERIFIED" in out, err  # served normalised, as the model expects
    assert proc.returncode == 0 and json.loads(proc.rest.strip().splitlines()[-1])["event"] == "stopped"
