"""backmark: prove ownership of a neural network through black-box queries, by
watermarking it with a backdoor (Adi et al., USENIX Security 2018).

KeyGen -> Mark -> Verify::

    import backmark
    owner = backmark.OwnerKey.generate()
    mk, vk = backmark.keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner)
    mixer = backmark.TriggerMixer.from_key(mk, k=2)     # in your own training loop:
    x, y = mixer.mix(x, y)                              #   appends k trigger images per batch
    result = backmark.verify(model, mk, vk)             # exact binomial test, p-value
"""
__version__ = "0.1.0"

from .crypto import OwnerKey  # noqa: E402
from .embed import mark_from_scratch, mark_pretrained  # noqa: E402
from .keys import MarkingKey, VerificationKey, keygen, load_pair, open_elements  # noqa: E402
from .mixer import TriggerMixer  # noqa: E402
from .train import TrainConfig, train  # noqa: E402
from .verify import VerificationResult, verify  # noqa: E402

__all__ = [
    "MarkingKey",
    "OwnerKey",
    "TrainConfig",
    "TriggerMixer",
    "VerificationKey",
    "VerificationResult",
    "keygen",
    "load_pair",
    "mark_from_scratch",
    "mark_pretrained",
    "open_elements",
    "train",
    "verify",
]
