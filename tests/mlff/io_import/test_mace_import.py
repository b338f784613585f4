"""mace-torch models imported as mlff MACE reproduce mace-torch's own float64 numbers.

Two sources of references:
- fixtures/: small random-weight mace-torch models (several hyperparameter combinations, one
  saved in float32) with energies, forces and stress computed by mace-torch
  (fixtures/make_mace_fixtures.py, run in the peer venv; the references are committed, the
  pickles are not, and their tests skip when the pickles are absent);
- ../shared/pretrained/: three trained third-party models with mace-torch's references
  (skipped, with a message, when that folder is absent).
"""

import copy
import math
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from mlff.calculators.ase import MLFFCalculator
from mlff.io import load_model_with_metadata, save_model
from mlff.errors import ModelFileError
from mlff.io_import.e3nn_weights import UnsupportedModelError, contraction_weights
from mlff.io_import.mace_torch import import_mace, read_config
from mlff.io_import.safe_pickle import load_pickled
from mlff.nn.symmetric_contraction import SymmetricContraction

FIXTURES = Path(__file__).parent / "fixtures"


def model_fixture(name: str) -> Path:
    """A random-weight mace-torch fixture model. The pickles are not committed (pickled model
    files stay out of git); make them with fixtures/make_mace_fixtures.py in the peer venv."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} is absent: run tests/mlff/io_import/fixtures/make_mace_fixtures.py "
                    "(needs mace-torch, made in the peer venv)")
    return path
FIXTURE_MODELS = sorted(FIXTURES.glob("*.model"))
SHARED = Path(__file__).resolve().parents[4] / "shared" / "pretrained"
REAL = {"mace_ani1x_small": "ani500k_small_CC.model", "mace_spice_2022": "MACE_SPICE.model",
        "mace_swa_L1": "mace_swa.model"}

#: the issue's bar (float64): energies to 1e-6 relative, forces to 1e-5 eV/A
ENERGY_RTOL = 1e-6
FORCE_ATOL = 1e-5
STRESS_ATOL = 1e-7  # eV/A^3


def assert_reproduces(potential, references):
    calc = MLFFCalculator(potential)
    for ref in references:
        atoms = ref.copy()
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        assert abs(energy - ref.info["mace_energy"]) <= ENERGY_RTOL * abs(ref.info["mace_energy"]), \
            (ref.get_chemical_formula(), energy, ref.info["mace_energy"])
        forces = atoms.get_forces()
        error = np.abs(forces - ref.arrays["mace_forces"]).max()
        if error > FORCE_ATOL:
            # extxyz stores positions to 1e-8 A, so mace-torch computed its forces at positions
            # up to 5e-9 A away from these; on a stiff frame (an H at 0.63 A in the SPICE set)
            # that alone moves forces by ~1e-5 eV/A. Allow the bar plus twice that spread.
            spread = _rounding_spread(calc, ref, forces)
            assert error <= FORCE_ATOL + 2 * spread, (ref.get_chemical_formula(), error, spread)
        if "mace_stress" in ref.info:
            np.testing.assert_allclose(atoms.get_stress(), ref.info["mace_stress"], rtol=0, atol=STRESS_ATOL)


def _rounding_spread(calc, ref, forces, trials=4):
    """Largest force change (eV/A) from moving the atoms within the extxyz rounding (5e-9 A)."""
    rng = np.random.default_rng(0)
    spread = 0.0
    for _ in range(trials):
        moved = ref.copy()
        moved.positions += rng.uniform(-5e-9, 5e-9, moved.positions.shape)
        moved.calc = calc
        spread = max(spread, float(np.abs(moved.get_forces() - forces).max()))
    return spread


def _fixture_cases():
    """(model, head, reference): one reference per head of a multi-head fixture
    (``<name>.<head>.extxyz``), else ``<name>.extxyz`` with head None."""
    cases = []
    for path in FIXTURE_MODELS:
        if path.with_suffix(".extxyz").exists():
            cases.append((path, None, path.with_suffix(".extxyz")))
        for ref in sorted(FIXTURES.glob(f"{path.stem}.*.extxyz")):
            cases.append((path, ref.name[len(path.stem) + 1:-len(".extxyz")], ref))
    return cases


@pytest.mark.parametrize("path, head, reference", _fixture_cases(),
                         ids=[f"{p.stem}-{h}" if h else p.stem for p, h, _ in _fixture_cases()])
def test_random_mace_torch_models_are_reproduced(path, head, reference):
    """Every fixture (ZBL pair repulsion and both heads of the multi-head one included)."""
    potential, meta = import_mace(path, head=head)
    assert meta["imported_from"]["contraction_residual"] < 100  # machine epsilons
    assert meta["imported_from"]["head"] == (head or "Default")
    assert ("zbl" in potential.model.config.priors) == path.stem.startswith(("zbl", "multihead"))
    assert_reproduces(potential, ase.io.read(reference, ":"))


def test_multi_head_selection():
    """The default head is the one named "default"; heads give different models; no default
    or an unknown head is an error that lists the heads."""
    path = model_fixture("multihead_L1_ell2_corr3.model")
    default, meta = import_mace(path)
    assert meta["imported_from"]["head"] == "Default"
    pt, _ = import_mace(path, head="pt_head")
    atoms = ase.io.read(FIXTURES / "multihead_L1_ell2_corr3.Default.extxyz", "3")
    energies = []
    for potential in (default, pt):
        atoms.calc = MLFFCalculator(potential)
        energies.append(atoms.get_potential_energy())
    assert abs(energies[0] - energies[1]) > 1.0
    assert default.model.config.scale == pytest.approx(0.8) and pt.model.config.scale == pytest.approx(1.7)
    with pytest.raises(UnsupportedModelError, match=r"'dft' is not in this model; its heads are \['pt_head', 'Default'\]"):
        import_mace(path, head="dft")
    root = _with(load_pickled(path), (), heads=["pbe", "r2scan"])
    with pytest.raises(UnsupportedModelError, match="none named 'default'.*--head"):
        read_config(root)
    assert read_config(root, head="r2scan").scale == pytest.approx(0.8)


def test_zbl_model_is_a_normal_model_file(tmp_path):
    """A ZBL import saves (its prior options in the config), reloads and compiles to the same
    numbers on a squeezed molecule, where the repulsion is several eV."""
    from mlff.graph import atoms_to_graph

    potential, meta = import_mace(model_fixture("zbl_L1_ell2_corr2.model"))
    zbl = potential.model.config.priors["zbl"]
    assert zbl["weight"] == pytest.approx(1.7) and zbl["coulomb"] == 14.3996
    save_model(potential, tmp_path / "zbl.pt", metadata=meta)
    loaded, _ = load_model_with_metadata(tmp_path / "zbl.pt")
    assert loaded.model.config.priors == potential.model.config.priors
    ref = ase.io.read(FIXTURES / "zbl_L1_ell2_corr2.extxyz", "-2")  # squeezed formic acid
    graph = atoms_to_graph(ref, loaded.r_cut, loaded.elements, dtype=torch.float64)
    for model in (loaded, torch.jit.script(loaded)):
        out = model(graph, compute_forces=True)
        assert float(out["energy"]) == pytest.approx(ref.info["mace_energy"], rel=1e-10)


@pytest.mark.parametrize("folder", sorted(REAL))
def test_real_models_are_reproduced(folder):
    path = SHARED / folder / REAL[folder]
    if not path.exists():
        pytest.skip(f"{path} is absent (third-party models live in ../shared/pretrained)")
    potential, meta = import_mace(path)
    assert meta["imported_from"]["class"] == "ScaleShiftMACE"
    assert_reproduces(potential, ase.io.read(SHARED / folder / "reference_float64.extxyz", ":"))


def test_symmetric_contraction_projection_loses_nothing():
    """mace's contraction, evaluated from its own U tensors and weights (its definition,
    written here as dense einsums), equals mlff's reduced-basis contraction with the projected
    weights, on random features."""
    root = load_pickled(model_fixture("mace_L2_ell2_corr3_3layers.model")).child("products").child("0")
    contractions = list(root.child("symmetric_contractions").child("contractions").children.values())
    torch.manual_seed(0)
    n, channels, dim = 5, 6, 9  # max_ell 2
    a = torch.randn(n, channels, dim, dtype=torch.float64)
    species = torch.tensor([0, 1, 2, 1, 0])
    for (l, p), contraction in zip([(0, 1), (1, -1), (2, 1)], contractions):
        t = contraction.tensors()
        lower = contraction.child("weights").tensors()
        mace_out = torch.zeros(n, channels, 2 * l + 1, dtype=torch.float64)
        for degree, w in ((3, t["weights_max"]), (2, lower["0"]), (1, lower["1"])):
            u = t[f"U_matrix_{degree}"]
            if l == 0:
                u = u.unsqueeze(0)
            letters = "pqrs"[:degree]
            x = [a] * degree
            # sum_k w[z, k, c] U[m, i1.., k] A[c, i1] ... A[c, id]
            spec = f"m{letters}k,nkc," + ",".join(f"nc{ch}" for ch in letters) + "->ncm"
            mace_out += torch.einsum(spec, u, w[species], *x)
        sc = SymmetricContraction(channels, 2, [(l, p)], 3, 3, dtype=torch.float64)
        weights, residual = contraction_weights(contraction, 2, l, p, 3)
        assert residual < 100
        with torch.no_grad():
            sc.weights.copy_(weights)
        ours = sc(a, species).view(n, channels, 2 * l + 1)
        torch.testing.assert_close(ours, mace_out, rtol=1e-11, atol=1e-11)


def test_imported_model_is_a_normal_model_file(tmp_path):
    """Saved, reloaded (weights_only), TorchScript-compiled and stacked into an ensemble, the
    imported model gives the same numbers; its metadata names the source and its checksum."""
    from mlff.models.ensemble import stack_members

    path = model_fixture("resfirst_L1_ell2_corr2_f32.model")
    potential, meta = import_mace(path)
    save_model(potential, tmp_path / "imported.pt", metadata=meta)
    loaded, metadata = load_model_with_metadata(tmp_path / "imported.pt")
    assert metadata["imported_from"]["sha256"] == meta["imported_from"]["sha256"]
    ref = ase.io.read(path.with_suffix(".extxyz"), "-1")  # periodic frame
    from mlff.graph import atoms_to_graph

    graph = atoms_to_graph(ref, loaded.r_cut, loaded.elements, dtype=torch.float64)
    expected = potential(graph, compute_stress=True)
    for model in (loaded, torch.jit.script(loaded), stack_members([potential, loaded])):
        out = model(graph, compute_forces=True, compute_stress=True)
        torch.testing.assert_close(out["energy"], expected["energy"], rtol=1e-12, atol=0)
        torch.testing.assert_close(out["forces"], expected["forces"], rtol=0, atol=1e-10)
        torch.testing.assert_close(out["stress"], expected["stress"], rtol=0, atol=1e-12)


def test_imported_model_in_openmm_matches_ase():
    """The imported model through the OpenMM adapter (PythonForce route) equals ASE."""
    import openmm

    from mlff.calculators.openmm import make_python_force
    from mlff.units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL

    potential, _ = import_mace(model_fixture("plainfirst_L0_ell3_corr3.model"))
    atoms = ase.io.read(FIXTURES / "plainfirst_L0_ell3_corr3.extxyz", "5")  # rattled ethanol
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    system.addForce(make_python_force(potential, atoms))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * ANGSTROM_TO_NM)
    state = context.getState(getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert math.isclose(energy, atoms.info["mace_energy"] * EV_TO_KJ_PER_MOL, rel_tol=1e-9)


def _with(root, path, **changes):
    root = copy.deepcopy(root)
    node = root
    for key in path:
        node = node.child(key)
    for name, value in changes.items():
        if name == "qualname":
            node.qualname = value
        else:
            node.attrs[name] = value
    return root


@pytest.mark.parametrize("path, changes, message", [
    ((), {"heads": ["pbe", "default"]}, "atomic energies for 2 head"),
    ((), {"use_agnostic_product": True}, "use_agnostic_product"),
    (("interactions", "1"), {"qualname": "mace.modules.blocks.RealAgnosticDensityInteractionBlock"},
     "RealAgnosticDensityInteractionBlock"),
    (("readouts", "1"), {"qualname": "mace.modules.blocks.GeneralNonLinearBiasReadoutBlock"},
     "GeneralNonLinearBiasReadoutBlock"),
])
def test_unsupported_parts_are_named(path, changes, message):
    root = load_pickled(model_fixture("plainfirst_L0_ell3_corr3.model"))
    read_config(root)  # the unchanged model is fine
    with pytest.raises((UnsupportedModelError, ModelFileError), match=message):
        read_config(_with(root, path, **changes))


def test_unsupported_zbl_is_named():
    """A pair repulsion that is not mace-torch 0.3's ZBLBasis, or lacks its buffers, is refused."""
    root = load_pickled(model_fixture("zbl_L1_ell2_corr2.model"))
    with pytest.raises(UnsupportedModelError, match="the pair repulsion is a .*OtherRepulsion"):
        read_config(_with(root, ("pair_repulsion_fn",), qualname="mace.modules.radial.OtherRepulsion"))
    old = copy.deepcopy(root)
    del old.child("pair_repulsion_fn").attrs["_buffers"]["covalent_radii"]
    with pytest.raises(UnsupportedModelError, match=r"lacks \['covalent_radii'\].*older than 0.3"):
        read_config(old)


def test_cli_import(tmp_path):
    out = tmp_path / "imported.pt"
    cmd = [sys.executable, "-m", "mlff.md_workflows.cli", "import", "mace",
           str(model_fixture("plainfirst_L1_ell3_corr1.model")), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "elements [1, 6, 8]" in done.stdout and out.exists()
    head = subprocess.run(cmd[:5] + [str(model_fixture("multihead_L1_ell2_corr3.model")), "-o",
                                     str(tmp_path / "pt.pt"), "--head", "pt_head"], capture_output=True, text=True)
    assert head.returncode == 0 and "head pt_head, ZBL pair repulsion" in head.stdout, head.stderr
    unknown = subprocess.run(cmd[:5] + [str(model_fixture("multihead_L1_ell2_corr3.model")), "-o",
                                        str(tmp_path / "x.pt"), "--head", "dft"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "its heads are ['pt_head', 'Default']" in unknown.stderr
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stderr
    bad = subprocess.run(cmd[:5] + [str(FIXTURES / "plainfirst_L1_ell3_corr1.extxyz"), "-o",
                                    str(tmp_path / "x.pt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a torch.save zip archive" in bad.stderr
