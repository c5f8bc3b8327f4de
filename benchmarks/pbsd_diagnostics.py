"""What PBSD asks of the student, measured on a trained DSCL+PBSD checkpoint.

For ``--batches`` batches of training views (model in eval mode, no gradient) every patch
row r gives two distributions over its image's candidates ``[k_i, queue]`` (1 + K):
the teacher ``t = softmax(t_r . c / T)`` (the box pooled from the q view's feature map)
and the student ``s = softmax(s_r . c / T)`` (the patch embedded as an image). Reported,
as means over rows:

- ``H(t) / log(1+K)``, ``H(s) / log(1+K)``: entropy relative to a uniform distribution
  (1 = the target says nothing);
- ``t own``, ``s own``: mass on the image's own key;
- ``t class``, ``s class``: mass on candidates of the image's class (own key included):
  how much label information the target carries;
- ``KL(t||s)``: what the PBSD loss can still reduce (``loss_pbsd = H(t) + KL``);
- ``top-1 agree``: the student's most likely candidate is the teacher's;
- the same entropy and class mass for the q view's own projection (``q``) as a reference;
- ``loss_dscl`` and ``loss_pbsd`` of the batches and ``λ loss_pbsd / loss_dscl``.

    python -m benchmarks.pbsd_diagnostics --config dscl_fashion_mnist_lt \\
        --checkpoint outputs/dscl_fashion_mnist_lt/checkpoints/last.ckpt

Writes ``benchmarks/results/pbsd_diagnostics_<dataset>.json`` (``--output``): the
statistics, the checkpoint, and the command, commit, machine and load (``settings``).
"""

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from benchmarks.reporting import finish, provenance
from dscl_plugin.models import pool_regions
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.stage2 import load_for_eval
from dscl_plugin.training.config import load_config

REPO = Path(__file__).resolve().parents[1]


def distribution_stats(
    logits: Tensor, own: Tensor, same_class: Tensor, prefix: str
) -> dict[str, Tensor]:
    """Per-row entropy / log(N), own-candidate mass and class mass of ``softmax(logits)``.

    Args:
        logits: (R, N); own: (R,) column of the own candidate; same_class: (R, N) bool.
    """
    log_p = logits.log_softmax(dim=1)
    p = log_p.exp()
    return {
        f"{prefix}_entropy": -(p * log_p).sum(1) / math.log(logits.shape[1]),
        f"{prefix}_own": p.gather(1, own[:, None]).squeeze(1),
        f"{prefix}_class": (p * same_class).sum(1),
    }


@torch.no_grad()
def batch_diagnostics(model, batch: Sequence[Tensor], temperature: float) -> dict[str, Tensor]:
    """Per-row statistics of one batch ``(view_q, view_k, patches, boxes, labels)``."""
    view_q, view_k, patches, boxes, labels = batch
    b, num_patches = patches.shape[:2]
    feature_map = model.backbone(view_q)
    query = F.normalize(model.projection_head(feature_map.mean(dim=(2, 3))), dim=1)
    key = F.normalize(
        model.projection_head_momentum(model.backbone_momentum(view_k).mean(dim=(2, 3))),
        dim=1,
    )
    queue, queue_labels = model.memory_bank.get()
    queue = F.normalize(queue, dim=1)
    teacher = model.projection_head(pool_regions(feature_map, boxes, view_q.shape[-2:]))
    student = model.projection_head(model.backbone(patches.flatten(0, 1)).mean(dim=(2, 3)))
    teacher = F.normalize(teacher, dim=2).flatten(0, 1)
    student = F.normalize(student.reshape(b, num_patches, -1), dim=2).flatten(0, 1)

    def logits(rows: Tensor, per_image: int) -> Tensor:  # against [k_i, queue] of its image
        own = (rows * key.repeat_interleave(per_image, 0)).sum(1, keepdim=True)
        return torch.cat([own, rows @ queue.T], dim=1) / temperature

    row_labels = labels.repeat_interleave(num_patches)
    same = torch.cat(
        [
            torch.ones_like(row_labels[:, None], dtype=torch.bool),
            queue_labels[None] == row_labels[:, None],
        ],
        dim=1,
    )
    own = torch.zeros_like(row_labels)
    t_logits, s_logits = logits(teacher, num_patches), logits(student, num_patches)
    stats = distribution_stats(t_logits, own, same, "t") | distribution_stats(
        s_logits, own, same, "s"
    )
    t = t_logits.softmax(1)
    stats["kl"] = (t * (t_logits.log_softmax(1) - s_logits.log_softmax(1))).sum(1)
    stats["agree"] = (t_logits.argmax(1) == s_logits.argmax(1)).float()
    q_same = torch.cat(
        [
            torch.ones_like(labels[:, None], dtype=torch.bool),
            queue_labels[None] == labels[:, None],
        ],
        dim=1,
    )
    stats |= distribution_stats(logits(query, 1), torch.zeros_like(labels), q_same, "q")
    out = model(view_q, view_k, patches, boxes, labels)  # eval mode: the queue is not changed
    stats["loss_dscl"], stats["loss_pbsd"] = (
        out["loss_dscl"][None],
        out["loss_pbsd"][None],
    )
    return stats


def diagnose(
    config_path: str, overrides: list[str], checkpoint: str, batches: int
) -> dict[str, float]:
    config = load_config(config_path, overrides)
    if config.method != "dscl" or config.model.pbsd_weight <= 0:
        raise ValueError("--config must be a dscl config with model.pbsd_weight > 0")
    module = load_for_eval(config, checkpoint).eval()
    torch.manual_seed(config.seed)
    dataset = build_dataset_split(config, "train", module.train_transform())
    loader = DataLoader(
        dataset,
        batch_size=config.trainer.batch_size,
        shuffle=True,
        collate_fn=module.collate_fn(),
    )
    rows: dict[str, list[Tensor]] = {}
    for _, batch in zip(range(batches), loader):
        for name, value in batch_diagnostics(module.model, batch, config.model.temperature).items():
            rows.setdefault(name, []).append(value)
    result = {name: torch.cat(values).mean().item() for name, values in rows.items()}
    result["pbsd_share"] = config.model.pbsd_weight * result["loss_pbsd"] / result["loss_dscl"]
    result["queue_size"] = len(module.model.memory_bank.get()[1])
    return result


LABELS = {
    "t_entropy": "H(t) / log(1+K)",
    "s_entropy": "H(s) / log(1+K)",
    "q_entropy": "H(q) / log(1+K)",
    "t_own": "t own",
    "s_own": "s own",
    "q_own": "q own",
    "t_class": "t class",
    "s_class": "s class",
    "q_class": "q class",
    "kl": "KL(t‖s)",
    "agree": "top-1 agree",
    "loss_dscl": "loss_dscl",
    "loss_pbsd": "loss_pbsd",
    "pbsd_share": "λ loss_pbsd / loss_dscl",
    "queue_size": "K (filled)",
}


def format_table(result: dict[str, float]) -> str:
    lines = ["| statistic | value |", "|---|---|"]
    lines += [f"| {LABELS[k]} | {result[k]:.4g} |" for k in LABELS]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True, help="last.ckpt of a dscl-train run")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument(
        "--output",
        help="JSON path (default benchmarks/results/pbsd_diagnostics_<dataset>.json)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value")
    args = parser.parse_args(argv)
    settings = provenance("python -m benchmarks.pbsd_diagnostics", argv)
    result = diagnose(args.config, args.overrides, args.checkpoint, args.batches)
    print(format_table(result))
    dataset = load_config(args.config, args.overrides).data.name
    output = Path(
        args.output or REPO / "benchmarks" / "results" / f"pbsd_diagnostics_{dataset}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "settings": finish(settings),
                "checkpoint": args.checkpoint,
                "result": result,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
