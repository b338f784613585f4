"""The long-range block every model can carry (config ``long_range``): one mechanism for MACE
and TensorNet, fed the model's final invariant atom features.

- ``charges``: per-atom charges predicted from the features, shifted per structure so that they
  sum to its total charge (``atoms.info["charge"]``, default 0), and their Coulomb energy as
  Gaussian charges of width ``charge_width`` (A): Ewald summation for periodic structures, the
  direct pair sum for molecules (:mod:`mlff.nn.ewald`). Charges and dipoles become outputs.
- ``ewald_mp``: Ewald message passing (Kosmala, Gasteiger, Gao, Guennemann, ICML 2023): the
  features are projected to ``mp_channels`` channels, turned into structure factors, filtered
  by a learned filter on ``|k|`` and sent back to the atoms; the messages are added to the
  features, which a small MLP reads out as energy. The filter is a learned per-channel mixture of
  Gaussians in k, ``sum_b w_b exp(-k^2 s_b^2 / 2)`` with widths ``s_b = mp_width * 2^b`` (A),
  which is the Fourier transform of a mixture of Gaussian pair kernels of the same widths in
  real space; so the aperiodic variant is that pair sum over all atoms of a molecule (exactly
  rotation invariant, where the paper's fixed k-grid for molecules is so only approximately),
  and periodic and aperiodic messages agree for a molecule in a large box (tested). The
  frequency cutoff follows from the narrowest width and ``accuracy``.
- ``both``: the two together.

The block is applied once, after the last layer (the variant that is one mechanism for every
model). Shapes: features ``[M, N, F]`` in the model's dtype; the sums run in float64.
``context`` (built by the Potential): ``positions`` ``[M, N, 3]`` and ``cell`` ``[M, B, 3, 3]``
(strained copies, A), ``pbc`` ``[B, 3]``, ``ptr`` ``[B + 1]``, ``batch`` ``[N]``,
``total_charge`` ``[B]`` (e). The block writes ``charges`` ``[M, N]`` (e) into it.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import Tensor, nn

from mlff.nn import ewald, mesh
from mlff.nn.linear import GroupedLinear, GroupedMLP
from mlff.units import COULOMB_EV_A

LONG_RANGE_KINDS = ("none", "charges", "ewald_mp", "both")
#: options of the block and their defaults
LONG_RANGE_DEFAULTS: Dict[str, float] = {
    "accuracy": 1e-6,  # relative size of the kernels where their switches begin
    "charge_width": 0.5,  # A, standard deviation of the Gaussian charges (0: point charges)
    "mp_channels": 8,  # channels of the Ewald messages
    "mp_width": 2.0,  # A, narrowest Gaussian of the Ewald-message filter
    "mp_num_widths": 3,  # widths mp_width * 2^b, b = 0 .. mp_num_widths - 1
    "mp_hidden": 16,  # hidden width of the readout MLP of the message-enriched features
    "mesh_atoms": 100,  # periodic structures with at least this many atoms use particle-mesh Ewald
    # B-spline order and oversampling of that mesh; order 8 with oversampling 1 is 5x cheaper
    # than the default for water at 4x torch-pme's tuned accuracy (benchmarks/README.md,
    # "Ewald sums vs torch-pme"); the defaults stay, so existing model files keep their numbers
    "mesh_order": mesh.ORDER,
    "mesh_oversample": mesh.OVERSAMPLE,
}


def validate_long_range(kind: str, options: Dict[str, float]) -> None:
    """Raise ValueError naming an unknown kind or option, or an invalid value."""
    if kind not in LONG_RANGE_KINDS:
        raise ValueError(f"unknown long_range {kind!r}; valid: {list(LONG_RANGE_KINDS)}")
    unknown = sorted(set(options) - set(LONG_RANGE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown long_range_options {unknown}; valid: {sorted(LONG_RANGE_DEFAULTS)}")
    o = {**LONG_RANGE_DEFAULTS, **options}
    bad = [k for k, ok in {
        "accuracy": 0 < o["accuracy"] < 1, "charge_width": o["charge_width"] >= 0,
        "mp_channels": o["mp_channels"] >= 1, "mp_width": o["mp_width"] > 0,
        "mp_num_widths": o["mp_num_widths"] >= 1, "mp_hidden": o["mp_hidden"] >= 1,
        "mesh_atoms": o["mesh_atoms"] >= 0,
        "mesh_order": float(o["mesh_order"]).is_integer() and 3 <= o["mesh_order"] <= 12,
        "mesh_oversample": o["mesh_oversample"] >= 0.5,
    }.items() if not ok]
    if bad:
        raise ValueError(f"invalid long_range_options: {', '.join(f'{k}={o[k]!r}' for k in bad)}")


class LongRange(nn.Module):
    """Long-range energy per atom from final features: ``forward(features [M, N, F], species,
    edge_index, vectors [M, E, 3], context) -> [M, N]`` (eV, float64)."""

    def __init__(self, kind: str, options: Dict[str, float], feature_dim: int, r_cut: float,
                 members: int, energy_scale: float = 1.0, num_species: int = 1) -> None:
        super().__init__()
        validate_long_range(kind, options)
        o = {**LONG_RANGE_DEFAULTS, **options}
        self.use_charges = kind in ("charges", "both")
        self.use_mp = kind in ("ewald_mp", "both")
        self.r_cut = float(r_cut)
        self.accuracy = float(o["accuracy"])
        self.alpha, self.k_cut = ewald.ewald_splitting(self.r_cut, self.accuracy)
        self.charge_width = float(o["charge_width"])
        self.mesh_atoms = int(o["mesh_atoms"])
        self.mesh_order, self.mesh_oversample = int(o["mesh_order"]), float(o["mesh_oversample"])
        self.coulomb = COULOMB_EV_A
        self.energy_scale = float(energy_scale)  # eV, of the learned (message) energy
        self.num_species = int(num_species)
        self.charge_head = GroupedLinear(feature_dim, 1, members, bias=True)
        # per-species terms of the charges and message inputs: an atom without neighbours (an
        # ion in a dilute box) has no features in MACE, yet its charge is its species'
        self.charge_species = GroupedLinear(self.num_species, 1, members)
        channels = int(o["mp_channels"])
        self.mp_widths: List[float] = [float(o["mp_width"]) * 2.0 ** b for b in range(int(o["mp_num_widths"]))]
        # frequency cutoff: the narrowest Gaussian filter below `accuracy` where the switch begins
        self.mp_k_cut = math.sqrt(-2.0 * math.log(self.accuracy)) / self.mp_widths[0] / ewald.X_ON
        self.mp_in = GroupedLinear(feature_dim, channels, members)
        self.mp_species = GroupedLinear(self.num_species, channels, members)
        # filter weights: one mixture of the widths per channel ([M, widths, channels])
        self.mp_filter = GroupedLinear(len(self.mp_widths), channels, members)
        self.mp_out = GroupedLinear(channels, feature_dim, members)
        self.mp_readout = GroupedMLP([feature_dim, int(o["mp_hidden"]), 1], members)
        # messages are sums over the atoms within a few widths: scaled to O(1) by the number of
        # atoms of liquid water (0.1 per A^3) in a sphere of the widest width
        self.mp_norm = 1.0 / (0.1 * 4.0 / 3.0 * math.pi * self.mp_widths[-1] ** 3)

    def forward(self, features: Tensor, species: Tensor, edge_index: Tensor, vectors: Tensor,
                context: Dict[str, Tensor]) -> Tensor:
        m, n = features.shape[0], features.shape[1]
        energy = torch.zeros(m, n, dtype=torch.float64, device=features.device)
        onehot = torch.nn.functional.one_hot(species, self.num_species).to(features.dtype)
        onehot = onehot.unsqueeze(0).expand(m, -1, -1)  # [M, N, S]
        positions = context["positions"].to(torch.float64)
        cell = context["cell"].to(torch.float64)
        pbc, ptr = context["pbc"], context["ptr"]
        periodic: List[bool] = []
        for b in range(pbc.shape[0]):
            if bool(pbc[b].all()):
                periodic.append(True)
            elif not bool(pbc[b].any()):
                periodic.append(False)
            else:
                raise RuntimeError("the long-range block needs structures periodic in all three "
                                   "directions or in none; this one is periodic in some only (a slab)")
        if self.use_charges:
            energy = energy + self._coulomb(features, onehot, edge_index, vectors, positions, cell, periodic, ptr,
                                            context)
        if self.use_mp:
            energy = energy + self._ewald_messages(features, onehot, positions, cell, periodic, ptr)
        return energy

    def _charges(self, features: Tensor, onehot: Tensor, ptr: Tensor, context: Dict[str, Tensor]) -> Tensor:
        """Raw charges from the features and species, shifted evenly per structure to its
        total charge."""
        raw = (self.charge_head(features) + self.charge_species(onehot)).squeeze(2).to(torch.float64)  # [M, N]
        batch = context["batch"]
        b = ptr.shape[0] - 1
        counts = (ptr[1:] - ptr[:-1]).to(torch.float64)
        sums = torch.zeros(raw.shape[0], b, dtype=raw.dtype, device=raw.device).index_add_(1, batch, raw)
        excess = (sums - context["total_charge"].to(torch.float64).unsqueeze(0)) / counts.clamp(min=1.0)
        return raw - excess[:, batch]

    def _coulomb(self, features: Tensor, onehot: Tensor, edge_index: Tensor, vectors: Tensor, positions: Tensor,
                 cell: Tensor, periodic: List[bool], ptr: Tensor, context: Dict[str, Tensor]) -> Tensor:
        q = self._charges(features, onehot, ptr, context)  # [M, N]
        context["charges"] = q
        potential = torch.zeros_like(q)
        if any(periodic):
            # real-space pairs of periodic structures from the model's edges (r < r_cut)
            graph_periodic = torch.tensor(periodic, device=q.device)
            keep = graph_periodic[context["batch"][edge_index[1]]]
            send, recv = edge_index[0][keep], edge_index[1][keep]
            r = torch.linalg.norm(vectors[:, keep].to(torch.float64), dim=2)  # [M, E']
            pair = ewald.real_space_kernel(r, self.alpha, self.charge_width, self.r_cut) * q[:, send]
            potential = potential.index_add(1, recv, pair)
        extra = torch.zeros_like(q)
        for b in range(len(periodic)):
            lo, hi = int(ptr[b]), int(ptr[b + 1])
            if hi == lo:
                continue
            q_b, pos_b = q[:, lo:hi], positions[:, lo:hi]
            if periodic[b]:
                if hi - lo >= self.mesh_atoms:
                    phi = mesh.coulomb_mesh_potential(q_b, pos_b, cell[:, b], self.alpha, self.k_cut,
                                                      self.mesh_order, self.mesh_oversample)
                else:
                    n_vec = ewald.half_space_vectors(cell[0, b], self.k_cut)
                    phi = ewald.ewald_kspace_potential(q_b, pos_b, cell[:, b], n_vec, self.alpha, self.k_cut)
                phi = phi + ewald.ewald_self_potential(q_b, self.alpha)
                volume = torch.abs(torch.linalg.det(cell[:, b]))  # [M]
                background = ewald.background_energy(q_b.sum(1), volume, self.alpha)  # [M]
                extra[:, lo:hi] = 0.5 * q_b * phi + (background / float(hi - lo)).unsqueeze(1)
            else:
                extra[:, lo:hi] = 0.5 * q_b * ewald.direct_potential(q_b, pos_b, self.charge_width)
        return self.coulomb * (0.5 * q * potential + extra)

    def _ewald_messages(self, features: Tensor, onehot: Tensor, positions: Tensor, cell: Tensor,
                        periodic: List[bool], ptr: Tensor) -> Tensor:
        f = (self.mp_in(features) + self.mp_species(onehot)).to(torch.float64)  # [M, N, C]
        # filter weights [M, widths, C]: the mixture coefficients of each channel
        eye = torch.eye(len(self.mp_widths), dtype=features.dtype, device=features.device)
        weights = self.mp_filter(eye.unsqueeze(0).expand(f.shape[0], -1, -1)).to(torch.float64)
        widths = torch.tensor(self.mp_widths, dtype=torch.float64, device=f.device)
        messages = torch.zeros_like(f)
        for b in range(len(periodic)):
            lo, hi = int(ptr[b]), int(ptr[b + 1])
            if hi == lo:
                continue
            f_b, pos_b = f[:, lo:hi], positions[:, lo:hi]
            if periodic[b]:
                messages[:, lo:hi] = self._periodic_messages(f_b, pos_b, cell[:, b], weights, widths)
            else:
                d = pos_b.unsqueeze(2) - pos_b.unsqueeze(1)
                r2 = (d * d).sum(3)  # [M, n, n]
                basis = torch.exp(-r2.unsqueeze(3) / (2.0 * widths * widths))  # [M, n, n, W]
                kernel = torch.einsum("mijw,mwc->mijc", basis, weights)
                messages[:, lo:hi] = torch.einsum("mijc,mjc->mic", kernel, f_b)
        enriched = features + self.mp_out((self.mp_norm * messages).to(features.dtype))
        return self.energy_scale * self.mp_readout(enriched).squeeze(2).to(torch.float64)

    def _periodic_messages(self, f: Tensor, positions: Tensor, cell: Tensor, weights: Tensor,
                           widths: Tensor) -> Tensor:
        """``sum_n sum_j f_j g(r_ij + n)`` by its Fourier series: ``(1/V) sum_k g^(k) Re[...]``,
        ``g^(k) = sum_b w_b (2 pi s_b^2)^(3/2) exp(-k^2 s_b^2 / 2)``, k = 0 included."""
        norm = (2.0 * math.pi * widths * widths) ** 1.5  # [W]
        if f.shape[1] >= self.mesh_atoms:
            shape = mesh.grid_shape(cell[0], self.mp_k_cut, self.mesh_order, self.mesh_oversample)
            k2 = mesh.grid_k_squared(cell, shape)  # [M, K0, K1, K2']
            basis = norm * torch.exp(-k2.unsqueeze(4) * widths * widths / 2.0)  # [M, K0, K1, K2', W]
            g = torch.einsum("mxyzw,mwc->mcxyz", basis, weights)
            safe = torch.where(k2 == 0.0, torch.ones_like(k2), k2)  # sqrt has no gradient at 0
            g = g * ewald.switch(torch.sqrt(safe) / self.mp_k_cut).unsqueeze(1)
            return mesh.mesh_potential(f, positions, cell, shape, g, self.mesh_order)
        n_vec = ewald.half_space_vectors(cell[0], self.mp_k_cut)
        k = ewald.k_vectors(n_vec, cell)  # [M, K, 3]
        k2 = (k * k).sum(2, keepdim=True)  # [M, K, 1]
        g_k = torch.matmul(norm * torch.exp(-k2 * widths * widths / 2.0), weights)  # [M, K, C]
        g_k = g_k * ewald.switch(torch.sqrt(k2) / self.mp_k_cut)
        g_0 = torch.matmul(norm.unsqueeze(0), weights)  # [M, 1, C]: the k = 0 term
        volume = torch.abs(torch.linalg.det(cell)).view(-1, 1, 1)  # [M, 1, 1]
        phase = torch.matmul(positions, k.transpose(1, 2))  # [M, n, K]
        s_cos, s_sin = ewald.structure_factors(phase, f)
        out = ewald.back_to_atoms(phase, 2.0 * g_k * s_cos, 2.0 * g_k * s_sin)
        return (out + g_0 * f.sum(1, keepdim=True)) / volume
