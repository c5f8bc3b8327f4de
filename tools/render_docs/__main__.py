"""``python -m tools.render_docs [--check] [--root DIR]``: see :mod:`tools.render_docs`."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.render_docs.blocks import BLOCKS
from tools.render_docs.pages import differing_blocks, pending, render_pages

REPO = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.render_docs",
        description="Renders the measured tables of README.md and docs/*.md from the "
        "committed result files under benchmarks/results.",
    )
    parser.add_argument(
        "--check", action="store_true", help="rewrite nothing; exit 1 if a block differs"
    )
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        differing = differing_blocks(args.root)
        for item in differing:
            print(f"differs from its result file: {item}")
        waiting = [i for i in BLOCKS if pending(i, args.root)]
        if waiting:
            print(f"waiting for benchmarks/remeasure.sh: {', '.join(waiting)}")
        return 1 if differing else 0
    for page, (text, new) in render_pages(args.root).items():
        if new != text:
            page.write_text(new)
            print(f"rendered {page.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
