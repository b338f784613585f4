"""Graph construction, batching and input validation."""

import numpy as np
import pytest
import torch

from mlff import graph as G
from mlff.graph import InputError


def water_box(n: int = 8, box: float = 6.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    pos = torch.tensor(rng.uniform(0, box, (n, 3)))
    return pos, torch.tensor([8, 1] * (n // 2)), torch.eye(3, dtype=torch.float64) * box


def test_build_graph_keys_shapes_dtypes():
    pos, z, cell = water_box()
    g = G.build_graph(pos, z, 3.0, cell=cell, pbc=torch.tensor([True] * 3))
    e = g[G.EDGE_INDEX].shape[1]
    assert e > 0
    assert g[G.POSITIONS].shape == (8, 3) and g[G.POSITIONS].dtype == torch.float64
    assert g[G.CELL].shape == (1, 3, 3) and g[G.PBC].shape == (1, 3)
    assert g[G.EDGE_INDEX].dtype == torch.long and g[G.UNIT_SHIFTS].shape == (e, 3)
    assert g[G.SHIFTS].shape == (e, 3) and g[G.BATCH].tolist() == [0] * 8
    assert g[G.PTR].tolist() == [0, 8]
    assert float(G.edge_vectors(g).norm(dim=1).max()) < 3.0
    edge_graph = g[G.BATCH][g[G.EDGE_INDEX][1]]
    torch.testing.assert_close(G.compute_shifts(g[G.UNIT_SHIFTS], g[G.CELL], edge_graph), g[G.SHIFTS])


def test_both_backends_give_the_same_graph():
    pos, z, cell = water_box(20, 5.0, 1)
    pbc = torch.tensor([True, True, False])
    a = G.build_graph(pos, z, 3.0, cell=cell, pbc=pbc, backend="vesin")
    b = G.build_graph(pos, z, 3.0, cell=cell, pbc=pbc, backend="torch")
    va = sorted(map(tuple, np.round(G.edge_vectors(a).numpy(), 9).tolist()))
    vb = sorted(map(tuple, np.round(G.edge_vectors(b).numpy(), 9).tolist()))
    assert va == vb


def test_collate_offsets_edges_and_builds_batch():
    graphs = []
    for seed, n in enumerate([4, 6, 2]):
        pos, z, cell = water_box(n, 4.0, seed)
        graphs.append(G.build_graph(pos, z, 10.0))
    batch = G.collate(graphs)
    assert batch[G.PTR].tolist() == [0, 4, 10, 12]
    assert batch[G.BATCH].tolist() == [0] * 4 + [1] * 6 + [2] * 2
    assert batch[G.EDGE_INDEX].shape[1] == 4 * 3 + 6 * 5 + 2 * 1
    ei = batch[G.EDGE_INDEX]
    assert (batch[G.BATCH][ei[0]] == batch[G.BATCH][ei[1]]).all()
    assert G.num_graphs(batch) == 3
    # edge vectors survive batching, in mirror order: every graph's first half, then the reverses
    halves = [G.edge_vectors(g).split(g[G.EDGE_INDEX].shape[1] // 2) for g in graphs]
    torch.testing.assert_close(
        G.edge_vectors(batch), torch.cat([h[0] for h in halves] + [h[1] for h in halves]))
    h = ei.shape[1] // 2
    assert torch.equal(ei[:, h:], ei[:, :h].flip(0))


def test_collate_rejects_mismatched_keys():
    pos, z, _ = water_box(4)
    a = G.build_graph(pos, z, 3.0)
    b = dict(a)
    b[G.ENERGY] = torch.zeros(1)
    with pytest.raises(ValueError, match="same keys"):
        G.collate([a, b])


def test_nan_positions_are_named():
    pos, z, cell = water_box()
    pos[3, 1] = float("nan")
    with pytest.raises(InputError, match=r"atoms \[3\] are NaN"):
        G.build_graph(pos, z, 3.0)


def test_degenerate_and_missing_cells():
    pos, z, cell = water_box()
    with pytest.raises(InputError, match="zero length"):
        G.build_graph(pos, z, 3.0, cell=torch.zeros(3, 3, dtype=torch.float64),
                      pbc=torch.tensor([True] * 3))
    flat = cell.clone()
    flat[2] = flat[0] + flat[1]
    with pytest.raises(InputError, match="degenerate"):
        G.build_graph(pos, z, 3.0, cell=flat, pbc=torch.tensor([True] * 3))
    # a zero vector along a non-periodic direction is fine
    slab = cell.clone()
    slab[2] = 0.0
    G.build_graph(pos, z, 3.0, cell=slab, pbc=torch.tensor([True, True, False]))


def test_min_distance_check():
    pos = torch.tensor([[0.0, 0, 0], [0.05, 0, 0], [2.0, 0, 0]], dtype=torch.float64)
    g = G.build_graph(pos, torch.tensor([1, 1, 8]), 3.0)
    with pytest.raises(InputError, match="0.05 A apart"):
        G.check_min_distance(g, 0.1)
    G.check_min_distance(g, 0.01)
