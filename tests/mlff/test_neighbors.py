"""Both neighbour-list backends against ase.neighborlist, on molecules, triclinic cells, cells
smaller than twice the cutoff and mixed periodicity; TorchScript of the torch backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import given, settings
from hypothesis import strategies as st

from mlff.neighbors import (
    neighbor_list,
    torch_neighbor_list,
    vesin_neighbor_list,
)


def canonical(edge_index: torch.Tensor, unit_shifts: torch.Tensor) -> np.ndarray:
    """Rows (sender, receiver, sx, sy, sz) sorted lexicographically."""
    rows = np.concatenate([edge_index.T.cpu().numpy(), unit_shifts.cpu().numpy()], axis=1)
    if len(rows) == 0:
        return rows.reshape(0, 5)
    return rows[np.lexsort(rows.T[::-1])]


def ase_reference(pos, cell, pbc, r_cut) -> np.ndarray:
    atoms = Atoms("H" * len(pos), positions=pos, cell=cell, pbc=pbc)
    i, j, s = ase_neighbor_list("ijS", atoms, r_cut)
    return canonical(torch.tensor(np.stack([j, i])), torch.tensor(s))


def random_cell(rng: np.random.Generator, scale: float) -> np.ndarray:
    cell = np.eye(3) * scale + rng.normal(0.0, 0.3 * scale, (3, 3))
    if np.linalg.det(cell) < 0:
        cell[0] *= -1
    return cell


def all_backends(pos, cell, pbc, r_cut):
    p = torch.tensor(pos, dtype=torch.float64)
    c = torch.tensor(cell, dtype=torch.float64)
    b = torch.tensor(pbc)
    return {
        "torch": canonical(*torch_neighbor_list(p, r_cut, c, b)),
        "vesin": canonical(*vesin_neighbor_list(p, r_cut, c, b)),
    }


def assert_matches_ase(pos, cell, pbc, r_cut):
    ref = ase_reference(pos, cell, pbc, r_cut)
    for name, got in all_backends(pos, cell, pbc, r_cut).items():
        assert got.shape == ref.shape, f"{name}: {got.shape[0]} edges, ase has {ref.shape[0]}"
        np.testing.assert_array_equal(got, ref, err_msg=name)
    return ref


@pytest.mark.parametrize("seed", range(6))
def test_random_molecules(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    pos = rng.uniform(-6, 6, (n, 3))
    ref = assert_matches_ase(pos, np.zeros((3, 3)), [False] * 3, 3.0)
    assert len(ref) > 0


@pytest.mark.parametrize("seed", range(6))
def test_random_triclinic_cells(seed):
    rng = np.random.default_rng(100 + seed)
    cell = random_cell(rng, rng.uniform(8, 12))
    n = int(rng.integers(10, 80))
    frac = rng.uniform(-0.3, 1.3, (n, 3))  # also atoms outside the cell
    assert_matches_ase(frac @ cell, cell, [True] * 3, rng.uniform(2.0, 4.5))


@pytest.mark.parametrize("seed", range(6))
def test_cells_smaller_than_twice_the_cutoff(seed):
    rng = np.random.default_rng(200 + seed)
    cell = random_cell(rng, rng.uniform(2.0, 4.0))
    n = int(rng.integers(1, 6))
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    r_cut = rng.uniform(4.0, 6.0)
    ref = assert_matches_ase(pos, cell, [True] * 3, r_cut)
    # many images: some atom sees itself through the cell
    assert (ref[:, 0] == ref[:, 1]).any()


@pytest.mark.parametrize("pbc", [[True, False, False], [False, True, True], [True, True, False],
                                 [False, False, True]])
@pytest.mark.parametrize("seed", range(3))
def test_mixed_pbc(pbc, seed):
    rng = np.random.default_rng(300 + seed)
    cell = random_cell(rng, rng.uniform(3.0, 9.0))
    n = int(rng.integers(3, 40))
    pos = rng.uniform(-0.2, 1.2, (n, 3)) @ cell
    assert_matches_ase(pos, cell, pbc, rng.uniform(2.0, 5.0))


def test_mixed_pbc_with_zero_vector_in_the_free_direction():
    rng = np.random.default_rng(7)
    cell = np.diag([4.0, 5.0, 0.0])  # slab: z free and no z vector at all
    pos = rng.uniform(0, 4, (12, 3))
    assert_matches_ase(pos, cell, [True, True, False], 3.5)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 25),
    pbc=st.lists(st.booleans(), min_size=3, max_size=3),
    scale=st.floats(2.0, 10.0),
    r_cut=st.floats(1.0, 6.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_against_ase(n, pbc, scale, r_cut, seed):
    rng = np.random.default_rng(seed)
    cell = random_cell(rng, scale)
    pos = rng.uniform(-0.5, 1.5, (n, 3)) @ cell
    assert_matches_ase(pos, cell, pbc, r_cut)


def test_full_list_is_symmetric_and_within_cutoff():
    rng = np.random.default_rng(1)
    cell = random_cell(rng, 6.0)
    pos = torch.tensor(rng.uniform(0, 1, (30, 3)) @ cell)
    c = torch.tensor(cell)
    ei, us = torch_neighbor_list(pos, 4.0, c, torch.tensor([True, True, True]))
    vec = pos[ei[0]] - pos[ei[1]] + us.double() @ c
    assert float(vec.norm(dim=1).max()) < 4.0
    forward = {(a, b, *s) for (a, b), s in zip(ei.T.tolist(), us.tolist())}
    backward = {(b, a, *[-x for x in s]) for (a, b), s in zip(ei.T.tolist(), us.tolist())}
    assert forward == backward


def test_torchscript_matches_eager():
    scripted = torch.jit.script(torch_neighbor_list)
    rng = np.random.default_rng(3)
    for pbc in ([True, True, True], [True, False, True], [False, False, False]):
        cell = torch.tensor(random_cell(rng, 5.0))
        pos = torch.tensor(rng.uniform(0, 1, (20, 3))) @ cell
        b = torch.tensor(pbc)
        eager = canonical(*torch_neighbor_list(pos, 3.5, cell, b))
        script = canonical(*scripted(pos, 3.5, cell, b))
        np.testing.assert_array_equal(eager, script)
        assert len(eager) > 0


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(4)
    cell = torch.tensor(random_cell(rng, 10.0))
    pos = torch.tensor(rng.uniform(0, 1, (120, 3))) @ cell
    b = torch.tensor([True, True, True])
    full = canonical(*torch_neighbor_list(pos, 4.0, cell, b))
    chunked = canonical(*torch_neighbor_list(pos, 4.0, cell, b, max_pairs_per_chunk=50))
    np.testing.assert_array_equal(full, chunked)


def test_float32_inputs():
    rng = np.random.default_rng(5)
    pos64 = rng.uniform(0, 8, (40, 3))
    ref = ase_reference(pos64, np.zeros((3, 3)), [False] * 3, 3.0)
    got = canonical(*torch_neighbor_list(torch.tensor(pos64, dtype=torch.float32), 3.0))
    # distances within float32 round-off of the cutoff could differ; this set has none
    np.testing.assert_array_equal(got, ref)


def test_empty_and_isolated_systems():
    for backend in ("torch", "vesin"):
        ei, us = neighbor_list(torch.zeros(0, 3, dtype=torch.float64), 3.0, backend=backend)
        assert ei.shape == (2, 0) and us.shape == (0, 3)
        ei, us = neighbor_list(torch.zeros(1, 3, dtype=torch.float64), 3.0, backend=backend)
        assert ei.shape == (2, 0)
        two = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.5]], dtype=torch.float64)
        assert neighbor_list(two, 3.0, backend=backend)[0].shape == (2, 0)
        assert neighbor_list(two, 4.0, backend=backend)[0].shape == (2, 2)


def test_lattice_translation_only_changes_shifts():
    """Moving one atom by a lattice vector keeps the same edges with compensating shifts."""
    rng = np.random.default_rng(6)
    cell = torch.tensor(random_cell(rng, 7.0))
    pos = torch.tensor(rng.uniform(0, 1, (15, 3))) @ cell
    b = torch.tensor([True, True, True])
    moved = pos.clone()
    moved[0] += 2 * cell[1] - cell[2]
    for backend in ("torch", "vesin"):
        ei, us = neighbor_list(pos, 3.0, cell, b, backend=backend)
        ei2, us2 = neighbor_list(moved, 3.0, cell, b, backend=backend)
        v1 = canonical_vectors(pos, cell, ei, us)
        v2 = canonical_vectors(moved, cell, ei2, us2)
        np.testing.assert_allclose(v1, v2, atol=1e-10)


def canonical_vectors(pos, cell, ei, us):
    vec = (pos[ei[0]] - pos[ei[1]] + us.double() @ cell).numpy()
    rows = np.concatenate([ei.T.numpy(), np.round(vec, 8)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_unknown_backend_and_bad_cutoff():
    pos = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="valid backends"):
        neighbor_list(pos, 3.0, backend="nope")
    with pytest.raises(ValueError, match="positive"):
        neighbor_list(pos, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    cell = torch.tensor(random_cell(rng, 9.0))
    pos = torch.tensor(rng.uniform(0, 1, (200, 3))) @ cell
    b = torch.tensor([True, True, True])
    cpu = canonical(*torch_neighbor_list(pos, 4.0, cell, b))
    gpu = canonical(*torch_neighbor_list(pos.cuda(), 4.0, cell.cuda(), b.cuda()))
    np.testing.assert_array_equal(cpu, gpu)


@pytest.mark.parametrize("pbc", [[True] * 3, [True, False, True], [False] * 3])
@pytest.mark.parametrize("seed", range(3))
def test_half_lists_hold_each_pair_of_the_full_list_once(pbc, seed):
    """``half=True`` (both backends): every pair of ase's full list exactly once, in one of its
    two directions, self-images included (small cells: an atom sees itself)."""
    rng = np.random.default_rng(300 + seed)
    cell = random_cell(rng, rng.uniform(2.5, 5.0))
    pos = rng.uniform(0, 1, (int(rng.integers(2, 8)), 3)) @ cell
    r_cut = rng.uniform(3.0, 7.0)
    full = {tuple(row) for row in ase_reference(pos, cell, pbc, r_cut)}
    p, c, b = torch.tensor(pos), torch.tensor(cell), torch.tensor(pbc)
    for name, fn in (("torch", torch_neighbor_list), ("vesin", vesin_neighbor_list)):
        half = canonical(*fn(p, r_cut, c, b, half=True))
        mirrored = {(r, s, -x, -y, -z) for s, r, x, y, z in half}
        rows = {tuple(row) for row in half}
        assert len(rows) == len(half) and not rows & mirrored, f"{name}: a pair twice"
        assert 2 * len(half) == len(full), f"{name}: {len(half)} pairs, full list {len(full)} edges"
        assert rows | mirrored == full, name
