"""The RBFE network analysis (cycle closure, per-ligand values, the edge table), the config's
errors, ligand placement, and the members' reweighting of an ML edge (exact on a Gaussian)."""
from __future__ import annotations

import numpy as np
import pytest

from mlff.md_workflows.free_energy.rbfe.config import RBFEConfig
from mlff.md_workflows.free_energy.rbfe.ml_uncertainty import member_ddG_kT
from mlff.md_workflows.free_energy.rbfe.network import (
    Edge, cycle_basis, cycle_closures, edge_table, error_statistics, ligand_values)
from mlff.md_workflows.free_energy.rbfe.placement import place_in_site, reference_atoms, site_axis

TRUE = {"A": 0.0, "B": -1.0, "C": 0.5, "D": -2.0}


def _edges(pairs, noise=None):
    noise = noise or {}
    return [Edge(a, b, TRUE[b] - TRUE[a] + noise.get((a, b), 0.0), 0.1) for a, b in pairs]


def test_a_consistent_network_closes_and_recovers_the_ligands():
    edges = _edges([("A", "B"), ("B", "C"), ("C", "A"), ("C", "D"), ("D", "A")])
    cycles = cycle_closures(edges)
    assert len(cycles) == 2  # 5 edges - 4 ligands + 1
    for c in cycles:
        assert c["cycle_closure"] == pytest.approx(0.0, abs=1e-12) and c["within_2_sigma"]
        assert c["system"].split("~")[0] == c["system"].split("~")[-1]  # a closed walk
    values = ligand_values(edges, experiment=TRUE)
    for name, (g, err) in values.items():
        assert g == pytest.approx(TRUE[name], abs=1e-9) and 0 < err < 0.1


def test_cycle_closure_is_the_signed_sum_whatever_the_edge_directions():
    # A->B, C->B (reversed), C->A: walking A->B->C->A uses C->B backwards
    edges = [Edge("A", "B", 1.0, 0.1), Edge("C", "B", 0.5, 0.2), Edge("C", "A", -0.2, 0.2)]
    (cycle,) = cycle_closures(edges)
    # ddG(A->B) + ddG(B->C) + ddG(C->A) = 1.0 - 0.5 - 0.2
    assert abs(cycle["cycle_closure"]) == pytest.approx(0.3, abs=1e-12)
    assert cycle["cycle_closure_err"] == pytest.approx(0.3, abs=1e-12)
    assert cycle["closure_sigma"] == pytest.approx(1.0) and cycle["within_2_sigma"]
    (basis,) = cycle_basis(edges)
    walk = [(edges[i].a, edges[i].b)[::s] for i, s in basis]
    assert all(x[1] == y[0] for x, y in zip(walk, walk[1:] + walk[:1]))


def test_a_broken_cycle_is_flagged():
    edges = _edges([("A", "B"), ("B", "C"), ("C", "A")], noise={("B", "C"): 0.8})
    (cycle,) = cycle_closures(edges)
    assert abs(cycle["cycle_closure"]) == pytest.approx(0.8)
    assert cycle["closure_sigma"] == pytest.approx(0.8 / np.sqrt(0.03)) and not cycle["within_2_sigma"]


def test_least_squares_spreads_a_closure_error_by_the_weights():
    # one precise edge pair and one noisy edge: the noisy one takes the correction
    edges = [Edge("A", "B", 1.0, 0.01), Edge("B", "C", 1.0, 0.01), Edge("A", "C", 3.0, 1.0)]
    values = ligand_values(edges)
    assert values["B"][0] - values["A"][0] == pytest.approx(1.0, abs=1e-3)
    assert values["C"][0] - values["A"][0] == pytest.approx(2.0, abs=1e-3)
    assert sum(v for v, _ in values.values()) == pytest.approx(0.0, abs=1e-12)  # no experiment: mean 0


def test_network_in_pieces_and_bad_edges_are_refused():
    with pytest.raises(ValueError, match="more than one connected"):
        ligand_values(_edges([("A", "B"), ("C", "D")]))
    with pytest.raises(ValueError, match="twice"):
        cycle_basis(_edges([("A", "B"), ("B", "A")]))
    with pytest.raises(ValueError, match="itself"):
        cycle_basis([Edge("A", "A", 0.0, 0.1)])


def test_edge_table_and_statistics():
    rows = edge_table(_edges([("A", "B"), ("B", "D")]), experiment={"A": 0.0, "B": -1.5})
    assert rows[0]["experiment"] == pytest.approx(-1.5) and rows[1]["experiment"] is None
    stats = error_statistics([(r["ddG"], r["experiment"]) for r in rows if r["experiment"] is not None])
    assert stats == {"n": 1, "mue": pytest.approx(0.5), "rmse": pytest.approx(0.5)}
    assert error_statistics([]) is None


def _config(**kw):
    base = {"receptor": {"smiles": "c1ccccc1"}, "ligands": {"methane": "C", "ethane": {"smiles": "CC"}},
            "edges": [["methane", "ethane"]]}
    return RBFEConfig.from_dict({**base, **kw})


def test_config_errors_name_the_problem():
    assert _config().edges == (("methane", "ethane"),)
    assert _config(edges=["methane~ethane"]).edges == (("methane", "ethane"),)
    with pytest.raises(ValueError, match="unknown keys"):
        _config(windows=3)
    with pytest.raises(ValueError, match="two ligand names"):
        _config(edges=[["methane", "propane"]])
    with pytest.raises(ValueError, match="at least two"):
        _config(ligands={"methane": "C"})
    with pytest.raises(ValueError, match="exactly one of smiles and molecule_file"):
        _config(ligands={"a": {"experiment": -1.0}, "b": "C"}, edges=[["a", "b"]])
    with pytest.raises(ValueError, match="reference_atoms"):
        _config(ligands={"methane": {"smiles": "C", "reference_atoms": [0, 0, 1]}, "ethane": "CC"})
    with pytest.raises(ValueError, match="needs 'edges'"):
        RBFEConfig.from_dict({"receptor": "C", "ligands": {"a": "C", "b": "CC"}})
    assert _config(ligands={"methane": {"smiles": "C", "experiment": -1}, "ethane": "CC"}).experiment == {"methane": -1.0}


def _ring(n=12, radius=0.6):
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), 0.05 * np.cos(3 * angle)], axis=1) + [1.0, 2.0, 3.0]


def test_a_rod_is_threaded_through_a_ring_host():
    host = _ring()
    rod = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.30, 0.0, 0.0], [0.45, 0.05, 0.0]])
    posed = place_in_site(rod, host)
    assert posed.mean(axis=0) == pytest.approx(host.mean(axis=0), abs=1e-9)
    long_axis = np.linalg.svd(posed - posed.mean(axis=0))[2][0]
    assert abs(np.dot(long_axis, site_axis(host))) == pytest.approx(1.0, abs=1e-6)  # along the ring's axis
    assert np.linalg.norm(posed[1] - posed[0]) == pytest.approx(0.15)  # rigid
    refs = reference_atoms(posed, [6, 6, 8, 6], site_axis(host), host.mean(axis=0))
    assert len(set(refs)) == 3
    with pytest.raises(ValueError, match="collinear"):
        reference_atoms(rod[:3], [6, 6, 6], np.array([1.0, 0, 0]), rod[:3].mean(axis=0))


def test_member_ddG_reweights_to_the_analytic_answer():
    """States u0 = x^2/2 and u1 = (x - 1)^2/2 (ddG 0); member m adds a_m x to both, so its
    ddG is a_m exactly."""
    rng = np.random.default_rng(0)
    n = 20000
    x0, x1 = rng.normal(0.0, 1.0, n), rng.normal(1.0, 1.0, n)
    u_kln = [np.stack([x ** 2 / 2, (x - 1) ** 2 / 2]) for x in (x0, x1)]
    slopes = np.array([-0.3, 0.0, 0.4])
    deltas = [slopes[:, None] * x[None, :] for x in (x0, x1)]
    indices = [np.arange(n), np.arange(n)]
    assert member_ddG_kT(u_kln, deltas, indices) == pytest.approx(slopes, abs=0.03)


def test_network_result_keeps_a_failed_edge_out_of_the_network():
    from mlff.md_workflows.free_energy.rbfe.run import edges_csv, network_result

    cfg = RBFEConfig.from_dict({"receptor": "c1ccccc1", "ligands": {"A": {"smiles": "C", "experiment": 0.0},
                                                                    "B": {"smiles": "CC", "experiment": -1.0}, "C": "CCC"},
                                "edges": [["A", "B"], ["B", "C"], ["C", "A"]]})
    records = [{"ligand_a": "A", "ligand_b": "B", "ddG_kcal_mol": -1.2, "ddG_err_kcal_mol": 0.1},
               {"ligand_a": "B", "ligand_b": "C", "ddG_kcal_mol": 0.5, "ddG_err_kcal_mol": 0.1},
               {"ligand_a": "C", "ligand_b": "A", "ddG_kcal_mol": -1e4, "ddG_err_kcal_mol": float("nan")}]
    result = network_result(cfg, records)
    assert len(result["edges"]) == 3 and result["cycles"] == []
    assert any("C~A" in w and "failed" in w for w in result["warnings"])
    assert result["ligands"]["B"]["dG"] - result["ligands"]["A"]["dG"] == pytest.approx(-1.2)
    assert result["edge_statistics"] == {"n": 1, "mue": pytest.approx(0.2), "rmse": pytest.approx(0.2)}
    assert edges_csv(result["edges"]).splitlines()[1] == "A,B,-1.200,0.100,,-1.000"
