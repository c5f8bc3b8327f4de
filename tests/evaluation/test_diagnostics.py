"""The paper's diagnostics: pull-gradient ratio (metric, logging, plot), retrieval and
patch-retrieval pictures."""

import csv

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS, TINY
from PIL import Image

from dscl_plugin.cli import eval_main
from dscl_plugin.evaluation.diagnostics import plot_grad_ratio, read_grad_ratio
from dscl_plugin.evaluation.retrieval import (
    RetrievalSettings,
    box_features,
    compute_retrieval,
    nearest_neighbours,
    pick_queries,
    response_maps,
)
from dscl_plugin.evaluation.retrieval_figures import write_retrieval_figures
from dscl_plugin.functional import pull_gradient_ratio
from dscl_plugin.losses import DSCLLoss, SupConLoss
from dscl_plugin.models import build_backbone
from dscl_plugin.runs.stage1 import train
from dscl_plugin.training.config import load_config

PNG = b"\x89PNG\r\n\x1a\n"


def loop_ratio(query, key, labels, queue, queue_labels, alpha):
    """Per anchor ``||sum_{c in P_i} w_c c|| / ||w_own k_i||`` from the definition, or None."""
    q, k, m = (F.normalize(x, dim=1) for x in (query, key, queue))
    ratios = []
    for i in range(len(q)):
        candidates = [(q[j], labels[j]) for j in range(len(q)) if j != i]
        candidates += [(k[j], labels[j]) for j in range(len(k)) if j != i]
        candidates += list(zip(m, queue_labels))
        positives = [c for c, label in candidates if label == labels[i]]
        if not positives:
            ratios.append(None)
            continue
        if alpha is None:
            w_own = w_each = 1.0 / (len(positives) + 1)
        else:
            w_own, w_each = alpha, (1.0 - alpha) / len(positives)
        class_term = sum(w_each * c for c in positives)
        ratios.append(float(class_term.norm() / (w_own * k[i]).norm()))
    return ratios


@pytest.mark.parametrize("alpha", [None, 1.0 / 9.0, 0.5])
def test_pull_ratio_matches_loop_and_excludes_anchors_without_positive(alpha):
    g = torch.Generator().manual_seed(0)
    query, key, queue = (torch.randn(n, 5, generator=g, dtype=torch.float64) for n in (6, 6, 7))
    labels = torch.tensor([0, 0, 1, 2, 1, 3])  # class 2: no positive anywhere
    queue_labels = torch.tensor([0, 1, 1, 4, 3, 3, 0])  # class 4: in the queue only
    expected = loop_ratio(query, key, labels, queue, queue_labels, alpha)
    assert expected[3] is None and all(r is not None for i, r in enumerate(expected) if i != 3)

    out = pull_gradient_ratio(query, key, labels, queue, queue_labels, alpha)
    assert out.valid.tolist() == [r is not None for r in expected]
    assert torch.isfinite(out.ratio).all() and torch.isfinite(out.aligned).all()
    assert out.ratio[3] == 0 and out.aligned[3] == 0
    got = [r for r, ok in zip(out.ratio.tolist(), out.valid.tolist()) if ok]
    assert got == pytest.approx([r for r in expected if r is not None], rel=1e-10)
    # the same through the loss modules, whose weights they carry
    loss = SupConLoss() if alpha is None else DSCLLoss(alpha=alpha)
    again = loss.pull_gradient_ratio(query, key, labels, queue, queue_labels)
    assert torch.allclose(again.ratio, out.ratio) and torch.equal(again.valid, out.valid)


def test_pull_ratio_without_queue_matches_loop():
    g = torch.Generator().manual_seed(1)
    query, key = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.tensor([1, 0, 1, 1, 2])
    expected = loop_ratio(query, key, labels, torch.zeros(0, 4), torch.zeros(0), 0.2)
    out = pull_gradient_ratio(query, key, labels, None, None, 0.2)
    assert out.valid.tolist() == [True, False, True, True, False]
    assert out.ratio[out.valid].tolist() == pytest.approx(
        [r for r in expected if r is not None], rel=1e-5
    )


@pytest.mark.parametrize("alpha", [None, 1.0 / 9.0, 0.3])
def test_pull_ratio_on_aligned_features_is_the_theoretical_value(alpha):
    g = torch.Generator().manual_seed(2)
    directions = torch.randn(3, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])
    queue_labels = torch.tensor([0, 0, 1, 2, 2, 2, 0])
    # every candidate of a class equals the anchor's own key (scaled: normalised inside)
    query = directions[labels] * 3.0
    key = directions[labels] * 0.5
    queue = directions[queue_labels]
    out = pull_gradient_ratio(query, key, labels, queue, queue_labels, alpha)
    num_pos = [2 * (labels == y).sum() - 2 + (queue_labels == y).sum() for y in labels]
    theory = torch.tensor(num_pos, dtype=torch.float64)  # SupCon: |P_i|
    if alpha is not None:
        theory = torch.full((8,), (1 - alpha) / alpha, dtype=torch.float64)
    assert out.valid.all()
    assert torch.allclose(out.ratio, theory) and torch.allclose(out.aligned, theory)


def tiny_run(tmp_path, method, *extra):
    config = load_config(
        CONFIGS / f"{method}_digits_lt.yaml",
        TINY + [f"output_dir={tmp_path / method}", "trainer.log_grad_ratio=true", *extra],
    )
    module = train(config)
    return module, tmp_path / method / "logs" / "metrics.csv"


@pytest.mark.slow
def test_training_logs_grad_ratio_per_class_and_group_and_plot(tmp_path):
    _, dscl_log = tiny_run(tmp_path, "dscl", "model.pbsd_weight=0")
    supcon, supcon_log = tiny_run(tmp_path, "supcon")
    with open(dscl_log, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("grad_ratio/overall")]
    assert [r["epoch"] for r in rows] == ["0", "1"]  # once per epoch
    for group in ("overall", "many", "medium", "few"):
        assert float(rows[-1][f"grad_ratio_aligned/{group}"]) == pytest.approx(8.0, rel=1e-6)
        assert 0 < float(rows[-1][f"grad_ratio/{group}"]) <= 8.0 + 1e-4  # ||mean|| <= mean ||.||
    dscl = read_grad_ratio(dscl_log)
    assert set(dscl) <= set(range(10)) and len(dscl) >= 5
    # SupCon's aligned value |P_i| grows with the class size (more positives in the queue)
    header = supcon_log.read_text().splitlines()[0].split(",")
    assert "loss_supcon" in header and "loss_dscl" not in header  # named as its method
    sup = read_grad_ratio(supcon_log, epoch=1)
    assert sup[0][1] > sup[max(sup)][1]
    assert supcon.model.track_grad_ratio

    counts = [144, 111, 86, 66, 51, 40, 31, 24, 18, 14]
    path = plot_grad_ratio({"SupCon": supcon_log, "DSCL": dscl_log}, counts, tmp_path / "r.png")
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="pass the training class counts"):
        plot_grad_ratio({"DSCL": dscl_log}, counts[:3], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no grad_ratio values for epoch 7"):
        read_grad_ratio(dscl_log, epoch=7)


def test_grad_ratio_axes_label_one_two_five_times_powers_of_ten():
    from dscl_plugin.evaluation.diagnostics import _one_two_five

    labels = [
        _one_two_five(v) for v in (10, 20, 30, 40, 50, 200, 300, 400, 1000, 2000, 3000, 6000, 0.5)
    ]
    assert labels == [
        "10",
        "20",
        "",
        "",
        "50",
        "200",
        "",
        "",
        "1000",
        "2000",
        "",
        "",
        "0.5",
    ]


@pytest.mark.slow
def test_grad_ratio_is_off_by_default(tmp_path):
    overrides = TINY + [f"output_dir={tmp_path}", "trainer.epochs=1"]
    module = train(load_config(CONFIGS / "supcon_digits_lt.yaml", overrides))
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "grad_ratio" not in header and not module.model.track_grad_ratio
    with pytest.raises(ValueError, match="trainer.log_grad_ratio=true"):
        read_grad_ratio(tmp_path / "logs" / "metrics.csv")


def test_nearest_neighbours_by_cosine():
    refs = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    sims, idx = nearest_neighbours(torch.tensor([[0.0, 0.1], [5.0, 4.0]]), refs, 2)
    assert idx.tolist() == [[1, 2], [2, 0]]
    assert sims[0].tolist() == pytest.approx([1.0, 2**-0.5])
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        nearest_neighbours(refs, refs, 4)


def test_pick_queries_spreads_over_shot_groups():
    counts = [50, 40, 30, 10, 9, 2, 1]
    test_labels = [c for c in range(6) for _ in range(3)]  # class 6: no test image
    picks = pick_queries(test_labels, counts, per_group=2, many_threshold=35, few_threshold=9)
    assert [g for g, _ in picks] == ["many", "many", "medium", "medium", "few"]
    assert [test_labels[i] for _, i in picks] == [0, 1, 2, 4, 5]  # largest to smallest


def tiny_backbone():
    torch.manual_seed(0)
    backbone, _ = build_backbone("small_cnn")
    return backbone.eval()


def test_box_on_one_cell_responds_most_at_that_cell():
    backbone = tiny_backbone()  # stride 4: 16 px images give 4 x 4 maps
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = backbone(images)
    assert maps.shape == (2, 128, 4, 4)
    for row, col in [(0, 0), (1, 2), (3, 1), (2, 3)]:
        box = torch.tensor([[4.0 * col, 4.0 * row, 4.0 * col + 4, 4.0 * row + 4]] * 2)
        feats = box_features(maps, box, (16, 16))
        assert feats.shape == (2, 128)
        cells = response_maps(feats[0], maps)
        assert cells.shape == (2, 4, 4) and cells.abs().max() <= 1 + 1e-6
        assert divmod(int(cells[0].argmax()), 4) == (row, col)  # its own image
        assert response_maps(feats[0], maps, (16, 16)).shape == (2, 16, 16)


def test_retrieval_figures_on_a_tiny_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    train_labels = [0] * 6 + [1] * 4 + [2] * 2  # many (> 4), medium, few (< 3)
    train_set = [(torch.randn(3, 16, 16, generator=g), c) for c in train_labels]
    test_set = [(torch.randn(3, 16, 16, generator=g), c) for c in (0, 0, 1, 1, 2, 2)]
    groups = dict(many_threshold=4, few_threshold=3)
    settings = RetrievalSettings(k=2, per_group=1, **groups)
    found = compute_retrieval(tiny_backbone(), train_set, test_set, settings)
    paths = write_retrieval_figures(found, train_set, test_set, tmp_path)
    for name, (rows, cols) in {"retrieval": (3, 3), "patch_retrieval": (3, 4)}.items():
        assert paths[name] == tmp_path / f"{name}.png"
        with Image.open(paths[name]) as image:  # one 190 x 200 px cell per image
            assert image.size == (190 * cols, 200 * rows + 40)
    with pytest.raises(ValueError, match="one .x1, y1, x2, y2. box per patch query .3"):
        compute_retrieval(
            tiny_backbone(),
            train_set,
            test_set,
            RetrievalSettings(**groups),
            boxes=torch.zeros(2, 4),
        )
    vectors = torch.nn.Sequential(
        tiny_backbone(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    with pytest.raises(
        ValueError, match=r"backbone must return feature maps \(B, C, h, w\), got shape \(12, 128\)"
    ):
        compute_retrieval(vectors, train_set, test_set)


def test_retrieval_is_computed_then_drawn_with_ranks_names_and_a_colour_scale(
    tmp_path, monkeypatch
):
    from matplotlib.figure import Figure

    g = torch.Generator().manual_seed(0)
    train_set = [(torch.randn(3, 16, 16, generator=g), c) for c in [0] * 6 + [1] * 4 + [2] * 2]
    test_set = [(torch.randn(3, 16, 16, generator=g), c) for c in (0, 0, 1, 1, 2, 2)]
    settings = RetrievalSettings(k=2, per_group=1, many_threshold=4, few_threshold=3)
    found = compute_retrieval(tiny_backbone(), train_set, test_set, settings)
    assert [group for group, _ in found.queries] == ["many", "medium", "few"]
    assert found.neighbours.shape == (3, 2) and found.maps.shape == (3, 3, 16, 16)
    labels = torch.tensor([c for _, c in train_set])
    assert torch.equal(found.neighbour_labels, labels[found.neighbours])
    # the nearest neighbours by cosine of the pooled features, in rank order
    pooled = lambda images: tiny_backbone()(images).mean(dim=(2, 3))  # noqa: E731
    with torch.no_grad():
        refs = pooled(torch.stack([x for x, _ in train_set]))
        query = pooled(test_set[found.queries[0][1]][0][None])
    expected = F.cosine_similarity(query, refs).topk(2).indices
    assert found.neighbours[0].tolist() == expected.tolist()

    saved = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))
    )
    names = ["coat", "bag", "shirt"]
    write_retrieval_figures(found, train_set, test_set, tmp_path, class_names=names)
    retrieval, patch = saved
    titles = [ax.get_title() for ax in retrieval.axes]
    assert titles[0] == f"query: {names[found.query_labels[0]]}"
    first = found.neighbour_labels[0, 0].item()
    mark = "✓" if first == found.query_labels[0] else "✗"
    assert titles[1] == f"#1 {mark} {names[first]}" and titles[2].startswith("#2 ")
    assert not any("cos" in t for t in titles)
    colour_bars = [ax for ax in patch.axes if ax.get_ylabel() == "cosine to the box feature"]
    assert len(colour_bars) == 1  # one scale for every response map
    # both figures label each query row by its shot group and class size
    row_labels = [ax.get_ylabel() for ax in retrieval.axes[::3]]
    assert row_labels == ["many (n=6)", "medium (n=4)", "few (n=2)"]
    patch_rows = [ax.get_ylabel() for ax in patch.axes[:-1:4]]
    assert patch_rows == [row_labels[r] for r in found.patch_rows]


@pytest.mark.slow
def test_dscl_eval_retrieval_flag_writes_beside_the_metrics(tmp_path, capsys):
    weights = tmp_path / "other" / "weights.pt"  # not the run's own backbone.pt
    weights.parent.mkdir()
    torch.save(tiny_backbone().state_dict(), weights)
    run = tmp_path / "run"
    args = [
        "--config",
        str(CONFIGS / "dscl_digits_lt.yaml"),
        *TINY,
        f"output_dir={run}",
    ]
    assert eval_main([*args, "--checkpoint", str(weights), "--retrieval"]) == 0
    assert "patch_retrieval.png" in capsys.readouterr().out
    for name in ("retrieval.png", "patch_retrieval.png", "metrics.json"):
        assert (tmp_path / "other" / "weights_eval" / name).exists()
    assert not run.exists()  # evaluation never writes into (or over) a run's results
