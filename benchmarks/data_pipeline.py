"""Images/s of DSCL view + patch generation: the loader path (PIL, ``DSCLTransform`` in
DataLoader workers) vs the device path (Kornia ``DeviceViews`` on a uint8 batch), and the
wall time of one stage-1 epoch of the Fashion-MNIST-LT recipe on each path.

Settings (``data.*`` augmentation of each recipe, ``num_patches`` patches per image):

- ``fashion_mnist_28px``: the Fashion-MNIST-LT training images and the augmentation of
  ``dscl_fashion_mnist_lt` (preset)` (28 px views, 2 patches of 14 px);
- ``rgb_32px``: random uint8 RGB images, 32 px views, 5 patches of 16 px, the official
  augmentation (jitter, grayscale, blur);
- ``rgb_224px``: random uint8 RGB 256 x 256 images (in memory: no file decoding),
  224 px views, 5 patches of 64 px, the official augmentation.

The loader path runs with ``--workers`` (default 0, 1, 2) workers; the device path on the
CPU (1 thread) and on CUDA when present. Images/s is images over the wall time of
``--batches`` batches after one warm-up batch. The epoch timings run ``dscl-train --stage 1``
with ``trainer.epochs=1`` (everything else as the config) in a subprocess per path.

    python -m benchmarks.data_pipeline  # writes benchmarks/results/data_pipeline.{csv,json}
    python -m benchmarks.data_pipeline --no-rates --epoch-steps 30  # the recipe, 30 steps
    python -m benchmarks.data_pipeline --quick    # a few batches, 2 epoch steps: a smoke run
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.reporting import REPO, finish, print_and_save, provenance
from dscl_plugin.data import ArrayImageDataset, build_dataset
from dscl_plugin.training.config import load_config
from dscl_plugin.transforms import DSCLTransform, PatchViewCollate
from dscl_plugin.transforms.kornia_views import DeviceViews

FASHION_CONFIG = "dscl_fashion_mnist_lt"
OFFICIAL = dict(
    crop_scale=(0.08, 1.0),
    hflip_prob=0.5,
    jitter=(0.4, 0.4, 0.4, 0.1),
    jitter_prob=0.8,
    grayscale_prob=0.2,
    blur_prob=0.5,
    key_jitter=(0.4, 0.4, 0.4, 0.0),
    num_patches=5,
)


def fashion_setting() -> dict[str, object]:
    config = load_config(FASHION_CONFIG)
    d, m = config.data, config.model
    options = dict(
        patch_size=m.patch_size,
        num_patches=m.num_patches,
        patch_scale=tuple(m.patch_scale),
        key_jitter=(*d.color_jitter[:3], 0.0),
        **d.view_augmentation(),
    )
    dataset = build_dataset(
        "fashion_mnist_lt", "train", root=d.root, imbalance_factor=d.imbalance_factor
    )
    return {"images": dataset.images, "targets": [0] * len(dataset), "options": options}


def random_setting(size: int, view: int, patch: int, count: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return {
        "images": images,
        "targets": [0] * count,
        "options": dict(input_size=view, patch_size=patch, **OFFICIAL),
    }


def loader_rate(setting: dict[str, object], workers: int, batch: int, batches: int) -> float:
    """Images/s of DataLoader(ArrayImageDataset + DSCLTransform, PatchViewCollate)."""
    dataset = ArrayImageDataset(
        setting["images"], setting["targets"], 1, DSCLTransform(**setting["options"])
    )
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=PatchViewCollate(),
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    iterator = iter(loader)
    next(iterator)  # warm-up: workers started, first batch made
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def device_rate(setting: dict[str, object], device: str, batch: int, batches: int) -> float:
    """Images/s of DeviceViews on batches gathered from a device-resident uint8 tensor."""
    images = torch.from_numpy(setting["images"])
    images = (
        (images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2))
        .contiguous()
        .to(device)
    )
    views = DeviceViews(**setting["options"])
    generator = torch.Generator().manual_seed(0)

    def one_batch() -> None:
        indices = torch.randint(len(images), (batch,), generator=generator).to(device)
        views(images[indices])
        if device == "cuda":
            torch.cuda.synchronize()

    one_batch()
    start = time.perf_counter()
    for _ in range(batches):
        one_batch()
    return batches * batch / (time.perf_counter() - start)


def epoch_seconds(pipeline: str, steps: int | None) -> float:
    """Wall time of ``dscl-train --stage 1`` of the Fashion-MNIST-LT recipe, 1 epoch (of
    ``steps`` steps if given)."""
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            "trainer.epochs=1",
            f"data.pipeline={pipeline}",
            "trainer.progress_bar=false",
            f"output_dir={out}",
        ] + ([f"trainer.limit_train_batches={steps}"] if steps else [])
        code = (
            "import sys; from dscl_plugin.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
        )
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "--config",
                str(FASHION_CONFIG),
                "--stage",
                "1",
                *overrides,
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 batches of 32 per path, 2 epoch steps"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--settings", nargs="+", default=["fashion_mnist_28px", "rgb_32px", "rgb_224px"]
    )
    parser.add_argument("--no-epoch", action="store_true", help="skip the recipe epoch timings")
    parser.add_argument("--no-rates", action="store_true", help="only the recipe epoch timings")
    parser.add_argument(
        "--epoch-steps",
        type=int,
        help="time this many steps of the epoch (default: all)",
    )
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    meta = provenance("python -m benchmarks.data_pipeline", argv)  # the code measured, at the start
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # name: (builder, batch, batches)
    settings = {
        "fashion_mnist_28px": (fashion_setting, 128, 4),
        "rgb_32px": (lambda: random_setting(32, 32, 16, 2048), 128, 4),
        "rgb_224px": (lambda: random_setting(256, 224, 64, 256), 32, 2),
    }
    rows: list[dict[str, object]] = []
    for name in [] if args.no_rates else args.settings:
        build, batch, batches = settings[name]
        batch, batches = (32, 2) if args.quick else (batch, batches)
        setting = build()
        opts = setting["options"]
        size = f"{opts['input_size']} px / {opts['num_patches']} x {opts['patch_size']} px"
        for workers in args.workers:
            rate = loader_rate(setting, workers, batch, batches)
            rows.append(
                {
                    "setting": name,
                    "views": size,
                    "path": "loader (PIL)",
                    "workers": workers,
                    "device": "cpu",
                    "batch": batch,
                    "images_per_s": round(rate, 1),
                }
            )
        for device in devices:
            rate = device_rate(setting, device, batch, batches)
            rows.append(
                {
                    "setting": name,
                    "views": size,
                    "path": "device (Kornia)",
                    "workers": 0,
                    "device": device,
                    "batch": batch,
                    "images_per_s": round(rate, 1),
                }
            )
    suffix = "_quick" if args.quick else ""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        print_and_save(
            rows,
            "View + patch generation, images/s (1 torch thread per process)",
            csv_path=str(out / f"data_pipeline{suffix}.csv"),
        )
        (out / f"data_pipeline{suffix}.json").write_text(
            json.dumps({**finish(meta), "rows": rows}, indent=2)
        )
    epochs = []
    steps = 2 if args.quick else args.epoch_steps
    for pipeline in [] if args.no_epoch else ["loader", "device"]:
        epochs.append(
            {
                "recipe": FASHION_CONFIG,
                "pipeline": pipeline,
                "steps": steps or "all",
                "stage1_wall_s": round(epoch_seconds(pipeline, steps), 1),
            }
        )
    if epochs:
        name = f"data_pipeline_epoch{suffix}" + (
            f"_{steps}steps" if steps and not args.quick else ""
        )
        print_and_save(
            epochs,
            "\nOne stage-1 epoch (trainer.epochs=1, the recipe's other settings)",
            csv_path=str(out / f"{name}.csv"),
        )
        (out / f"{name}.json").write_text(json.dumps({**finish(meta), "rows": epochs}, indent=2))
    return rows + epochs


if __name__ == "__main__":
    main()
