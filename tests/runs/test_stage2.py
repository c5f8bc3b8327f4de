"""Stage 2's parts that need no training: the method's title in figures, the retrieval
settings, and what the report writes and names."""

import json

from helpers import CONFIGS

from dscl_plugin.runs.stage2 import method_title, report, retrieval_settings
from dscl_plugin.training.config import load_config


def test_method_titles():
    dscl = CONFIGS / "dscl_digits_lt.yaml"
    assert method_title(load_config(dscl)) == "DSCL+PBSD"
    assert method_title(load_config(dscl, ["model.pbsd_weight=0"])) == "DSCL"
    assert method_title(load_config(CONFIGS / "supcon_digits_lt.yaml")) == "SupCon"


def test_retrieval_settings_follow_the_config():
    overrides = [
        "eval.many_threshold=50",
        "eval.few_threshold=5",
        "seed=3",
        "model.roi_aligned=true",
    ]
    settings = retrieval_settings(load_config(CONFIGS / "dscl_digits_lt.yaml", overrides))
    assert (settings.many_threshold, settings.few_threshold, settings.seed) == (50, 5, 3)
    assert settings.aligned is True


SCORES = {
    "linear_probe": {"overall": 0.5, "many": 0.6, "medium": None, "few": 0.4},
    "knn": {"precision_at_1": 0.45},
    "per_class_accuracy": [0.6, 0.4],
}


def test_the_results_line_names_the_runs_curves_and_metrics_the_class_names(tmp_path, capsys):
    config = load_config(CONFIGS / "dscl_digits_lt.yaml", [f"output_dir={tmp_path}"])
    (tmp_path / "curves.png").write_bytes(b"written by stage 1")
    report(config, SCORES, [144, 14], ["zero", "one"], tmp_path / "backbone.pt")
    names = ("metrics.json", "per_class_accuracy.png", "curves.png")
    assert capsys.readouterr().out.splitlines()[-1] == "results: " + ", ".join(
        str(tmp_path / name) for name in names
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["class_names"] == ["zero", "one"] and metrics["train_class_counts"] == [144, 14]
    # another checkpoint's results sit beside it, without the run's curves
    report(config, SCORES, [144, 14], None, tmp_path / "checkpoints" / "last.ckpt")
    scored = tmp_path / "checkpoints" / "last_eval"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"results: {scored / 'metrics.json'}, {scored / 'per_class_accuracy.png'}"
    )
    assert json.loads((scored / "metrics.json").read_text())["class_names"] is None
