"""Alchemical insertion of an LJ particle through the hydration engine's sampler and estimators,
against the JZG (1993) equation of state: a short, small version of benchmarks/lj_insertion.py."""
from mlff.md_workflows.free_energy import lj_eos
from mlff.md_workflows.free_energy.lj_fluid import LJFluid, alchemical_insertion


def test_alchemical_mu_ex_matches_equation_of_state(tmp_path):
    fluid = LJFluid(n_particles=128, density=0.5, temperature=2.0)
    res = alchemical_insertion(fluid, tmp_path / "leg", lambdas=(0.0, 0.25, 0.5, 0.75, 1.0),
                               equilibration_tau=5.0, production_tau=100.0, sample_every_tau=0.25,
                               platform="CPU")
    eos = lj_eos.excess_chemical_potential(0.5, 2.0)
    kn = lj_eos.kn_excess_chemical_potential(0.5, 2.0)
    for name in ("MBAR", "BAR", "TI_cubic"):
        r = res[name]
        assert 0 < r["err"] < 0.35, (name, r)  # ~0.2 epsilon (0.1 kT) with this much sampling
        # the two equations of state differ by 0.03 epsilon here; allow that plus 3 sigma
        assert abs(r["mu_ex"] - eos) < 0.1 + 3 * r["err"], (name, r, eos, kn)
    assert res["min_neighbour_overlap"] > 0.03
