"""Sparse execution of a round: the live weights of sparse layers as CSR values.

IMP spends most of its rounds on very sparse nets, where a dense step multiplies
mostly zeros. Within a round the mask is fixed, so each sparse layer's structure is
built once (:class:`Pattern`) and the step works on the live weights alone:

* forward: CSR x dense (``torch.sparse.mm``);
* input gradient (layers past the first): the transposed pattern, built once per
  round, its values a gather of the live weights by a precomputed permutation;
* weight gradient: dense-dense products sampled at the pattern only
  (``torch.sparse.sampled_addmm``, SDDMM);
* the optimiser updates the values (and their momentum) only: :class:`SparseFCN`
  gives :class:`imprint.engine.MaskedSGD` the values in place of the dense weight.

R replicas with different masks are one block-diagonal matrix (R*out, R*in): one call
per product serves every replica. Activations run feature-major, (R, features,
batch), so that every sparse product reads and writes contiguous rows; dense layers
in the same step are batched matmuls in that layout. The dense weights are kept
current after every step (a scatter of the values), so evaluation, checkpoints,
rewinding and the run folder see the same tensors as on the dense path, and files are
written dense as always.

The maths is :func:`imprint.engine.train_step`'s (the same BN folding, the first
layer's input gradient never formed); the sums run in another order, so the two
paths agree to float32 rounding (tests/test_sparse.py derives the tolerance).

``train.sparse`` chooses: "off" (the dense engine), "on" (every pruned layer sparse),
"auto" (a layer runs sparse when its density is below the crossover of
:func:`crossover_density` and it is large enough for the sparse calls' fixed cost to
pay, :data:`MIN_SPARSE_MACS`). :class:`RoundEngine` makes that choice for a round, and
again whenever a procedure prunes inside it (GMP), rebuilding the structure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from imprint.config import Config, TrainConfig
from imprint.engine import (
    MaskedSGD,
    ReplicaFCN,
    StepResult,
    bn_relu_backward,
    eval_logits,
    update_running_averages,
)

__all__ = [
    "Pattern",
    "SparseFCN",
    "sparse_train_step",
    "crossover_density",
    "choose_sparse_layers",
    "MIN_SPARSE_MACS",
    "engine_record",
    "RoundEngine",
    "sparse_eval_logits",
]

# torch marks CSR tensors as beta on every first use; the operations used here are tested
# against the dense engine (tests/test_sparse.py).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

# Density below which a layer's sparse step beats its dense step, per device kind and
# CPU capability, from benchmarks/sparse.py (docs/benchmarks.md has the sweep). None:
# not measured there, so "auto" stays dense.
CROSSOVER = {
    ("cpu", "AVX512"): 0.15,
    ("cpu", "AVX2"): 0.15,
    ("cpu", "DEFAULT"): 0.15,
    ("cuda", ""): None,
}
# Below this many dense multiply-adds per step (R x batch x in x out) a layer stays
# dense under "auto": the sparse calls' fixed cost (tens of microseconds) outweighs
# what they save.
MIN_SPARSE_MACS = 2_000_000


def crossover_density(device: torch.device) -> float | None:
    """The density below which "auto" runs a layer sparse on ``device`` (None: never)."""
    if device.type != "cpu":
        return CROSSOVER.get((device.type, ""))
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        capability = "AVX512"
    return CROSSOVER.get(("cpu", capability), CROSSOVER[("cpu", "DEFAULT")])


def choose_sparse_layers(
    mode: str,
    masks: Mapping[str, torch.Tensor],
    dims: Sequence[int],
    replicas: int,
    batch_size: int,
    device: torch.device,
) -> list[int]:
    """The layers that run sparse this round under ``train.sparse = mode``.

    ``masks``: stacked weight masks "layers.{l}.weight" (R, out, in); a layer without
    one is dense (nothing pruned). "on": every layer with a pruned entry; "auto": those whose
    density is below :func:`crossover_density` and whose step does at least
    :data:`MIN_SPARSE_MACS` dense multiply-adds.
    """
    if mode == "off":
        return []
    if mode not in ("on", "auto"):
        raise ValueError(f"train.sparse must be one of auto, on, off. Got {mode!r}.")
    crossover = crossover_density(device)
    chosen = []
    for layer in range(len(dims) - 1):
        mask = masks.get(f"layers.{layer}.weight")
        if mask is None:
            continue
        density = float(mask.sum()) / mask.numel()
        if mode == "on" and density < 1.0:
            chosen.append(layer)
            continue
        macs = replicas * batch_size * dims[layer] * dims[layer + 1]
        small = macs < MIN_SPARSE_MACS
        if mode == "auto" and crossover is not None and density < crossover and not small:
            chosen.append(layer)
    return chosen


def engine_record(config: Config, device: torch.device) -> dict[str, Any]:
    """What a run's manifest records of the engine: ``train.sparse``, the crossover
    "auto" uses on ``device`` and the CPU capability it was measured for (each round's
    metrics.json lists the layers that ran sparse)."""
    return {
        "engine": {
            "sparse": config.train.sparse,
            "crossover_density": crossover_density(device),
            "device": device.type,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "min_sparse_macs": MIN_SPARSE_MACS,
        }
    }


@dataclass(frozen=True)
class Pattern:
    """One layer's live entries for the round, all replicas as one block-diagonal matrix.

    Entry k (k < nnz, in row-major order of the stacked (R, out, in) weights) is the
    weight ``flat[k]`` of ``weights.view(-1)``, at block row ``row[k]`` (r * out + o)
    and block column ``col[k]`` (r * in + i). ``crow`` is the CSR row pointer of the
    (R*out, R*in) matrix; ``crow_t``, ``col_t`` those of its transpose, whose values
    are ``values[perm]``.
    """

    shape: tuple[int, int]
    flat: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    crow: torch.Tensor
    perm: torch.Tensor
    crow_t: torch.Tensor
    col_t: torch.Tensor

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Pattern:
        """The pattern of a stacked bool mask (R, out, in)."""
        replicas, out, inputs = mask.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)
        replica = flat // (out * inputs)
        row = replica * out + (flat // inputs) % out
        col = replica * inputs + flat % inputs
        perm = torch.sort(col, stable=True).indices  # rows stay increasing within a column
        return cls(
            shape=(replicas * out, replicas * inputs),
            flat=flat,
            row=row,
            col=col,
            crow=_row_pointer(row, replicas * out),
            perm=perm,
            crow_t=_row_pointer(col, replicas * inputs),
            col_t=row[perm],
        )

    @property
    def nnz(self) -> int:
        return int(self.flat.numel())

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The (R*out, R*in) CSR matrix holding ``values``."""
        return torch.sparse_csr_tensor(
            self.crow, self.col, values, self.shape, check_invariants=False
        )

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """The (R*in, R*out) CSR transpose."""
        shape = (self.shape[1], self.shape[0])
        return torch.sparse_csr_tensor(
            self.crow_t, self.col_t, values[self.perm], shape, check_invariants=False
        )


class RoundEngine:
    """A round's step and optimiser on ``net``: the dense engine, or :class:`SparseFCN`
    for the layers ``config.sparse`` chooses (:func:`choose_sparse_layers`), chosen
    again whenever the masks change inside the round (a procedure that prunes while
    training): the structure is rebuilt and the momentum carried over, the newly
    pruned entries' zeroed. While no layer runs sparse, every call is the dense
    engine's own, so dense rounds are bitwise what they were without this class.
    """

    def __init__(
        self,
        net: ReplicaFCN,
        masks: Mapping[str, torch.Tensor],
        config: TrainConfig,
        dense_step: Callable[..., StepResult],
    ) -> None:
        self.net, self.config, self.dense_step = net, config, dense_step
        self.used: set[int] = set()  # every layer that ran sparse in the round
        self.sparse, self.optimizer = self._build(masks, self._choose(masks))

    def _choose(self, masks: Mapping[str, torch.Tensor]) -> list[int]:
        net, config = self.net, self.config
        device = net.weights[0].device
        return choose_sparse_layers(
            config.sparse, masks, net.dims, net.replicas, config.batch_size, device
        )

    def _build(
        self, masks: Mapping[str, torch.Tensor], chosen: Sequence[int]
    ) -> tuple[SparseFCN | None, MaskedSGD]:
        """The optimiser on ``net`` itself (no sparse layer), or on a :class:`SparseFCN`
        of it with the ``chosen`` layers, returned with it."""
        config = self.config
        settings = (config.lr, config.momentum, config.weight_decay)
        self.used.update(chosen)
        if not chosen:
            return None, MaskedSGD(self.net, dict(masks), *settings)
        sparse = SparseFCN(self.net, masks, chosen)
        return sparse, MaskedSGD(sparse, sparse.optimizer_masks(masks), *settings)

    @property
    def sparse_layers(self) -> list[int]:
        """The layers that ran sparse at some point of the round, ascending."""
        return sorted(self.used)

    def step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        offset: torch.Tensor | None,
        scale: float | torch.Tensor,
    ) -> StepResult:
        """One training step and update; the dense weights are current after it."""
        if self.sparse is None:
            result = self.dense_step(self.net, x, y, offset, scale)
            self.optimizer.step(result.grads)
            return result
        result = sparse_train_step(self.sparse, x, y, offset, scale)
        self.optimizer.step(result.grads)
        self.sparse.sync()
        return result

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Hold the entries ``masks`` prune at zero from now on (their momentum too)."""
        chosen = self._choose(masks)
        if self.sparse is None and not chosen:
            self.optimizer.set_masks(dict(masks))  # the dense engine's own call
            return
        buffers = self.momentum()
        self.sparse, self.optimizer = self._build(masks, chosen)
        if buffers:
            self.load_momentum(buffers)
            own = masks if self.sparse is None else self.sparse.optimizer_masks(masks)
            self.optimizer.set_masks(dict(own))  # zero the newly pruned entries' momentum

    def logits(
        self,
        x: torch.Tensor,
        offset: torch.Tensor | None = None,
        scale: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Evaluation-mode logits (R, n, classes), as :func:`imprint.engine.eval_logits`."""
        if self.sparse is None:
            return eval_logits(self.net, x, offset, scale)
        return sparse_eval_logits(self.sparse, x, offset, scale)

    def momentum(self) -> list[torch.Tensor]:
        """The momentum buffers in the dense layout of ``net.parameters()`` ([] before
        the first step or without momentum)."""
        buffers = self.optimizer.state()
        return buffers if self.sparse is None else self.sparse.to_dense(buffers)

    def load_momentum(self, buffers: Sequence[torch.Tensor]) -> None:
        """Restore :meth:`momentum` (ValueError if the shapes do not fit)."""
        sparse = self.sparse
        self.optimizer.load_state(buffers if sparse is None else sparse.from_dense(buffers))

    def loaded(self) -> None:
        """The dense weights were loaded (a resume): read the values from them."""
        if self.sparse is not None:
            self.sparse.gather()


def _row_pointer(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    pointer = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    pointer[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return pointer


class SparseFCN:
    """A :class:`ReplicaFCN` whose layers in ``sparse`` train their live weights as
    values of a fixed pattern (the masks' "layers.{l}.weight", stacked (R, out, in)).

    :meth:`parameters` lists each sparse layer's values (nnz,) in place of its weight,
    so :class:`imprint.engine.MaskedSGD` updates them alone (give it the masks without
    those weights: :meth:`optimizer_masks`); :meth:`sync` writes them back into the
    dense weights, which stay the net's state for everything else.
    """

    def __init__(
        self, net: ReplicaFCN, masks: Mapping[str, torch.Tensor], sparse: Sequence[int]
    ) -> None:
        self.net = net
        self.patterns: list[Pattern | None] = [None] * net.n_layers
        self.values: list[torch.Tensor | None] = [None] * net.n_layers
        for layer in sparse:
            mask = masks[f"layers.{layer}.weight"].to(net.weights[layer].device)
            with torch.no_grad():
                net.weights[layer].mul_(mask)  # pruned entries are zero, as MaskedSGD does
            pattern = Pattern.from_mask(mask)
            self.patterns[layer] = pattern
            self.values[layer] = net.weights[layer].reshape(-1)[pattern.flat]

    @property
    def sparse_layers(self) -> list[int]:
        return [layer for layer, p in enumerate(self.patterns) if p is not None]

    def parameters(self) -> list[torch.Tensor]:
        """:meth:`ReplicaFCN.parameters`, with the values in place of sparse weights."""
        params = self.net.parameters()
        for layer, values in enumerate(self.values):
            if values is not None:
                params[4 * layer] = values
        return params

    def parameter_names(self) -> list[str]:
        return self.net.parameter_names()

    def optimizer_masks(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``masks`` without the sparse layers' weights (their values are all live)."""
        skip = {f"layers.{layer}.weight" for layer in self.sparse_layers}
        return {name: mask for name, mask in masks.items() if name not in skip}

    @torch.no_grad()
    def sync(self) -> None:
        """Write the values into the dense weights (after every optimiser step)."""
        for layer, pattern in enumerate(self.patterns):
            if pattern is not None:
                weight = self.net.weights[layer].view(-1)
                weight.index_copy_(0, pattern.flat, self.values[layer])  # type: ignore[arg-type]

    @torch.no_grad()
    def gather(self) -> None:
        """Read the values from the dense weights (after they were loaded)."""
        for layer, pattern in enumerate(self.patterns):
            if pattern is not None:
                values = self.values[layer]
                assert values is not None
                values.copy_(self.net.weights[layer].reshape(-1)[pattern.flat])

    def to_dense(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Tensors aligned with :meth:`parameters` (momentum buffers) in the dense
        layout of :meth:`ReplicaFCN.parameters`: zero off the pattern."""
        dense = list(tensors)
        for layer, pattern in enumerate(self.patterns):
            if pattern is not None and dense:
                weight = self.net.weights[layer]
                full = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
                full.index_copy_(0, pattern.flat, dense[4 * layer])
                dense[4 * layer] = full.view(weight.shape)
        return dense

    def from_dense(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The inverse of :meth:`to_dense`: the sparse layers' entries at the pattern;
        ValueError unless ``tensors`` (or none) match the dense parameters' shapes."""
        shapes = [tuple(p.shape) for p in self.net.parameters()]
        if tensors and [tuple(t.shape) for t in tensors] != shapes:
            raise ValueError(f"The momentum buffers must have the parameters' shapes {shapes}.")
        out = list(tensors)
        for layer, pattern in enumerate(self.patterns):
            if pattern is not None and out:
                flat = out[4 * layer].to(pattern.flat.device).reshape(-1)
                out[4 * layer] = flat[pattern.flat]
        return out


@torch.no_grad()
def sparse_train_step(
    net: SparseFCN,
    x: torch.Tensor,
    y: torch.Tensor,
    offset: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
) -> StepResult:
    """:func:`imprint.engine.train_step` with the sparse layers' products on their
    patterns; the gradients are aligned with :meth:`SparseFCN.parameters` (a sparse
    layer's weight gradient is (nnz,), at its pattern)."""
    dense = net.net
    replicas, batch = x.shape[0], x.shape[1]
    inv_batch = 1.0 / batch
    dtype = dense.weights[0].dtype
    last = dense.n_layers - 1
    eps = dense.eps
    # (R, D, B): the images feature-major, converted once and centred in place below
    h = torch.empty(replicas, x.shape[2], batch, dtype=dtype, device=x.device)
    h.copy_(x.transpose(1, 2))
    saved = []
    means, variances = [], []
    for layer in range(dense.n_layers):
        width = dense.dims[layer]
        gain = dense.gains[layer].view(replicas, width, 1)
        shift = dense.shifts[layer].view(replicas, width, 1)
        mean_raw = h.sum(2, keepdim=True).mul_(inv_batch)  # (R, in, 1)
        c = h.sub_(mean_raw) if layer == 0 else h - mean_raw  # images: centred in place
        var = (c * c).sum(2, keepdim=True).mul_(inv_batch)  # of the raw input
        if layer == 0:  # of the network input v = (x - offset) scale, per input
            column = scale.view(-1, 1) if isinstance(scale, torch.Tensor) else scale
            var.mul_(column * column)
            r = var.add(eps).rsqrt_().mul_(column)  # xhat = c r
            mean = mean_raw if offset is None else mean_raw - offset.view(-1, 1)
            mean = mean * column
        else:
            r = var.add(eps).rsqrt_()
            mean = mean_raw
        s = gain * r
        u = torch.addcmul(shift, c, s)  # (R, in, B)
        means.append(mean.view(replicas, 1, width))
        variances.append(var.view(replicas, 1, width))
        out = dense.dims[layer + 1]
        bias = dense.biases[layer].view(replicas, out, 1)
        pattern = net.patterns[layer]
        if pattern is None:
            z = torch.baddbmm(bias, dense.weights[layer], u).to(dtype)
        else:
            values = net.values[layer]
            assert values is not None
            z = torch.addmm(  # the bias broadcast along the batch: no zero fill, no add
                bias.view(replicas * out, 1),
                pattern.matrix(values),
                u.view(replicas * width, batch),
            ).view(replicas, out, batch)
        saved.append((h if layer else None, c, r, s, u if layer else None))
        h = z.relu_() if layer < last else z

    # Cross-entropy over axis 1 (classes), mean over the batch.
    logp = torch.log_softmax(h, dim=1)  # (R, C, B)
    target = y.unsqueeze(1)  # (R, 1, B)
    picked = logp.gather(1, target)
    loss = picked.sum(dim=(1, 2)).mul_(-inv_batch)
    correct = (logp.argmax(dim=1) == y).sum(dim=1)
    dz = logp.exp_()
    dz.scatter_(1, target, picked.exp_().sub_(1.0))
    dz.mul_(inv_batch)  # (R, out, B)

    grads: list[torch.Tensor] = [None] * (4 * dense.n_layers)  # type: ignore[list-item]
    for layer in reversed(range(dense.n_layers)):
        h_in, c, r, s, u_in = saved[layer]
        width, out = dense.dims[layer], dense.dims[layer + 1]
        weight = dense.weights[layer]
        shift = dense.shifts[layer]
        db = dz.sum(2, keepdim=True)  # (R, out, 1)
        pattern = net.patterns[layer]
        values = net.values[layer]
        # the weight gradient is dz^T times the layer's BN output (the first layer's
        # up to r gain and shift: c stands in for it)
        features = c if u_in is None else u_in  # (R, in, B)
        if pattern is not None:
            assert values is not None
            sampled = torch.sparse.sampled_addmm(
                pattern.matrix(values),
                dz.view(replicas * out, batch),
                features.view(replicas * width, batch).t(),
                beta=0.0,
            )
            grad_w = sampled.values()  # (nnz,)
        else:
            grad_w = torch.bmm(dz, features.transpose(1, 2)).to(dtype)
        if layer == 0:
            # dW = G r gain + db (x) shift, dgain = r sum_o W G, dshift = W^T db (engine.py)
            r_row = r.view(replicas, 1, width)
            s_row = s.view(replicas, 1, width)
            if pattern is None:
                grad_gain = (weight * grad_w).sum(1, keepdim=True).mul_(r_row)
                grad_shift = torch.bmm(db.view(replicas, 1, out), weight).to(dtype)
                grad_w.mul_(s_row).baddbmm_(db, shift)
            else:
                assert values is not None
                d_row = db.view(-1)[pattern.row]  # db at each entry's row
                grad_gain = torch.zeros(replicas * width, dtype=dtype, device=dz.device)
                grad_gain.index_add_(0, pattern.col, values * grad_w)
                grad_gain = grad_gain.view(replicas, 1, width).mul_(r_row)
                grad_shift = torch.zeros(replicas * width, dtype=dtype, device=dz.device)
                grad_shift.index_add_(0, pattern.col, values * d_row)
                grad_shift = grad_shift.view(replicas, 1, width)
                grad_w = (
                    grad_w * s_row.reshape(-1)[pattern.col] + d_row * shift.reshape(-1)[pattern.col]
                )
        else:
            assert h_in is not None
            if pattern is None:
                du = torch.bmm(weight.transpose(1, 2), dz).to(dtype)  # (R, in, B)
            else:
                assert values is not None
                du = torch.sparse.mm(
                    pattern.transposed(values), dz.view(replicas * out, batch)
                ).view(replicas, width, batch)
            grad_shift = du.sum(2, keepdim=True)  # (R, in, 1)
            grad_gain = (du * c).sum(2, keepdim=True).mul_(r)
            dz = bn_relu_backward(du, c, r, s, grad_shift, grad_gain, h_in, inv_batch)
            grad_shift = grad_shift.view(replicas, 1, width)
            grad_gain = grad_gain.view(replicas, 1, width)
        bias_grad = db.view(replicas, 1, out)
        grads[4 * layer : 4 * layer + 4] = [grad_w, bias_grad, grad_gain, grad_shift]

    update_running_averages(dense, means, variances, batch)
    return StepResult(grads, loss, correct)


@torch.no_grad()
def sparse_eval_logits(
    net: SparseFCN,
    x: torch.Tensor,
    offset: torch.Tensor | None = None,
    scale: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """:func:`imprint.engine.eval_logits` feature-major, the sparse layers' products on
    their patterns: x (n, D) shared by the replicas, or (R, n, D); returns (R, n, C)."""
    dense = net.net
    replicas, n = dense.replicas, x.shape[-2]
    dtype = dense.weights[0].dtype
    h = torch.empty(replicas, x.shape[-1], n, dtype=dtype, device=x.device)
    h.copy_(x.transpose(-1, -2))  # (R, D, n), a shared batch broadcast over replicas
    last = dense.n_layers - 1
    for layer in range(dense.n_layers):
        width, out = dense.dims[layer], dense.dims[layer + 1]
        # BN with running averages as an affine map u = h s + t (engine.eval_logits)
        k = dense.gains[layer] * torch.rsqrt(dense.running_vars[layer] + dense.eps)
        centre, s = dense.running_means[layer], k
        if layer == 0:
            if offset is not None:
                centre = centre + offset * scale
            s = k * scale
        t = dense.shifts[layer] - centre * k  # (R, 1, in)
        column = (replicas, width, 1)
        u = torch.addcmul(t.reshape(column), h, s.reshape(column))  # (R, in, n)
        bias = dense.biases[layer].view(replicas, out, 1)
        pattern, values = net.patterns[layer], net.values[layer]
        if pattern is None:
            z = torch.baddbmm(bias, dense.weights[layer], u).to(dtype)
        else:
            assert values is not None
            z = torch.addmm(
                bias.view(replicas * out, 1),
                pattern.matrix(values),
                u.view(replicas * width, n),
            ).view(replicas, out, n)
        h = z.relu_() if layer < last else z
    return h.transpose(1, 2)
