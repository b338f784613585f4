"""The D3(BJ) dispersion prior against the ``dftd3`` library (the reference implementation, a
compiled Fortran code independent of the tad-dftd3 tables our prior is built from): energies,
forces and stress of molecules and a triclinic periodic cell to 1e-6 eV, through the Potential
of both model types, an ensemble, TorchScript, the model file and the ASE calculator."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from mlff.graph import atoms_to_graph
from mlff.io import load_model, save_model
from mlff.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

from model_mixins import periodic_box

dftd3_interface = pytest.importorskip("dftd3.interface")


def dftd3_reference(atoms, functional="pbe", cutoffs_bohr=None):
    """``dftd3``'s two-body D3(BJ) (``atm=False``: s9 = 0) energy (eV), forces (eV/A) and
    stress (eV/A^3, ASE sign) of ``atoms``."""
    periodic = bool(atoms.pbc.any())
    model = dftd3_interface.DispersionModel(
        atoms.numbers, atoms.positions / BOHR_TO_ANGSTROM,
        np.array(atoms.cell) / BOHR_TO_ANGSTROM if periodic else None, atoms.pbc if periodic else None)
    if cutoffs_bohr is not None:
        disp2, cn = cutoffs_bohr
        model.set_realspace_cutoff(disp2, disp2, cn)
    res = model.get_dispersion(dftd3_interface.RationalDampingParam(method=functional, atm=False), grad=True)
    energy = float(res["energy"]) * HARTREE_TO_EV
    forces = -res["gradient"] * HARTREE_TO_EV / BOHR_TO_ANGSTROM
    stress = res["virial"] * HARTREE_TO_EV / atoms.get_volume() if periodic else None
    return energy, forces, stress


def difference(with_d3, plain, atoms, stress=False):
    """Energy, forces (and stress) of ``with_d3`` minus ``plain`` on ``atoms``."""
    g = atoms_to_graph(atoms, plain.r_cut, plain.elements, dtype=torch.float64)
    a, b = with_d3(g, compute_stress=stress), plain(g, compute_stress=stress)
    out = [float(a["energy"] - b["energy"]), (a["forces"] - b["forces"]).numpy()]
    if stress:
        out.append((a["stress"] - b["stress"])[0].numpy())
    return out


@pytest.mark.parametrize("model_type", ["mace", "tensornet"])
def test_d3_adds_dftd3s_energy_and_forces_to_molecules(small_potential, model_type):
    plain = small_potential(model_type=model_type, seed=3)
    with_d3 = small_potential(model_type=model_type, seed=3, priors={"d3": {"functional": "pbe"}})
    assert with_d3.model.needs_context and not plain.model.needs_context
    for name in ["CH3CH2OH", "C6H6", "CH3CONH2", "H2O"]:
        atoms = molecule(name)
        atoms.rattle(0.05, seed=1)
        energy, forces = difference(with_d3, plain, atoms)
        ref_energy, ref_forces, _ = dftd3_reference(atoms)
        assert ref_energy < -1e-3  # something to compare: dispersion is attractive
        assert energy == pytest.approx(ref_energy, abs=1e-6)
        np.testing.assert_allclose(forces, ref_forces, atol=1e-6)


def test_d3_in_a_triclinic_periodic_cell_energy_forces_stress(small_potential):
    """12 atoms in a skewed 6 A cell: images out to 31.75 A (60 Bohr), self-images included."""
    plain = small_potential(seed=4)
    with_d3 = small_potential(seed=4, priors={"d3": {"functional": "pbe"}})
    atoms = periodic_box(5)
    energy, forces, stress = difference(with_d3, plain, atoms, stress=True)
    ref_energy, ref_forces, ref_stress = dftd3_reference(atoms)
    assert energy == pytest.approx(ref_energy, abs=1e-6)
    np.testing.assert_allclose(forces, ref_forces, atol=1e-6)
    np.testing.assert_allclose(stress, ref_stress, atol=1e-7)  # eV/A^3 (1e-7: 16 MPa)
    assert np.abs(ref_stress).max() > 1e-4


def test_d3_options_functional_parameters_and_cutoffs(small_potential):
    """Explicit parameters equal the functional's; other cutoffs match dftd3 at those cutoffs."""
    plain = small_potential(seed=5)
    atoms = periodic_box(6)
    pbe = {"s6": 1.0, "s8": 0.7875, "a1": 0.4289, "a2": 4.4407}  # Grimme 2011, D3(BJ)-PBE
    explicit = small_potential(seed=5, priors={"d3": {**pbe, "cutoff": 9.0, "cn_cutoff": 7.0}})
    energy, forces = difference(explicit, plain, atoms)
    ref_energy, ref_forces, _ = dftd3_reference(atoms, cutoffs_bohr=(9.0 / BOHR_TO_ANGSTROM, 7.0 / BOHR_TO_ANGSTROM))
    assert energy == pytest.approx(ref_energy, abs=1e-6)
    np.testing.assert_allclose(forces, ref_forces, atol=1e-6)
    full, _, _ = dftd3_reference(atoms)
    assert abs(full - ref_energy) > 1e-3  # the shorter cutoffs did change the energy
    b3lyp = small_potential(seed=5, priors={"d3": {"functional": "b3lyp"}})
    mol = molecule("CH3CH2OH")
    assert difference(b3lyp, plain, mol)[0] == pytest.approx(dftd3_reference(mol, "b3lyp")[0], abs=1e-6)


def test_d3_ensemble_members_each_get_the_full_dispersion_force(small_potential):
    """D3 is evaluated once at the mean of the members' copies; every member's force and stress
    still carry all of it."""
    plain = small_potential(ensemble_size=3, seed=6)
    with_d3 = small_potential(ensemble_size=3, seed=6, priors={"d3": {"functional": "pbe"}})
    atoms = periodic_box(7)
    g = atoms_to_graph(atoms, plain.r_cut, plain.elements, dtype=torch.float64)
    a, b = with_d3(g, compute_stress=True), plain(g, compute_stress=True)
    ref_energy, ref_forces, ref_stress = dftd3_reference(atoms)
    np.testing.assert_allclose((a["member_energy"] - b["member_energy"]).numpy(), ref_energy, atol=1e-6)
    for k in range(3):
        np.testing.assert_allclose((a["member_forces"][k] - b["member_forces"][k]).numpy(), ref_forces, atol=1e-6)
        np.testing.assert_allclose((a["member_stress"][k, 0] - b["member_stress"][k, 0]).numpy(), ref_stress,
                                   atol=1e-7)
    # the uncertainty is the learned part's alone
    torch.testing.assert_close(a["forces_std"], b["forces_std"], rtol=0, atol=1e-9)


def test_d3_torchscript_model_file_and_ase_calculator(small_potential, tmp_path):
    from mlff.calculators.ase import MLFFCalculator

    pot = small_potential(model_type="tensornet", seed=7, priors={"d3": {"functional": "pbe", "cutoff": 12.0}})
    atoms = periodic_box(8)
    g = atoms_to_graph(atoms, pot.r_cut, pot.elements, dtype=torch.float64)
    eager = pot(g, compute_stress=True)
    scripted = torch.jit.script(pot)(g, True, True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(scripted[key], eager[key], rtol=0, atol=1e-12)
    save_model(pot, tmp_path / "d3.pt")
    loaded = load_model(tmp_path / "d3.pt")
    assert loaded.model.config.priors == {"d3": {"functional": "pbe", "cutoff": 12.0}}
    torch.testing.assert_close(loaded(g)["energy"], eager["energy"], rtol=0, atol=0)
    atoms.calc = MLFFCalculator(model=tmp_path / "d3.pt")
    assert atoms.get_potential_energy() == pytest.approx(float(eager["energy"]), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), eager["forces"].numpy(), atol=1e-9)


@pytest.mark.parametrize("options, message", [
    ({}, "needs a functional"),
    ({"s6": 1.0, "s8": 0.8, "a1": 0.4}, r"missing \['a2'\]"),
    ({"functional": "no-such-functional"}, "no D3\\(BJ\\) parameters"),
    ({"functional": "pbe", "cutoff": -1.0}, "cutoffs must be positive"),
    ({"functional": "pbe", "s9": 1.0}, "unknown options"),
])
def test_d3_option_errors(small_potential, options, message):
    with pytest.raises(ValueError, match=message):
        small_potential(priors={"d3": options})
