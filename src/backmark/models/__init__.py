"""Models: the registry, the built-in nets, output-layer surgery (heads) and checkpoint files.

Every built-in model takes float images in [0, 1], shape (B, C, H, W), and starts with a
:class:`Normalize` layer holding the dataset's mean and std as buffers, so a checkpoint,
an ONNX or a TorchScript export is self-contained: uint8 / 255 in, logits out.

Any ``torch.nn.Module`` works through the library API, and on the command line through
``--model-factory MODULE:CALLABLE`` (:mod:`.factory`; :class:`AdaptedModel` reads the scores out
of tuple, dict or ``.logits`` outputs and applies a normalisation the module expects). The
registry names the built-in ones::

    model = create_model("fmnist-cnn", num_classes=10, input_shape=(1, 28, 28))
"""
from . import resnet, small  # noqa: F401  (registers the built-in models)
from .adapt import AdaptedModel, logits_of
from .factory import build_model, load_factory, open_model
from .heads import output_layer
from .normalize import Normalize
from .registry import ModelSpec, create_model, list_models, model_spec, register_model, registered_models

__all__ = [
    "AdaptedModel",
    "ModelSpec",
    "Normalize",
    "build_model",
    "create_model",
    "list_models",
    "load_factory",
    "logits_of",
    "model_spec",
    "open_model",
    "output_layer",
    "register_model",
    "registered_models",
]
