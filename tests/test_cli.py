"""The command line: happy path on a tiny run, and every user mistake -> exit 2, one line."""
import json

import pytest
from click.testing import CliRunner

from backmark.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    code, out, err = run("keygen", "--dataset", "fashion-mnist", "--out", d / "keys", "--size", "40", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["owner_key_created"] and info["elements"] == 40
    common = ["--dataset", "fashion-mnist", "--train-size", "6000", "--test-size", "1000", "--epochs", "2", "-k", "16", "-q"]
    code, out, err = run("train", *common, "--watermark", d / "keys" / "marking-key.json", "--out", d / "wm.safetensors")
    assert code == 0, err
    code, out, err = run("train", *common, "--seed", "1", "--out", d / "clean.safetensors")
    assert code == 0, err
    return d


def verify_args(d, model="wm.safetensors"):
    return ["verify", "--model", d / model, "--marking-key", d / "keys" / "marking-key.json", "--verification-key", d / "keys" / "verification-key.json"]


@pytest.mark.slow
def test_verify_exit_codes_and_json(flow):
    code, out, _ = run(*verify_args(flow), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["verified"] and doc["matches"] >= doc["threshold"] and doc["p_value"] < 2**-64
    code, out, _ = run(*verify_args(flow, "clean.safetensors"))
    assert code == 1 and "NOT VERIFIED" in out
    code, out, _ = run(*verify_args(flow), "--alpha", "1e-300")
    assert code == 1  # 40 matches out of 40 cannot reach p <= 1e-300 at p0 = 1/10


@pytest.mark.slow
def test_errors_are_one_line_exit_2(flow, tmp_path):
    keys = flow / "keys"
    tampered = tmp_path / "vk.json"
    tampered.write_text((keys / "verification-key.json").read_text().replace('"owner": ""', '"owner": "x"'))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    cases = [
        (verify_args(flow, "missing.safetensors"), "no such model"),
        (["verify", "--model", flow / "wm.safetensors", "--marking-key", keys / "marking-key.json", "--verification-key", tampered], "signature"),
        (["verify", "--model", garbage, "--marking-key", keys / "marking-key.json", "--verification-key", keys / "verification-key.json"], "not a safetensors"),
        (["verify", "--model", flow / "wm.safetensors", "--marking-key", keys / "verification-key.json", "--verification-key", keys / "verification-key.json"], "expected a backmark-marking-key"),
        (["keygen", "--dataset", "fashion-mnist", "--out", keys], "already exists"),
        (["keygen", "--dataset", "nope", "--out", tmp_path / "k"], "unknown dataset"),
        (["train", "--dataset", "fashion-mnist", "--out", flow / "wm.safetensors", "-q"], "already exists"),
        (["train", "--dataset", "fashion-mnist", "--data-dir", tmp_path, "--out", tmp_path / "m.safetensors", "-q"], "--data-dir"),
        (verify_args(flow) + ["--alpha", "abc"], "not a number"),
    ]
    for args, needle in cases:
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert needle in err, (needle, err)


@pytest.mark.slow
def test_key_for_another_shape_is_refused(flow, tmp_path):
    code, _, err = run("keygen", "--input-shape", "3x32x32", "--classes", "10", "--out", tmp_path / "k", "--size", "10")
    assert code == 0, err
    code, _, err = run("verify", "--model", flow / "wm.safetensors", "--marking-key", tmp_path / "k" / "marking-key.json", "--verification-key", tmp_path / "k" / "verification-key.json")
    assert code == 2 and "shape" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_info_and_lists(flow):
    code, out, _ = run("info", flow / "keys" / "verification-key.json")
    assert code == 0 and json.loads(out)["set_size"] == 40
    code, out, _ = run("info", flow / "wm.safetensors")
    assert code == 0 and json.loads(out)["watermark"]["mode"] == "FROMSCRATCH"
    assert "fmnist-cnn" in run("models")[1] and "fashion-mnist" in run("datasets")[1]


def test_help_everywhere():
    for cmd in ([], ["keygen"], ["train"], ["embed"], ["verify"], ["demo"], ["info"]):
        code, out, _ = run(*cmd, "--help")
        assert code == 0 and "Usage:" in out
