"""What every mlff energy model shares: config validation and (de)serialisation, construction
under the model's dtype, and the per-atom energy ``E0[Z] + scale * readout + shift``.

A model type is a frozen config dataclass (:class:`ModelConfig` helpers) plus an
:class:`EnergyModel` subclass that implements ``_build(config)`` and ``forward(species [N],
edge_index [2, E], vectors [M, E, 3], context=None) -> energies [N, M]`` (eV, float64),
registered in :mod:`mlff.models.registry`; a model sets ``feature_dim`` in ``_build`` and hands
its final invariant features to :meth:`EnergyModel.atomic_energies`, which adds the long-range
block (config ``long_range``; ``context``: positions, cells and total charges from the
Potential, :mod:`mlff.nn.longrange`). The Potential wrapper, ensembles, training, model files and the
calculators rely on nothing else.
"""

import contextlib
from dataclasses import asdict
from typing import Dict, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from mlff.dtypes import DTYPES
from mlff.nn.longrange import LongRange, validate_long_range
from mlff.nn.priors import CONTEXT_PRIORS, build_priors, validate_priors

#: peak memory of an energy + forces call over the sum of its tensor widths (autograd's saved
#: inputs, temporaries and allocator slack), measured on water boxes (benchmarks/scale.py)
MEMORY_OVERHEAD = 1.5
#: one chunk's peak over its saved widths (the recomputed forward and its backward): 12,288
#: water atoms in a 6 GB budget peak at 7.7 GB resident, 98,304 in 14 GB at 21.3 GB, torch and
#: the graph included (benchmarks/scale.py; allocator thresholds: allocator.bound_for_chunks)
CHUNK_WORKING_SET = 2.0


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Scoped default dtype for construction only, restored on exit.

    e3nn computes its Clebsch-Gordan constants in the default dtype when a module is built;
    building a float64 model under float32 and casting afterwards would leave those constants
    rounded to 1e-7 and break float64 equivariance. Nothing outside the constructor sees it.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class ModelConfig:
    """Mixin of the frozen model config dataclasses: the fields every model has (``elements``,
    ``e0s``, ``r_cut``, ``dtype``, ``ensemble_size``, ``priors``: :mod:`mlff.nn.priors`)
    validated, and dict round trips that name unknown keys. Subclasses set ``model_name`` and
    ``tuple_fields`` (fields stored as tuples)."""

    model_name = "model"
    tuple_fields: Sequence[str] = ("elements", "e0s")

    def _normalise_and_check(self, checks: Dict[str, bool]) -> None:
        """Tuples of plain numbers for ``tuple_fields``; the common checks plus ``checks``
        (field name -> valid), raising one ValueError that names every invalid field."""
        for name in self.tuple_fields:
            cast = int if name == "elements" else (float if name == "e0s" else int)
            object.__setattr__(self, name, tuple(cast(x) for x in getattr(self, name)))
        elements, e0s = getattr(self, "elements"), getattr(self, "e0s")
        if len(elements) == 0 or len(set(elements)) != len(elements):
            raise ValueError(f"elements must be non-empty and unique, got {elements}")
        if e0s and len(e0s) != len(elements):
            raise ValueError(f"e0s needs one value per element ({len(elements)}), got {len(e0s)}")
        priors = {str(k): dict(v or {}) for k, v in dict(getattr(self, "priors")).items()}
        validate_priors(priors)
        object.__setattr__(self, "priors", priors)
        long_range_options = {str(k): float(v) for k, v in dict(getattr(self, "long_range_options")).items()}
        validate_long_range(getattr(self, "long_range"), long_range_options)
        object.__setattr__(self, "long_range_options", long_range_options)
        if getattr(self, "dtype") not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {getattr(self, 'dtype')!r}")
        checks = {"ensemble_size": getattr(self, "ensemble_size") >= 1, "r_cut": getattr(self, "r_cut") > 0,
                  **checks}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid {self.model_name} hyperparameters: "
                             f"{', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    @classmethod
    def from_dict(cls, values: Dict[str, object]):
        """Build from a plain dict; unknown keys are an error that lists the valid ones."""
        valid = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown {cls.model_name} config keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**values)  # type: ignore[call-arg]

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)  # type: ignore[call-overload]
        for name in self.tuple_fields:
            d[name] = list(getattr(self, name))
        return d


class EnergyModel(nn.Module):
    """Base of the energy models: builds ``_build(config)`` under the config's dtype, keeps the
    attributes the Potential reads (``config``, ``num_species``, ``num_members``, ``r_cut``) and
    the per-atom energy offsets (``e0s`` buffer, ``scale``, ``shift``)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        dtype = DTYPES[config.dtype]
        self.num_species = len(config.elements)
        self.num_members = int(config.ensemble_size)
        self.r_cut = float(config.r_cut)
        #: edges per chunk of the message-passing blocks and atoms per chunk of per-atom work
        #: (0: all at once); set by the Potential from its memory budget (:mod:`mlff.nn.edge_chunks`)
        self.edge_chunk: int = 0
        self.atom_chunk: int = 0
        with default_dtype(dtype):
            self._build(config)
            self.priors = nn.ModuleList(build_priors(config.priors, config.elements))
            # 0 or 1 blocks (a list, so TorchScript needs no Optional module): mlff.nn.longrange
            blocks = [] if config.long_range == "none" else [
                LongRange(config.long_range, config.long_range_options, self.feature_dim, self.r_cut,
                          self.num_members, float(config.scale), self.num_species)]
            self.long_range = nn.ModuleList(blocks)
        #: whether the model reads the long-range context (positions, cells, total charges)
        self.has_long_range: bool = config.long_range != "none"
        #: whether the model predicts charges (``charges`` in the context)
        self.has_charges: bool = config.long_range in ("charges", "both")
        #: whether the model reads the context at all (a long-range block, a prior that needs
        #: positions and cells such as D3, or the structure's total charge as an input, as
        #: torchmd-net's TensorNet does)
        self.needs_context: bool = (self.has_long_range or bool(getattr(config, "charge_input", False))
                                    or any(name in CONTEXT_PRIORS for name in config.priors))
        e0 = torch.tensor(config.e0s if config.e0s else [0.0] * self.num_species, dtype=torch.float64)
        self.register_buffer("e0s", e0)
        self.scale = float(config.scale)
        self.shift = float(config.shift)
        self.to(dtype)  # the e0s too (float32 models keep float32 offsets, as they always have)

    def _build(self, config) -> None:
        raise NotImplementedError

    def memory_costs(self) -> Dict[str, float]:
        """Bytes per edge and per atom of an energy + forces call, for
        :func:`mlff.nn.edge_chunks.plan_chunks`. Each model sums its own tensor widths
        (:meth:`_widths`, floats per member) and they are scaled by the itemsize, the members
        and the measured ratio of peak memory to those sums (:data:`MEMORY_OVERHEAD`)."""
        w = self._widths()
        item = torch.finfo(self.e0s.dtype).bits // 8
        scale = item * self.num_members * MEMORY_OVERHEAD
        return {
            "edge_fixed": w["edge_fixed"] * scale + 40.0 + 48.0 * self.num_members,
            "atom_fixed": w["atom_fixed"] * scale,
            "edge_layers": w["edge_layers"] * scale,
            "atom_layers": w["atom_layers"] * scale,
            "edge_chunk": CHUNK_WORKING_SET * w["edge_max"] * scale,
            "atom_chunk": CHUNK_WORKING_SET * w["atom_max"] * scale,
        }

    def _widths(self) -> Dict[str, float]:
        """Floats per member: ``edge_fixed`` / ``atom_fixed`` per edge / atom held for the
        whole call; ``edge_layers`` / ``atom_layers`` per edge / atom kept for the backward pass
        by the chunkable work of all layers; ``edge_max`` / ``atom_max`` the largest of one
        layer (0 where a model has no atom chunks)."""
        raise NotImplementedError

    def atomic_energies(self, species: Tensor, readout: Tensor, edge_index: Tensor,
                        lengths: Tensor, features: Optional[Tensor] = None, vectors: Optional[Tensor] = None,
                        context: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """``E0[Z_i] + scale * readout + shift + priors + long range``: readout ``[M, N]``,
        edge lengths ``[M, E, 1]`` (A) -> ``[N, M]`` (eV, float64). A model with a long-range
        block passes its final invariant ``features`` ``[M, N, F]``, the edge ``vectors``
        ``[M, E, 3]`` and the Potential's ``context`` (:mod:`mlff.nn.longrange`)."""
        total = self.scale * readout
        for prior in self.priors:
            total = total + prior(species, edge_index, lengths, context)
        out = self.e0s[species].unsqueeze(1) + total.t().to(torch.float64) + self.shift
        for block in self.long_range:
            if features is None or vectors is None or context is None:
                raise RuntimeError("this model has a long-range block: call it with the Potential's "
                                   "long-range context (positions, cells, total charges)")
            out = out + block(features, species, edge_index, vectors, context).t()
        return out
