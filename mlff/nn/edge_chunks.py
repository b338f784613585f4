"""Bounded-memory evaluation: per-edge and per-atom work in chunks, recomputed in the backward pass.

A message-passing block computes per-edge tensors (radial MLP activations, gathered sender
features, tensor-product pieces) and sums them onto the receiving atoms. autograd keeps every
per-edge intermediate of every layer until the backward pass, so the peak memory of an
energy + forces call grows as edges x channels x irreps x layers: a 12,288-atom water box
needs more than 24 GB. :func:`chunked_edge_sum` evaluates a block's per-edge function on slices
of the edges, each under non-reentrant :func:`torch.utils.checkpoint.checkpoint`: a slice keeps
only its inputs, and the backward pass recomputes the slice's forward when it needs it. Peak
memory is then one slice's working set plus the per-atom features; the results are the
unchunked ones up to the order of the floating-point sums (tests: 1e-12 in float64).
Second derivatives (training on forces) go through the checkpoints too, but a force loss keeps
the recomputed slices alive for its own backward pass, so training memory is not bounded.

The same holds per atom: everything of a MACE layer after its message sums (basis, symmetric
contraction, linears, skip, readout) is independent from atom to atom and keeps hundreds of KB
per atom for the backward pass (the contraction alone 330 KB per water atom at correlation 3),
so :func:`chunked_atoms` evaluates it on slices of atoms the same way.

Edge chunks are ranges of receiving atoms (:func:`receiver_chunks`), so each chunk's sums fill
its own rows and the rows are concatenated: linear in the atoms. They are not in mirror order,
so chunked models compute distance features per edge, not once per pair.

Eager only: TorchScript cannot script ``checkpoint``, so models call this from a
``@torch.jit.unused`` method behind ``torch.jit.is_scripting()``; a scripted model (the
openmm-torch TorchForce route) evaluates its edges in one piece.

:func:`plan_chunks` turns a memory budget into chunk sizes from a model's per-edge and
per-atom costs (:meth:`mlff.models.base.EnergyModel.memory_costs`).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

#: the environment variable that sets the evaluation memory budget (GB) of every Potential
MEMORY_ENV = "MLFF_MEMORY_GB"
#: smallest chunks worth their per-chunk overhead (edges, atoms)
MIN_CHUNK_EDGES = 2048
MIN_CHUNK_ATOMS = 256
#: largest chunks: a call that must be chunked anyway runs fastest with chunks about this size,
#: so a large budget does not make chunks larger (float32 MACE on 24,576 water atoms: 33 s per
#: call with 2,048-atom chunks, 51-53 s with 8,000; edge chunks of 16,384 or 100,000 alike)
MAX_CHUNK_EDGES = 16384
MAX_CHUNK_ATOMS = 2048
#: sender windows above this many rows per atom (no spatial order in the atom numbering) are
#: not used (:func:`sender_windows`)
MAX_WINDOW_ROWS_PER_ATOM = 16


def receiver_chunks(receiver: Tensor, n_atoms: int, max_edges: int) -> Tuple[Tensor, List[Tuple[int, int, int, int]]]:
    """Edges grouped by ranges of receiving atoms, at most ``max_edges`` per group (an atom
    with more edges than that gets a group of its own).

    Returns the edge order ``perm`` (stable sort by receiver) and ``(a, b, s, e)`` per group:
    atoms ``[a, b)`` receive exactly the edges ``perm[s:e]``. Groups cover disjoint atom ranges,
    so their per-atom sums are concatenated, never added: the cost stays linear in the atoms
    (a sum over chunks of full-size per-atom tensors would cost atoms x chunks).
    """
    perm = torch.argsort(receiver, stable=True)
    ends = torch.cumsum(torch.bincount(receiver, minlength=n_atoms), 0)  # edges of atoms <= i
    groups: List[Tuple[int, int, int, int]] = []
    a, s = 0, 0
    while a < n_atoms:
        b = max(a + 1, int(torch.searchsorted(ends, s + max_edges, right=True)))
        e = int(ends[b - 1])
        groups.append((a, b, s, e))
        a, s = b, e
    return perm, groups


def sender_windows(index_parts: Sequence[Tensor], n_atoms: int) -> Optional[Tuple[List[Tensor], Tensor, List[int]]]:
    """The atoms each edge group sends from, for gathering node tensors once per group.

    ``index_parts``: each group's ``[2, E_g]`` edges. Returns, per group, its edges with the
    senders renumbered into the group's own window (``[2, E_g]``), the windows' global atom
    indices concatenated (``[R]``) and their lengths; None when the windows together hold more
    than :data:`MAX_WINDOW_ROWS_PER_ATOM` rows per atom (atoms numbered with no spatial order),
    where gathering from the whole node tensors costs less memory.
    """
    local: List[Tensor] = []
    atoms: List[Tensor] = []
    for part in index_parts:
        window, renumbered = torch.unique(part[0], return_inverse=True)
        atoms.append(window)
        local.append(torch.stack([renumbered, part[1]]))
    rows = [int(w.shape[0]) for w in atoms]
    if sum(rows) > MAX_WINDOW_ROWS_PER_ATOM * max(n_atoms, 1):
        return None
    return local, torch.cat(atoms), rows


def chunked_edge_sum(
    fn: Callable[..., Tensor],
    edge_index: Tensor,
    n_atoms: int,
    max_edges: int,
    edge_tensors: Sequence[Tensor],
    node_tensors: Sequence[Tensor],
    sender_axis: Optional[int] = None,
) -> Tensor:
    """``fn`` on groups of edges by receiver (:func:`receiver_chunks`), the per-atom sums
    concatenated along dim 1: ``fn(edge_index_c, 0, a, b - a, *edge_tensors_c, *node_tensors)``
    must return the sums ``[M, b - a, ...]`` of its edges onto atoms ``a .. b-1`` (receivers
    minus ``a``; senders index the node tensors). The ``0`` is the mirror half of the group:
    groups are not in mirror order. ``edge_index``: ``[2, E]``; ``edge_tensors``: ``[M, E, ...]``
    (edge axis 1). Each group runs under a non-reentrant checkpoint.

    Every group's inputs are cut from one gather and one :func:`torch.split`, whose backward
    passes assemble each full-size gradient once; a per-group ``index_select`` of a whole tensor
    would instead give every group a zero-filled gradient of the whole tensor, a cost of edges x
    groups (part of why 98,304 atoms once ran 2.7x slower per atom than 1,536). ``sender_axis``: set it when
    ``fn`` reads the node tensors only at the senders (along that axis); each group then gets
    windows of them holding just its senders (:func:`sender_windows`), for the same reason.
    """
    perm, groups = receiver_chunks(edge_index[1], n_atoms, max_edges)
    sizes = [e - s for _, _, s, e in groups]
    index_parts = list(edge_index.index_select(1, perm).split(sizes, dim=1))
    edge_parts = [t.index_select(1, perm).split(sizes, dim=1) for t in edge_tensors]
    node_parts: List[Sequence[Tensor]] = [list(node_tensors)] * len(groups)
    windows = sender_windows(index_parts, n_atoms) if sender_axis is not None else None
    if windows is not None:
        index_parts, rows_atoms, rows = windows
        cut = [t.index_select(sender_axis, rows_atoms).split(rows, dim=sender_axis) for t in node_tensors]
        node_parts = [[c[g] for c in cut] for g in range(len(groups))]
    parts: List[Tensor] = []
    for g, (a, b, _, _) in enumerate(groups):
        parts.append(checkpoint(fn, index_parts[g], 0, a, b - a, *[t[g] for t in edge_parts], *node_parts[g],
                                use_reentrant=False))
    return torch.cat(parts, dim=1)


def chunked_atoms(fn: Callable[..., Tuple[Tensor, ...]], n_atoms: int, max_atoms: int,
                  inputs: Sequence[Tuple[Tensor, int]], out_dims: Sequence[int]) -> List[Tensor]:
    """``fn(*inputs)`` for an ``fn`` that is independent per atom (atom i of every output
    depends on atom i of every input only), on slices of at most ``max_atoms`` atoms, each
    under a non-reentrant checkpoint. ``inputs``: (tensor, its atom axis); ``fn`` returns a
    tuple of tensors whose atom axes are ``out_dims``; returns them concatenated."""
    # one split per input (its backward assembles the full gradient once; a narrow per chunk
    # would give every chunk a zero-filled full-size gradient: atoms x chunks)
    pieces = [t.split(max_atoms, dim=d) for t, d in inputs]
    parts: List[Tuple[Tensor, ...]] = []
    for c in range((n_atoms + max_atoms - 1) // max_atoms):
        parts.append(checkpoint(fn, *[p[c] for p in pieces], use_reentrant=False))
    return [torch.cat([p[j] for p in parts], dim=d) for j, d in enumerate(out_dims)]


def budget_from_env() -> Optional[float]:
    """The memory budget (GB) from ``MLFF_MEMORY_GB`` (0: no budget, one piece); None when unset."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{MEMORY_ENV}={raw!r} is not a number of GB; set it like {MEMORY_ENV}=8") from None
    if value < 0:
        raise ValueError(f"{MEMORY_ENV}={raw!r} must be >= 0 (0: no budget)")
    return value


def default_budget_gb() -> float:
    """``MLFF_MEMORY_GB`` if set, else half of this machine's physical memory."""
    from_env = budget_from_env()
    if from_env is not None:
        return from_env
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0.0
    return 0.5 * physical / 1e9


def plan_chunks(n_edges: int, n_atoms: int, budget_gb: float, costs: Dict[str, float]) -> Tuple[int, int]:
    """Edges and atoms per chunk that keep an energy + forces call within ``budget_gb``;
    ``(0, 0)`` (one piece) without a budget or when the unchunked call fits.

    ``costs`` (bytes, :meth:`mlff.models.base.EnergyModel.memory_costs`): ``edge_fixed`` and
    ``atom_fixed`` held for the whole call; ``edge_layers`` and ``atom_layers`` kept for the
    backward pass by all layers' chunkable work when unchunked; ``edge_chunk`` and
    ``atom_chunk`` per edge and atom of one chunk's working set (recomputation plus its
    backward). Edge and atom chunks never coexist, so each may use what the fixed part leaves.
    A chunk size is at least :data:`MIN_CHUNK_EDGES` / :data:`MIN_CHUNK_ATOMS`, at most
    :data:`MAX_CHUNK_EDGES` / :data:`MAX_CHUNK_ATOMS`, and 0 where it would hold everything.
    """
    if budget_gb <= 0 or n_atoms == 0:
        return 0, 0
    budget = budget_gb * 1e9
    fixed = n_edges * costs["edge_fixed"] + n_atoms * costs["atom_fixed"]
    if fixed + n_edges * costs["edge_layers"] + n_atoms * costs["atom_layers"] <= budget:
        return 0, 0
    left = max(budget - fixed, 0.0)

    def size(per_item: float, count: int, smallest: int, largest: int) -> int:
        chunk = min(largest, max(smallest, int(left / per_item))) if per_item > 0 else count
        return 0 if chunk >= count else chunk

    return (size(costs["edge_chunk"], n_edges, MIN_CHUNK_EDGES, MAX_CHUNK_EDGES),
            size(costs["atom_chunk"], n_atoms, MIN_CHUNK_ATOMS, MAX_CHUNK_ATOMS))
