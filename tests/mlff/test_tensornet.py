"""TensorNet: the shared model tests (single model and ensemble), plus checks that the
coefficient-space implementation computes TensorNet's equations written on full 3x3 matrices."""

import math

import pytest
import torch
from ase.build import molecule
from e3nn import o3

from mlff import graph as G
from mlff.models.ensemble import extract_member, stack_members
from mlff.models.tensornet import TensorNetConfig
from mlff.nn import cartesian

from model_mixins import TENSORNET_OPTIONS, ModelTests, graph_of, rattled


class TestTensorNet(ModelTests):
    """The shared model tests on a single TensorNet."""

    base_options = TENSORNET_OPTIONS


class TestTensorNetEnsemble(ModelTests):
    """The shared model tests on a 3-member TensorNet ensemble with the Bessel basis and tanh."""

    base_options = TENSORNET_OPTIONS
    model_options = {"ensemble_size": 3, "seed": 1, "radial_basis": "bessel", "activation": "tanh"}


# --- TensorNet's equations on full 3x3 matrices (the reference the fast layout must equal) ---


def _decompose(x):
    """[..., 3, 3] -> isotropic, antisymmetric, symmetric traceless parts."""
    eye = torch.eye(3, dtype=x.dtype)
    iso = x.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] / 3.0 * eye
    return iso, 0.5 * (x - x.transpose(-1, -2)), 0.5 * (x + x.transpose(-1, -2)) - iso


def _channels(linear, x):
    """A GroupedLinear (one member) on the channel axis of [N, C, 3, 3]."""
    n, c = x.shape[0], x.shape[1]
    y = linear(x.permute(0, 2, 3, 1).reshape(1, n * 9, c))
    return y.view(n, 3, 3, -1).permute(0, 3, 1, 2)


def _parts(part_linears, x):
    return sum(_channels(lin, p) for lin, p in zip(part_linears.linears, _decompose(x)))


def _sq(x):
    return (x * x).sum((-1, -2))


def dense_tensornet(model, species, edge_index, vectors):
    """Per-atom energies [N] of a single-member TensorNet, written directly from the paper:
    per-edge pair embedding on concatenated species embeddings, full matrices, torch.matmul."""
    act = torch.nn.functional.silu
    send, recv = edge_index
    n, e = species.shape[0], send.shape[0]
    r = torch.linalg.norm(vectors, dim=1, keepdim=True)
    u = vectors / r
    cut = model.cutoff(r)
    rbf = model.radial_basis(r)
    emb = model.embedding
    c = emb.channels
    species_emb = emb.species.weight  # [S, C]
    z = emb.pair(torch.cat([species_emb[species[send]], species_emb[species[recv]]], 1)[None])[0]
    d = emb.distance(rbf[None])[0].view(e, 3, c) * (cut * z)[:, None, :]
    eye = torch.eye(3, dtype=vectors.dtype).expand(e, 3, 3)
    x_, y_, z_ = u.unbind(1)
    zero = torch.zeros_like(x_)
    skew = torch.stack([zero, -z_, y_, z_, zero, -x_, -y_, x_, zero], 1).view(e, 3, 3)
    sym = u[:, :, None] * u[:, None, :] - eye / 3.0
    edge_t = (d[:, 0, :, None, None] * eye[:, None] + d[:, 1, :, None, None] * skew[:, None]
              + d[:, 2, :, None, None] * sym[:, None])  # [E, C, 3, 3]
    x = torch.zeros(n, c, 3, 3, dtype=vectors.dtype).index_add_(0, recv, edge_t)
    g = emb.norm(_sq(x)[None])
    for lin in emb.gate:
        g = act(lin(g))
    g = g[0].view(n, 3, c)
    x = sum(_channels(lin, p) * g[:, k, :, None, None]
            for k, (lin, p) in enumerate(zip(emb.parts.linears, _decompose(x))))
    for layer in model.layers:
        f = rbf[None]
        for lin in layer.radial:
            f = act(lin(f))
        f = (f[0] * cut).view(e, 3, c)
        x = x / (_sq(x) + 1.0)[..., None, None]
        parts = [_channels(lin, p) for lin, p in zip(layer.before.linears, _decompose(x))]
        y = sum(parts)
        msg = sum(torch.zeros_like(y).index_add_(0, recv, f[:, k, :, None, None] * parts[k][send])
                  for k in range(3))
        p = torch.matmul(y, msg) + torch.matmul(msg, y)
        p = p / (_sq(p) + 1.0)[..., None, None]
        dx = _parts(layer.after, p)
        x = x + dx + torch.matmul(dx, dx)
    h = torch.cat([_sq(p) for p in _decompose(x)], 1)[None]  # [1, N, 3C]
    h = act(model.out_linear(model.out_norm(h)))
    out = model.head_out(act(model.head_hidden(h)))[0, :, 0]
    return model.e0s[species] + model.scale * out + model.shift


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_fast_layout_equals_the_equations_on_full_matrices(small_potential, layers):
    pot = small_potential(model_type="tensornet", elements=(1, 6, 8), num_layers=layers,
                          scale=1.7, shift=-0.3, seed=4)
    g = graph_of(rattled("CH3CH2OH", 2), pot)
    vectors = (g[G.POSITIONS][g[G.EDGE_INDEX][0]] - g[G.POSITIONS][g[G.EDGE_INDEX][1]])
    fast = pot.model(g[G.SPECIES], g[G.EDGE_INDEX], vectors[None])[:, 0]
    ref = dense_tensornet(pot.model, g[G.SPECIES], g[G.EDGE_INDEX], vectors)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    assert (ref - pot.model.e0s[g[G.SPECIES]]).abs().max() > 1e-3  # not just the E0s


def test_basis_is_orthonormal_and_edge_tensors_are_the_definitions():
    b = cartesian.basis().reshape(9, 9)
    torch.testing.assert_close(b @ b.T, torch.eye(9, dtype=torch.float64))
    u = torch.nn.functional.normalize(torch.randn(7, 3, dtype=torch.float64), dim=1)
    x, y, z = u.unbind(1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], 1)
    eye = torch.eye(3, dtype=torch.float64).reshape(1, 9)
    full = cartesian.edge_coefficients(u) @ b
    torch.testing.assert_close(full, eye + skew + (u[:, :, None] * u[:, None, :]).reshape(7, 9) - eye / 3)
    # the part slices are the irreducible parts: each rotates into itself
    rot = o3.rand_matrix(dtype=torch.float64)
    mats = torch.randn(5, 3, 3, dtype=torch.float64)
    coeffs = mats.reshape(5, 9) @ b.T
    rotated = (rot @ mats @ rot.T).reshape(5, 9) @ b.T
    torch.testing.assert_close(cartesian.squared_norms(rotated[..., None]),
                               cartesian.squared_norms(coeffs[..., None]))
    for (a, e), part in zip(cartesian.PART_SLICES, _decompose(mats)):
        torch.testing.assert_close(coeffs[:, a:e], (part.reshape(5, 9) @ b.T)[:, a:e])
        assert (part.reshape(5, 9) @ b.T)[:, [k for k in range(9) if not a <= k < e]].abs().max() < 1e-14


def test_matrix_products_in_coefficients():
    b = cartesian.basis().reshape(9, 9)
    a, c = torch.randn(4, 9, 6, dtype=torch.float64), torch.randn(4, 9, 6, dtype=torch.float64)
    got = cartesian.from_matrix(cartesian.matmul(cartesian.to_matrix(a, b), cartesian.to_matrix(c, b)), b)
    full_a = torch.einsum("rkc,kij->rcij", a, b.view(9, 3, 3))
    full_c = torch.einsum("rkc,kij->rcij", c, b.view(9, 3, 3))
    want = torch.einsum("rcij,kij->rkc", torch.matmul(full_a, full_c), b.view(9, 3, 3))
    torch.testing.assert_close(got, want)


def test_expnorm_basis_closed_form():
    from mlff.nn.radial import ExpNormalBasis

    basis = ExpNormalBasis(5.0, 4)
    r = torch.tensor([[0.7], [2.5], [4.99], [5.2]], dtype=torch.float64)
    mu = torch.linspace(math.exp(-5.0), 1.0, 4, dtype=torch.float64)
    beta = (2.0 * (1.0 - math.exp(-5.0)) / 4) ** -2
    cut = 0.5 * (torch.cos(math.pi * r / 5.0) + 1.0) * (r < 5.0)
    torch.testing.assert_close(basis(r), cut * torch.exp(-beta * (torch.exp(-r) - mu) ** 2))
    assert float(basis(r)[3].abs().max()) == 0.0


def test_ensemble_members_round_trip(small_potential):
    ens = small_potential(model_type="tensornet", elements=(1, 6, 8), ensemble_size=3, seed=2)
    g = graph_of(rattled("CH3OH", 1), ens)
    out = ens(g)
    members = [extract_member(ens, k) for k in range(3)]
    for k, member in enumerate(members):
        torch.testing.assert_close(member(g)["energy"], out["member_energy"][k], rtol=1e-12, atol=1e-12)
    restacked = stack_members(members)
    torch.testing.assert_close(restacked(g)["forces_std"], out["forces_std"], rtol=1e-12, atol=1e-12)


def test_config_validation_lists_valid_keys():
    with pytest.raises(ValueError, match="valid keys"):
        TensorNetConfig.from_dict({"elements": [1], "correlation": 3})
    with pytest.raises(ValueError, match="activation"):
        TensorNetConfig(elements=(1,), activation="relu")
    with pytest.raises(ValueError, match="num_layers"):
        TensorNetConfig(elements=(1,), num_layers=-1)


def test_energy_changes_under_a_reflection_of_a_chiral_molecule_only_through_geometry(small_potential):
    """O(3): a mirror image has the same energy (the A part is a pseudotensor of the edge
    vectors, so the products keep the energy invariant under inversion, not only rotations)."""
    pot = small_potential(model_type="tensornet", elements=(1, 6, 8), seed=3)
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.15, seed=5)
    mirrored = atoms.copy()
    mirrored.positions[:, 0] *= -1.0
    torch.testing.assert_close(pot(graph_of(mirrored, pot))["energy"], pot(graph_of(atoms, pot))["energy"],
                               rtol=1e-12, atol=1e-12)

