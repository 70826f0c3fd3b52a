"""Ready-made classifiers for 28x28 grey images (Fashion-MNIST): x (N, 1, 28, 28) -> logits (N, 10).

``MODELS`` maps the names the command line accepts to the builders. Each builder draws its
initial weights from ``pynn.random`` (seed it with ``pynn.manual_seed``) and returns a
``Sequential`` that ``save``/``load`` rebuild from its config.
"""
from __future__ import annotations

from pynn.conv import AdaptiveAvgPool2d, Conv2d, MaxPool2d
from pynn.layers import Dropout, Flatten, Linear, ReLU
from pynn.module import Sequential
from pynn.normalization import BatchNorm2d
from pynn.residual import Residual


def mlp() -> Sequential:
    """784-256-128-10 with ReLU and Dropout(0.2) after each hidden layer."""
    return Sequential(
        Flatten(),
        Linear(784, 256), ReLU(), Dropout(0.2),
        Linear(256, 128), ReLU(), Dropout(0.2),
        Linear(128, 10),
    )


def cnn() -> Sequential:
    """Two 3x3 convolutions (32 and 64 channels, padding 1), each followed by ReLU and 2x2 max
    pooling (28 -> 14 -> 7), then a 3136-128-10 classifier: the LeNet pattern (LeCun et al. 1998)
    with the widths of Keras's and PyTorch's MNIST examples."""
    return Sequential(
        Conv2d(1, 32, 3, padding=1), ReLU(), MaxPool2d(2),
        Conv2d(32, 64, 3, padding=1), ReLU(), MaxPool2d(2),
        Flatten(),
        Linear(64 * 7 * 7, 128), ReLU(),
        Linear(128, 10),
    )


def _basic_block(in_channels: int, out_channels: int, stride: int) -> Residual:
    """He et al.'s basic block: 3x3 conv (with the block's stride), BN, ReLU, 3x3 conv, BN, added
    to x, or to a 1x1-conv + BN projection of x when the block changes the shape."""
    block = Sequential(
        Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), BatchNorm2d(out_channels), ReLU(),
        Conv2d(out_channels, out_channels, 3, padding=1, bias=False), BatchNorm2d(out_channels),
    )
    projection = None
    if stride != 1 or in_channels != out_channels:
        projection = Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                BatchNorm2d(out_channels))
    return Residual(block, projection=projection)


def resnet() -> Sequential:
    """A small ResNet (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition",
    CVPR 2016): a 3x3 conv stem (16 channels) with BN and ReLU, three stages of one basic block
    each (16 channels; 32 with stride 2; 64 with stride 2: 28 -> 14 -> 7), each block followed by
    ReLU, then global average pooling and a 64-10 linear classifier. Convolutions followed by
    BN have no bias, as in the paper."""
    stages = []
    for in_channels, out_channels, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
        stages += [_basic_block(in_channels, out_channels, stride), ReLU()]
    return Sequential(
        Conv2d(1, 16, 3, padding=1, bias=False), BatchNorm2d(16), ReLU(),
        *stages,
        AdaptiveAvgPool2d(1), Flatten(),
        Linear(64, 10),
    )


MODELS = {"mlp": mlp, "cnn": cnn, "resnet": resnet}
