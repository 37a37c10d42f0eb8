import warnings

import pytest
import torch

from backmark.core.mark import TriggerMixer
from backmark.errors import InvalidBatch


def test_every_trigger_seen_equally_and_appended():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    mixer = TriggerMixer(images, torch.arange(10), k=3, seed=1)
    seen = []
    for _ in range(10):  # 30 draws = 3 full cycles over 10 images
        x, y = mixer.mix(torch.zeros(4, 1, 2, 2), torch.full((4,), -1))
        assert x.shape == (7, 1, 2, 2) and (y[:4] == -1).all()
        assert torch.allclose(x[4:, 0, 0, 0] * 255, y[4:].float())  # images stay paired with labels
        seen += y[4:].tolist()
    assert sorted(seen) == sorted(list(range(10)) * 3)


def test_reseed_replays_and_k0_is_identity():
    images = torch.rand(5, 1, 2, 2)
    a, b = TriggerMixer(images, torch.arange(5), k=2, seed=3), TriggerMixer(images, torch.arange(5), k=2, seed=9)
    b.reseed(3)
    assert [a.take()[1].tolist() for _ in range(4)] == [b.take()[1].tolist() for _ in range(4)]
    x = torch.rand(3, 1, 2, 2)
    assert TriggerMixer(images, torch.arange(5), k=0).mix(x, torch.zeros(3, dtype=torch.long))[0] is x


def _mixer(**kw):
    g = torch.Generator().manual_seed(0)
    return TriggerMixer(torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(6), k=2, **kw)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8), torch.zeros(3, dtype=torch.long), "uint8 pixels"),
        (torch.rand(3, 1, 4, 4) * 200 + 50, torch.zeros(3, dtype=torch.long), "divide 0..255 pixels by 255"),
        (torch.rand(3, 3, 4, 4), torch.zeros(3, dtype=torch.long), r"\(3, 4, 4\) but the trigger images are \(1, 4, 4\)"),
        (torch.rand(3, 1, 4, 4), torch.nn.functional.one_hot(torch.zeros(3, dtype=torch.long), 10).float(), "one-hot"),
        (torch.rand(3, 1, 4, 4), torch.zeros(4, dtype=torch.long), "3 class indices"),
    ],
)
def test_batches_the_triggers_cannot_join_are_refused(x, y, message):
    with pytest.raises(InvalidBatch, match=message):
        _mixer().mix(x, y)


def test_a_normalised_pipeline_gets_triggers_normalised_alike():
    mean, std = 0.3, 0.4
    mixer = _mixer(mean=mean, std=std)
    x = (torch.rand(3, 1, 4, 4) - mean) / std  # the user's normalised batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, labels = mixer.mix(x, torch.zeros(3, dtype=torch.long))
    appended, idx = out[3:], labels[3:]
    assert torch.allclose(appended, (mixer.images[idx] - mean) / std)
    assert torch.equal(mixer.inputs, (mixer.images - mean) / std)


def test_mismatched_normalisation_draws_one_warning_per_epoch():
    x = (torch.rand(3, 1, 4, 4) - 0.5) / 0.25  # normalised, but the mixer was given no mean/std
    mixer = _mixer()
    with pytest.warns(UserWarning, match="as if normalised"):
        mixer.mix(x, torch.zeros(3, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixer.mix(x, torch.zeros(3, dtype=torch.long))  # once is enough within an epoch
    with pytest.warns(UserWarning, match="as if not normalised"):
        _mixer(mean=0.5, std=0.25).mix(torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))
