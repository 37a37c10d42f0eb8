"""Models as a user writes them, for ``--model-factory tests.user_models:NAME`` (tests/test_user_models.py).

None of them knows backmark: no Normalize layer, plain attribute names, outputs as PyTorch
users return them (a tensor, a tuple, a dict, an object with ``.logits``).
"""
from dataclasses import dataclass

import torch
from torch import nn


class TinyNet(nn.Module):
    """A small CNN for 1x28x28 images that returns logits (B, 10)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.conv(x))


def make_tiny():
    return TinyNet()


class TupleNet(TinyNet):
    """Answers (logits, features), as many research models do."""

    def forward(self, x):
        f = self.conv(x)
        return self.head(f), f


class DictNet(TinyNet):
    def forward(self, x):
        return {"logits": self.head(self.conv(x)), "aux": torch.zeros(len(x))}


@dataclass
class Output:  # what a Hugging Face model returns, in miniature
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class LogitsNet(TinyNet):
    def forward(self, x):
        return Output(logits=self.head(self.conv(x)))


class StringNet(TinyNet):
    def forward(self, x):
        return "not scores"


def not_a_module():
    return 42
