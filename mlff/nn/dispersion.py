"""Grimme's D3 dispersion with Becke-Johnson (rational) damping, the two-body part, as a prior.

``E = -sum_{i<j, images} [ s6 C6_ij / (r^6 + R_ij^6) + s8 C8_ij / (r^8 + R_ij^8) ]`` with
``R_ij = a1 sqrt(C8_ij / C6_ij) + a2`` (Grimme, Ehrlich, Goerigk, J. Comput. Chem. 32, 1456,
2011); ``C6_ij`` interpolated from the reference table by each atom's coordination number
``CN_i = sum_j 1 / (1 + exp(-16 ((R_cov,i + R_cov,j) / r_ij - 1)))`` with Gaussian weights
``exp(-4 (CN_i - CN_ref)^2)`` (Grimme, Antony, Ehrlich, Krieg, J. Chem. Phys. 132, 154104,
2010), and ``C8_ij = 3 C6_ij Q_i Q_j``. Units inside are Hartree and Bohr, as in the tables.

The tables (reference C6 and CN, D3 covalent radii, ``Q = sqrt(0.5 <r4>/<r2> sqrt(Z))``) and the
functionals' damping parameters come from ``tad-dftd3`` (and ``tad-mctc``) when the model is
built, cut down to the model's elements; the sum itself is written here because it runs inside
the TorchScript-able model on the members' strained positions (forces and stress from the
Potential's one backward pass), with its own periodic half neighbour list at the dispersion
cutoff, which is far longer than any model's (vesin when eager, the pure-PyTorch
:func:`mlff.neighbors.torch_neighbor_list` under TorchScript). Cutoffs are hard, as in the ``dftd3`` library, whose defaults they are (60 Bohr for
the pairs, 40 for CN): the energy jump there is below 1e-8 eV per pair. The three-body (ATM)
term is not included: compare with ``dftd3`` at ``s9 = 0``.

Ensembles: every member has the same dispersion energy, so it is evaluated once, at the mean of
the members' position copies (and strained cells); each member's copy then receives the full
gradient from the sum of member energies that the Potential differentiates.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from mlff.neighbors import torch_neighbor_list, vesin_neighbor_list
from mlff.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

#: the ``dftd3`` library's default real-space cutoffs (Bohr): pairs and coordination numbers
D3_DISP2_CUTOFF_BOHR = 60.0
D3_CN_CUTOFF_BOHR = 40.0
#: steepness of the coordination-number counting function and width of the Gaussian weights
D3_KCN = 16.0
D3_WEIGHT_FACTOR = 4.0
#: the highest atomic number with D3 reference data
D3_MAX_Z = 103


def d3_parameters(functional: Optional[str], overrides: Dict[str, float]) -> Dict[str, float]:
    """``s6``, ``s8``, ``a1``, ``a2`` (``a2`` in Bohr) of D3(BJ) for ``functional`` from
    ``tad-dftd3``'s parameter data base, with ``overrides`` on top; without a functional all
    four must be given. Raises ValueError naming what is missing or unknown."""
    values: Dict[str, float] = {}
    if functional is not None:
        from tad_dftd3.param import get_functional_params

        try:
            found = get_functional_params(str(functional), damping="bj", dtype=torch.float64)
        except (KeyError, ValueError) as err:
            raise ValueError(f"d3: no D3(BJ) parameters for functional {functional!r} in tad-dftd3's "
                             f"data base ({err}); give s6, s8, a1 and a2 instead") from None
        values = {"s6": 1.0, **{k: float(v) for k, v in found.items() if k in ("s6", "s8", "a1", "a2")}}
    values.update({k: float(v) for k, v in overrides.items()})
    missing = [k for k in ("s6", "s8", "a1", "a2") if k not in values]
    if missing:
        raise ValueError(f"d3 needs a functional (e.g. functional: pbe) or all of s6, s8, a1, a2; "
                         f"missing {missing}")
    return values


class D3Dispersion(nn.Module):
    """D3(BJ) two-body dispersion per atom: ``forward(species [N], edge_index, lengths, context)
    -> [M, N]`` (eV, float64); reads the context's ``positions`` ``[M, N, 3]``, ``cell`` ``[M, B,
    3, 3]`` (A), ``pbc`` ``[B, 3]`` and ``ptr`` ``[B + 1]`` (:mod:`mlff.nn.longrange`).

    Args:
        elements: atomic numbers in the model's species order (each <= 103).
        functional: name in the D3 parameter data base (``pbe``, ``b3lyp``, ``wb97x`` ...), or
            None to give ``s6``, ``s8``, ``a1``, ``a2`` explicitly (they also override it).
        cutoff: pair cutoff (A); cn_cutoff: coordination-number cutoff (A); defaults: the
            ``dftd3`` library's 60 and 40 Bohr.
    """

    def __init__(self, elements: Sequence[int], functional: Optional[str] = None,
                 cutoff: Optional[float] = None, cn_cutoff: Optional[float] = None,
                 **damping: float) -> None:
        super().__init__()
        from tad_dftd3.data import R4R2
        from tad_dftd3.reference import Reference
        from tad_mctc.data.radii import COV_D3

        bad = [int(z) for z in elements if not 1 <= int(z) <= D3_MAX_Z]
        if bad:
            raise ValueError(f"d3 has reference data for Z = 1..{D3_MAX_Z} only, not {bad}")
        p = d3_parameters(functional, damping)
        self.s6, self.s8, self.a1 = p["s6"], p["s8"], p["a1"]
        self.a2 = p["a2"]  # Bohr
        cut = D3_DISP2_CUTOFF_BOHR * BOHR_TO_ANGSTROM if cutoff is None else float(cutoff)
        cn_cut = D3_CN_CUTOFF_BOHR * BOHR_TO_ANGSTROM if cn_cutoff is None else float(cn_cutoff)
        if not cut > 0 or not cn_cut > 0:
            raise ValueError(f"d3 cutoffs must be positive, got cutoff={cut}, cn_cutoff={cn_cut}")
        self.cutoff = cut  # A
        self.cn_cutoff = cn_cut  # A
        # attributes, not globals, for TorchScript
        self.bohr = BOHR_TO_ANGSTROM
        self.hartree = HARTREE_TO_EV
        self.cutoff_bohr = cut / BOHR_TO_ANGSTROM
        self.cn_cutoff_bohr = cn_cut / BOHR_TO_ANGSTROM
        self.kcn = D3_KCN
        self.weight_factor = D3_WEIGHT_FACTOR
        z = torch.tensor([int(e) for e in elements], dtype=torch.long)
        ref = Reference(dtype=torch.float64, device=torch.device("cpu"))
        ref_cn = ref.cn[z].to(torch.float64)  # [S, 7], -1 pads the unused references (at the end)
        refs = int((ref_cn >= 0).sum(1).max())  # the most references any model element has
        r4r2 = R4R2(dtype=torch.float64)[z]
        qq = 3.0 * r4r2.unsqueeze(1) * r4r2.unsqueeze(0)  # C8 / C6 per species pair [S, S]
        radius = self.a1 * torch.sqrt(qq) + self.a2  # BJ damping radius (Bohr)
        s = len(elements)
        # non-persistent: rebuilt from tad-dftd3's tables with the model (its config names them)
        self.register_buffer("ref_cn", ref_cn[:, :refs].contiguous(), persistent=False)  # [S, R]
        self.register_buffer("ref_c6", ref.c6[z][:, z][:, :, :refs, :refs].to(torch.float64).contiguous(),
                             persistent=False)  # [S, S, R, R] Hartree Bohr^6
        self.register_buffer("rcov", COV_D3(dtype=torch.float64)[z], persistent=False)  # [S] Bohr, x 4/3
        self.register_buffer("pair_qq", qq.reshape(s * s), persistent=False)  # [S * S]
        self.register_buffer("pair_rad6", radius.pow(6).reshape(s * s), persistent=False)
        self.register_buffer("pair_rad8", radius.pow(8).reshape(s * s), persistent=False)
        self.list_cutoff = max(cut, cn_cut)  # A: one neighbour list serves both sums

    def _pair_vectors(self, positions: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> List[Tensor]:
        """Each pair of atoms (and periodic images) within the list cutoff once, over the
        batch: ``[senders j [P], receivers i [P], vectors x_j - x_i + shift [P, 3] (A)]``.
        Eager calls use vesin (C++), TorchScript the pure-PyTorch list; both give each
        unordered pair once (:func:`mlff.neighbors.torch_neighbor_list`'s ``half``)."""
        send: List[Tensor] = []
        recv: List[Tensor] = []
        vectors: List[Tensor] = []
        for b in range(ptr.shape[0] - 1):
            start, stop = int(ptr[b]), int(ptr[b + 1])
            pos = positions[start:stop]
            if torch.jit.is_scripting():
                edges, units = torch_neighbor_list(pos.detach(), self.list_cutoff, cell[b].detach(), pbc[b],
                                                   half=True)
            else:
                edges, units = vesin_neighbor_list(pos, self.list_cutoff, cell[b], pbc[b], half=True)
            j, i = edges[0], edges[1]
            send.append(j + start)
            recv.append(i + start)
            vectors.append(pos.index_select(0, j) - pos.index_select(0, i) + units.to(pos.dtype) @ cell[b])
        return [torch.cat(send), torch.cat(recv), torch.cat(vectors)]

    def forward(self, species: Tensor, edge_index: Tensor, lengths: Tensor,
                context: Optional[Dict[str, Tensor]] = None) -> Tensor:
        if context is None:
            raise RuntimeError("the d3 prior needs the Potential's context (positions and cells)")
        m = lengths.shape[0]
        n = species.shape[0]
        num_species = self.rcov.shape[0]
        positions = context["positions"].to(torch.float64).mean(0)  # [N, 3] A
        cell = context["cell"].to(torch.float64).mean(0)  # [B, 3, 3]
        pairs = self._pair_vectors(positions, cell, context["pbc"], context["ptr"])
        j, i = pairs[0], pairs[1]
        r = torch.linalg.norm(pairs[2], dim=1) / self.bohr  # [P] Bohr
        si, sj = species.index_select(0, i), species.index_select(0, j)

        # coordination numbers: both ends of each pair within the CN cutoff
        r0 = self.rcov.index_select(0, si) + self.rcov.index_select(0, sj)
        count = 1.0 / (1.0 + torch.exp(-self.kcn * (r0 / r - 1.0)))
        if self.cn_cutoff < self.list_cutoff:
            count = torch.where(r <= self.cn_cutoff_bohr, count, torch.zeros_like(count))
        cn = torch.zeros(n, dtype=torch.float64, device=r.device)
        cn = cn.index_add(0, i, count).index_add(0, j, count)

        # Gaussian reference weights [N, R]; where all underflow, the reference of highest CN
        ref_cn = self.ref_cn.index_select(0, species)
        valid = ref_cn >= 0.0
        w = torch.where(valid, torch.exp(-self.weight_factor * (ref_cn - cn.unsqueeze(1)) ** 2),
                        torch.zeros_like(ref_cn))
        norm = w.sum(1, keepdim=True)
        top = ref_cn == ref_cn.max(1, keepdim=True)[0]
        w = torch.where(norm > 0.0, w / norm.clamp(min=1e-300), top.to(w.dtype))

        # C6_ij = w_i^T C6_ref[s_i, s_j] w_j, atom i's side contracted first: u [N, S, R]
        u = torch.einsum("na,ntab->ntb", w, self.ref_c6.index_select(0, species))
        refs = u.shape[2]
        c6 = (u.reshape(n * num_species, refs).index_select(0, i * num_species + sj)
              * w.index_select(0, j)).sum(1)  # [P] Hartree Bohr^6
        kind = si * num_species + sj
        r2 = r * r
        r6 = r2 * r2 * r2
        pair = -c6 * (self.s6 / (r6 + self.pair_rad6.index_select(0, kind))
                      + self.s8 * self.pair_qq.index_select(0, kind) / (r6 * r2 + self.pair_rad8.index_select(0, kind)))
        if self.cutoff < self.list_cutoff:
            pair = torch.where(r <= self.cutoff_bohr, pair, torch.zeros_like(pair))
        pair = 0.5 * self.hartree * pair
        atom = torch.zeros(n, dtype=torch.float64, device=r.device)
        atom = atom.index_add(0, i, pair).index_add(0, j, pair)
        return atom.unsqueeze(0).expand(m, n)
