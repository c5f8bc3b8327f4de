"""The dense DSCL kernel ``decoupled_cross_entropy`` (the PML binding's maths) against a
naive loop, values and gradients."""

import pytest
import torch

from dscl_plugin.functional.contrastive import decoupled_cross_entropy


def _dense_case(dtype, seed=14):
    """Random logits with -inf exclusions, own columns and class-positive masks."""
    gen = torch.Generator().manual_seed(seed)
    b, n = 5, 9
    logits = torch.randn(b, n, generator=gen, dtype=dtype)
    own_index = torch.randint(n, (b,), generator=gen)
    excluded = torch.rand(b, n, generator=gen) < 0.2
    excluded[torch.arange(b), own_index] = False
    positive = (torch.rand(b, n, generator=gen) < 0.4) & ~excluded
    positive[torch.arange(b), own_index] = False
    positive[0] = False  # an anchor without class positives
    logits = logits.masked_fill(excluded, float("-inf")).requires_grad_()
    return logits, own_index, positive, excluded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [None, 0.0, 0.3, 1.0])
def test_decoupled_cross_entropy_matches_naive(alpha, dtype):
    logits, own_index, positive, excluded = _dense_case(dtype)
    losses = decoupled_cross_entropy(logits, own_index, positive, alpha)
    expected = []
    for i in range(logits.shape[0]):
        kept = [j for j in range(logits.shape[1]) if not excluded[i, j]]
        lse = torch.logsumexp(torch.stack([logits[i, j] for j in kept]), dim=0)
        pos = [j for j in kept if positive[i, j]]
        w_own = 1.0 / (len(pos) + 1) if alpha is None else (alpha if pos else 1.0)
        w_pos = w_own if alpha is None else (1.0 - alpha) / max(len(pos), 1)
        loss = lse - w_own * logits[i, own_index[i]]
        for j in pos:
            loss = loss - w_pos * logits[i, j]
        expected.append(loss)
    expected = torch.stack(expected)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses, expected, **tol)
    weights = torch.arange(1.0, 6.0, dtype=dtype)  # a non-uniform upstream gradient
    (got,) = torch.autograd.grad((losses * weights).sum(), logits)
    (want,) = torch.autograd.grad((expected * weights).sum(), logits)
    torch.testing.assert_close(got, want, **tol)


def test_decoupled_cross_entropy_gradcheck():
    logits, own_index, positive, _ = _dense_case(torch.float64, seed=15)
    assert torch.autograd.gradcheck(
        lambda x: decoupled_cross_entropy(x, own_index, positive, 0.3), (logits,)
    )
