"""Console scripts ``dscl-train`` and ``dscl-eval`` (also ``python -m dscl_plugin.cli``).

    dscl-train --config configs/X.yaml [key.path=value ...] [--stage 1|2] [--resume [CKPT]]
    dscl-eval  --config configs/X.yaml --checkpoint outputs/.../backbone.pt [key.path=value ...]
               [--retrieval]
    python -m dscl_plugin.cli [train|eval] ...
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from dscl_plugin.checkpoints import CheckpointError
from dscl_plugin.config import ConfigError, load_config

_OVERRIDES_HELP = "config overrides such as trainer.epochs=5 model.beta=4 (OmegaConf dotlist)"


def _parser(prog: str, train: bool) -> argparse.ArgumentParser:
    description = (
        "Train (stage 1) and evaluate with a frozen linear probe and kNN (stage 2)."
        if train
        else "Evaluate a trained backbone (stage 2): linear probe, kNN, shot-group accuracy."
    )
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="YAML, e.g. configs/dscl_digits_lt.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help=_OVERRIDES_HELP)
    if train:
        parser.add_argument("--stage", type=int, choices=(1, 2), help="run only stage 1 or 2")
        parser.add_argument(
            "--resume",
            nargs="?",
            const="last",
            metavar="CKPT",
            help="resume stage 1 from CKPT (default: output_dir/checkpoints/last.ckpt)",
        )
        parser.add_argument(
            "--checkpoint", help="weights for --stage 2 (default: output_dir/backbone.pt)"
        )
    else:
        parser.add_argument(
            "--checkpoint", required=True, help="backbone.pt (state_dict) or a training *.ckpt"
        )
        parser.add_argument(
            "--retrieval",
            action="store_true",
            help="also write retrieval.png and patch_retrieval.png (nearest training images "
            "of head/medium/tail test queries) to output_dir",
        )
    return parser


def _parse(prog: str, train: bool, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    args = _parser(prog, train).parse_intermixed_args(argv)
    resume = getattr(args, "resume", None)
    if resume not in (None, "last") and "=" in resume and not Path(resume).is_file():
        # ``--resume key=value``: the bare flag followed by an override
        args.overrides.append(resume)
        args.resume = "last"
    return args


def _main(prog: str, train: bool, argv: Optional[Sequence[str]]) -> int:
    args = _parse(prog, train, argv)
    from dscl_plugin.methods import NonFiniteLossError
    from dscl_plugin.pipeline import run

    try:
        config = load_config(args.config, args.overrides)
        if train:
            run(config, stage=args.stage, resume=args.resume, checkpoint=args.checkpoint)
        else:
            run(config, stage=2, checkpoint=args.checkpoint)
            if args.retrieval:
                _retrieval(config, args.checkpoint)
    except ConfigError as error:
        print(f"{prog}: config error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, NonFiniteLossError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _retrieval(config, checkpoint: str) -> None:
    from dscl_plugin.diagnostics import write_retrieval_pictures
    from dscl_plugin.pipeline import load_for_eval, torch_threads

    with torch_threads(config.trainer.num_threads):
        paths = write_retrieval_pictures(config, load_for_eval(config, checkpoint))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dscl-train``: stage 1 then stage 2 (or ``--stage``)."""
    return _main("dscl-train", True, argv)


def eval_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dscl-eval``: stage 2 for ``--checkpoint``."""
    return _main("dscl-eval", False, argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m dscl_plugin.cli [train|eval] ...`` (train if no sub-command)."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "eval":
        return eval_main(args[1:])
    if args and args[0] == "train":
        args = args[1:]
    return train_main(args)


if __name__ == "__main__":
    sys.exit(main())
