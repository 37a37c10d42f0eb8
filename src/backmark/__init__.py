"""backmark: prove ownership of a neural network through black-box queries, by
watermarking it with a backdoor (Adi et al., USENIX Security 2018).

KeyGen -> Mark -> Verify::

    import backmark
    owner = backmark.OwnerKey.generate()
    mk, vk = backmark.keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner)
    mixer = backmark.TriggerMixer.from_key(mk, k=2)     # in your own training loop:
    x, y = mixer.mix(x, y)                              #   appends k trigger images per batch
    # hardening=backmark.MarginHardening() in from_key, and mix(x, y, model=model): margin-hardened triggers
    result = backmark.verify(model, mk, vk)             # exact binomial test, p-value

The package is layered (docs/architecture.md): io and crypto at the bottom, data and
models, training and targets, the scheme in ``backmark.core`` (keygen, mark, verify),
attacks, protocols, experiments, and the command line on top. This module only gathers
the public API.
"""
from .core.keygen import MarkingKey, VerificationKey, keygen, load_pair, open_elements
from .core.mark import MarginHardening, TriggerMixer, mark_from_scratch, mark_pretrained
from .core.verify import VerificationResult, verify
from .crypto import OwnerKey
from .models import Normalize, open_model
from .targets import open_target
from .training import TrainConfig, train
from .version import __version__

__all__ = [
    "MarginHardening",
    "MarkingKey",
    "Normalize",
    "OwnerKey",
    "TrainConfig",
    "TriggerMixer",
    "VerificationKey",
    "VerificationResult",
    "__version__",
    "keygen",
    "load_pair",
    "mark_from_scratch",
    "mark_pretrained",
    "open_elements",
    "open_model",
    "open_target",
    "train",
    "verify",
]
