"""Bounded-memory evaluation: per-edge and per-atom work in chunks, recomputed in the backward pass.

A message-passing block computes per-edge tensors (radial MLP activations, gathered sender
features, tensor-product pieces) and sums them onto the receiving atoms. autograd keeps every
per-edge intermediate of every layer until the backward pass, so the peak memory of an
energy + forces call grows as edges x channels x irreps x layers: a 12,288-atom water box
needs more than 24 GB. :func:`chunked_edge_sum` evaluates a block's per-edge function on slices
of the edges, each under non-reentrant :func:`torch.utils.checkpoint.checkpoint`: a slice keeps
only its inputs, and the backward pass recomputes the slice's forward when it needs it. Peak
memory is then one slice's working set plus the per-atom features; the results are the
unchunked ones up to the order of the floating-point sums (1e-15 relative in float64, tests).
Second derivatives (training on forces) go through the checkpoints too, but a force loss keeps
the recomputed slices alive for its own backward pass, so training memory is not bounded.

The same holds per atom: MACE's symmetric contraction keeps several hundred floats per atom and
channel for the backward pass (330 KB per atom on a water box at correlation 3), independent
from atom to atom, so :func:`chunked_rows` evaluates it on slices of atoms the same way.

Mirror order (:func:`mlff.neighbors.mirror_order`: edge ``k + H`` is edge ``k`` reversed): a
chunk takes the pairs ``[a, b)``, i.e. edges ``[a, b)`` and ``[a + H, b + H)``, so every chunk
is itself in mirror order (with half ``b - a``) and the per-pair savings of the models survive.

Eager only: TorchScript cannot script ``checkpoint``, so models call this from a
``@torch.jit.unused`` method behind ``torch.jit.is_scripting()``; a scripted model (the
openmm-torch TorchForce route) evaluates its edges in one piece.

:func:`plan_chunks` turns a memory budget into chunk sizes from a model's per-edge and
per-atom costs (:meth:`mlff.models.base.EnergyModel.memory_costs`).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

#: the environment variable that sets the evaluation memory budget (GB) of every Potential
MEMORY_ENV = "MLFF_MEMORY_GB"
#: smallest chunks worth their per-chunk overhead (edges, atoms)
MIN_CHUNK_EDGES = 2048
MIN_CHUNK_ATOMS = 256


def chunk_bounds(n_edges: int, half: int, max_edges: int) -> List[Tuple[int, int]]:
    """``[a, b)`` ranges of at most ``max_edges`` edges covering all ``n_edges``; in mirror
    order (``half`` > 0) ranges of pairs (each chunk then holds ``2 (b - a)`` edges)."""
    total = half if half > 0 else n_edges
    step = max(1, max_edges // 2 if half > 0 else max_edges)
    return [(a, min(a + step, total)) for a in range(0, total, step)]


def take_chunk(values: Tensor, a: int, b: int, half: int, dim: int = 1) -> Tensor:
    """The edges of chunk ``[a, b)`` along ``dim``, in mirror order when ``half`` > 0."""
    if half > 0:
        return torch.cat([values.narrow(dim, a, b - a), values.narrow(dim, a + half, b - a)], dim)
    return values.narrow(dim, a, b - a)


def chunked_edge_sum(
    fn: Callable[..., Tensor],
    edge_index: Tensor,
    half: int,
    max_edges: int,
    edge_tensors: Sequence[Tensor],
    node_tensors: Sequence[Tensor],
) -> Tensor:
    """``sum over chunks of fn(edge_index_c, half_c, *edge_tensors_c, *node_tensors)``.

    ``fn`` maps a set of edges to per-atom sums (any node-level tensor shape; the sum over
    chunks must equal ``fn`` on all edges, which holds for scatter sums onto receivers).
    ``edge_index``: ``[2, E]``; ``edge_tensors``: ``[M, E, ...]`` (edge axis 1); ``half``: see
    :func:`mlff.neighbors.mirrored_half`. Each chunk runs under a non-reentrant checkpoint.
    """
    total: Tensor | None = None
    for a, b in chunk_bounds(edge_index.shape[1], half, max_edges):
        half_c = b - a if half > 0 else 0
        inputs = [take_chunk(t, a, b, half) for t in edge_tensors]
        part = checkpoint(fn, take_chunk(edge_index, a, b, half), half_c, *inputs, *node_tensors,
                          use_reentrant=False)
        total = part if total is None else total + part
    assert total is not None, "chunked_edge_sum needs at least one edge"
    return total


def chunked_rows(fn: Callable[..., Tensor], max_rows: int, row_tensors: Sequence[Tensor]) -> Tensor:
    """``fn(*row_tensors)`` for a row-wise independent ``fn`` (row i of the output depends on
    row i of every input only), on slices of at most ``max_rows`` rows (dim 0), each under a
    non-reentrant checkpoint, concatenated along dim 0."""
    n = row_tensors[0].shape[0]
    parts = [checkpoint(fn, *[t.narrow(0, a, min(max_rows, n - a)) for t in row_tensors], use_reentrant=False)
             for a in range(0, n, max_rows)]
    return torch.cat(parts, dim=0)


def budget_from_env() -> float:
    """The memory budget (GB) from ``MLFF_MEMORY_GB``; 0 (no budget: one piece) when unset."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return 0.0
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
    if from_env > 0 or os.environ.get(MEMORY_ENV, "").strip():
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
    A chunk size is at least :data:`MIN_CHUNK_EDGES` / :data:`MIN_CHUNK_ATOMS`, and 0 where it
    would hold everything.
    """
    if budget_gb <= 0 or n_atoms == 0:
        return 0, 0
    budget = budget_gb * 1e9
    fixed = n_edges * costs["edge_fixed"] + n_atoms * costs["atom_fixed"]
    if fixed + n_edges * costs["edge_layers"] + n_atoms * costs["atom_layers"] <= budget:
        return 0, 0
    left = max(budget - fixed, 0.0)

    def size(per_item: float, count: int, smallest: int) -> int:
        chunk = max(smallest, int(left / per_item)) if per_item > 0 else count
        return 0 if chunk >= count else chunk

    return (size(costs["edge_chunk"], n_edges, MIN_CHUNK_EDGES),
            size(costs["atom_chunk"], n_atoms, MIN_CHUNK_ATOMS))
