"""Models: fastcam's own builders, the model-spec grammar, and the one loader every command uses.

- `builders`: plain-torch CNNs with torchvision's layout and state-dict names (`resnet18`, `tiny_resnet`,
  `resnet18_3d`, ...; `BUILDERS` by name);
- `specs`: what a spec means (`torchvision:NAME`, `timm:NAME`, `hf:PATH`, `fastcam:NAME`,
  `module:factory`, a bare NAME) and each model's own preprocessing;
- `loading`: `load_model(spec, weights, ...)` -> `LoadedModel` (the model, its preprocessing, class
  names), used by `fastcam explain`, `eval`, `bench` and `export`; `state_hash` of a model's weights.
"""
from fastcam.models.builders import (
    BUILDERS,
    VGG,
    BasicBlock,
    BasicBlock3d,
    Bottleneck,
    DenseNet,
    ResNet,
    ResNet3d,
    densenet121,
    resnet18,
    resnet18_3d,
    resnet50,
    tiny_densenet,
    tiny_resnet,
    tiny_resnet3d,
    tiny_vgg,
    vgg16,
)
from fastcam.models.loading import LoadedModel, LogitsOnly, load_model, state_hash

__all__ = ["BUILDERS", "VGG", "BasicBlock", "BasicBlock3d", "Bottleneck", "DenseNet", "LoadedModel", "LogitsOnly", "ResNet",
           "ResNet3d", "densenet121", "load_model", "resnet18", "resnet18_3d", "resnet50", "state_hash",
           "tiny_densenet", "tiny_resnet", "tiny_resnet3d", "tiny_vgg", "vgg16"]
