"""Exact locality maps of units in input space (the paper's S_sc and S_dc).

For unit k with input set P_k (a bool mask row, or path counts > 0) on images of
shape (C, H, W), flattened channel-major (p = c*H*W + y*W + x):

    S_sc(d) = sum_k #{(p, q) ordered, p != q in P_k, same channel, r_p - r_q = d}
    S_dc(d) = sum_k #{(p, q) ordered, p != q in P_k, different channels, r_p - r_q = d}

with r = (y, x) and d = (dy, dx) in (-H+1..H-1) x (-W+1..W-1). Maps are int64 arrays
(2H-1, 2W-1) holding d at [H-1+dy, W-1+dx], so d = 0 is the centre; ordered pairs
make them symmetric, S(d) = S(-d). Both sum to sum_k C_in(k) (C_in(k) - 1).

Two exact methods give identical integers:

* ``"fft"``: the maps are auto- and cross-correlations of the units' channel images.
  Summed over units they need one inverse FFT: S_sc + diag = IFFT(sum_{k,c} |F_kc|^2)
  and S_sc + S_dc + diag = IFFT(sum_k |sum_c F_kc|^2), since
  |sum_c F_c|^2 - sum_c |F_c|^2 = sum_{c != c'} F_c conj(F_c'). Images are zero-padded
  to at least (2H-1, 2W-1) so no displacement wraps around, the transforms run in
  float64 and the result is rounded to integers (errors are ~1e-16 of the largest
  sum, far below 1/2 for any first layer). Cost per unit ~ C (2H)(2W) log(4HW).
* ``"pairs"``: every unordered pair of a unit's inputs, vectorised: an input's code
  c L + y (2W-1) + x (L = (2H-1)(2W-1)) increases with p and makes code_q - code_p
  encode (c_q - c_p, d) uniquely. One bincount of the differences code_j - code_i > 0
  of the pairs i < j (later input minus earlier) counts every unordered pair once;
  mirrored, S(d) = S(-d), it gives the ordered pairs. Units of similar C_in are padded
  into rectangular batches, their codes held in the smallest integer type that fits
  (int16 for CIFAR). Cost per unit ~ C_in^2 / 2, far below the FFT's for sparse units
  (the 1%-dense first layers of late IMP rounds).

``"auto"`` (the default) sends each unit to the cheaper one. The pure-Python pair
loop of the paper's notebook is kept as :func:`locality_maps_pairloop`, the reference
that tests and the benchmark compare with.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from imprint.analysis.connectivity import _check_shape, _unit_rows

__all__ = [
    "ConnectionResolvedMaps",
    "LocalityMaps",
    "connection_resolved_maps",
    "locality_maps",
    "locality_maps_pairloop",
    "mass_within_radius",
    "resolved_edges",
    "mass_within_radius_null",
]

METHODS = ("auto", "fft", "pairs")

# Numbers held by one batch of either method (8 MB of float64; 2 MB of int16 codes):
# measured on 2 cores, larger FFT batches fall out of cache and run slower, smaller
# ones pay Python; the pair method ran ~10% slower with 2**18 (more bincounts).
_BATCH_NUMBERS = 2**20

# "auto" sends unit k to the pair method when C_in(k)^2 <= _PAIR_PER_FFT * C * ny * nx
# (ny x nx the padded grid). Measured on 2 busy cores, 256 units of equal C_in cost
# the same both ways at C_in^2 / (C ny nx) ~ 40 for (3, 32, 32) and ~ 65 for (1, 28, 28);
# 32 (C_in ~ 630 for (3, 32, 32)) leaves room for an idle machine, where the FFT's two
# threads gain more than the single-threaded pairs. Either side is exact; this only
# sets the speed.
_PAIR_PER_FFT = 32.0

# The pair method pads units to the largest C_in of their group, groups growing by
# 2**(1/4): < 19% padding (~17% more pairs on random 1% masks), in ~10 groups. Finer
# groups list fewer pairs but pay more Python; 4 to 8 per octave measured the same.
_GROUPS_PER_OCTAVE = 4

# Candidate types of the pair method's codes, smallest first (see _pair_counts).
_PAIR_DTYPES = (np.int16, np.int32, np.int64)

# Units per batch of the pair method, at least, however wide they are (see _batches).
_MIN_BATCH_UNITS = 16

# Padded sizes up to this keep their pair indices cached (see _upper_pairs).
_CACHED_SLOTS = 128


@dataclass(frozen=True, eq=False)  # eq=False: tensor fields have no single truth value
class LocalityMaps:
    s_sc: torch.Tensor  # (2H-1, 2W-1) int64: same-channel ordered pairs at displacement d
    s_dc: torch.Tensor  # (2H-1, 2W-1) int64: different-channel ordered pairs
    shape: tuple[int, int, int]  # (C, H, W) of the inputs
    n_units: int  # units pooled (those with C_in < 2 add no pair)

    @property
    def n_pairs_sc(self) -> int:
        return int(self.s_sc.sum())

    @property
    def n_pairs_dc(self) -> int:
        return int(self.s_dc.sum())

    def displacements(self) -> tuple[torch.Tensor, torch.Tensor]:
        """dy, dx of every map entry: two int64 tensors (2H-1, 2W-1)."""
        return _displacements(self.shape[1], self.shape[2])


def _displacements(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    dy = torch.arange(-(height - 1), height)  # (2H-1,)
    dx = torch.arange(-(width - 1), width)  # (2W-1,)
    grid_y, grid_x = torch.meshgrid(dy, dx, indexing="ij")  # (2H-1, 2W-1) each
    return grid_y, grid_x


def _rows_and_shape(
    mask: torch.Tensor, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    rows = _unit_rows(mask)  # (units, D) bool
    return rows, _check_shape(shape, rows.shape[1])


def _fft_size(n: int) -> int:
    """Smallest 5-smooth length >= 2n - 1: linear correlation of length-n signals with
    no wrap-around, on a length the FFT handles fast."""
    size = 2 * n - 1
    while True:
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


def _power(spectrum: torch.Tensor) -> torch.Tensor:
    """|F|^2 of a complex tensor as float64, without the square root of abs()."""
    return torch.view_as_real(spectrum).square().sum(-1)


def _window(circular: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (2H-1, 2W-1) displacements of a circular correlation (ny, nx), rounded."""
    ny, nx = circular.shape
    iy = torch.arange(-(height - 1), height) % ny  # d mod n: negative d wrap to the end
    ix = torch.arange(-(width - 1), width) % nx
    return circular[iy][:, ix].round().to(torch.int64)


def _fft_counts(
    rows: torch.Tensor, shape: tuple[int, int, int], chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_sc, S_dc) of the units ``rows`` (units, D) bool by FFT; int64 (2H-1, 2W-1)."""
    channels, height, width = shape
    ny, nx = _fft_size(height), _fft_size(width)
    spectrum_size = channels * ny * (nx // 2 + 1) * 2  # float64 numbers per unit
    step = chunk_size or max(1, _BATCH_NUMBERS // spectrum_size)
    same = torch.zeros((ny, nx // 2 + 1), dtype=torch.float64)  # sum_{k,c} |F_kc|^2
    total = torch.zeros((ny, nx // 2 + 1), dtype=torch.float64)  # sum_k |sum_c F_kc|^2
    for batch in rows.split(step):
        images = batch.reshape(-1, channels, height, width).to(torch.float64)  # (b, C, H, W)
        spectra = torch.fft.rfft2(images, s=(ny, nx))  # (b, C, ny, nx//2+1), zero-padded
        same += _power(spectra).sum(dim=(0, 1))
        total += _power(spectra.sum(dim=1)).sum(dim=0)
    s_sc = _window(torch.fft.irfft2(same, s=(ny, nx)), height, width)  # p = q included
    s_all = _window(torch.fft.irfft2(total, s=(ny, nx)), height, width)
    s_dc = s_all - s_sc
    s_sc[height - 1, width - 1] -= int(rows.sum())  # drop the pairs p = q
    return s_sc, s_dc


def _flat_nonzero(bits: np.ndarray) -> np.ndarray:
    """np.flatnonzero of a C-contiguous bool array: (nnz,) int64, increasing.

    numpy's nonzero walks every entry without branches when more than 1/10 of them are
    nonzero, but below that it skips runs of zeros, with a mispredicted branch per
    nonzero entry: ~25 ns each, ~0.8 ms for a 1%-dense 1024 x 3072 mask. Here the bytes
    are scanned in three steps that each stay above 1/10 on sparse masks: the 16-byte
    blocks holding a nonzero (15% of them at 1% density), then the 8-byte words of those
    blocks (>= 1/2 are nonzero), then the bytes of those words (>= 1/8): ~0.6 ms at 1%.
    Masks whose blocks look > 1/10 dense go to np.flatnonzero directly.
    """
    flat = bits.reshape(-1)
    n_blocks = flat.size // 16
    cut = 16 * n_blocks  # the tail of < 16 bytes is scanned on its own
    words = flat[:cut].view(np.uint64).reshape(n_blocks, 2)  # (blocks, 2)
    block = np.flatnonzero(np.logical_or(words[:, 0], words[:, 1]))  # (b,)
    if block.size > (1 - 0.9**16) * n_blocks:  # as if > 1/10 of the bytes were nonzero
        return np.flatnonzero(flat)  # then numpy's own scan is branch-free
    block_words = words.take(block, axis=0).reshape(-1)  # (2b,)
    word = np.flatnonzero(block_words != 0)  # (w,) into block_words
    byte = np.flatnonzero(block_words.take(word).view(np.bool_))  # (nnz,) into their bytes
    first = 16 * block[word >> 1] + 8 * (word & 1)  # (w,) first byte of each word in ``flat``
    found = first[byte >> 3] + (byte & 7)  # (nnz,) byte index in ``flat``
    if cut < flat.size:
        found = np.concatenate([found, cut + np.flatnonzero(flat[cut:])])
    return found


def _codes(shape: tuple[int, int, int]) -> np.ndarray:
    """Code c L + y (2W-1) + x of every input p, (D,) int64, increasing in p: code_p - code_q
    determines (c_p - c_q, y_p - y_q, x_p - x_q) as |x_p - x_q| < 2W - 1 and
    |dy (2W-1) + dx| < L/2. The largest code is (n_bins - 1) / 2, n_bins = (2C-1) L."""
    channels, height, width = shape
    span = (2 * height - 1) * (2 * width - 1)
    c = np.arange(channels).reshape(-1, 1, 1) * span
    y = np.arange(height).reshape(1, -1, 1) * (2 * width - 1)
    x = np.arange(width).reshape(1, 1, -1)
    return (c + y + x).reshape(-1)


def _upper_pairs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots i, j of the pairs i < j of ``size`` slots: (size (size-1) / 2,) int64 each.

    Cached up to _CACHED_SLOTS slots (< 6 MB for all of them), where np.triu_indices
    (~20 us) costs as much as the subtraction it indexes; larger sizes are rebuilt,
    at a small fraction of the work of the batch that uses them.
    """
    if size <= _CACHED_SLOTS:
        return _upper_pairs_cached(size)
    return np.triu_indices(size, 1)


@functools.cache
def _upper_pairs_cached(size: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(size, 1)
    return i, j


def _batches(
    first: int, last: int, n_pairs: int, chunk_size: int | None
) -> Iterator[tuple[int, int, int, int]]:
    """Batches (lo, hi, a, b) of a group's units first:last: units lo:hi, pairs a:b.

    Each holds at most max(_BATCH_NUMBERS, _MIN_BATCH_UNITS) differences. Units with few
    pairs go in batches of as many units as fit (at most ``chunk_size``), with all
    their pairs; wide units go at least _MIN_BATCH_UNITS at a time, their pairs cut
    into slices, as gathering rows of 2 units cost ~4x more per number than of >= 8.
    """
    step = max(_MIN_BATCH_UNITS, _BATCH_NUMBERS // n_pairs)
    if chunk_size is not None:
        step = min(step, chunk_size)
    for lo in range(first, last, step):
        hi = min(lo + step, last)
        stride = max(1, _BATCH_NUMBERS // (hi - lo))  # pairs per slice
        for a in range(0, n_pairs, stride):
            yield lo, hi, a, min(a + stride, n_pairs)


def _pair_counts(
    inputs: np.ndarray,
    start: np.ndarray,
    c_in: np.ndarray,
    units: np.ndarray,
    shape: tuple[int, int, int],
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_sc, S_dc) of ``units`` by enumerating their unordered pairs of inputs.

    ``inputs`` (nnz,) holds the connected inputs p of every unit, unit by unit and
    increasing within a unit: unit k's are inputs[start[k] : start[k] + c_in[k]].
    Units sorted by C_in fill the columns of a table of codes, each padded to the
    largest C_in of its group (groups of C_in within a factor 2**(1/_GROUPS_PER_OCTAVE)).
    Every pair of slots i < j of a group gives code_j - code_i, bincounted; ``units``
    with C_in < 2 add nothing.
    """
    channels, height, width = shape
    span = (2 * height - 1) * (2 * width - 1)
    top = ((2 * channels - 1) * span - 1) // 2  # largest code; differences lie in -top..top
    # Padding slots, after a unit's inputs, hold pad = 2 top + 1: later - earlier is then
    # 1..top for two inputs (codes increase with p), top+1..2 top+1 for padding minus an
    # input and 0 for two paddings, so no clamp is needed and the bins above top are
    # dropped. The smallest integer type holding pad (int16 for (3, 32, 32): pad = 19845)
    # quarters the memory the gathers and subtractions write, against int64, and
    # torch's bincount reads int16 as it is.
    pad = 2 * top + 1
    dtype = next(t for t in _PAIR_DTYPES if pad <= np.iinfo(t).max)
    sizes = c_in[units]
    order = np.argsort(sizes, kind="stable")
    order = order[sizes[order] >= 2]  # units with a pair, by increasing C_in
    units, sizes = units[order], sizes[order]  # (u,) each
    hist = torch.zeros(pad + 1, dtype=torch.int64)  # unordered pairs by code_j - code_i
    if units.size:
        code = np.append(_codes(shape).astype(dtype).take(inputs), dtype(pad))  # (nnz + 1,)
        slot = np.arange(sizes[-1])[:, None]  # (n_max, 1)
        entries = np.where(slot < sizes, start[units] + slot, inputs.size)  # (n_max, u)
        # Units along the last axis: gathering the rows of pairs i (or j) of a batch
        # copies g contiguous codes at a time, and the subtraction sweeps contiguous
        # memory (slots last, with an index per number, gathered ~5x slower).
        table = code.take(entries)  # (n_max, u): each unit's codes, then padding
        key = np.floor(_GROUPS_PER_OCTAVE * np.log2(sizes)).astype(np.int64)  # (u,)
        cuts = (np.flatnonzero(np.diff(key)) + 1).tolist()
        buffer = np.empty(max(_BATCH_NUMBERS, _MIN_BATCH_UNITS), dtype=dtype)
        filled = 0  # differences in the buffer, awaiting one bincount for all
        for first, last in zip([0, *cuts], [*cuts, units.size]):
            n = int(sizes[last - 1])  # the group's padded size
            i, j = _upper_pairs(n)  # (T,) each, T = n (n-1) / 2
            for lo, hi, a, b in _batches(first, last, i.size, chunk_size):
                size = (b - a) * (hi - lo)
                if filled + size > buffer.size:
                    hist += torch.bincount(torch.from_numpy(buffer[:filled]), minlength=pad + 1)
                    filled = 0
                batch = table[:n, lo:hi]  # (n, g)
                out = buffer[filled : filled + size].reshape(b - a, hi - lo)
                np.subtract(batch.take(j[a:b], axis=0), batch.take(i[a:b], axis=0), out=out)
                filled += size
        hist += torch.bincount(torch.from_numpy(buffer[:filled]), minlength=pad + 1)
    # Ordered pairs: each difference delta > 0 as counted, and reversed as -delta.
    half = hist.numpy()[1 : top + 1]  # (top,): delta = 1..top
    full = np.concatenate([half[::-1], [0], half])  # (n_bins,): delta = -top..top
    blocks = full.reshape(2 * channels - 1, 2 * height - 1, 2 * width - 1)  # by c_p - c_q
    s_sc = blocks[channels - 1]  # its centre, delta = 0, would be p = q: 0
    s_dc = blocks.sum(axis=0) - s_sc
    return torch.from_numpy(s_sc.copy()), torch.from_numpy(s_dc)


def locality_maps(
    mask: torch.Tensor,
    shape: tuple[int, int, int],
    method: str = "auto",
    chunk_size: int | None = None,
) -> LocalityMaps:
    """Exact S_sc and S_dc of the units of ``mask`` (units, C*H*W), pooled over units.

    ``mask`` is a bool first-layer mask or path counts (connected = count > 0).
    ``method`` is "fft", "pairs" or "auto" (each unit to the cheaper; see the module
    docstring); all give the same integers. ``chunk_size`` caps the units per batch
    (default: batches of ~2**20 numbers), bounding memory. Runs on the CPU.
    """
    rows, shape = _rows_and_shape(mask, shape)
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter must be one of {METHODS}. Got {method!r}.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"The 'chunk_size' parameter must be an int >= 1. Got {chunk_size!r}.")
    rows = rows.detach().cpu().contiguous()
    n_units, n_inputs = rows.shape
    channels, height, width = shape
    flat = _flat_nonzero(rows.numpy())  # (nnz,) unit * D + p, in order
    # Binary searches for the first entry of each unit: ~2.5x faster than dividing by D.
    bounds = np.searchsorted(flat, np.arange(n_units + 1) * n_inputs)  # (units + 1,)
    start, c_in = bounds[:-1], np.diff(bounds)  # (units,) each
    inputs = flat - np.repeat(np.arange(n_units) * n_inputs, c_in)  # (nnz,) p
    if method == "auto":
        grid = channels * _fft_size(height) * _fft_size(width)
        by_pairs = c_in.astype(np.float64) ** 2 <= _PAIR_PER_FFT * grid  # (units,)
    else:
        by_pairs = np.full(n_units, method == "pairs")
    s_sc = torch.zeros((2 * height - 1, 2 * width - 1), dtype=torch.int64)
    s_dc = torch.zeros_like(s_sc)
    if by_pairs.any():
        units = np.flatnonzero(by_pairs)
        sc, dc = _pair_counts(inputs, start, c_in, units, shape, chunk_size)
        s_sc += sc
        s_dc += dc
    if not by_pairs.all():
        sc, dc = _fft_counts(rows[torch.from_numpy(~by_pairs)], shape, chunk_size)
        s_sc += sc
        s_dc += dc
    return LocalityMaps(s_sc, s_dc, shape, n_units)


def locality_maps_pairloop(
    mask: torch.Tensor, shape: tuple[int, int, int], max_pairs: int | None = None
) -> LocalityMaps:
    """The reference: a pure-Python double loop over the ordered pairs of every unit.

    The paper's notebook did this and stopped after a fixed number of pairs; with
    ``max_pairs`` the loop stops once that many pairs (same- and different-channel
    together) are counted, and ``n_units`` counts the units it reached. Far too slow
    for whole layers; for tests and the benchmark's baseline.
    """
    rows, (channels, height, width) = _rows_and_shape(mask, shape)
    if max_pairs is not None and (not isinstance(max_pairs, int) or max_pairs < 0):
        raise ValueError(f"The 'max_pairs' parameter must be an int >= 0. Got {max_pairs!r}.")
    limit = float("inf") if max_pairs is None else max_pairs
    s_sc = [[0] * (2 * width - 1) for _ in range(2 * height - 1)]
    s_dc = [[0] * (2 * width - 1) for _ in range(2 * height - 1)]
    pairs = units = 0
    for row in rows:
        if pairs >= limit:
            break
        units += 1
        coords = []
        for p in row.nonzero().flatten().tolist():
            c, pixel = divmod(p, height * width)
            coords.append((c, *divmod(pixel, width)))  # (c, y, x)
        for i, (cp, yp, xp) in enumerate(coords):
            for j, (cq, yq, xq) in enumerate(coords):
                if i == j:
                    continue
                if pairs >= limit:
                    break
                target = s_sc if cp == cq else s_dc
                target[yp - yq + height - 1][xp - xq + width - 1] += 1
                pairs += 1
    return LocalityMaps(
        torch.tensor(s_sc, dtype=torch.int64),
        torch.tensor(s_dc, dtype=torch.int64),
        (channels, height, width),
        units,
    )


@dataclass(frozen=True, eq=False)
class ConnectionResolvedMaps:
    s_sc: torch.Tensor  # (bins, 2H-1, 2W-1) int64: S_sc of the units of each C_in bin
    s_dc: torch.Tensor  # (bins, 2H-1, 2W-1) int64
    edges: tuple[int, ...]  # bin i holds units with edges[i] <= C_in < edges[i+1]
    n_units: torch.Tensor  # (bins,) int64: units in each bin
    shape: tuple[int, int, int]

    def bin(self, i: int) -> LocalityMaps:
        return LocalityMaps(self.s_sc[i], self.s_dc[i], self.shape, int(self.n_units[i]))


def resolved_edges(c_in: torch.Tensor, width: int = 10, max_bins: int = 6) -> tuple[int, ...]:
    """C_in bin edges for connection-resolved maps, by what exists: units with at least
    two inputs (fewer have no pair to map). Bins of ``width`` (the paper's 10) when C_in
    spans at least two of them; else at most ``max_bins`` bins holding about equal
    numbers of units, edges at distinct C_in values (sparse rounds: C_in 2, 3, 4-5, ...).
    Empty when no unit has two inputs."""
    values = c_in[c_in >= 2].long().cpu()
    if values.numel() == 0:
        return ()
    top = int(values.max())
    if top >= 2 * width:
        return tuple(sorted({2, *range(width, top + 1, width), top + 1}))
    levels = torch.linspace(0, 1, max_bins + 1, dtype=torch.float64)
    quantiles = torch.quantile(values.double(), levels)
    # ceil, less float noise: a quantile that lands on a C_in value is that value
    edges = sorted({int(math.ceil(q - 1e-9)) for q in quantiles[1:-1].tolist()} | {2, top + 1})
    return tuple(e for e in edges if 2 <= e <= top + 1)


def connection_resolved_maps(
    mask: torch.Tensor,
    shape: tuple[int, int, int],
    bins: int | Sequence[int] = 10,
    method: str = "auto",
) -> ConnectionResolvedMaps:
    """Locality maps of the units of ``mask`` (units, C*H*W) grouped by C_in.

    ``bins`` is a bin width w (edges 0, w, 2w, ... past the largest C_in: the paper's
    figure uses 10) or increasing integer edges; units with C_in outside
    [edges[0], edges[-1]) are left out. ``method`` as in :func:`locality_maps`.
    """
    rows, shape = _rows_and_shape(mask, shape)
    c_in = rows.sum(dim=1)  # (units,)
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError(f"The 'bins' parameter must be a width >= 1 or edges. Got {bins}.")
        top = int(c_in.max()) if c_in.numel() else 0
        edges = tuple(range(0, (top // bins + 1) * bins + 1, bins))
    else:
        edges = tuple(bins)
        if (
            len(edges) < 2
            or any(not isinstance(e, int) for e in edges)
            or any(a >= b for a, b in zip(edges[:-1], edges[1:]))
        ):
            raise ValueError(
                f"The 'bins' parameter must be a width or >= 2 increasing int edges. Got {bins!r}."
            )
    per_bin = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        per_bin.append(locality_maps(rows[(c_in >= lo) & (c_in < hi)], shape, method))
    return ConnectionResolvedMaps(
        torch.stack([m.s_sc for m in per_bin]),
        torch.stack([m.s_dc for m in per_bin]),
        edges,
        torch.tensor([m.n_units for m in per_bin], dtype=torch.int64),
        shape,
    )


def _within(height: int, width: int, r: float) -> torch.Tensor:
    if not isinstance(r, (int, float)) or not r >= 0:
        raise ValueError(f"The 'r' parameter must be a number >= 0. Got {r!r}.")
    dy, dx = _displacements(height, width)
    return (dy.square() + dx.square()) <= r * r  # (2H-1, 2W-1) bool


def mass_within_radius(s_map: torch.Tensor, r: float) -> float:
    """Fraction of the mass of ``s_map`` (2H-1, 2W-1), centred, at |d| <= ``r``.

    For S_sc, 1 for r >= sqrt((H-1)^2 + (W-1)^2) and 0 for r < 1 (S_sc(0) = 0);
    nan for an empty map. Compare with :func:`mass_within_radius_null`.
    """
    if s_map.dim() != 2 or s_map.shape[0] % 2 == 0 or s_map.shape[1] % 2 == 0:
        raise ValueError(
            f"The 's_map' parameter must be a (2H-1, 2W-1) map. Got shape {tuple(s_map.shape)}."
        )
    within = _within((s_map.shape[0] + 1) // 2, (s_map.shape[1] + 1) // 2, r)
    total = s_map.sum().item()
    if total == 0:
        return float("nan")
    return s_map[within].sum().item() / total


def mass_within_radius_null(shape: tuple[int, int, int], r: float) -> float:
    """Exact expected :func:`mass_within_radius` of S_sc for random masks (C, H, W).

    Derivation: in a random mask whose units keep C_in(k) inputs chosen uniformly,
    given how many land in each channel the inputs of a channel are a uniform subset
    of its H W pixels, so each of its ordered same-channel pairs is a uniform ordered
    pair of distinct pixels, at displacement d != 0 with probability
    (H - |dy|)(W - |dx|) / (HW (HW - 1)). The total S_sc mass is fixed by the channel
    counts, hence, whatever the C_in and the channel counts (given at least one
    same-channel pair),

        E[fraction] = sum_{0 < |d| <= r} (H - |dy|)(W - |dx|) / (HW (HW - 1)).
    """
    _, height, width = _check_shape(shape, None)
    if height * width < 2:
        return float("nan")
    dy, dx = _displacements(height, width)
    pixel_pairs = (height - dy.abs()) * (width - dx.abs())  # (2H-1, 2W-1)
    pixel_pairs[height - 1, width - 1] = 0  # distinct pixels only
    within = _within(height, width, r)
    return pixel_pairs[within].sum().item() / (height * width * (height * width - 1))
