"""A TorchScript-free deployment: a model compiled ahead of time into a ``.pt2`` package
(``torch.export`` + AOTInductor), and :class:`ExportedPotential`, which runs it wherever a
:class:`~mlff.models.potential.Potential` runs on graphs (the ASE calculator, the OpenMM
PythonForce route).

How: the Potential's whole call, forces and stress included, is traced by ``make_fx`` into a
graph of aten operations (``torch.export`` cannot trace ``autograd.grad`` itself), with the
atom count ``N`` and the edge count ``E = 2 Eh`` symbolic; that graph is exported and
compiled by AOTInductor to C++ with the weights inside. The package needs torch (>= 2.9, the
same major version) and nothing from mlff's model code or TorchScript to run, and it runs
faster than TorchScript on small and medium systems (``benchmarks/export_aot.py``).

What the program assumes, and :class:`ExportedPotential` checks before each call: one
structure per call (a batch is split), edges in mirror order (:func:`mlff.neighbors.mirror_order`,
as every mlff neighbour list gives them), at least one edge. Not exportable yet (a clear
error): models that read the Potential's context (long-range blocks, the D3 prior, total-charge
input), because their code branches on the cell's periodicity.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

import mlff.graph as G
from mlff.errors import InputError
from mlff.neighbors import assume_mirror_order, mirrored_half
from mlff.nn.priors import CONTEXT_PRIORS

#: the format written into the package's metadata
EXPORT_FORMAT = "mlff-aot"
EXPORT_VERSION = 1
#: the program's inputs, in order
INPUTS = (G.POSITIONS, G.SPECIES, G.CELL, G.EDGE_INDEX, G.UNIT_SHIFTS)


def _export_blockers(potential) -> List[str]:
    """Why a model reads the Potential's context (:attr:`~mlff.models.base.EnergyModel.needs_context`),
    which the program cannot feed: its code branches on the cell's periodicity."""
    model = potential.model
    if not model.needs_context:
        return []
    blockers = [f"the {name} prior" for name in sorted(model.config.priors) if name in CONTEXT_PRIORS]
    if model.has_long_range:
        blockers.append(f"long_range {model.config.long_range!r}")
    if getattr(model.config, "charge_input", False):
        blockers.append("charge_input")
    return blockers


def _example_structure(potential):
    """A small periodic structure of the model's elements with edges in every direction (the
    trace's example; its sizes are symbolic in the program)."""
    from ase import Atoms

    gen = torch.Generator().manual_seed(0)
    n = max(8, 2 * len(potential.elements))
    box = 2.2 * float(potential.r_cut)
    numbers = [potential.elements[k % len(potential.elements)] for k in range(n)]
    positions = torch.rand(n, 3, generator=gen, dtype=torch.float64) * box
    return Atoms(numbers=numbers, positions=positions.numpy(), cell=[box] * 3, pbc=True)


def _for_tracing(potential):
    """A copy of ``potential`` that traces: no memory chunks (the program has no budget), and
    e3nn's spherical harmonics as plain Python (its TorchScript function fixes the shapes)."""
    from mlff.io import clone_potential

    from e3nn.o3 import _spherical_harmonics as sh

    # a rebuild (deepcopy fails on e3nn's TorchScript functions); its model has no chunks, and
    # none are planned: the plan needs concrete sizes
    pot = clone_potential(potential)
    pot._plan_chunks = lambda n_edges, n_atoms: None
    for module in pot.modules():
        if isinstance(module, sh.SphericalHarmonics):
            module.sph_func = sh._spherical_harmonics
    return pot


def export_aot(potential, path: Union[str, Path], metadata: Optional[Dict[str, object]] = None) -> Path:
    """Compile ``potential`` (a :class:`~mlff.models.potential.Potential`) into the AOTInductor
    package ``path`` (``.pt2``); returns the path. Energy, per-atom energies, forces and stress
    (and an ensemble's spreads) of one structure per call, in the model's dtype for the network
    and float64 outputs, exactly as the Potential computes them. Takes minutes (a C++ build).

    Raises :class:`~mlff.errors.InputError` for a model it cannot export, naming why."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from mlff.graph import atoms_to_graph

    path = Path(path)
    if path.suffix != ".pt2":
        raise InputError(f"an exported model is a .pt2 package: give a path ending in .pt2, not {path.name}")
    blockers = _export_blockers(potential)
    if blockers:
        raise InputError(f"this model cannot be exported ahead of time yet ({', '.join(blockers)} read the "
                         "cell's periodicity at run time): use the model file with the TorchScript or Python routes")
    pot = _for_tracing(potential)
    graph = atoms_to_graph(_example_structure(pot), pot.r_cut, pot.elements, torch.float64)
    example = tuple(graph[k] for k in INPUTS)
    probe = pot(graph, compute_forces=True, compute_stress=True)
    keys = sorted(probe)

    def program(positions: Tensor, species: Tensor, cell: Tensor, edge_index: Tensor, unit_shifts: Tensor):
        g = {G.POSITIONS: positions, G.SPECIES: species, G.CELL: cell, G.EDGE_INDEX: edge_index,
             G.UNIT_SHIFTS: unit_shifts, G.BATCH: torch.zeros_like(species),
             G.PBC: torch.ones(1, 3, dtype=torch.bool)}
        out = pot(g, compute_forces=True, compute_stress=True)
        return tuple(out[k] for k in keys)

    with assume_mirror_order(), torch.enable_grad():
        traced = make_fx(program, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    atoms = torch.export.Dim("atoms", min=2)
    edges = 2 * torch.export.Dim("pairs", min=2)
    dynamic = ({0: atoms}, {0: atoms}, None, {1: edges}, {0: edges})
    exported = torch.export.export(traced, example, dynamic_shapes=dynamic, strict=False)
    meta = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "outputs": keys,
        "elements": list(pot.elements), "r_cut": pot.r_cut, "num_members": pot.num_members,
        "model_type": type(pot.model).__name__, "dtype": str(pot.model_dtype).replace("torch.", ""),
        "supported_charges": list(pot.supported_charges), "supported_spins": list(pot.supported_spins),
        "torch": torch.__version__, "config": pot.model.config.to_dict(), **(metadata or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.pt2")
    _compile(exported, tmp, meta)
    tmp.replace(path)  # atomic: a killed build leaves no half package under the final name
    return path


def _compile(exported, package: Path, meta: Dict[str, object]) -> None:
    """AOTInductor-compile ``exported`` into ``package``. Inductor 2.9's vectorised C++ code
    generation fails on some kernels with a bare AssertionError in ``CppVecKernel.store`` (seen
    on a single-member float64 TensorNet with 16 channels): then the build is retried once with
    scalar kernels (``cpp.simdlen`` 1), slower but the same numbers, and says so in a warning
    and in the package's metadata (``vectorized``)."""
    # assert_indirect_indexing off: Inductor 2.9's CPU bounds check on gathered indices does not
    # compile for MACE's kernels; ExportedPotential checks species and edge indices instead
    configs: Dict[str, object] = {"assert_indirect_indexing": False}
    for vectorized in (True, False):
        if not vectorized:
            configs["cpp.simdlen"] = 1  # no SIMD width matches 1 bit: scalar kernels
        configs["aot_inductor.metadata"] = {"mlff": json.dumps({**meta, "vectorized": vectorized}, default=str)}
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=str(package),
                                                     inductor_configs=dict(configs))
            return
        except AssertionError:
            if not vectorized:
                raise
            warnings.warn("AOTInductor's vectorised C++ code generation failed on this model "
                          "(an Inductor bug); compiling scalar kernels instead (slower)", RuntimeWarning)


class ExportedPotential:
    """A ``.pt2`` package from :func:`export_aot`, called like a Potential on graphs:
    ``potential(graph, compute_forces=True, compute_stress=False) -> dict`` with the
    Potential's keys (``energy`` [B], ``energies`` [N], ``forces`` [N, 3], ``stress`` [B, 3, 3]
    and, for ensembles, the spreads and member values), float64. A batch of several graphs is
    evaluated one graph at a time. CPU only for now (the package is compiled for the CPU)."""

    def __init__(self, path: Union[str, Path]) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no exported model at {path}")
        try:
            self._runner = torch._inductor.aoti_load_package(str(path))
            raw = self._runner.get_metadata().get("mlff")
        except Exception as exc:  # the loader's errors are torch internals; name the file
            raise InputError(f"{path} is not an AOTInductor package that this torch ({torch.__version__}) "
                             f"can load: {exc}") from None
        if raw is None:
            raise InputError(f"{path} is an AOTInductor package but not one mlff exported (no mlff metadata)")
        meta = json.loads(raw)
        if meta.get("format") != EXPORT_FORMAT or int(meta.get("version", 0)) > EXPORT_VERSION:
            raise InputError(f"{path}: export format {meta.get('format')} version {meta.get('version')} "
                             f"is not one this mlff reads (version <= {EXPORT_VERSION})")
        self.path = path
        self.metadata: Dict[str, object] = meta
        self.outputs: List[str] = list(meta["outputs"])
        self.elements: List[int] = [int(z) for z in meta["elements"]]
        self.r_cut = float(meta["r_cut"])
        self.num_members = int(meta["num_members"])
        self.supported_charges: List[int] = [int(q) for q in meta.get("supported_charges", [0])]
        self.supported_spins: List[int] = [int(s) for s in meta.get("supported_spins", [1])]
        self.model_dtype = getattr(torch, str(meta.get("dtype", "float64")))
        self.training = False

    # the parts of the Potential interface the calculators use
    def eval(self) -> "ExportedPotential":
        return self

    def to(self, device: Union[str, torch.device]) -> "ExportedPotential":
        if torch.device(device).type != "cpu":
            raise InputError(f"{self.path.name} was compiled for the CPU: export it again on the device "
                             f"(mlff export --aot on a {torch.device(device).type} machine)")
        return self

    def set_memory_budget(self, memory_gb: Optional[float] = None) -> None:
        if memory_gb is not None:
            raise InputError("an exported (.pt2) model has no memory budget (it computes each structure "
                             "in one piece): use the model file for budgeted evaluation of large systems")

    def __call__(self, graph: Dict[str, Tensor], compute_forces: bool = True,
                 compute_stress: bool = False) -> Dict[str, Tensor]:
        n_graphs = int(graph[G.CELL].shape[0])
        if n_graphs == 1:
            return self._one(graph, compute_stress)
        ptr = graph[G.PTR] if G.PTR in graph else torch.cat([
            torch.zeros(1, dtype=torch.long), torch.bincount(graph[G.BATCH], minlength=n_graphs).cumsum(0)])
        parts = [self._one(_subgraph(graph, b, int(ptr[b]), int(ptr[b + 1])), compute_stress)
                 for b in range(n_graphs)]
        return {k: torch.cat([p[k] for p in parts], dim=_batch_dim(k)) for k in parts[0]}

    def _one(self, graph: Dict[str, Tensor], compute_stress: bool) -> Dict[str, Tensor]:
        edge_index, unit_shifts = graph[G.EDGE_INDEX], graph[G.UNIT_SHIFTS]
        species = graph[G.SPECIES]
        n, e = int(species.shape[0]), int(edge_index.shape[1])
        if n < 2 or e < 4:
            raise InputError(f"the exported program needs at least 2 atoms and 2 pairs within r_cut "
                             f"({n} atoms, {e // 2} pairs here): use the model file for such structures")
        if mirrored_half(edge_index, unit_shifts) != e // 2:  # reversed edges have negated shifts
            raise InputError("the exported program needs its edges in mirror order (edge k + E/2 is edge k "
                             "reversed), as mlff's neighbour lists give them: build the graph with "
                             "mlff.graph.atoms_to_graph")
        if int(species.min()) < 0 or int(species.max()) >= len(self.elements) or \
                int(edge_index.min()) < 0 or int(edge_index.max()) >= n:
            raise InputError("species or edge indices out of range for this exported model")
        inputs = [graph[G.POSITIONS].to(torch.float64), species, graph[G.CELL].to(torch.float64),
                  edge_index, unit_shifts]
        values = dict(zip(self.outputs, self._runner(*inputs)))
        if not compute_stress:  # as the Potential: no stress unless asked (molecules have no volume)
            values = {k: v for k, v in values.items() if "stress" not in k and k != "virial"}
        return values


def _batch_dim(key: str) -> int:
    """The axis along which a Potential output concatenates over graphs."""
    if key.startswith("member_"):
        return 1
    return 0


def _subgraph(graph: Dict[str, Tensor], b: int, start: int, stop: int) -> Dict[str, Tensor]:
    """Graph ``b`` of a batch (atoms ``start:stop``) with its own edges, renumbered from 0."""
    edge_index = graph[G.EDGE_INDEX]
    keep = (edge_index[1] >= start) & (edge_index[1] < stop)
    return {G.POSITIONS: graph[G.POSITIONS][start:stop], G.SPECIES: graph[G.SPECIES][start:stop],
            G.CELL: graph[G.CELL][b:b + 1], G.EDGE_INDEX: edge_index[:, keep] - start,
            G.UNIT_SHIFTS: graph[G.UNIT_SHIFTS][keep]}


def is_exported(path: Union[str, Path, object]) -> bool:
    """Whether a model argument names a ``.pt2`` package."""
    return isinstance(path, (str, Path)) and str(path).endswith(".pt2")


__all__: Sequence[str] = ("export_aot", "ExportedPotential", "is_exported")
