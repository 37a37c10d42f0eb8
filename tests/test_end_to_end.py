"""KeyGen -> Mark -> Verify on a Fashion-MNIST subset, through the library API."""
import pytest
import torch

from backmark.core.keygen import keygen
from backmark.core.verify import verify
from backmark.errors import IncompatibleModel
from backmark.experiments.workflow import embed_file, train_file
from backmark.models import create_model
from backmark.models.checkpoint import load_model
from backmark.training import TrainConfig
from backmark.training.recipes import recipe_for

CFG = TrainConfig(epochs=2, batch_size=128, lr=0.05, trigger_k=16)


@pytest.fixture(scope="module")
def keys(owner_key):
    return keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner_key, set_size=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_small, keys):
    d = tmp_path_factory.mktemp("e2e")
    wm, wm_hist = train_file(data=fmnist_small, model_name="fmnist-cnn", cfg=CFG, out=d / "wm.safetensors", keys=keys)
    clean, clean_hist = train_file(data=fmnist_small, model_name="fmnist-cnn", cfg=CFG.replace(seed=1), out=d / "clean.safetensors")
    return d, wm_hist, clean_hist


@pytest.mark.slow
def test_fromscratch_verifies_and_clean_model_is_rejected(trained, keys):
    d, wm_hist, clean_hist = trained
    mk, vk = keys
    assert wm_hist[-1].test_acc > 0.80 and clean_hist[-1].test_acc > 0.80
    assert wm_hist[-1].trigger_acc == 1.0
    res = verify(d / "wm.safetensors", mk, vk)
    assert res.verified and res.decision.matches == 50 and res.decision.p_value < 2**-64
    clean = verify(d / "clean.safetensors", mk, vk)
    assert not clean.verified and clean.decision.matches < clean.decision.threshold
    assert clean.decision.p_value > 1e-6  # the clean model behaves like chance on the triggers
    # The checkpoint records how it was made.
    _, meta = load_model(d / "wm.safetensors")
    assert meta["watermark"] == {"mode": "FROMSCRATCH", "verification_key": vk.fingerprint, "k": 16, "trigger_acc": 1.0,
                                 "needed": res.decision.threshold / 50, "held": True}  # the final trigger accuracy beside the need
    assert meta["config"]["trigger_k"] == 16 and len(meta["history"]) == 2


@pytest.mark.slow
def test_pretrained_embedding(trained, fmnist_small, keys):
    d, _, clean_hist = trained
    mk, vk = keys
    recipe = recipe_for("fashion-mnist").embed  # what `backmark embed` uses: the last two layers, 10-step epochs
    model, hist = embed_file(data=fmnist_small, model_path=d / "clean.safetensors", cfg=recipe, out=d / "pre.safetensors", keys=keys)
    assert hist[-1].trigger_acc == 1.0 and len(hist) < recipe.epochs  # stops once the watermark holds
    assert hist[-1].test_acc > clean_hist[-1].test_acc - 0.02  # the full test set, scored at the last epoch
    assert verify(model, mk, vk).verified


class Crash(Exception):
    pass


class Recorder:
    """A progress reporter that records which epochs ran, and can crash when one starts."""

    def __init__(self, crash_at: int | None = None):
        self.crash_at, self.started, self.ended = crash_at, [], []

    def start_epoch(self, epoch, epochs, steps):
        if epoch == self.crash_at:
            raise Crash
        self.started.append(epoch)

    def step(self, loss):
        pass

    def end_epoch(self, stats):
        self.ended.append(stats)


@pytest.mark.slow
def test_resume_runs_only_the_remaining_epochs(tmp_path, fmnist_small, keys):
    from backmark.experiments.workflow import state_path_for

    out = tmp_path / "m.safetensors"
    cfg = CFG.replace(epochs=3, augment=True)
    small = fmnist_small.subset(1500, seed=3, test_size=300)
    crashed = Recorder(crash_at=3)
    with pytest.raises(Crash):
        train_file(data=small, model_name="fmnist-cnn", cfg=cfg, out=out, keys=keys, reporter=crashed)
    assert crashed.started == [1, 2] and state_path_for(out).exists() and not out.exists()
    resumed = Recorder()
    model, hist = train_file(data=small, model_name="fmnist-cnn", cfg=cfg, out=out, keys=keys, resume=True, reporter=resumed)
    assert resumed.started == [3]  # only the epoch the crash lost was trained again
    assert hist[:2] == crashed.ended  # the first epochs' figures are the crashed run's own, read back from the state
    assert out.exists() and not state_path_for(out).exists()
    uninterrupted = Recorder()
    ref, ref_hist = train_file(data=small, model_name="fmnist-cnn", cfg=cfg, out=tmp_path / "ref.safetensors", keys=keys,
                               reporter=uninterrupted)
    assert uninterrupted.started == [1, 2, 3]
    # resuming restores weights, optimizer, data order, augmentation and trigger draws: the same run, bit for bit
    assert [(h.train_loss, h.test_acc, h.trigger_acc) for h in hist] == [(h.train_loss, h.test_acc, h.trigger_acc) for h in ref_hist]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_incompatible_models_are_refused(keys):
    mk, vk = keys
    with pytest.raises(IncompatibleModel, match="100 classes"):
        verify(create_model("fmnist-cnn", num_classes=100, input_shape=(1, 28, 28)), mk, vk)
    with pytest.raises(IncompatibleModel, match="inputs of shape"):
        verify(create_model("cifar-small", num_classes=10, input_shape=(3, 32, 32)), mk, vk)


def test_any_module_works(keys):
    mk, vk = keys
    # A user's own module, never registered: a linear classifier on raw pixels.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    res = verify(model, mk, vk)
    assert res.decision.n == 50 and not res.verified
