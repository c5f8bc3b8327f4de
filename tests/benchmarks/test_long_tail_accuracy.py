"""benchmarks/long_tail_accuracy.py through dscl-compare's engine: a --quick run (raw
pixels and two methods, the losses recorded), a second part that runs only what is
missing, --summarise, the shared overrides and --tag, and --sweep's variants."""

import pytest

from benchmarks import long_tail_accuracy as lta
from dscl_plugin.runs.compare import RUNS_FILE, plan_runs

QUICK = ["--quick", "--seeds", "0"]


@pytest.mark.slow
def test_quick_run_records_raw_pixels_and_the_methods_and_a_second_part_adds_one(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    records = lta.main([*QUICK, "--methods", "supcon", "dscl_pbsd", *out])[10.0]
    runs = {r["method"]: r for r in records}
    assert list(runs) == ["supcon", "dscl_pbsd", "raw_pixels"]
    folder = tmp_path / "digits_lt_quick" / "rho10"
    assert runs["supcon"]["output_dir"] == str(folder / "supcon" / "seed0")
    assert (folder / "report.md").is_file() and (folder / "compare.png").is_file()
    assert runs["dscl_pbsd"]["loss_pbsd"] > 0 and runs["supcon"]["loss_pbsd"] == 0
    assert "loss_dscl" not in runs["raw_pixels"] and runs["raw_pixels"]["knn_p1"] > 0.5
    assert runs["raw_pixels"]["overall"] > 0.5  # the quick probe on pixels learns (chance 0.1)
    assert not (folder / "raw_pixels" / "seed0" / "checkpoints").exists()  # nothing trained
    assert "| SupCon | 1 |" in capsys.readouterr().out

    # a second part runs only what is missing: DSCL
    merged = lta.main([*QUICK, "--methods", "supcon", "dscl", *out])[10.0]
    assert [r["method"] for r in merged] == ["supcon", "dscl", "raw_pixels"]
    assert "2 of 3 run(s) recorded" in capsys.readouterr().out
    assert len((folder / RUNS_FILE).read_text().splitlines()) == 4
    lta.main([*QUICK, "--summarise", *out])
    printed = capsys.readouterr().out
    assert "| DSCL+PBSD − SupCon (paired) | 1 |" in printed
    assert "| DSCL − SupCon (paired) | 1 |" in printed


def test_set_overrides_every_method_and_tag_keeps_runs_apart(tmp_path):
    argv = ["--epochs", "3", "--set", "trainer.precision=bf16-mixed", "optim.lr=0.05"]
    args = lta._parse_args([*argv, "--tag", "3ep_bf16", "--out", str(tmp_path)])
    assert lta.folder(args, 10.0) == tmp_path / "digits_lt_3ep_bf16" / "rho10"
    plan = plan_runs(
        "dscl_digits_lt", [*lta.VARIANTS, "raw_pixels"], [0], tmp_path,
        lta.overrides(args, 10.0), {"raw_pixels": lta.RAW_PIXELS},
    )  # fmt: skip
    for planned in plan:
        config = planned.config
        assert (config.trainer.precision, config.optim.lr, config.trainer.epochs) == (
            "bf16-mixed", 0.05, 3)  # fmt: skip
        assert (config.data.imbalance_factor, config.trainer.num_threads) == (10.0, 1)
    assert lta.main(["--summarise", "--tag", "other", "--out", str(tmp_path)]) == {
        10.0: [],
        50.0: [],
    }


def test_sweep_variants_and_their_records_as_the_sweep_reads_them(tmp_path):
    args = lta._parse_args(
        ["--methods", "supcon", "dscl", "--sweep", "model.alpha=0.05,0.5", "--out", str(tmp_path)]
    )
    swept = lta.sweep_variants(args)
    assert list(swept) == ["dscl@model.alpha=0.05", "dscl@model.alpha=0.5"]
    variant, key, value = swept["dscl@model.alpha=0.5"]
    assert variant.overrides == (
        "method=dscl", "model.pbsd_weight=0", "model.alpha=0.5", "model.beta=null")  # fmt: skip
    assert lta.folder(args, 10.0) == tmp_path / "digits_lt_sweep" / "rho10"
    records = [{"method": "supcon", "seed": 0}, {"method": "dscl@model.alpha=0.5", "seed": 0}]
    assert lta.as_sweep_records(records, swept) == [
        {"method": "supcon", "seed": 0, "sweep_key": None, "sweep_value": None},
        {"method": "dscl", "seed": 0, "sweep_key": "model.alpha", "sweep_value": "0.5"},
    ]


def test_a_bad_seed_is_one_line_and_exit_2_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        lta.main(["--seeds", "0", "0", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--seeds: [0] given twice" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_last_epoch_losses_are_the_means_of_its_logged_steps(tmp_path):
    (tmp_path / "logs").mkdir()
    rows = ["epoch,step,loss_dscl,loss_pbsd", "0,1,9.0,9.0", "1,3,2.0,1.0", "1,4,,", "1,5,4.0,2.0"]
    (tmp_path / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    config = type("Config", (), {"output_dir": str(tmp_path)})()  # only output_dir is read
    assert lta.last_epoch_losses(config) == {"loss_dscl": 3.0, "loss_pbsd": 1.5}
    rows[0] = "epoch,step,loss_supcon,loss_pbsd"  # SupCon's term, recorded as loss_dscl
    (tmp_path / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert lta.last_epoch_losses(config) == {"loss_dscl": 3.0, "loss_pbsd": 1.5}
