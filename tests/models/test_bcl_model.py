"""BCLModel and its CosineClassifier against the official BCLModel's parts
(FlamieZhu/Balanced-Contrastive-Learning, models/resnext.py: NormedLinear, head, head_fc)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dscl_plugin.models import BCLModel, CosineClassifier, build_backbone
from dscl_plugin.models.bcl_model import bcl_projection_head


def test_cosine_classifier_is_the_scaled_cosine_to_each_class_weight():
    torch.manual_seed(0)
    classifier = CosineClassifier(5, 3, scale=7.0).double()
    torch.testing.assert_close(classifier.weight.norm(dim=1), torch.ones(3, dtype=torch.float64))
    with torch.no_grad():
        classifier.weight.mul_(torch.tensor([[2.0], [0.5], [3.0]], dtype=torch.float64))
    x = torch.randn(4, 5, dtype=torch.float64)
    expected = torch.tensor(
        [[7.0 * F.cosine_similarity(row, w, dim=0).item() for w in classifier.weight] for row in x],
        dtype=torch.float64,
    )
    torch.testing.assert_close(classifier(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_classes": 0}, "num_classes must be an int >= 1, got 0"),
        ({"scale": 0.0}, "scale must be > 0, got 0.0"),
    ],
)
def test_cosine_classifier_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CosineClassifier(**{"in_features": 4, "num_classes": 3, **kwargs})


def test_the_head_is_the_official_mlp():
    torch.manual_seed(0)
    ours = bcl_projection_head(6, 4).double()
    official = nn.Sequential(
        nn.Linear(6, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4)
    ).double()  # models/resnext.py: head and head_fc
    official.load_state_dict(ours.layers.state_dict())
    x = torch.randn(8, 6, dtype=torch.float64)
    for _ in range(3):  # train mode: batch statistics, the running ones updated
        torch.testing.assert_close(ours(x), official(x), rtol=0, atol=0)
    ours.eval(), official.eval()
    y = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(ours(y), official(y), rtol=0, atol=0)


def _model(classes=3):
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn")
    return BCLModel(backbone, dim, num_classes=classes, proj_dim=8).double()


def test_the_outputs_are_the_official_three_and_the_prototypes_train_the_classifier():
    model = _model()
    images = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    features, logits, prototypes = model(images)
    assert features.shape == (4, 8) and logits.shape == (4, 3) and prototypes.shape == (3, 8)
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(features.norm(dim=1), ones)
    torch.testing.assert_close(prototypes.norm(dim=1), ones[:3])
    expected = F.normalize(model.prototype_head(model.classifier.weight), dim=1)
    torch.testing.assert_close(prototypes, expected, rtol=0, atol=0)
    prototypes.sum().backward()  # not detached: the classifier's weights get a gradient
    assert model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


def test_one_class_is_refused_by_name():
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        _model(classes=1)
