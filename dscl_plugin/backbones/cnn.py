"""Small plain CNNs for CPU-sized runs: stacks of 3x3 conv-BN-ReLU blocks."""

from collections.abc import Sequence

from torch import nn

# name -> (output channels, strides) of a stack of 3x3 conv-BN-ReLU blocks (overall stride 4)
PLAIN_CNNS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "small_cnn": ((32, 64, 128), (1, 2, 2)),
    "cnn5": ((32, 64, 64, 128, 128), (1, 2, 1, 2, 1)),
}


def build_plain_cnn(name: str) -> tuple[nn.Sequential, int]:
    """The plain CNN ``name`` of :data:`PLAIN_CNNS` and its output channels."""
    widths, strides = PLAIN_CNNS[name]
    return plain_cnn(widths, strides), widths[-1]


def plain_cnn(widths: Sequence[int], strides: Sequence[int]) -> nn.Sequential:
    """3x3 conv-BN-ReLU blocks with the given output channels and strides."""
    layers, in_channels = [], 3
    for width, stride in zip(widths, strides):
        layers += [
            nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_channels = width
    return nn.Sequential(*layers)
