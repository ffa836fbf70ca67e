"""Translational invariance of first-layer units: shifted copies of one pattern.

A convolution applies one filter at every position; a pruned FCN that learned
convolution-like structure should hold units whose masks are the same pattern at
different positions, with similar weights on it, and whose responses ignore the
class. Three measurements:

- :func:`pairwise_shift_similarity` compares unit images (C, H, W) up to a 2-D
  shift: the maximal normalised cross-correlation over every shift (dy, dx) in
  (-H+1..H-1) x (-W+1..W-1), channels moved together, zero padding (a pattern cut
  by the border loses what is cut). :func:`cluster_by_shift` groups units whose
  similarity reaches a threshold.
- :func:`translational_invariance` does both on a layer's connected units and
  reports, per cluster of two or more, where the members sit and how similar their
  weights are once aligned by the masks' best shift, each beside a null.
- (:func:`imprint.analysis.response.class_response` measures how much of a unit's
  activation the class explains.)

Shift convention, used throughout: ``shift[i, j] = (dy, dx)`` maximises
``sum_{c,y,x} a_i[c, y, x] a_j[c, y - dy, x - dx]``, i.e. moving image j by
(dy, dx) lands it on image i: position_i ~ position_j + (dy, dx).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "ShiftCluster",
    "TranslationalInvariance",
    "cluster_by_shift",
    "pairwise_shift_similarity",
    "shift_similarity",
    "translational_invariance",
]

# Shifts whose similarity is within TIE_TOLERANCE of the maximum count as tied (FFT
# round-off is ~1e-15 in float64; exact ties are common with binary masks). Among
# tied shifts the smallest |dy| + |dx| wins, then the smaller dy, then the smaller
# dx, so the argmax does not depend on round-off and is the same in the loop twin.
TIE_TOLERANCE = 1e-9
# Elements of one (rows, n, 2H-1, 2W-1) block of correlation maps when the chunk
# size is automatic: 16 MiB of float64 maps (plus the complex product). Larger
# blocks measured slower on CPU (cache and fresh-page costs), not faster.
_CHUNK_ELEMENTS = 2**21


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(
            f"The 'shape' parameter must be (C, H, W) with positive sizes. Got {tuple(shape)}."
        )
    channels, height, width = (int(s) for s in shape)
    return channels, height, width


def _offsets(size: int) -> torch.Tensor:
    """Shift held at each index of a length-(2 size - 1) FFT axis: 0..size-1, then -size+1..-1."""
    return torch.cat([torch.arange(size), torch.arange(-size + 1, 0)])


def _shift_priority(height: int, width: int) -> torch.Tensor:
    """Tie-break rank of every shift, laid out like a correlation map: (2H-1, 2W-1) long.

    Entry [dy mod (2H-1), dx mod (2W-1)] is the rank of (dy, dx) in the order
    (|dy| + |dx|, dy, dx); rank 0 is the zero shift.
    """
    dy, dx = torch.meshgrid(_offsets(height), _offsets(width), indexing="ij")  # (2H-1, 2W-1)
    dy, dx = dy.flatten(), dx.flatten()
    # lexicographic key: offset components lie in [0, 4K) for K = max(H, W)
    offset = 2 * max(height, width)
    base = 2 * offset
    key = ((dy.abs() + dx.abs()) * base + dy + offset) * base + dx + offset
    rank = torch.empty_like(key)
    rank[torch.argsort(key)] = torch.arange(key.numel())
    return rank.reshape(2 * height - 1, 2 * width - 1)


def _spectra(images: torch.Tensor) -> torch.Tensor:
    """Zero-padded 2-D spectra: (n, C, H, W) -> (n, C, 2H-1, W) complex128.

    Padding to 2H-1 x 2W-1 makes the circular correlation equal the linear one for
    every shift in (-H+1..H-1) x (-W+1..W-1): no wrap-around.
    """
    height, width = images.shape[-2:]
    return torch.fft.rfft2(images.double(), s=(2 * height - 1, 2 * width - 1))


def _correlation_maps(
    left: torch.Tensor, right: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Cross-correlation maps of every (left, right) pair from their spectra.

    left (k, C, 2H-1, W), right (n, C, 2H-1, W) -> (k, n, 2H-1, 2W-1) float64 in FFT
    layout: out[i, j, dy mod (2H-1), dx mod (2W-1)] =
    sum_{c,y,x} a_i[c, y, x] a_j[c, y - dy, x - dx]. (Kept unrolled: rolling the
    maps costs as much as the inverse FFT.)
    """
    # sum over channels inside the product: channels move together, never against
    # each other (a loop over C: faster than einsum's batched matmul with tiny C)
    conj = right.conj()
    product = left[:, None, 0] * conj[None, :, 0]  # (k, n, 2H-1, W)
    for channel in range(1, left.shape[1]):
        product += left[:, None, channel] * conj[None, :, channel]
    return torch.fft.irfft2(product, s=(2 * height - 1, 2 * width - 1))


def _map_index(shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat FFT-layout index of shifts (..., 2) in a (2H-1, 2W-1) map: (...) long."""
    rows, cols = 2 * height - 1, 2 * width - 1
    return (shift[..., 0] % rows) * cols + shift[..., 1] % cols


def _row_chunks(n_rows: int, n_cols: int, map_size: int, chunk_size: int | None) -> Iterator[slice]:
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, n_cols * map_size))
    for start in range(0, n_rows, chunk_size):
        yield slice(start, min(start + chunk_size, n_rows))


def _best_shift(
    maps: torch.Tensor, priority: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum of normalised FFT-layout maps (..., 2H-1, 2W-1) and its shift.

    Ties (within ``TIE_TOLERANCE``) go to the lowest ``priority``. Returns the
    maximum (...) and the shift (..., 2) long as (dy, dx).
    """
    flat = maps.flatten(-2)  # (..., M)
    best = flat.max(-1).values  # (...)
    tied = flat >= (best - TIE_TOLERANCE).unsqueeze(-1)  # (..., M)
    rank = priority.flatten().to(flat.device)  # (M,)
    key = torch.where(tied, rank, torch.full_like(rank, rank.numel()))  # (..., M)
    index = key.argmin(-1)  # (...)
    cols = 2 * width - 1
    dy = _offsets(height).to(index.device)[index // cols]
    dx = _offsets(width).to(index.device)[index % cols]
    return best, torch.stack([dy, dx], dim=-1)


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.dim() != 4 or min(images.shape[1:], default=0) < 1:
        raise ValueError(
            f"The '{name}' parameter must be a (n, C, H, W) tensor with C, H, W >= 1. "
            f"Got shape {tuple(images.shape)}."
        )


def pairwise_shift_similarity(
    images: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximal normalised cross-correlation over 2-D shifts for every pair of images.

    images (n, C, H, W), binary masks or real weighted masks (any real dtype).
    Returns similarity (n, n) float64 and shift (n, n, 2) long, where

        similarity[i, j] = max over (dy, dx) of
            sum_{c,y,x} a_i[c, y, x] a_j[c, y - dy, x - dx] / (||a_i|| ||a_j||)

    over (-H+1..H-1) x (-W+1..W-1), channels aligned, zero padding, and for i <= j
    shift[i, j] = (dy, dx) is the argmax (ties within ``TIE_TOLERANCE``: smallest
    |dy| + |dx|, then smallest dy, then smallest dx); for i > j,
    shift[i, j] = -shift[j, i] exactly, and similarity is symmetric. The value is 1
    for identical patterns at any two positions that the border cuts in neither,
    and at most 1 (Cauchy-Schwarz). It is signed for real images (negative when
    every overlap anticorrelates).

    An empty (all-zero) image has no direction: its similarity with every image,
    itself included, is defined as 0 with shift (0, 0); it never produces NaN.

    Computed with zero-padded FFTs in float64 over the upper triangle,
    ``chunk_size`` rows at a time (None: rows such that one block of maps holds
    about 2**21 numbers, 16 MiB). Cost O(n^2 C H W log(HW)).
    """
    _check_images(images, "images")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"The 'chunk_size' parameter must be >= 1 or None. Got {chunk_size}.")
    n, _, height, width = images.shape
    x = images.double()  # (n, C, H, W)
    similarity = torch.zeros((n, n), dtype=torch.float64, device=x.device)
    shift = torch.zeros((n, n, 2), dtype=torch.long, device=x.device)
    if n == 0:
        return similarity, shift
    norms = x.flatten(1).norm(dim=1)  # (n,)
    # an empty image has all-zero maps: dividing by 1 keeps them 0, so its best
    # shift is the top-priority one, (0, 0)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    spectra = _spectra(x)  # (n, C, 2H-1, W)
    priority = _shift_priority(height, width)  # (2H-1, 2W-1)
    map_size = (2 * height - 1) * (2 * width - 1)
    for rows in _row_chunks(n, n, map_size, chunk_size):
        cols = slice(rows.start, n)  # the upper triangle and the diagonal block
        maps = _correlation_maps(spectra[rows], spectra[cols], height, width)  # (k, m, U, V)
        maps /= (norms[rows, None] * norms[None, cols])[..., None, None]
        similarity[rows, cols], shift[rows, cols] = _best_shift(maps, priority, height, width)
    lower = torch.ones((n, n), dtype=torch.bool, device=x.device).tril(-1)  # (n, n)
    similarity[lower] = similarity.T[lower]
    shift[lower] = -shift.transpose(0, 1)[lower]
    return similarity, shift


def shift_similarity(
    a: torch.Tensor, b: torch.Tensor, shape: Sequence[int]
) -> tuple[float, tuple[int, int]]:
    """Shift similarity of two unit images and the shift that attains it.

    ``a`` and ``b`` hold C*H*W numbers each, as (C, H, W) images or flattened
    channel-major rows (D,) of a mask or weight matrix; ``shape`` is (C, H, W).
    Returns (similarity, (dy, dx)) as :func:`pairwise_shift_similarity` defines
    them for the pair (a, b): moving b by (dy, dx) lands it on a.
    """
    channels, height, width = _check_shape(shape)
    for name, value in (("a", a), ("b", b)):
        if value.numel() != channels * height * width:
            raise ValueError(
                f"The '{name}' parameter must hold C*H*W = {channels * height * width} "
                f"numbers for shape {(channels, height, width)}. Got {value.numel()}."
            )
    images = torch.stack([a.reshape(shape), b.reshape(shape)])  # (2, C, H, W)
    similarity, shift = pairwise_shift_similarity(images)
    return float(similarity[0, 1]), (int(shift[0, 1, 0]), int(shift[0, 1, 1]))


def cluster_by_shift(similarity: torch.Tensor, threshold: float) -> list[list[int]]:
    """Single-linkage clusters: connected components of similarity >= ``threshold``.

    similarity (n, n); a pair is linked when similarity[i, j] or similarity[j, i]
    reaches ``threshold`` (in (0, 1]), so the diagonal and empty units (similarity
    0) never link anything. Single linkage can chain (A ~ B ~ C with A !~ C); it is
    chosen because it is parameter-free beyond the threshold and deterministic.

    Returns every unit in exactly one cluster, singletons included: lists of
    indices in ascending order, largest cluster first, ties by smallest member.
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(
            f"The 'similarity' parameter must be a square (n, n) tensor. "
            f"Got shape {tuple(similarity.shape)}."
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"The 'threshold' parameter must be in (0, 1]. Got {threshold}.")
    n = similarity.shape[0]
    linked = (similarity >= threshold) | (similarity.T >= threshold)  # (n, n)
    linked.fill_diagonal_(False)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in linked.nonzero().tolist():
        neighbours[i].append(j)
    seen = [False] * n
    clusters = []
    for start in range(n):
        if seen[start]:
            continue
        seen[start] = True
        stack, members = [start], []
        while stack:
            i = stack.pop()
            members.append(i)
            for j in neighbours[i]:
                if not seen[j]:
                    seen[j] = True
                    stack.append(j)
        clusters.append(sorted(members))
    clusters.sort(key=lambda c: (-len(c), c[0]))
    return clusters


@dataclass(frozen=True)
class ShiftCluster:
    members: tuple[int, ...]  # unit indices (rows of the mask), ascending
    positions: tuple[tuple[float, float], ...]  # mask centroid (y, x) of each member
    n_positions: int  # distinct centroids after rounding to the nearest pixel
    spread: float  # RMS distance (pixels) of the centroids from their mean
    weight_similarity: float  # mean over member pairs of aligned weight correlation
    weight_similarity_null: float  # the same with weights shuffled within each mask


@dataclass(frozen=True)
class TranslationalInvariance:
    units: tuple[int, ...]  # the analysed units: as given, or most connected first
    threshold: float  # similarity at which two masks are linked
    clusters: tuple[ShiftCluster, ...]  # clusters of >= 2 members, largest first
    fraction_shifted: float  # analysed units in a cluster covering >= 2 positions
    null_fraction_shifted: float  # the same for random masks with equal C_in
    mean_best_similarity: float  # mean over units of the best match to another unit
    null_mean_best_similarity: float  # the same for the random masks
    weight_similarity: float  # aligned weight correlation pooled over clustered pairs
    weight_similarity_null: float  # the same with weights shuffled within each mask


def _centroids(images: torch.Tensor) -> torch.Tensor:
    """Mean (y, x) of the connected inputs of each image: (n, C, H, W) bool -> (n, 2).

    NaN for an empty image.
    """
    _, _, height, width = images.shape
    ys = torch.arange(height, dtype=torch.float64, device=images.device)
    xs = torch.arange(width, dtype=torch.float64, device=images.device)
    per_pixel = images.double().sum(1)  # (n, H, W): connected channels per pixel
    total = per_pixel.sum((1, 2))  # (n,)
    y = (per_pixel.sum(2) @ ys) / total  # (n,)
    x = (per_pixel.sum(1) @ xs) / total  # (n,)
    return torch.stack([y, x], dim=1)


def _aligned_pair_similarity(
    images: torch.Tensor, shift: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """Normalised correlation of every pair of ``images`` at the given shifts.

    images (m, C, H, W), shift (m, m, 2) -> (m, m) float64 (0 where an image is empty).
    """
    m, _, height, width = images.shape
    x = images.double()
    norms = x.flatten(1).norm(dim=1)  # (m,)
    spectra = _spectra(x)  # (m, C, 2H-1, W)
    out = torch.zeros((m, m), dtype=torch.float64, device=x.device)
    index = _map_index(shift, height, width)  # (m, m)
    map_size = (2 * height - 1) * (2 * width - 1)
    for rows in _row_chunks(m, m, map_size, chunk_size):
        maps = _correlation_maps(spectra[rows], spectra, height, width).flatten(-2)  # (k, m, M)
        out[rows] = maps.gather(-1, index[rows].unsqueeze(-1)).squeeze(-1)
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, out / torch.where(denom > 0, denom, 1.0), 0.0)


def _shuffle_within_mask(
    weighted: torch.Tensor, binary: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Permute each row's values among its connected inputs: (n, D) -> (n, D)."""
    out = torch.zeros_like(weighted)
    for row in range(weighted.shape[0]):
        support = binary[row].nonzero().flatten()
        order = torch.randperm(support.numel(), generator=gen).to(support.device)
        out[row, support] = weighted[row, support[order]]
    return out


def _random_masks(cin: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Uniformly random masks with cin[k] inputs in row k: (n,) -> (n, D) bool."""
    order = torch.rand((cin.numel(), dim), generator=gen).argsort(dim=1)  # (n, D)
    keep = torch.arange(dim)[None, :] < cin.cpu()[:, None]  # (n, D): first cin[k] ranks
    out = torch.zeros((cin.numel(), dim), dtype=torch.bool)
    out.scatter_(1, order, keep)
    return out.to(cin.device)


def _cluster_geometry(
    binary: torch.Tensor, threshold: float, chunk_size: int | None
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Shift-similarity, clusters and centroids of binary unit images (n, C, H, W).

    Returns the multi-member clusters (local indices), shift (n, n, 2), centroids
    (n, 2), the number of distinct rounded positions per cluster in a (n_clusters,)
    tensor, and the mean over units of the best similarity to another unit.
    """
    n = binary.shape[0]
    similarity, shift = pairwise_shift_similarity(binary, chunk_size)  # (n, n), (n, n, 2)
    clusters = [c for c in cluster_by_shift(similarity, threshold) if len(c) >= 2]
    centroids = _centroids(binary)  # (n, 2)
    n_positions = torch.tensor(
        [torch.unique(centroids[c].round(), dim=0).shape[0] for c in clusters], dtype=torch.long
    )
    if n >= 2:
        off_diagonal = similarity.masked_fill(
            torch.eye(n, dtype=torch.bool, device=similarity.device), float("-inf")
        )
        mean_best = off_diagonal.max(1).values.mean().item()
    else:
        mean_best = float("nan")
    return clusters, shift, centroids, n_positions, mean_best


def _fraction_shifted(clusters: list[list[int]], n_positions: torch.Tensor, n: int) -> float:
    if n == 0:
        return float("nan")
    shifted = sum(len(c) for c, k in zip(clusters, n_positions.tolist()) if k >= 2)
    return shifted / n


def _select_units(
    binary: torch.Tensor, units: Sequence[int] | None, min_cin: int, max_units: int
) -> list[int]:
    cin = binary.sum(1)  # (units,)
    if units is not None:
        chosen = [int(u) for u in units]
        bad = [u for u in chosen if not 0 <= u < binary.shape[0]]
        if bad or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"The 'units' parameter must hold distinct indices in [0, {binary.shape[0]}). "
                f"Got {list(units)}."
            )
        return chosen
    # most connected first, ties by lower index (stable sort)
    order = torch.argsort(-cin, stable=True)
    order = order[cin[order] >= min_cin]
    return order[:max_units].tolist()


def translational_invariance(
    mask: torch.Tensor,
    weights: torch.Tensor,
    shape: Sequence[int],
    units: Sequence[int] | None = None,
    threshold: float = 0.9,
    min_cin: int = 2,
    max_units: int = 256,
    seed: int = 0,
    chunk_size: int | None = None,
) -> TranslationalInvariance:
    """Do units carry the same mask pattern at different positions, with the same weights?

    ``mask`` (units, D) with D = C*H*W channel-major, bool or integer path counts
    (an effective mask; nonzero = connected); ``weights`` (units, D) the matching
    weights (first layer: the Linear weight; deeper: aggregated weights), used only
    on the mask's support. ``shape`` is (C, H, W).

    Units analysed: ``units`` if given (as given, in that order, no C_in filter),
    else the units with C_in >= ``min_cin``,
    the ``max_units`` most connected (ties: lower index) -- pairwise comparison costs
    O(n^2 H W log(HW)). Their binary masks are compared with
    :func:`pairwise_shift_similarity` and clustered with :func:`cluster_by_shift` at
    ``threshold``. For each cluster of >= 2 members the result gives the members'
    mask centroids, the number of distinct positions (centroids rounded to the
    nearest pixel), their RMS spread, and the weight similarity: for each member
    pair (i, j) the normalised correlation of the weighted masks W*M at the masks'
    best shift (i, j), averaged over pairs.

    Nulls, from ``torch.Generator().manual_seed(seed)``:
    - ``null_fraction_shifted``, ``null_mean_best_similarity``: the same analysis on
      uniformly random masks with each analysed unit's C_in (random masks rarely
      match up to a shift unless dense);
    - ``weight_similarity_null``: each unit's weights permuted at random among its
      own connected inputs, same pairs and shifts (keeps the masks and each unit's
      weight distribution, destroys which weight sits where).

    Means over empty sets (no analysed unit, no cluster) are NaN.
    """
    channels, height, width = _check_shape(shape)
    dim = channels * height * width
    if mask.dim() != 2 or mask.shape[1] != dim:
        raise ValueError(
            f"The 'mask' parameter must be (units, C*H*W) = (units, {dim}) for shape "
            f"{(channels, height, width)}. Got shape {tuple(mask.shape)}."
        )
    if tuple(weights.shape) != tuple(mask.shape):
        raise ValueError(
            f"The 'weights' parameter must have the mask's shape {tuple(mask.shape)}. "
            f"Got {tuple(weights.shape)}."
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"The 'threshold' parameter must be in (0, 1]. Got {threshold}.")
    if min_cin < 1:
        raise ValueError(f"The 'min_cin' parameter must be >= 1. Got {min_cin}.")
    if max_units < 1:
        raise ValueError(f"The 'max_units' parameter must be >= 1. Got {max_units}.")

    binary = mask != 0  # (units, D)
    chosen = _select_units(binary, units, min_cin, max_units)
    n = len(chosen)
    index = torch.tensor(chosen, dtype=torch.long, device=mask.device)
    unit_masks = binary[index]  # (n, D)
    weighted = weights[index].double() * unit_masks  # (n, D)
    image_shape = (n, channels, height, width)
    gen = torch.Generator().manual_seed(seed)

    clusters, shift, centroids, n_positions, mean_best = _cluster_geometry(
        unit_masks.reshape(image_shape), threshold, chunk_size
    )
    shuffled = _shuffle_within_mask(weighted, unit_masks, gen)  # (n, D)

    found, pair_sums, null_sums, n_pairs = [], 0.0, 0.0, 0
    for members, k in zip(clusters, n_positions.tolist()):
        local = torch.tensor(members, dtype=torch.long, device=mask.device)
        m = len(members)
        pair_shift = shift[local][:, local]  # (m, m, 2)
        upper = torch.ones((m, m), dtype=torch.bool, device=mask.device).triu(1)
        actual = _aligned_pair_similarity(
            weighted[local].reshape(-1, channels, height, width), pair_shift, chunk_size
        )[upper]
        null = _aligned_pair_similarity(
            shuffled[local].reshape(-1, channels, height, width), pair_shift, chunk_size
        )[upper]
        pair_sums += actual.sum().item()
        null_sums += null.sum().item()
        n_pairs += actual.numel()
        points = centroids[local]  # (m, 2)
        spread = (points - points.mean(0)).pow(2).sum(1).mean().sqrt().item()
        found.append(
            ShiftCluster(
                members=tuple(chosen[i] for i in members),
                positions=tuple((float(y), float(x)) for y, x in points.tolist()),
                n_positions=k,
                spread=spread,
                weight_similarity=actual.mean().item(),
                weight_similarity_null=null.mean().item(),
            )
        )

    cin = unit_masks.sum(1)  # (n,)
    random = _random_masks(cin, dim, gen).reshape(image_shape)
    null_clusters, _, _, null_positions, null_best = _cluster_geometry(
        random, threshold, chunk_size
    )
    return TranslationalInvariance(
        units=tuple(chosen),
        threshold=float(threshold),
        clusters=tuple(found),
        fraction_shifted=_fraction_shifted(clusters, n_positions, n),
        null_fraction_shifted=_fraction_shifted(null_clusters, null_positions, n),
        mean_best_similarity=mean_best,
        null_mean_best_similarity=null_best,
        weight_similarity=pair_sums / n_pairs if n_pairs else float("nan"),
        weight_similarity_null=null_sums / n_pairs if n_pairs else float("nan"),
    )
