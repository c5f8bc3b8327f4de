"""The arguments of the console scripts: their parsers, ``--list-configs``, and flags that
look like config keys (``--epochs 1``) refused with the override they mean."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

_TRAIN_OVERRIDES = "config overrides such as trainer.epochs=5 model.beta=4 (OmegaConf dotlist)"
_EVAL_OVERRIDES = "config overrides such as probe.epochs=10 eval.knn_k=20 (OmegaConf dotlist)"
CONFIG_WITH_DATA = "; with --data, the recipe to run on it (default: the one that fits)"
_EXAMPLE_EPILOG = (
    "Unlike dscl-train, running this again resumes output_dir's last checkpoint without "
    "--resume (a finished run is only re-evaluated): it is dscl-train with --resume when "
    "output_dir/checkpoints/last.ckpt exists."
)


class ListPresets(argparse.Action):
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


def stage_parser(prog: str, train: bool, default_config: str | None) -> argparse.ArgumentParser:
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
            help="a shipped preset by name (e.g. dscl_digits_lt; --list-configs lists them) "
            "or a YAML file" + (CONFIG_WITH_DATA if train else "; required"),
        )
        if train:
            add_data_argument(parser)
    else:
        parser.add_argument("--config", default=default_config, help="YAML (default: %(default)s)")
    parser.add_argument(
        "--list-configs", action=ListPresets, help="list the shipped presets and exit"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.path=value",
        help=_TRAIN_OVERRIDES if train else _EVAL_OVERRIDES,
    )
    add_import_argument(parser)
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


def parse_stage_args(
    prog: str, train: bool, argv: Sequence[str] | None, default_config: str | None
) -> argparse.Namespace:
    parser = stage_parser(prog, train, default_config)
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        parser.exit(2, f"{prog}: error: {unknown_options(prog, argv, unknown)}\n")
    if not train and args.config is None:
        from dscl_plugin.cli.messages import eval_config_missing

        parser.exit(2, f"{prog}: error: {eval_config_missing(Path(args.checkpoint))}\n")
    require_config(parser, args)
    resume = getattr(args, "resume", None)
    if resume not in (None, "last") and "=" in resume and not Path(resume).is_file():
        # ``--resume key=value``: the bare flag followed by an override
        args.overrides.append(resume)
        args.resume = "last"
    return args


def unknown_options(prog: str, argv: list[str], unknown: list[str]) -> str:
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
        help="a shipped preset by name (e.g. dscl_digits_lt) or a YAML file" + CONFIG_WITH_DATA,
    )
    add_data_argument(parser)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(VARIANTS),
        metavar="METHOD",
        help=f"the first is the baseline (default: {' '.join(VARIANTS)}). {methods}; any other "
        "registered method runs as itself",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="paired seeds (default: 0 1 2)"
    )
    parser.add_argument(
        "--out",
        help="folder of the runs and the report (default: outputs/compare_<config>, "
        "with --data outputs/compare_<folder>); several dscl-compare processes on one "
        "folder share its runs",
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help=_TRAIN_OVERRIDES)
    add_import_argument(parser)
    return parser


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data DIR``: a user's image folder, with the recipe that fits it."""
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="your image folder, DIR/train/<class>/<image> and DIR/test/<class>/<image>: "
        "runs the shipped recipe that fits its images (or --config's) on it as it is, "
        "with the queue, batch and shot groups set from the data, and prints what it chose",
    )


def require_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits with the usage error unless ``--config`` (or ``--data``, where there is one)
    was given."""
    if args.config is None and getattr(args, "data", None) is None:
        either = "--config or --data" if hasattr(args, "data") else "--config"
        parser.error(f"the following arguments are required: {either}")


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE``, repeatable: a module to import first (e.g. one that registers a
    method)."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (a dotted name or a .py file) first, e.g. one that registers "
        "a method with @dscl_plugin.register_method; repeatable",
    )
