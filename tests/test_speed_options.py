"""Speed options of the training loop: bf16 autocast, channels_last, torch.compile, data placement, frozen layers."""

import pytest
import torch

from backmark.core.mark import TriggerMixer
from backmark.models import create_model
from backmark.training import TrainConfig, train, use_compile

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(fmnist_small):
    return fmnist_small.subset(1500, seed=2, test_size=500)


def fresh(data, name="fmnist-cnn"):
    torch.manual_seed(0)
    return create_model(name, num_classes=data.num_classes, input_shape=data.input_shape, mean=data.mean, std=data.std)


def mixer(k=2):
    g = torch.Generator().manual_seed(5)
    return TriggerMixer(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (20,), generator=g), k=k)


def test_compile_is_off_by_default_and_auto_means_cuda_only():
    cfg = TrainConfig()
    assert cfg.compile == "off" and cfg.precision == "fp32" and cfg.channels_last and cfg.data_on_device is None
    assert not use_compile(cfg, "cpu") and not use_compile(cfg, "cuda")
    auto = cfg.replace(compile="auto")
    assert not use_compile(auto, "cpu") and use_compile(auto, "cuda:0") and use_compile(cfg.replace(compile="on"), "cpu")


def test_new_options_are_validated_and_old_configs_still_load():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="yes")
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("precision", "compile", "data_on_device")}
    assert TrainConfig.from_dict(old) == TrainConfig()  # checkpoints written before these fields existed


def test_bf16_autocast_trains_on_cpu(tiny):
    model = fresh(tiny)
    hist = train(model, tiny, TrainConfig(epochs=2, batch_size=64, precision="bf16"), mixer=mixer(), device="cpu")
    assert hist[-1].train_loss < hist[0].train_loss
    assert hist[-1].test_acc > 0.6  # well above chance (0.1) after ~50 steps
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay fp32


def test_channels_last_gives_the_same_training_as_contiguous(tiny):
    cfg = TrainConfig(epochs=1, batch_size=100, augment=True)
    a = train(fresh(tiny), tiny, cfg, mixer=mixer(), device="cpu")[-1]
    b = train(fresh(tiny), tiny, cfg.replace(channels_last=False), mixer=mixer(), device="cpu")[-1]
    # Same data order, augmentation and triggers: only the memory layout (and float rounding) differs.
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)
    assert a.test_acc == pytest.approx(b.test_acc, abs=0.01)


def test_training_only_chosen_parameters_freezes_the_rest_and_restores_flags(tiny):
    model = fresh(tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, tiny, TrainConfig(epochs=1, batch_size=100), params=model.fc.parameters(), device="cpu")
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"fc.weight", "fc.bias"}
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))


def test_config_records_the_speed_options_and_refuses_unknown_ones():
    cfg = TrainConfig(precision="bf16", compile="on", channels_last=False, data_on_device=False)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what a checkpoint records is what the run used
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="yes")
    with pytest.raises(ValueError, match="unknown training options: prec"):
        TrainConfig.from_dict({"prec": "bf16"})


@CUDA
def test_cuda_pinned_host_batches_match_device_resident_data(tiny):
    cfg = TrainConfig(epochs=1, batch_size=100, augment=True, compile="off")
    a = train(fresh(tiny), tiny, cfg.replace(data_on_device=True), mixer=mixer(), device="cuda")[-1]
    b = train(fresh(tiny), tiny, cfg.replace(data_on_device=False), mixer=mixer(), device="cuda")[-1]
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3) and a.test_acc == pytest.approx(b.test_acc, abs=0.01)


@CUDA
def test_cuda_bf16_and_compile_train(tiny):
    hist = train(fresh(tiny), tiny, TrainConfig(epochs=2, batch_size=64, precision="bf16", compile="on"), mixer=mixer(), device="cuda")
    assert hist[-1].test_acc > 0.6 and hist[-1].train_loss < hist[0].train_loss
