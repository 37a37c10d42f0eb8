"""The model registry: every model builds for its input shape, gives one logit per class, and
has the parameter count its description states."""
import pytest
import torch

from backmark.models import create_model, list_models

SHAPES = {"fmnist-cnn": (1, 28, 28), "cifar-small": (3, 32, 32), "cifar-fast": (3, 32, 32), "resnet18-cifar": (3, 32, 32)}
PARAMS = {"fmnist-cnn": 421_738, "cifar-small": 279_466, "cifar-fast": 242_474, "resnet18-cifar": 11_172_170}


def test_registry_lists_every_model_with_a_description():
    models = list_models()
    assert set(SHAPES) <= set(models)
    assert all(isinstance(d, str) and d for d in models.values())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_builds_and_classifies(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10, input_shape=SHAPES[name]).eval()
    assert sum(p.numel() for p in m.parameters()) == PARAMS[name]
    with torch.no_grad():
        out = m(torch.rand(3, *SHAPES[name]))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


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
