"""What the benchmark scripts share to report: mean ± std over seeds and percentages (the
package's, :mod:`dscl_plugin.evaluation.comparison`), Markdown tables, CSV files and the
commit the numbers came from.

The scripts import it as a sibling (``benchmarks`` is not a package): each puts its own
folder first on ``sys.path``, as ``python benchmarks/<script>.py`` does for itself.
"""

import csv
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dscl_plugin.evaluation.comparison import mean_std, pct  # noqa: F401  (the package's, shared)

REPO = Path(__file__).resolve().parents[1]


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A Markdown table: the first row's keys as header, one line per row."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(
    path: Path, rows: Sequence[Mapping[str, object]], extrasaction: str = "raise"
) -> None:
    """``rows`` as CSV with the first row's keys as columns (nothing written for no rows)."""
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), extrasaction=extrasaction)
        writer.writeheader()
        writer.writerows(rows)


def git_state() -> dict[str, object]:
    """HEAD commit and the files that differ from it (the code the numbers came from)."""

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "modified": git("diff", "--name-only", "HEAD").split(),
    }


def print_and_save(
    rows: Sequence[Mapping[str, object]],
    heading: str,
    json_path: str | None = None,
    csv_path: str | None = None,
) -> None:
    """Print ``heading`` and ``rows`` as a Markdown table; save them as JSON and CSV where a
    path is given."""
    print(heading)
    print(markdown_table(rows))
    if json_path:
        Path(json_path).write_text(json.dumps(list(rows), indent=2))
    if csv_path:
        write_csv(Path(csv_path), rows)
