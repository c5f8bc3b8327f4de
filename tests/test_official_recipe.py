"""Fidelity to the official DSCL recipe (METHOD.md): the defaults, the official RoI
pooling, and one full training step against an independent re-statement of the official
step (float64, BN in eval mode)."""

import copy
import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS
from torch import nn

from dscl_plugin import DSCLLoss, DSCLModel, DSCLTransform, PBSDLoss
from dscl_plugin.models import build_backbone, pool_regions
from dscl_plugin.training.config import load_config

BETA, T, LAMBDA = 8.0, 0.07, 1.5


# --- an independent RoIAlign (Caffe2 / torchvision definition, aligned=False) ------


def _bilinear(fmap: np.ndarray, y: float, x: float) -> np.ndarray:
    """Bilinear sample of (C, H, W) at (y, x); 0 outside [-1, H] x [-1, W], clamped edges."""
    _, height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(fmap.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * fmap[:, y0, x0]
        + (1 - ly) * lx * fmap[:, y0, x1]
        + ly * (1 - lx) * fmap[:, y1, x0]
        + ly * lx * fmap[:, y1, x1]
    )


def official_region(fmap: np.ndarray, box, scale: float) -> np.ndarray:
    """Mean of the 2x2 RoIAlign of ``box`` (image pixels) with ``aligned=False``: corners
    scaled without the half-pixel offset, the box at least 1 cell wide and high,
    ceil(size / 2) sample points per bin and axis."""
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bin_w, bin_h = roi_w / 2, roi_h / 2
    grid_w, grid_h = math.ceil(roi_w / 2), math.ceil(roi_h / 2)
    total = np.zeros(fmap.shape[0])
    for ph in range(2):
        for pw in range(2):
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    total += _bilinear(fmap, y, x) / (grid_h * grid_w)
    return total / 4


def official_regions(feature_map: torch.Tensor, boxes: torch.Tensor, view: int) -> torch.Tensor:
    scale = feature_map.shape[-1] / view
    fmaps = feature_map.detach().double().numpy()
    out = [
        [official_region(fmaps[i], box.tolist(), scale) for box in boxes[i]]
        for i in range(boxes.shape[0])
    ]
    return torch.tensor(np.array(out), dtype=feature_map.dtype)


def test_official_pooling_matches_an_independent_roi_align():
    g = torch.Generator().manual_seed(0)
    feature_map = torch.randn(2, 5, 7, 7, generator=g, dtype=torch.float64)
    boxes = torch.tensor(
        [
            [[0.0, 0.0, 56.0, 56.0], [3.0, 9.5, 20.0, 30.0], [50.0, 49.0, 56.0, 56.0]],
            [[10.0, 2.0, 13.0, 5.0], [0.0, 30.0, 40.0, 56.0], [22.2, 11.1, 47.7, 33.3]],
        ],
        dtype=torch.float64,
    )
    official = pool_regions(feature_map, boxes, (56, 56), aligned=False)
    torch.testing.assert_close(official, official_regions(feature_map, boxes, 56))
    shifted = pool_regions(feature_map, boxes, (56, 56), aligned=True)
    assert (shifted - official).abs().max() > 1e-2  # the switch changes the teacher


# --- one training step against a re-statement of the official step -----------------


def official_dscl(q, k, labels, queue, queue_labels, beta=BETA, temperature=T):
    """Official DSCL, candidates cat(q, k, queue) without the anchor itself; the own
    key weighs 1, every class positive beta / |P_i|, all over 1 + beta (own key only
    when P_i is empty)."""
    candidates = torch.cat([q, k, queue])
    cand_labels = torch.cat([labels, labels, queue_labels])
    b = q.shape[0]
    total = q.new_zeros(())
    for i in range(b):
        keep = torch.ones(candidates.shape[0], dtype=torch.bool)
        keep[i] = False  # the anchor is no candidate of its own
        logits = candidates[keep] @ q[i] / temperature
        log_p = logits - torch.logsumexp(logits, dim=0)
        columns = torch.arange(candidates.shape[0])[keep]
        own = (columns == b + i).nonzero().item()
        positive = (cand_labels[keep] == labels[i]) & (columns != b + i)
        if positive.any():
            weights = positive.to(q) * (beta / positive.sum().item())
            loss = -(log_p[own] + (weights * log_p).sum()) / (1 + beta)
        else:
            loss = -log_p[own]
        total = total + loss
    return total / b


def official_pbsd(student, teacher, k, queue, temperature=T):
    """-sum softmax(t . [k_i, queue] / T) log_softmax(s . [k_i, queue] / T), mean over B L."""
    b, num_patches, _ = student.shape
    total = student.new_zeros(())
    for i in range(b):
        candidates = torch.cat([k[i : i + 1], queue])
        for l in range(num_patches):
            target = torch.softmax(teacher[i, l] @ candidates.T / temperature, dim=0)
            log_student = torch.log_softmax(student[i, l] @ candidates.T / temperature, dim=0)
            total = total - (target.detach() * log_student).sum()
    return total / (b * num_patches)


def official_step(online, head, momentum, momentum_head, queue, queue_labels, batch, view):
    """The official forward: q, k, DSCL on cat(q, k, queue), teacher from roi_align(aligned
    False) of the q view's map through the online head, L separate patch passes."""
    view_q, view_k, patches, boxes, labels = batch
    feature_map = online(view_q)
    q = F.normalize(head(feature_map.mean(dim=(2, 3))), dim=1)
    with torch.no_grad():
        k = F.normalize(momentum_head(momentum(view_k).mean(dim=(2, 3))), dim=1)
        regions = official_regions(feature_map.detach(), boxes, view)
        teacher = F.normalize(head(regions), dim=-1)
    student = torch.stack(
        [
            F.normalize(head(online(patches[:, l]).mean(dim=(2, 3))), dim=1)
            for l in range(patches.shape[1])
        ],
        dim=1,
    )
    loss_dscl = official_dscl(q, k, labels, queue, queue_labels)
    loss_pbsd = official_pbsd(student, teacher, k, queue)
    return loss_dscl, loss_pbsd


def _official_setup(**model_kwargs):
    """A float64 DSCLModel with distinct EMA weights and BN statistics, a filled queue, a
    batch, and a deep copy of the model for the official re-statement."""
    torch.manual_seed(0)
    b, num_patches, view, patch = 4, 3, 16, 8
    backbone, dim = build_backbone("small_cnn")
    model = DSCLModel(backbone, dim, proj_dim=8, queue_size=12, **model_kwargs).double()
    with torch.no_grad():  # distinct EMA weights and non-trivial BN statistics
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.startswith("memory_bank") or not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.mul_(0.5 + torch.rand_like(tensor))
            else:
                tensor.add_(0.05 * torch.randn_like(tensor))
    model.memory_bank.enqueue(
        F.normalize(torch.randn(10, 8, dtype=torch.float64), dim=1),
        torch.randint(0, 3, (10,)),
    )
    g = torch.Generator().manual_seed(1)
    view_q = torch.randn(b, 3, view, view, generator=g, dtype=torch.float64)
    view_k = torch.randn(b, 3, view, view, generator=g, dtype=torch.float64)
    patches = torch.randn(b, num_patches, 3, patch, patch, generator=g, dtype=torch.float64)
    xy = torch.rand(b, num_patches, 2, generator=g, dtype=torch.float64) * 8
    boxes = torch.cat([xy, xy + 2 + 6 * torch.rand(b, num_patches, 2, generator=g)], dim=-1)
    labels = torch.tensor([0, 1, 0, 2])
    batch = (view_q, view_k, patches, boxes, labels)
    queue, queue_labels = (x.clone() for x in model.memory_bank.get())
    return model, copy.deepcopy(model), batch, queue, queue_labels, view


def _assert_equals_official_step(model, reference, batch, queue, queue_labels, view, rtol):
    out = model(*batch)
    out["loss"].backward()
    loss_dscl, loss_pbsd = official_step(
        reference.backbone,
        reference.projection_head,
        reference.backbone_momentum,
        reference.projection_head_momentum,
        queue,
        queue_labels,
        batch,
        view,
    )
    (loss_dscl + LAMBDA * loss_pbsd).backward()
    torch.testing.assert_close(out["loss_dscl"], loss_dscl, rtol=rtol, atol=rtol)
    torch.testing.assert_close(out["loss_pbsd"], loss_pbsd, rtol=rtol, atol=rtol)
    assert loss_pbsd > 0
    online = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    expected = dict(reference.named_parameters())
    assert len(online) > 0
    for name, param in online:
        torch.testing.assert_close(param.grad, expected[name].grad, rtol=100 * rtol, atol=rtol)


def test_one_training_step_equals_the_official_step_float64():
    model, reference, *step = _official_setup()  # the default (official) switches
    model.eval()
    reference.eval()
    _assert_equals_official_step(model, reference, *step, rtol=1e-12)


def test_separate_patch_passes_are_the_official_train_mode_step():
    """``patch_passes="separate"``: in train mode each of the L passes normalises with its B
    patches' BN statistics and updates the running averages, as the official code does."""
    model, reference, *step = _official_setup(patch_passes="separate")
    _assert_equals_official_step(model, reference, *step, rtol=1e-9)  # both in train mode
    stats = [n for n, _ in model.backbone.named_buffers() if n.endswith("running_mean")]
    assert stats
    buffers, expected = (
        dict(model.backbone.named_buffers()),
        dict(reference.backbone.named_buffers()),
    )
    for name in stats:  # after the q view and the L patch passes
        torch.testing.assert_close(buffers[name], expected[name], rtol=1e-10, atol=1e-12)

    batched, views_only, batch, *_ = _official_setup()  # default: one pass, stats untouched
    batched(*batch)
    views_only.backbone(batch[0])  # the q view's pass alone updates the statistics
    buffers, expected = (
        dict(batched.backbone.named_buffers()),
        dict(views_only.backbone.named_buffers()),
    )
    for name in stats:
        torch.testing.assert_close(buffers[name], expected[name], rtol=1e-12, atol=1e-12)


# --- the defaults are the paper's recipe -------------------------------------------


def _defaults(fn):
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_python_api_defaults_are_the_paper_recipe():
    model_defaults = _defaults(DSCLModel.__init__)
    assert {
        k: model_defaults[k]
        for k in (
            "proj_dim",
            "queue_size",
            "momentum",
            "temperature",
            "pbsd_weight",
            "shuffle_bn",
            "roi_aligned",
            "patch_passes",
        )
    } == dict(
        proj_dim=128,
        queue_size=65536,
        momentum=0.999,
        temperature=0.07,
        pbsd_weight=1.5,
        shuffle_bn=True,
        roi_aligned=False,
        patch_passes="batched",  # batched: a kept deviation
    )
    backbone, dim = build_backbone("resnet50")
    model = DSCLModel(backbone, dim)
    assert model.criterion.alpha == pytest.approx(1 / (1 + BETA))  # beta 8
    head = [m for m in model.projection_head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head] == [
        (2048, 2048),
        (2048, 128),
    ]
    assert model.memory_bank.size == (65536, 128)
    bn = backbone[4][0].bn3 if hasattr(backbone[4][0], "bn3") else None
    assert bn is not None and torch.equal(bn.weight, torch.zeros_like(bn.weight))  # zero-init

    assert (DSCLLoss().alpha, DSCLLoss().temperature) == (pytest.approx(1 / 9), 0.07)
    assert PBSDLoss().temperature == 0.07
    transform = DSCLTransform()
    assert (transform.input_size, transform.patch_size, transform.num_patches) == (
        224,
        64,
        5,
    )
    assert transform.patch_scale == (0.05, 0.6)
    assert transform.patch_ratio == pytest.approx((3 / 4, 4 / 3))
    crop = transform.geometric.transforms[0]
    assert (tuple(crop.size), tuple(crop.scale)) == ((224, 224), (0.08, 1.0))
    transform_defaults = _defaults(DSCLTransform.__init__)
    assert transform_defaults["jitter"] == (0.4, 0.4, 0.4, 0.1)
    assert (
        transform_defaults["jitter_prob"],
        transform_defaults["grayscale_prob"],
        transform_defaults["blur_prob"],
    ) == (0.8, 0.2, 0.5)
    assert (
        transform_defaults["key_jitter"],
        transform_defaults["key_jitter_prob"],
    ) == ((0.4, 0.4, 0.4, 0.0), 1.0)


@pytest.mark.parametrize("name", ["dscl_imagenet_lt.yaml", "supcon_imagenet_lt.yaml"])
def test_imagenet_lt_configs_are_the_paper_recipe(name):
    c = load_config(CONFIGS / name)
    m, o, t, p = c.model, c.optim, c.trainer, c.probe
    assert (m.backbone, m.proj_dim, m.zero_init_residual) == ("resnet50", 128, True)
    assert (m.queue_size, m.momentum, m.temperature) == (65536, 0.999, 0.07)
    assert (m.shuffle_bn, m.roi_aligned, t.sync_batchnorm) == (True, False, False)
    if c.method == "dscl":
        assert (m.beta, m.pbsd_weight, m.num_patches, m.patch_size) == (8, 1.5, 5, 64)
        assert m.patch_passes == "separate"
        assert m.patch_scale == [0.05, 0.6]
    assert (o.lr, o.momentum, o.weight_decay, o.warmup_epochs, o.cosine) == (
        0.1,
        0.9,
        5e-4,
        10,
        True,
    )
    assert (t.epochs, t.batch_size) == (200, 256)
    assert (p.protocol, p.epochs, p.lr, p.batch_size, p.milestones) == (
        "augmented",
        40,
        10.0,
        2048,
        [20, 30],
    )
    assert (p.class_balanced, p.weight_decay) == (True, 0.0)
    d = c.data
    assert (d.crop_scale, d.color_jitter, d.jitter_prob) == (
        [0.08, 1.0],
        [0.4, 0.4, 0.4, 0.1],
        0.8,
    )
    assert (d.grayscale_prob, d.blur_prob, d.hflip_prob) == (0.2, 0.5, 0.5)
