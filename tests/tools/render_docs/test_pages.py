"""tools/render_docs/pages.py (and the tool's command line): every measured table of
README.md and docs/*.md is its rendering from the committed result files; a changed result
row, an edited table or a misplaced marker is caught; a file that remeasure.sh writes fills
its block."""

import json
import shutil

import pytest
from helpers import ROOT

from tools.render_docs import pages
from tools.render_docs.__main__ import main
from tools.render_docs.blocks import BLOCKS
from tools.render_docs.results import RESULTS


@pytest.fixture
def copy(tmp_path):
    """The pages and the result files, copied into a repository root of their own."""
    root = tmp_path / "repo"
    for page in pages.pages(ROOT):
        target = root / page.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, target)
    shutil.copytree(ROOT / RESULTS, root / RESULTS)
    return root


def test_the_committed_pages_are_their_rendering():
    assert pages.differing_blocks(ROOT) == []


def test_only_blocks_made_by_remeasure_may_lack_their_files():
    results = ROOT / RESULTS
    missing = [
        name
        for name, block in BLOCKS.items()
        if not all((results / source).is_file() for source in block.sources)
    ]
    assert all(BLOCKS[name].made_by for name in missing), missing


def test_a_changed_result_row_fails_the_check_until_the_pages_are_rendered(copy, capsys):
    runs = copy / RESULTS / "long_tail_accuracy_fashion_mnist_lt_runs.jsonl"
    lines = runs.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    index = max(  # the record read_runs keeps for SupCon, rho 100, seed 0
        i
        for i, r in enumerate(records)
        if (r["method"], r["imbalance_factor"], r["seed"]) == ("supcon", 100.0, 0)
    )
    records[index]["overall"] = 0.9
    runs.write_text("".join(json.dumps(r) + "\n" for r in records))

    assert main(["--check", "--root", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "differs from its result file: README.md: fashion-mnist-lt-rho100" in out
    assert "differs from its result file: docs/results.md: fashion-mnist-lt-ablation" in out
    assert "fashion-mnist-lt-rho10\n" not in out  # rho 10 rows are untouched

    assert main(["--root", str(copy)]) == 0
    assert main(["--check", "--root", str(copy)]) == 0
    assert "| SupCon | 1 | 90.0 | 86.5 |" in (copy / "docs" / "results.md").read_text()


def test_a_table_edited_on_its_page_fails_the_check(copy, capsys):
    page = copy / "docs" / "compare.md"
    text = page.read_text()
    assert "| SupCon | 3 | 89.9 ± 2.8 |" in text
    page.write_text(text.replace("| SupCon | 3 | 89.9 ± 2.8 |", "| SupCon | 3 | 91.9 ± 2.8 |"))
    assert main(["--check", "--root", str(copy)]) == 1
    assert "docs/compare.md: compare-digits-lt" in capsys.readouterr().out


def test_markers_name_known_blocks_each_on_one_page(copy):
    readme = copy / "README.md"
    text = readme.read_text()
    unknown = text.replace("rendered: quickstart-output", "rendered: no-such-block")
    readme.write_text(unknown)
    with pytest.raises(ValueError, match="unknown rendered block"):
        pages.render_pages(copy)
    readme.write_text(text.replace(pages.END.format("quickstart-output"), ""))
    with pytest.raises(ValueError, match="a marker without its pair"):
        pages.render_pages(copy)
    begin = pages.BEGIN.format("digits-lt")
    end = pages.END.format("digits-lt")
    readme.write_text(f"{text}\n{begin}\n{end}\n")
    with pytest.raises(ValueError, match="'digits-lt': 2"):
        pages.render_pages(copy)
    readme.write_text(f"{text}\n```text\n{begin}\n{end}\n```\n")  # shown in code: ignored
    assert pages.render_pages(copy)


def _metrics(overall):
    return {
        "linear_probe": {"overall": overall, "many": 0.975, "medium": 0.95, "few": 0.6833},
        "knn": {
            "mean_average_precision_at_r": 0.5504,
            "precision_at_1": 0.9267,
            "r_precision": 0.608,
        },
    }


SETTINGS = {
    "command": "python examples/train_digits_lt.py output_dir=/tmp/q",
    "commit": "0123456789abcdef",
    "machine": "Intel(R) Xeon(R) Processor, 2 CPU cores, Linux 6.18",
    "load_average": [0.31, 0.5, 0.6],
    "load_average_end": [1.02, 0.7, 0.6],
    "wall_seconds": 41.6,
}


def test_the_files_remeasure_writes_fill_their_blocks(copy):
    results = copy / RESULTS
    (results / "quickstart_digits_lt.json").write_text(
        json.dumps({"settings": SETTINGS, "metrics": _metrics(0.92)})
    )
    record = {"label": "SupCon", "overrides": ["trainer.precision=32-true"], "seed": 0}
    record |= {"git_commit": "0123456789abcdef", "machine": SETTINGS["machine"]}
    record |= {"command": "dscl-compare --config dscl_fashion_mnist_lt", "load_average": [0.4]}
    (results / "headline_reproduction").mkdir(exist_ok=True)
    (results / "headline_reproduction" / "runs.jsonl").write_text(
        json.dumps(record | {"method": "supcon", "overall": 0.8370}) + "\n"
        + json.dumps(record | {"method": "dscl", "label": "DSCL", "overall": 0.8450}) + "\n"
    )  # fmt: skip
    assert main(["--root", str(copy)]) == 0
    readme = (copy / "README.md").read_text()
    assert "linear_probe/overall             92.00%" in readme
    assert "`benchmarks/results/quickstart_digits_lt.json`; commit `0123456`" in readme
    assert (
        "load average 0.3 (1 min) at the start, 1.0 at the end. The whole run took 42 s" in readme
    )
    assert "**Rerun at `0123456`**" in readme
    assert "SupCon 83.7 (seed 0 then 83.8: -0.1; old seeds 83.4–83.8: within their range)" in readme
    assert "DSCL 84.5 (seed 0 then 83.7: +0.8; old seeds 83.6–83.8: outside their range)" in readme
    # DSCL - SupCon +0.8 against the old seeds' +0.1 ± 0.2
    assert "overall against SupCon: DSCL +0.8, not all inside the old seeds' paired mean" in readme
    assert "load average 0.4 (1 min, as each run started)" in readme
    assert main(["--check", "--root", str(copy)]) == 0
