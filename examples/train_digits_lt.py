"""Train DSCL + PBSD on ``digits_lt`` on the CPU, then evaluate it (a few minutes, offline).

The same code path as ``dscl-train --config configs/dscl_digits_lt.yaml``:

    python examples/train_digits_lt.py                      # official-style run on digits
    python examples/train_digits_lt.py trainer.epochs=5     # any key.path=value override

Stage 1 trains the ``small_cnn`` backbone with the DSCL + PBSD loss (long-tailed digits,
144 ... 14 images per class); stage 2 fits a class-balanced linear probe and a kNN on the
frozen features and prints overall / many / medium / few-shot accuracy. Results go to
``outputs/dscl_digits_lt/`` (metrics.json, per_class_accuracy.png, backbone.pt,
checkpoints/last.ckpt, logs/). Running it again resumes (or just re-evaluates) that run.
"""

import sys
from pathlib import Path

from dscl_plugin.config import load_config
from dscl_plugin.pipeline import checkpoint_dir, run

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dscl_digits_lt.yaml"


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
