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
    code, out, _ = run("info", flow / "keys" / "verification-key.json", "--json")
    assert code == 0 and json.loads(out)["set_size"] == 40
    code, out, _ = run("info", flow / "wm.safetensors", "--json")
    assert code == 0 and json.loads(out)["watermark"]["mode"] == "FROMSCRATCH"
    assert "fmnist-cnn" in run("models")[1] and "fashion-mnist" in run("datasets")[1]


def test_help_everywhere():
    for cmd in ([], ["keygen"], ["train"], ["embed"], ["verify"], ["demo"], ["info"]):
        code, out, _ = run(*cmd, "--help")
        assert code == 0 and "Usage:" in out


# -- info on every file type, --json everywhere, file modes --------------------------------------

@pytest.fixture(scope="module")
def every_file(tmp_path_factory):
    """One file of every kind backmark writes or reads, made through the library and the CLI."""
    import stat

    import torch
    from safetensors.torch import save_file

    from backmark.models import create_model
    from backmark.models.checkpoint import save_model
    from backmark.models.heads import save_output_layer
    from backmark.protocols.pverify import SpentLog
    from backmark.targets.audit import AuditLog
    from backmark.targets.export import export_model
    from backmark.training.state import save_state

    from .user_models import TinyNet

    d = tmp_path_factory.mktemp("every")
    code, _, err = run("keygen", "--dataset", "fashion-mnist", "--out", d / "keys", "--size", "20", "--sets", "2")
    assert code == 0, err
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), seed=0)
    meta = {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28], "dataset": "fashion-mnist"}
    save_model(d / "model.safetensors", model, meta)
    save_output_layer(d / "fc.safetensors", model)
    user = TinyNet()
    torch.save(user.state_dict(), d / "plain.pt")
    save_file(dict(user.state_dict()), d / "plain.safetensors")
    export_model(model, input_shape=(1, 28, 28), num_classes=10, onnx=d / "model.onnx", torchscript=d / "model.pt")
    mk, vk = [d / "keys" / f for f in ("marking-key.json", "verification-key.json")]
    code, out, err = run("verify", "--model", d / "model.safetensors", "--marking-key", mk, "--verification-key", vk,
                         "--report", d / "report")
    assert code == 1, err  # an untrained model: NOT VERIFIED, and the report says so
    assert f"wrote {d / 'report.json'}, {d / 'report.html'}" in out
    code, _, err = run("public-claim", "--marking-key", mk, "--verification-key", vk, "--out", d / "claim.json",
                       "--model", d / "model.safetensors", "--alpha", "0.01", "--allow-weak-alpha")
    assert code == 0, err
    from backmark.core.keygen import VerificationKey
    from backmark.crypto import OwnerKey

    SpentLog.new(d / "spent.jsonl", VerificationKey.load(vk), OwnerKey.generate().public_hex).save()
    AuditLog(d / "audit.jsonl", target="http://127.0.0.1:9/v2/models/m").append("query", images=3, batch_size=3, target="x")
    save_state(d / "m.safetensors.state",
               {"epoch": 1, "model": model.state_dict(), "optimizer": {}, "history": [], "config": {}, "run": {}})
    (d / "junk.bin").write_bytes(b"\x07" * 64)
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-100] ^= 0x10
    (d / "flipped.safetensors").write_bytes(bytes(raw))
    assert stat.S_IMODE((d / "model.safetensors").stat().st_mode) != 0o600  # not the temporary file's mode
    return d


KINDS = {
    "keys/verification-key.json": "verification-key", "keys/marking-key.json": "marking-key (SECRET)",
    "keys/owner-key.pem": "owner-key",
    "model.safetensors": "checkpoint", "fc.safetensors": "output-layer", "plain.pt": "plain-state-dict",
    "plain.safetensors": "plain-safetensors", "model.pt": "torchscript", "model.onnx": "onnx",
    "report.json": "verification-report",
    "report.html": "verification-report", "report.pdf": "report-pdf", "claim.json": "public-claim", "spent.jsonl": "spent-log", "audit.jsonl": "audit-log",
    "m.safetensors.state": "training-state",
}


def test_info_describes_and_checks_every_file_type(every_file):
    d = every_file
    for name, kind in KINDS.items():
        code, out, err = run("info", d / name)
        assert code == 0 and out.startswith(f"{d / name}: {kind}"), (name, out, err)
        code, out, err = run("info", d / name, "--json")
        assert code == 0 and json.loads(out)["kind"] == kind, (name, err)
    doc = json.loads(run("info", d / "keys" / "owner-key.pem", "--json")[1])
    assert len(doc["fingerprint"]) == 64 and doc["mode"] == "0o600"
    pem = (d / "keys" / "owner-key.pem").read_text().splitlines()[1]
    assert pem not in run("info", d / "keys" / "owner-key.pem")[1]  # the secret itself is never shown
    for name, why in (("flipped.safetensors", "do not match their hash"), ("junk.bin", "not a file backmark writes or reads"),
                      ("missing.json", "no such file")):
        code, out, err = run("info", d / name)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1 and not out, (name, err)


def test_public_files_are_0644_and_secrets_0600(every_file):
    import stat

    d = every_file
    modes = {name: stat.S_IMODE((d / name).stat().st_mode) for name in
             ("keys/marking-key.json", "keys/owner-key.pem", "keys/verification-key.json", "report.json", "report.html",
              "report.pdf", "claim.json", "model.onnx", "model.pt", "spent.jsonl")}
    assert modes == {**{n: 0o644 for n in modes}, "keys/marking-key.json": 0o600, "keys/owner-key.pem": 0o600}


def test_json_on_the_listing_commands():
    code, out, _ = run("models", "--json")
    assert code == 0 and "fmnist-cnn" in [m["name"] for m in json.loads(out)["models"]]
    code, out, _ = run("datasets", "--json")
    assert code == 0 and "fashion-mnist" in [ds["name"] for ds in json.loads(out)["datasets"]]
