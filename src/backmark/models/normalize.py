"""Normalize: the first layer of every built-in model (and of any model a user wraps)."""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std saved in the state dict."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std
