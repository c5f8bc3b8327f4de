"""Console scripts ``dscl-train``, ``dscl-eval`` and ``dscl-compare`` (also
``python -m dscl_plugin.cli``).

    dscl-train --config PRESET_OR_FILE [key.path=value ...] [--stage 1|2] [--resume [CKPT]]
    dscl-eval  --config PRESET_OR_FILE --checkpoint outputs/.../backbone.pt [key.path=value ...]
               [--retrieval]
    dscl-compare --config PRESET_OR_FILE --methods M1 M2 ... --seeds S1 S2 ... [--out DIR]
               [key.path=value ...]
    dscl-train --list-configs
    python -m dscl_plugin.cli [train|eval|compare] ...

The commands parse their arguments and report errors;
:func:`dscl_plugin.runs.pipeline.run` runs the stages. ``--import MODULE`` (repeatable)
imports a module that registers a method of your own; installed packages can instead
declare an entry point in the group ``dscl_plugin.methods``.
"""

import argparse
import errno
import shlex
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dscl_plugin.errors import CheckpointError, ConfigError, ConfigNote, DataError

if TYPE_CHECKING:
    from dscl_plugin.runs.folder import RunFolder

_TRAIN_OVERRIDES = "config overrides such as trainer.epochs=5 model.beta=4 (OmegaConf dotlist)"
_EVAL_OVERRIDES = "config overrides such as probe.epochs=10 eval.knn_k=20 (OmegaConf dotlist)"
_EXAMPLE_EPILOG = (
    "Unlike dscl-train, running this again resumes output_dir's last checkpoint without "
    "--resume (a finished run is only re-evaluated): it is dscl-train with --resume when "
    "output_dir/checkpoints/last.ckpt exists."
)


class _ListPresets(argparse.Action):
    """``--list-configs``: prints each shipped preset's name and description, then exits."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from dscl_plugin.training.presets import preset_description, preset_names

        names = preset_names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {preset_description(name)}")
        parser.exit()


def _parser(prog: str, train: bool, default_config: str | None) -> argparse.ArgumentParser:
    description = (
        "Train (stage 1) and evaluate with a frozen linear probe and kNN (stage 2)."
        if train
        else "Evaluate a trained backbone (stage 2): linear probe, kNN, shot-group accuracy."
    )
    epilog = _EXAMPLE_EPILOG if train and default_config is not None else None
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    if default_config is None:
        parser.add_argument(
            "--config",
            required=True,
            help="a shipped preset by name (e.g. dscl_digits_lt; --list-configs lists them) "
            "or a YAML file",
        )
    else:
        parser.add_argument("--config", default=default_config, help="YAML (default: %(default)s)")
    parser.add_argument(
        "--list-configs", action=_ListPresets, help="list the shipped presets and exit"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.path=value",
        help=_TRAIN_OVERRIDES if train else _EVAL_OVERRIDES,
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (a dotted name or a .py file) first, e.g. one that registers "
        "a method with @dscl_plugin.register_method; repeatable",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the merged config as YAML and exit",
    )
    if train:
        parser.add_argument("--stage", type=int, choices=(1, 2), help="run only stage 1 or 2")
        parser.add_argument(
            "--resume",
            nargs="?",
            const="last",
            metavar="CKPT",
            help="resume stage 1 from CKPT (default: output_dir/checkpoints/last.ckpt); "
            "a finished run is only re-evaluated",
        )
        parser.add_argument(
            "--checkpoint",
            help="weights for --stage 2 (default: output_dir/backbone.pt)",
        )
    else:
        parser.add_argument(
            "--checkpoint",
            required=True,
            help="backbone.pt (state_dict) or a training *.ckpt",
        )
        parser.add_argument(
            "--retrieval",
            action="store_true",
            help="also write retrieval.png and patch_retrieval.png (nearest training images "
            "of head/medium/tail test queries) beside metrics.json",
        )
    return parser


def _parse(
    prog: str, train: bool, argv: Sequence[str] | None, default_config: str | None
) -> argparse.Namespace:
    parser = _parser(prog, train, default_config)
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        parser.exit(2, f"{prog}: error: {_unknown_options(prog, argv, unknown)}\n")
    resume = getattr(args, "resume", None)
    if resume not in (None, "last") and "=" in resume and not Path(resume).is_file():
        # ``--resume key=value``: the bare flag followed by an override
        args.overrides.append(resume)
        args.resume = "last"
    return args


def _unknown_options(prog: str, argv: list[str], unknown: list[str]) -> str:
    """Why ``unknown`` arguments are refused; a flag named like a config key
    (``--epochs 1``) is shown as the override it means (``trainer.epochs=1``)."""
    from dscl_plugin.training.config import keys_like

    for option in unknown:
        name, equals, value = option.partition("=")
        keys = keys_like(name.lstrip("-")) if name.startswith("--") else []
        if not keys:
            continue
        after = argv[argv.index(option) + 1 :] if option in argv else []
        if not equals and after and not after[0].startswith("-") and "=" not in after[0]:
            value = after[0]
        shown = [f"{key}={value or '...'}" for key in keys]
        others = f" (or {', '.join(shown[1:])})" if len(shown) > 1 else ""
        return (
            f"unrecognized option {name}: config keys are set as key.path=value, "
            f"e.g. {shown[0]}{others}"
        )
    return f"unrecognized arguments: {' '.join(unknown)} ({prog} --help lists the options)"


def _main(
    prog: str,
    train: bool,
    argv: Sequence[str] | None,
    default_config: str | None = None,
    resume_existing: bool = False,
) -> int:
    args = _parse(prog, train, argv, default_config)
    from dscl_plugin.runs.folder import RunFolder
    from dscl_plugin.runs.pipeline import run
    from dscl_plugin.training.config import load_config, to_yaml
    from dscl_plugin.training.methods import NonFiniteLossError
    from dscl_plugin.training.registry import load_plugins

    config = None
    try:
        load_plugins(args.imports)
        with _notes(prog):
            config = load_config(args.config, args.overrides)
        if args.print_config:  # base files and overrides merged, every key
            print(to_yaml(config), end="")
            return 0
        if not train:
            run(config, stage=2, checkpoint=args.checkpoint, retrieval=args.retrieval)
            return 0
        resume = args.resume
        if resume is None and resume_existing and RunFolder.of(config).last_checkpoint.exists():
            resume = "last"
        run(config, stage=args.stage, resume=resume, checkpoint=args.checkpoint)
    except (ConfigError, DataError, ImportError) as error:
        print(f"{prog}: {_kind(error)} error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, NonFiniteLossError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        folder = None if config is None else RunFolder.of(config)
        last = None if folder is None or not train or args.stage == 2 else folder.last_checkpoint
        again = _again(prog, argv, last, resume_existing)
        print(f"{prog}: error: {_os_error(error, folder)}, then {again}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(
            f"{prog}: {_resume_hint(prog, argv, error, resume_existing)}",
            file=sys.stderr,
        )
        return 130
    return 0


@contextmanager
def _notes(prog: str) -> Iterator[None]:
    """Inside the block, each :class:`ConfigNote` warning (raised once a config is valid)
    is one line of stderr, ``prog: note: ...``, printed once; other warnings as usual."""
    show, printed = warnings.showwarning, set()

    def one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, ConfigNote):
            show(message, category, filename, lineno, file, line)
        elif str(message) not in printed:
            printed.add(str(message))
            print(f"{prog}: note: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ConfigNote)
        warnings.showwarning = one_line
        yield


def _kind(error: Exception) -> str:
    """``config``, ``data`` or ``import``: the kind of error exit code 2 reports."""
    if isinstance(error, ConfigError):
        return "config"
    return "data" if isinstance(error, DataError) else "import"


# errno -> what to do before running again
_OS_FIXES = {
    errno.ENOSPC: "free space on its disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EACCES: "make it writable, or set output_dir= to a folder you can write",
    errno.EPERM: "make it writable, or set output_dir= to a folder you can write",
    errno.EROFS: "set output_dir= to a folder on a writable disk",
}


def _os_error(error: OSError, folder: "RunFolder | None") -> str:
    """The path an OS error names (else the run's folder), why, and what to do."""
    path = error.filename or (None if folder is None else folder.root)
    where = f": '{path}'" if path else ""
    fix = _OS_FIXES.get(error.errno or 0, "fix that")
    return f"{error.strerror or error}{where}. {fix[0].upper()}{fix[1:]}"


def _command(prog: str, argv: Sequence[str] | None, resume: bool) -> str:
    """The command that was run, with ``--resume`` when ``resume`` (once)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if resume and "--resume" not in args:
        args.append("--resume")
    return " ".join([prog, *map(shlex.quote, args)])


def _again(prog: str, argv: Sequence[str] | None, last: Path | None, resume_existing: bool) -> str:
    """How to go on after a failure: resume from stage 1's ``last`` checkpoint where there
    is one (the examples resume by themselves), else run the same command again."""
    if last is None or not last.is_file():
        return f"run the same command again: {_command(prog, argv, False)}"
    return (
        f"resume from the last complete checkpoint '{last}' with: "
        f"{_command(prog, argv, not resume_existing)}"
    )


def _resume_hint(
    prog: str,
    argv: Sequence[str] | None,
    error: KeyboardInterrupt,
    resume_existing: bool,
) -> str:
    """What an interrupted user runs next: the same command, with ``--resume``."""
    checkpoint = getattr(error, "checkpoint", None)
    if checkpoint is None or not Path(checkpoint).is_file():
        return "interrupted before the first checkpoint; run the same command to start again."
    command = _command(prog, argv, not resume_existing)
    return f"interrupted; the last complete checkpoint is '{checkpoint}'. Resume with:\n  {command}"


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
    return _main(prog, True, argv, default_config, resume_existing)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``dscl-eval``: stage 2 for ``--checkpoint``."""
    return _main("dscl-eval", False, argv)


def compare_parser() -> argparse.ArgumentParser:
    """The arguments of ``dscl-compare`` (its ``--help`` lists the methods)."""
    from dscl_plugin.runs.variants import VARIANTS

    methods = "; ".join(f"{v.name}: {v.description}" for v in VARIANTS.values())
    parser = argparse.ArgumentParser(
        prog="dscl-compare",
        description="Does DSCL help on my data? Train and evaluate each method with each "
        "paired seed as a normal run in OUT/<method>/seed<s>/, record it in OUT/runs.jsonl "
        "and write OUT/report.md and OUT/compare.png (mean ± std per shot group, paired "
        "differences to the first method). Running it again starts only the missing runs; "
        "an interrupted run resumes from its checkpoint.",
    )
    parser.add_argument(
        "--config",
        required=True,
        help="a shipped preset by name (e.g. dscl_digits_lt) or a YAML file",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(VARIANTS),
        metavar="METHOD",
        help=f"the first is the baseline (default: %(default)s). {methods}; any other "
        "registered method runs as itself",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="paired seeds (default: 0 1 2)"
    )
    parser.add_argument(
        "--out", help="folder of the runs and the report (default: outputs/compare_<config>)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help=_TRAIN_OVERRIDES)
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (e.g. one that registers a method); repeatable",
    )
    return parser


def compare_main(argv: Sequence[str] | None = None) -> int:
    """``dscl-compare``: methods x paired seeds on one config (:mod:`dscl_plugin.runs.compare`)."""
    prog = "dscl-compare"
    args = compare_parser().parse_intermixed_args(argv)
    from dscl_plugin.runs.compare import compare
    from dscl_plugin.training.methods import NonFiniteLossError
    from dscl_plugin.training.registry import load_plugins

    out = args.out or f"outputs/compare_{Path(args.config).stem}"
    command = shlex.join([prog, *(sys.argv[1:] if argv is None else argv)])
    try:
        load_plugins(args.imports)
        with _notes(prog):
            compare(args.config, args.methods, args.seeds, out, args.overrides, command)
    except (ConfigError, DataError, ImportError) as error:
        print(f"{prog}: {_kind(error)} error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, NonFiniteLossError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        again = "run the same command again: it starts only the missing runs"
        print(f"{prog}: error: {_os_error(error, None)}, then {again}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; finished runs are recorded in {out}/runs.jsonl. Run the same "
            "command again: it starts only the missing runs, the interrupted one from its "
            "checkpoint.",
            file=sys.stderr,
        )
        return 130
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
