"""The configuration of a relative binding free-energy network by ATM (:class:`RBFEConfig`,
``mlff fe rbfe CONFIG.yaml``).

A light module (standard library only) like :mod:`..hydration_config`, so the command line
can state the defaults without importing OpenMM. Example: ``data/examples/rbfe_hostguest.yaml``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

#: keys of one molecule (receptor or ligand) in the config
MOLECULE_KEYS = {"smiles", "molecule_file", "charge_method", "experiment", "reference_atoms"}
#: keys of a receptor: GAFF like a ligand, or a prepared PDB with an OpenMM force field
RECEPTOR_KEYS = {"smiles", "molecule_file", "charge_method", "pdb", "forcefield"}


def _molecule(where: str, values: Any, ligand: bool) -> Dict[str, Any]:
    if isinstance(values, str):  # a bare SMILES
        values = {"smiles": values}
    if not isinstance(values, dict):
        raise ValueError(f"{where}: give a SMILES or a mapping with smiles or molecule_file")
    allowed = MOLECULE_KEYS if ligand else RECEPTOR_KEYS
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {where}; valid keys: {sorted(allowed)}")
    if not ligand and "pdb" in values:  # a protein: the force field's residue templates
        extra = sorted(set(values) & {"smiles", "molecule_file", "charge_method"})
        if extra:
            raise ValueError(f"{where}: a pdb receptor takes an OpenMM force field (forcefield: "
                             f"[amber14-all.xml, ...]), not {extra}")
        out = dict(values)
        out["pdb"] = str(Path(out["pdb"]).expanduser().resolve())
        if not Path(out["pdb"]).exists():
            raise ValueError(f"{where}: pdb {out['pdb']} does not exist")
        if "forcefield" in out:
            files = out["forcefield"]
            out["forcefield"] = [files] if isinstance(files, str) else [str(f) for f in files]
        return out
    if not ligand and "forcefield" in values:
        raise ValueError(f"{where}: forcefield is for a pdb receptor; a smiles/molecule_file receptor "
                         "is GAFF like the ligands (the config's top-level forcefield)")
    if ("smiles" in values) == ("molecule_file" in values):
        raise ValueError(f"{where}: give exactly one of smiles and molecule_file (a .mol/.sdf/.mol2 "
                         "with hydrogens and 3D coordinates; a ligand's file is its pose in the site)")
    out = dict(values)
    if "molecule_file" in out:  # absolute, so a resumed run finds the same file
        out["molecule_file"] = str(Path(out["molecule_file"]).expanduser().resolve())
    if out.get("reference_atoms") is not None:
        ref = [int(i) for i in out["reference_atoms"]]
        if len(ref) != 3 or len(set(ref)) != 3:
            raise ValueError(f"{where}: reference_atoms must be three different atom indices (0-based, "
                             f"in the molecule's own order), got {out['reference_atoms']}")
        out["reference_atoms"] = ref
    if out.get("experiment") is not None:
        out["experiment"] = float(out["experiment"])
    return out


@dataclass(frozen=True)
class RBFEConfig:
    """A network of relative binding free energies by the alchemical transfer method.

    ``receptor``: the host (or a small receptor) as ``{smiles: ...}`` or ``{molecule_file:
    ...}``, GAFF2/AM1-BCC like the ligands (``charge_method: bcc-fixed`` for AM1-BCC at the
    given geometry, without sqm's optimisation, which takes hours for a 147-atom host); or a
    protein as ``{pdb: prepared.pdb, forcefield: [amber14-all.xml]}`` (:mod:`.receptor`; give
    the ligands as docked molecule files, or ``site_center_nm``). ``ligands``: name -> ``{smiles | molecule_file,
    experiment (dG_bind, kcal/mol; optional), reference_atoms (three atom indices for the
    alignment restraint; optional)}``; a ligand's molecule_file is its pose in the site (the
    receptor's frame), a SMILES ligand is placed at ``site_center_nm`` (default: the receptor's
    centroid, a host's cavity) with its long axis along the receptor's thinnest axis.
    ``edges``: ``[A, B]`` pairs, ddG(A -> B) = dG_bind(B) - dG_bind(A).

    Protocol: ``states_per_leg`` ATM states per leg (21 in all by default, AToM-OpenMM's
    schedule), each window ``equilibration_ps`` + ``production_ps`` with energies every
    ``sample_every_ps``; the displaced ligand ``displacement_nm`` away (default: along the
    box diagonal, far enough to clear the receptor by the cutoff plus 0.4 nm). ``model``
    (``"default"`` or a model file) makes both ligands ML (mechanical embedding; their
    interactions stay MM), with ``ml_route`` / ``ml_device`` / ``ml_timestep_fs`` as in
    :class:`..hydration_config.HydrationConfig`; an ensemble's members give a model error.
    """

    receptor: Dict[str, Any] = field(default_factory=dict)
    ligands: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    edges: Tuple[Tuple[str, str], ...] = ()
    name: str = "rbfe"
    forcefield: str = "gaff2"
    site_center_nm: Tuple[float, float, float] | None = None
    site_radius_nm: float = 0.8
    displacement_nm: Tuple[float, float, float] | None = None
    padding_nm: float = 1.0
    nonbonded_cutoff_nm: float = 0.9
    hydrogen_mass_amu: float | None = 3.0
    temperature_K: float = 298.15
    pressure_bar: float | None = 1.01325
    timestep_fs: float = 4.0
    friction_per_ps: float = 1.0
    states_per_leg: int = 11
    equilibration_ps: float = 20.0
    production_ps: float = 200.0
    sample_every_ps: float = 1.0
    platform: str = "CPU"
    threads: int = 1
    workers: int = 2
    scheduler: str | None = None
    seed: int = 0
    cache_dir: str | None = None
    model: str | None = None
    ml_route: str = "torch"
    ml_device: str = "cpu"
    ml_timestep_fs: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "receptor", _molecule("receptor", self.receptor, ligand=False))
        if not isinstance(self.ligands, dict) or len(self.ligands) < 2:
            raise ValueError("ligands: give at least two, as name -> {smiles: ...} (or molecule_file)")
        object.__setattr__(self, "ligands", {str(k): _molecule(f"ligand {k}", v, ligand=True)
                                             for k, v in self.ligands.items()})
        edges = []
        for edge in self.edges:
            if isinstance(edge, str):
                edge = edge.split("~")
            if len(edge) != 2 or any(str(x) not in self.ligands for x in edge):
                raise ValueError(f"edge {edge}: give two ligand names of 'ligands' ({sorted(self.ligands)}), "
                                 "as [A, B] or 'A~B'")
            edges.append((str(edge[0]), str(edge[1])))
        if not edges:
            raise ValueError("edges: give at least one pair [A, B] of ligand names")
        object.__setattr__(self, "edges", tuple(edges))
        for key in ("site_center_nm", "displacement_nm"):
            value = getattr(self, key)
            if value is not None:
                if len(value) != 3:
                    raise ValueError(f"{key} must be three numbers (nm), got {value}")
                object.__setattr__(self, key, tuple(float(x) for x in value))
        if self.states_per_leg < 2:
            raise ValueError(f"states_per_leg must be >= 2, got {self.states_per_leg}")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("workers and threads must be >= 1")
        if self.ml_route not in ("torch", "python"):
            raise ValueError(f"ml_route must be 'torch' (TorchForce) or 'python' (PythonForce), got {self.ml_route!r}")
        if self.forcefield not in ("gaff2", "gaff"):
            raise ValueError(f"forcefield must be gaff2 or gaff, got {self.forcefield!r}")
        if self.sampling().n_samples < 3:  # also validates the sampling values
            raise ValueError(f"production_ps {self.production_ps} gives fewer than 3 samples per window at "
                             f"sample_every_ps {self.sample_every_ps}: sample longer or more often")

    @property
    def experiment(self) -> Dict[str, float]:
        """Ligand -> experimental dG_bind (kcal/mol), those given."""
        return {k: v["experiment"] for k, v in self.ligands.items() if v.get("experiment") is not None}

    @property
    def kT_kcal_mol(self) -> float:
        from ..sampling_settings import MOLAR_GAS_CONSTANT_KJ
        from mlff.units import KJ_PER_KCAL

        return MOLAR_GAS_CONSTANT_KJ * self.temperature_K / KJ_PER_KCAL

    def sampling(self, edge_index: int = 0):
        """The windows' :class:`..sampling_settings.SamplingSettings` (a seed per edge)."""
        from ..sampling_settings import SamplingSettings

        return SamplingSettings(
            temperature_K=self.temperature_K, pressure_bar=self.pressure_bar,
            timestep_fs=(self.ml_timestep_fs if self.model is not None and self.ml_timestep_fs else self.timestep_fs),
            friction_per_ps=self.friction_per_ps, equilibration_ps=self.equilibration_ps,
            production_ps=self.production_ps, sample_every_ps=self.sample_every_ps,
            platform=self.platform, threads=self.threads, seed=self.seed + 100 * edge_index)

    @classmethod
    def from_dict(cls, values: Dict[str, Any], where: str = "config") -> "RBFEConfig":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {where}; valid keys: {sorted(valid)}")
        for key in ("receptor", "ligands", "edges"):
            if key not in values:
                raise ValueError(f"{where} needs '{key}' (see data/examples/rbfe_hostguest.yaml)")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RBFEConfig":
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of RBFEConfig keys")
        return cls.from_dict(data.get("rbfe", data), where=str(path))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
