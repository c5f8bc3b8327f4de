"""Feature extraction, linear probe, shot metrics, kNN metrics, plot and metric files."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dscl_plugin.evaluation.features import extract_features
from dscl_plugin.evaluation.figures import plot_per_class_accuracy
from dscl_plugin.evaluation.metrics import knn_metrics, shot_metrics
from dscl_plugin.evaluation.probes import ProbeSchedule, linear_probe
from dscl_plugin.evaluation.reports import format_metrics_table, write_metrics


def blobs(counts, dim=6, seed=0):
    """Well-separated Gaussian blobs, one per class, ``counts[c]`` points each."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(counts), dim) * 6.0
    feats = torch.cat(
        [centres[c] + 0.3 * torch.randn(n, dim, generator=g) for c, n in enumerate(counts)]
    )
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return feats, labels


def test_extract_features_no_grad_and_concatenates():
    net = nn.Linear(12, 3)
    loader = [
        (torch.randn(4, 12), torch.tensor([0, 1, 2, 0]), ["f"] * 4),
        (torch.randn(2, 12), [1, 1]),
    ]
    feats, labels = extract_features(net, loader, "cpu")
    assert feats.shape == (6, 3) and not feats.requires_grad
    assert labels.tolist() == [0, 1, 2, 0, 1, 1] and labels.dtype == torch.long
    assert torch.allclose(feats[:4], net(loader[0][0]).detach())


@pytest.mark.parametrize("class_balanced", [True, False])
def test_linear_probe_separates_long_tailed_blobs(class_balanced):
    train_x, train_y = blobs([60, 12, 3])
    test_x, test_y = blobs([20, 20, 20], seed=1)
    schedule = ProbeSchedule(30, 0.1, [20, 25], 2048, class_balanced, seed=0)
    logits = linear_probe(train_x, train_y, test_x, 3, schedule)
    assert logits.shape == (60, 3)
    assert (logits.argmax(1) == test_y).float().mean().item() == 1.0
    again = linear_probe(
        train_x,
        train_y,
        test_x,
        3,
        ProbeSchedule(30, 0.1, [20, 25], 2048, class_balanced, seed=0),
    )
    assert torch.equal(logits, again)
    other_seed = linear_probe(
        train_x,
        train_y,
        test_x,
        3,
        ProbeSchedule(30, 0.1, [20, 25], 2048, class_balanced, seed=1),
    )
    assert not torch.equal(logits, other_seed)


def test_linear_probe_caps_batch_size(monkeypatch):
    steps = []
    step = torch.optim.SGD.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counting_step)
    x, y = blobs([6, 4])
    linear_probe(x, y, x, 2, ProbeSchedule(epochs=3, lr=0.1, batch_size=4096))
    assert len(steps) == 3  # one full batch per epoch, never a zero-step epoch
    steps.clear()
    linear_probe(x, y, x, 2, ProbeSchedule(2, 0.1, [1], batch_size=4, class_balanced=False))
    assert len(steps) == 2 * math.ceil(10 / 4)


def test_linear_probe_errors():
    x, y = blobs([5, 5])
    schedule = ProbeSchedule(1, 0.1, batch_size=4)
    with pytest.raises(ValueError, match=r"same D, got \(10, 6\) and \(3, 4\)"):
        linear_probe(x, y, torch.randn(3, 4), 2, schedule)
    with pytest.raises(ValueError, match=r"train_labels must be \(10,\)"):
        linear_probe(x, y[:4], x, 2, schedule)
    with pytest.raises(FloatingPointError, match="epoch 0"):
        linear_probe(x * 1e38, y, x, 2, ProbeSchedule(1, 10.0, batch_size=4))
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        ProbeSchedule(0, 0.1, batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ProbeSchedule(1, 0.1, batch_size=0)
    with pytest.raises(
        ValueError, match=r"milestones must be increasing epochs in \(0, epochs=3\)"
    ):
        ProbeSchedule(3, 0.1, [2, 1])
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1"):
        ProbeSchedule(3, 0.1, momentum=1)


def test_probe_config_gives_its_schedule():
    from dscl_plugin.training.schema import ProbeConfig

    probe = ProbeConfig(
        epochs=7,
        lr=0.5,
        batch_size=64,
        milestones=[3, 5],
        class_balanced=False,
        weight_decay=1e-4,
    )
    assert probe.schedule(seed=3) == ProbeSchedule(7, 0.5, [3, 5], 64, False, 1e-4, 0.9, 3)


def test_shot_metrics_groups_and_none():
    # class counts: 0 many, 1 medium, 2 medium, 3 absent from test; no few-shot class
    counts = [150, 50, 30, 40]
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2, 2, 2])
    m = shot_metrics(preds, targets, counts)
    assert m["overall"] == pytest.approx(0.8)
    assert m["per_class"] == [0.75, 0.5, 1.0, None]
    assert m["many"] == pytest.approx(0.75)
    assert m["medium"] == pytest.approx((0.5 + 1.0) / 2)  # mean of per-class accuracies
    assert m["few"] is None
    logits = F.one_hot(preds, 4).float()
    assert shot_metrics(logits, targets, counts) == m
    m2 = shot_metrics(preds, targets, counts, many_threshold=45, few_threshold=35)
    assert m2["many"] == pytest.approx((0.75 + 0.5) / 2)
    assert m2["few"] == 1.0 and m2["medium"] is None
    with pytest.raises(ValueError, match="must match"):
        shot_metrics(preds[:3], targets, counts)
    with pytest.raises(ValueError, match="class_counts"):
        shot_metrics(preds, targets, counts[:2])


def naive_retrieval(ref, ref_y, query, query_y):
    """precision@1, R-precision and MAP@R by brute force on cosine similarity."""
    sim = F.normalize(query, dim=1) @ F.normalize(ref, dim=1).T
    p1, rp, mapr = [], [], []
    for i in range(len(query)):
        order = sim[i].argsort(descending=True)
        rel = (ref_y[order] == query_y[i]).float()
        r = int((ref_y == query_y[i]).sum())
        top = rel[:r]
        p1.append(rel[0].item())
        rp.append(top.mean().item())
        mapr.append((top * top.cumsum(0) / torch.arange(1, r + 1)).sum().item() / r)
    return sum(p1) / len(p1), sum(rp) / len(rp), sum(mapr) / len(mapr)


def test_knn_metrics_match_brute_force():
    g = torch.Generator().manual_seed(0)
    ref, ref_y = (
        torch.randn(40, 5, generator=g),
        torch.randint(0, 3, (40,), generator=g),
    )
    query, query_y = (
        torch.randn(15, 5, generator=g),
        torch.randint(0, 3, (15,), generator=g),
    )
    m = knn_metrics(ref, ref_y, query, query_y, batch_size=7)
    p1, rp, mapr = naive_retrieval(ref, ref_y, query, query_y)
    assert m["precision_at_1"] == pytest.approx(p1)
    assert m["r_precision"] == pytest.approx(rp)
    assert m["mean_average_precision_at_r"] == pytest.approx(mapr)
    train_x, train_y = blobs([10, 5, 3])
    test_x, test_y = blobs([4, 4, 4], seed=1)
    perfect = knn_metrics(train_x, train_y, test_x, test_y)
    assert perfect == dict(precision_at_1=1.0, r_precision=1.0, mean_average_precision_at_r=1.0)
    assert set(knn_metrics(train_x, train_y, test_x, test_y, k=3)) == {
        "precision_at_1",
        "mean_average_precision",
    }


def test_plot_per_class_accuracy_writes_png(tmp_path):
    path = plot_per_class_accuracy(
        [0.9, None, 0.2, 0.5],
        [500, 40, 5, 0],
        tmp_path / "out" / "per_class.png",
        many_threshold=100,
        few_threshold=20,
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="differ"):
        plot_per_class_accuracy([0.5], [1, 2], tmp_path / "x.png")


def test_write_metrics_null_and_table(tmp_path):
    metrics = {
        "linear_probe": {
            "overall": 0.5,
            "many": torch.tensor(0.75),
            "medium": None,
            "few": float("nan"),
            "per_class": [1.0, None],
        },
        "knn": {"precision_at_1": 0.25},
        "epochs": 2,
    }
    path = write_metrics(metrics, tmp_path / "run" / "metrics.json")
    loaded = json.loads(path.read_text())
    assert loaded["linear_probe"] == {
        "overall": 0.5,
        "many": 0.75,
        "medium": None,
        "few": None,
        "per_class": [1.0, None],
    }
    assert '"medium": null' in path.read_text()
    table = format_metrics_table(metrics)
    lines = table.splitlines()
    assert any(line.split() == ["linear_probe/overall", "50.00%"] for line in lines)
    assert any(line.split() == ["linear_probe/medium", "-"] for line in lines)
    assert any(line.split() == ["knn/precision_at_1", "25.00%"] for line in lines)
    assert any(line.split() == ["epochs", "2"] for line in lines)
    assert "per_class" not in table
    why = {"medium": "no class has 20 ... 100 training images"}
    lines = format_metrics_table(metrics, why).splitlines()
    assert [line.split(None, 1) for line in lines if "medium" in line] == [
        ["linear_probe/medium", "empty (no class has 20 ... 100 training images)"]
    ]
    assert any(line.split() == ["linear_probe/few", "-"] for line in lines)


class NoisyTemplates(torch.utils.data.Dataset):
    """Class c's images are a fixed template plus fresh noise on every access (like a
    random augmentation): ``counts[c]`` images per class."""

    def __init__(self, counts, dim=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.templates = torch.randn(len(counts), dim, generator=g) * 3
        self.targets = [c for c, n in enumerate(counts) for _ in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        c = self.targets[i]
        return self.templates[c] + 0.5 * torch.randn(self.templates.shape[1]), c


def test_augmented_probe_embeds_fresh_images_every_epoch_and_learns():
    from dscl_plugin.data.samplers import ClassBalancedSampler
    from dscl_plugin.evaluation.probes import augmented_linear_probe

    torch.manual_seed(0)
    dataset = NoisyTemplates([40, 8, 2])
    sampler = ClassBalancedSampler(dataset.targets, len(dataset), torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, sampler=sampler)
    seen, grad_modes = [], set()

    def embed(images):
        grad_modes.add(torch.is_grad_enabled())
        seen.append(images.clone())
        return images

    test_x = dataset.templates.repeat(5, 1) + 0.5 * torch.randn(15, 12)
    test_y = torch.arange(3).repeat(5)
    logits = augmented_linear_probe(embed, loader, test_x, 3, ProbeSchedule(4, 0.1, [3]))
    assert logits.shape == (15, 3) and grad_modes == {False}
    assert len(seen) == 4 * len(loader)  # one pass over the loader per epoch
    first, second = seen[0], seen[len(loader)]
    assert not torch.equal(first, second)  # new draws and new augmentations each epoch
    assert (logits.argmax(1) == test_y).float().mean().item() == 1.0


def test_per_class_plot_stands_on_its_own(tmp_path, monkeypatch):
    """Title, legend naming the thresholds, class ids on the points, ticks at the real
    class sizes (what a reader needs without the code)."""
    from matplotlib.figure import Figure

    saved = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))
    )
    counts = [144, 111, 86, 66, 51, 40, 31, 24, 18, 14]
    accuracy = [0.97, 1.0, 0.93, 0.9, 0.97, 0.83, None, 0.8, 0.73, 0.6]
    title = "dscl on digits_lt: linear probe top-1 85.7%"
    plot_per_class_accuracy(accuracy, counts, tmp_path / "p.png", 60, 20, title=title)
    (ax,) = saved[0].axes
    assert ax.get_title() == title
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "many-shot: > 60 images" in legend and "few-shot: < 20 images" in legend
    ids = sorted(int(t.get_text()) for t in ax.texts)
    assert ids == [0, 1, 2, 3, 4, 5, 7, 8, 9]  # class 6 has no test images
    shown = sorted(c for c, a in zip(counts, accuracy) if a is not None)
    assert list(ax.get_xticks()) == shown
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in shown]


def test_per_class_plot_names_the_classes(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))
    )
    names = ["T-shirt/top", "trouser", "coat"]
    plot_per_class_accuracy([0.5, None, 1.0], [60, 20, 5], tmp_path / "p.png", class_names=names)
    assert sorted(t.get_text() for t in saved[0].axes[0].texts) == [
        "T-shirt/top",
        "coat",
    ]
    with pytest.raises(ValueError, match=r"class_names \(2\) and class_counts \(3\) differ"):
        plot_per_class_accuracy(
            [0.5, None, 1.0], [60, 20, 5], tmp_path / "q.png", class_names=names[:2]
        )


def test_per_class_labels_never_overlap(tmp_path, monkeypatch):
    """Fashion-MNIST-LT: "bag" (100 images) and "ankle boot" (60) sit at similar sizes and
    accuracies; every label keeps clear of the others, of the points and of the legend."""
    from matplotlib.figure import Figure

    from dscl_plugin.data.fashion_mnist_lt import CLASS_NAMES
    from dscl_plugin.evaluation.figures import spread_ticks

    saved = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))
    )
    counts = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    accuracy = [0.80, 0.97, 0.78, 0.86, 0.80, 0.95, 0.55, 0.94, 0.96, 0.95]
    plot_per_class_accuracy(
        accuracy, counts, tmp_path / "p.png", 1000, 200, class_names=CLASS_NAMES
    )
    (ax,) = saved[0].axes
    renderer = saved[0].canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == sorted(CLASS_NAMES)
    legend = ax.get_legend().get_window_extent(renderer)
    frame = ax.get_window_extent(renderer)
    points = [ax.transData.transform((n, 100 * a)) for n, a in zip(counts, accuracy)]
    for i, box in enumerate(boxes):
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
        assert not box.overlaps(legend)
        assert not any(box.overlaps(other) for other in boxes[:i])
        assert not any(box.contains(x, y) for x, y in points)
    # x ticks: the real class sizes, thinned where they would run into each other
    assert spread_ticks(sorted(counts)) == sorted(counts)
    assert spread_ticks([10, 11, 12, 100, 1000]) == [10, 100, 1000]
