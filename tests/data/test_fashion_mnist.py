"""fashion_mnist_lt on a tiny IDX fixture written here (the real files are not needed)."""

import gzip
import importlib
import json
import re
import runpy
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CONFIGS, ROOT

from dscl_plugin.cli import train_main
from dscl_plugin.data import build_dataset
from dscl_plugin.data.fashion_mnist_lt import CLASS_NAMES, DEBIAN_ROOT
from dscl_plugin.data.image_folder import survey_image_folder
from dscl_plugin.errors import DataError

fmnist_module = importlib.import_module("dscl_plugin.data.fashion_mnist_lt")

CONFIG = str(CONFIGS / "dscl_fashion_mnist_lt.yaml")
PER_CLASS = {"train": 12, "test": 3}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fixture_split(split: str, seed: int):
    """Images whose first pixel is the class and second the index within the split."""
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(10), PER_CLASS[split])
    rng.shuffle(labels)
    images = rng.randint(0, 256, size=(len(labels), 28, 28)).astype(np.uint8)
    images[:, 0, 0] = labels * 20
    images[:, 0, 1] = np.arange(len(labels))
    return images, labels


def write_fixture(root: Path, compress: bool = True):
    """The four Fashion-MNIST files (gzip'd as distributed, or not) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = fixture_split(split, seed=len(prefix))
        arrays[split] = images, labels
        for name, array in (
            (f"{prefix}-images-idx3-ubyte", images),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            data = idx_bytes(array)
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress, layout", [(True, "."), (False, "FashionMNIST/raw")])
def test_reads_idx_files_as_rgb(tmp_path, compress, layout):
    arrays = write_fixture(tmp_path / layout, compress)
    for split in ("train", "test"):
        dataset = build_dataset("fashion_mnist_lt", split, root=tmp_path, imbalance_factor=1)
        images, labels = arrays[split]
        assert len(dataset) == len(labels) and dataset.targets == labels.tolist()
        assert np.array_equal(dataset.images, images)
        image, label = dataset[7]
        rgb = np.asarray(image)
        assert image.mode == "RGB" and rgb.shape == (28, 28, 3)
        assert (rgb == images[7][..., None]).all()  # the grey value in all three channels
        assert label == labels[7] and rgb[0, 0, 0] == 20 * label


def test_long_tail_counts_and_seeded_choice(tmp_path):
    images, labels = write_fixture(tmp_path)["train"]
    train = build_dataset("fashion_mnist_lt", "train", root=tmp_path, imbalance_factor=4, seed=0)
    # n_max = 12 images per class here (6000 in Fashion-MNIST): floor(12 * 4 ** (-c / 9))
    assert train.class_counts == [int(np.floor(12 * 4 ** (-c / 9))) for c in range(10)]
    assert train.class_counts[0] == 12 and train.class_counts[-1] == 3
    # the kept images are the selected originals, and the seed fixes the choice
    assert np.array_equal(train.images, images[train.indices])
    assert np.array_equal(train.targets, labels[train.indices])
    same = build_dataset("fashion_mnist_lt", "train", root=tmp_path, imbalance_factor=4, seed=0)
    other = build_dataset("fashion_mnist_lt", "train", root=tmp_path, imbalance_factor=4, seed=1)
    assert np.array_equal(same.indices, train.indices)
    assert not np.array_equal(other.indices, train.indices)
    test = build_dataset("fashion_mnist_lt", "test", root=tmp_path, imbalance_factor=4)
    assert test.class_counts == [3] * 10  # the test split is never subsampled


def test_missing_files_name_both_places_and_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_module, "DEBIAN_ROOT", tmp_path / "debian")
    with pytest.raises(FileNotFoundError) as error:
        build_dataset("fashion_mnist_lt", "train", root=tmp_path / "mine")
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message
    assert str(tmp_path / "mine") in message and str(tmp_path / "debian") in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    arrays = write_fixture(tmp_path / "debian")
    monkeypatch.setattr(fmnist_module, "DEBIAN_ROOT", tmp_path / "debian")
    test = build_dataset("fashion_mnist_lt", "test", root=tmp_path / "empty")
    assert test.targets == arrays["test"][1].tolist()


def test_mismatched_files_are_refused(tmp_path):
    write_fixture(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(5, np.uint8)))
    )
    with pytest.raises(DataError) as error:
        build_dataset("fashion_mnist_lt", "test", root=tmp_path)
    images, labels = (
        tmp_path / f"t10k-{k}-idx{n}-ubyte.gz" for k, n in (("images", 3), ("labels", 1))
    )
    assert f"'{images}' (30 images) and '{labels}' (5 labels) do not belong together" in str(
        error.value
    )


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


IMAGES = idx_bytes(np.zeros((4, 28, 28), np.uint8))
BAD_FILES = {  # file content -> what the error says about it
    "empty gzip": (gzip.compress(b""), True, "is empty"),
    "empty file": (b"", False, "is empty"),
    "truncated gzip": (truncated(gzip.compress(IMAGES)), True, "is not a complete gzip file"),
    "not gzip": (IMAGES, True, "is not a complete gzip file (Not a gzipped file"),
    "truncated IDX": (truncated(IMAGES), False, "is not a complete IDX file (truncated"),
    "header only": (IMAGES[:2], False, "is not a complete IDX file (truncated"),
    "text": (b"hello world, no IDX", False, "is not a complete IDX file"),
    "labels as images": (
        idx_bytes(np.zeros(4, np.uint8)),
        False,
        "is not a complete IDX file",
    ),
    "other image size": (
        idx_bytes(np.zeros((4, 14, 14), np.uint8)),
        False,
        "holds an array of shape (4, 14, 14), not (N, 28, 28)",
    ),
}


@pytest.mark.parametrize("content, compress, problem", BAD_FILES.values(), ids=list(BAD_FILES))
def test_a_damaged_idx_file_is_one_data_error_naming_it(tmp_path, content, compress, problem):
    write_fixture(tmp_path, compress)
    bad = tmp_path / f"train-images-idx3-ubyte{'.gz' if compress else ''}"
    bad.write_bytes(content)
    with pytest.raises(DataError) as error:
        build_dataset("fashion_mnist_lt", "train", root=tmp_path)
    message = str(error.value)
    assert message.startswith(f"Fashion-MNIST file '{bad}' {problem}"), message
    assert "\n" not in message and "apt-get install dataset-fashion-mnist" in message


def test_a_label_outside_the_classes_is_refused(tmp_path):
    write_fixture(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.full(30, 10, np.uint8))))
    with pytest.raises(DataError, match=f"'{bad}' holds label 10, not a class of 0 ... 9"):
        build_dataset("fashion_mnist_lt", "test", root=tmp_path)


def test_dscl_train_names_an_empty_idx_file_in_one_line(tmp_path, monkeypatch, capsys):
    """The user's report: an empty train-images-idx3-ubyte.gz under data.root."""
    monkeypatch.setattr(fmnist_module, "DEBIAN_ROOT", tmp_path / "no_debian_copy")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert train_main(["--config", "dscl_fashion_mnist_lt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "dscl-train: data error: Fashion-MNIST file 'data/train-images-idx3-ubyte.gz' is "
        f"empty{fmnist_module.REPLACE_HINT}"
    )


@pytest.mark.skipif(not DEBIAN_ROOT.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_real_files_long_tail_totals():
    for rho, total, last in ((100, 14886, 60), (10, 24516, 600)):
        train = build_dataset("fashion_mnist_lt", "train", root="nowhere", imbalance_factor=rho)
        assert len(train) == total and train.class_counts[0] == 6000
        assert train.class_counts[-1] == last
    assert build_dataset("fashion_mnist_lt", "test", root="nowhere").class_counts == [1000] * 10


@pytest.mark.slow
def test_dscl_train_runs_on_the_fixture(tmp_path, capsys):
    write_fixture(tmp_path / "data")
    out = tmp_path / "run"
    overrides = [
        f"data.root={tmp_path / 'data'}",
        "data.imbalance_factor=4",
        f"output_dir={out}",
        "model.queue_size=32",
        "trainer.epochs=1",
        "trainer.batch_size=16",
        "trainer.num_workers=0",
        "trainer.progress_bar=false",
        "probe.epochs=2",
        "probe.milestones=[1]",
        "eval.many_threshold=10",
        "eval.few_threshold=5",
    ]
    assert train_main(["--config", CONFIG, *overrides]) == 0
    assert "linear_probe/many" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion_mnist_lt"
    assert metrics["train_class_counts"] == [int(np.floor(12 * 4 ** (-c / 9))) for c in range(10)]
    assert set(metrics["linear_probe"]) == {"overall", "many", "medium", "few"}


def test_the_example_writes_a_long_tailed_image_folder(tmp_path, monkeypatch):
    """examples/make_image_folder.py on the fixture: the folder ``--data`` reads, written by
    a copy outside the repository as the README tells a wheel user."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`examples/make_image_folder.py` (in the repository; a copy runs anywhere)" in readme
    assert "`python make_image_folder.py --out my_images` gives 10 classes" in readme
    write_fixture(tmp_path / "idx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = shutil.copy(ROOT / "examples" / "make_image_folder.py", elsewhere)
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "my_images"
    args = ["--out", str(out), "--root", str(tmp_path / "idx"), "--n-max", "8", "--n-min", "2"]
    args += ["--test-per-class", "2", "--val-per-class", "1"]
    monkeypatch.setattr(sys, "argv", ["make_image_folder.py", *args])
    runpy.run_path(str(copy), run_name="__main__")
    survey = survey_image_folder(out)
    by_name = dict(zip(survey.class_names, survey.counts["train"]))
    names = [re.sub(r"[^\w.-]+", "_", c) for c in CLASS_NAMES]  # T-shirt/top: T-shirt_top
    assert [by_name[n] for n in names] == [8, 6, 5, 5, 4, 3, 3, 2, 2, 2]  # 8 * 4 ** (-c / 9)
    assert survey.counts["test"] == [2] * 10 and survey.counts["val"] == [1] * 10
    assert survey.grey and survey.side == 28
    test_files = {p.name for p in (out / "test").rglob("*.png")}
    assert not test_files & {p.name for p in (out / "val").rglob("*.png")}  # disjoint
