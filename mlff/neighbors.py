"""Neighbour lists: two backends with one output convention.

Both backends return a *full* list (every pair appears as (i, j) and (j, i)) in the graph
convention of :mod:`mlff.graph`, in :func:`mirror_order` (edge ``k + E/2`` is edge ``k``
reversed):

- ``edge_index`` ``[2, E]`` int64: row 0 is the sender ``j``, row 1 the receiver ``i``;
- ``unit_shifts`` ``[E, 3]`` int64: the cell image of the sender, so that the edge vector is
  ``positions[j] - positions[i] + unit_shifts @ cell`` (Angstrom) and ``|vector| < r_cut``.

Backends:

``"vesin"``
    The fast C++ library `vesin <https://github.com/Luthaf/vesin>`_; used on the ASE and
    training paths (inputs may live on the CPU only; results are moved back to the input's device).
``"torch"``
    :func:`torch_neighbor_list`, pure PyTorch and TorchScript-able, written by hand because a
    deployed model (OpenMM TorchForce) must build its graph inside a TorchScript module without
    extra compiled libraries. It is a sort-based cell list: atoms are wrapped into the cell,
    periodic images within ``r_cut`` of the cell are added explicitly (so cells smaller than
    twice ``r_cut`` work), points are binned on a Cartesian grid with bins no smaller than
    ``r_cut``, and candidates come from the 27 adjacent bins. Cost is O(N log N) from the sort and
    otherwise linear in N; memory is bounded by processing receivers in chunks.

Both handle non-periodic systems, any triclinic cell, mixed periodicity and small cells.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

BACKENDS = ("vesin", "torch")

#: Upper bound on candidate pairs examined at once by the torch backend (memory control).
DEFAULT_MAX_PAIRS_PER_CHUNK = 4_000_000


def _complete_basis(cell: Tensor, pbc: Tensor) -> Tensor:
    """Return a non-degenerate basis whose periodic rows are the cell's periodic rows.

    Non-periodic rows of ``cell`` never generate shifts, but fractional coordinates along the
    periodic directions need a full-rank basis. Non-periodic rows are replaced by orthonormal
    vectors spanning the complement of the periodic rows (the identity when nothing is periodic).

    Args:
        cell: ``[3, 3]`` cell, rows are lattice vectors (A).
        pbc: ``[3]`` bool.

    Returns:
        ``[3, 3]`` basis, same dtype and device as ``cell``.
    """
    n_periodic = int(pbc.sum().item())
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    if n_periodic == 3:
        return cell
    if n_periodic == 0:
        return eye
    periodic_dims: List[int] = []
    free_dims: List[int] = []
    for d in range(3):
        if bool(pbc[d]):
            periodic_dims.append(d)
        else:
            free_dims.append(d)
    rows: List[Tensor] = [cell[0], cell[1], cell[2]]
    if n_periodic == 2:
        normal = torch.linalg.cross(cell[periodic_dims[0]], cell[periodic_dims[1]])
        rows[free_dims[0]] = normal / torch.linalg.norm(normal)
    else:
        a = cell[periodic_dims[0]]
        u = a / torch.linalg.norm(a)
        helper = eye[int(torch.argmin(torch.abs(u)).item())]
        v1 = torch.linalg.cross(u, helper)
        v1 = v1 / torch.linalg.norm(v1)
        v2 = torch.linalg.cross(u, v1)
        rows[free_dims[0]] = v1
        rows[free_dims[1]] = v2
    return torch.stack(rows, dim=0)


def torch_neighbor_list(
    positions: Tensor,
    r_cut: float,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    max_pairs_per_chunk: int = DEFAULT_MAX_PAIRS_PER_CHUNK,
    half: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Full neighbour list of one structure in pure PyTorch (TorchScript-able, CPU or CUDA).

    Args:
        positions: ``[N, 3]`` Cartesian positions (A), float32 or float64.
        r_cut: pairs with distance strictly below this (A) are returned.
        cell: ``[3, 3]`` cell with lattice vectors as rows (A); may be zero or ``None`` when
            nothing is periodic.
        pbc: ``[3]`` bool periodicity flags; ``None`` means non-periodic.
        max_pairs_per_chunk: bound on candidate pairs held in memory at once.
        half: return each pair once instead (the direction with sender < receiver; for an
            atom and its own image, the image with the lexicographically positive shift), in
            no particular order: for pair sums that need no per-edge mirror (:mod:`mlff.nn.dispersion`).

    Returns:
        ``edge_index`` ``[2, E]`` int64 (row 0 sender j, row 1 receiver i) and
        ``unit_shifts`` ``[E, 3]`` int64, with ``positions[j] - positions[i] + unit_shifts @ cell``
        the edge vector.
    """
    device = positions.device
    dtype = positions.dtype
    n_atoms = positions.shape[0]
    if cell is None:
        cell_ = torch.zeros(3, 3, dtype=dtype, device=device)
    else:
        cell_ = cell.to(dtype=dtype, device=device)
    if pbc is None:
        pbc_ = torch.zeros(3, dtype=torch.bool, device=device)
    else:
        pbc_ = pbc.to(dtype=torch.bool, device=device)
    if n_atoms == 0:
        return (
            torch.zeros(2, 0, dtype=torch.long, device=device),
            torch.zeros(0, 3, dtype=torch.long, device=device),
        )

    basis = _complete_basis(cell_, pbc_)
    inv_basis = torch.linalg.inv(basis)
    pbc_f = pbc_.to(dtype)

    # Wrap periodic fractional coordinates into [0, 1); remember the integer wrap.
    frac = positions @ inv_basis
    wrap = torch.floor(frac) * pbc_f  # [N, 3]
    frac_wrapped = frac - wrap

    # Halo thickness in fractional units: r_cut / (distance between opposite faces).
    recip_norm = torch.linalg.norm(inv_basis, dim=0)  # [3], |reciprocal vector k|
    margin = 1e-6
    halo = (r_cut * recip_norm + margin) * pbc_f
    n_img = torch.ceil(halo).to(torch.long)

    rx = torch.arange(-int(n_img[0]), int(n_img[0]) + 1, device=device)
    ry = torch.arange(-int(n_img[1]), int(n_img[1]) + 1, device=device)
    rz = torch.arange(-int(n_img[2]), int(n_img[2]) + 1, device=device)
    gx, gy, gz = torch.meshgrid(rx, ry, rz, indexing="ij")
    image_shifts = torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], dim=1)  # [K, 3]

    # Candidate image points: every atom under every image shift, kept if inside the halo.
    frac_img = frac_wrapped.unsqueeze(0) + image_shifts.to(dtype).unsqueeze(1)  # [K, N, 3]
    inside = ((frac_img >= -halo) & (frac_img < 1.0 + halo)) | ~pbc_
    keep = inside.all(dim=2)  # [K, N]
    nz = torch.nonzero(keep)
    img_k = nz[:, 0]
    img_atom = nz[:, 1]
    # Integer shift of each extended point relative to the *unwrapped* atom.
    point_unit = image_shifts[img_k] - wrap[img_atom].to(torch.long)  # [P, 3]
    point_pos = positions[img_atom] + point_unit.to(dtype) @ cell_  # [P, 3]
    recv_unit = -wrap.to(torch.long)  # wrapped receivers
    recv_pos = positions + recv_unit.to(dtype) @ cell_

    # Cartesian bins no smaller than r_cut.
    lo = torch.minimum(point_pos.min(dim=0).values, recv_pos.min(dim=0).values)
    hi = torch.maximum(point_pos.max(dim=0).values, recv_pos.max(dim=0).values)
    extent = hi - lo
    n_bins = torch.clamp(torch.floor(extent / (r_cut * (1.0 + 1e-6))), min=1.0).to(torch.long)
    bin_size = torch.clamp(extent / n_bins.to(dtype), min=r_cut)
    strides = torch.stack([n_bins[1] * n_bins[2], n_bins[2], torch.ones_like(n_bins[2])])

    point_bin3 = torch.minimum(torch.floor((point_pos - lo) / bin_size).to(torch.long), n_bins - 1)
    point_bin = (point_bin3 * strides).sum(dim=1)
    order = torch.argsort(point_bin)
    sorted_bins = point_bin[order]
    recv_bin3 = torch.minimum(torch.floor((recv_pos - lo) / bin_size).to(torch.long), n_bins - 1)

    offsets = torch.stack(
        torch.meshgrid(
            torch.arange(-1, 2, device=device),
            torch.arange(-1, 2, device=device),
            torch.arange(-1, 2, device=device),
            indexing="ij",
        ),
        dim=-1,
    ).reshape(27, 3)
    r_cut2 = r_cut * r_cut

    # Per receiver: the 27 neighbouring bins, their ranges in the sorted order.
    nb3 = recv_bin3.unsqueeze(1) + offsets.unsqueeze(0)  # [N, 27, 3]
    valid = ((nb3 >= 0) & (nb3 < n_bins)).all(dim=2)
    nb_id = (nb3 * strides).sum(dim=2)
    start = torch.searchsorted(sorted_bins, nb_id, right=False)
    end = torch.searchsorted(sorted_bins, nb_id, right=True)
    counts = torch.where(valid, end - start, torch.zeros_like(start))  # [N, 27]
    per_receiver = counts.sum(dim=1)

    # Candidate distances come straight from the Cartesian image points (one gather and one
    # subtraction per candidate); integer shifts are formed only for the pairs that are kept.
    sorted_pos = point_pos[order]
    senders: List[Tensor] = []
    receivers: List[Tensor] = []
    units: List[Tensor] = []
    # Chunk receivers so that each chunk examines at most ~max_pairs_per_chunk candidates.
    mean_count = max(1, int(per_receiver.float().mean().item()) + 1)
    chunk = max(1, max_pairs_per_chunk // mean_count)
    for c0 in range(0, n_atoms, chunk):
        c1 = min(n_atoms, c0 + chunk)
        cnt = counts[c0:c1].reshape(-1)
        st = start[c0:c1].reshape(-1)
        total = int(cnt.sum().item())
        if total == 0:
            continue
        run = torch.repeat_interleave(torch.arange(cnt.shape[0], device=device), cnt, output_size=total)
        first = torch.cumsum(cnt, 0) - cnt
        sorted_point = (st - first)[run] + torch.arange(total, device=device)
        recv = torch.div(run, 27, rounding_mode="floor") + c0
        vec = sorted_pos[sorted_point] - recv_pos[recv]
        d2 = (vec * vec).sum(dim=1)
        keep_pair = d2 < r_cut2
        sorted_point = sorted_point[keep_pair]
        recv = recv[keep_pair]
        point = order[sorted_point]
        send = img_atom[point]
        unit = point_unit[point] - recv_unit[recv]
        not_self = (send != recv) | (unit != 0).any(dim=1)
        if half:
            positive = (unit[:, 0] > 0) | ((unit[:, 0] == 0) & ((unit[:, 1] > 0) | ((unit[:, 1] == 0) & (unit[:, 2] > 0))))
            not_self = not_self & ((send < recv) | ((send == recv) & positive))
        senders.append(send[not_self])
        receivers.append(recv[not_self])
        units.append(unit[not_self])

    if len(senders) == 0:
        return (
            torch.zeros(2, 0, dtype=torch.long, device=device),
            torch.zeros(0, 3, dtype=torch.long, device=device),
        )
    edge_index = torch.stack([torch.cat(senders), torch.cat(receivers)], dim=0)
    if half:
        return edge_index, torch.cat(units, dim=0)
    return mirror_order(edge_index, torch.cat(units, dim=0))


def mirror_order(edge_index: Tensor, unit_shifts: Tensor) -> Tuple[Tensor, Tensor]:
    """Reorder a full neighbour list so that edge ``k + E/2`` is the reverse of edge ``k``
    (sender and receiver swapped, unit shifts negated).

    The first half holds each pair once, in its canonical direction (sender < receiver, or a
    periodic self-image whose first non-zero unit shift is positive); the second half is built
    from it, so the list is exactly symmetric. Models use this to evaluate functions of the
    distance alone (radial networks) once per pair (:func:`mirrored_half`).
    """
    send, recv = edge_index[0], edge_index[1]
    s = unit_shifts
    positive = (s[:, 0] > 0) | ((s[:, 0] == 0) & (s[:, 1] > 0)) | ((s[:, 0] == 0) & (s[:, 1] == 0) & (s[:, 2] > 0))
    keep = (send < recv) | ((send == recv) & positive)
    half = edge_index[:, keep]
    half_shifts = s[keep]
    return torch.cat([half, half.flip(0)], dim=1), torch.cat([half_shifts, -half_shifts], dim=0)


#: set by :func:`assume_mirror_order` (a list, so that the flag is mutable module state)
_ASSUME_MIRROR_ORDER: List[bool] = [False]


@contextmanager
def assume_mirror_order() -> Iterator[None]:
    """Within the block :func:`mirrored_half` returns ``E/2`` without looking at the data: for
    tracing a model into a program with a symbolic edge count (:mod:`mlff.export`), whose
    caller checks the mirror order of its edges instead. Eager Python only."""
    _ASSUME_MIRROR_ORDER[0] = True
    try:
        yield
    finally:
        _ASSUME_MIRROR_ORDER[0] = False


def mirrored_half(edge_index: Tensor, vectors: Tensor) -> int:
    """``E/2`` when the edges are in :func:`mirror_order` (edge ``k + E/2`` is edge ``k``
    reversed, with its vector negated exactly), else 0. ``vectors``: ``[..., E, 3]``.

    A cheap exact test (no tolerance), so a model may compute distance-only features for the
    first half and reuse them for the second: the distances are bitwise equal, and the two
    are the same function of the positions, so gradients through the first half are the
    gradients of both.
    """
    n = edge_index.shape[1]
    half = n // 2
    if not torch.jit.is_scripting():
        if _ASSUME_MIRROR_ORDER[0]:
            return half
    if n == 0 or n % 2 != 0:
        return 0
    if not bool(torch.equal(edge_index[0, half:], edge_index[1, :half])):
        return 0
    if not bool(torch.equal(edge_index[1, half:], edge_index[0, :half])):
        return 0
    if not bool(torch.equal(vectors.narrow(-2, half, half), -vectors.narrow(-2, 0, half))):
        return 0
    return half


def per_pair(values: Tensor, half: int) -> Tensor:
    """Distance-only edge features computed for the first ``half`` edges ``[M, H, F]`` ->
    all edges ``[M, 2H, F]`` (edges in :func:`mirror_order`; ``half`` 0: the
    features were computed for every edge and are returned as they are)."""
    return torch.cat([values, values], dim=1) if half > 0 else values


def first_half(values: Tensor, half: int) -> Tensor:
    """``[M, E, F]`` -> the first ``half`` edges ``[M, H, F]`` (all of them when ``half`` is 0)."""
    return values.narrow(1, 0, half) if half > 0 else values


def vesin_neighbor_list(
    positions: Tensor,
    r_cut: float,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    half: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Full neighbour list of one structure through vesin (C++); same contract as
    :func:`torch_neighbor_list` (``half``: each pair once, in vesin's order and orientation).
    Computed in float64 on the CPU; results on the input's device."""
    import vesin

    device = positions.device
    pos = positions.detach().cpu().to(torch.float64).numpy()
    box = np.zeros((3, 3)) if cell is None else cell.detach().cpu().to(torch.float64).numpy()
    periodic = [False, False, False] if pbc is None else [bool(p) for p in pbc.cpu().tolist()]
    if len(pos) == 0:
        return (
            torch.zeros(2, 0, dtype=torch.long, device=device),
            torch.zeros(0, 3, dtype=torch.long, device=device),
        )
    calculator = vesin.NeighborList(cutoff=float(r_cut), full_list=not half)
    i, j, s = calculator.compute(points=pos, box=box, periodic=periodic, quantities="ijS")
    edge_index = torch.from_numpy(np.stack([j, i]).astype(np.int64)).to(device)
    unit_shifts = torch.from_numpy(np.asarray(s, dtype=np.int64)).to(device)
    if half:
        return edge_index, unit_shifts
    return mirror_order(edge_index, unit_shifts)


def neighbor_list(
    positions: Tensor,
    r_cut: float,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    backend: str = "vesin",
) -> Tuple[Tensor, Tensor]:
    """Full neighbour list of one structure with the chosen backend ("vesin" or "torch").

    See :func:`torch_neighbor_list` for shapes and conventions.
    """
    if not r_cut > 0:
        raise ValueError(f"r_cut must be positive, got {r_cut}")
    if backend == "vesin":
        return vesin_neighbor_list(positions, r_cut, cell, pbc)
    if backend == "torch":
        return torch_neighbor_list(positions, r_cut, cell, pbc)
    raise ValueError(f"unknown neighbour-list backend {backend!r}; valid backends: {BACKENDS}")

