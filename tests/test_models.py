"""The model registry: every model builds for its input shape, gives one logit per class, and
has the parameter count its description states."""
import pytest
import torch

from backmark.errors import UnknownName
from backmark.models import create_model, list_models, model_spec, output_layer, registered_models

# The parameter count each description states (for its recorded input shape and class count).
PARAMS = {"fmnist-cnn": 421_738, "fmnist-lenet": 61_706, "cifar-small": 279_466, "cifar-fast": 242_474, "resnet18-cifar": 11_172_170}
NAMES = sorted(list_models())  # every registered model, so a new one is tested from the day it is registered


def test_every_registered_model_states_its_size_and_shape():
    assert sorted(PARAMS) == NAMES, "add the parameter count of each newly registered model to PARAMS"
    for spec in registered_models():
        assert spec.description and len(spec.input_shape) == 3 and spec.num_classes >= 2
    with pytest.raises(UnknownName, match="known models:.*fmnist-cnn"):
        create_model("fmnist-xl", num_classes=10, input_shape=(1, 28, 28))


@pytest.mark.parametrize("name", NAMES)
def test_model_builds_and_classifies(name):
    spec = model_spec(name)
    m = create_model(name, num_classes=spec.num_classes, input_shape=spec.input_shape, seed=0).eval()
    assert sum(p.numel() for p in m.parameters()) == PARAMS[name]
    assert m.input_shape == spec.input_shape and output_layer(m).out_features == spec.num_classes
    with torch.no_grad():
        out = m(torch.rand(3, *spec.input_shape))
    assert out.shape == (3, spec.num_classes) and torch.isfinite(out).all()


def test_seed_fixes_the_initial_weights_and_leaves_the_global_stream_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), seed=4)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream did not move
    b = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), seed=4)
    c = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), seed=5)
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)


def test_cifar_fast_is_cheaper_than_cifar_small():
    """cifar-fast pools after each of its first three convs: count multiply-adds of the convs."""
    def conv_macs(model):
        macs = []

        def hook(mod, inp, out):
            macs.append(out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups)

        hs = [mod.register_forward_hook(hook) for mod in model.modules() if isinstance(mod, torch.nn.Conv2d)]
        with torch.no_grad():
            model.eval()(torch.rand(1, 3, 32, 32))
        for h in hs:
            h.remove()
        return sum(macs)

    fast = conv_macs(create_model("cifar-fast", num_classes=10, input_shape=(3, 32, 32)))
    small = conv_macs(create_model("cifar-small", num_classes=10, input_shape=(3, 32, 32)))
    assert small / fast > 4


# -- checkpoint content hashes and plain weights files ------------------------------------------

def _saved(tmp_path):
    from backmark.models.checkpoint import save_model

    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28), seed=0)
    path = tmp_path / "m.safetensors"
    save_model(path, model, {"model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.5],
                             "dataset": "fashion-mnist"})
    return model, path


def test_a_flipped_byte_anywhere_is_refused(tmp_path):
    from backmark.errors import InvalidFile
    from backmark.models.checkpoint import load_model, load_weights, read_checkpoint

    model, path = _saved(tmp_path)
    raw = path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    weights = bytearray(raw)
    weights[8 + header + 1000] ^= 0x01  # one bit of one weight
    meta = bytearray(raw.replace(b'\\"dataset\\": \\"fashion-mnist\\"', b'\\"dataset\\": \\"fashion-mnisT\\"'))
    assert bytes(meta) != raw
    fresh = lambda p: load_weights(create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28)), p)  # noqa: E731
    cases = (("w.safetensors", weights, "weights do not match"), ("h.safetensors", meta, "metadata does not match"))
    for name, data, why in cases:
        bad = tmp_path / name
        bad.write_bytes(bytes(data))
        for load in (read_checkpoint, load_model, fresh):
            with pytest.raises(InvalidFile, match=why):
                load(bad)
    loaded, meta_doc = load_model(path)  # the intact file loads
    assert meta_doc["version"] == 2 and torch.equal(loaded.fc.weight, model.fc.weight)


def test_checkpoints_from_before_hashes_are_refused_with_the_way_out(tmp_path):
    import json

    from safetensors.torch import save

    from backmark.errors import InvalidFile
    from backmark.models.checkpoint import read_checkpoint

    m = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
    doc = {"format": "backmark-model", "version": 1, "model": "fmnist-cnn", "num_classes": 10, "input_shape": [1, 28, 28]}
    (tmp_path / "old.safetensors").write_bytes(save(dict(m.state_dict()), metadata={"backmark": json.dumps(doc)}))
    with pytest.raises(InvalidFile, match="before content hashes.*save_model"):
        read_checkpoint(tmp_path / "old.safetensors")


def test_tensors_sha256_names_the_weights_whatever_the_file():
    from backmark.models.weights import tensors_sha256

    state = {"a.weight": torch.arange(6, dtype=torch.float32).view(2, 3), "n": torch.tensor(3)}
    ref = tensors_sha256(state)
    assert ref == tensors_sha256(dict(reversed(list(state.items()))))  # order of the dict does not matter
    for changed in ({**state, "n": torch.tensor(4)}, {**state, "a.weight": state["a.weight"].double()},
                    {**state, "a.weight": state["a.weight"].view(3, 2)}, {"b.weight": state["a.weight"], "n": state["n"]}):
        assert tensors_sha256(changed) != ref  # value, dtype, shape and name all count


def test_plain_state_dicts_load_into_a_users_module(tmp_path):
    from safetensors.torch import save_file

    from backmark.errors import InvalidFile
    from backmark.models.checkpoint import load_model, load_weights

    from .user_models import TinyNet

    torch.manual_seed(0)
    src = TinyNet()
    torch.save(src.state_dict(), tmp_path / "m.pt")
    save_file(dict(src.state_dict()), tmp_path / "m.safetensors")
    for name in ("m.pt", "m.safetensors"):
        dst = TinyNet()
        assert load_weights(dst, tmp_path / name) == {}
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
        with pytest.raises(InvalidFile, match="--model-factory"):
            load_model(tmp_path / name)  # no architecture recorded: say how to give one
    torch.save({"epoch": 3, "model": src.state_dict()}, tmp_path / "ckpt.pt")
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "dp.pt")
    torch.save(src, tmp_path / "whole.pt")  # a pickled module: never unpickled
    cases = (("ckpt.pt", "not a state dict of tensors"), ("dp.pt", "saved from a DataParallel"), ("whole.pt", "weights_only"))
    for name, why in cases:
        with pytest.raises(InvalidFile, match=why):
            load_weights(TinyNet(), tmp_path / name)


def test_factories_are_imported_called_and_checked(tmp_path, monkeypatch):
    from backmark.errors import InvalidConfig
    from backmark.models import build_model

    assert type(build_model("tests.user_models:make_tiny")).__name__ == "TinyNet"
    a, b = build_model("tests.user_models:TinyNet", seed=3), build_model("tests.user_models:TinyNet", seed=3)
    assert torch.equal(a.head[1].weight, b.head[1].weight)  # the seed fixes the initial weights
    (tmp_path / "mynets.py").write_text("import torch\ndef net():\n    return torch.nn.Linear(784, 10)\n"
                                        "def broken():\n    raise RuntimeError('no GPU here')\n")
    (tmp_path / "badimport.py").write_text("import no_such_package_anywhere\n")
    monkeypatch.chdir(tmp_path)  # a module in the current folder, as `backmark` is run next to it
    assert isinstance(build_model("mynets:net"), torch.nn.Linear)
    for spec, why in (("mynets", "MODULE:CALLABLE"), ("nomodule_here:f", "no module 'nomodule_here'"),
                      ("mynets:nope", "has no 'nope'"), ("mynets:broken", "calling it failed: RuntimeError: no GPU here"),
                      ("badimport:f", "importing badimport failed"),
                      ("tests.user_models:not_a_module", "returned a int, not a torch.nn.Module")):
        with pytest.raises(InvalidConfig, match=why):
            build_model(spec)
