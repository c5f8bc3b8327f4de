"""DSCL + PBSD in a plain PyTorch loop with Lightly parts (CPU, offline, < 1 min).

Data: ``digits_lt`` (scikit-learn's bundled 8x8 digits, long-tailed, upsampled, no
download) wrapped in ``lightly.data.LightlyDataset``; views and patches from
``DSCLTransform``, batches from ``PatchViewCollate``. The model is ``DSCLModel``
(Lightly's ``MoCoProjectionHead``, ``update_momentum``, a ``LabeledMemoryBank``) with
the EMA momentum from ``lightly.utils.scheduler.cosine_schedule``. Prints the losses
and the test accuracy of a cosine 1-nearest-neighbour classifier on the pooled
backbone features before and after training. The losses grow while the queue fills
(every queued key is one more candidate in the softmax), then fall.

    python examples/lightly_training_loop.py --steps 60
"""

import argparse

import torch
import torch.nn.functional as F
from lightly.data import LightlyDataset
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor
from torch.utils.data import DataLoader

from dscl_plugin.data import build_dataset
from dscl_plugin.models import DSCLModel, build_backbone
from dscl_plugin.transforms import DSCLTransform, PatchViewCollate, eval_transform


@torch.no_grad()
def embed_all(model: DSCLModel, dataset) -> tuple[Tensor, Tensor]:
    """L2-normalised ``model.embed`` features of a dataset, with its labels."""
    model.eval()
    loader = DataLoader(dataset, batch_size=256)
    feats, labels = zip(*[(model.embed(x), y) for x, y in loader])
    model.train()
    return F.normalize(torch.cat(feats), dim=1), torch.cat(labels)


def nn_accuracy(model: DSCLModel, train_set, test_set) -> float:
    """Test accuracy of the cosine 1-nearest neighbour among the train features."""
    train_feats, train_labels = embed_all(model, train_set)
    test_feats, test_labels = embed_all(model, test_set)
    preds = train_labels[(test_feats @ train_feats.T).argmax(dim=1)]
    return (preds == test_labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--num-patches", type=int, default=2)
    parser.add_argument("--pbsd-weight", type=float, default=1.5)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    transform = DSCLTransform(
        input_size=args.input_size,
        patch_size=args.patch_size,
        num_patches=args.num_patches if args.pbsd_weight > 0 else 0,
        patch_scale=(0.2, 0.6),
        crop_scale=(0.4, 1.0),  # digits: mild crops ...
        hflip_prob=0.0,  # ... and no mirroring
        jitter=(0.4, 0.4, 0.0, 0.0),
        key_jitter=(0.4, 0.4, 0.0, 0.0),
        grayscale_prob=0.0,
        blur_prob=0.0,
    )
    train_views = LightlyDataset.from_torch_dataset(  # samples: (views, label, filename)
        build_dataset("digits_lt", "train", input_size=args.input_size),
        transform=transform,
    )
    loader = DataLoader(
        train_views,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        collate_fn=PatchViewCollate(),
    )
    probe = eval_transform(args.input_size)
    train_eval = build_dataset("digits_lt", "train", probe, input_size=args.input_size)
    test_eval = build_dataset("digits_lt", "test", probe, input_size=args.input_size)

    backbone, feature_dim = build_backbone(args.backbone, cifar_stem=args.input_size <= 32)
    model = DSCLModel(
        backbone,
        feature_dim,
        proj_dim=64,
        queue_size=1024,
        temperature=0.1,
        pbsd_weight=args.pbsd_weight,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    print(
        f"train images: {len(train_eval)}, test 1-NN accuracy before: "
        f"{nn_accuracy(model, train_eval, test_eval):.3f}"
    )

    step = 0
    while step < args.steps:
        for view_q, view_k, patches, boxes, labels in loader:
            model.update_momentum(cosine_schedule(step, args.steps, 0.99, 1.0))
            out = model(view_q, view_k, patches, boxes, labels)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            if step % 10 == 0 or step == args.steps - 1:
                print(
                    f"step {step:4d}  loss {out['loss'].item():.3f}  "
                    f"dscl {out['loss_dscl'].item():.3f}  pbsd {out['loss_pbsd'].item():.3f}  "
                    f"queue {int(model.memory_bank.num_filled)}"
                )
            step += 1
            if step == args.steps:
                break
    print(
        f"test 1-NN accuracy after {args.steps} steps: "
        f"{nn_accuracy(model, train_eval, test_eval):.3f}"
    )


if __name__ == "__main__":
    main()
