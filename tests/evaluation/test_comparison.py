"""The paired comparison (mean ± sample std, paired differences, the table and
compare.png) against hand-computed numbers, and the data behind curves.png."""

import pytest

from dscl_plugin.evaluation.comparison import (
    format_table,
    mean_std,
    paired_reading,
    pct,
    plot_comparison,
    seeds_ahead,
    summarise,
    verdicts,
)
from dscl_plugin.evaluation.curves import loss_terms, plot_training_curves, training_curves

LABELS = {"supcon": "SupCon", "dscl": "DSCL"}


def _run(method, seed, overall, few=None):
    return {"method": method, "seed": seed, "overall": overall, "few": few}


# SupCon 60 / 62 / 70 %, DSCL 65 / 70 / (no seed 2) and 71 on seed 3 (SupCon lacks it)
RUNS = [
    _run("supcon", 0, 0.60, 0.40),
    _run("supcon", 1, 0.62, 0.50),
    _run("supcon", 2, 0.70),
    _run("dscl", 0, 0.65, 0.45),
    _run("dscl", 1, 0.70, 0.40),
    _run("dscl", 3, 0.71),
]


def test_mean_and_sample_std():
    mean, std = mean_std([0.5, None, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1414213562)  # n - 1
    assert mean_std([0.25]) == (0.25, None) and mean_std([None]) == (None, None)
    assert pct(0.8353, 0.0021) == "83.5 ± 0.2" and pct(-0.013, 0.003, signed=True) == "-1.3 ± 0.3"
    assert pct(0.004, signed=True) == "+0.4" and pct(None) == "-"
    assert pct(None, missing="empty") == "empty"


def test_a_paired_difference_inside_its_spread_reads_as_a_tie():
    assert paired_reading(0.001, 0.002) == "a tie" and paired_reading(-0.002, 0.002) == "a tie"
    assert paired_reading(0.003, 0.002) == "higher" and paired_reading(-0.003, 0.002) == "lower"
    assert paired_reading(0.05, None) == "one seed" and paired_reading(None, None) == "-"


def test_paired_differences_use_only_the_seeds_both_ran():
    supcon, dscl = summarise(RUNS, ["supcon", "dscl"], "supcon", ("overall", "few"))
    assert (supcon["seeds"], supcon["paired"], supcon["overall_diff_mean"]) == (3, None, None)
    assert supcon["overall_mean"] == pytest.approx(0.64)  # (60 + 62 + 70) / 3
    assert supcon["overall_std"] == pytest.approx(0.052915026)  # sqrt(28 / 2) points
    assert (dscl["seeds"], dscl["paired"]) == (3, 2)
    # seed 0: +5, seed 1: +8 points -> +6.5 ± 2.12; few: +5, -10 -> -2.5 ± 10.6
    assert dscl["overall_diff_mean"] == pytest.approx(0.065)
    assert dscl["overall_diff_std"] == pytest.approx(0.0212132034)
    assert dscl["few_diff_mean"] == pytest.approx(-0.025)
    assert dscl["few_diff_std"] == pytest.approx(0.1060660172)


def test_table_rows_and_the_paired_row_against_hand_numbers():
    rows = summarise(RUNS, ["supcon", "dscl"], "supcon", ("overall", "few"))
    assert format_table(rows, LABELS, "supcon", ("overall", "few")).splitlines() == [
        "| method | seeds | overall | few |",
        "|---|---|---|---|",
        "| SupCon | 3 | 64.0 ± 5.3 | 45.0 ± 7.1 |",
        "| DSCL | 3 | 68.7 ± 3.2 | 42.5 ± 3.5 |",
        "| DSCL − SupCon (paired) | 2 | +6.5 ± 2.1 | -2.5 ± 10.6 |",
    ]


def test_an_empty_group_reads_empty_and_a_missing_value_a_dash():
    runs = [_run("supcon", 0, 0.6), _run("supcon", 1, 0.7), _run("dscl", 0, 0.65)]
    rows = summarise(runs, ["supcon", "dscl"], "supcon", ("overall", "few"))
    table = format_table(rows, LABELS, "supcon", ("overall", "few"), empty={"few"})
    assert table.splitlines()[2:] == [
        "| SupCon | 2 | 65.0 ± 7.1 | empty |",
        "| DSCL | 1 | 65.0 | empty |",
        "| DSCL − SupCon (paired) | 1 | +5.0 | empty |",
    ]
    assert "| DSCL | 1 | 65.0 | - |" in format_table(rows, LABELS, "supcon", ("overall", "few"))


def _verdicts(dscl_overall, seeds=(0, 1)):
    """The verdict of DSCL with ``dscl_overall`` per seed against SupCon's 60 / 62 / 70 %."""
    runs = RUNS[:3] + [_run("dscl", s, v) for s, v in zip(seeds, dscl_overall)]
    summary = summarise(runs, ["supcon", "dscl"], "supcon", ("overall", "few"))
    return verdicts(summary, runs, LABELS, "supcon", groups=("few",))


def test_the_verdict_is_the_paired_mean_against_its_std_with_the_seeds_ahead():
    # RUNS: +5, +8 points -> +6.5 ± 2.1: ahead; few +5, -10 -> -2.5 ± 10.6 inside its spread
    summary = summarise(RUNS, ["supcon", "dscl"], "supcon", ("overall", "few"))
    assert verdicts(summary, RUNS, LABELS, "supcon", groups=("few",)) == [
        "DSCL: ahead of SupCon, overall +6.5 ± 2.1 points over 2 paired seeds "
        "(ahead in 2 of 2 seeds)"
    ]
    # +1, -2 -> -0.5 ± 2.1: a tie; -3, -4 -> -3.5 ± 0.7: behind
    assert _verdicts([0.61, 0.60]) == [
        "DSCL: a tie with SupCon, overall -0.5 ± 2.1 points over 2 paired seeds "
        "(ahead in 1 of 2 seeds)"
    ]
    assert _verdicts([0.57, 0.58]) == [
        "DSCL: behind SupCon, overall -3.5 ± 0.7 points over 2 paired seeds (ahead in 0 of 2 seeds)"
    ]
    # a group outside its spread is named: few +10, +12 -> +11.0 ± 1.4
    runs = [*RUNS[:2], _run("dscl", 0, 0.61, 0.50), _run("dscl", 1, 0.60, 0.62)]
    summary = summarise(runs, ["supcon", "dscl"], "supcon", ("overall", "few"))
    assert verdicts(summary, runs, LABELS, "supcon", groups=("few",))[0].endswith(
        "(ahead in 1 of 2 seeds); outside the spread: few +11.0 ± 1.4"
    )


def test_one_or_no_paired_seed_gives_no_verdict():
    assert _verdicts([0.65], seeds=(0,)) == [
        "DSCL: no verdict against SupCon: 1 paired seed has no spread (overall +5.0 points)"
    ]
    assert _verdicts([0.65], seeds=(7,)) == ["DSCL: no verdict: no seed in common with SupCon"]


def test_seeds_ahead_counts_the_paired_seeds_where_a_method_is_higher():
    runs = [*RUNS, _run("dscl", 2, 0.70)]  # seed 2: equal, not ahead
    assert seeds_ahead(runs, "dscl", "supcon") == (2, 3)
    assert seeds_ahead(runs, "supcon", "dscl") == (0, 3)
    assert seeds_ahead(runs, "dscl", "supcon", "few") == (1, 2)  # seed 2 has no few value


def test_a_seed_recorded_twice_is_refused():
    with pytest.raises(ValueError, match="dscl has two runs of seed 0"):
        summarise([*RUNS, _run("dscl", 0, 0.5)], ["supcon", "dscl"], "supcon", ("overall",))


def test_compare_png_is_written(tmp_path):
    rows = summarise(RUNS, ["supcon", "dscl"], "supcon", ("overall", "few"))
    path = plot_comparison(
        rows, LABELS, "supcon", tmp_path / "compare.png", "t", ("overall", "few")
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(epoch, step, **values):
    return {"epoch": str(epoch), "step": str(step), **{k: str(v) for k, v in values.items()}}


# 4 steps per epoch (epoch ends at steps 3 and 7), logged every 2 steps; the run was
# interrupted in epoch 1 and resumed from the end of epoch 0: steps 5 and 7 logged again
LOG = [
    _row(0, 1, loss_step=9.0, loss_dscl=5.0, loss_pbsd=0.0, lr=0.1, queue_fill=0.5),
    _row(0, 3, loss_step=8.0, loss_dscl=4.0, loss_pbsd=0.0, lr=0.1, queue_fill=1.0),
    _row(0, 3, loss_epoch=8.5, **{"monitor/knn_overall": 0.5, "monitor/knn_many": 0.7}),
    _row(1, 5, loss_step=99.0, loss_dscl=99.0, loss_pbsd=0.0, lr=0.05, queue_fill=1.0),
    _row(1, 5, loss_step=7.0, loss_dscl=3.5, loss_pbsd=0.0, lr=0.05, queue_fill=1.0),
    _row(1, 7, loss_step=6.0, loss_dscl=3.0, loss_pbsd=0.0, lr=0.0, queue_fill=1.0),
    _row(1, 7, loss_epoch=6.5, **{"monitor/knn_overall": 0.6, "monitor/knn_many": 0.8}),
]


def test_curves_are_one_line_against_epoch_with_titles_and_units():
    loss, lr, fill, knn = training_curves(LOG)
    assert [(p.title, p.ylabel) for p in (loss, lr, fill, knn)] == [
        ("Training loss", "loss (nats)"),
        ("Learning rate", "learning rate"),
        ("Memory queue fill", "queue filled (%)"),
        ("Online kNN top-1 by shot group", "kNN top-1 accuracy (%)"),
    ]
    # step s of epoch e at e + (s + 1 - first step) / 4; the resumed value of step 5 wins
    assert loss.series["total (per step)"] == ([0.5, 1.0, 1.5, 2.0], [9.0, 8.0, 7.0, 6.0])
    assert loss.series["total (epoch mean)"] == ([1.0, 2.0], [8.5, 6.5])
    assert loss.series["loss_dscl"][1] == [5.0, 4.0, 3.5, 3.0]
    assert "loss_pbsd" not in loss.series  # always 0
    assert fill.series["queue_fill"] == ([0.5, 1.0, 1.5, 2.0], [50.0, 100.0, 100.0, 100.0])
    assert lr.series["lr"][1] == [0.1, 0.1, 0.05, 0.0]
    assert knn.series == {
        "overall": ([1.0, 2.0], [50.0, 60.0]),
        "many": ([1.0, 2.0], [70.0, 80.0]),
    }  # no medium or few class logged: no line


def test_every_logged_loss_term_is_drawn_under_its_name():
    rows = [_row(0, 1, loss_step=3.0, loss_supcon=2.0, loss_ce=0.5, lr=0.1)]
    rows += [_row(0, 1, loss_epoch=3.0)]
    assert loss_terms(rows) == ["loss_supcon", "loss_ce"]
    loss, *_ = training_curves(rows)
    assert list(loss.series) == ["total (per step)", "loss_supcon", "loss_ce", "total (epoch mean)"]
    assert loss.series["loss_ce"] == ([1.0], [0.5])


def test_an_unfinished_first_epoch_spreads_over_what_it_ran(tmp_path):
    (loss, *_, knn) = training_curves(LOG[:2])
    assert loss.series["total (per step)"][0] == [0.5, 1.0]
    assert knn.series == {}
    path = plot_training_curves(LOG, tmp_path / "curves.png", "DSCL on digits_lt")
    assert path.stat().st_size > 10_000


def test_a_log_without_queue_fill_says_the_method_has_no_queue():
    rows = [_row(0, 1, loss_step=3.0, loss_bcl=2.0, lr=0.1)]
    fill = training_curves(rows)[2]
    assert fill.series == {} and fill.empty_note == "no queue (a batch method)"
