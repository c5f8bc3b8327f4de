"""The losses, the PML binding, the memory bank, the models and a ``dscl-train`` run on
every device (CPU always, CUDA where present: see ``conftest.py``), in float32 and under
bf16/fp16 autocast, against float64 references computed on the CPU.

Under autocast the features come in the autocast dtype, as an autocast model's head
returns them. The losses compute in float32 from them, so a loss must equal the float64
reference of those (rounded) features to float32 accuracy, and its gradients must match
to the features' own precision.
"""

import copy
import json
import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import CONFIG, TINY, requires_cuda
from pytorch_metric_learning.reducers import MeanReducer
from references import (
    ALPHA,
    NaiveRing,
    T,
    layout1_sets,
    layout2_sets,
    naive_contrastive,
    naive_loss,
    naive_pbsd,
    tuple_sets,
    with_queries,
)

from dscl_plugin import pml
from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin.models import DSCLModel, SupConModel, build_backbone, pool_regions
from dscl_plugin.runs.compute import torch_threads
from dscl_plugin.runs.stage1 import train
from dscl_plugin.runs.stage2 import evaluate
from dscl_plugin.training.config import load_config

LOSS_TOL = dict(rtol=1e-4, atol=1e-5)  # every loss is computed in float32 (or float64)
# relative accuracy of a gradient returned in the features' dtype
GRAD_RTOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _amp(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def _features(x: torch.Tensor, device: torch.device, amp_dtype, grad: bool = True):
    """``x`` on ``device`` in the dtype an (autocast) model would give it."""
    out = x.to(device=device, dtype=amp_dtype or torch.float32)
    return out.requires_grad_(grad)


def _reference(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """CPU float64 leaf copies (with grad) of the exact values fed to the device."""
    return [None if t is None else t.detach().cpu().double().requires_grad_() for t in tensors]


def _assert_loss(loss: torch.Tensor, expected: torch.Tensor, device: torch.device) -> None:
    assert loss.device.type == device.type and loss.dtype == torch.float32
    torch.testing.assert_close(loss.detach().cpu().double(), expected.detach(), **LOSS_TOL)


def _assert_grads(got, want, like) -> None:
    """Gradients on the device of, and in the dtype of, the tensors in ``like``."""
    like = [x for x in like if x is not None]
    assert len(got) == len(want) == len(like)
    for g, w, x in zip(got, want, like):
        assert g.device == x.device and g.dtype == x.dtype
        rtol = GRAD_RTOL[x.dtype]
        scale = float(w.abs().max())
        torch.testing.assert_close(g.cpu().double(), w, rtol=rtol, atol=rtol * scale)


def _grads(loss: torch.Tensor, tensors) -> list[torch.Tensor]:
    tensors = [t for t in tensors if t is not None]
    return list(torch.autograd.grad(loss, tensors))


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _labels(n: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randint(classes, (n,), generator=torch.Generator().manual_seed(seed))


# --- Lightly-style losses ----------------------------------------------------------


@pytest.mark.parametrize("alpha", [None, 1.0 / 9.0])
@pytest.mark.parametrize("k", [None, 20])
def test_contrastive_loss(device, amp_dtype, alpha, k):
    b, d, classes = 8, 6, 3
    query = _features(_random(b, d, seed=1), device, amp_dtype)
    key = _features(_random(b, d, seed=2), device, amp_dtype)
    labels = _labels(b, classes, seed=3)
    queue = queue_labels = None
    if k is not None:
        queue = _features(_random(k, d, seed=4), device, amp_dtype)
        queue_labels = _labels(k, classes + 1, seed=5)
    loss_fn = SupConLoss(temperature=T) if alpha is None else DSCLLoss(alpha=alpha, temperature=T)
    with _amp(device, amp_dtype):
        loss = loss_fn(
            query,
            key,
            labels.to(device),
            queue,
            None if queue_labels is None else queue_labels.to(device),
        )
    q64, k64, m64 = _reference(query, key, queue)
    expected = naive_contrastive(q64, k64, labels, m64, queue_labels, alpha, T)
    _assert_loss(loss, expected, device)
    inputs, references = [query, key, queue], [q64, k64, m64]
    _assert_grads(_grads(loss, inputs), _grads(expected, references), inputs)


def test_contrastive_loss_large_queue(device, amp_dtype):
    """A realistic size, with a queue longer than one float64 class-sum chunk."""
    b, k, d, classes = 64, 10000, 32, 10
    query = _features(_random(b, d, seed=6), device, amp_dtype)
    key = _features(_random(b, d, seed=7), device, amp_dtype, grad=False)
    queue = _random(k, d, seed=8).float().to(device)  # the bank stores float32
    labels, queue_labels = _labels(b, classes, seed=9), _labels(k, classes, seed=10)
    with _amp(device, amp_dtype):
        loss = DSCLLoss()(query, key, labels.to(device), queue, queue_labels.to(device))
    q64, k64, m64 = _reference(query, key, queue)
    expected = DSCLLoss()(q64, k64, labels, m64, queue_labels)
    _assert_loss(loss, expected, device)
    _assert_grads(_grads(loss, [query]), _grads(expected, [q64]), [query])


@pytest.mark.parametrize("k", [None, 7])
def test_pbsd_loss(device, amp_dtype, k):
    b, num_patches, d = 3, 4, 6
    patch = _features(_random(b, num_patches, d, seed=11), device, amp_dtype)
    region = _features(_random(b, num_patches, d, seed=12), device, amp_dtype, grad=False)
    key = _features(_random(b, d, seed=13), device, amp_dtype)
    queue = None if k is None else _features(_random(k, d, seed=14), device, amp_dtype)
    with _amp(device, amp_dtype):
        loss = PBSDLoss(temperature=T)(patch, region, key, queue)
    p64, r64, k64, m64 = _reference(patch, region, key, queue)
    expected = naive_pbsd(p64, r64, k64, m64, T)
    _assert_loss(loss, expected, device)
    inputs, references = [patch, key, queue], [p64, k64, m64]
    _assert_grads(_grads(loss, inputs), _grads(expected, references), inputs)


@pytest.mark.parametrize("bank_on_device", [True, False])
def test_loss_owned_memory_bank(device, amp_dtype, bank_on_device):
    """Three steps through a 10-slot bank kept on the device, or left on the CPU while
    the features are on the device (the loss module was never moved)."""
    b, d, classes = 6, 5, 3
    loss_fn = DSCLLoss(alpha=0.3, memory_bank_size=(10, d))
    if bank_on_device:
        loss_fn.to(device)
    bank_device = device if bank_on_device else torch.device("cpu")
    keys: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for step in range(3):
        query = _features(_random(b, d, seed=20 + step), device, amp_dtype)
        key = _features(_random(b, d, seed=30 + step), device, amp_dtype, grad=False)
        y = _labels(b, classes, seed=40 + step)
        with _amp(device, amp_dtype):
            loss = loss_fn(query, key, y.to(device))
        q64, k64 = _reference(query, key)
        past = torch.cat(keys)[-10:] if keys else None  # the 10 newest keys at most
        past_y = torch.cat(labels)[-10:] if labels else None
        expected = naive_contrastive(q64, k64, y, past, past_y, 0.3, T)
        _assert_loss(loss, expected, device)
        _assert_grads(_grads(loss, [query]), _grads(expected, [q64]), [query])
        keys.append(torch.nn.functional.normalize(k64.detach(), dim=1))  # the bank stores unit keys
        labels.append(y)
    stored, stored_labels = loss_fn.memory_bank.get()
    assert stored.device.type == bank_device.type and stored.dtype == torch.float32
    order = [(8 + j) % 10 for j in range(10)]  # 18 keys written: the oldest kept is key 8
    torch.testing.assert_close(stored[order].cpu().double(), torch.cat(keys)[8:])
    assert torch.equal(stored_labels[order].cpu(), torch.cat(labels)[8:])


def test_memory_bank_enqueues_across_devices_and_dtypes(device, amp_dtype):
    """Keys from ``device`` in the autocast dtype, int32 labels, banks on either device."""
    for bank_device in {torch.device("cpu"), device}:
        bank = LabeledMemoryBank(size=(5, 3)).to(bank_device)
        keys = _random(7, 3, seed=50).to(device, amp_dtype or torch.float32)
        labels = torch.arange(7, dtype=torch.int32, device=device)
        bank.enqueue(keys[:4], labels[:4])
        bank.enqueue(keys[4:], labels[4:])  # wraps: slots 4, 0, 1
        features, stored = bank.get()
        assert features.device.type == bank_device.type and features.dtype == torch.float32
        assert stored.dtype == torch.long and stored.cpu().tolist() == [5, 6, 2, 3, 4]
        torch.testing.assert_close(features.cpu(), keys[[5, 6, 2, 3, 4]].cpu().float())


# --- pytorch-metric-learning binding ------------------------------------------------


def test_pml_layout1(device, amp_dtype):
    b, d = 5, 8
    emb = _features(_random(2 * b, d, seed=60), device, amp_dtype)
    y = _labels(b, 2, seed=61)
    labels = torch.cat([y, y])
    with _amp(device, amp_dtype):
        loss = pml.DSCLLoss(alpha=0.3, reducer=MeanReducer())(emb, labels.to(device))
    (e64,) = _reference(emb)
    expected = naive_loss(e64, e64, 0.3, *layout1_sets(labels.tolist())).mean()
    _assert_loss(loss, expected, device)
    reference = pml.DSCLLoss(alpha=0.3, reducer=MeanReducer())(e64, labels)  # float64, CPU
    torch.testing.assert_close(reference, expected)
    _assert_grads(_grads(loss, [emb]), _grads(reference, [e64]), [emb])


def test_pml_layout2_with_memory(device, amp_dtype):
    b, m, d, classes = 5, 7, 8, 4
    query = _features(_random(b, d, seed=62), device, amp_dtype)
    ref = _features(_random(b + m, d, seed=63), device, amp_dtype)
    y, mem_y = _labels(b, classes, seed=64), _labels(m, classes, seed=65)
    ref_y = torch.cat([y, mem_y])
    loss_fn = pml.DSCLLoss(beta=8, reducer=MeanReducer())
    with _amp(device, amp_dtype):
        loss = loss_fn(query, y.to(device), ref_emb=ref, ref_labels=ref_y.to(device))
    q64, r64 = _reference(query, ref)
    sets = layout2_sets(y.tolist(), ref_y.tolist())
    refs, *query_sets = with_queries(q64, y.tolist(), r64, *sets)  # official: queries too
    expected = naive_loss(q64, refs, ALPHA, *query_sets).mean()
    _assert_loss(loss, expected, device)
    reference = loss_fn(q64, y, ref_emb=r64, ref_labels=ref_y)
    _assert_grads(_grads(loss, [query, ref]), _grads(reference, [q64, r64]), [query, ref])


def test_pml_miner(device, amp_dtype):
    """The miner samples on the device; the loss of its pairs matches the reference."""
    b, d = 6, 8
    emb = _features(_random(2 * b, d, seed=66), device, amp_dtype)
    y = _labels(b, 2, seed=67)
    labels = torch.cat([y, y]).to(device)
    torch.manual_seed(0)
    indices = pml.DSCLMiner(max_class_positives=1, max_negatives=4)(emb, labels)
    assert all(x.device.type == device.type for x in indices)
    own = [(i + b) % (2 * b) for i in range(2 * b)]
    cands, pos = tuple_sets(tuple(x.cpu() for x in indices), 2 * b, own, layout1=True)
    assert all(len(p) <= 1 for p in pos) and all(len(c) <= 1 + 1 + 4 for c in cands)
    with _amp(device, amp_dtype):
        loss = pml.DSCLLoss(reducer=MeanReducer())(emb, labels, indices)
    (e64,) = _reference(emb)
    expected = naive_loss(e64, e64, ALPHA, cands, own, pos).mean()
    _assert_loss(loss, expected, device)


def test_pml_cross_batch_memory(device, amp_dtype):
    """Three steps through a 10-slot memory (it wraps), against a CPU float64 twin."""
    b, d, classes = 4, 6, 3
    memory = pml.DSCLCrossBatchMemory(pml.DSCLLoss(reducer=MeanReducer()), d, memory_size=10)
    twin = pml.DSCLCrossBatchMemory(pml.DSCLLoss(reducer=MeanReducer()), d, memory_size=10)
    ring = NaiveRing(10)
    mask = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
    for step in range(3):
        query = _features(_random(b, d, seed=70 + step), device, amp_dtype)
        key = _features(_random(b, d, seed=80 + step), device, amp_dtype, grad=False)
        y = _labels(b, classes, seed=90 + step)
        embeddings, labels = torch.cat([query, key]), torch.cat([y, y]).to(device)
        with _amp(device, amp_dtype):
            loss = memory(embeddings, labels, enqueue_mask=mask.to(device))
        q64, k64 = _reference(query, key)
        reference = twin(torch.cat([q64, k64.detach()]), torch.cat([y, y]), enqueue_mask=mask)
        slots = ring.enqueue(k64.detach(), y)
        expected = ring.expected(q64.detach(), y.tolist(), slots, ALPHA).mean()
        _assert_loss(loss, expected, device)
        _assert_grads(_grads(loss, [query]), _grads(reference, [q64]), [query])
    assert memory.embedding_memory.device.type == device.type
    assert memory.queue_idx == twin.queue_idx == ring.ptr


# --- models --------------------------------------------------------------------------


def test_pool_regions_of_a_large_batch_under_autocast(device, amp_dtype):
    """Batch indices above 256 and fractional corners survive a bf16/fp16 feature map."""
    b = 300
    values = (torch.arange(b) % 16).double()  # exact in every dtype; index 257 -> 1, 256 -> 0
    feature_map = values[:, None, None, None].expand(b, 2, 4, 4).clone()
    feature_map[..., 2:] += 100.0  # right half of the map differs
    boxes = torch.tensor([[[7.5, 0.0, 8.5, 16.0]]]).expand(b, 1, 4)  # a box across x = 8
    with _amp(device, amp_dtype):
        regions = pool_regions(
            feature_map.to(device, amp_dtype or torch.float32),
            boxes.to(device),
            (16, 16),
            aligned=True,
        )
    expected = pool_regions(feature_map, boxes, (16, 16), aligned=True)
    torch.testing.assert_close(regions.cpu().double(), expected)
    assert torch.equal(expected[:, 0, 0], values + 50.0)


def _model_pair(cls, device, **kwargs):
    """A small-CNN model on ``device`` and its float64 CPU twin, queues filled alike."""
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn")
    model = cls(backbone, dim, proj_dim=8, queue_size=16, **kwargs)
    model.memory_bank.enqueue(_random(10, 8, seed=100).float(), _labels(10, 2, seed=101))
    twin = copy.deepcopy(model).double()
    return model.to(device).train(), twin.train()


def _model_batch(seed: int = 0, b: int = 4, num_patches: int = 3, view: int = 16, patch: int = 8):
    g = torch.Generator().manual_seed(seed)
    view_q = torch.randn(b, 3, view, view, generator=g, dtype=torch.float64)
    view_k = torch.randn(b, 3, view, view, generator=g, dtype=torch.float64)
    patches = torch.randn(b, num_patches, 3, patch, patch, generator=g, dtype=torch.float64)
    xy = torch.randint(0, view // 2, (b, num_patches, 2), generator=g).double()
    wh = torch.randint(2, view // 2 + 1, (b, num_patches, 2), generator=g).double()
    return (
        view_q,
        view_k,
        patches,
        torch.cat([xy, xy + wh], dim=-1),
        torch.arange(b) % 2,
    )


# Relative error of a whole model's losses and (norm-wise) parameter gradients: under
# autocast the backbone itself runs in bf16/fp16, and BatchNorm's backward over a
# 4-image batch amplifies its rounding (measured on the CPU: bf16 up to 0.15, fp16 up to
# 0.02 for the first conv layer's gradient; losses within 3e-4 on an AMX CPU, but 2.2e-3
# for fp16 on an AVX2-only AMD EPYC, where fp16 autocast rounds every op's output to fp16:
# fp16's unit roundoff is 4.9e-4, so the fp16 bound is that of bf16, 5e-3).
MODEL_LOSS_RTOL = {None: 1e-4, torch.bfloat16: 5e-3, torch.float16: 5e-3}
MODEL_GRAD_RTOL = {None: 1e-4, torch.bfloat16: 0.25, torch.float16: 0.05}


@pytest.mark.parametrize("cls,kwargs", [(DSCLModel, dict(pbsd_weight=1.5)), (SupConModel, {})])
def test_model_training_step(device, amp_dtype, cls, kwargs):
    model, twin = _model_pair(cls, device, **kwargs)
    batch = _model_batch()
    inputs = [x.to(device, torch.float32 if x.is_floating_point() else x.dtype) for x in batch]
    with _amp(device, amp_dtype):
        out = model(*inputs)
    out["loss"].backward()
    expected = twin(*batch)
    expected["loss"].backward()
    rtol = MODEL_LOSS_RTOL[amp_dtype]
    for name in ("loss", "loss_dscl", "loss_pbsd"):
        assert out[name].device.type == device.type and out[name].dtype == torch.float32
        torch.testing.assert_close(
            out[name].detach().cpu().double(),
            expected[name].detach(),
            rtol=rtol,
            atol=rtol,
        )
    params = dict(model.named_parameters())
    for name, want in twin.named_parameters():
        got = params[name].grad
        if want.grad is None:
            assert got is None, name
            continue
        assert got.device.type == device.type and got.dtype == torch.float32, name
        error = (got.cpu().double() - want.grad).norm() / want.grad.norm().clamp_min(1e-12)
        assert error <= MODEL_GRAD_RTOL[amp_dtype], f"{name}: gradient error {float(error):.2e}"
    keys, labels = model.memory_bank.get()  # this step's keys were enqueued
    twin_keys, twin_labels = twin.memory_bank.get()
    assert keys.device.type == device.type and torch.equal(labels.cpu(), twin_labels)
    torch.testing.assert_close(keys.cpu().double(), twin_keys, rtol=rtol, atol=rtol)


# --- dscl-train ---------------------------------------------------------------------


class _RecordSteps(pl.Callback):
    """Device and value of every training loss, and the queue's device."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.devices = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.devices |= {loss.device.type, pl_module.model.memory_bank.bank.device.type}


_on_cuda = dict(marks=requires_cuda)


@pytest.mark.slow
@pytest.mark.parametrize(
    "device_type,precision",
    [
        ("cpu", "32-true"),
        ("cpu", "bf16-mixed"),
        pytest.param("cuda", "32-true", **_on_cuda),
        pytest.param("cuda", "bf16-mixed", **_on_cuda),
        pytest.param("cuda", "16-mixed", **_on_cuda),
    ],
)
def test_dscl_train_short_run(tmp_path, device_type, precision):
    """Stage 1 (DSCL + PBSD on digits_lt, 2 steps) and stage 2 on the device."""
    accelerator = "gpu" if device_type == "cuda" else "cpu"
    config = load_config(
        CONFIG,
        TINY
        + [
            f"output_dir={tmp_path}",
            f"trainer.accelerator={accelerator}",
            f"trainer.precision={precision}",
            "trainer.epochs=1",
            "trainer.limit_train_batches=2",
            "optim.warmup_epochs=0",
        ],
    )
    record = _RecordSteps()
    with torch_threads(1):
        module = train(config, callbacks=[record])
        metrics = evaluate(config, module)
    assert record.devices == {device_type}
    assert len(record.losses) == 2 and all(math.isfinite(x) for x in record.losses)
    assert int(module.model.memory_bank.num_filled) == 2 * 16  # both steps' keys
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    probe = json.loads((tmp_path / "metrics.json").read_text())["linear_probe"]
    assert probe == metrics["linear_probe"] and all(0.0 <= v <= 1.0 for v in probe.values())
