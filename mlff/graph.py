"""The atomic graph: one definition of keys, shapes, units and dtypes, used everywhere.

A graph (or a batch of B graphs with N atoms and E edges in total) is a ``Dict[str, Tensor]``
so that it passes through TorchScript unchanged. Keys and shapes:

==================  ============  ========  ===================================================
key                 shape         dtype     meaning
==================  ============  ========  ===================================================
``positions``       [N, 3]        float     Cartesian positions, Angstrom
``atomic_numbers``  [N]           int64     Z
``species``         [N]           int64     index of Z in the model's element list
``cell``            [B, 3, 3]     float     lattice vectors as rows, Angstrom (zeros if none)
``pbc``             [B, 3]        bool      periodicity per lattice direction
``edge_index``      [2, E]        int64     row 0 the sender j, row 1 the receiver i
``unit_shifts``     [E, 3]        int64     cell image of the sender (integers)
``shifts``          [E, 3]        float     ``unit_shifts @ cell[batch[i]]``, Angstrom
``batch``           [N]           int64     graph index of each atom (sorted ascending)
``ptr``             [B + 1]       int64     atom offsets of each graph
``total_charge``    [B]           float64   total charge, e (``atoms.info["charge"]``, 0)
``energy``          [B]           float64   target total energy, eV
``forces``          [N, 3]        float64   target forces, eV/A
``stress``          [B, 3, 3]     float64   target stress, eV/A^3, ASE sign (positive = tensile)
``virial``          [B, 3, 3]     float64   target virial, eV (``-stress * volume``)
``weight``          [B]           float64   per-graph loss weight
``ref_charges``     [N]           float64   target atomic charges, e (optional)
``ref_dipole``      [B, 3]        float64   target dipole, e A (optional)
``energy_weight``   [B]           float64   1 where the energy target exists, else 0
``forces_weight``   [B]           float64   1 where the forces target exists, else 0
``stress_weight``   [B]           float64   1 where the stress target exists, else 0
``charges_weight``  [B]           float64   1 where target charges exist, else 0 (optional)
``dipole_weight``   [B]           float64   1 where the target dipole exists, else 0 (optional)
==================  ============  ========  ===================================================

The edge vector from receiver i to sender j is ``positions[j] - positions[i] + shifts``; see
:func:`edge_vectors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from mlff.errors import InputError  # noqa: F401 - raised here, re-exported for callers

if TYPE_CHECKING:
    from ase import Atoms

POSITIONS = "positions"  # [N, 3] float, A
ATOMIC_NUMBERS = "atomic_numbers"  # [N] int64
SPECIES = "species"  # [N] int64
CELL = "cell"  # [B, 3, 3] float, A, rows are lattice vectors
PBC = "pbc"  # [B, 3] bool
EDGE_INDEX = "edge_index"  # [2, E] int64, row 0 sender j, row 1 receiver i
UNIT_SHIFTS = "unit_shifts"  # [E, 3] int64
SHIFTS = "shifts"  # [E, 3] float, A
BATCH = "batch"  # [N] int64
PTR = "ptr"  # [B + 1] int64
TOTAL_CHARGE = "total_charge"  # [B] float64, e

ENERGY = "energy"  # [B] float64, eV
FORCES = "forces"  # [N, 3] float64, eV/A
STRESS = "stress"  # [B, 3, 3] float64, eV/A^3
VIRIAL = "virial"  # [B, 3, 3] float64, eV
WEIGHT = "weight"  # [B] float64
ENERGY_WEIGHT = "energy_weight"  # [B] float64
FORCES_WEIGHT = "forces_weight"  # [B] float64
STRESS_WEIGHT = "stress_weight"  # [B] float64
REF_CHARGES = "ref_charges"  # [N] float64, e: target charges of learned-charge models
REF_DIPOLE = "ref_dipole"  # [B, 3] float64, e A
CHARGES_WEIGHT = "charges_weight"  # [B] float64
DIPOLE_WEIGHT = "dipole_weight"  # [B] float64

#: Per-atom keys (concatenated along dim 0 when batching).
NODE_KEYS = (POSITIONS, ATOMIC_NUMBERS, SPECIES, FORCES, REF_CHARGES)
#: Per-graph keys (concatenated along dim 0 when batching).
GRAPH_KEYS = (CELL, PBC, TOTAL_CHARGE, ENERGY, STRESS, VIRIAL, WEIGHT, ENERGY_WEIGHT, FORCES_WEIGHT,
              STRESS_WEIGHT, REF_DIPOLE, CHARGES_WEIGHT, DIPOLE_WEIGHT)
#: Per-edge keys.
EDGE_KEYS = (UNIT_SHIFTS, SHIFTS)

Graph = Dict[str, Tensor]


def validate_structure(
    positions: Tensor,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    min_distance: float = 0.0,
    where: str = "structure",
) -> None:
    """Raise :class:`InputError` for a structure without atoms, non-finite positions or cells,
    or a degenerate cell along a periodic direction. Overlaps (``min_distance``) are checked on edges in
    :func:`check_min_distance`, which needs the neighbour list.

    Args:
        positions: ``[N, 3]`` (A). cell: ``[3, 3]`` (A). pbc: ``[3]`` bool.
        where: a label for messages (file and frame, for example).
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise InputError(f"{where}: positions must have shape [N, 3], got {list(positions.shape)}")
    if positions.shape[0] == 0:
        raise InputError(f"{where} has no atoms (an empty Atoms object?); give a "
                         "structure with at least one atom")
    if not bool(torch.isfinite(positions).all()):
        bad = torch.nonzero(~torch.isfinite(positions).all(dim=1)).flatten().tolist()
        raise InputError(
            f"{where}: positions of atoms {bad[:10]} are NaN or infinite; "
            "check the input structure or the preceding simulation step"
        )
    if cell is None or pbc is None or not bool(pbc.any()):
        return
    if not bool(torch.isfinite(cell).all()):
        raise InputError(f"{where}: the cell contains NaN or infinite values")
    periodic_rows = cell[pbc.to(torch.bool)]
    lengths = torch.linalg.norm(periodic_rows, dim=1)
    if bool((lengths < 1e-8).any()):
        raise InputError(
            f"{where}: periodic boundary conditions are on (pbc={pbc.tolist()}) but a periodic "
            "cell vector has zero length; set the cell (e.g. atoms.set_cell) or turn pbc off"
        )
    # Degeneracy: the periodic rows must be linearly independent.
    gram = periodic_rows @ periodic_rows.T
    det = torch.linalg.det(gram.to(torch.float64))
    scale = torch.prod(lengths.to(torch.float64) ** 2)
    if float(det / scale) < 1e-10:
        raise InputError(
            f"{where}: the cell is degenerate (periodic lattice vectors are linearly dependent, "
            f"cell={cell.tolist()}); give three independent lattice vectors"
        )


def check_min_distance(graph: Graph, min_distance: float, where: str = "structure") -> None:
    """Raise :class:`InputError` when two atoms (or an atom and an image) are closer than
    ``min_distance`` (A)."""
    if graph[EDGE_INDEX].shape[1] == 0:
        return
    d = torch.linalg.norm(edge_vectors(graph), dim=1)
    k = int(torch.argmin(d))
    if float(d[k]) < min_distance:
        j, i = graph[EDGE_INDEX][:, k].tolist()
        raise InputError(
            f"{where}: atoms {i} and {j} are {float(d[k]):.3g} A apart (minimum allowed "
            f"{min_distance} A); the structure is broken or has duplicated atoms"
        )


def edge_vectors(graph: Graph) -> Tensor:
    """Edge vectors ``positions[j] - positions[i] + shifts`` ``[E, 3]`` (A)."""
    sender = graph[EDGE_INDEX][0]
    receiver = graph[EDGE_INDEX][1]
    pos = graph[POSITIONS]
    return pos[sender] - pos[receiver] + graph[SHIFTS]


def compute_shifts(unit_shifts: Tensor, cell: Tensor, edge_graph: Tensor) -> Tensor:
    """Cartesian shifts ``unit_shifts @ cell[edge_graph]`` (A) of the senders' cell images.

    Args:
        unit_shifts: ``[E, 3]`` integer cell images.
        cell: the batch's cells ``[B, 3, 3]`` (A), or ``[M, B, 3, 3]`` for M copies (the
            Potential's per-member strained cells).
        edge_graph: ``[E]`` graph index of each edge.

    Returns:
        ``[E, 3]`` (or ``[M, E, 3]``) in ``cell``'s dtype; differentiable in ``cell`` (stress).
    """
    if cell.dim() == 4:
        return torch.einsum("ei,meij->mej", unit_shifts.to(cell.dtype), cell[:, edge_graph])
    return torch.einsum("ei,eij->ej", unit_shifts.to(cell.dtype), cell[edge_graph])


def build_graph(
    positions: Tensor,
    atomic_numbers: Tensor,
    r_cut: float,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    species: Optional[Tensor] = None,
    backend: str = "vesin",
    total_charge: float = 0.0,
) -> Graph:
    """A single graph with its neighbour list.

    Args:
        positions: ``[N, 3]`` (A). atomic_numbers: ``[N]``. r_cut: neighbour cutoff (A).
        cell: ``[3, 3]`` (A) or None. pbc: ``[3]`` bool or None (non-periodic).
        species: ``[N]`` species indices, if the caller has a model's element list.
        backend: neighbour-list backend, see :mod:`mlff.neighbors`.
        total_charge: the structure's total charge (e).
    """
    from mlff.neighbors import neighbor_list

    device, dtype = positions.device, positions.dtype
    cell_ = torch.zeros(3, 3, dtype=dtype, device=device) if cell is None else cell.to(dtype)
    pbc_ = torch.zeros(3, dtype=torch.bool, device=device) if pbc is None else pbc.to(torch.bool)
    validate_structure(positions, cell_, pbc_)
    edge_index, unit_shifts = neighbor_list(positions, r_cut, cell_, pbc_, backend=backend)
    n = positions.shape[0]
    graph: Graph = {
        POSITIONS: positions,
        ATOMIC_NUMBERS: atomic_numbers.to(torch.long),
        CELL: cell_.unsqueeze(0),
        PBC: pbc_.unsqueeze(0),
        EDGE_INDEX: edge_index,
        UNIT_SHIFTS: unit_shifts,
        SHIFTS: unit_shifts.to(dtype) @ cell_,  # compute_shifts for one graph, without its gather
        BATCH: torch.zeros(n, dtype=torch.long, device=device),
        PTR: torch.tensor([0, n], dtype=torch.long, device=device),
        TOTAL_CHARGE: torch.tensor([float(total_charge)], dtype=torch.float64, device=device),
    }
    if species is not None:
        graph[SPECIES] = species.to(torch.long)
    return graph


def atoms_to_graph(
    atoms: "Atoms",
    r_cut: float,
    elements: Optional[Sequence[int]] = None,
    dtype: torch.dtype = torch.float64,
    backend: str = "vesin",
) -> Graph:
    """The graph of an ASE structure, without targets (see
    :func:`mlff.data.dataset.labelled_graph` for training frames).

    Args:
        atoms: the structure (positions and cell in A).
        r_cut: neighbour cutoff (A).
        elements: the model's atomic numbers, in species-index order; sets ``species``.
        dtype: float dtype of positions and cell.
        backend: neighbour-list backend, see :mod:`mlff.neighbors`.

    Raises:
        InputError: bad structure (see :func:`validate_structure`) or an element not in
            ``elements``.
    """
    import numpy as np

    species = None if elements is None else species_of(atoms.numbers, elements)
    return build_graph(
        torch.tensor(np.asarray(atoms.positions), dtype=dtype),
        torch.tensor(np.asarray(atoms.numbers), dtype=torch.long),
        r_cut,
        cell=torch.tensor(atoms.cell.array, dtype=dtype),
        pbc=torch.tensor(atoms.pbc, dtype=torch.bool),
        species=species,
        backend=backend,
        total_charge=float(atoms.info.get("charge", 0.0)),
    )


def collate(graphs: Sequence[Graph]) -> Graph:
    """Batch single graphs into one: concatenate atoms, edges and per-graph entries, offset
    ``edge_index`` by the atom offsets, and build ``batch`` and ``ptr``.

    Keys must be the same in every graph (targets included), so a batch never mixes graphs with
    and without a target silently; use the ``*_weight`` keys to mark missing targets.
    """
    if len(graphs) == 0:
        raise ValueError("collate needs at least one graph")
    keys = set(graphs[0].keys())
    for k, g in enumerate(graphs):
        if set(g.keys()) != keys:
            raise ValueError(
                f"graph {k} has keys {sorted(g.keys())}, graph 0 has {sorted(keys)}; "
                "every graph in a batch needs the same keys"
            )
    counts = [int(g[POSITIONS].shape[0]) for g in graphs]
    offsets: List[int] = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    device = graphs[0][POSITIONS].device
    out: Graph = {}
    for key in keys:
        if key in (EDGE_INDEX, BATCH, PTR):
            continue
        out[key] = torch.cat([g[key] for g in graphs], dim=0)
    edges = [g[EDGE_INDEX] + off for g, off in zip(graphs, offsets[:-1])]
    halves = [e.shape[1] // 2 for e in edges]
    if all(_is_mirrored(g) for g in graphs):
        # keep the batch in mirror order (all first halves, then all second halves), so models
        # evaluate distance-only features once per pair in training too
        order = [e[:, :h] for e, h in zip(edges, halves)] + [e[:, h:] for e, h in zip(edges, halves)]
        out[EDGE_INDEX] = torch.cat(order, dim=1)
        for key in EDGE_KEYS:
            if key in keys:
                out[key] = torch.cat([g[key][:h] for g, h in zip(graphs, halves)]
                                     + [g[key][h:] for g, h in zip(graphs, halves)], dim=0)
    else:
        out[EDGE_INDEX] = torch.cat(edges, dim=1)
    out[BATCH] = torch.repeat_interleave(
        torch.arange(len(graphs), device=device), torch.tensor(counts, device=device)
    )
    out[PTR] = torch.tensor(offsets, dtype=torch.long, device=device)
    return out


def _is_mirrored(graph: Graph) -> bool:
    """Whether the graph's edges are in :func:`mlff.neighbors.mirror_order` (its unit shifts
    negate like its edge vectors)."""
    from mlff.neighbors import mirrored_half

    return graph[EDGE_INDEX].shape[1] == 0 or mirrored_half(graph[EDGE_INDEX], graph[UNIT_SHIFTS]) > 0


def atoms_per_graph(graph: Graph) -> Tensor:
    """Number of atoms of each graph ``[B]`` as float64 (for per-atom normalisation)."""
    return torch.bincount(graph[BATCH], minlength=graph[CELL].shape[0]).to(torch.float64)


def num_graphs(graph: Graph) -> int:
    """Number of graphs B in a (batched) graph."""
    return int(graph[CELL].shape[0])


def species_of(numbers: Sequence[int], elements: Sequence[int]) -> Tensor:
    """Species indices ``[N]`` int64 of atomic numbers ``numbers`` for a model whose atomic
    numbers, in species-index order, are ``elements``.

    Raises:
        InputError: naming the unknown element(s) and listing the model's elements.
    """
    from ase.data import chemical_symbols

    lookup = {int(z): k for k, z in enumerate(elements)}
    unknown = sorted({int(z) for z in numbers if int(z) not in lookup})
    if unknown:
        raise InputError(
            f"element(s) {[chemical_symbols[z] for z in unknown]} not in the model, which knows "
            f"{[chemical_symbols[int(z)] for z in elements]}; use a model trained on these elements"
        )
    return torch.tensor([lookup[int(z)] for z in numbers], dtype=torch.long)
