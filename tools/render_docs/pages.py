"""The pages: the rendered blocks of ``README.md`` and ``docs/*.md`` between their markers,
each rendered from its result files, and the check that a page equals its rendering.

    <!-- rendered: BLOCK_ID (python -m tools.render_docs from benchmarks/results; do not edit) -->
    ...
    <!-- end rendered: BLOCK_ID -->

A marker inside fenced code is text, not a block.
"""

import re
from collections import Counter
from pathlib import Path

from tools.render_docs.blocks import BLOCKS
from tools.render_docs.results import RESULTS

COMMAND = "python -m tools.render_docs"
PAGES = ("README.md", "docs/*.md")
BEGIN = "<!-- rendered: {} (" + COMMAND + " from benchmarks/results; do not edit) -->"
END = "<!-- end rendered: {} -->"
MARKERS = re.compile(
    r"<!-- rendered: (?P<id>[\w.-]+) \(.*?\) -->\n(?P<body>.*?)<!-- end rendered: (?P=id) -->",
    re.S,
)
FENCES = re.compile(r"^```.*?^```", re.S | re.M)


def pending(block_id: str, root: Path) -> bool:
    """True while a ``remeasure.sh`` block's first file is missing."""
    block = BLOCKS[block_id]
    return block.made_by is not None and not (root / RESULTS / block.sources[0]).is_file()


def render_block(block_id: str, root: Path) -> str:
    """The block's text between its markers (ending in a newline).

    Raises:
        FileNotFoundError: a result file of a block that ``remeasure.sh`` does not make.
    """
    block = BLOCKS[block_id]
    if pending(block_id, root):
        body = (
            f"*Not measured at this commit yet:* `bash benchmarks/remeasure.sh {block.made_by}` "
            f"writes `{RESULTS}/{block.sources[0]}`, and `{COMMAND}` "
            "fills this block from it."
        )
    else:
        body = block.render(root)
    return f"{BEGIN.format(block_id)}\n{body.strip()}\n{END.format(block_id)}"


def pages(root: Path) -> list[Path]:
    return [p for pattern in PAGES for p in sorted(root.glob(pattern))]


def markers(text: str) -> list[re.Match]:
    """The blocks of ``text`` outside fenced code (where a page may show a marker)."""
    fences = [m.span() for m in FENCES.finditer(text)]
    return [m for m in MARKERS.finditer(text) if not any(a <= m.start() < b for a, b in fences)]


def substitute(text: str, root: Path) -> str:
    new, last = [], 0
    for match in markers(text):
        new += [text[last : match.start()], render_block(match["id"], root)]
        last = match.end()
    return "".join(new) + text[last:]


def render_pages(root: Path) -> dict[Path, tuple[str, str]]:
    """``{page: (text, rendered text)}`` for every page with a block.

    Raises:
        ValueError: a marker names an unknown block or lacks its pair, or a block is on no
            page or on two.
    """
    result, seen = {}, Counter()
    for page in pages(root):
        text = page.read_text()
        ids = [m["id"] for m in markers(text)]
        outside = FENCES.sub("", text)
        if outside.count("<!-- rendered: ") + outside.count("<!-- end rendered: ") != 2 * len(ids):
            raise ValueError(f"{page.relative_to(root)}: a marker without its pair")
        unknown = [i for i in ids if i not in BLOCKS]
        if unknown:
            raise ValueError(f"{page.relative_to(root)}: unknown rendered block(s) {unknown}")
        seen.update(ids)
        if ids:
            new = substitute(text, root)
            result[page] = (text, new)
    placed = {i: seen[i] for i in BLOCKS if seen[i] != 1}
    if placed:
        raise ValueError(f"every block must be on exactly one page; found {placed}")
    return result


def differing_blocks(root: Path) -> list[str]:
    """``page: block id`` of every block whose page differs from its rendering."""
    differing = []
    for page, (text, _) in render_pages(root).items():
        for match in markers(text):
            if match[0] != render_block(match["id"], root):
                differing.append(f"{page.relative_to(root)}: {match['id']}")
    return differing
