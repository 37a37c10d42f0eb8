"""Small, fast models for CPU work: ``fmnist-cnn``, ``fmnist-lenet``, ``cifar-small`` and ``cifar-fast``."""
from __future__ import annotations

from torch import nn

from .normalize import Normalize
from .registry import register_model


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FMnistCNN(nn.Module):
    """Two conv blocks (32, 64 channels, each conv-BN-ReLU-maxpool) and a 2-layer head."""

    def __init__(self, num_classes, input_shape, mean, std):
        super().__init__()
        c, h, w = input_shape
        self.norm = Normalize(mean, std)
        self.features = nn.Sequential(*_conv_bn(c, 32), nn.MaxPool2d(2), *_conv_bn(32, 64), nn.MaxPool2d(2))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(inplace=True))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):  # (B, C, H, W) in [0, 1]
        return self.fc(self.hidden(self.features(self.norm(x))))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs: 5x5 convs of 6 and 16 channels with max pools, then
    120-84-classes, ReLU. Another architecture family than fmnist-cnn (no BatchNorm), for students."""

    def __init__(self, num_classes, input_shape, mean, std):
        super().__init__()
        c, h, w = input_shape
        self.norm = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2), 120), nn.ReLU(inplace=True),
                                    nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.fc = nn.Linear(84, num_classes)

    def forward(self, x):  # (B, C, H, W) in [0, 1]
        return self.fc(self.hidden(self.features(self.norm(x))))


class _CifarConvNet(nn.Module):
    """Conv-BN-ReLU blocks, a global max pool and one linear layer; subclasses list the blocks."""

    def __init__(self, num_classes, input_shape, mean, std):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.features = nn.Sequential(*self.blocks(input_shape[0]), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.features(self.norm(x)))


class CifarSmall(_CifarConvNet):
    """A CIFAR net: widths 32/64/128, five 3x3 convs, three pools, ~0.28M parameters."""

    @staticmethod
    def blocks(c):
        return [
            *_conv_bn(c, 32),
            *_conv_bn(32, 64), nn.MaxPool2d(2),  # 16x16
            *_conv_bn(64, 64),
            *_conv_bn(64, 128), nn.MaxPool2d(2),  # 8x8
            *_conv_bn(128, 128), nn.MaxPool2d(2),  # 4x4
        ]


class CifarFast(_CifarConvNet):
    """The CPU-sized CIFAR net: four 3x3 convs (32/64/128/128), each of the first three followed by a
    pool, so only the first conv runs at full resolution (~0.24M parameters, ~6x fewer
    multiply-adds than ``cifar-small``)."""

    @staticmethod
    def blocks(c):
        return [
            *_conv_bn(c, 32), nn.MaxPool2d(2),  # 16x16
            *_conv_bn(32, 64), nn.MaxPool2d(2),  # 8x8
            *_conv_bn(64, 128), nn.MaxPool2d(2),  # 4x4
            *_conv_bn(128, 128),
        ]


@register_model("fmnist-cnn", "2-conv CNN for 28x28 inputs (~0.42M params; ~91% on Fashion-MNIST in 3 epochs)", input_shape=(1, 28, 28))
def fmnist_cnn(*, num_classes, input_shape, mean, std):
    return FMnistCNN(num_classes, input_shape, mean, std)


@register_model("fmnist-lenet", "LeNet-5 for 28x28 inputs (~62k params, no BatchNorm): a different student architecture", input_shape=(1, 28, 28))
def fmnist_lenet(*, num_classes, input_shape, mean, std):
    return LeNet5(num_classes, input_shape, mean, std)


@register_model("cifar-small", "5-conv net, widths 32/64/128 (~0.28M params; ~85% on CIFAR-10 in 8 epochs)", input_shape=(3, 32, 32))
def cifar_small(*, num_classes, input_shape, mean, std):
    return CifarSmall(num_classes, input_shape, mean, std)


@register_model("cifar-fast", "4-conv net, widths 32/64/128/128, pooled early (~0.24M params): the CPU-sized CIFAR model", input_shape=(3, 32, 32))
def cifar_fast(*, num_classes, input_shape, mean, std):
    return CifarFast(num_classes, input_shape, mean, std)
