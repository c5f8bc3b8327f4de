"""TSC's class targets: points spread near-uniformly on the unit hypersphere, the running
class centroids and their one-to-one matching to the targets (Li et al., CVPR 2022,
https://arxiv.org/abs/2111.13998; official ``LTH14/targeted-supcon``,
``target_generation.py`` and ``moco/builder.py``)."""

from functools import lru_cache

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def uniform_targets(
    num_classes: int,
    dim: int,
    seed: int = 0,
    steps: int = 300,
    lr: float = 0.01,
    temperature: float = 0.07,
) -> Tensor:
    """``num_classes`` unit vectors in ``dim`` dimensions, spread near-uniformly.

    Minimises ``mean_i log sum_{j != i} exp(t_i . t_j / temperature)`` over unit ``t`` by
    Adam from a seeded Gaussian start and keeps the best iterate, as the official
    ``target_generation.py`` (which also sums the constant ``j = i`` term and runs
    10,000 steps at ``lr`` 1e-3 in float32; without that term the energy is well
    conditioned, and 300 float64 steps at ``lr`` 0.01 reach the regular simplex when
    ``num_classes <= dim + 1``). Computed on the CPU once per process for each argument
    set (cached in memory); C = 1000, D = 128 takes tens of seconds.

    Returns:
        (num_classes, dim) float32 unit rows (a new tensor each call).
    """
    return _uniform_targets(num_classes, dim, seed, steps, lr, temperature).clone()


@lru_cache(maxsize=8)
def _uniform_targets(
    num_classes: int, dim: int, seed: int, steps: int, lr: float, temperature: float
) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    best = F.normalize(points, dim=1)
    if num_classes < 2:
        return best.float()
    points.requires_grad_()
    optimizer = torch.optim.Adam([points], lr=lr)
    others = ~torch.eye(num_classes, dtype=torch.bool)
    best_energy = float("inf")
    with torch.enable_grad():
        for _ in range(steps):
            unit = F.normalize(points, dim=1)
            similarity = (unit @ unit.T / temperature).masked_fill(~others, float("-inf"))
            energy = similarity.logsumexp(dim=1).mean()
            if energy.item() < best_energy:
                best_energy, best = energy.item(), unit.detach()
            optimizer.zero_grad()
            energy.backward()
            optimizer.step()
    return best.float()


def match_targets(centroids: Tensor, targets: Tensor) -> Tensor:
    """The target of each class: the one-to-one assignment of the C class ``centroids``
    to the C ``targets`` with the largest total cosine similarity (the Hungarian
    algorithm, ``scipy.optimize.linear_sum_assignment``; a host sync).

    Returns:
        (C,) int64 target index of each class, on the centroids' device.
    """
    similarity = (centroids.detach() @ targets.detach().T).double().cpu().numpy()
    _, columns = linear_sum_assignment(similarity, maximize=True)
    return torch.as_tensor(columns, dtype=torch.long, device=centroids.device)


@torch.no_grad()
def update_centroids_(
    centroids: Tensor, features: Tensor, labels: Tensor, momentum: float = 0.9
) -> None:
    """TSC's running class centroids, in place: for every class ``c`` in ``labels``,
    ``mu_c <- normalize(momentum mu_c + (1 - momentum) normalize(mean_{y_i = c} f_i))``;
    the other classes keep theirs.

    Args:
        centroids: (C, D) unit rows.
        features: (B, D) the batch's unit features.
        labels: (B,) their class ids in ``[0, C)``.
        momentum: the weight of the old centroid (official 0.9).
    """
    labels = labels.long().to(centroids.device)
    sums = centroids.new_zeros(centroids.shape).index_add_(0, labels, features.to(centroids))
    present = torch.bincount(labels, minlength=centroids.shape[0]) > 0
    moved = momentum * centroids + (1 - momentum) * F.normalize(sums, dim=1)
    centroids.copy_(torch.where(present[:, None], F.normalize(moved, dim=1), centroids))
