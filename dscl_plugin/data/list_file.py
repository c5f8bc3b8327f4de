"""ImageNet-LT / iNaturalist-2018 / Places-LT from the standard ``path label`` list files.

Each non-empty line is ``relative/path.jpg label``; images are read lazily from
``root / relative/path.jpg`` and converted to RGB.
"""

from pathlib import Path

from dscl_plugin.data.base import FileImageDataset, Transform
from dscl_plugin.errors import DataError

# name -> (number of classes, default list file of each split, looked up under root)
LIST_FILE_SOURCES = {
    "imagenet_lt": (
        1000,
        {
            "train": "ImageNet_LT_train.txt",
            "val": "ImageNet_LT_val.txt",
            "test": "ImageNet_LT_test.txt",
        },
    ),
    "places_lt": (
        365,
        {
            "train": "Places_LT_train.txt",
            "val": "Places_LT_val.txt",
            "test": "Places_LT_test.txt",
        },
    ),
    # iNaturalist 2018 has no public test labels: its validation set is the test set.
    "inat2018": (
        8142,
        {
            "train": "iNaturalist18_train.txt",
            "val": "iNaturalist18_val.txt",
            "test": "iNaturalist18_val.txt",
        },
    ),
}


def read_list_file(path: str | Path, num_classes: int | None = None) -> tuple[list[str], list[int]]:
    """Parse ``path label`` lines into ``(paths, labels)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the file is not text, has a line without exactly two fields or with a
            label that is not an integer in ``[0, num_classes)``, or has no samples; the
            message names the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: '{path}'")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"list file '{path}' is not a text file ({error.reason})") from None
    paths, labels = [], []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"list file '{path}', line {lineno}"
        if len(fields) != 2:
            raise DataError(f"{where}: expected 'relative/path label', got {line.strip()!r}")
        try:
            label = int(fields[1])
        except ValueError:
            raise DataError(f"{where}: label {fields[1]!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise DataError(f"{where}: label {label} is not in [0, {num_classes or 'inf'})")
        paths.append(fields[0])
        labels.append(label)
    if not labels:
        raise DataError(f"list file '{path}' has no samples (expected 'relative/path label' lines)")
    return paths, labels


def list_file_dataset(
    root: str | Path,
    list_file: str | Path,
    transform: Transform | None = None,
    num_classes: int | None = None,
) -> FileImageDataset:
    """Dataset of the images listed in ``list_file``, relative to ``root``.

    ``num_classes`` defaults to the largest label + 1.
    """
    rel_paths, labels = read_list_file(list_file, num_classes)
    root = Path(root)
    paths = [root / p.lstrip("/") for p in rel_paths]
    return FileImageDataset(paths, labels, num_classes or max(labels) + 1, transform)


def named_list_file_dataset(
    name: str,
    split: str,
    transform: Transform | None = None,
    root: str | Path = "data",
    list_file: str | Path | None = None,
) -> FileImageDataset:
    """``imagenet_lt`` / ``places_lt`` / ``inat2018`` ``split`` from ``root``.

    ``list_file`` (a path as given) replaces the default ``root / <standard name>``.
    """
    num_classes, files = LIST_FILE_SOURCES[name]
    path = Path(list_file) if list_file is not None else Path(root) / files[split]
    return list_file_dataset(root, path, transform, num_classes)
