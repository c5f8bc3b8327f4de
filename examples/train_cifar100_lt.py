"""Train DSCL + PBSD on CIFAR-100-LT (imbalance 100, ResNet-18 with CIFAR stem), then evaluate.

``dscl-train --config dscl_cifar100_lt`` (same code path and messages), except
that it passes ``--resume`` by itself when ``output_dir`` holds a checkpoint.
Needs the CIFAR-100 python archive under ``data/`` (``data.root``), or let torchvision
fetch it:

    python examples/train_cifar100_lt.py data.download=true
    python examples/train_cifar100_lt.py trainer.devices=4            # 4 GPUs, DDP
    python examples/train_cifar100_lt.py model.pbsd_weight=0 model.num_patches=0 \\
        output_dir=outputs/dscl_only_c100

200 epochs are GPU work (the schedule is in the config). Results go to ``output_dir``
(default ``outputs/dscl_cifar100_lt/``); running it again resumes the last checkpoint,
or re-evaluates a finished run.
"""

import sys
from pathlib import Path

from dscl_plugin.cli import train_main

CONFIG = "dscl_cifar100_lt"  # a shipped preset

if __name__ == "__main__":
    prog = f"python {Path(sys.argv[0]).as_posix()}"
    sys.exit(train_main(sys.argv[1:], prog=prog, default_config=CONFIG, resume_existing=True))
