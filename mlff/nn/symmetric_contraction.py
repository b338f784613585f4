"""Symmetric contraction: the MACE product basis, B = sum_k w_{z,k,c} U_k (A_c x ... x A_c).

For every channel c of the atomic basis ``A`` (irreps ``0e + 1o + 2e + ...`` up to ``l_max``,
total dimension D), the body-ordered features of correlation order nu are contractions of the
*symmetric* tensor powers ``A_c^(x d)`` (d = 1..nu) with generalised Clebsch-Gordan tensors
``U_k`` that map them equivariantly onto each output irrep; the weights depend on the species
of the atom and on the channel.

How this implementation computes it (our own formulation; the basis is standard):

1. Coupling basis: for each output irrep and degree d, the symmetric equivariant tensors are
   spanned by iterated Clebsch-Gordan couplings (e3nn's real ``wigner_3j``) symmetrised over
   index permutations; an orthonormal basis is extracted by Gram-Schmidt in a fixed order.
2. Because the tensors are symmetric, contracting them with ``A^(x d)`` only needs the distinct
   monomials ``A_i1 ... A_id`` with ``i1 <= ... <= id`` (816 instead of 4096 for d=3, D=16),
   each weighted by its number of orderings. Monomials that no output uses are dropped.
3. The contraction is then one dense matmul per output irrep:
   ``[N*C, n_monomials] @ [n_monomials, (2L+1) * K]`` followed by the species/channel weights.

The coupling tensors are stored as buffers in the state dict, so a saved model always uses the
basis it was trained with.
"""


import itertools
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn


def _block_offsets(ls: List[int]) -> List[int]:
    offsets = [0]
    for l in ls:
        offsets.append(offsets[-1] + 2 * l + 1)
    return offsets


def coupling_basis(ls: List[int], degree: int, l_out: int, parity_out: int) -> Tensor:
    """Orthonormal basis of symmetric equivariant tensors ``[K, 2*l_out+1, D, ..., D]``.

    The input space is ``sum_l V_l`` with parity ``(-1)^l`` (spherical-harmonic parity) and
    dimension D; the tensors are symmetric in their ``degree`` input indices and transform as the
    irrep ``(l_out, parity_out)``. Computed in float64. K may be 0.
    """
    from e3nn import o3

    offsets = _block_offsets(ls)
    dim = offsets[-1]
    m_out = 2 * l_out + 1
    candidates: List[Tensor] = []

    def embed(block: Tensor, which: Tuple[int, ...]) -> Tensor:
        full = torch.zeros((m_out,) + (dim,) * degree, dtype=torch.float64)
        index = [slice(None)] + [slice(offsets[w], offsets[w + 1]) for w in which]
        full[tuple(index)] = block
        return full

    for which in itertools.combinations_with_replacement(range(len(ls)), degree):
        lv = [ls[w] for w in which]
        if (-1) ** sum(lv) != parity_out:
            continue
        # iterated couplings ((l1 x l2 -> c2) x l3 -> c3) ... -> l_out
        partial: List[Tensor] = [torch.eye(2 * lv[0] + 1, dtype=torch.float64)]  # [M, m1]
        partial_l: List[int] = [lv[0]]
        for l_next in lv[1:]:
            new_partial, new_l = [], []
            for t, lc in zip(partial, partial_l):
                for lnew in range(abs(lc - l_next), lc + l_next + 1):
                    w3j = o3.wigner_3j(lc, l_next, lnew, dtype=torch.float64)  # [mc, mn, M]
                    # t: [mc, m1, ..., m_prev] -> [M, m1, ..., m_prev, mn]
                    nt = torch.einsum("c...,cnM->M...n", t, w3j)
                    new_partial.append(nt)
                    new_l.append(lnew)
            partial, partial_l = new_partial, new_l
        for t, lc in zip(partial, partial_l):
            if lc == l_out:
                candidates.append(embed(t, which))
    if not candidates:
        return torch.zeros((0, m_out) + (dim,) * degree, dtype=torch.float64)
    basis: List[Tensor] = []
    perms = list(itertools.permutations(range(1, degree + 1)))
    for cand in candidates:
        sym = sum(cand.permute([0] + list(p)) for p in perms) / len(perms)
        v = sym.reshape(-1)
        for b in basis:
            v = v - (b @ v) * b
        norm = torch.linalg.norm(v)
        if norm > 1e-8:
            basis.append(v / norm)
    return torch.stack(basis).reshape((len(basis), m_out) + (dim,) * degree)


def monomials(dim: int, degree: int) -> List[Tuple[int, ...]]:
    """Sorted index tuples ``i1 <= ... <= id`` over ``range(dim)``."""
    return list(itertools.combinations_with_replacement(range(dim), degree))


def _multiplicity(index: Tuple[int, ...]) -> int:
    counts: Dict[int, int] = {}
    for i in index:
        counts[i] = counts.get(i, 0) + 1
    out = math.factorial(len(index))
    for c in counts.values():
        out //= math.factorial(c)
    return out


class SymmetricContraction(nn.Module):
    """Species-dependent symmetric contraction of per-channel atomic basis features.

    Args:
        channels: number of channels C.
        l_max: the input ``A`` has irreps ``0e + 1o + ... + l_max`` per channel (D = (l_max+1)^2).
        irreps_out: output irreps as ``[(l, parity), ...]`` (each with C channels).
        correlation: maximal degree nu (body order nu + 1).
        num_species: number of species (weights depend on the species).
        dtype: dtype of the coupling buffer and weights (default: torch's default dtype).

    Shapes:
        ``a``: ``[N, C, D]`` (per-channel irreps concatenated, e3nn component order);
        ``species``: ``[N]``; output: ``[N, C * sum(2l+1)]`` in e3nn's ``C x irrep`` layout.
    """

    out_dims: List[int]
    num_paths: List[int]

    def __init__(
        self,
        channels: int,
        l_max: int,
        irreps_out: List[Tuple[int, int]],
        correlation: int,
        num_species: int,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if correlation < 1 or correlation > 4:
            raise ValueError(f"correlation must be between 1 and 4, got {correlation}")
        ls = list(range(l_max + 1))
        dim = (l_max + 1) ** 2
        self.channels = channels
        self.dim = dim
        self.correlation = correlation
        self.irreps_out = [(int(l), int(p)) for l, p in irreps_out]

        # Coefficients of every monomial (all degrees) for every output irrep.
        all_monos: List[Tuple[int, ...]] = []
        for d in range(1, correlation + 1):
            all_monos += monomials(dim, d)
        mono_index = {m: k for k, m in enumerate(all_monos)}
        coeffs: List[Tensor] = []  # per output: [n_mono, M, K]
        for l_out, p_out in self.irreps_out:
            per_degree = []
            for d in range(1, correlation + 1):
                u = coupling_basis(ls, d, l_out, p_out)  # [K_d, M, D^d]
                if u.shape[0] == 0:
                    continue
                c = torch.zeros(len(all_monos), 2 * l_out + 1, u.shape[0], dtype=torch.float64)
                for m in monomials(dim, d):
                    c[mono_index[m]] = u[(slice(None), slice(None)) + m].T * _multiplicity(m)
                per_degree.append(c)
            if not per_degree:
                raise ValueError(f"no symmetric coupling reaches irrep l={l_out} p={p_out}")
            coeffs.append(torch.cat(per_degree, dim=2))
        used = torch.stack([c.abs().sum(dim=(1, 2)) > 1e-12 for c in coeffs]).any(dim=0)
        keep = torch.nonzero(used).flatten().tolist()
        kept = [all_monos[k] for k in keep]

        # Monomial recursion tables: degree-d monomials = (degree d-1 monomial) * A[last index].
        prev_index = {(i,): i for i in range(dim)}
        pair_tables: List[Tuple[Tensor, Tensor]] = []
        deg_lists: List[List[Tuple[int, ...]]] = [[(i,) for i in range(dim)]]
        needed = set(kept)
        # every prefix of a needed monomial is needed to build it
        for m in list(needed):
            for k in range(1, len(m)):
                needed.add(m[:k])
        for d in range(2, correlation + 1):
            current = [m for m in monomials(dim, d) if m in needed]
            left = torch.tensor([prev_index[m[:-1]] for m in current], dtype=torch.long)
            right = torch.tensor([m[-1] for m in current], dtype=torch.long)
            pair_tables.append((left, right))
            prev_index = {m: k for k, m in enumerate(current)}
            deg_lists.append(current)
        # Register recursion tables as buffers (TorchScript: fixed attribute names per degree).
        self.num_higher = len(pair_tables)
        for k in range(3):
            left, right = pair_tables[k] if k < len(pair_tables) else (
                torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
            self.register_buffer(f"left_{k}", left, persistent=False)
            self.register_buffer(f"right_{k}", right, persistent=False)
        # Column order of the monomial feature matrix = concatenation of deg_lists.
        order: List[Tuple[int, ...]] = [m for lst in deg_lists for m in lst]
        rows = torch.tensor([mono_index[m] for m in order], dtype=torch.long)
        self.n_monomials = len(order)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.out_dims = []
        self.num_paths = []
        blocks: List[Tensor] = []
        for c in coeffs:
            c = c[rows]  # [n_mono, M, K]
            self.out_dims.append(int(c.shape[1]))
            self.num_paths.append(int(c.shape[2]))
            blocks.append(c.reshape(len(order), -1))
        # One coupling matrix for all outputs, in the layout forward uses:
        # [sum_j M_j * K_j, n_monomials]. It is saved with the model (the basis of its weights).
        self.register_buffer("coupling", torch.cat(blocks, dim=1).t().contiguous().to(dtype))
        k_total = sum(self.num_paths)
        scale = torch.cat([torch.full((k,), 1.0 / math.sqrt(k)) for k in self.num_paths])
        self.weights = nn.Parameter(
            torch.randn(num_species, k_total, channels, dtype=dtype) * scale[None, :, None].to(dtype)
        )

    def _monomial_features(self, a: Tensor) -> Tensor:
        """``[N, C, D]`` -> ``[n_monomials, N * C]`` (degrees 1..nu, needed monomials only).

        The monomial axis comes first so that every gather selects whole contiguous rows of
        ``N * C`` values (gathering along a trailing axis of size D is several times slower).
        """
        a_t = a.permute(2, 0, 1).reshape(self.dim, -1)  # [D, N*C]
        feats = [a_t]
        prev = a_t
        if self.num_higher > 0:
            prev = prev.index_select(0, self.left_0) * a_t.index_select(0, self.right_0)
            feats.append(prev)
        if self.num_higher > 1:
            prev = prev.index_select(0, self.left_1) * a_t.index_select(0, self.right_1)
            feats.append(prev)
        if self.num_higher > 2:
            prev = prev.index_select(0, self.left_2) * a_t.index_select(0, self.right_2)
            feats.append(prev)
        return torch.cat(feats, dim=0)

    def forward(self, a: Tensor, species: Tensor) -> Tensor:
        n, c = a.shape[0], a.shape[1]
        p = self._monomial_features(a)  # [n_mono, N*C]
        q_all = self.coupling @ p  # [sum_j M_j K_j, N*C]
        w_all = self.weights.index_select(0, species)  # [N, K_total, C]
        outs: List[Tensor] = []
        row = 0
        path = 0
        for j in range(len(self.out_dims)):
            m_out = self.out_dims[j]
            k_paths = self.num_paths[j]
            q = q_all[row : row + m_out * k_paths].reshape(m_out, k_paths, n, c)
            w = w_all[:, path : path + k_paths, :]
            out = (q * w.permute(1, 0, 2).unsqueeze(0)).sum(dim=1)  # [M, N, C]
            outs.append(out.permute(1, 2, 0).reshape(n, c * m_out))
            row += m_out * k_paths
            path += k_paths
        return torch.cat(outs, dim=1)
