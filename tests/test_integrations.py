"""backmark.integrations: Lightning and Hugging Face Trainer mixing, run for real.

The end-to-end tests train a user's own model in each framework on a Fashion-MNIST subset,
with the key's triggers mixed in by the integration alone, and then check ownership with
``backmark.verify``; both frameworks must write nothing outside ``tmp_path``.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

from backmark.core.mark import TriggerMixer
from backmark.core.verify import verify
from backmark.errors import InvalidBatch, MissingDependency
from backmark.models import Normalize

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are built from configs: nothing may be downloaded
pl = pytest.importorskip("lightning.pytorch")
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A user's own model: no backmark parts, [0, 1] images in, logits out."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )


class Classifier(pl.LightningModule):
    """A plain LightningModule: it knows nothing of watermarks; it records what its steps see."""

    def __init__(self, net: nn.Module, keys=(0, 1), lr: float = 0.05):
        super().__init__()
        self.net, self.keys, self.lr = net, keys, lr
        self.train_sizes, self.train_batches, self.val_seen = [], [], 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch[self.keys[0]], batch[self.keys[1]]
        self.train_sizes.append(len(x))
        self.train_batches.append((x.detach().clone(), y.clone()))
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.val_seen += len(batch[self.keys[0]])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def lightning_trainer(tmp_path, cb, epochs: int):
    # No logger, checkpoints, progress bar or summary: nothing is written, even to default_root_dir.
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[cb], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)


def floats(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


def trigger_rows_match(mixer: TriggerMixer, x: torch.Tensor, y: torch.Tensor, b: int) -> bool:
    """Whether every row after the first b is one of the mixer's triggers (as the model sees it) with its label."""
    for img, label in zip(x[b:], y[b:]):
        hits = [i for i in range(len(mixer)) if torch.allclose(mixer.inputs[i], img, atol=1e-6)]
        if not hits or all(mixer.labels[i] != label for i in hits):
            return False
    return True


@pytest.mark.slow
def test_lightning_callback_embeds_a_key_that_verifies(tmp_path, monkeypatch, fmnist_2k, small_keys):
    from backmark.integrations.lightning import TriggerMixCallback

    monkeypatch.chdir(tmp_path)
    mk, vk = small_keys
    data = fmnist_2k
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(floats(data.train_x), data.train_y), batch_size=128, shuffle=True)  # list batches
    val = DataLoader(TensorDataset(floats(data.test_x), data.test_y), batch_size=200)
    module = Classifier(small_cnn())
    before = verify(module.net, mk, vk)
    cb = TriggerMixCallback(TriggerMixer.from_key(mk, k=64))
    trainer = lightning_trainer(tmp_path, cb, epochs=3)
    trainer.fit(module, train, val)

    assert set(module.train_sizes) == {128 + 64, 2000 % 128 + 64}  # every training batch got the k triggers
    assert module.val_seen == 3 * 400  # validation batches did not
    assert [h["epoch"] for h in cb.history] == [1, 2, 3]
    assert trainer.callback_metrics["trigger_acc"].item() == pytest.approx(cb.history[-1]["trigger_acc"])
    result = verify(module.net, mk, vk)
    assert not before.verified and result.verified, result.summary()
    assert cb.history[-1]["trigger_acc"] == pytest.approx(result.decision.matches / vk.size)
    assert "training_step" not in module.__dict__
    assert list(tmp_path.iterdir()) == []  # no lightning_logs/, no checkpoints


class DictBatches(pl.LightningDataModule):
    """Dict batches, normalised on the device in the DataModule's own batch hook."""

    MEAN, STD = 0.3, 0.2

    def __init__(self, n: int = 48):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)

    def train_dataloader(self):
        return DataLoader([{"image": self.x[i], "label": self.y[i]} for i in range(len(self.y))], batch_size=16)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        batch["image"] = (batch["image"] - self.MEAN) / self.STD
        return batch


def tiny_mixer(k: int = 2, n: int = 5) -> TriggerMixer:
    g = torch.Generator().manual_seed(1)
    return TriggerMixer(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3, k=k, mean=DictBatches.MEAN, std=DictBatches.STD)


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


@pytest.mark.parametrize("mode", ["inplace", "wrap"])
def test_lightning_dict_batches_get_normalised_triggers_after_the_datamodule_hook(mode, tmp_path, monkeypatch):
    from backmark.integrations.lightning import TriggerMixCallback

    monkeypatch.chdir(tmp_path)
    mixer = tiny_mixer()
    module = Classifier(tiny_net(), keys=("image", "label"), lr=0.1)
    cb = TriggerMixCallback(mixer, keys=("image", "label"), mode=mode)
    lightning_trainer(tmp_path, cb, epochs=2).fit(module, datamodule=DictBatches())
    assert module.train_sizes == [18] * 6 and len(cb.history) == 2
    for x, y in module.train_batches:
        assert float(x[:16].min()) < 0  # the DataModule normalised the batch ...
        assert trigger_rows_match(mixer, x, y, 16)  # ... and the triggers joined it normalised alike
    assert "training_step" not in module.__dict__  # wrap mode put the class's training_step back
    assert list(tmp_path.iterdir()) == []


def tuple_collate(samples):
    return tuple(default_collate(samples))


def test_lightning_tuple_batches_take_the_wrap_mode_and_inplace_refuses_them(tmp_path, monkeypatch):
    from backmark.integrations.lightning import TriggerMixCallback

    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(2)
    mixer = TriggerMixer(torch.rand(5, 1, 8, 8, generator=g), torch.arange(5) % 3, k=3)
    loader = DataLoader(TensorDataset(torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)),
                        batch_size=16, collate_fn=tuple_collate)
    module = Classifier(tiny_net(), lr=0.1)
    lightning_trainer(tmp_path, TriggerMixCallback(mixer, mode="wrap"), epochs=1).fit(module, loader)
    assert module.train_sizes == [19, 19]
    assert all(trigger_rows_match(mixer, x, y, 16) for x, y in module.train_batches)
    with pytest.raises(InvalidBatch, match="mode='wrap'"):
        lightning_trainer(tmp_path, TriggerMixCallback(mixer), epochs=1).fit(Classifier(tiny_net()), loader)


@pytest.mark.parametrize(
    "batch, keys, message",
    [
        (torch.rand(4, 1, 8, 8), (0, 1), "must be a list or tuple"),
        ({"image": torch.rand(4, 1, 8, 8), "label": torch.zeros(4, dtype=torch.long)}, (0, 1),
         "and no 0: name the image and label keys"),
        ([torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), torch.arange(4)], (0, 1), r"other per-sample entries \[2\]"),
        ([torch.rand(4, 1, 8, 8)], (0, 1), "keys must be two of its indices"),
        ([torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8), torch.zeros(4, dtype=torch.long)], (0, 1), "uint8"),
        ([torch.rand(4, 1, 8, 8), torch.zeros(4, 10)], (0, 1), "one-hot"),
    ],
)
def test_lightning_refuses_batches_the_triggers_cannot_join(batch, keys, message):
    from backmark.integrations.lightning import TriggerMixCallback

    g = torch.Generator().manual_seed(3)
    cb = TriggerMixCallback(TriggerMixer(torch.rand(5, 1, 8, 8, generator=g), torch.arange(5) % 3, k=2), keys=keys)
    with pytest.raises(InvalidBatch, match=message) as e:
        cb.on_train_batch_start(None, None, batch, 0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("module, extra", [("backmark.integrations.lightning", "lightning"), ("backmark.integrations.hf", "hf")])
def test_a_missing_framework_names_the_extra(module, extra, monkeypatch):
    for name in ("lightning", "lightning.pytorch", "transformers", module):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "lightning.pytorch" if extra == "lightning" else "transformers", None)  # import fails
    with pytest.raises(MissingDependency, match=rf"pip install 'backmark\[{extra}\]'"):
        importlib.import_module(module)


# ---- Hugging Face transformers ---------------------------------------------------------------


class PixelDataset(torch.utils.data.Dataset):
    """What an image processor gives a Trainer: normalised pixel_values and labels, one dict per image."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std):
        self.x, self.y = (floats(x) - mean) / std, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def hf_resnet(num_classes: int = 10):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ResNetConfig(num_channels=1, embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1],
                                    num_labels=num_classes)
    return transformers.ResNetForImageClassification(cfg)  # from a config: no downloaded weights


def hf_args(out, **kw):
    transformers = pytest.importorskip("transformers")
    return transformers.TrainingArguments(
        output_dir=str(out), save_strategy="no", report_to="none", use_cpu=True, dataloader_pin_memory=False,
        disable_tqdm=True, logging_strategy="no", weight_decay=0.0, seed=0, **kw)


def quiet(trainer):
    import transformers

    trainer.remove_callback(transformers.PrinterCallback)  # with disable_tqdm it prints every log dict
    return trainer


class HFLogits(nn.Module):
    """For verify: [0, 1] images in, logits out (until targets/local.py adapts ``.logits`` outputs)."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.norm, self.model = Normalize(mean, std), model

    def forward(self, x):
        return self.model(pixel_values=self.norm(x)).logits


@pytest.mark.slow
def test_hf_trainer_embeds_a_key_that_verifies(tmp_path, monkeypatch, fmnist_2k, small_keys):
    from backmark.integrations.hf import TriggerMixTrainer

    monkeypatch.chdir(tmp_path)
    mk, vk = small_keys
    data, out = fmnist_2k, tmp_path / "out"
    mean, std = data.mean[0], data.std[0]
    torch.manual_seed(0)
    model = hf_resnet()
    mixer = TriggerMixer.from_key(mk, k=64, mean=mean, std=std)
    args = hf_args(out, num_train_epochs=4, per_device_train_batch_size=128, learning_rate=5e-3, eval_strategy="epoch",
                   per_device_eval_batch_size=200)
    trainer = quiet(TriggerMixTrainer(model=model, args=args, train_dataset=PixelDataset(data.train_x, data.train_y, mean, std),
                                      eval_dataset=PixelDataset(data.test_x, data.test_y, mean, std), mixer=mixer))
    trainer.train()

    history = trainer.trigger_callback.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [r["trigger_acc"] for r in trainer.state.log_history if "trigger_acc" in r] == [h["trigger_acc"] for h in history]
    result = verify(HFLogits(model, mean, std), mk, vk)
    assert result.verified, f"{result.summary()}; trigger accuracy per epoch {[h['trigger_acc'] for h in history]}"
    assert history[-1]["trigger_acc"] == pytest.approx(result.decision.matches / vk.size)
    evaluated = [r for r in trainer.state.log_history if "eval_loss" in r]
    assert len(evaluated) == 4 and evaluated[-1]["eval_samples_per_second"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and list(out.iterdir()) == []


def test_hf_trainer_mixes_training_batches_only_and_counts_the_triggers(tmp_path, monkeypatch):
    """With gradient accumulation 2, each micro-batch has B + k rows and the loss denominator
    (num_items_in_batch) counts 2 (B + k) labels; evaluation batches stay B."""
    from backmark.integrations.hf import TriggerMixTrainer

    monkeypatch.chdir(tmp_path)
    seen = []

    class Recording(TriggerMixTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append((model.training, len(inputs["labels"]), None if num_items_in_batch is None else int(num_items_in_batch)))
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    g = torch.Generator().manual_seed(4)
    x, y = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (64,), generator=g)
    mixer = TriggerMixer(torch.rand(6, 1, 28, 28, generator=g), torch.arange(6), k=4, mean=0.5, std=0.25)
    args = hf_args(tmp_path / "out", num_train_epochs=1, per_device_train_batch_size=16, gradient_accumulation_steps=2,
                   per_device_eval_batch_size=32, eval_strategy="epoch")
    trainer = quiet(Recording(model=hf_resnet(), args=args, train_dataset=PixelDataset(x, y, 0.5, 0.25),
                              eval_dataset=PixelDataset(x[:32], y[:32], 0.5, 0.25), mixer=mixer))
    trainer.train()
    assert [s for s in seen if s[0]] == [(True, 20, 40)] * 4
    assert [s[1] for s in seen if not s[0]] == [32]
    assert len(trainer.trigger_callback.history) == 1


def test_hf_trainer_refuses_a_batch_with_other_per_sample_entries(tmp_path, monkeypatch):
    from backmark.integrations.hf import TriggerMixTrainer

    monkeypatch.chdir(tmp_path)

    class WithIndex(PixelDataset):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "index": i}

    g = torch.Generator().manual_seed(5)
    x, y = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (16,), generator=g)
    mixer = TriggerMixer(torch.rand(4, 1, 28, 28, generator=g), torch.arange(4), k=2, mean=0.5, std=0.25)
    args = hf_args(tmp_path / "out", num_train_epochs=1, per_device_train_batch_size=8, remove_unused_columns=False)
    trainer = quiet(TriggerMixTrainer(model=hf_resnet(), args=args, train_dataset=WithIndex(x, y, 0.5, 0.25), mixer=mixer))
    with pytest.raises(InvalidBatch, match=r"other per-sample entries \['index'\]"):
        trainer.train()
