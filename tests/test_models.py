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
