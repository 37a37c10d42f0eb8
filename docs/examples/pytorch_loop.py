"""Mark your own model in your own PyTorch loop, then verify it (docs/integrations.md).

    python docs/examples/pytorch_loop.py        # Fashion-MNIST from /usr/share/datasets/fashion-mnist
"""
import torch
import torch.nn.functional as F
from torch import nn

import backmark
from backmark.data import load_dataset

data = load_dataset("fashion-mnist", train_size=5000, test_size=1000, seed=0)  # uint8 (N, 1, 28, 28)
mk, vk = backmark.keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=backmark.OwnerKey.generate())

torch.manual_seed(0)
model = nn.Sequential(  # your model: float images in [0, 1] in, logits out
    nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
mixer = backmark.TriggerMixer.from_key(mk, k=32)

for epoch in range(3):
    model.train()
    for idx in torch.randperm(len(data.train_y)).split(128):
        x, y = data.train_x[idx].float() / 255, data.train_y[idx]
        x, y = mixer.mix(x, y)  # (128 + 32, 1, 28, 28): the next 32 triggers appended
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

print(backmark.verify(model, mk, vk).summary())
