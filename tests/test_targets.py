"""Targets in files (checkpoint, ONNX, TorchScript), export, the audit log and the client's policy."""
import hashlib
import json
import zipfile

import pytest
import torch
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.keygen import open_elements
from backmark.core.verify import verify
from backmark.errors import IncompatibleModel, InvalidFile, OutputExists
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.targets import Target, TorchTarget, as_target, load_target, open_target, target_kind
from backmark.targets.audit import GENESIS, AuditLog, read_audit_log, record_hash
from backmark.targets.client import parse_retry_after, redact, snippet
from backmark.targets.export import export_file, export_model
from backmark.targets.onnx import OnnxTarget
from backmark.targets.torchscript import TorchScriptTarget

from .test_remote import memorise

pytestmark = pytest.mark.timeout(90)
META = {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.5]}


@pytest.fixture(scope="module")
def files(small_keys, tmp_path_factory):
    """A watermarked and a clean checkpoint, each exported to ONNX and TorchScript."""
    mk, vk = small_keys
    d = tmp_path_factory.mktemp("targets")
    with torch.random.fork_rng():
        torch.manual_seed(1)
        clean = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    for name, model in (("wm", memorise(mk, open_elements(mk, vk))), ("clean", clean)):
        save_model(d / f"{name}.safetensors", model, META)
        export_file(d / f"{name}.safetensors", onnx=d / f"{name}.onnx", torchscript=d / f"{name}.pt")
    mk.save(d / "mk.json")
    vk.save(d / "vk.json")
    return d


@pytest.mark.parametrize("which", ["wm", "clean"])
def test_exports_verify_like_the_checkpoint(files, small_keys, which):
    mk, vk = small_keys
    ref = verify(files / f"{which}.safetensors", mk, vk)
    assert ref.verified == (which == "wm")
    for suffix, cls in ((".onnx", OnnxTarget), (".pt", TorchScriptTarget)):
        target = open_target(files / f"{which}{suffix}")
        assert isinstance(target, cls) and isinstance(target, Target)
        assert (target.input_shape, target.num_classes) == ((1, 28, 28), 10)  # from the export's metadata
        got = verify(target, mk, vk)
        assert (got.verified, got.decision.matches, got.decision.p_value, got.predictions) == (
            ref.verified, ref.decision.matches, ref.decision.p_value, ref.predictions
        )
        assert verify(str(files / f"{which}{suffix}"), mk, vk).decision.matches == ref.decision.matches  # a path works too


def test_exports_match_logits_for_any_batch(files):
    ckpt = load_target(files / "wm.safetensors")
    images = torch.randint(0, 256, (37, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    ref = ckpt.scores(images)
    for suffix in (".onnx", ".pt"):
        target = open_target(files / f"wm{suffix}")
        target.batch_size = 5  # uneven batches through the dynamic batch dimension
        assert torch.allclose(target.scores(images), ref, atol=1e-4)
        assert torch.equal(target.predict(images), ref.argmax(1))


def test_export_metadata_and_input_convention(files):
    import onnx

    proto = onnx.load(str(files / "wm.onnx"))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["backmark"])
    assert meta["format"] == "backmark-export" and meta["input_shape"] == [1, 28, 28] and meta["num_classes"] == 10
    from backmark.io.hashing import file_sha256

    assert meta["source_sha256"] == file_sha256(files / "wm.safetensors")
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    names = zipfile.ZipFile(files / "wm.pt").namelist()
    assert any(n.endswith("extra/backmark.json") for n in names)


def test_export_refuses_overwrite_and_is_atomic(files, tmp_path):
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    (tmp_path / "m.onnx").write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        export_model(model, input_shape=(1, 28, 28), num_classes=10, onnx=tmp_path / "m.onnx", torchscript=tmp_path / "m.pt")
    assert (tmp_path / "m.onnx").read_bytes() == b"keep me" and not (tmp_path / "m.pt").exists()  # checked before writing
    doc = export_model(model, input_shape=(1, 28, 28), num_classes=10, onnx=tmp_path / "m.onnx", force=True)
    assert doc["onnx"]["labels_agree"] == doc["onnx"]["checked"] == 16 and doc["onnx"]["max_abs_diff"] < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary files left
    with pytest.raises(ValueError):
        export_model(model, input_shape=(1, 28, 28), num_classes=10)


def test_cli_export(files, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--model", str(files / "clean.safetensors"), "--onnx", str(tmp_path / "c.onnx"), "--torchscript", str(tmp_path / "c.pt")])
    assert r.exit_code == 0, r.stderr
    assert "16/16 labels agree" in r.stdout and "float32 (batch, C, H, W) in [0, 1]" in r.stdout
    r = runner.invoke(main, ["export", "--model", str(files / "clean.safetensors"), "--onnx", str(tmp_path / "c.onnx")])
    assert r.exit_code == 2 and "already exists" in r.stderr and r.stderr.count("\n") == 1
    r = runner.invoke(main, ["export", "--model", str(files / "clean.safetensors"), "--onnx", str(tmp_path / "c.onnx"), "--force", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["onnx"]["path"] == str(tmp_path / "c.onnx")
    r = runner.invoke(main, ["export", "--model", str(files / "clean.safetensors")])
    assert r.exit_code == 2 and "--onnx" in r.stderr
    r = runner.invoke(main, ["export", "--model", str(tmp_path / "missing.safetensors"), "--onnx", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and "no such" in r.stderr


def test_cli_verify_target_files(files):
    keys = ["--marking-key", str(files / "mk.json"), "--verification-key", str(files / "vk.json"), "--json"]
    docs = []
    for name in ("wm.safetensors", "wm.onnx", "wm.pt"):
        r = CliRunner().invoke(main, ["verify", "--target", str(files / name), *keys])
        assert r.exit_code == 0, r.stderr
        docs.append(json.loads(r.stdout))
    assert len({(d["matches"], d["p_value"], tuple(d["predictions"])) for d in docs}) == 1


def test_bad_model_files_are_clear_errors(files, tmp_path, small_keys):
    mk, vk = small_keys
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")  # a pickle archive, not TorchScript
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    for name, msg in (("weights.pt", "not a TorchScript archive"), ("junk.onnx", "not a valid ONNX model"), ("junk.pt", "not a TorchScript archive"), ("none.onnx", "no such file")):
        with pytest.raises(InvalidFile, match=msg):
            open_target(tmp_path / name)
    other = create_model("cifar-small", num_classes=10, input_shape=(3, 32, 32))
    export_model(other, input_shape=(3, 32, 32), num_classes=10, onnx=tmp_path / "c.onnx", torchscript=tmp_path / "c.pt")
    for name in ("c.onnx", "c.pt"):
        with pytest.raises(IncompatibleModel, match=r"\(3, 32, 32\)"):
            verify(tmp_path / name, mk, vk)


def test_target_kind_and_as_target(files):
    assert target_kind("https://x/v2/models/m") == "http"
    assert target_kind(files / "wm.onnx") == "onnx"
    assert target_kind(files / "wm.pt") == "torchscript"
    assert target_kind(files / "wm.safetensors") == "checkpoint"
    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    assert isinstance(as_target(model), TorchTarget)
    t = OnnxTarget(files / "wm.onnx")
    assert as_target(t) is t
    with pytest.raises(TypeError):
        as_target(42)
    with pytest.raises(ValueError, match="remote options"):
        open_target(files / "wm.onnx", remote=object())


# -- the audit log ------------------------------------------------------------------------

def _exchange(body: bytes) -> dict:
    """The fields of one failed HTTP attempt, as the client records them."""
    req = {"method": "POST", "url": "http://127.0.0.1:1/v2/models/m/infer", "sha256": hashlib.sha256(body).hexdigest(),
           "bytes": len(body), "images": 1}
    return {"attempt": 1, "request": req, "response": None, "elapsed_us": 10, "outcome": "error", "error": "cannot connect"}


def test_audit_log_chain(tmp_path):
    clock = iter(range(1_700_000_000, 1_700_000_100)).__next__
    log = AuditLog(tmp_path / "a.jsonl", target="http://127.0.0.1:1/v2/models/m", clock=clock)
    h1 = log.append("exchange", **_exchange(b"ab"))
    log2 = AuditLog(tmp_path / "a.jsonl", target="http://127.0.0.1:1/v2/models/m", clock=clock)  # reopen: continue
    log2.append("exchange", **_exchange(b"cd"))
    recs = read_audit_log(tmp_path / "a.jsonl")
    assert [r["seq"] for r in recs] == [0, 1, 2, 3] and [r["kind"] for r in recs] == ["open", "exchange", "resume", "exchange"]
    assert recs[0]["prev"] == GENESIS and recs[1]["hash"] == h1 and recs[2]["prev"] == h1
    assert recs[0]["format"] == "backmark-audit-log" and recs[0]["time"] == "2023-11-14T22:13:20.000Z"
    assert all(r["hash"] == record_hash(r) for r in recs)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    bad = {
        "reordered": [lines[0], lines[2], lines[1], lines[3]],
        "truncated-middle": [lines[0], lines[1], lines[3]],
        "edited": [lines[0], lines[1].replace('"elapsed_us":10', '"elapsed_us":11'), *lines[2:]],
        "torn": [*lines[:3], lines[3][:20]],
        "not-a-log": [json.dumps({"seq": 0})],
    }
    for name, content in bad.items():
        (tmp_path / name).write_text("\n".join(content) + "\n")
        with pytest.raises(InvalidFile):
            read_audit_log(tmp_path / name)
    with pytest.raises(InvalidFile):
        AuditLog(tmp_path / "edited", target="x")  # never extends a broken chain


# -- client helpers -----------------------------------------------------------------------

def test_retry_after_and_redaction():
    assert parse_retry_after("7", now=0) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon", now=0) is None and parse_retry_after(None, now=0) is None
    assert redact("https://user:pw@api.example:8443/v1/predict?key=SECRET") == "https://api.example:8443/v1/predict?..."
    assert snippet(b"<html>\n  <body>\n" + b"x" * 200) .startswith("<html> <body> xxx") and len(snippet(b"y" * 500)) == 83


# -- in-process modules: outputs, normalisation, wrappers, devices ------------------------------

def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)


def test_tuple_dict_and_logits_outputs_are_read_as_scores():
    from .user_models import DictNet, LogitsNet, StringNet, TinyNet, TupleNet

    torch.manual_seed(0)
    ref = TinyNet().eval()
    x = _images()
    expected = ref(x.float() / 255)
    for cls in (TupleNet, DictNet, LogitsNet):
        m = cls()
        m.load_state_dict(ref.state_dict())
        assert torch.allclose(TorchTarget(m).scores(x), expected), cls.__name__
    for bad, why in ((StringNet(), "returns a str"), (torch.nn.Identity(), "shape")):
        with pytest.raises(IncompatibleModel, match=why) as e:
            TorchTarget(bad, name="bad").scores(x)
        assert "\n" not in str(e.value)

    class TwoTensors(TinyNet):
        def forward(self, x):
            return {"a": self.head(self.conv(x)), "b": self.head(self.conv(x))}

    with pytest.raises(IncompatibleModel, match="'logits' entry or exactly one tensor"):
        TorchTarget(TwoTensors()).scores(x)


def test_dataparallel_in_train_mode_is_queried_in_eval_and_every_mode_put_back(small_keys):
    from .user_models import TinyNet

    mk, vk = small_keys
    torch.manual_seed(0)
    inner = TinyNet()
    wrapped = torch.nn.DataParallel(inner).train()
    inner.conv[1].eval()  # a frozen BatchNorm: it must stay frozen after the queries
    seen = []
    inner.conv.register_forward_hook(lambda mod, args, out: seen.append((inner.training, inner.conv[5].training)))
    stats = inner.conv[1].running_mean.clone()
    before = {n: m.training for n, m in inner.named_modules()}
    res = verify(wrapped, mk, vk)
    assert res.decision.n == vk.size and seen and all(s == (False, False) for s in seen)  # queried in eval mode
    assert {n: m.training for n, m in inner.named_modules()} == before  # each submodule's own mode back
    assert torch.equal(inner.conv[1].running_mean, stats) and torch.equal(inner.conv[5].running_mean, torch.zeros(32))


def test_device_is_honoured_for_modules_and_a_module_elsewhere_is_named():
    from .user_models import TinyNet

    m = TinyNet()
    assert TorchTarget(m).device == torch.device("cpu") and TorchTarget(m, device="cpu").device == torch.device("cpu")
    with pytest.raises(IncompatibleModel, match=r"lives on cpu but the queries were asked to run on cuda.*device='cpu'"):
        TorchTarget(m, device="cuda")
    with pytest.raises(IncompatibleModel, match="lives on cpu"):
        as_target(m, device="cuda")


def _normalised_model(mk, labels, mean, std, steps=60):
    """A user's TinyNet that learnt the trigger labels on NORMALISED images (as torchvision pipelines feed it)."""
    from backmark.core.mark import TriggerMixer

    from .user_models import TinyNet

    x = TriggerMixer(torch.from_numpy(mk.images).permute(0, 3, 1, 2), torch.tensor(labels), mean=mean, std=std).inputs
    threads = torch.get_num_threads()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.set_num_threads(1)
        model = TinyNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x), torch.tensor(labels))
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.set_num_threads(threads)
    return model.eval()


FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


def test_a_normalised_model_verifies_through_mean_and_std(small_keys):
    mk, vk = small_keys
    model = _normalised_model(mk, open_elements(mk, vk), FMNIST_MEAN, FMNIST_STD)
    plain = verify(model, mk, vk)
    assert not plain.verified  # fed [0, 1] triggers, the model answers other labels
    res = verify(model, mk, vk, mean=FMNIST_MEAN, std=FMNIST_STD)
    assert res.verified and res.extra["input_normalization"] == {"mean": [0.286], "std": [0.353]}
    assert verify(TorchTarget(model, mean=FMNIST_MEAN, std=FMNIST_STD), mk, vk).decision.matches == res.decision.matches
    builtin = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    with pytest.raises(IncompatibleModel, match="starts with a backmark Normalize"):
        verify(builtin, mk, vk, mean=FMNIST_MEAN, std=FMNIST_STD)  # it would normalise twice
    with pytest.raises(IncompatibleModel, match="mean and std go together"):
        verify(model, mk, vk, mean=FMNIST_MEAN)


def test_loaded_checkpoints_run_channels_last_with_the_same_answers(files):
    """load_target lays the model out channels_last (the faster layout for convs on a CPU) and feeds it alike."""
    loaded = load_target(files / "clean.safetensors")
    assert loaded.channels_last
    assert not TorchTarget(create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))).channels_last
    plain = TorchTarget(load_target(files / "clean.safetensors").inner.to(memory_format=torch.contiguous_format))
    assert not plain.channels_last
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loaded.scores(x), plain.scores(x), atol=1e-4) and torch.equal(loaded.predict(x), plain.predict(x))
