"""Training configuration: frozen dataclasses validated on creation; YAML only builds them.

Unknown keys anywhere are errors that list the valid keys. Example (data/examples/ has more)::

    model: {type: mace, channels: 32, max_L: 1, correlation: 3, r_cut: 5.0, dtype: float64}
    data:
      train: data/datasets/organic_gfn2/train.extxyz
      valid: data/datasets/organic_gfn2/val.extxyz
      energy_key: energy_xtb
      forces_key: forces_xtb
    loss: {energy: 1.0, forces: 100.0}
    optim: {lr: 0.005, batch_size: 8, max_epochs: 50, scheduler: plateau}
    seed: 0
    out: runs/my_model
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

T = TypeVar("T")


def _from_dict(cls: Type[T], values: Optional[Dict[str, Any]], where: str) -> T:
    values = dict(values or {})
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {where}; valid keys: {sorted(valid)}")
    return cls(**values)  # type: ignore[call-arg]


@dataclass(frozen=True)
class DataConfig:
    """Files and keys. ``valid`` may be omitted: then ``valid_fraction`` of ``train`` is held out
    (seeded). ``e0s``: how E0s are obtained when the model config gives none: ``isolated`` (from
    isolated-atom frames, least squares for elements without one) or ``least_squares`` (fitted
    to the molecules' energies; the network then learns only what composition cannot explain)."""

    train: str
    valid: Optional[str] = None
    test: Tuple[str, ...] = ()
    valid_fraction: float = 0.1
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: Optional[str] = None
    #: reference charges (arrays) and dipoles (info) for learned-charge models, e.g.
    #: ``charges_xtb`` / ``dipole_xtb`` from ``mlff label``; trained with ``loss.charges`` /
    #: ``loss.dipole`` > 0
    charges_key: Optional[str] = None
    dipole_key: Optional[str] = None
    e0s: str = "isolated"

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", tuple(self.test))
        if self.e0s not in ("isolated", "least_squares"):
            raise ValueError(f"data.e0s must be 'isolated' (isolated-atom frames, least squares for "
                             f"the rest) or 'least_squares' (all fitted), got {self.e0s!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule, batching and budgets."""

    optimizer: str = "adam"  # adam | adamw
    lr: float = 5e-3
    weight_decay: float = 0.0
    amsgrad: bool = True
    batch_size: int = 8
    valid_batch_size: int = 16
    max_epochs: int = 100
    max_seconds: Optional[float] = None
    scheduler: str = "plateau"  # plateau | cosine | none
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    warmup_epochs: int = 0
    ema_decay: Optional[float] = 0.99
    grad_clip: Optional[float] = 10.0
    checkpoint_every_steps: int = 100

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.scheduler not in ("plateau", "cosine", "none"):
            raise ValueError(f"scheduler must be plateau, cosine or none, got {self.scheduler!r}")
        for name in ("lr", "batch_size", "valid_batch_size", "max_epochs", "checkpoint_every_steps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (energy per atom, forces, stress). ``stage_two_epoch``: from that epoch on
    (0-based) the weights become ``stage_two_energy``/``stage_two_forces`` and the learning rate
    ``stage_two_lr`` (when given): a force-dominated first stage, then a stage that fixes the
    energies, as MACE's recipes do."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 0.0
    charges: float = 0.0
    dipole: float = 0.0
    stage_two_epoch: Optional[int] = None
    stage_two_energy: float = 1000.0
    stage_two_forces: float = 100.0
    stage_two_lr: Optional[float] = 1e-3

    def __post_init__(self) -> None:
        if self.stage_two_epoch is not None and self.stage_two_epoch < 0:
            raise ValueError(f"stage_two_epoch must be >= 0, got {self.stage_two_epoch}")


#: options that may change between a run and its resume (budgets, later stages, outputs)
RESUMABLE_CHANGES = ("optim.max_epochs", "optim.max_seconds", "export", "data.test",
                     "loss.stage_two_epoch", "loss.stage_two_energy", "loss.stage_two_forces",
                     "loss.stage_two_lr")


@dataclass(frozen=True)
class FinetuneConfig:
    """How the model of ``init_from`` is fine-tuned (the ``finetune:`` section).

    Attributes:
        e0s: ``keep`` (the model's isolated-atom energies; new elements fitted) or ``refit``
            (all shifted by least squares on the training data).
        replay: frames from the original model's domain (any file ase.io reads; labels in it
            are ignored): the model's own energies and forces on them become training targets.
        replay_count: how many replay frames to use (a seeded sample; all if fewer).
        freeze: parameter-name prefixes to keep fixed, e.g. ``["embedding", "interactions.0"]``.
        seed: of the replay sample and of new elements' initial weights.
    """

    e0s: str = "keep"
    replay: Optional[str] = None
    replay_count: int = 200
    freeze: Tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "freeze", tuple(str(p) for p in self.freeze))
        if self.e0s not in ("keep", "refit"):
            raise ValueError(f"finetune.e0s must be 'keep' or 'refit', got {self.e0s!r}")
        if self.replay_count < 1:
            raise ValueError(f"finetune.replay_count must be >= 1, got {self.replay_count}")

    @property
    def is_default(self) -> bool:
        return self == FinetuneConfig()


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. ``model`` is the model type's config dict plus ``type``
    (elements, E0s, average neighbours and scale/shift are filled from the training data unless
    given; ``ensemble_size: N`` trains N members in one model). ``export``: where the final model
    (best validation weights, ensembles recalibrated) is also written. ``bootstrap``: each
    ensemble member fits its own bootstrap resample of the training set (seeded multinomial
    counts used as per-member structure weights; members always differ by their initial weights).
    ``init_from``: a model file to start from (fine-tuning; the ``model`` section is then ignored
    except for ``type``), shaped by ``finetune`` (:class:`mlff.train.finetune.FinetuneConfig`:
    E0 refit, replay of the original model's own predictions, frozen layers; new elements in the
    data are added to the model)."""

    model: Dict[str, Any]
    data: DataConfig
    out: str
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "cpu"
    init_from: Optional[str] = None
    export: Optional[str] = None
    bootstrap: bool = False
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if not self.init_from and not self.finetune.is_default:
            raise ValueError("the finetune section needs init_from (the model to fine-tune)")
        if self.bootstrap and int(self.model.get("ensemble_size", 1)) < 2:
            raise ValueError("bootstrap: true resamples the training set per ensemble member; "
                             "set model.ensemble_size >= 2 or drop bootstrap")
        for term, key in (("charges", self.data.charges_key), ("dipole", self.data.dipole_key)):
            if getattr(self.loss, term) > 0 and (key is None or self.model.get("long_range", "none")
                                                 not in ("charges", "both")):
                raise ValueError(f"loss.{term} > 0 needs data.{term}_key (e.g. {term}_xtb from mlff label) "
                                 "and a model with learned charges (model.long_range: charges or both)")

    @classmethod
    def from_dict(cls, values: Dict[str, Any], where: str = "config") -> "TrainConfig":
        values = dict(values)
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {where}; valid keys: {sorted(valid)}")
        for required in ("model", "data", "out"):
            if required not in values:
                raise ValueError(f"{where} needs a '{required}' section")
        model = dict(values["model"])
        if "type" not in model:
            raise ValueError(f"{where}: model needs a 'type' (e.g. mace)")
        return cls(
            model=model,
            data=_from_dict(DataConfig, values["data"], f"{where}: data"),
            out=str(values["out"]),
            loss=_from_dict(LossConfig, values.get("loss"), f"{where}: loss"),
            optim=_from_dict(OptimConfig, values.get("optim"), f"{where}: optim"),
            seed=int(values.get("seed", 0)),
            device=str(values.get("device", "cpu")),
            init_from=values.get("init_from"),
            export=values.get("export"),
            bootstrap=bool(values.get("bootstrap", False)),
            finetune=_from_dict(FinetuneConfig, values.get("finetune"), f"{where}: finetune"),
        )

    @classmethod
    def from_yaml(cls, path: str) -> "TrainConfig":
        import yaml

        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist")
        return cls.from_dict(yaml.safe_load(p.read_text()) or {}, where=str(p))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
