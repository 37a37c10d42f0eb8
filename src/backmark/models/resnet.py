"""``resnet18-cifar``: the paper's model (official code: pre-activation ResNet-18 for 32x32).

3x3 stem, no max-pool, stages of 64/128/256/512 channels with two pre-activation basic
blocks each, a final BN-ReLU, 4x4 average pool, linear head: 11.17M parameters for 10 classes.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .normalize import Normalize
from .registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    def __init__(self, num_classes, input_shape, mean, std):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        # The final BN-ReLU of a pre-activation network (He et al. 2016). Without it the
        # unnormalised residual sum diverges within ten steps at the paper's lr 0.1.
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):  # (B, C, 32, 32) in [0, 1]
        out = self.layers(self.conv1(self.norm(x)))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)  # = avg_pool 4 on 32x32 inputs
        return self.fc(out)


@register_model("resnet18-cifar", "pre-activation ResNet-18 for 32x32 inputs, the paper's model (11.17M params)", input_shape=(3, 32, 32))
def resnet18_cifar(*, num_classes, input_shape, mean, std):
    return PreActResNet18(num_classes, input_shape, mean, std)
