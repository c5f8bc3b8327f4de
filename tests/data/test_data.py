"""Long-tailed datasets, list files, image folders, the class-balanced sampler, shot groups."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import ToTensor

from dscl_plugin.data import (
    DATASET_NAMES,
    FILE_DATASETS,
    IN_MEMORY_DATASETS,
    ArrayImageDataset,
    ClassBalancedSampler,
    build_dataset,
    empty_groups,
    long_tail_counts,
    read_list_file,
    shot_groups,
)
from dscl_plugin.errors import DataError


def fake_cifar(num_classes, per_class_train, per_class_test=10):
    """A torchvision CIFAR stand-in with 1x1 images whose pixel encodes the index."""

    class FakeCIFAR:
        def __init__(self, root, train=True, download=False):
            per_class = per_class_train if train else per_class_test
            self.targets = [i % num_classes for i in range(num_classes * per_class)]
            n = len(self.targets)
            self.data = np.zeros((n, 1, 1, 3), dtype=np.uint8)
            self.data[:, 0, 0, 0] = np.arange(n) % 256
            self.classes = [f"class {c}" for c in range(num_classes)]  # as torchvision's

    return FakeCIFAR


@pytest.mark.parametrize(
    "name, source, num_classes, n_max, total",
    [
        ("cifar100_lt", "CIFAR100", 100, 500, 10847),
        ("cifar10_lt", "CIFAR10", 10, 5000, 12406),
    ],
)
def test_cifar_lt_class_counts(monkeypatch, name, source, num_classes, n_max, total):
    monkeypatch.setattr(torchvision.datasets, source, fake_cifar(num_classes, n_max))
    train = build_dataset(name, "train", root="unused", imbalance_factor=100, seed=0)
    counts = train.class_counts
    assert len(train) == total == sum(counts)
    assert counts[0] == n_max and counts[-1] == n_max // 100
    assert counts == sorted(counts, reverse=True)
    mid = num_classes // 2
    assert counts[mid] == np.floor(n_max * 100 ** (-mid / (num_classes - 1)))
    assert train.num_classes == num_classes and train.targets == [int(t) for t in train.targets]
    assert train.class_names == [f"class {c}" for c in range(num_classes)]  # plots name classes
    # the kept images are the selected ones (pixel encodes the index)
    image, label = train[5]
    assert image.mode == "RGB" and label == train.targets[5]
    assert image.getpixel((0, 0))[0] == train.indices[5] % 256
    again = build_dataset(name, "train", root="unused", imbalance_factor=100, seed=0)
    assert np.array_equal(train.indices, again.indices)
    test = build_dataset(name, "test", root="unused")
    assert test.class_counts == [10] * num_classes


def test_cifar_missing_says_download(tmp_path):
    message = r"(?s)CIFAR10.*not found.*data.download=true"
    with pytest.raises(FileNotFoundError, match=message) as err:
        build_dataset("cifar10_lt", "train", root=tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_long_tail_counts():
    assert long_tail_counts(100, 3, 100) == [100, 10, 1]
    assert long_tail_counts(7, 4, 1) == [7, 7, 7, 7]
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail_counts(10, 3, 0.5)


def _png(path, value=128, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (4, 4), value).save(path)


def test_list_file_dataset(tmp_path):
    _png(tmp_path / "train" / "a.png", 10)
    _png(tmp_path / "train" / "b.png", 200)
    (tmp_path / "ImageNet_LT_train.txt").write_text("train/a.png 3\n\ntrain/b.png 999\n")
    data = build_dataset("imagenet_lt", "train", ToTensor(), root=tmp_path)
    assert data.targets == [3, 999] and data.num_classes == 1000 and len(data) == 2
    image, label = data[1]
    assert label == 999 and image.shape == (3, 4, 4)
    assert torch.allclose(image, torch.full((3, 4, 4), 200 / 255))
    # an explicit list file, read as given
    other = tmp_path / "lists" / "mine.txt"
    other.parent.mkdir()
    other.write_text("train/b.png 7\n")
    data = build_dataset("places_lt", "test", None, root=tmp_path, list_file=other)
    assert data.targets == [7] and data.num_classes == 365 and data[0][0].mode == "RGB"


@pytest.mark.parametrize(
    "line, message",
    [
        ("train/b.png 1 2", "expected 'relative/path label'"),
        ("train/b.png", "expected 'relative/path label'"),
        ("train/b.png one", "label 'one' is not an integer"),
        ("train/b.png -1", r"label -1 is not in \[0, 1000\)"),
        ("train/b.png 1000", r"label 1000 is not in \[0, 1000\)"),
    ],
)
def test_list_file_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "ImageNet_LT_train.txt"
    path.write_text(f"train/a.png 0\n{line}\n")
    with pytest.raises(DataError, match=message) as err:
        build_dataset("imagenet_lt", "train", root=tmp_path)
    assert f"list file '{path}', line 2" in str(err.value)


def test_list_file_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="iNaturalist18_val.txt"):
        build_dataset("inat2018", "test", root=tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="has no samples"):
        read_list_file(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=r"imbalance_factor must be None \(null in a config\)"):
        build_dataset("imagenet_lt", "train", root=tmp_path, imbalance_factor=10)


def test_image_folder_imbalance(tmp_path):
    for cls, n in (("a", 8), ("b", 6), ("c", 4)):
        for i in range(n):
            _png(tmp_path / "train" / cls / f"{i}.png", mode="RGB")
            _png(tmp_path / "test" / cls / f"{i}.png", mode="RGB")
    full = build_dataset("image_folder", "train", root=tmp_path)
    assert full.class_counts == [8, 6, 4] and full.num_classes == 3
    lt = build_dataset("image_folder", "train", ToTensor(), root=tmp_path, imbalance_factor=4)
    assert lt.class_counts == [8, 4, 2]  # 8 * 4 ** (-c / 2)
    assert lt[len(lt) - 1][0].shape == (3, 4, 4) and lt[len(lt) - 1][1] == 2
    flat = build_dataset("image_folder", "train", root=tmp_path, imbalance_factor=1.5)
    assert flat.class_counts == [
        8,
        6,
        4,
    ]  # min(available, floor(8 * 1.5 ** (-c / 2)) = 8, 6, 5)
    test = build_dataset("image_folder", "test", root=tmp_path, imbalance_factor=4)
    assert test.class_counts == [8, 6, 4]
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        build_dataset("image_folder", "val", root=tmp_path)


def test_digits_lt_profile_and_splits():
    train = build_dataset("digits_lt", "train", ToTensor(), imbalance_factor=10, input_size=32)
    test = build_dataset("digits_lt", "test", None, input_size=16)
    assert train.class_counts == [144, 111, 86, 66, 51, 40, 31, 24, 18, 14]
    assert test.class_counts == [30] * 10 and train.num_classes == 10
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.min() >= 0.0 and image.max() <= 1.0
    assert isinstance(label, int) and label == train.targets[0]
    assert test[0][0].size == (16, 16) and test[0][0].mode == "RGB"
    assert max(np.asarray(test[i][0]).max() for i in range(10)) > 200  # 0-16 scaled to 0-255
    assert not set(train.indices) & set(test.indices)
    assert np.array_equal(
        build_dataset("digits_lt", "train", None, imbalance_factor=10).indices,
        train.indices,
    )
    other = build_dataset("digits_lt", "train", None, imbalance_factor=10, seed=1)
    assert other.class_counts == train.class_counts
    assert not np.array_equal(other.indices, train.indices)
    rho50 = build_dataset("digits_lt", "train", None, imbalance_factor=50)
    assert rho50.class_counts == [144, 93, 60, 39, 25, 16, 10, 6, 4, 2]
    for counts in (train.class_counts, rho50.class_counts):
        groups = shot_groups(counts, many_threshold=60, few_threshold=20)
        assert all(groups[g] for g in ("many", "medium", "few"))
    with pytest.raises(ValueError, match=r"name must be one of \['digits_lt', .*got 'mnist'"):
        build_dataset("mnist", "train")
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\] for digits_lt"):
        build_dataset("digits_lt", "val")


def test_class_balanced_sampler_balances_classes():
    targets = [0] * 900 + [1] * 90 + [2] * 10
    generator = torch.Generator().manual_seed(0)
    sampler = ClassBalancedSampler(targets, num_samples=30000, generator=generator)
    indices = torch.tensor(list(sampler))
    assert len(sampler) == len(indices) == 30000
    freq = torch.bincount(torch.tensor(targets)[indices], minlength=3) / 30000
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.015)
    within = torch.bincount(indices[indices >= 990] - 990, minlength=10).float()
    assert within.min() > 0.7 * within.mean() and within.max() < 1.3 * within.mean()
    default = ClassBalancedSampler(targets)
    assert len(list(default)) == len(default) == 1000
    repeat = ClassBalancedSampler(targets, 50, torch.Generator().manual_seed(3))
    assert list(repeat) == list(ClassBalancedSampler(targets, 50, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="non-empty"):
        ClassBalancedSampler([])
    with pytest.raises(ValueError, match="num_samples"):
        ClassBalancedSampler(targets, num_samples=0)


def test_shot_groups_thresholds_and_empty_groups():
    counts = [500, 101, 100, 20, 19, 0]
    assert shot_groups(counts) == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    assert shot_groups([30, 40], many_threshold=100, few_threshold=20) == {
        "many": [],
        "medium": [0, 1],
        "few": [],
    }
    with pytest.raises(ValueError, match="few_threshold"):
        shot_groups(counts, many_threshold=10, few_threshold=20)
    assert empty_groups(counts) == {}
    assert empty_groups([30, 40], many_threshold=100, few_threshold=20) == {
        "many": "no class has > 100 training images",
        "few": "no class has < 20 training images",
    }
    assert empty_groups([300, 6], 100, 20) == {"medium": "no class has 20 ... 100 training images"}


def test_in_memory_datasets_are_listed_once_and_have_fixed_splits():
    assert (*IN_MEMORY_DATASETS, *FILE_DATASETS) == DATASET_NAMES
    for name in IN_MEMORY_DATASETS:
        with pytest.raises(
            ValueError, match=rf"split must be one of \['train', 'test'\] for {name}"
        ):
            build_dataset(name, "val")
    assert isinstance(build_dataset("digits_lt", "test"), ArrayImageDataset)
