"""Edge chunking (mlff/nn/edge_chunks.py): the chunk helpers, the memory planner and its
budget, and the routes that must keep working with a budget (TorchScript, the ASE calculator).
Exactness for every model type is in tests/mlff/model_mixins.py
(``test_edge_chunks_match_one_piece``)."""

from __future__ import annotations

import pytest
import torch

from mlff import graph as G
from mlff.nn import edge_chunks
from mlff.nn.edge_chunks import plan_chunks, receiver_chunks

from model_mixins import graph_of, periodic_box


def test_receiver_chunks_cover_every_edge_once_in_disjoint_atom_ranges(small_potential):
    pot = small_potential()
    g = graph_of(periodic_box(0, box=4.0), pot)
    receiver = g[G.EDGE_INDEX][1]
    n = g[G.POSITIONS].shape[0]
    perm, groups = receiver_chunks(receiver, n, 50)
    assert groups[0][0] == 0 and groups[-1][1] == n and groups[-1][3] == receiver.shape[0]
    for (a, b, s, e), nxt in zip(groups, groups[1:] + [None]):
        chunk = receiver[perm[s:e]]
        assert bool(((chunk >= a) & (chunk < b)).all())
        assert e - s <= 50 or b == a + 1  # an atom with more edges than that stands alone
        if nxt is not None:
            assert (nxt[0], nxt[2]) == (b, e)
    assert sorted(perm.tolist()) == list(range(receiver.shape[0]))
    # an atom with more edges than a chunk holds gets a group of its own
    _, alone = receiver_chunks(torch.tensor([0, 1, 1, 1, 2]), 3, 2)
    assert alone == [(0, 1, 0, 1), (1, 2, 1, 4), (2, 3, 4, 5)]


@pytest.mark.parametrize("windows", [True, False])
def test_chunked_edge_sum_matches_one_piece_with_and_without_sender_windows(monkeypatch, windows):
    """A sum of sender features times edge features onto receivers, with a receiver-side
    gather in the edge function too: values and the gradients of every input equal the
    one-piece sum, whether each group gathers from its sender window or from the whole tensor."""
    if not windows:
        monkeypatch.setattr(edge_chunks, "MAX_WINDOW_ROWS_PER_ATOM", 0)
    gen = torch.Generator().manual_seed(0)
    n, e = 40, 600
    edge_index = torch.randint(0, n, (2, e), generator=gen)
    w = torch.randn(2, e, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, n, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(index, half, offset, count, w_c, x_c):
        return torch.zeros(2, count, 3, dtype=w_c.dtype).index_add_(1, index[1] - offset,
                                                                   x_c.index_select(1, index[0]) * w_c)

    windows_seen = edge_chunks.sender_windows(
        list(edge_index.split(100, dim=1)), n) is not None
    assert windows_seen == windows
    one = fn(edge_index, 0, 0, n, w, x)
    chunked = edge_chunks.chunked_edge_sum(fn, edge_index, n, 100, [w], [x], sender_axis=1)
    torch.testing.assert_close(chunked, one, rtol=1e-12, atol=1e-12)
    probe = torch.randn(one.shape, generator=gen, dtype=torch.float64)
    g_one = torch.autograd.grad((one * probe).sum(), (w, x))
    g_chunked = torch.autograd.grad((chunked * probe).sum(), (w, x))
    for a, b in zip(g_chunked, g_one):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_sender_windows_renumber_the_senders_of_each_group(monkeypatch):
    parts = [torch.tensor([[5, 2, 5], [0, 0, 1]]), torch.tensor([[1, 9], [2, 3]])]
    local, atoms, rows = edge_chunks.sender_windows(parts, 10)
    assert rows == [2, 2] and atoms.tolist() == [2, 5, 1, 9]
    for part, renumbered, start in zip(parts, local, (0, 2)):
        assert torch.equal(atoms[start + renumbered[0]], part[0]) and torch.equal(renumbered[1], part[1])
    monkeypatch.setattr(edge_chunks, "MAX_WINDOW_ROWS_PER_ATOM", 0.3)
    assert edge_chunks.sender_windows(parts, 10) is None  # 4 rows > 0.3 per atom x 10 atoms


COSTS = {"edge_fixed": 100.0, "atom_fixed": 10.0, "edge_layers": 2000.0, "atom_layers": 500.0,
         "edge_chunk": 2000.0, "atom_chunk": 400.0}


def test_planner_chunks_only_what_does_not_fit():
    # 1e6 edges x (100 + 2000) B + 1e5 atoms x (10 + 500) B = 2.151 GB
    assert plan_chunks(1_000_000, 100_000, 2.2, COSTS) == (0, 0)
    assert plan_chunks(1_000_000, 100_000, 0.0, COSTS) == (0, 0)  # no budget: one piece
    edges, atoms = plan_chunks(1_000_000, 100_000, 0.12, COSTS)
    left = 1.2e8 - 1e8 - 1e6
    assert (edges, atoms) == (int(left / 2000), edge_chunks.MAX_CHUNK_ATOMS)
    assert plan_chunks(1_000_000, 10_000_000, 0.2004, COSTS)[1] == int((2.004e8 - 1e8 - 1e8) / 400)
    assert plan_chunks(1_000_000, 1000, 1.0, COSTS)[1] == 0  # every atom fits in one atom chunk
    # a budget with room for larger chunks still gets chunks of the fastest size
    assert plan_chunks(1_000_000, 10_000_000, 4.0, COSTS) == (edge_chunks.MAX_CHUNK_EDGES,
                                                              edge_chunks.MAX_CHUNK_ATOMS)
    # a budget below the fixed part still runs, with the smallest chunks
    assert plan_chunks(1_000_000, 100_000, 0.01, COSTS) == (edge_chunks.MIN_CHUNK_EDGES,
                                                            edge_chunks.MIN_CHUNK_ATOMS)


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLFF_MEMORY_GB", "8")
    assert edge_chunks.default_budget_gb() == 8.0
    monkeypatch.setenv("MLFF_MEMORY_GB", "0")
    assert edge_chunks.default_budget_gb() == 0.0
    monkeypatch.setenv("MLFF_MEMORY_GB", "lots")
    with pytest.raises(ValueError, match="MLFF_MEMORY_GB='lots' is not a number of GB"):
        edge_chunks.default_budget_gb()
    monkeypatch.delenv("MLFF_MEMORY_GB")
    assert edge_chunks.default_budget_gb() > 0  # half of this machine's memory


def test_model_costs_grow_with_channels_members_and_dtype(small_potential):
    base = small_potential().model.memory_costs()
    for key in ("edge_layers", "atom_layers", "edge_chunk", "atom_chunk"):
        assert small_potential(channels=16).model.memory_costs()[key] > base[key] > 0
        assert small_potential(ensemble_size=2).model.memory_costs()[key] == pytest.approx(2 * base[key])
        assert small_potential(dtype="float32").model.memory_costs()[key] == pytest.approx(base[key] / 2)


@pytest.mark.parametrize("model_type", ["mace", "tensornet"])
def test_scripted_potential_with_a_budget_evaluates_in_one_piece(small_potential, monkeypatch, model_type):
    from e3nn.util import jit

    monkeypatch.setattr(edge_chunks, "MIN_CHUNK_EDGES", 16)
    pot = small_potential(model_type=model_type)
    pot.set_memory_budget(1e-9)
    g = graph_of(periodic_box(1, box=4.0), pot)
    eager = pot(g, compute_stress=True)
    assert pot.model.edge_chunk > 0
    scripted = jit.script(pot)
    out = scripted(g, True, True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[key], eager[key], rtol=1e-11, atol=1e-11)


def test_ase_calculator_memory_budget(small_potential, monkeypatch):
    from calculators.ase import MLFFCalculator

    monkeypatch.setattr(edge_chunks, "MIN_CHUNK_EDGES", 16)
    atoms = periodic_box(3, box=4.0)
    pot = small_potential()
    atoms.calc = MLFFCalculator(pot, memory_gb=0)
    ref_f, ref_s = atoms.get_forces().copy(), atoms.get_stress().copy()
    assert pot.model.edge_chunk == 0
    atoms.calc = MLFFCalculator(pot, memory_gb=1e-9)
    assert torch.allclose(torch.tensor(atoms.get_forces()), torch.tensor(ref_f), atol=1e-11)
    assert torch.allclose(torch.tensor(atoms.get_stress()), torch.tensor(ref_s), atol=1e-11)
    assert pot.model.edge_chunk > 0
    with pytest.raises(ValueError, match="memory budget must be >= 0"):
        MLFFCalculator(pot, memory_gb=-1)
