import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # the tests (not the library) know where this checkout's data lies
DATA = Path(os.environ.get("BACKMARK_DATA") or SHARED / "data")
TRIGGER_SET = DATA / "adi2018-trigger-set"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def owner_key():
    from backmark.crypto import OwnerKey

    return OwnerKey.generate()


@pytest.fixture(scope="session")
def small_keys(owner_key):
    """A derived-label key pair of 30 abstract 1x28x28 images, 10 classes."""
    from backmark.core.keygen import keygen

    return keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner_key, set_size=30, created="2026-01-01T00:00:00Z")


@pytest.fixture(scope="session")
def fmnist_small():
    """Fashion-MNIST, 8000 training and 2000 test images (fixed subset)."""
    from backmark.data import load_dataset

    if not FMNIST_DIR.exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", train_size=8000, test_size=2000, seed=0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never write into the user's cache or home folder.
    monkeypatch.setenv("BACKMARK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("BACKMARK_DATA", str(DATA))  # data roots are passed explicitly, never guessed by the library
    monkeypatch.delenv("BACKMARK_OWNER_PASSPHRASE", raising=False)
    os.environ.setdefault("COLUMNS", "120")


@contextmanager
def backmark_serve(*args, start_timeout: float = 60):
    """``backmark serve ARGS --port 0`` in a subprocess, as a user runs it: yields (its ready line, a dict
    that holds returncode, stdout and stderr once it has stopped) and stops it with SIGINT (Ctrl-C)."""
    proc = subprocess.Popen([sys.executable, "-m", "backmark", "serve", *map(str, args), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done: dict = {}
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=start_timeout)
        assert line and line[0].startswith("serving "), (line, proc.poll())
        yield line[0], done
    finally:
        proc.send_signal(2)  # SIGINT: uvicorn shuts down gracefully
        try:
            done["stdout"], done["stderr"] = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)
            raise
        done["returncode"] = proc.returncode


class KeyTarget:
    """A stand-in for a marked model: answers each trigger image's label (any other image: class 0).

    ``answer_labels=False`` answers class 0 everywhere (a model that never saw the key).
    """

    num_classes, name = 10, "key-target"

    def __init__(self, mk, answer_labels: bool = True):
        self.input_shape = mk.input_shape
        self.table = {mk.images[i].tobytes(): y for i, y in enumerate(mk.labels)} if answer_labels else {}

    def predict(self, images):  # uint8 (N, C, H, W) -> (N,)
        import torch

        return torch.tensor([self.table.get(im.permute(1, 2, 0).contiguous().numpy().tobytes(), 0) for im in images])


MARK_CFG = dict(epochs=2, batch_size=128, lr=0.05, trigger_k=64)  # embeds 30 triggers in 2 short epochs


@pytest.fixture(scope="session")
def fmnist_2k(fmnist_small):
    """2000 training and 400 test images of Fashion-MNIST: enough for a model to learn the task and a key."""
    return fmnist_small.subset(2000, seed=0, test_size=400)


@pytest.fixture(scope="session")
def marked_fmnist(tmp_path_factory, fmnist_2k, small_keys):
    """(model, checkpoint path): fmnist-cnn trained FROMSCRATCH with ``small_keys`` on ``fmnist_2k``."""
    from backmark.experiments.workflow import train_file
    from backmark.training import TrainConfig

    path = tmp_path_factory.mktemp("marked") / "wm.safetensors"
    model, _ = train_file(data=fmnist_2k, model_name="fmnist-cnn", cfg=TrainConfig(**MARK_CFG), out=path, keys=small_keys, device="cpu")
    return model, path
