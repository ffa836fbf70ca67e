"""The paper's FCN trained by hand: R replicas at once, forward and backward written out.

:class:`ReplicaFCN` holds R copies of one FCN architecture with every parameter
stacked along a leading replica axis (weights ``(R, out, in)``), so that one batched
matmul (``torch.bmm``) serves all replicas; a single run is R = 1.
:func:`train_step` computes the loss and every gradient of one SGD step of all
replicas without autograd and updates the BN running averages; :class:`MaskedSGD`
applies ``torch.optim.SGD``'s update with pruned entries held at zero;
:func:`eval_logits` is the evaluation-mode forward pass.

The model is exactly :class:`imprint.model.FCN` (the paper's): BN on the
input of every linear layer with batch statistics (biased variance) in training and
running averages (unbiased batch variance, ``momentum``) for evaluation. Writing the
backward pass by hand lets the step do only the work the maths needs, which autograd
over ``nn.Module`` does not:

* The first layer's input gradient is never formed. Autograd has to compute the
  gradient of the first BN's output, (batch, D) = dZ W, a full matmul, only to reduce
  it to the BN gain and shift gradients. Both follow from the weight-gradient matmul
  instead: with u = gain * xhat + shift the BN output and G = dZ^T xhat,
  dW = G * gain + db (x) shift, dgain_j = sum_i W_ij G_ij, dshift = W^T db.
* The input normalisation (x - offset) * scale is folded into the first BN: the batch
  statistics of raw images (uint8 or float) give the same xhat, so the images are
  converted once, straight into their batch-centred values, with no normalised copy.
* Batch statistics of all replicas come from a sum and a dot product along the batch
  axis: ``torch.var_mean`` over that axis took several times longer on a CPU, and
  torch's own BN kernel, ~2x faster for one replica, has no replica axis.
* BN's affine map is one ``addcmul`` and the bias rides in ``baddbmm``; ReLU's mask is
  read from its output, so no pre-activation is kept.
* For small nets the cost is the number of PyTorch calls (~5 us each), not the
  arithmetic: per-feature vectors are stored broadcast-ready, (R, 1, n), and
  statistics are kept in that shape, so the step hardly ever reshapes.

Every matmul output is cast back to the weights' dtype (a no-op without an autocast),
so that under a bfloat16 autocast activations, gradients, BN statistics and master
weights stay float32. The step works in any floating dtype (the tests check it in
float64 against autograd, where rounding cannot hide a wrong term).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from imprint.config import ConfigError
from imprint.model import FCN

__all__ = [
    "precision_context",
    "step_threads",
    "SMALL_STEP_MACS",
    "ReplicaFCN",
    "StepResult",
    "MaskedSGD",
    "Trainable",
    "train_step",
    "bn_relu_backward",
    "update_running_averages",
    "eval_logits",
    "retain_freed_memory",
]


class ReplicaFCN:
    """R replicas of one FCN architecture, every tensor stacked along a leading axis.

    ``weights[l]`` (R, out, in); ``biases[l]`` (R, 1, out); ``gains[l]``, ``shifts[l]``
    (BN weight and bias), ``running_means[l]``, ``running_vars[l]`` (R, 1, in);
    ``batches_tracked[l]`` (R,) int64. Vectors keep a singleton batch axis so that they
    broadcast over (R, B, n) activations as they are. Built from models as a copy on
    their device; :meth:`write_to` copies the state back, so the models' state dicts
    (and the files saved from them) keep their names and layout.
    """

    def __init__(self, models: Sequence[FCN]) -> None:
        if not models:
            raise ValueError("The 'models' parameter must hold at least one FCN. Got none.")
        dims = models[0].dims
        for index, model in enumerate(models):
            if model.dims != dims:
                raise ValueError(
                    f"The 'models' parameter must hold one architecture: model 0 has widths "
                    f"{dims}, model {index} has {model.dims}."
                )
        first = models[0].norms[0]
        self.dims: list[int] = list(dims)
        self.eps = float(first.eps)
        assert first.momentum is not None, "BN with a cumulative average is not supported"
        self.momentum = float(first.momentum)
        states = [model.state_dict() for model in models]
        for pattern, attribute, vector in _FIELDS:
            stacked = []
            for layer in range(len(dims) - 1):
                value = torch.stack([state[pattern.format(layer)] for state in states])
                stacked.append(value.unsqueeze(1) if vector else value)
            setattr(self, attribute, stacked)

    # Declared for readers and type checkers; set from _FIELDS above.
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    gains: list[torch.Tensor]
    shifts: list[torch.Tensor]
    running_means: list[torch.Tensor]
    running_vars: list[torch.Tensor]
    batches_tracked: list[torch.Tensor]

    @property
    def replicas(self) -> int:
        return self.weights[0].shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def parameters(self) -> list[torch.Tensor]:
        """The trained tensors, in the order :func:`train_step` returns their gradients:
        per layer the weight, the bias, the BN gain and the BN shift."""
        return [
            t
            for layer in range(self.n_layers)
            for t in (
                self.weights[layer],
                self.biases[layer],
                self.gains[layer],
                self.shifts[layer],
            )
        ]

    def parameter_names(self) -> list[str]:
        """State-dict names of :meth:`parameters`, as in :class:`imprint.model.FCN`."""
        return [
            name
            for layer in range(self.n_layers)
            for name in (
                f"layers.{layer}.weight",
                f"layers.{layer}.bias",
                f"norms.{layer}.weight",
                f"norms.{layer}.bias",
            )
        ]

    def state(self) -> dict[str, torch.Tensor]:
        """Every stacked tensor by a flat name ("weights.0", ...), sharing storage."""
        return {
            f"{attribute}.{layer}": value
            for _, attribute, _ in _FIELDS
            for layer, value in enumerate(getattr(self, attribute))
        }

    @torch.no_grad()
    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy a :meth:`state` (from any device) into this net, in place."""
        own = self.state()
        if set(tensors) != set(own):
            raise ValueError(
                f"The state must name exactly the net's tensors {sorted(own)}. "
                f"Got {sorted(tensors)}."
            )
        for name, target in own.items():
            if tuple(tensors[name].shape) != tuple(target.shape):
                raise ValueError(
                    f"The state's '{name}' must have shape {tuple(target.shape)}. "
                    f"Got {tuple(tensors[name].shape)}."
                )
        for name, target in own.items():
            target.copy_(tensors[name])

    @torch.no_grad()
    def write_to(self, models: Sequence[FCN]) -> None:
        """Copy replica r's state into ``models[r]`` (same architecture)."""
        if len(models) != self.replicas:
            raise ValueError(
                f"The 'models' parameter must hold {self.replicas} models. Got {len(models)}."
            )
        for r, model in enumerate(models):
            state = model.state_dict()  # tensors sharing the model's storage
            for pattern, attribute, _ in _FIELDS:
                for layer, value in enumerate(getattr(self, attribute)):
                    target = state[pattern.format(layer)]
                    target.copy_(value[r].view(target.shape))


# State-dict name pattern of each stacked field of ReplicaFCN, and whether it is a
# per-feature vector (stored as (R, 1, n)).
_FIELDS = (
    ("layers.{}.weight", "weights", False),
    ("layers.{}.bias", "biases", True),
    ("norms.{}.weight", "gains", True),
    ("norms.{}.bias", "shifts", True),
    ("norms.{}.running_mean", "running_means", True),
    ("norms.{}.running_var", "running_vars", True),
    ("norms.{}.num_batches_tracked", "batches_tracked", False),
)


@dataclass
class StepResult:
    grads: list[torch.Tensor]  # aligned with, and shaped as, ReplicaFCN.parameters()
    loss: torch.Tensor  # (R,) mean cross-entropy of the batch
    correct: torch.Tensor  # (R,) int64, top-1 hits of the batch


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) over axis 1 of (R, B, n) tensors: (R, 1, n), in their dtype.

    Not ``torch.linalg.vecdot``: a bfloat16 autocast would run it in bfloat16, and BN
    statistics and their gradients must stay float32.
    """
    return (a * b).sum(1, keepdim=True)


def _batch_norm_train(
    h: torch.Tensor,
    gain: torch.Tensor,
    shift: torch.Tensor,
    eps: float,
    offset: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """BN in training mode of the normalised input v = (h - offset) * scale.

    h: (R, B, in) uint8 or float; gain, shift: (R, 1, in). Returns the BN output
    u (R, B, in); c = h - mean(h) (R, B, in) in gain's dtype; r (R, 1, in) with xhat = c r;
    s = gain r (R, 1, in); and the batch mean and biased variance of v, (R, 1, in).
    The offset cancels in c, so raw images are centred directly.
    """
    inv_batch = 1.0 / h.shape[1]
    if h.dtype == gain.dtype:
        mean_raw = h.sum(1, keepdim=True).mul_(inv_batch)  # (R, 1, in)
        c = h - mean_raw  # (R, B, in); h itself is kept (ReLU's mask)
    else:  # stored images: one conversion, centred in place
        c = h.to(gain.dtype)  # (R, B, in); uint8 sums are exact in float32 for B < 65,000
        mean_raw = c.sum(1, keepdim=True).mul_(inv_batch)
        c.sub_(mean_raw)
    var = _batch_dot(c, c).mul_(scale * scale * inv_batch)  # (R, 1, in), of v
    r = var.add(eps).rsqrt_()  # (R, 1, in)
    scaled = isinstance(scale, torch.Tensor) or scale != 1.0  # a float, or per input (D,)
    if scaled:
        r.mul_(scale)  # xhat = (v - mean v) / sqrt(var + eps) = c scale / sqrt(var + eps)
    s = gain * r  # (R, 1, in)
    u = torch.addcmul(shift, c, s)  # (R, B, in)
    mean = mean_raw
    if offset is not None:
        mean = mean - offset
    if scaled:
        mean = mean * scale
    return u, c, r, s, mean, var


@torch.no_grad()
def train_step(
    net: ReplicaFCN,
    x: torch.Tensor,
    y: torch.Tensor,
    offset: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
) -> StepResult:
    """Loss and gradients of one training step of every replica; BN averages updated.

    x: (R, B, D) raw images (uint8 or float32), the network input being
    (x - offset) * scale with offset (D,); y: (R, B) int64 labels. The parameters are
    not changed (see :class:`MaskedSGD`); the BN running averages and batch counters
    are, as one forward pass of ``FCN`` in training mode would.
    """
    batch = x.shape[1]
    inv_batch = 1.0 / batch
    dtype = net.weights[0].dtype  # matmul outputs come back to it under an autocast
    last = net.n_layers - 1
    # per layer: (input h, c, r, s, u); layer 0 needs no h and no u (no input gradient)
    saved: list[
        tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
    ] = []
    means, variances = [], []
    h = x
    for layer in range(net.n_layers):
        first = layer == 0
        u, c, r, s, mean, var = _batch_norm_train(
            h,
            net.gains[layer],
            net.shifts[layer],
            net.eps,
            offset if first else None,
            scale if first else 1.0,
        )
        means.append(mean)
        variances.append(var)
        # z = u W^T + b: (R, B, out)
        z = torch.baddbmm(net.biases[layer], u, net.weights[layer].transpose(1, 2)).to(dtype)
        # The first layer's backward needs only c: its input and u are freed now.
        saved.append((h, c, r, s, u) if layer else (None, c, r, s, None))
        h = z.relu_() if layer < last else z  # ReLU in place: its mask is read from h

    # Cross-entropy, mean over the batch; dz = (softmax - onehot) / B.
    logp = torch.log_softmax(h, dim=2)  # (R, B, C)
    target = y.unsqueeze(2)  # (R, B, 1)
    picked = logp.gather(2, target)  # (R, B, 1) log-probability of the label
    loss = picked.sum(dim=(1, 2)).mul_(-inv_batch)  # (R,)
    correct = (logp.argmax(dim=2) == y).sum(dim=1)  # (R,)
    dz = logp.exp_()  # (R, B, C) softmax, in place
    dz.scatter_(2, target, picked.exp_().sub_(1.0))  # p_label - 1
    dz.mul_(inv_batch)

    # Every slot is filled by the loop below.
    grads: list[torch.Tensor] = [None] * (4 * net.n_layers)  # type: ignore[list-item]
    for layer in reversed(range(net.n_layers)):
        h_in, c, r, s, u_in = saved[layer]
        weight = net.weights[layer]
        db = dz.sum(1, keepdim=True)  # (R, 1, out)
        if layer == 0:
            # No input gradient. G = dz^T c (R, out, in) is the weight gradient with
            # respect to xhat, up to r: dW = G r gain + db^T shift, dgain = r sum_i W G.
            grad_w = torch.bmm(dz.transpose(1, 2), c).to(dtype)  # (R, out, in)
            grad_gain = _batch_dot(weight, grad_w).mul_(r)  # (R, 1, in)
            grad_shift = torch.bmm(db, weight).to(dtype)  # (R, 1, in)
            grad_w.mul_(s).baddbmm_(db.transpose(1, 2), net.shifts[layer])
        else:
            assert h_in is not None and u_in is not None  # saved for every layer above 0
            grad_w = torch.bmm(dz.transpose(1, 2), u_in).to(dtype)  # (R, out, in)
            du = torch.bmm(dz, weight).to(dtype)  # (R, B, in) gradient of the BN output
            grad_shift = du.sum(1, keepdim=True)  # (R, 1, in)
            grad_gain = _batch_dot(du, c).mul_(r)  # (R, 1, in): sum over the batch of du xhat
            dz = bn_relu_backward(du, c, r, s, grad_shift, grad_gain, h_in, inv_batch)
        grads[4 * layer : 4 * layer + 4] = [grad_w, db, grad_gain, grad_shift]
    update_running_averages(net, means, variances, batch)
    return StepResult(grads, loss, correct)


def bn_relu_backward(
    du: torch.Tensor,
    c: torch.Tensor,
    r: torch.Tensor,
    s: torch.Tensor,
    grad_shift: torch.Tensor,
    grad_gain: torch.Tensor,
    h_in: torch.Tensor,
    inv_batch: float,
) -> torch.Tensor:
    """dz of the layer below from du (a BN output's gradient; any layout whose per-feature
    tensors broadcast over du): BN backward, xhat = c r, s = gain r, dh = s (du - dshift / B
    - xhat dgain / B) = s du + k0 + c k1; then ReLU's (h_in > 0 where active)."""
    minus_s = s * -inv_batch
    k0 = grad_shift * minus_s
    k1 = grad_gain * r
    dh = torch.addcmul(k0, du, s).addcmul_(c, k1.mul_(minus_s))
    return torch.ops.aten.threshold_backward(dh, h_in, 0)


def update_running_averages(
    net: ReplicaFCN, means: list[torch.Tensor], variances: list[torch.Tensor], batch: int
) -> None:
    """BN running averages as torch's BatchNorm1d, from the batch means and biased
    variances (R, 1, in) of each layer (the variance made unbiased)."""
    m = net.momentum
    unbiased = batch / (batch - 1) if batch > 1 else 1.0
    torch._foreach_mul_(net.running_means, 1.0 - m)
    torch._foreach_add_(net.running_means, means, alpha=m)
    torch._foreach_mul_(net.running_vars, 1.0 - m)
    torch._foreach_add_(net.running_vars, variances, alpha=m * unbiased)
    torch._foreach_add_(net.batches_tracked, 1)


class Trainable(Protocol):
    """What :class:`MaskedSGD` updates: a ReplicaFCN or :class:`imprint.sparse.SparseFCN`."""

    def parameters(self) -> list[torch.Tensor]: ...

    def parameter_names(self) -> list[str]: ...


class MaskedSGD:
    """``torch.optim.SGD``'s update (momentum without dampening, weight decay) on a
    :class:`ReplicaFCN`, with pruned entries held at exactly zero.

    ``masks`` maps state-dict names (``layers.{l}.weight|bias``) to bool tensors of the
    state-dict shape with a leading replica axis, (R, out, in) and (R, out); names
    absent and all-True masks cost nothing per step. The pruned entries are zeroed once
    here and their gradient is masked at every step, so they never move, momentum and
    weight decay included (weight decay adds wd * 0), while the surviving entries get
    exactly unmasked SGD's arithmetic. Without momentum the mask rides in the update
    itself: p += -lr * g * m, one pass over each pruned tensor.
    """

    def __init__(
        self,
        net: Trainable,
        masks: dict[str, torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = net.parameters()
        self.names = net.parameter_names()
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor] | None = None
        self.set_masks(masks)

    @torch.no_grad()
    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Hold the entries pruned by ``masks`` at zero from now on (at construction, or
        when a procedure prunes during training): they are zeroed, and so are their
        momentum buffers, so that they never move again."""
        self.masked: list[int] = []  # indices into params of partly pruned tensors
        self.mask_values: list[torch.Tensor] = []  # their masks as 0/1 floats
        for index, (name, param) in enumerate(zip(self.names, self.params)):
            mask = masks.get(name)
            if mask is None:
                continue
            # The state-dict shape with the replica axis: (R, out, in) or (R, out).
            vector = name.endswith(".bias")
            expected = (param.shape[0], param.shape[2]) if vector else tuple(param.shape)
            if tuple(mask.shape) != expected:
                raise ValueError(
                    f"The mask '{name}' must have shape {expected} (replicas first). "
                    f"Got {tuple(mask.shape)}."
                )
            if not bool(mask.all()):  # dense layers skip the multiply
                self.masked.append(index)
                self.mask_values.append(mask.to(param.device, param.dtype).view(param.shape))
        self.dense = sorted(set(range(len(self.params))) - set(self.masked))
        self.masked_params = [self.params[i] for i in self.masked]
        self.dense_params = [self.params[i] for i in self.dense]
        if self.masked:
            torch._foreach_mul_(self.masked_params, self.mask_values)
            if self.buffers is not None:
                torch._foreach_mul_([self.buffers[i] for i in self.masked], self.mask_values)

    def state(self) -> list[torch.Tensor]:
        """The momentum buffers (aligned with the parameters), or [] before the first
        step and without momentum: with the parameters, all an exact resume needs."""
        return list(self.buffers or [])

    @torch.no_grad()
    def load_state(self, buffers: Sequence[torch.Tensor]) -> None:
        """Restore :meth:`state` (from any device): the next step continues exactly."""
        if not buffers:
            self.buffers = None
            return
        if [tuple(b.shape) for b in buffers] != [tuple(p.shape) for p in self.params]:
            raise ValueError(
                "The momentum buffers must match the parameters' shapes "
                f"{[tuple(p.shape) for p in self.params]}. Got {[tuple(b.shape) for b in buffers]}."
            )
        self.buffers = [b.to(p.device, p.dtype, copy=True) for b, p in zip(buffers, self.params)]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        """Update with ``grads`` (aligned with the net's parameters; used as scratch)."""
        params, masked = self.params, self.masked
        if self.weight_decay:
            torch._foreach_add_(grads, params, alpha=self.weight_decay)
        if not self.momentum:
            if masked:
                masked_grads = [grads[i] for i in masked]
                torch._foreach_addcmul_(
                    self.masked_params, masked_grads, self.mask_values, value=-self.lr
                )
            dense_grads = [grads[i] for i in self.dense]
            torch._foreach_add_(self.dense_params, dense_grads, alpha=-self.lr)
            return
        if masked:
            torch._foreach_mul_([grads[i] for i in masked], self.mask_values)
        if self.buffers is None:  # torch.optim.SGD: the first buffer is the gradient
            self.buffers = [g.clone() for g in grads]
        else:
            torch._foreach_mul_(self.buffers, self.momentum)
            torch._foreach_add_(self.buffers, grads)
        torch._foreach_add_(params, self.buffers, alpha=-self.lr)


@torch.no_grad()
def eval_logits(
    net: ReplicaFCN,
    x: torch.Tensor,
    offset: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Evaluation-mode logits (BN running averages) of every replica.

    x: (n, D) raw images shared by all replicas, or (R, n, D); the network input is
    (x - offset) * scale. Returns (R, n, classes) in the weights' dtype.
    """
    h = x
    last = net.n_layers - 1
    for layer in range(net.n_layers):
        # BN(v) = (v - mean) k + shift with k = gain / sqrt(var + eps); for the first
        # layer v = (x - offset) scale, so BN = x (scale k) + shift - (offset scale + mean) k.
        k = net.gains[layer] * torch.rsqrt(net.running_vars[layer] + net.eps)  # (R, 1, in)
        centre = net.running_means[layer]
        s = k
        if layer == 0:
            if offset is not None:
                centre = centre + offset * scale
            s = k * scale
        t = net.shifts[layer] - centre * k  # (R, 1, in)
        u = torch.addcmul(t, h, s)  # (R, n, in)
        z = torch.baddbmm(net.biases[layer], u, net.weights[layer].transpose(1, 2))
        z = z.to(net.weights[layer].dtype)  # back from an autocast's bfloat16
        h = z.relu_() if layer < last else z  # (R, n, out)
    return h


@functools.cache
def retain_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next allocations (once per process).

    A CPU step allocates and frees its activations and gradients, ~170 MB for the paper
    FCN at batch 1000. glibc returns freed memory at the top of its heap to the system
    once it exceeds about twice the largest recent allocation, and takes it back page
    by page on the next step: ~10,000 page faults per step, 6% of a one-thread step
    on the machine of docs/benchmarks.md. Raising the trim threshold (keep up to 2 GB) and
    the mmap threshold (blocks up to 256 MB come from the heap) keeps that memory, as
    PyTorch's caching allocator does on a GPU. The setting is process-wide and
    permanent: resident memory stays at its peak. Returns whether glibc took it
    (False elsewhere: other C libraries, other systems).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 256 << 20)) and bool(
        mallopt(m_trim_threshold, (1 << 31) - 1)
    )


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Matmul precision for a training loop, restored on exit.

    "fp32": float32 throughout. "tf32": CUDA float32 matmuls on TF32 tensor cores.
    "bf16": CUDA matmuls under a bfloat16 autocast; weights, gradients, BN statistics
    and the optimizer stay float32 (the engine casts every matmul output back). Both
    need a CUDA device: on a CPU they would silently mean float32 (TF32) or a slow
    emulation (bf16 on CPUs without bf16 units), so they are refused.
    """
    if precision == "fp32":
        yield
        return
    if precision not in ("tf32", "bf16"):
        raise ConfigError(f"train.precision must be one of fp32, tf32, bf16. Got {precision!r}.")
    if device.type != "cuda":
        raise ConfigError(
            f"train.precision = {precision!r} needs a CUDA device; this run is on "
            f"{device.type}. Use train.precision = 'fp32' there."
        )
    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 spells the switch fp32_precision and refuses mixing it with allow_tf32.
    if hasattr(matmul, "fp32_precision"):
        flag, tf32 = "fp32_precision", "tf32"
    else:
        flag, tf32 = "allow_tf32", True  # type: ignore[assignment]  # the older switch is a bool
    saved = getattr(matmul, flag)
    try:
        setattr(matmul, flag, tf32)  # under bf16 autocast it only affects fp32 leftovers
        if precision == "bf16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        setattr(matmul, flag, saved)


# Below this many multiply-adds per step (R x B x the sum of in x out over layers; the
# default config's 144-128-4 net does 4.8M at batch 256), a CPU step runs on one thread.
SMALL_STEP_MACS = 8_000_000


@contextlib.contextmanager
def step_threads(
    dims: Sequence[int], replicas: int, batch_size: int, device: torch.device
) -> Iterator[int]:
    """Intra-op threads for a training loop, restored on exit; yields the count used.

    Small CPU steps run on one thread. Their ~100 ops of ~10 us each gain little from
    OpenMP's fork-join (one thread was 7% slower than two on an idle 2-core machine),
    and on a shared machine a worker thread that the scheduler preempts stalls every
    op for a time slice: with a two-process job on the same two cores, three rounds of
    the default config took 7-9 s on one thread and 88-276 s on two. Larger steps keep
    torch's setting (the physical cores by default), where parallel matmuls pay.
    """
    before = torch.get_num_threads()
    macs = replicas * batch_size * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    if device.type != "cpu" or macs >= SMALL_STEP_MACS or before == 1:
        yield before
        return
    torch.set_num_threads(1)
    try:
        yield 1
    finally:
        torch.set_num_threads(before)
