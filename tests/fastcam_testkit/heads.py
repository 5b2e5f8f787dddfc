"""Small classifiers with the heads `fastcam.deploy` must accept or refuse (torchvision's forwards, verbatim
where it matters: DenseNet's in-place functional ReLU, EfficientNet's Dropout + Linear classifier)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcam.models import DenseNet, ResNet, tiny_densenet, tiny_resnet


class TorchvisionDenseNet(DenseNet):
    """fastcam's tiny DenseNet with torchvision's forward: F.relu(inplace=True) on `features`, then pooling."""

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        return self.classifier(out)


def torchvision_densenet(num_classes: int = 3) -> TorchvisionDenseNet:
    return TorchvisionDenseNet(growth=4, blocks=(2, 2), init_features=8, bn_size=2, num_classes=num_classes)


class EfficientNetStyle(nn.Module):
    """EfficientNet's layout: features (conv, BN, SiLU), AdaptiveAvgPool2d(1), flatten, Sequential(Dropout, Linear)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.SiLU(),
                                      nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class MeanViewHead(nn.Module):
    """A global mean written as `x.mean((2, 3))` and a flatten as `view(x.size(0), -1)`."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(x).mean((2, 3), keepdim=True)
        return self.fc(x.view(x.size(0), -1))


def mlp_head_resnet(num_classes: int = 3) -> ResNet:
    """A ResNet whose classifier is an MLP after pooling: Linear → ReLU → Linear."""
    model = tiny_resnet(num_classes)
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, 16), nn.ReLU(), nn.Linear(16, num_classes))
    return model


class SkipHead(nn.Module):
    """The target layer's output also feeds a second branch: not a pooled-linear head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        a = self.body(x)
        return self.fc(a.mean((2, 3))) + a.amax((1, 2, 3)).unsqueeze(1)


__all__ = ["EfficientNetStyle", "MeanViewHead", "SkipHead", "TorchvisionDenseNet", "mlp_head_resnet",
           "tiny_densenet", "torchvision_densenet"]
