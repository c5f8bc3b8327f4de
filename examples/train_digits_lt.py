"""Train DSCL + PBSD on ``digits_lt`` on the CPU, then evaluate it (under a minute, offline).

``dscl-train --config dscl_digits_lt`` (same code path and messages), with one
difference: it passes ``--resume`` by itself when ``output_dir`` holds a checkpoint, where
``dscl-train`` refuses to overwrite the run and asks for ``--resume`` (exit 1):

    python examples/train_digits_lt.py                      # official-style run on digits
    python examples/train_digits_lt.py --help               # options; any key.path=value overrides
    python examples/train_digits_lt.py trainer.epochs=5 model.pbsd_weight=0 \\
        output_dir=outputs/dscl_only

Stage 1 trains the ``small_cnn`` backbone with the DSCL + PBSD loss (long-tailed digits,
144 ... 14 images per class); stage 2 fits a class-balanced linear probe and a kNN on the
frozen features and prints overall / many / medium / few-shot accuracy. Results go to
``output_dir`` (default ``outputs/dscl_digits_lt/``: metrics.json, per_class_accuracy.png,
backbone.pt, checkpoints/, logs/). Running it again resumes an unfinished run, or says
"training finished; re-evaluating" (as ``dscl-train ... --resume`` does); a run with other
training settings needs its own ``output_dir``. Config errors print one message and exit
with code 2.
"""

import sys
from pathlib import Path

from dscl_plugin.cli import train_main

CONFIG = "dscl_digits_lt"  # a shipped preset

if __name__ == "__main__":
    prog = f"python {Path(sys.argv[0]).as_posix()}"
    sys.exit(train_main(sys.argv[1:], prog=prog, default_config=CONFIG, resume_existing=True))
