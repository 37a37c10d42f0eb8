"""Training: the loop (NO-WM, FROMSCRATCH and PRETRAINED alike), its config and resumable
state, data-parallel training under torchrun, and the default recipe per dataset.

The loop knows nothing of keys or watermarks: marking is a mixer that appends images to
each batch (backmark.core.mark).
"""
from .adversarial import signed_gradient_ascent
from .config import COMPILE_MODES, HARDENINGS, OPTIMIZERS, PRECISIONS, SCHEDULES, EpochStats, Reporter, TrainConfig
from .loop import Mixer, accuracy, default_device, logits, make_optimizer, predict, train, use_compile

__all__ = [
    "COMPILE_MODES",
    "HARDENINGS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "EpochStats",
    "Mixer",
    "Reporter",
    "TrainConfig",
    "accuracy",
    "default_device",
    "logits",
    "make_optimizer",
    "predict",
    "signed_gradient_ascent",
    "train",
    "use_compile",
]
