"""torchvision ResNets (``resnet*``, ``resnext*``, ``wide_resnet*``) as feature-map backbones."""

import torchvision
from torch import nn

RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")


def is_resnet(name: str) -> bool:
    """Whether ``name`` is a torchvision ResNet builder (``resnet18``, ``resnext50_32x4d``, ...)."""
    return name.startswith(RESNET_PREFIXES) and name in torchvision.models.list_models(
        module=torchvision.models
    )


def build_resnet(
    name: str, cifar_stem: bool = False, zero_init_residual: bool = True
) -> tuple[nn.Sequential, int]:
    """A randomly initialised ResNet without its pooling and ``fc`` (never downloads
    weights), and its output channels.

    ``cifar_stem`` replaces the stem (7x7 stride-2 conv + max-pool) with a 3x3 stride-1
    conv and no max-pool, for 32 px inputs (stride 8 instead of 32).
    """
    resnet = torchvision.models.get_model(name, weights=None, zero_init_residual=zero_init_residual)
    if cifar_stem:
        resnet.conv1 = nn.Conv2d(3, resnet.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        resnet.maxpool = nn.Identity()
    feature_dim = resnet.fc.in_features
    return nn.Sequential(*list(resnet.children())[:-2]), feature_dim
