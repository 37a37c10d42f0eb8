import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TRIGGER_SET = SHARED / "data" / "adi2018-trigger-set"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def owner_key():
    from backmark.crypto import OwnerKey

    return OwnerKey.generate()


@pytest.fixture(scope="session")
def small_keys(owner_key):
    """A derived-label key pair of 30 abstract 1x28x28 images, 10 classes."""
    from backmark.keys import keygen

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
    monkeypatch.delenv("BACKMARK_OWNER_PASSPHRASE", raising=False)
    os.environ.setdefault("COLUMNS", "120")
