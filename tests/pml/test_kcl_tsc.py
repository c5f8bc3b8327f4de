"""KCL and TSC under PML's MoCo-style call give the values and gradients of
dscl_plugin.losses.KCLLoss / TSCLoss, and refuse the calls they cannot serve."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import SumReducer

from dscl_plugin import losses
from dscl_plugin.pml import KCLLoss, TSCLoss


def _inputs(b=6, k=9, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, d, generator=gen, dtype=torch.float64).requires_grad_()
    key = torch.randn(b, d, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 0, 1])[:b]
    queue = torch.randn(k, d, generator=gen, dtype=torch.float64)
    queue_labels = torch.randint(-1, 4, (k,), generator=gen)
    return query, key, labels, queue, queue_labels


def _pml_call(loss_fn, query, key, labels, queue, queue_labels):
    return loss_fn(
        query,
        labels,
        ref_emb=torch.cat([key, queue]),
        ref_labels=torch.cat([labels, queue_labels]),
    )


def _generator():
    return torch.Generator().manual_seed(3)


@pytest.mark.parametrize("k", [0, 2])
def test_kcl_pml_call_equals_the_lightly_call(k):
    query, key, labels, queue, queue_labels = _inputs()
    pml_loss = _pml_call(KCLLoss(k, 0.2, _generator()), query, key, labels, queue, queue_labels)
    lightly_loss = losses.KCLLoss(k, 0.2, generator=_generator())(
        query, key, labels, queue, queue_labels
    )
    torch.testing.assert_close(pml_loss, lightly_loss, rtol=1e-12, atol=0)
    (got,) = torch.autograd.grad(pml_loss, query)
    (want,) = torch.autograd.grad(lightly_loss, query)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_tsc_pml_call_equals_the_lightly_call_and_moves_the_centroids():
    query, key, labels, queue, queue_labels = _inputs(seed=1)
    pml_fn = TSCLoss(4, 5, num_positives=2, generator=_generator()).double()
    lightly_fn = losses.TSCLoss(4, 5, num_positives=2, generator=_generator()).double()
    before = pml_fn.loss.centroids.clone()
    pml_loss = _pml_call(pml_fn, query, key, labels, queue, queue_labels)
    lightly_loss = lightly_fn(query, key, labels, queue, queue_labels)
    torch.testing.assert_close(pml_loss, lightly_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(pml_fn.loss.centroids, lightly_fn.centroids, rtol=0, atol=0)
    assert not torch.equal(pml_fn.loss.centroids, before)
    assert set(pml_fn.state_dict()) == {"loss.targets", "loss.centroids"}


def test_the_reducer_gets_one_loss_per_anchor():
    query, key, labels, queue, queue_labels = _inputs(seed=2)
    summed = _pml_call(KCLLoss(0, reducer=SumReducer()), query, key, labels, queue, queue_labels)
    per_anchor = losses.KCLLoss(0).anchor_losses(query, key, labels, queue, queue_labels)
    torch.testing.assert_close(summed, per_anchor.sum(), rtol=1e-12, atol=0)


def test_registered_in_pml_and_refusing_what_it_cannot_serve():
    assert pml_losses.KCLLoss is KCLLoss and pml_losses.TSCLoss is TSCLoss
    query, key, labels, _, _ = _inputs(seed=3)
    two_views, both = torch.cat([query, key]), torch.cat([labels, labels])
    with pytest.raises(ValueError, match=r"ref_emb and ref_labels must be given with labels: KCL"):
        KCLLoss()(two_views, both)
    with pytest.raises(ValueError, match=r"indices_tuple must be None: KCLLoss draws its own"):
        KCLLoss()(query, labels, (torch.tensor([0]), torch.tensor([1])), key, labels)
    with pytest.raises(ValueError, match=r"distance must be CosineSimilarity.*got LpDistance"):
        KCLLoss(distance=LpDistance())
    with pytest.raises(ValueError, match=r"labels must be a 1D tensor"):  # PML's own check
        KCLLoss()(query, key.detach(), ref_emb=key, ref_labels=labels)
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0 and < num_classes \(2\)"):
        TSCLoss(2, 5)(query, labels, ref_emb=key, ref_labels=labels)
