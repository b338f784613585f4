"""Reusable tests every mlff model inherits.

A test class inherits :class:`ModelTests` and sets ``model_options``: options of the
small-model factory (``small_potential`` in ``tests/conftest.py``) on top of
:data:`MODEL_OPTIONS` (elements H, C, O; body order 4). Each test builds graphs with
:func:`mlff.graph.atoms_to_graph`, so the data path is exercised too.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from e3nn import o3

from mlff import graph as G
from mlff.graph import atoms_to_graph
from mlff.models.potential import Potential

ELEMENTS = [1, 6, 8]
#: factory options every model test starts from
MODEL_OPTIONS: Dict[str, object] = dict(elements=tuple(ELEMENTS), correlation=3)
#: the same for TensorNet
TENSORNET_OPTIONS: Dict[str, object] = dict(elements=tuple(ELEMENTS), model_type="tensornet")
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}


def rattled(name: str, seed: int = 0, sigma: float = 0.1) -> Atoms:
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(0, sigma, atoms.positions.shape)
    return atoms


def periodic_box(seed: int = 0, n_molecules: int = 4, box: float = 6.0) -> Atoms:
    """Water molecules in a slightly triclinic periodic cell (cell smaller than 2 r_cut)."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * box + rng.normal(0, 0.3, (3, 3))
    atoms = Atoms(cell=cell, pbc=True)
    for k in range(n_molecules):
        w = molecule("H2O")
        w.positions += (rng.uniform(0, 1, 3) @ cell)
        atoms += w
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    return atoms


def strain_derivative(pot: Potential, atoms: Atoms, i: int, j: int, h: float = 1e-6) -> float:
    """Central difference of the energy (eV) over the symmetric strain component ``ij``,
    divided by the volume: the stress component the Potential should return (eV/A^3)."""
    e = []
    for sign in (1, -1):
        eps = np.eye(3)
        eps[i, j] += sign * h / (2 if i != j else 1)
        if i != j:
            eps[j, i] += sign * h / 2
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
        e.append(float(pot(graph_of(strained, pot), compute_forces=False)["energy"].detach()))
    return (e[0] - e[1]) / (2 * h) / atoms.get_volume()


def graph_of(atoms: Atoms, potential: Potential, dtype=torch.float64) -> Dict[str, torch.Tensor]:
    """The graph of ``atoms`` for ``potential`` (its cutoff and elements), positions in ``dtype``."""
    return atoms_to_graph(atoms, potential.r_cut, potential.elements, dtype=dtype)


class ModelTests:
    """Mixin: invariance/equivariance, finite differences, locality, batching, periodicity,
    TorchScript parity and the model-file round trip."""

    #: factory options (besides ``dtype``) replacing :data:`MODEL_OPTIONS`: ``ensemble_size``,
    #: ``seed``, MACE config fields
    model_options: Dict[str, object] = {}
    #: the options ``model_options`` add to (:data:`MODEL_OPTIONS`: MACE)
    base_options: Dict[str, object] = MODEL_OPTIONS

    @pytest.fixture(autouse=True)
    def _factory(self, small_potential):
        self._small_potential = small_potential

    @pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
    def dtype(self, request):
        return request.param

    @property
    def long_range(self) -> bool:
        """Whether the model carries a long-range block (interactions beyond ``r_cut``)."""
        return {**self.base_options, **self.model_options}.get("long_range", "none") != "none"

    def potential(self, dtype=torch.float64) -> Potential:
        """A fresh small model in ``dtype``, in training mode (outputs keep their graph)."""
        options = {**self.base_options, **self.model_options}
        return self._small_potential(dtype=dtype, **options).train()

    # --- symmetry -----------------------------------------------------------------------

    @pytest.mark.parametrize("improper", [False, True])
    def test_rotation_invariance_and_force_equivariance(self, dtype, improper):
        pot = self.potential(dtype)
        atoms = rattled("CH3CH2OH")
        g = graph_of(atoms, pot)
        ref = pot(g)
        rot = o3.rand_matrix(dtype=torch.float64)
        if improper:
            rot = -rot
        g2 = dict(g)
        g2[G.POSITIONS] = g[G.POSITIONS] @ rot.T
        out = pot(g2)
        tol = TOL[dtype]
        torch.testing.assert_close(out["energy"], ref["energy"], **tol)
        torch.testing.assert_close(out["forces"], ref["forces"] @ rot.T, **tol)
        assert ref["forces"].abs().max() > 1e-4  # the test is not vacuous

    def test_translation_and_permutation(self, dtype):
        pot = self.potential(dtype)
        atoms = rattled("CH3CH2OH", 1)
        ref = pot(graph_of(atoms, pot))
        moved = atoms.copy()
        moved.positions += [3.1, -2.0, 7.5]
        torch.testing.assert_close(pot(graph_of(moved, pot))["energy"], ref["energy"], **TOL[dtype])
        perm = np.random.default_rng(2).permutation(len(atoms))
        permuted = atoms[perm]
        out = pot(graph_of(permuted, pot))
        torch.testing.assert_close(out["energy"], ref["energy"], **TOL[dtype])
        torch.testing.assert_close(out["forces"], ref["forces"][torch.tensor(perm)], **TOL[dtype])

    # --- derivatives --------------------------------------------------------------------

    def test_forces_match_finite_differences(self):
        pot = self.potential(torch.float64)
        atoms = rattled("CH3OH", 3)
        forces = pot(graph_of(atoms, pot))["forces"].detach()
        h = 1e-5
        for a, d in [(0, 0), (1, 2), (4, 1), (5, 0)]:
            e = []
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.positions[a, d] += sign * h
                e.append(float(pot(graph_of(shifted, pot), compute_forces=False)["energy"].detach()))
            assert -(e[0] - e[1]) / (2 * h) == pytest.approx(float(forces[a, d]), rel=1e-6, abs=1e-8)

    def test_stress_matches_finite_differences(self):
        pot = self.potential(torch.float64)
        atoms = periodic_box(4)
        out = pot(graph_of(atoms, pot), compute_stress=True)
        stress = out["stress"][0].detach()
        volume = atoms.get_volume()
        torch.testing.assert_close(out["virial"][0], -stress * volume)
        for i, j in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
            assert strain_derivative(pot, atoms, i, j) == pytest.approx(float(stress[i, j]), rel=1e-5, abs=1e-9)
        assert stress.abs().max() > 1e-6

    # --- locality -----------------------------------------------------------------------

    def test_smooth_at_the_cutoff(self):
        """An atom crossing r_cut: energy and forces do not jump. Short-range models: both are
        flat there. Long-range models: the atom still interacts, so the energy step is the work
        of its force and the force change shrinks with the step (no jump)."""
        pot = self.potential(torch.float64)
        base = rattled("H2O", 5)
        r_cut = pot.r_cut

        def across(delta):
            results = []
            for d in (-delta, delta):
                atoms = base.copy()
                atoms += Atoms("H", positions=[base.positions[0] + [0.0, 0.0, r_cut + d]])
                results.append(pot(graph_of(atoms, pot)))
            step = float((results[0]["energy"] - results[1]["energy"]).detach())
            force = float(0.5 * (results[0]["forces"][-1, 2] + results[1]["forces"][-1, 2]).detach())
            return step, force, (results[0]["forces"] - results[1]["forces"]).detach()

        step, force, change = across(1e-4)
        work = 2e-4 * force if self.long_range else 0.0
        assert step == pytest.approx(work, abs=1e-8)
        if not self.long_range:
            assert float(change.abs().max()) < 1e-6
        else:
            assert float(across(1e-5)[2].abs().max()) < 0.2 * float(change.abs().max()) + 1e-9

    def test_additivity_far_apart(self):
        """Short-range models: molecules 3 r_cut apart do not interact. Long-range models: they
        do (the block acts beyond the cutoff), and the interaction converges with distance (to
        zero for Ewald messages; learned charges constrained to the total charge share it over
        the whole structure, as in SpookyNet or AIMNet2, so fragments keep a constant shift and
        a 1/r tail)."""
        pot = self.potential(torch.float64)
        a, b = rattled("CH3OH", 6), rattled("H2O", 7)
        e_sum = pot(graph_of(a, pot))["energy"] + pot(graph_of(b, pot))["energy"]
        interaction = []
        for distance in (3 * pot.r_cut, 300 * pot.r_cut, 3000 * pot.r_cut):
            far = b.copy()
            far.positions += [distance, 0, 0]
            interaction.append(float((pot(graph_of(a + far, pot))["energy"] - e_sum).detach()))
        if not self.long_range:
            assert interaction[0] == pytest.approx(0.0, abs=1e-10)
        else:
            assert abs(interaction[0]) > 1e-7
            assert abs(interaction[1] - interaction[2]) < 1e-2 * abs(interaction[0])

    def test_isolated_atoms_without_edges(self):
        """A graph with no edges (atoms farther apart than r_cut: a dilute gas) gives finite
        energies equal to the single-atom energies, zero forces and stress, eager and scripted."""
        pot = self.potential(torch.float64)
        d = 2 * pot.r_cut
        gas = Atoms("HCO", positions=[[0, 0, 0], [d, 0, 0], [0, d, 0]], cell=[3 * d] * 3, pbc=True)
        graph = graph_of(gas, pot)
        assert graph[G.EDGE_INDEX].shape[1] == 0
        singles = sum(pot(graph_of(Atoms(z), pot))["energy"] for z in "HCO")
        results = [model(graph, compute_forces=True, compute_stress=True) for model in (pot, torch.jit.script(pot))]
        for out in results:
            if self.long_range:  # the atoms still interact: finite, and scripted equals eager
                assert bool(torch.isfinite(out["forces"]).all()) and bool(torch.isfinite(out["stress"]).all())
                for key in ("energy", "forces", "stress"):
                    torch.testing.assert_close(out[key], results[0][key], rtol=1e-10, atol=1e-12)
                continue
            torch.testing.assert_close(out["energy"], singles, rtol=1e-12, atol=1e-10)
            assert float(out["forces"].abs().max()) == 0.0
            assert float(out["stress"].abs().max()) == 0.0

    def test_batch_equals_single_calls(self, dtype):
        pot = self.potential(dtype)
        systems = [rattled("CH3CH2OH", 8), periodic_box(9), rattled("H2O", 10)]
        graphs = [graph_of(s, pot) for s in systems]
        batch = G.collate(graphs)
        out = pot(batch, compute_stress=True)
        start = 0
        for k, g in enumerate(graphs):
            single = pot(g, compute_stress=True)
            n = g[G.POSITIONS].shape[0]
            torch.testing.assert_close(out["energy"][k : k + 1], single["energy"], **TOL[dtype])
            torch.testing.assert_close(out["forces"][start : start + n], single["forces"], **TOL[dtype])
            if systems[k].pbc.any():
                torch.testing.assert_close(out["stress"][k], single["stress"][0], **TOL[dtype])
            start += n

    def test_mirror_order_and_shuffled_edges_agree(self):
        """Graphs come in mirror order (edge k + E/2 reverses edge k) and batches keep it; a
        model's once-per-pair distance features give the energies, forces and stress of the
        same graph with its edges shuffled (the every-edge path), periodic images included."""
        from mlff.neighbors import mirrored_half

        pot = self.potential(torch.float64)
        graphs = [graph_of(periodic_box(2, box=4.0), pot), graph_of(rattled("CH3CH2OH", 3), pot)]
        for g in graphs + [G.collate(graphs)]:
            assert mirrored_half(g[G.EDGE_INDEX], G.edge_vectors(g)) == g[G.EDGE_INDEX].shape[1] // 2 > 0
            perm = torch.randperm(g[G.EDGE_INDEX].shape[1], generator=torch.Generator().manual_seed(0))
            shuffled = dict(g)
            shuffled[G.EDGE_INDEX] = g[G.EDGE_INDEX][:, perm]
            shuffled[G.UNIT_SHIFTS] = g[G.UNIT_SHIFTS][perm]
            assert mirrored_half(shuffled[G.EDGE_INDEX], G.edge_vectors(shuffled)) == 0
            a, b = pot(g, compute_stress=True), pot(shuffled, compute_stress=True)
            for key in ("energy", "forces"):
                torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)
            periodic = g[G.PBC].all(1)  # a molecule's "stress" divides by a zero volume
            torch.testing.assert_close(a["stress"][periodic], b["stress"][periodic], rtol=1e-12, atol=1e-12)

    def test_edge_chunks_match_one_piece(self, monkeypatch):
        """A memory budget small enough to chunk every layer's edges and per-atom work
        (recomputed in the backward pass) gives the one-piece energies, forces, stress and, in training mode, the
        parameter gradients of a force loss; in mirror order and shuffled."""
        from mlff.nn import edge_chunks

        monkeypatch.setattr(edge_chunks, "MIN_CHUNK_EDGES", 16)
        monkeypatch.setattr(edge_chunks, "MIN_CHUNK_ATOMS", 4)
        pot = self.potential(torch.float64).eval()
        g = graph_of(periodic_box(2, box=4.0), pot)
        shuffled = dict(g)
        perm = torch.randperm(g[G.EDGE_INDEX].shape[1], generator=torch.Generator().manual_seed(1))
        shuffled[G.EDGE_INDEX], shuffled[G.UNIT_SHIFTS] = g[G.EDGE_INDEX][:, perm], g[G.UNIT_SHIFTS][perm]
        for graph in (g, shuffled):
            pot.set_memory_budget(0)
            one = pot(graph, compute_stress=True)
            assert pot.model.edge_chunk == 0
            pot.set_memory_budget(1e-9)
            # sender windows (edge_chunks.sender_windows) on, then off (whole node tensors)
            for rows_per_atom in (1e9, 0):
                monkeypatch.setattr(edge_chunks, "MAX_WINDOW_ROWS_PER_ATOM", rows_per_atom)
                chunked = pot(graph, compute_stress=True)
                assert 0 < pot.model.edge_chunk < graph[G.EDGE_INDEX].shape[1]
                assert 0 < pot.model.atom_chunk < graph[G.POSITIONS].shape[0]
                for key in ("member_energy", "member_forces", "member_stress"):
                    torch.testing.assert_close(chunked[key], one[key], rtol=1e-12, atol=1e-12)
        pot.train()
        grads = []
        for budget in (0, 1e-9):
            pot.set_memory_budget(budget)
            pot.zero_grad()
            out = pot(g)
            (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
            grads.append(torch.cat([p.grad.flatten() for p in pot.parameters() if p.grad is not None]))
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-10)

    # --- periodicity --------------------------------------------------------------------

    def test_supercell_is_extensive(self):
        pot = self.potential(torch.float64)
        cell = periodic_box(11, n_molecules=2, box=4.0)  # 4 A cell < 2 r_cut: many images
        e1 = float(pot(graph_of(cell, pot))["energy"].detach())
        big = cell.repeat((2, 1, 2))
        e4 = float(pot(graph_of(big, pot))["energy"].detach())
        assert e4 == pytest.approx(4 * e1, rel=1e-10)

    # --- deployment ---------------------------------------------------------------------

    def test_torchscript_matches_eager(self):
        from e3nn.util import jit

        pot = self.potential(torch.float64)
        scripted = jit.compile(pot)
        for atoms in (rattled("CH3CH2OH", 12), periodic_box(13)):
            g = graph_of(atoms, pot)
            eager = pot(g, compute_stress=bool(atoms.pbc.any()))
            script = scripted(g, True, bool(atoms.pbc.any()))
            for key in eager:
                torch.testing.assert_close(script[key], eager[key], rtol=1e-10, atol=1e-12)

    def test_model_file_round_trip(self, tmp_path):
        from mlff.io import load_model, load_model_with_metadata, save_model

        pot = self.potential(torch.float64)
        path = tmp_path / "model.pt"
        save_model(pot, path, metadata={"note": "test"})
        raw = torch.load(path, weights_only=True)  # plain data only
        assert raw["format"] == "mlff-model"
        loaded, meta = load_model_with_metadata(path)
        assert meta["note"] == "test" and meta["elements"] == ELEMENTS
        g = graph_of(rattled("CH3OH", 14), pot)
        torch.testing.assert_close(loaded(g)["energy"], pot(g)["energy"], rtol=0, atol=0)
        assert load_model(path).model.config == pot.model.config
