"""Models: the registry, the built-in nets, output-layer surgery (heads) and checkpoint files.

Every built-in model takes float images in [0, 1], shape (B, C, H, W), and starts with a
:class:`Normalize` layer holding the dataset's mean and std as buffers, so a checkpoint,
an ONNX or a TorchScript export is self-contained: uint8 / 255 in, logits out.

Any ``torch.nn.Module`` with that input convention works through the library API; the
registry only names the ones the CLI can build::

    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
"""
from . import resnet, small  # noqa: F401  (registers the built-in models)
from .heads import output_layer
from .normalize import Normalize
from .registry import ModelSpec, create_model, list_models, model_spec, register_model, registered_models

__all__ = [
    "ModelSpec",
    "Normalize",
    "create_model",
    "list_models",
    "model_spec",
    "output_layer",
    "register_model",
    "registered_models",
]
