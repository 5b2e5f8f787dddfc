"""Plain-torch CNNs with torchvision's module layout and state-dict names.

torchvision is not always importable (there is no CPU build for every torch), yet users' models, our
tests and `fastcam bench` rely on torchvision's attribute layout: ResNet `conv1 … layer4, avgpool, fc`,
VGG and DenseNet `features` / `classifier`. These builders reproduce that layout (and parameter names,
so torchvision state dicts load) with random weights; nothing is downloaded.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet layout: conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000,
                 in_channels: int = 3, width: int = 64, groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.groups, self.base_width = groups, width_per_group
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG(nn.Module):
    """torchvision.models.VGG layout: features, avgpool (7×7), classifier (three Linear)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 1000, in_channels: int = 3,
                 hidden: int = 4096, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.Conv2d(c, int(v), 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(int(v)))
                layers.append(nn.ReLU(inplace=True))
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, out], 1)


class DenseNet(nn.Module):
    """torchvision.models.DenseNet layout: features (conv0 … denseblockN, norm5), classifier; the forward
    applies ReLU, adaptive average pooling and the classifier after `features`."""

    def __init__(self, growth: int = 32, blocks: tuple[int, ...] = (6, 12, 24, 16), init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        feats = nn.Sequential()
        feats.add_module("conv0", nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False))
        feats.add_module("norm0", nn.BatchNorm2d(init_features))
        feats.add_module("relu0", nn.ReLU(inplace=True))
        feats.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = init_features
        for i, n in enumerate(blocks):
            block = nn.Sequential(*[_DenseLayer(c + j * growth, growth, bn_size) for j in range(n)])
            feats.add_module(f"denseblock{i + 1}", block)
            c += n * growth
            if i != len(blocks) - 1:
                feats.add_module(f"transition{i + 1}", nn.Sequential(
                    nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)))
                c //= 2
        feats.add_module("norm5", nn.BatchNorm2d(c))
        self.features = feats
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.features(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def resnet18(num_classes: int = 1000, **kw: int) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kw)


def resnet50(num_classes: int = 1000, **kw: int) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kw)


def vgg16(num_classes: int = 1000, **kw: int) -> VGG:
    cfg: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    return VGG(cfg, num_classes, **kw)


def densenet121(num_classes: int = 1000, **kw: int) -> DenseNet:
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes, **kw)


def tiny_resnet(num_classes: int = 5, in_channels: int = 3, width: int = 8) -> ResNet:
    """A ResNet-10-like network with torchvision's layout, small enough for CPU tests."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes, in_channels=in_channels, width=width)


def tiny_vgg(num_classes: int = 5, in_channels: int = 3) -> VGG:
    """A VGG with torchvision's `features`/`classifier` layout, small enough for CPU tests."""
    return VGG([8, "M", 16, "M", 32, 32, "M"], num_classes, in_channels=in_channels, hidden=32)


def tiny_densenet(num_classes: int = 5, in_channels: int = 3) -> DenseNet:
    return DenseNet(growth=4, blocks=(2, 2), init_features=8, bn_size=2, num_classes=num_classes, in_channels=in_channels)


class BasicBlock3d(BasicBlock):
    """`BasicBlock` with 3x3x3 convolutions (the 3-D ResNets of medical imaging, e.g. MedicalNet, MONAI);
    the same forward."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        nn.Module.__init__(self)
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample


class ResNet3d(nn.Module):
    """A 3-D ResNet for volumes (B, C, D, H, W) with torchvision's ResNet attribute layout: conv1, bn1,
    relu, maxpool, layer1..layer4 (5-D activations (B, C, d, h, w)), avgpool, fc."""

    def __init__(self, layers: list[int], num_classes: int = 2, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv3d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], 2)
        self.layer3 = self._make_layer(width * 4, layers[2], 2)
        self.layer4 = self._make_layer(width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(width * 8, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm3d(planes))
        layers = [BasicBlock3d(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock3d(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_3d(num_classes: int = 2, in_channels: int = 1, width: int = 64) -> ResNet3d:
    """A 3-D ResNet-18 (BasicBlock3d, [2, 2, 2, 2]) for (B, in_channels, D, H, W) volumes."""
    return ResNet3d([2, 2, 2, 2], num_classes, in_channels=in_channels, width=width)


def tiny_resnet3d(num_classes: int = 2, in_channels: int = 1, width: int = 4) -> ResNet3d:
    """A ResNet-10-like 3-D network, small enough for CPU tests: layer4 gives (B, 8·width, D/32, H/32, W/32)."""
    return ResNet3d([1, 1, 1, 1], num_classes, in_channels=in_channels, width=width)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18, "resnet50": resnet50, "vgg16": vgg16, "densenet121": densenet121,
    "tiny_resnet": tiny_resnet, "tiny_vgg": tiny_vgg, "tiny_densenet": tiny_densenet,
    "resnet18_3d": resnet18_3d, "tiny_resnet3d": tiny_resnet3d,
}
