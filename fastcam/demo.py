"""The built-in demo (`fastcam demo`): synthetic lesions, a small CNN and its SoftCAM conversion, all
five methods, overlays and an HTML report, on CPU in a few minutes at most.

Dataset (deterministic: image i of a split depends only on (seed, split, i)). Grayscale S×S images:

- background: low-frequency texture (Gaussian-filtered white noise) plus fine pixel noise;
- distractors in *both* classes (1–3 per image): large dim disks, dark spots and bright lines, so a
  classifier cannot answer from overall brightness or from "is there a shape";
- lesions in class 1 only (1–3 per image): small bright round spots (a radial Gaussian profile);
  the ground-truth mask is the union of the lesions' disks (radius = the spot's radius).

The test split is written to disk (`OUT/data/test/img_00000.png`, `OUT/data/test/labels.csv`) with its
masks as PNG files with the same relative names (`OUT/masks/img_00000.png`, 255 = lesion) for
`fastcam eval RUN --masks OUT/masks`; the training split is generated in memory.

Model: `demo_cnn`, a ResNet-10 with torchvision's layout (`fastcam.models.ResNet`, width 8) whose stem
keeps full resolution (3×3 stride-1 conv1, no max-pool) so that `layer4` has an S/8 × S/8 map. It is
trained with Adam; its SoftCAM conversion (`fastcam.softcam.convert`) starts from the CNN's weights,
with the evidence head initialised from the CNN's fc (avg-pooled evidence then equals the CNN's logits
exactly), and is fine-tuned with `fastcam.softcam.fit` (the paper's SGD recipe).

Outputs, one run directory per method (each is a regular `fastcam.open_run` run; a post-hoc run and the
SoftCAM run explain different networks, so they cannot share one run's settings)::

    OUT/data/test/*.png, labels.csv        the explained images
    OUT/masks/*.png                        ground-truth lesion masks
    OUT/model/cnn.safetensors, softcam.safetensors, config.json, training.json
    OUT/runs/{gradcam,gradcampp,scorecam,cfcam,softcam}/   run directories (+ overlays/, inputs/)
    OUT/report.html                        all methods side by side, with the masks

Re-running the same command reuses the trained weights (when the configuration matches) and resumes
the runs. Every run can be reproduced from the shell, e.g.
`fastcam explain --model fastcam.demo:demo_cnn --num-classes 2 --in-channels 1 --weights
OUT/model/cnn.safetensors --layer layer4 --method gradcam --data OUT/data/test --out OUT/runs/gradcam`.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcam.methods.registry import get_method, method_names
from fastcam.models import BasicBlock, ResNet

CLASS_NAMES = ("healthy", "lesion")
_SPLITS = {"train": 1, "test": 2}
#: the demo's constructor arguments per method: perturbed forwards (Score-CAM's family, Ablation-CAM) in
#: large batches on the CPU
_METHOD_KWARGS: dict[str, dict[str, Any]] = {
    m: {"batch_size": 256} for m in ("scorecam", "ablationcam", "sscam", "iscam")
}


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo. The default takes about a minute on 2 CPU cores; `quick()` a few seconds."""

    n_train: int = 512
    n_test: int = 48
    image_size: int = 48
    epochs: int = 6
    softcam_epochs: int = 2
    batch_size: int = 32
    seed: int = 0

    @staticmethod
    def quick(**overrides: Any) -> "DemoConfig":
        return DemoConfig(**{**dict(n_train=48, n_test=4, image_size=32, epochs=1, softcam_epochs=1), **overrides})

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "epochs", "softcam_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)}")
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 and at least 16, got {self.image_size}")


# ---------------------------------------------------------------------------------------------- dataset
def _disk(size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def make_sample(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One synthetic image (size, size) float32 in [0, 1], its lesion mask (bool) and its label."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng([seed, _SPLITS[split], index])
    label = index % 2  # exactly balanced
    texture = gaussian_filter(rng.standard_normal((size, size)), sigma=size / 10, mode="wrap")
    texture /= texture.std() + 1e-12
    image = 0.40 + 0.07 * texture + 0.03 * rng.standard_normal((size, size))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(rng.integers(1, 4)):  # distractors, both classes
        kind = rng.integers(3)
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        if kind == 0:  # large dim disk
            image += 0.12 * _disk(size, cy, cx, rng.uniform(size / 10, size / 6))
        elif kind == 1:  # dark spot
            image -= 0.25 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 24) ** 2))
        else:  # bright line (a "vessel")
            angle = rng.uniform(0, np.pi)
            distance = np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle))
            image += 0.18 * (distance <= max(size / 64, 0.6))
    mask = np.zeros((size, size), dtype=bool)
    if label == 1:
        for _ in range(rng.integers(1, 4)):
            radius = rng.uniform(size / 24, size / 14)
            cy, cx = rng.uniform(0.12, 0.88, 2) * size
            spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (radius / 1.5) ** 2))
            image += 0.5 * spot
            mask |= _disk(size, cy, cx, radius)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask, label


def make_split(seed: int, split: str, n: int, size: int) -> tuple[Tensor, Tensor, np.ndarray]:
    """(images (n, 1, S, S) float32 — quantised to 8 bits, as the PNG files —, labels (n,), masks (n, S, S))."""
    samples = [make_sample(seed, split, i, size) for i in range(n)]
    images = np.stack([np.round(s[0] * 255.0) / 255.0 for s in samples]).astype(np.float32)[:, None]
    return torch.from_numpy(images), torch.tensor([s[2] for s in samples]), np.stack([s[1] for s in samples])


def write_test_split(out: Path, config: DemoConfig) -> tuple[Path, Path, dict[str, int]]:
    """Write the test images, labels.csv and masks; returns (data dir, masks dir, labels by id)."""
    from PIL import Image

    data_dir, masks_dir = out / "data" / "test", out / "masks"
    data_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, int] = {}
    for i in range(config.n_test):
        image, mask, label = make_sample(config.seed, "test", i, config.image_size)
        name = f"img_{i:05d}.png"
        Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="L").save(data_dir / name)
        Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(masks_dir / name)
        labels[name] = label
    with (data_dir / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(sorted(labels.items()))
    return data_dir, masks_dir, labels


# ---------------------------------------------------------------------------------------------- models
def demo_cnn(num_classes: int = 2, in_channels: int = 1, width: int = 8) -> ResNet:
    """ResNet-10 (torchvision layout, `fastcam.models.ResNet`) with a full-resolution stem: conv1 is a
    3×3 stride-1 convolution and the max-pool is the identity, so layer4's map is (H/8, W/8)."""
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes, in_channels=in_channels, width=width)
    model.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        out = model(images)
        logits = out[0] if isinstance(out, tuple) else out
    return float((logits.argmax(1) == labels).float().mean())


def train_cnn(images: Tensor, labels: Tensor, config: DemoConfig, progress: bool = True) -> tuple[ResNet, list[float]]:
    """Adam (lr 3e-3, cosine decay), cross-entropy, random flips; returns (model in eval mode, epoch losses)."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    model = demo_cnn(len(CLASS_NAMES), images.shape[1])
    steps_per_epoch = -(-images.shape[0] // config.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    bar = tqdm(range(config.epochs), desc="train CNN", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(images.shape[0], generator=generator)
        total = 0.0
        for start in range(0, images.shape[0], config.batch_size):
            idx = order[start : start + config.batch_size]
            x = images[idx]
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * idx.numel()
        losses.append(total / images.shape[0])
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return model.eval(), losses


def train_softcam(cnn: ResNet, images: Tensor, labels: Tensor, config: DemoConfig, progress: bool = True) -> tuple[nn.Module, dict[str, list[float]]]:
    """`fastcam.softcam.convert` the CNN, start the evidence head from its fc, fine-tune with `fit`."""
    from torch.utils.data import DataLoader, TensorDataset

    from fastcam import softcam

    torch.manual_seed(config.seed)
    net = softcam.convert(cnn, len(CLASS_NAMES))
    with torch.no_grad():  # 1×1 conv = fc applied at every position; avg-pooling then gives the CNN's logits
        net.head.conv.weight.copy_(cnn.fc.weight[:, :, None, None])
        net.head.conv.bias.copy_(cnn.fc.bias)
    loader = DataLoader(TensorDataset(images, labels), batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    history = softcam.fit(net, loader, epochs=config.softcam_epochs, device="cpu", progress=progress)
    return net.eval(), history


def _load_or_train(out: Path, config: DemoConfig, progress: bool, log: Any) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """Train both networks, or reuse the weights of a previous demo with the same configuration."""
    from safetensors.torch import load_file, save_file

    from fastcam import softcam

    model_dir = out / "model"
    cnn_path, sc_path, cfg_path, info_path = (model_dir / n for n in
                                              ("cnn.safetensors", "softcam.safetensors", "config.json", "training.json"))
    cnn = demo_cnn(len(CLASS_NAMES), 1)
    net = softcam.convert(cnn, len(CLASS_NAMES))
    if cfg_path.exists() and json.loads(cfg_path.read_text()) == asdict(config) and cnn_path.exists() \
            and sc_path.exists() and info_path.exists():
        cnn.load_state_dict(load_file(str(cnn_path)))
        softcam.load(net, sc_path)
        log(f"reusing the trained weights in {model_dir}")
        return cnn.eval(), net.eval(), json.loads(info_path.read_text())
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    images, labels, _ = make_split(config.seed, "train", config.n_train, config.image_size)
    test_images, test_labels, _ = make_split(config.seed, "test", config.n_test, config.image_size)
    log(f"training the CNN on {config.n_train} synthetic images ({config.epochs} epochs)")
    cnn, losses = train_cnn(images, labels, config, progress)
    log("converting to SoftCAM and fine-tuning it")
    net, history = train_softcam(cnn, images, labels, config, progress)
    info = {"cnn_train_loss": losses, "softcam_history": history, "seconds": round(time.perf_counter() - started, 2),
            "test_accuracy": {"cnn": _accuracy(cnn, test_images, test_labels),
                              "softcam": _accuracy(net, test_images, test_labels)}}
    save_file(cnn.state_dict(), str(cnn_path))
    softcam.save(net, sc_path)
    info_path.write_text(json.dumps(info, indent=1))
    cfg_path.write_text(json.dumps(asdict(config), indent=1))  # last: marks the weights complete
    return cnn, net, info


# ---------------------------------------------------------------------------------------------- job
def demo_methods(methods: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The methods a demo explains with: None -> the registry's demo methods, ("all",) -> every registered
    method, else the ids given (checked)."""
    methods = method_names(demo=True) if methods is None else tuple(methods)
    if methods == ("all",):
        return method_names()
    unknown = [m for m in methods if m not in method_names()]
    if unknown or not methods:
        raise ValueError(f"unknown demo methods {unknown}; choose 'all' or from {', '.join(method_names())}")
    return methods


def run_demo(out: str | Path = "runs/demo", config: DemoConfig | None = None, methods: tuple[str, ...] | None = None,
             device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate, train, explain the test split with `methods` (default: the registry's demo methods,
    `method_names(demo=True)`; "all" for every registered method), write overlays and OUT/report.html.

    The post-hoc methods explain the CNN at layer4; a self-explaining method (SoftCAM) its converted
    network. Returns a summary: paths, test accuracies, per-method timings.
    """
    from fastcam.io.images import Preprocess
    from fastcam.io.report import write_report
    from fastcam.pipeline import explain_dataset

    config = config or DemoConfig()
    methods = demo_methods(methods)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if progress:
            print(f"fastcam demo: {message}", flush=True)

    data_dir, masks_dir, _ = write_test_split(out, config)
    cnn, net, info = _load_or_train(out, config, progress, log)
    log(f"test accuracy: CNN {info['test_accuracy']['cnn']:.3f}, SoftCAM {info['test_accuracy']['softcam']:.3f}")
    preprocess = Preprocess(channels=1)
    runs, timings = [], {}
    for method in methods:
        post_hoc = get_method(method).post_hoc
        log(f"explaining {config.n_test} test images with {get_method(method).display_name}")
        run = explain_dataset(
            cnn if post_hoc else net, data_dir, method=method, target_layer="layer4" if post_hoc else None,
            out=out / "runs" / method, batch_size=min(config.batch_size, 16), device=device, preprocess=preprocess,
            method_kwargs=_METHOD_KWARGS.get(method), overlays=True, progress=progress,
            fingerprint="content",  # the images are written again on every call: compare contents, not mtimes
            model_info={"spec": "fastcam.demo:demo_cnn",
                        "weights": "cnn.safetensors" if post_hoc else "softcam.safetensors"},
        )
        runs.append(run)
        timings[method] = run.meta.get("timings", {})
    from fastcam.evaluate import report_evaluation

    report = write_report(runs, out / "report.html", title="fastcam demo: synthetic lesions", masks_dir=masks_dir,
                          labels=data_dir / "labels.csv", class_names=CLASS_NAMES,
                          evaluation=report_evaluation(runs))  # `fastcam eval OUT/runs` fills it in
    log(f"report: {report}")
    return {"out": str(out), "report": str(report), "runs": {r.method: str(r.path) for r in runs},
            "masks": str(masks_dir), "data": str(data_dir), "test_accuracy": info["test_accuracy"],
            "timings": timings}
