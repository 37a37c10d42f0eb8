"""Mark a LightningModule with backmark's callback, then verify it (docs/integrations.md).

    pip install 'backmark[lightning]'
    python docs/examples/lightning_callback.py
"""
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import backmark
from backmark.data import load_dataset
from backmark.integrations.lightning import TriggerMixCallback


class Classifier(pl.LightningModule):  # an ordinary LightningModule: nothing about watermarks
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


data = load_dataset("fashion-mnist", train_size=5000, test_size=1000, seed=0)
mk, vk = backmark.keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=backmark.OwnerKey.generate())
loader = DataLoader(TensorDataset(data.train_x.float() / 255, data.train_y), batch_size=128, shuffle=True)

torch.manual_seed(0)
model = Classifier()
cb = TriggerMixCallback(backmark.TriggerMixer.from_key(mk, k=32))
trainer = pl.Trainer(max_epochs=3, accelerator="cpu", callbacks=[cb], logger=False, enable_checkpointing=False,
                     enable_progress_bar=False)
trainer.fit(model, loader)

print("trigger accuracy per epoch:", [round(h["trigger_acc"], 2) for h in cb.history])
print(backmark.verify(model, mk, vk).summary())
