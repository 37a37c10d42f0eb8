"""Input purification by a denoising autoencoder the attacker trains on their own images.

The thief serves the stolen model behind a small autoencoder fitted to natural images (with
Gaussian noise on its inputs while it learns): whatever it cannot reconstruct, such as the
fine detail an abstract trigger relies on, is smoothed away before the model sees it
(in the spirit of MagNet, Meng and Chen, CCS 2017). The victim's weights are untouched; the
JPEG and blur filters are the ``input-transform`` attack.

    backmark attack purify --model marked.safetensors --out served.safetensors --data-fraction 0.05 --epochs 5
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .autoencoder import train_autoencoder
from .base import AttackContext, Budget, ServedModel, attacker_data, register_attack


@dataclass(frozen=True)
class PurifyBudget(Budget):
    """Budget of purification: the autoencoder learns on data_fraction (0.05) of the training
    images for epochs (5), with Gaussian input noise of std noise_std (0.1, pixel units); seed."""

    data_fraction: float = 0.05
    epochs: int = 5
    noise_std: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.data_fraction <= 1 or self.epochs < 1 or self.noise_std < 0:
            raise ValueError("data_fraction must lie in (0, 1], epochs >= 1, noise_std >= 0")


class PurifiedModel(ServedModel):
    """``model`` behind the attacker's denoising autoencoder."""

    def __init__(self, model: nn.Module, autoencoder: nn.Module, what: str):
        super().__init__()
        self.model, self.autoencoder, self._what = model, autoencoder, what
        self.input_shape = getattr(model, "input_shape", None)
        self.num_classes = getattr(model, "num_classes", None)

    def describe(self) -> str:
        return self._what

    def forward(self, x):  # (B, C, H, W) in [0, 1]
        return self.model(self.autoencoder(x))


@register_attack("purify", PurifyBudget, "serve the model behind a denoising autoencoder trained on the attacker's images")
def purify(model, data, budget: PurifyBudget, ctx: AttackContext):
    device = ctx.device if ctx.device is not None else next(model.parameters()).device
    own = attacker_data(data, budget.data_fraction, budget.seed).train_x
    ae = train_autoencoder(own, epochs=budget.epochs, noise_std=budget.noise_std, seed=budget.seed, device=device)
    what = f"denoising autoencoder ({len(own)} images, {budget.epochs} epochs, noise {budget.noise_std:g})"
    return PurifiedModel(model, ae, what).eval(), [], {"purifier": what, "autoencoder_images": len(own)}
