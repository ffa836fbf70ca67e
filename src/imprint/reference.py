"""What one round of training means, in plain PyTorch: the reference the hand-written
engine (:mod:`imprint.engine`, batched over seeds by :func:`imprint.train.train_replicas`)
must reproduce, and the benchmark's plain loop.

Per step: draw ``batch_size`` training indices with replacement from the round's
generator (and, with data.shift = k, a shift of up to k pixels per image from the same
generator, the images moved by it), normalise those images, and take one
``torch.optim.SGD`` step on the cross-entropy of the FCN (train mode: BN on batch
statistics, running averages updated), with the gradient of every pruned entry zeroed;
pruned entries are zeroed once before the first step, so they stay exactly zero
(momentum and weight decay included).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from imprint.data import ImageData
from imprint.model import FCN

__all__ = ["reference_round", "reference_step", "random_shifts", "shift_images"]


def random_shifts(
    gen: torch.Generator, batch_size: int, shift: int, device: torch.device
) -> torch.Tensor:
    """(batch_size, 2) int64 (dy, dx), each uniform in -shift..shift, from ``gen`` (drawn
    after the batch's indices, so that shift = 0 leaves every stream as it was)."""
    return torch.randint(-shift, shift + 1, (batch_size, 2), generator=gen, device=device)


def shift_images(
    x: torch.Tensor, shifts: torch.Tensor, shape: tuple[int, int, int], reach: int | None = None
) -> torch.Tensor:
    """Images ``x`` (N, C*H*W, any dtype) moved by ``shifts`` (N, 2) = (dy, dx): pixel
    (y, x) of the result is pixel (y - dy, x - dx) of the image, 0 outside it. ``reach``
    bounds |dy|, |dx| (data.shift): given, no device sync reads the shifts' maximum."""
    channels, height, width = shape
    if reach is None:  # read the bound off the shifts (one device sync)
        reach = int(shifts.abs().max().item()) if shifts.numel() else 0
    k = reach
    if k == 0:
        return x
    n = x.shape[0]
    padded = torch.nn.functional.pad(x.reshape(n, channels, height, width), (k, k, k, k))
    rows = torch.arange(height, device=x.device)[None, :] - shifts[:, :1] + k  # (N, H)
    cols = torch.arange(width, device=x.device)[None, :] - shifts[:, 1:] + k  # (N, W)
    out = padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(channels, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return out.reshape(n, -1)


def reference_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One autograd SGD step on normalised images ``x`` and labels ``y``, the gradients
    of the entries ``masks`` prune zeroed; returns the loss and the logits (detached)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if masks:
        for name, param in model.named_parameters():
            if name in masks and param.grad is not None:
                param.grad.mul_(masks[name])
    optimizer.step()
    return loss.detach(), logits.detach()


def reference_round(
    model: FCN,
    masks: Mapping[str, torch.Tensor],
    data: ImageData,
    steps: int,
    batch_size: int,
    gen: torch.Generator,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> FCN:
    """Train ``model`` in place for ``steps`` masked SGD steps (module docstring)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in masks:
                param.mul_(masks[name].to(param.dtype))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    model.train()
    n_train = data.x_train.shape[0]
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        index = torch.randint(n_train, (batch_size,), generator=gen, device=gen.device)
        images = data.x_train[index]
        if data.shift:
            shifts = random_shifts(gen, batch_size, data.shift, gen.device)
            images = shift_images(images, shifts, data.shape, data.shift)
        reference_step(
            model, optimizer, _normalise(data, images, dtype), data.y_train[index], masks
        )
    return model


def _normalise(data: ImageData, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Stored ``images`` as network inputs (ImageData.normalize, in ``dtype``)."""
    x = images.to(dtype)
    if data.offset is not None:
        x = x - data.offset.to(dtype)
    scale = data.scale
    return x * (scale.to(dtype) if isinstance(scale, torch.Tensor) else scale)
