"""Empty, truncated or corrupt data files: one :class:`DataError` naming the file, also
from inside DataLoader workers, and one line with exit 2 from the CLI. (Fashion-MNIST's
IDX files: test_fashion_mnist.py.)"""

import io

import numpy as np
import pytest
from helpers import CONFIG
from PIL import Image
from torch.utils.data import DataLoader

from dscl_plugin.cli import train_main
from dscl_plugin.data import FileImageDataset, build_dataset, read_list_file
from dscl_plugin.errors import DataError


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_tree(root, damaged: bytes | None = None):
    """``root/{train,test}/{a,b}/{0..5}.png``; ``train/b/3.png`` holds ``damaged``."""
    for split in ("train", "test"):
        for c in ("a", "b"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(6):
                (folder / f"{i}.png").write_bytes(png_bytes(i))
    bad = root / "train" / "b" / "3.png"
    if damaged is not None:
        bad.write_bytes(damaged)
    return bad


@pytest.mark.parametrize("name, version", [("cifar10_lt", "10"), ("cifar100_lt", "100")])
def test_a_corrupt_cifar_batch_is_named(tmp_path, name, version):
    folder = tmp_path / ("cifar-10-batches-py" if version == "10" else "cifar-100-python")
    folder.mkdir()
    batch = folder / ("data_batch_1" if version == "10" else "train")
    batch.write_bytes(b"\x80\x04 not the published pickle")
    with pytest.raises(DataError) as error:
        build_dataset(name, "train", root=tmp_path)
    assert str(error.value) == (
        f"CIFAR{version} file '{batch}' is truncated or corrupt (its MD5 is not the published "
        "file's): delete it and set data.download=true, or copy the original there"
    )
    batch.write_bytes(b"")
    with pytest.raises(DataError, match=f"'{batch}' is empty"):
        build_dataset(name, "train", root=tmp_path)
    batch.unlink()  # nothing there: not found, which the CLI reports as data.root
    with pytest.raises(FileNotFoundError, match="not found"):
        build_dataset(name, "train", root=tmp_path)


def test_a_list_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "ImageNet_LT_train.txt"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match=f"list file '{path}' is not a text file"):
        read_list_file(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"list file '{path}' has no samples"):
        build_dataset("imagenet_lt", "train", root=tmp_path)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "is empty"),
        (png_bytes(0)[:60], "cannot be decoded (image file is truncated"),
        (b"not an image at all", "cannot be decoded (cannot identify image file"),
    ],
    ids=["empty", "truncated", "not an image"],
)
def test_a_damaged_image_is_named_even_from_a_loader_worker(tmp_path, content, problem):
    bad = image_tree(tmp_path, content)
    dataset = build_dataset("image_folder", "train", root=tmp_path)
    index = dataset.paths.index(str(bad))
    with pytest.raises(DataError) as error:
        dataset[index]
    message = str(error.value)
    assert message.startswith(f"image '{bad}' {problem}"), message
    loader = DataLoader(dataset, batch_size=len(dataset), num_workers=1)
    with pytest.raises(DataError) as error:  # re-created by PyTorch in the main process
        next(iter(loader))
    assert str(error.value) == message  # the worker's one line, not its traceback


def test_a_missing_listed_image_is_named(tmp_path):
    dataset = FileImageDataset([tmp_path / "gone.png"], [0], 1)
    with pytest.raises(DataError, match=f"image '{tmp_path / 'gone.png'}' not found"):
        dataset[0]


@pytest.mark.slow
def test_dscl_train_names_a_damaged_image_in_one_line(tmp_path, capsys):
    bad = image_tree(tmp_path / "images", b"")
    args = [
        "--config",
        CONFIG,
        "data.name=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.imbalance_factor=null",
        "trainer.num_workers=1",
        "trainer.batch_size=8",
        "trainer.epochs=1",
        "trainer.progress_bar=false",
        f"output_dir={tmp_path / 'run'}",
    ]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert (
        err.strip().splitlines()[-1].startswith(f"dscl-train: data error: image '{bad}' is empty")
    )
