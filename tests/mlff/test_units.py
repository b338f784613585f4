"""Unit constants agree with OpenMM's unit system (an independent source)."""

import pytest
from openmm import unit

from mlff import units


def test_energy_length_time_against_openmm():
    ev = (1.0 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA)
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(ev.value_in_unit(unit.kilojoule_per_mole), rel=1e-6)
    assert units.EV_TO_KCAL_PER_MOL == pytest.approx(ev.value_in_unit(unit.kilocalorie_per_mole), rel=1e-6)
    assert units.ANGSTROM_TO_NM == pytest.approx((1.0 * unit.angstrom).value_in_unit(unit.nanometer))
    assert units.FS_TO_PS == pytest.approx((1.0 * unit.femtosecond).value_in_unit(unit.picosecond))
    assert units.KB_EV_PER_K * units.EV_TO_KJ_PER_MOL == pytest.approx(
        (unit.MOLAR_GAS_CONSTANT_R * unit.kelvin).value_in_unit(unit.kilojoule_per_mole), rel=1e-6)


def test_inverse_pairs():
    assert units.EV_TO_KJ_PER_MOL * units.KJ_PER_MOL_TO_EV == pytest.approx(1.0)
    assert units.ANGSTROM_TO_NM * units.NM_TO_ANGSTROM == pytest.approx(1.0)
    assert units.EV_PER_A_TO_KJ_PER_MOL_PER_NM == pytest.approx(units.EV_TO_KJ_PER_MOL * 10.0)
    assert units.EV_PER_A3_TO_GPA == pytest.approx(160.21766, rel=1e-6)
