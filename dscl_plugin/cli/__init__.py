"""Console scripts ``dscl-train``, ``dscl-eval`` and ``dscl-compare`` (also
``python -m dscl_plugin.cli``).

    dscl-train --config PRESET_OR_FILE [key.path=value ...] [--stage 1|2] [--resume [CKPT]]
    dscl-train --data IMAGE_FOLDER [--config PRESET_OR_FILE] [key.path=value ...]
    dscl-eval  --config PRESET_OR_FILE --checkpoint outputs/.../backbone.pt [key.path=value ...]
               [--retrieval]
    dscl-compare --config PRESET_OR_FILE | --data IMAGE_FOLDER --methods M1 M2 ...
               --seeds S1 S2 ... [--out DIR] [key.path=value ...]
    dscl-train --list-configs
    python -m dscl_plugin.cli [train|eval|compare] ...

The commands parse their arguments (:mod:`.arguments`) and report errors in one line each
(:mod:`.messages`); ``--data`` makes the config of an image folder
(:mod:`dscl_plugin.training.data_folder`); :func:`dscl_plugin.runs.pipeline.run` runs the stages and
:func:`dscl_plugin.runs.compare.compare` the comparisons. ``--import MODULE`` (repeatable)
imports a module that registers a method of your own; installed packages can instead
declare an entry point in the group ``dscl_plugin.methods``.
"""

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from dscl_plugin.cli.arguments import compare_parser, parse_stage_args, require_config
from dscl_plugin.cli.messages import (
    eval_checkpoint_problem,
    how_to_go_on,
    os_error_line,
    report_errors,
    resume_hint,
)
from dscl_plugin.errors import CheckpointError, ConfigNote

__all__ = ["compare_main", "compare_parser", "eval_main", "main", "train_main"]


def _stage_main(
    prog: str,
    train: bool,
    argv: Sequence[str] | None,
    default_config: str | None = None,
    resume_existing: bool = False,
) -> int:
    args = parse_stage_args(prog, train, argv, default_config)
    from dscl_plugin.methods.build import check_method
    from dscl_plugin.runs.folder import RunFolder
    from dscl_plugin.runs.pipeline import run
    from dscl_plugin.training.config import load_config, to_yaml
    from dscl_plugin.training.registry import load_plugins

    folder: RunFolder | None = None

    def body() -> None:
        nonlocal folder
        load_plugins(args.imports)
        config = load_config(*config_and_overrides(args, output_dir=True))
        folder = RunFolder.of(config)
        if args.print_config:  # base files and overrides merged, every key, once checked
            check_method(config)
            print(to_yaml(config), end="")
        elif not train:
            problem = eval_checkpoint_problem(
                Path(args.checkpoint), args.config, args.overrides, folder.root
            )
            if problem:
                raise CheckpointError(problem)
            run(config, stage=2, checkpoint=args.checkpoint, retrieval=args.retrieval)
        else:
            resume = args.resume
            if resume is None and resume_existing and folder.last_checkpoint.exists():
                resume = "last"
            run(config, stage=args.stage, resume=resume, checkpoint=args.checkpoint)

    def on_os_error(error: OSError) -> str:
        stage1 = folder is not None and train and args.stage != 2
        last = folder.last_checkpoint if stage1 and folder is not None else None
        again = how_to_go_on(prog, argv, last, resume_existing)
        return f"{os_error_line(error, folder)}, then {again}"

    return report_errors(
        prog, body, on_os_error, lambda error: resume_hint(prog, argv, error, resume_existing)
    )


def config_and_overrides(args: argparse.Namespace, output_dir: bool) -> tuple[str, list[str]]:
    """``--config`` and the overrides, or with ``--data`` the config of that image folder,
    told in notes (:func:`~dscl_plugin.training.data_folder.data_folder_config`;
    ``output_dir``: it also names the run's folder)."""
    if getattr(args, "data", None) is None:
        return args.config, args.overrides
    from dscl_plugin.training.data_folder import data_folder_config

    made = data_folder_config(args.data, args.config, args.overrides, output_dir)
    for note in made.notes:
        warnings.warn(note, ConfigNote, stacklevel=2)
    return made.config, made.overrides


def train_main(
    argv: Sequence[str] | None = None,
    prog: str = "dscl-train",
    default_config: str | None = None,
    resume_existing: bool = False,
) -> int:
    """``dscl-train``: stage 1 then stage 2 (or ``--stage``).

    ``default_config`` makes ``--config`` optional; ``resume_existing`` resumes
    ``output_dir``'s ``last.ckpt`` without ``--resume`` (the examples use both).
    """
    return _stage_main(prog, True, argv, default_config, resume_existing)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``dscl-eval``: stage 2 for ``--checkpoint``."""
    return _stage_main("dscl-eval", False, argv)


def compare_main(argv: Sequence[str] | None = None) -> int:
    """``dscl-compare``: methods x paired seeds on one config (:mod:`dscl_plugin.runs.compare`)."""
    prog = "dscl-compare"
    argv = list(sys.argv[1:] if argv is None else argv)
    # key=value overrides may follow --seeds or --methods, whose lists would take them
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    parser = compare_parser()
    args = parser.parse_intermixed_args([a for a in argv if a not in overrides])
    require_config(parser, args)
    args.overrides = overrides
    from dscl_plugin.runs.compare import compare
    from dscl_plugin.training.registry import load_plugins

    named = Path(args.config).stem if args.data is None else Path(args.data).resolve().name
    out = args.out or f"outputs/compare_{named}"
    command = shlex.join([prog, *argv])

    def body() -> None:
        load_plugins(args.imports)
        config, overrides = config_and_overrides(args, output_dir=False)
        compare(config, args.methods, args.seeds, out, overrides, command)

    def on_os_error(error: OSError) -> str:
        again = "run the same command again: it starts only the missing runs"
        return f"{os_error_line(error, None)}, then {again}"

    def on_interrupt(error: KeyboardInterrupt) -> str:
        return (
            f"interrupted; finished runs are recorded in {out}/runs.jsonl. Run the same "
            "command again: it starts only the missing runs, the interrupted one from its "
            "checkpoint."
        )

    return report_errors(prog, body, on_os_error, on_interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dscl_plugin.cli [train|eval|compare] ...`` (train if no sub-command)."""
    args: list[str] = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "compare":
        return compare_main(args[1:])
    if args and args[0] == "eval":
        return eval_main(args[1:])
    if args and args[0] == "train":
        args = args[1:]
    return train_main(args)
