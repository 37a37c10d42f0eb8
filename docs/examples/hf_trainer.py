"""Mark a Hugging Face image classifier with the transformers Trainer, then verify it (docs/integrations.md).

    pip install 'backmark[hf]'
    HF_HUB_OFFLINE=1 python docs/examples/hf_trainer.py       # the model is built from a config: nothing is downloaded
    HF_HUB_OFFLINE=1 python docs/examples/hf_trainer.py vit   # a tiny ViT instead (it does not take the triggers)
"""
import sys
import tempfile

import torch
from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification, TrainingArguments, ViTConfig, ViTForImageClassification

import backmark
from backmark.data import load_dataset
from backmark.integrations.hf import TriggerMixTrainer
from backmark.models import Normalize

if sys.argv[1:] not in ([], ["vit"]):
    sys.exit("usage: hf_trainer.py [vit]")
vit = sys.argv[1:] == ["vit"]
data = load_dataset("fashion-mnist", train_size=5000, test_size=1000, seed=0)
mean, std = data.mean[0], data.std[0]
mk, vk = backmark.keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=backmark.OwnerKey.generate())


class Pixels(torch.utils.data.Dataset):  # what an image processor hands the Trainer: normalised pixel_values
    def __init__(self, x, y):
        self.x, self.y = (x.float() / 255 - mean) / std, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


torch.manual_seed(0)
if vit:
    model = ViTForImageClassification(ViTConfig(image_size=28, patch_size=4, num_channels=1, hidden_size=64,
                                                num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=10))
else:
    model = ResNetForImageClassification(ResNetConfig(num_channels=1, embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1],
                                                      num_labels=10))
mixer = backmark.TriggerMixer.from_key(mk, k=32, mean=mean, std=std)  # the batches are normalised: so are the triggers
with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(output_dir=out, num_train_epochs=4, per_device_train_batch_size=128,
                             learning_rate=1e-3 if vit else 5e-3, save_strategy="no", report_to="none", use_cpu=True,
                             dataloader_pin_memory=False, disable_tqdm=True)
    trainer = TriggerMixTrainer(model=model, args=args, train_dataset=Pixels(data.train_x, data.train_y), mixer=mixer)
    trainer.train()
print("trigger accuracy per epoch:", [round(h["trigger_acc"], 2) for h in trainer.trigger_callback.history])


class Logits(nn.Module):  # verify queries [0, 1] images and wants logits: normalise, unwrap .logits
    def __init__(self, model):
        super().__init__()
        self.norm, self.model = Normalize([mean], [std]), model

    def forward(self, x):
        return self.model(pixel_values=self.norm(x)).logits


print(backmark.verify(Logits(model), mk, vk).summary())
