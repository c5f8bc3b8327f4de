"""A whole run: stage 1 then stage 2 (or one of them), as ``dscl-train`` and ``dscl-eval``
run it."""

import shlex
import sys
from typing import Any

from dscl_plugin.methods import check_method
from dscl_plugin.runs.compute import torch_threads
from dscl_plugin.runs.folder import Resume, RunFolder, resumes_finished
from dscl_plugin.runs.stage1 import train
from dscl_plugin.runs.stage2 import evaluate
from dscl_plugin.safe_io import PathLike
from dscl_plugin.training.schema import Config


def run(
    config: Config,
    stage: int | None = None,
    resume: Resume = None,
    checkpoint: PathLike | None = None,
    retrieval: bool = False,
) -> dict[str, Any] | None:
    """Stage 1 then stage 2 (or only ``stage``) with ``trainer.num_threads`` CPU threads;
    returns the metrics on the main process. ``resume`` of a finished run only
    re-evaluates it. ``checkpoint`` and ``retrieval``: see
    :func:`~dscl_plugin.runs.stage2.evaluate`.

    Raises:
        ConfigError: an unknown method, the method's own config problems, or data not found.
        CheckpointError: see :func:`~dscl_plugin.runs.folder.resolve_resume`.
    """
    check_method(config)
    with torch_threads(config.trainer.num_threads):
        module = None
        if stage in (None, 1) and resume not in (None, False) and resumes_finished(config, resume):
            then = "; re-evaluating" if stage is None else ""
            print(f"{config.output_dir}: training finished{then}", file=sys.stderr)
        elif stage in (None, 1):
            module = train(config, resume)
            if module is None:  # a non-zero DDP rank: rank 0 evaluates
                return None
        if stage == 1:
            print(next_step(RunFolder.of(config)))
        if stage in (None, 2):
            return evaluate(config, module, checkpoint, retrieval)
    return None


def next_step(folder: RunFolder) -> str:
    """Where stage 1 left the backbone, and the ``dscl-eval`` command that scores it."""
    config, backbone = (shlex.quote(str(p)) for p in (folder.config_file, folder.backbone))
    return (
        f"stage 1 finished: the backbone is {backbone}; evaluate it (stage 2) with:\n"
        f"  dscl-eval --config {config} --checkpoint {backbone}"
    )
