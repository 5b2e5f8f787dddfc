"""`fastcam.softcam.convert`: the kept backbone is bit-identical, the model is left alone, supported layouts
and clear refusals."""
from __future__ import annotations

import pytest
import torch
from fastcam_testkit.common import output_of
from torch import nn

from fastcam.models import tiny_resnet
from fastcam.softcam import convert

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- conversion
def test_convert_resnet_backbone_bit_identical_and_fc_equivalence(resnet: nn.Module, images: torch.Tensor) -> None:
    net = convert(resnet, 5).eval()
    original = output_of(resnet.layer4, lambda: resnet(images))
    with torch.no_grad():
        inside = output_of(net.backbone, lambda: net(images))
    assert torch.equal(original, inside)
    assert [n for n, _ in net.backbone.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert net.head.conv.in_channels == resnet.fc.in_features and net.head.conv.bias is not None
    # with the fc weights in the 1×1 conv, average pooling of the evidence gives the original logits
    # (linearity: mean_ij(W F_ij + b) = W mean_ij(F_ij) + b)
    with torch.no_grad():
        net.head.conv.weight.copy_(resnet.fc.weight[:, :, None, None])
        net.head.conv.bias.copy_(resnet.fc.bias)
        torch.testing.assert_close(net(images)[0], resnet(images), rtol=1e-5, atol=1e-5)


def test_convert_copies_and_leaves_the_model_alone(resnet: nn.Module) -> None:
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    net = convert(resnet, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    assert net.training is False and not any(m.training for m in net.modules())  # the model's eval mode


def test_convert_keeps_train_mode_and_frozen_bn(resnet: nn.Module) -> None:
    resnet.train()
    resnet.bn1.eval()  # a frozen BatchNorm inside a training model keeps its flag
    net = convert(resnet, 2)
    assert net.training and net.head.training and net.backbone.layer1.training
    assert not net.backbone.bn1.training


def test_convert_vgg_backbone_bit_identical(vgg: nn.Module, images: torch.Tensor) -> None:
    net = convert(vgg, 3, vgg_hidden=24).eval()
    original = output_of(vgg.features, lambda: vgg(images))
    with torch.no_grad():
        inside = output_of(net.backbone.features, lambda: net(images))
    assert torch.equal(original, inside)
    neck = net.backbone.neck
    assert [type(m) for m in neck] == [nn.Conv2d, nn.ReLU, nn.Dropout, nn.Conv2d, nn.ReLU, nn.Dropout]
    assert (neck[0].in_channels, neck[0].out_channels, neck[3].out_channels) == (32, 24, 24)
    assert net.head.conv.in_channels == 24 and net.head.conv.out_channels == 3
    assert neck[2].p == 0.5


def test_convert_vgg_default_neck_is_4096(vgg: nn.Module) -> None:
    net = convert(vgg, 2)
    assert net.backbone.neck[0].out_channels == 4096 and net.backbone.neck[3].weight.shape[:2] == (4096, 4096)
    assert net.head.conv.weight.shape == (2, 4096, 1, 1)


def test_convert_densenet_keeps_final_relu(densenet: nn.Module, images: torch.Tensor) -> None:
    net = convert(densenet, 4).eval()
    pre_relu = output_of(densenet.features, lambda: densenet(images))
    with torch.no_grad():
        inside = output_of(net.backbone, lambda: net(images))
    assert torch.equal(torch.relu(pre_relu), inside)
    assert (pre_relu < 0).any()  # the ReLU matters here: without it the test above could not fail
    # with the classifier's weights in the 1×1 conv the logits equal the original's: the ReLU sits
    # where torchvision's forward applies it
    same_head = convert(densenet, 5).eval()
    with torch.no_grad():
        same_head.head.conv.weight.copy_(densenet.classifier.weight[:, :, None, None])
        same_head.head.conv.bias.copy_(densenet.classifier.bias)
        torch.testing.assert_close(same_head(images)[0], densenet(images), rtol=1e-5, atol=1e-5)


def test_convert_custom_backbone(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Conv2d(6, 10, 3, stride=2)).eval()
    net = convert(None, 3, backbone=backbone, in_channels=10, pool="max").eval()
    with torch.no_grad():
        inside = output_of(net.backbone, lambda: net(images))
        assert torch.equal(backbone(images), inside)
        logits, evidence = net(images)
    assert net.backbone is not backbone
    assert evidence.shape == (4, 3, 15, 11)
    torch.testing.assert_close(logits, evidence.amax((2, 3)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="in_channels"):
        convert(None, 3, backbone=backbone)
    with pytest.raises(ValueError, match="not both"):
        convert(tiny_resnet(), 3, backbone=backbone, in_channels=10)
    wrong = convert(None, 3, backbone=backbone, in_channels=7)
    with pytest.raises(ValueError, match="expects 7 feature channels"):
        wrong(images)


def test_convert_follows_dtype(resnet: nn.Module, images: torch.Tensor) -> None:
    net = convert(resnet.double(), 2)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert net(images.double())[1].dtype == torch.float64


@pytest.mark.parametrize("model,num_classes,error,match", [
    (nn.Sequential(nn.Conv2d(3, 4, 3)), 2, TypeError, "cannot convert Sequential"),
    ("resnet", 2, TypeError, "nn.Module"),
    (None, 2, TypeError, "backbone="),
    (tiny_resnet(), 0, ValueError, "num_classes"),
    (tiny_resnet(), 2.0, TypeError, "num_classes"),
])
def test_convert_rejects_unsupported(model: object, num_classes: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        convert(model, num_classes)  # type: ignore[arg-type]


def test_convert_resnet_with_replaced_fc(resnet: nn.Module, images: torch.Tensor) -> None:
    resnet.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(resnet.fc.in_features, 2))  # a common fine-tuning head
    net = convert(resnet, 3).eval()
    assert net.head.conv.in_channels == 64
    assert torch.equal(output_of(resnet.layer4, lambda: resnet(images)), net.backbone(images).detach())


def test_convert_rejects_resnet_named_model_with_another_layout() -> None:
    class ResNet(nn.Module):  # a timm-like ResNet: same class name, another layout
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

    with pytest.raises(TypeError, match="torchvision's ResNet layout"):
        convert(ResNet(), 2)
