"""Train DSCL + PBSD on CIFAR-100-LT (imbalance 100, ResNet-18 with CIFAR stem), then evaluate.

The same code path as ``dscl-train --config configs/dscl_cifar100_lt.yaml``. Needs the
CIFAR-100 python archive under ``data/`` (``data.root``), or let torchvision fetch it:

    python examples/train_cifar100_lt.py data.download=true
    python examples/train_cifar100_lt.py trainer.devices=4            # 4 GPUs, DDP
    python examples/train_cifar100_lt.py model.pbsd_weight=0 model.num_patches=0   # DSCL only

200 epochs are GPU work (the schedule is in the config). Results go to
``outputs/dscl_cifar100_lt/``; running it again resumes the last checkpoint.
"""

import sys
from pathlib import Path

from dscl_plugin.config import load_config
from dscl_plugin.pipeline import checkpoint_dir, run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dscl_cifar100_lt.yaml"


def _percent(value):
    return "-" if value is None else f"{value:.1%}"


def main(overrides):
    config = load_config(CONFIG, overrides)
    resume = (checkpoint_dir(config) / "last.ckpt").exists()
    metrics = run(config, resume=resume)
    if metrics is None:  # a non-zero DDP rank; rank 0 reports
        return
    summary = ", ".join(f"{k} {_percent(v)}" for k, v in metrics["linear_probe"].items())
    print(f"\n{config.method} on {config.data.name}: {summary} ({config.output_dir}/metrics.json)")


if __name__ == "__main__":
    main(sys.argv[1:])
