"""Training a SoftCAM network with the paper's recipe: cross-entropy + ElasticNet on the evidence maps."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcam.ops._checks import check_int, check_real
from fastcam.softcam.checkpoint import save
from fastcam.softcam.modules import check_softcam_output
from fastcam._device import check_amp


def elastic_net(evidence: Tensor, l1: float, l2: float, first_only: bool = False) -> Tensor:
    r"""The paper's ElasticNet penalty on the evidence maps, a scalar tensor:

    $$ \frac{1}{B}\sum_b \Big(\lambda_1 \lVert E_b\rVert_1 + \lambda_2 \lVert E_b\rVert_2\Big), \qquad
       \lVert E_b\rVert_1 = \sum_{kij} |E_{bkij}|, \quad \lVert E_b\rVert_2 = \Big(\sum_{kij} E_{bkij}^2\Big)^{1/2} $$

    (the L2 term is the un-squared Frobenius norm of image b's K×h×w evidence). `first_only=True`
    penalises only the first image of the batch, as the released code does. Computed in at least
    float32; the L2 norm's gradient at an all-zero map is 0 (torch's convention), never NaN.
    """
    if not isinstance(evidence, Tensor) or evidence.dim() != 4:
        shape = tuple(evidence.shape) if isinstance(evidence, Tensor) else type(evidence).__name__
        raise ValueError(f"evidence must be a 4-D (B, K, h, w) tensor, got {shape}")
    if evidence.shape[0] == 0:
        raise ValueError("evidence is an empty batch (B = 0)")
    l1, l2 = check_real("l1", l1, low=0), check_real("l2", l2, low=0)
    flat = evidence[:1] if first_only else evidence
    flat = flat.flatten(1)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
    per_image = flat.new_zeros(flat.shape[0])
    if l1:
        per_image = per_image + l1 * flat.abs().sum(dim=1)
    if l2:
        per_image = per_image + l2 * torch.linalg.vector_norm(flat, ord=2, dim=1)
    return per_image.mean()


def _batch(batch: object, device: torch.device) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError("each batch of the loader must be a pair (images (B, C, H, W), labels (B,))")
    images, labels = batch[0], batch[1]
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise TypeError("the loader's images must be a floating-point (B, C, H, W) tensor")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise TypeError(f"the loader's labels must be a 1-D tensor of B = {images.shape[0]} class indices")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"the loader's labels must be integer class indices, got dtype {labels.dtype}")
    return images.to(device, non_blocking=True), labels.to(device, dtype=torch.long, non_blocking=True)


def _clipped_cosine(lr: float, eta_min: float, t_max: int):  # noqa: ANN202 - a LambdaLR factor
    """The released code's clipped cosine: lr·½(1+cos(π·e/T_max)), never below eta_min, flat after T_max."""

    def factor(epoch: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(epoch, t_max) / t_max))
        return max(eta_min / lr, cosine)

    return factor


@torch.no_grad()
def _evaluate(net: nn.Module, loader: Iterable[Any], device: torch.device, amp: torch.dtype | None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a loader (eval mode; the caller restores the mode)."""
    net.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for batch in loader:
        images, labels = _batch(batch, device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, _ = check_softcam_output(net(images), images.shape[0])
        total_loss += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
        count += images.shape[0]
    if count == 0:
        raise ValueError("val_loader yielded no batches")
    return float(total_loss) / count, float(correct) / count


def fit(
    net: nn.Module,
    train_loader: Iterable[Any],
    *,
    epochs: int,
    lr: float = 1e-3,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    l1: float = 0.0,
    l2: float = 4e-5,
    first_only: bool = False,
    t_max: int | None = None,
    eta_min: float = 1e-4,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    val_loader: Iterable[Any] | None = None,
    amp: str | torch.dtype | None = None,
    progress: bool = True,
    log_every: int = 20,
) -> dict[str, list[float]]:
    r"""Fine-tune a SoftCAM network with the paper's recipe.

    Loss per batch: cross-entropy(logits, labels) + `elastic_net(evidence, l1, l2, first_only)`
    (defaults λ1 = 0, λ2 = 4e-5: the released "dense" setting; `first_only=True` reproduces the
    released code's first-image-only penalty). SGD with Nesterov momentum 0.9, lr 1e-3, weight decay
    5e-4; per-epoch clipped cosine schedule $\eta_e = \max(\eta_{min}, \eta_0\,\tfrac12(1+\cos(\pi
    \min(e, T_{max})/T_{max})))$ with $T_{max}$ = `t_max` (default: `epochs`), as the released code.

    Args:
        net: returns (logits, evidence), e.g. from `convert`. Trained in place, moved to `device`
            (default: where its parameters are), left in the train/eval mode it was found in.
        train_loader: an iterable of (images, labels) batches.
        checkpoint_dir: if given, `last.safetensors` is written after each epoch, `best.safetensors`
            whenever the validation accuracy improves (needs `val_loader`), and `history.json`.
        val_loader: an iterable of (images, labels) batches, evaluated after each epoch.
        amp: None, "bf16" or "fp16" (autocast; fp16 uses a gradient scaler).
        progress: show a tqdm progress bar; the running loss is synced to the host every `log_every` steps.

    Returns:
        history: per-epoch lists "epoch", "lr", "train_loss", "train_ce", "train_penalty", "train_acc" and,
        with `val_loader`, "val_loss" (cross-entropy) and "val_acc".
    """
    from tqdm.auto import tqdm

    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    epochs = check_int("epochs", epochs, low=1)
    log_every = check_int("log_every", log_every, low=1)
    t_max = epochs if t_max is None else check_int("t_max", t_max, low=1)
    lr = check_real("lr", lr, low=0, low_inclusive=False)
    eta_min = check_real("eta_min", eta_min, low=0)
    if eta_min > lr:
        raise ValueError(f"eta_min ({eta_min}) must not exceed lr ({lr})")
    l1, l2 = check_real("l1", l1, low=0), check_real("l2", l2, low=0)
    amp_dtype = check_amp(amp)
    if device is None:
        first = next(net.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the network has no trainable parameters (all requires_grad=False)")

    was_training = net.training
    net.to(device)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _clipped_cosine(lr, eta_min, t_max))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history: dict[str, list[float]] = {k: [] for k in ("epoch", "lr", "train_loss", "train_ce", "train_penalty", "train_acc")}
    if val_loader is not None:
        history.update(val_loss=[], val_acc=[])
    best_acc = -1.0

    try:
        for epoch in range(1, epochs + 1):
            net.train()
            current_lr = optimizer.param_groups[0]["lr"]
            # running sums stay on the device: the host syncs only every `log_every` steps
            sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, ce, penalty (× batch size)
            correct = torch.zeros((), device=device, dtype=torch.long)
            count = 0
            total = len(train_loader) if hasattr(train_loader, "__len__") else None  # type: ignore[arg-type]
            bar = tqdm(train_loader, total=total, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
            for step, batch in enumerate(bar, start=1):
                images, labels = _batch(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits, evidence = check_softcam_output(net(images), images.shape[0])
                ce = F.cross_entropy(logits.float(), labels)
                penalty = elastic_net(evidence, l1, l2, first_only)
                loss = ce + penalty
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

                batch_size = images.shape[0]
                sums += torch.stack([loss.detach(), ce.detach(), penalty.detach()]).double() * batch_size
                correct += (logits.detach().argmax(dim=1) == labels).sum()
                count += batch_size
                if step % log_every == 0:
                    running = float(sums[0]) / count
                    if not math.isfinite(running):
                        raise FloatingPointError(f"training diverged at epoch {epoch}, step {step}: loss is {running}")
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{current_lr:.2e}")
            bar.close()
            if count == 0:
                raise ValueError("train_loader yielded no batches")

            loss_sum, ce_sum, penalty_sum = (float(v) / count for v in sums.tolist())
            if not math.isfinite(loss_sum):
                raise FloatingPointError(f"training diverged in epoch {epoch}: loss is {loss_sum}")
            history["epoch"].append(epoch)
            history["lr"].append(current_lr)
            history["train_loss"].append(loss_sum)
            history["train_ce"].append(ce_sum)
            history["train_penalty"].append(penalty_sum)
            history["train_acc"].append(float(correct) / count)
            scheduler.step()

            message = f"epoch {epoch}/{epochs}: loss {loss_sum:.4f}, acc {history['train_acc'][-1]:.3f}"
            improved = False
            if val_loader is not None:
                val_loss, val_acc = _evaluate(net, val_loader, device, amp_dtype)
                history["val_loss"].append(val_loss)
                history["val_acc"].append(val_acc)
                improved = val_acc > best_acc
                best_acc = max(best_acc, val_acc)
                message += f", val loss {val_loss:.4f}, val acc {val_acc:.3f}"
            if checkpoints is not None:
                save(net, checkpoints / "last.safetensors", {"epoch": str(epoch)})
                if improved:
                    save(net, checkpoints / "best.safetensors", {"epoch": str(epoch), "val_acc": f"{best_acc:.6f}"})
                (checkpoints / "history.json").write_text(json.dumps(history, indent=1))
            if progress:
                tqdm.write(message)
    finally:
        net.train(was_training)
    return history
