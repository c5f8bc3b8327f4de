"""DSCL in a plain pytorch-metric-learning training loop (CPU, offline, < 1 min).

Trains a small MLP on a long-tailed subset of scikit-learn's 8x8 digits twice:

1. batch mode: ``DSCLLoss`` on two augmented views (layout 1) with ``DSCLMiner``
   keeping at most k class positives per anchor and a ``ClassWeightedReducer``;
2. MoCo mode: an EMA key encoder and ``DSCLCrossBatchMemory`` (labelled key memory).

Each run prints the loss and the test accuracy (1-nearest-neighbour and nearest class
mean, cosine) before and after training.

    python examples/pml_training_loop.py --steps 800
"""

import argparse
import copy

import torch
import torch.nn.functional as F
from lightly.models.utils import update_momentum
from pytorch_metric_learning import losses, miners, reducers
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import dscl_plugin  # noqa: F401  (registers the names used below in PML)


def long_tailed_digits(imbalance: float, seed: int):
    """Train split with n_c = n_max * imbalance^(-c/9); balanced test split."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_tr, y_tr = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr)
    n_max = int((y_tr == 0).sum())
    keep = torch.cat(
        [
            torch.nonzero(y_tr == c).flatten()[: max(2, int(n_max * imbalance ** (-c / 9)))]
            for c in range(10)
        ]
    )
    return (
        x_tr[keep],
        y_tr[keep],
        torch.tensor(x_te, dtype=torch.float32),
        torch.tensor(y_te),
    )


def augment(x: Tensor) -> Tensor:
    """Random 1-pixel shift, pixel dropout and Gaussian noise on (N, 64) digits."""
    images = x.view(-1, 8, 8)
    shifts = torch.randint(-1, 2, (2,))
    images = torch.roll(images, shifts=(int(shifts[0]), int(shifts[1])), dims=(1, 2))
    images = images * (torch.rand_like(images) > 0.1)
    return (images + 0.1 * torch.randn_like(images)).view(-1, 64)


def encoder(dim: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, dim))


@torch.no_grad()
def accuracy(model: nn.Module, x_tr, y_tr, x_te, y_te) -> str:
    """Test accuracy of 1-NN and of the nearest class mean, cosine on the embeddings."""
    train, test = F.normalize(model(x_tr), dim=1), F.normalize(model(x_te), dim=1)
    knn = (y_tr[(test @ train.T).argmax(dim=1)] == y_te).float().mean().item()
    means = torch.stack([train[y_tr == c].mean(dim=0) for c in range(10)])
    ncm = ((test @ F.normalize(means, dim=1).T).argmax(dim=1) == y_te).float().mean().item()
    return f"1-NN {knn:.3f}, class mean {ncm:.3f}"


def batch_mode(data, steps: int, batch_size: int) -> None:
    x_tr, y_tr, x_te, y_te = data
    model = encoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    counts = torch.bincount(y_tr, minlength=10).float()
    class_weights = counts.sum() / (10 * counts)  # up-weight tail anchors
    loss_fn = losses.DSCLLoss(temperature=0.1, reducer=reducers.ClassWeightedReducer(class_weights))
    miner = miners.DSCLMiner(max_class_positives=8)
    print(f"[batch] accuracy before: {accuracy(model, *data)}")
    total = 0.0
    for step in range(steps):
        idx = torch.randint(len(x_tr), (batch_size,))
        x, y = x_tr[idx], y_tr[idx]
        embeddings = model(torch.cat([augment(x), augment(x)]))  # layout 1: [view1, view2]
        labels = torch.cat([y, y])
        loss = loss_fn(embeddings, labels, miner(embeddings, labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        if (step + 1) % max(1, steps // 5) == 0:
            print(f"[batch] step {step + 1:4d} mean loss {total / max(1, steps // 5):.4f}")
            total = 0.0
    print(f"[batch] accuracy after:  {accuracy(model, *data)}")


def moco_mode(data, steps: int, batch_size: int, momentum: float = 0.99) -> None:
    x_tr, y_tr, x_te, y_te = data
    model = encoder()
    key_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    memory = losses.DSCLCrossBatchMemory(
        losses.DSCLLoss(temperature=0.1),
        embedding_size=32,
        memory_size=256,
        miner=miners.DSCLMiner(max_class_positives=16),
    )
    is_key = torch.cat([torch.zeros(batch_size), torch.ones(batch_size)]).bool()
    print(f"[moco]  accuracy before: {accuracy(model, *data)}")
    total = 0.0
    for step in range(steps):
        update_momentum(model, key_model, m=momentum)  # EMA key encoder
        idx = torch.randint(len(x_tr), (batch_size,))
        x, y = x_tr[idx], y_tr[idx]
        query = model(augment(x))
        with torch.no_grad():
            key = key_model(augment(x))
        loss = memory(torch.cat([query, key]), torch.cat([y, y]), enqueue_mask=is_key)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        if (step + 1) % max(1, steps // 5) == 0:
            print(f"[moco]  step {step + 1:4d} mean loss {total / max(1, steps // 5):.4f}")
            total = 0.0
    print(f"[moco]  accuracy after:  {accuracy(model, *data)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps per mode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--imbalance", type=float, default=10.0, help="n_max / n_min")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a tiny MLP: more threads only add overhead
    torch.manual_seed(args.seed)
    data = long_tailed_digits(args.imbalance, args.seed)
    print(f"train class counts: {torch.bincount(data[1], minlength=10).tolist()}")
    batch_mode(data, args.steps, args.batch_size)
    moco_mode(data, args.steps, args.batch_size)


if __name__ == "__main__":
    main()
