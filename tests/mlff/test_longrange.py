"""The long-range block (config ``long_range``): the shared model tests with every option on
MACE and TensorNet, and the block's own checks (its Coulomb sums are those of
:func:`mlff.nn.ewald.coulomb_energy`, charges obey the total charge, periodic and aperiodic
Ewald messages agree for a molecule in a large box, outputs reach ASE and the model file)."""

import numpy as np
import pytest
import torch

from mlff import graph as G
from mlff.nn import ewald
from mlff.nn.longrange import LongRange

from model_mixins import (MODEL_OPTIONS, TENSORNET_OPTIONS, ModelTests, graph_of, periodic_box, rattled,
                          strain_derivative)


class TestMACECharges(ModelTests):
    model_options = {"long_range": "charges"}


class TestMACEEwaldMessages(ModelTests):
    model_options = {"long_range": "ewald_mp"}


class TestMACEBothEnsemble(ModelTests):
    model_options = {"long_range": "both", "ensemble_size": 2, "seed": 3}


class TestTensorNetCharges(ModelTests):
    base_options = TENSORNET_OPTIONS
    model_options = {"long_range": "charges"}


class TestTensorNetEwaldMessages(ModelTests):
    base_options = TENSORNET_OPTIONS
    model_options = {"long_range": "ewald_mp"}


class TestTensorNetBothEnsemble(ModelTests):
    base_options = TENSORNET_OPTIONS
    model_options = {"long_range": "both", "ensemble_size": 2, "seed": 3}


def _context(graph, dtype=torch.float64):
    return {"positions": graph[G.POSITIONS].to(dtype).unsqueeze(0), "cell": graph[G.CELL].to(dtype).unsqueeze(0),
            "pbc": graph[G.PBC], "ptr": graph[G.PTR], "batch": graph[G.BATCH],
            "total_charge": graph[G.TOTAL_CHARGE]}


@pytest.mark.parametrize("width", [0.0, 0.5])
def test_block_coulomb_is_the_reference_sum(width):
    """With its charges fixed, the block's per-atom Coulomb energies of a batch mixing a
    periodic box and a molecule sum, per structure, to :func:`ewald.coulomb_energy`."""
    r_cut = 5.0
    block = LongRange("charges", {"charge_width": width, "accuracy": 1e-8}, 4, r_cut, 1, num_species=3).double()
    systems = [periodic_box(0), rattled("CH3CH2OH", 1)]
    graphs = [G.atoms_to_graph(a, r_cut, [1, 6, 8]) for a in systems]
    batch = G.collate(graphs)
    rng = np.random.default_rng(0)
    charges = [torch.tensor(rng.normal(0, 0.4, len(a))) for a in systems]
    charges = [q - q.mean() for q in charges]
    fixed = torch.cat(charges).unsqueeze(0)
    block._charges = lambda features, onehot, ptr, context: fixed
    vectors = G.edge_vectors(batch).unsqueeze(0)
    energies = block(torch.zeros(1, fixed.shape[1], 4, dtype=torch.float64), batch[G.SPECIES],
                     batch[G.EDGE_INDEX], vectors, _context(batch))[0]
    ptr = batch[G.PTR].tolist()
    for k, (atoms, q) in enumerate(zip(systems, charges)):
        ref = ewald.coulomb_energy(q, torch.tensor(atoms.positions), torch.tensor(atoms.cell.array),
                                   bool(atoms.pbc.all()), r_cut=r_cut, accuracy=1e-8, width=width)
        assert float(energies[ptr[k]:ptr[k + 1]].sum()) == pytest.approx(float(ref), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("model_type", ["mace", "tensornet"])
def test_charges_sum_to_the_total_charge(small_potential, model_type):
    """Per structure of a batch, neutral and charged (``atoms.info["charge"]``), every member's
    charges add up to the total charge; the dipole is ``sum q r``."""
    base = MODEL_OPTIONS if model_type == "mace" else TENSORNET_OPTIONS
    pot = small_potential(**{**base, "long_range": "charges", "ensemble_size": 2})
    cation = rattled("CH3OH", 2)
    cation.info["charge"] = 1
    systems = [rattled("CH3CH2OH", 3), cation, periodic_box(4)]
    batch = G.collate([graph_of(a, pot) for a in systems])
    out = pot(batch, compute_stress=True)
    ptr = batch[G.PTR].tolist()
    for k, total in enumerate([0.0, 1.0, 0.0]):
        member_sums = out["member_charges"][:, ptr[k]:ptr[k + 1]].sum(1)
        torch.testing.assert_close(member_sums, torch.full_like(member_sums, total), rtol=0, atol=1e-12)
        dipole = (out["charges"][ptr[k]:ptr[k + 1], None] * batch[G.POSITIONS][ptr[k]:ptr[k + 1]]).sum(0)
        torch.testing.assert_close(out["dipole"][k], dipole)
    assert float(out["charges"].abs().max()) > 1e-3 and "charges_std" in out


@pytest.mark.parametrize("model_type", ["mace", "tensornet"])
def test_periodic_and_aperiodic_messages_agree_in_a_large_box(small_potential, model_type):
    """The Ewald messages' Fourier series over a 70 A cell and their direct pair sum are one
    function for a molecule: the energies of the periodic and isolated molecule agree."""
    base = MODEL_OPTIONS if model_type == "mace" else TENSORNET_OPTIONS
    pot = small_potential(**{**base, "long_range": "ewald_mp"})
    molecule = rattled("CH3CH2OH", 5)
    boxed = molecule.copy()
    boxed.set_cell([70.0, 70.0, 70.0])
    boxed.pbc = True
    boxed.positions += 35.0
    e_iso = pot(graph_of(molecule, pot))
    e_box = pot(graph_of(boxed, pot))
    torch.testing.assert_close(e_box["energy"], e_iso["energy"], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(e_box["forces"], e_iso["forces"], rtol=1e-7, atol=1e-8)
    plain = small_potential(**base)
    assert abs(float(plain(graph_of(molecule, plain))["energy"] - e_iso["energy"])) > 1e-6


def test_ase_calculator_reports_charges_and_dipole(small_potential):
    from mlff.calculators.ase import MLFFCalculator

    pot = small_potential(**MODEL_OPTIONS, long_range="both")
    atoms = rattled("CH3OH", 6)
    atoms.calc = MLFFCalculator(pot)
    charges = atoms.get_charges()
    assert charges.shape == (len(atoms),) and abs(charges.sum()) < 1e-10
    np.testing.assert_allclose(atoms.get_dipole_moment(), (charges[:, None] * atoms.positions).sum(0))
    plain = rattled("CH3OH", 6)
    plain.calc = MLFFCalculator(small_potential(**MODEL_OPTIONS))
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError):
        plain.get_charges()


def test_slab_is_a_clear_error(small_potential):
    pot = small_potential(**MODEL_OPTIONS, long_range="charges")
    slab = periodic_box(7)
    slab.pbc = [True, True, False]
    with pytest.raises(RuntimeError, match="periodic in all three directions or in none"):
        pot(graph_of(slab, pot))


def test_unknown_long_range_options_are_named():
    from mlff.models.mace import MACEConfig

    with pytest.raises(ValueError, match="valid"):
        MACEConfig(elements=(1, 8), long_range="pme")
    with pytest.raises(ValueError, match="charge_widht"):
        MACEConfig(elements=(1, 8), long_range="charges", long_range_options={"charge_widht": 1.0})
    with pytest.raises(ValueError, match="accuracy"):
        MACEConfig(elements=(1, 8), long_range="charges", long_range_options={"accuracy": 2.0})
    with pytest.raises(ValueError, match="mesh_order"):
        MACEConfig(elements=(1, 8), long_range="charges", long_range_options={"mesh_order": 4.5})
    with pytest.raises(ValueError, match="mesh_oversample"):
        MACEConfig(elements=(1, 8), long_range="charges", long_range_options={"mesh_oversample": 0.0})



@pytest.mark.parametrize("kind", ["charges", "ewald_mp"])
def test_particle_mesh_equals_ewald(small_potential, kind):
    """Particle-mesh Ewald (every periodic structure: ``mesh_atoms`` 0) gives the energies,
    forces and stress of the plain Ewald sums to their accuracy, and its own stress matches
    finite differences of its energy."""
    box = periodic_box(8, n_molecules=10, box=8.0)
    results = []
    for mesh_atoms in (0, 10_000):
        pot = small_potential(**MODEL_OPTIONS, long_range=kind, long_range_options={"mesh_atoms": mesh_atoms})
        results.append(pot(graph_of(box, pot), compute_stress=True))
    mesh_out, ewald_out = results
    # PME's spline error (mesh.OVERSAMPLE) on charges of up to 1.6 e at random initialisation
    torch.testing.assert_close(mesh_out["energy"], ewald_out["energy"], rtol=0, atol=1e-4)
    torch.testing.assert_close(mesh_out["forces"], ewald_out["forces"], rtol=0, atol=1e-4)
    torch.testing.assert_close(mesh_out["stress"], ewald_out["stress"], rtol=0, atol=1e-6)
    pot = small_potential(**MODEL_OPTIONS, long_range=kind, long_range_options={"mesh_atoms": 0})
    for i, j in [(0, 0), (1, 2)]:
        assert strain_derivative(pot, box, i, j) == pytest.approx(float(mesh_out["stress"][0, i, j]), rel=1e-5,
                                                                  abs=1e-9)


def test_mesh_order_and_oversampling_are_options(small_potential):
    """A coarser, higher-order mesh (order 8, no oversampling) stays close to the plain Ewald
    sums, and the options reach the block."""
    box = periodic_box(8, n_molecules=10, box=8.0)
    out, blocks = [], []
    for options in ({"mesh_atoms": 0, "mesh_order": 8, "mesh_oversample": 1.0}, {"mesh_atoms": 10_000}):
        pot = small_potential(**MODEL_OPTIONS, long_range="charges", long_range_options=options)
        out.append(pot(graph_of(box, pot)))
        blocks.append(pot.model.long_range[0])
    assert (blocks[0].mesh_order, blocks[0].mesh_oversample) == (8, 1.0)
    assert (blocks[1].mesh_order, blocks[1].mesh_oversample) == (6, 2.0)  # the defaults: old files unchanged
    # a few times less accurate than the default mesh's 1e-4 here (2.2e-4 eV, 1.1e-4 eV/A on
    # random-init charges up to 1.6 e; TIP3P water, 1,536 atoms: 2.5e-3 eV and 2.5e-5 eV/A)
    torch.testing.assert_close(out[0]["energy"], out[1]["energy"], rtol=0, atol=1e-3)
    torch.testing.assert_close(out[0]["forces"], out[1]["forces"], rtol=0, atol=5e-4)


def test_mesh_potential_of_point_charges():
    """The mesh's Coulomb potential at every charge of a triclinic cell is the Ewald sum's."""
    from mlff.nn import mesh

    rng = np.random.default_rng(1)
    cell = torch.tensor(np.diag([12.0, 13.0, 12.5]) + rng.normal(0, 0.5, (3, 3)))
    pos = torch.tensor(rng.uniform(0, 1, (60, 3))) @ cell
    q = torch.tensor(rng.normal(0, 1, 60))
    q = q - q.mean()
    alpha, k_cut = ewald.ewald_splitting(5.0, 1e-6)
    ref = ewald.ewald_kspace_potential(q[None], pos[None], cell[None], ewald.half_space_vectors(cell, k_cut),
                                       alpha, k_cut)[0]
    phi = mesh.coulomb_mesh_potential(q[None], pos[None], cell[None], alpha, k_cut, mesh.ORDER, mesh.OVERSAMPLE)[0]
    assert float((phi - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_particle_mesh_in_torchscript(small_potential):
    from e3nn.util import jit

    pot = small_potential(**MODEL_OPTIONS, long_range="both", long_range_options={"mesh_atoms": 0})
    g = graph_of(periodic_box(9), pot)
    eager, script = pot(g, compute_stress=True), jit.compile(pot)(g, True, True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(script[key], eager[key], rtol=1e-10, atol=1e-12)
