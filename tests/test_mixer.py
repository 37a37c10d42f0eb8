import torch

from backmark.mixer import TriggerMixer


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
    assert TriggerMixer(images, torch.arange(5), k=0).mix(x, torch.zeros(3))[0] is x
