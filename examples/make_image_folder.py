"""Write a long-tailed image folder from Fashion-MNIST, the layout ``dscl-train --data``
reads: ``OUT/train/<class>/<n>.png`` and ``OUT/test/<class>/<n>.png`` (and ``OUT/val/``
with ``--val-per-class``).

Train class c keeps ``floor(n_max * rho ** (-c / 9))`` images, ``rho = n_max / n_min``
(defaults 300 ... 6: 300, 194, 125, 81, 52, 34, 22, 14, 9, 6, 837 images), chosen by a
seeded shuffle; test and val are balanced. Reads Debian's IDX files
(``apt-get install dataset-fashion-mnist``) or those under ``--root``; nothing is
downloaded. Then:

    python examples/make_image_folder.py --out my_images
    dscl-train --data my_images
    dscl-compare --data my_images --methods supcon dscl --seeds 0 1 2
"""

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image

from dscl_plugin.data import long_tail_counts, select_per_class
from dscl_plugin.data.fashion_mnist_lt import CLASS_NAMES, NUM_CLASSES, load_split


def folder_name(class_name: str) -> str:
    """A class name as a folder name: ``T-shirt/top`` -> ``T-shirt_top``."""
    return re.sub(r"[^\w.-]+", "_", class_name)


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> None:
    """``images[keep]`` as grey PNGs in ``folder/<class>/``."""
    for index in keep:
        target = folder / folder_name(CLASS_NAMES[labels[index]]) / f"{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write (must not exist)")
    parser.add_argument("--n-max", type=int, default=300, help="train images of class 0")
    parser.add_argument("--n-min", type=int, default=6, help="train images of the last class")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=0, help="0: no val/ split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="data", help="where else to look for the IDX files")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        parser.error(f"--out {out} exists; name a new folder")
    images, labels = load_split(Path(args.root), "train")
    counts = long_tail_counts(args.n_max, NUM_CLASSES, args.n_max / args.n_min)
    write_split(out / "train", images, labels, select_per_class(labels, counts, args.seed))
    test_images, test_labels = load_split(Path(args.root), "test")
    per_class = args.test_per_class + args.val_per_class
    held_out = select_per_class(test_labels, [per_class] * NUM_CLASSES, args.seed)
    first = np.isin(np.arange(len(test_labels)), held_out)
    rank = np.zeros(len(test_labels), dtype=int)  # position of each held-out image in its class
    for c in range(NUM_CLASSES):
        rank[held_out[test_labels[held_out] == c]] = np.arange(per_class)
    test = np.flatnonzero(first & (rank < args.test_per_class))
    write_split(out / "test", test_images, test_labels, test)
    if args.val_per_class:
        val = np.flatnonzero(first & (rank >= args.test_per_class))
        write_split(out / "val", test_images, test_labels, val)
    print(f"{out}: train {counts} images per class, test {args.test_per_class} per class")


if __name__ == "__main__":
    main()
