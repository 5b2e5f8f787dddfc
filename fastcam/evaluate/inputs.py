"""What an evaluation reads besides the stored maps: the runs themselves, the model and images a run
explained (rebuilt from its record), ground-truth masks and true labels."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor, nn

from fastcam.errors import ModelMismatch, UntrustedRunError  # ModelMismatch: importable from here as before
from fastcam.io.images import ImageFolder, Preprocess, read_image
from fastcam.io.report import find_mask
from fastcam.io.report import read_labels as read_labels_file
from fastcam.io.run import Run, RunDirectory
from fastcam.methods.registry import METHODS
from fastcam.models import LogitsOnly, load_model, state_hash  # noqa: F401 - LogitsOnly re-exported
from fastcam.models.processors import HFImageProcessor, hf_image_processor
from fastcam.models.specs import SCHEMES, import_from_spec, spec_imports_code




def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories among `paths`; a folder that is not a run contributes its run subfolders
    (and theirs: a demo's OUT holds its runs under OUT/runs/)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if RunDirectory(p).is_run():
            runs.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if RunDirectory(d).is_run())
            subs += sorted(d for sub in p.iterdir() if sub.is_dir() and not RunDirectory(sub).is_run()
                           for d in sub.iterdir() if RunDirectory(d).is_run())
            if not subs:
                raise FileNotFoundError(f"{str(p)!r} is not a fastcam run directory and holds none")
            runs += subs
        else:
            raise FileNotFoundError(f"{str(p)!r} does not exist")
    return runs


def _weights_candidates(run_dir: Path, weights: str) -> list[Path]:
    p = Path(weights)
    if p.is_absolute():
        return [p]
    # relative names: to the working directory, the run, or a demo's OUT/model/ (run = OUT/runs/<method>)
    return [p, run_dir / p, run_dir.parent.parent / "model" / p, run_dir.parent / "model" / p]


def check_trusted(meta: dict[str, Any], path: str | Path, spec: str | None, trust_run: bool) -> None:
    """Refuse to build a run's model from a spec read from its run.json that imports code (`module:callable`,
    `fastcam.models.specs.spec_imports_code`), unless the user named the model (`spec`) or trusts the
    run: opening someone's run directory must not run their code."""
    recorded = meta.get("settings", {}).get("model", {}).get("spec")
    if spec or trust_run or not isinstance(recorded, str) or not spec_imports_code(recorded):
        return
    raise UntrustedRunError(
        f"run {str(path)!r} records the model spec {recorded!r}, code that fastcam eval would import and run; it "
        f"does not run code named by a run directory. Name the model yourself (--model {recorded}, if you trust "
        "that code) or pass --trust-run to use the run's record")


def load_run_model(run: Run, spec: str | None = None, weights: str | None = None, *,
                   trust_run: bool = False) -> nn.Module:
    """Rebuild the model a run explained, checking its weights hash to the run's `state_sha256`.

    Without `spec`, the run's recorded spec is used, but a `module:callable` one only with `trust_run`
    (`check_trusted`: `UntrustedRunError` otherwise)."""
    info = run.meta.get("settings", {}).get("model", {})
    check_trusted(run.meta, run.path, spec, trust_run)
    spec = spec or info.get("spec")
    if not spec:
        raise ValueError(f"run {str(run.path)!r} does not record its model spec: pass --model (and --weights)")
    if weights is None and info.get("weights"):
        found = [p for p in _weights_candidates(Path(run.path), str(info["weights"])) if p.is_file()]
        if not found:
            raise ValueError(f"the run's weights {info['weights']!r} were not found: pass --weights")
        weights = str(found[0])
    method = METHODS.get(run.method)
    # a method that is not post-hoc (SoftCAM) explained the converted network: rebuild that one
    converted = method is not None and not method.post_hoc
    num_classes = int(run.logits.shape[1])
    channels = (run.meta.get("settings", {}).get("data", {}).get("preprocess") or {}).get("channels")
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": channels}
    if ":" in spec and spec.partition(":")[0] not in SCHEMES:  # a user's factory gets only the arguments it declares
        factory = import_from_spec(spec)
        try:
            params = inspect.signature(factory).parameters if callable(factory) else {}
        except (TypeError, ValueError):
            params = {}
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    if kwargs.get("in_channels") is None:
        kwargs.pop("in_channels", None)
    model, _ = load_model(spec, weights, kwargs.get("num_classes"), kwargs.get("in_channels"), softcam=converted)
    expected = info.get("state_sha256")
    if expected and state_hash(model) != expected:
        raise ModelMismatch(f"the model built from {spec!r} (weights {weights!r}) is not the one run "
                            f"{str(run.path)!r} explained (state hash differs): pass the right --model/--weights")
    return model


def run_images(run: Run) -> ImageFolder:
    """The run's image folder with its preprocessing."""
    data = run.meta.get("settings", {}).get("data", {})
    if data.get("kind") != "folder":
        raise ValueError(f"run {str(run.path)!r} explained a {data.get('kind')!r} dataset, not a folder: its images "
                         "cannot be reloaded, so only the localisation metrics are available")
    pre = data.get("preprocess") or {}
    preprocess = Preprocess(channels=int(pre.get("channels", 3)), size=tuple(pre["size"]) if pre.get("size") else None,
                            mean=tuple(pre["mean"]) if pre.get("mean") else None,
                            std=tuple(pre["std"]) if pre.get("std") else None,
                            resize=pre.get("resize"), processor=_run_processor(run, pre.get("processor")))
    root = Path(data["root"])
    if not root.is_dir():
        raise ValueError(f"the run's image folder {str(root)!r} does not exist any more")
    return ImageFolder(root, preprocess)


def _run_processor(run: Run, recorded: Any) -> HFImageProcessor | None:
    """The image processor a run's inputs went through (a Hugging Face model's own), loaded again from the
    run's model folder and refused when it is not the recorded one."""
    if not recorded:
        return None
    spec = str(run.meta.get("settings", {}).get("model", {}).get("spec") or "")
    folder = spec.partition(":")[2] if spec.startswith("hf:") else ""
    processor = hf_image_processor(folder) if folder else None
    if processor is None or processor.describe() != recorded:
        raise ValueError(f"run {str(run.path)!r} preprocessed its images with the image processor of {spec!r}, "
                         f"which {'is not there any more' if processor is None else 'has changed since'}: its "
                         "images cannot be reloaded as the model saw them")
    return processor


def load_mask(masks_dir: Path, sample_id: Any) -> Tensor | None:
    """(H, W) bool mask of a sample: MASKS/<id>, else MASKS/<id>.png or <stem>.png; None when absent."""
    found = find_mask(masks_dir, sample_id)
    return read_image(found).amax(dim=0) > 0 if found is not None else None


def read_labels(path: Path) -> dict[str, int]:
    """CSV of `relative/path,label` (a header line is allowed); the report reads the same files."""
    return read_labels_file(path)
