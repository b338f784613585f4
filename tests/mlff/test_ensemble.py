"""Deep ensembles held in one model: the shared model tests on an ensemble, members equal to
single models, identical members give zero spread, and the training loss is the members' sum."""

import pytest
import torch
from ase.build import molecule

from mlff.models.ensemble import extract_member, stack_members
from mlff.train.losses import loss_terms

from model_mixins import ELEMENTS, MODEL_OPTIONS, ModelTests, graph_of, periodic_box


#: the ensemble the tests use: 3 members, H C O (the model tests' elements)
ENSEMBLE = dict(MODEL_OPTIONS, ensemble_size=3, seed=1)


class TestMACEEnsemble(ModelTests):
    """Every property a single model has holds for the ensemble mean."""

    model_options = ENSEMBLE


def test_members_equal_their_single_models(small_potential):
    ens = small_potential(**ENSEMBLE)
    for atoms, stress in ((molecule("CH3CH2OH"), False), (periodic_box(3), True)):
        g = graph_of(atoms, ens)
        out = ens(g, compute_stress=stress)
        assert out["member_forces"].shape == (3, len(atoms), 3)
        for k in range(3):
            single = extract_member(ens, k)(g, compute_stress=stress)
            torch.testing.assert_close(single["energy"], out["member_energy"][k], rtol=1e-12, atol=1e-10)
            torch.testing.assert_close(single["forces"], out["member_forces"][k], rtol=1e-10, atol=1e-10)
            if stress:
                torch.testing.assert_close(single["stress"], out["member_stress"][k], rtol=1e-10, atol=1e-12)
        mean = out["member_forces"].mean(0)
        std = out["member_forces"].std(0, unbiased=False)
        torch.testing.assert_close(out["forces"], mean)
        torch.testing.assert_close(out["forces_std"], std * ens.std_scale)
        assert out["energy_std"].shape == (1,) and float(out["forces_std"].max()) > 0


def test_stack_inverts_extract_and_identical_members_have_no_spread(small_potential):
    ens = small_potential(**ENSEMBLE)
    g = graph_of(molecule("CH3CH2OH"), ens)
    restacked = stack_members([extract_member(ens, k) for k in range(3)]).eval()
    torch.testing.assert_close(restacked(g)["forces_std"], ens(g)["forces_std"], rtol=1e-10, atol=1e-12)
    same = stack_members([extract_member(ens, 1)] * 4).eval()
    out = same(g)
    assert same.num_members == 4
    assert float(out["forces_std"].abs().max()) == 0.0 and float(out["energy_std"].abs().max()) == 0.0
    torch.testing.assert_close(out["forces"], extract_member(ens, 1)(g)["forces"], rtol=1e-10, atol=1e-12)


def test_stack_refuses_mismatched_members(small_potential):
    a = extract_member(small_potential(**ENSEMBLE), 0)
    other = small_potential(elements=tuple(ELEMENTS), channels=4, radial_mlp=(8,), readout_mlp=4)
    with pytest.raises(ValueError, match="channels"):
        stack_members([a, other])
    with pytest.raises(IndexError, match="3 members"):
        extract_member(small_potential(**ENSEMBLE), 3)


def test_training_loss_is_the_sum_of_member_losses(small_potential):
    """Each member is fitted as if alone: the ensemble's loss terms are the members' sums."""
    from mlff.data.dataset import DataKeys, labelled_graph
    from mlff import graph as G

    atoms = molecule("CH3OH")
    atoms.info["energy"] = -150.0
    atoms.arrays["forces"] = torch.randn(len(atoms), 3, dtype=torch.float64).numpy()
    ens = small_potential(**ENSEMBLE).train()
    g = G.collate([labelled_graph(
        atoms, 4.0, DataKeys(energy="energy", forces="forces", stress=None, virial=None), ELEMENTS,
        dtype=torch.float64)])
    total = loss_terms(ens(g), g)
    singles = [loss_terms(extract_member(ens, k).train()(g), g) for k in range(3)]
    for key in ("energy", "forces"):
        torch.testing.assert_close(total[key], sum(s[key] for s in singles), rtol=1e-10, atol=0)
