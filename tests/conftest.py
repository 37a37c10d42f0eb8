import hashlib
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

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
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # test traffic (local TSAs, servers) never goes through a proxy
    os.environ.setdefault("COLUMNS", "120")


class KeyTarget(torch.nn.Module):
    """A stand-in for a marked model: answers each trigger image's label (any other image: class 0).

    ``answer_labels=False`` answers class ``other`` (0) everywhere (a model that never saw the key).
    An in-process module (float [0, 1] in, one-hot scores out), named by its weights like any other.
    """

    def __init__(self, mk, answer_labels: bool = True, num_classes: int = 10, other: int = 0):
        super().__init__()
        self.input_shape, self.num_classes, self.other = mk.input_shape, num_classes, other
        self.table = {mk.images[i].tobytes(): y for i, y in enumerate(mk.labels)} if answer_labels else {}
        digest = hashlib.sha256(b"".join(sorted(k + bytes([v]) for k, v in self.table.items()))).digest()
        self.identity = torch.nn.Parameter(torch.tensor(list(digest), dtype=torch.float32), requires_grad=False)

    def forward(self, x):  # (B, C, H, W) float in [0, 1]
        pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        labels = torch.tensor([self.table.get(im.tobytes(), self.other) for im in pixels])
        return torch.nn.functional.one_hot(labels, self.num_classes).float()


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


@contextmanager
def serving(*args, cwd=None, timeout: float = 60):
    """``backmark serve ARGS`` in a subprocess, as a user runs it: yields (its first stdout line, the process).

    On exit it is stopped with SIGINT (uvicorn shuts down gracefully); the rest of its
    stdout is then ``proc.rest``, its exit code ``proc.returncode``.
    """
    proc = subprocess.Popen([sys.executable, "-m", "backmark", "serve", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        line = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=timeout)  # bounded: a server that never says it is ready fails the test
        assert line and line[0].strip(), (line, proc.poll())
        yield line[0], proc
    finally:
        proc.send_signal(2)
        try:
            proc.rest, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)
            raise


def write_owner_folder(d, *, set_size: int):
    """An owner's folder as keygen writes it (owner-key.pem, marking-key.json, verification-key.json):
    (owner key, marking key, verification key)."""
    from backmark.core.keygen import keygen
    from backmark.crypto import OwnerKey

    owner = OwnerKey.generate()
    owner.save(d / "owner-key.pem")
    mk, vk = keygen(input_shape=(1, 28, 28), num_classes=10, owner_key=owner, set_size=set_size, created="2026-01-01T00:00:00Z")
    mk.save(d / "marking-key.json")
    vk.save(d / "verification-key.json")
    return owner, mk, vk


@pytest.fixture(scope="session")
def tsa_a(tmp_path_factory):
    """A local RFC 3161 TSA (its own root; replies by ``openssl ts -reply``): tests/tsa.py."""
    from .tsa import LocalTSA

    return LocalTSA.create(tmp_path_factory.mktemp("tsa-a"), name="TSA A")


@pytest.fixture(scope="session")
def tsa_b(tmp_path_factory):
    """Another local TSA, under an unrelated root."""
    from .tsa import LocalTSA

    return LocalTSA.create(tmp_path_factory.mktemp("tsa-b"), name="TSA B")


@pytest.fixture(scope="session")
def tsa_roots_a(tsa_a):
    from backmark.crypto.timestamp import TsaRoots

    return TsaRoots.load(tsa_a.root_pem)
