"""Stage 2's parts that need no training: the method's title in figures."""

from helpers import CONFIGS

from dscl_plugin.runs.stage2 import method_title, retrieval_settings
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
