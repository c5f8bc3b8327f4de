"""Every rendered block by id: its result files under ``benchmarks/results/`` and its
renderer (:mod:`tools.render_docs.accuracy`, :mod:`tools.render_docs.family`,
:mod:`tools.render_docs.performance`)."""

from dataclasses import dataclass

from tools.render_docs import accuracy, family, performance
from tools.render_docs.results import Render


@dataclass(frozen=True)
class Block:
    """A rendered block: its result files (relative to ``benchmarks/results``) and its
    renderer; ``made_by`` names the ``benchmarks/remeasure.sh`` part that writes the first
    file (the block shows that command while the file is missing)."""

    sources: tuple[str, ...]
    render: Render
    made_by: str | None = None


BLOCKS: dict[str, Block] = {
    "fashion-mnist-lt-rho100": Block(
        ("long_tail_accuracy_fashion_mnist_lt_runs.jsonl",),
        accuracy.long_tail_block(
            "long_tail_accuracy_fashion_mnist_lt_runs.jsonl",
            100.0,
            "long_tail_accuracy_fashion_mnist_lt.json",
        ),
    ),  # fmt: skip
    "fashion-mnist-lt-rho10": Block(
        ("long_tail_accuracy_fashion_mnist_lt_runs.jsonl",),
        accuracy.long_tail_block(
            "long_tail_accuracy_fashion_mnist_lt_runs.jsonl",
            10.0,
            "long_tail_accuracy_fashion_mnist_lt.json",
        ),
    ),  # fmt: skip
    "fashion-mnist-lt-reproduced": Block(
        ("headline_reproduction/runs.jsonl", "long_tail_accuracy_fashion_mnist_lt_runs.jsonl"),
        accuracy.reproduced,
        "--headline",
    ),
    "fashion-mnist-lt-ablation": Block(
        ("long_tail_accuracy_fashion_mnist_lt_runs.jsonl",), accuracy.ablation
    ),
    "pbsd-diagnostics": Block(
        ("pbsd_diagnostics_fashion_mnist_lt.json",), performance.pbsd, "--headline"
    ),
    "digits-lt": Block(("long_tail_accuracy.json",), accuracy.digits),
    "vit-digits-lt": Block(("vit_digits_lt_runs.csv",), accuracy.vit),
    "sweep-fashion-mnist-lt-alpha": Block(
        ("sweep_fashion_mnist_lt_runs.jsonl",),
        accuracy.sweep_block("sweep_fashion_mnist_lt_runs.jsonl", "model.alpha", 100.0),
    ),
    "sweep-digits-lt-alpha": Block(
        ("sweep_digits_lt_runs.jsonl",),
        accuracy.sweep_block("sweep_digits_lt_runs.jsonl", "model.alpha", 10.0),
    ),
    "sweep-digits-lt-num-patches": Block(
        ("sweep_digits_lt_runs.jsonl",),
        accuracy.sweep_block("sweep_digits_lt_runs.jsonl", "model.num_patches", 10.0),
    ),
    "sweep-digits-lt-pbsd-weight": Block(
        ("sweep_digits_lt_runs.jsonl",),
        accuracy.sweep_block("sweep_digits_lt_runs.jsonl", "model.pbsd_weight", 10.0),
    ),
    "compare-digits-lt": Block(("compare_digits_lt/runs.jsonl",), accuracy.compare_digits),
    "compare-family-digits-lt": Block(
        ("compare_family_digits_lt/runs.jsonl",),
        family.compare_family("compare_family_digits_lt/runs.jsonl"),
    ),
    "compare-family-fashion-mnist-lt": Block(
        ("compare_family_fashion_mnist_lt/runs.jsonl",),
        family.compare_family("compare_family_fashion_mnist_lt/runs.jsonl"),
    ),
    "family-beside-published": Block(
        ("compare_family_fashion_mnist_lt/runs.jsonl", family.PUBLISHED),
        family.beside_published("compare_family_fashion_mnist_lt/runs.jsonl"),
    ),
    "quickstart-output": Block(
        ("quickstart_digits_lt.json",), performance.quickstart, "--quickstart"
    ),
    "setup-timing": Block(("setup_timing.json",), performance.setup, "--setup"),
    "train-step": Block(("train_step.json",), performance.train_step, "--benchmarks"),
    "train-step-flops": Block(("train_step.json",), performance.flops, "--benchmarks"),
    "loss-speed": Block(("loss_speed.json",), performance.loss_speed, "--benchmarks"),
    "family-loss-speed": Block(("family_loss_speed.json",), family.family_loss_speed),
    "official-loss-speed": Block(("official_loss_speed.json",), family.official_loss_speed),
    "import-time": Block(("import_time.json",), performance.import_time, "--benchmarks"),
    "monitor-cost": Block(("monitor_cost.json",), performance.monitor),
    "precision-amx": Block(
        ("train_step_cpu_precision_amx.json",),
        performance.precision("train_step_cpu_precision_amx.json"),
        "--benchmarks",
    ),
    "precision-cnn5-avx2": Block(
        ("train_step_cpu_precision.csv",), performance.precision("train_step_cpu_precision.csv")
    ),
    "precision-resnet18-avx2": Block(
        ("train_step_cpu_precision_resnet18.csv",),
        performance.precision("train_step_cpu_precision_resnet18.csv"),
    ),
    "precision-recipe-steps": Block(
        ("precision_fashion_mnist_lt_runs.json",), performance.recipe_steps
    ),
    "data-pipeline-rates": Block(("data_pipeline.json",), performance.pipeline_rates),
    "data-pipeline-epoch": Block(
        ("data_pipeline_epoch.json",), performance.pipeline_epochs(["data_pipeline_epoch.json"])
    ),
    "data-pipeline-steps": Block(
        ("data_pipeline_epoch_10steps.json", "data_pipeline_epoch_2steps.json"),
        performance.pipeline_epochs(
            ["data_pipeline_epoch_10steps.json", "data_pipeline_epoch_2steps.json"]
        ),
    ),
}
