"""MACE: the shared model tests, plus MACE-specific checks of its parts."""

import pytest
import torch

from mlff.models.mace import MACEConfig
from mlff.nn.symmetric_contraction import SymmetricContraction, coupling_basis

from model_mixins import ModelTests


class TestMACE(ModelTests):
    """The shared model tests on a single MACE (the mixin's default options)."""


def test_coupling_basis_counts_match_reduced_tensor_products():
    """Independent check of the symmetric-power decomposition: e3nn's ReducedTensorProducts of
    Sym^2(0e + 1o + 2e) (cheap enough to run here)."""
    from e3nn import o3

    rtp = o3.ReducedTensorProducts("ij=ji", i="0e+1o+2e")
    counts = {str(ir): mul for mul, ir in rtp.irreps_out}
    assert coupling_basis([0, 1, 2], 2, 0, 1).shape[0] == counts["0e"]
    assert coupling_basis([0, 1, 2], 2, 1, -1).shape[0] == counts.get("1o", 0)
    assert coupling_basis([0, 1, 2], 2, 2, 1).shape[0] == counts["2e"]


def test_coupling_basis_is_equivariant_and_symmetric():
    from e3nn import o3

    u = coupling_basis([0, 1, 2], 3, 1, -1)  # [K, 3, D, D, D]
    # Wigner D from angles directly (D_from_matrix goes through acos and loses ~1e-8)
    angles = [torch.tensor(x, dtype=torch.float64) for x in (0.7, 1.9, -2.3)]
    d_in = o3.Irreps("0e+1o+2e").D_from_angles(*angles, k=torch.tensor(1.0, dtype=torch.float64))
    d_out = o3.Irreps("1o").D_from_angles(*angles, k=torch.tensor(1.0, dtype=torch.float64))
    # an improper rotation (k=1: with inversion) checks parities too
    rotated_in = torch.einsum("kmabc,ai,bj,cl->kmijl", u, d_in, d_in, d_in)
    rotated_out = torch.einsum("mn,knijl->kmijl", d_out, u)
    # 1e-7: e3nn's own Clebsch-Gordan tables agree with its Wigner D matrices to ~5e-8 only
    torch.testing.assert_close(rotated_out, rotated_in, atol=1e-7, rtol=0)
    torch.testing.assert_close(u, u.transpose(2, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(u, u.transpose(2, 4), atol=1e-12, rtol=0)
    gram = u.reshape(u.shape[0], -1) @ u.reshape(u.shape[0], -1).T
    torch.testing.assert_close(gram, torch.eye(u.shape[0], dtype=torch.float64), atol=1e-10, rtol=0)


def test_symmetric_contraction_equals_dense_definition():
    """The monomial implementation equals the dense sum_k w U_k (A x A x A) + lower degrees."""
    torch.manual_seed(0)
    sc = SymmetricContraction(3, 1, [(0, 1)], 3, 2, dtype=torch.float64)
    a = torch.randn(4, 3, 4, dtype=torch.float64)
    species = torch.tensor([0, 1, 1, 0])
    got = sc(a, species)
    ls = [0, 1]
    expected = torch.zeros(4, 3, dtype=torch.float64)
    k0 = 0
    for d in (1, 2, 3):
        u = coupling_basis(ls, d, 0, 1)[:, 0]  # [K, D^d]
        for k in range(u.shape[0]):
            w = sc.weights[species, k0 + k, :]  # [N, C]
            if d == 1:
                val = torch.einsum("i,nci->nc", u[k], a)
            elif d == 2:
                val = torch.einsum("ij,nci,ncj->nc", u[k], a, a)
            else:
                val = torch.einsum("ijl,nci,ncj,ncl->nc", u[k], a, a, a)
            expected += w * val
        k0 += u.shape[0]
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


def test_config_validation_lists_valid_keys():
    with pytest.raises(ValueError, match="valid keys"):
        MACEConfig.from_dict({"elements": [1], "chanels": 8})
    with pytest.raises(ValueError, match="correlation=7"):
        MACEConfig(elements=(1,), correlation=7)
    with pytest.raises(ValueError, match="dtype"):
        MACEConfig(elements=(1,), dtype="float16")


def test_loaded_coupling_basis_is_the_one_used():
    """The coupling basis is state: a state dict's basis (not the one rebuilt at construction)
    drives the forward pass after loading."""
    torch.manual_seed(0)
    sc = SymmetricContraction(2, 1, [(0, 1)], 2, 1, dtype=torch.float64)
    a = torch.randn(3, 2, 4, dtype=torch.float64)
    species = torch.zeros(3, dtype=torch.long)
    state = sc.state_dict()
    assert "coupling" in state
    state["coupling"] = 2.0 * state["coupling"]
    before = sc(a, species)
    sc.load_state_dict(state)
    torch.testing.assert_close(sc(a, species), 2.0 * before)


class TestMACEResidualFirst(ModelTests):
    """The shared model tests on the layout of imported mace-torch models whose first
    interaction is residual (a species skip from the embedding instead of message mixing)."""

    model_options = {"residual_first": True}
