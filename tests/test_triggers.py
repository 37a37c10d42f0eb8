import os

import numpy as np
import pytest

from backmark.core.triggers import abstract_images, load_image_folder, load_labels_file
from backmark.errors import DataError

from .conftest import TRIGGER_SET


def test_abstract_images_deterministic_and_per_index():
    seed = os.urandom(32)
    a = abstract_images(seed, 8, (3, 32, 32))
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, abstract_images(seed, 8, (3, 32, 32)))
    assert np.array_equal(a[5:], abstract_images(seed, 3, (3, 32, 32), start=5))


def test_abstract_images_are_diverse_and_keys_do_not_share_them():
    a = abstract_images(os.urandom(32), 100, (1, 28, 28)).reshape(100, -1).astype(np.float32)
    b = abstract_images(os.urandom(32), 100, (1, 28, 28)).reshape(100, -1).astype(np.float32)
    assert a.std() > 40  # uses the whole intensity range
    within = np.abs(a[:, None] - a[None]).mean(-1)[~np.eye(100, dtype=bool)]
    across = np.abs(a[:, None] - b[None]).mean(-1)
    # Mean absolute pixel difference between any two images, within or across keys: far from 0.
    assert within.min() > 10 and across.min() > 10


@pytest.mark.skipif(not TRIGGER_SET.exists(), reason="paper trigger set not present")
@pytest.mark.parametrize("crop", ["resize", "center"])
def test_paper_trigger_set_loads(crop):
    imgs = load_image_folder(TRIGGER_SET / "pics", (3, 32, 32), crop=crop)
    assert imgs.shape == (100, 32, 32, 3)
    gray = load_image_folder(TRIGGER_SET / "pics", (1, 28, 28), crop=crop)
    assert gray.shape == (100, 28, 28, 1)


@pytest.mark.skipif(not TRIGGER_SET.exists(), reason="paper trigger set not present")
def test_paper_labels_pair_in_string_order():
    from backmark.core.triggers import list_images

    names = [p.name for p in list_images(TRIGGER_SET / "pics")]
    labels = load_labels_file(TRIGGER_SET / "labels-cifar.txt", 100, 10)
    pairs = dict(zip(names, labels))
    assert names[:3] == ["1.jpg", "10.jpg", "100.jpg"]
    assert (pairs["1.jpg"], pairs["10.jpg"], pairs["100.jpg"]) == (6, 2, 8)
    assert np.bincount(labels).tolist() == [11, 8, 12, 14, 12, 10, 12, 9, 8, 4]


def test_labels_file_errors(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("1\n2\n")
    with pytest.raises(DataError, match="has 2 labels"):
        load_labels_file(f, 3, 10)
    f.write_text("1\n12\n")
    with pytest.raises(DataError, match="not a class index"):
        load_labels_file(f, 2, 10)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope", (3, 32, 32))
