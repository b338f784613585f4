"""The training loop behind ``mlff train CONFIG.yaml [--resume]``.

- Statistics from the training data fill the model config: elements, E0s (isolated atoms or
  least squares), average number of neighbours, scale (force RMS) and shift (mean interaction
  energy per atom); values given in the config win.
- Batches are shuffled by a generator seeded with ``seed + epoch``, so the order of any epoch is
  known without replaying earlier ones; with the RNG states in the checkpoint this makes a
  resumed run follow the uninterrupted one exactly. The epoch's running train losses are in
  the checkpoint too, so a mid-epoch resume reports the same ``train_loss``.
- The loop runs with TorchScript's graph-executor optimisation off
  (``torch.jit.optimized_execution(False)``): e3nn's scripted tensor products otherwise run
  their first call per model instance unoptimised (profiling) and later calls optimised, which
  differ in the last bit; a resumed run, with a new model instance, would then drift from the
  uninterrupted one by 1e-16 per step (measured: 25 of 38 weight tensors after one epoch).
  Off, every call takes the same path; the step time is unchanged within noise (32-channel MACE,
  1 thread).
- A checkpoint (atomic) every ``checkpoint_every_steps`` optimiser steps and at every epoch end;
  ``--resume`` continues from it, losing at most one interval.
- Each epoch: validation with the EMA weights, ``metrics.jsonl`` (one JSON line per epoch),
  ``learning_curve.png``, and ``best_model.pt`` when the validation loss improves.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from mlff import graph as G
from mlff.atomic import atomic_path, atomic_write_text
from mlff.defaults import DEFAULT_R_CUT
from mlff.dtypes import parse_dtype
from mlff.data.dataset import DataKeys, GraphDataset, random_split
from mlff.io import load_model, save_model
from mlff.models.potential import Potential
from mlff.models.registry import MODELS, build_model
from mlff.resume_check import as_json, changed_settings
from mlff.train.finetune import elements_with, extend_elements, prepare_finetune
from mlff.train.checkpoint import load_checkpoint, save_checkpoint
from mlff.train.config import RESUMABLE_CHANGES, TrainConfig
from mlff.train.ema import ExponentialMovingAverage
from mlff.train.metrics import plot_learning_curve
from mlff.train.distributed import all_sum, init_from_env, rank_world
from mlff.train.losses import MEMBER_WEIGHT, LossWeights, loss_denominators, weighted_loss
from mlff.train.metrics import ErrorAccumulator

CHECKPOINT = "checkpoint.pt"


class Trainer:
    """Train one model as described by a :class:`TrainConfig`."""

    def __init__(self, config: TrainConfig, progress: bool = True) -> None:
        self.config = config
        self.rank, self.world = rank_world()
        self.is_main = self.rank == 0  # rank 0 alone writes files and shows progress
        self.progress = progress and self.is_main
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)  # unused by mlff, but a run's checkpointed RNG state is then reproducible
        keys = DataKeys(energy=config.data.energy_key, forces=config.data.forces_key,
                        stress=config.data.stress_key, virial=None, charges=config.data.charges_key,
                        dipole=config.data.dipole_key)
        model_cfg = dict(config.model)
        model_type = model_cfg.pop("type")
        r_cut = float(model_cfg.get("r_cut", DEFAULT_R_CUT))
        dtype = parse_dtype(model_cfg.get("dtype", "float64"))
        require = ("energy", "forces")
        init_model: Optional[Potential] = None
        model_elements: Optional[List[int]] = None
        if config.init_from:
            # fine-tuning keeps the model's species indices; elements new in the data are added
            init_model = load_model(config.init_from)
            original_elements = list(init_model.elements)
            model_elements = elements_with(init_model, config.data.train)
            init_model = extend_elements(init_model, model_elements, seed=config.finetune.seed)
            r_cut = init_model.r_cut
            dtype = next(init_model.parameters()).dtype
        self.train_set = GraphDataset(config.data.train, r_cut, keys, model_elements, require, dtype)
        elements = self.train_set.elements
        if config.data.valid:
            self.valid_set: List[Dict[str, torch.Tensor]] = list(
                GraphDataset(config.data.valid, r_cut, keys, elements, require, dtype).graphs)
            self.train_graphs = list(self.train_set.graphs)
        else:
            tr, va = random_split(len(self.train_set), [1 - config.data.valid_fraction,
                                                        config.data.valid_fraction], config.seed)
            self.train_graphs = [self.train_set.graphs[i] for i in tr]
            self.valid_set = [self.train_set.graphs[i] for i in va]
        if init_model is not None:
            self.potential, replay, report = prepare_finetune(
                init_model, original_elements, config.finetune, self.train_set.frames, keys, dtype)
            self.train_graphs += replay  # the original model's own predictions on its domain
            if self.is_main:
                atomic_write_text(self.out / "finetune.json", json.dumps(report, indent=1))
            self.potential.train()
        else:
            # only the statistics this model type has fields for (TensorNet has no neighbour
            # normalisation, for example); an unknown type is named by build_model
            fields = set(MODELS[model_type][0].__dataclass_fields__) if model_type in MODELS else set()
            model_cfg.update(self._statistics(model_cfg, elements, r_cut, fields))
            self.potential = Potential(build_model(model_type, model_cfg), supported_charges=(),
                                       supported_spins=())
        # the model's domain: the total charges and spin multiplicities of its training data
        # (added to those of the model it was fine-tuned from)
        charges, spins = training_domain(self.train_set.frames)
        self.potential.supported_charges = sorted(set(self.potential.supported_charges) | charges)
        self.potential.supported_spins = sorted(set(self.potential.supported_spins) | spins)
        self.potential.to(config.device)
        if self.world > 1:
            if config.optim.batch_size < self.world:
                raise ValueError(f"optim.batch_size ({config.optim.batch_size}) must be at least the "
                                 f"number of processes ({self.world}): each takes a share of a batch")
            from torch.nn.parallel import DistributedDataParallel

            # gradients averaged over ranks; the model's buffers are constants
            self.forward_model: torch.nn.Module = DistributedDataParallel(
                self.potential, broadcast_buffers=False)
        else:
            self.forward_model = self.potential
        self.member_counts = self._bootstrap_counts() if config.bootstrap else None
        o = config.optim
        opt_cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.potential.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                                 amsgrad=o.amsgrad)
        self.scheduler = self._make_scheduler()
        self.ema = ExponentialMovingAverage(self.potential, o.ema_decay) if o.ema_decay else None
        c = config.loss
        self.weights = LossWeights(c.energy, c.forces, c.stress, c.charges, c.dipole)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.running: List[float] = []  # this epoch's batch losses so far
        self.step = 0
        self.best_valid = math.inf
        self._stage_two_started = False
        self.history: List[Dict[str, object]] = []
        self.elapsed = 0.0

    # --- set-up -------------------------------------------------------------------------

    def _statistics(self, model_cfg: Dict[str, object], elements: List[int], r_cut: float,
                    fields: set) -> Dict[str, object]:
        """Elements, E0s, average neighbours, scale and shift from the training data, for the
        config ``fields`` the model type has and ``model_cfg`` does not give."""
        from mlff.data.statistics import (
            average_num_neighbors,
            compute_e0s,
            force_components_squared,
            interaction_energies_per_atom,
            is_isolated_atom,
        )

        frames = self.train_set.frames
        key = self.config.data.energy_key
        filled: Dict[str, object] = {"elements": elements}
        if "e0s" in fields and "e0s" not in model_cfg:
            e0 = compute_e0s(frames, key, elements,
                             use_isolated=self.config.data.e0s == "isolated")
            filled["e0s"] = [e0[z] for z in elements]
        e0s = dict(zip(elements, filled.get("e0s", model_cfg.get("e0s"))))  # type: ignore[arg-type]
        molecules = [f for f in frames if not is_isolated_atom(f)]
        if "avg_num_neighbors" in fields and "avg_num_neighbors" not in model_cfg:
            filled["avg_num_neighbors"] = average_num_neighbors(molecules, r_cut)
        if "scale" in fields and "scale" not in model_cfg:
            forces_key = self.config.data.forces_key
            filled["scale"] = float(np.sqrt(np.mean(force_components_squared(frames, forces_key)))) or 1.0
        if "shift" in fields and "shift" not in model_cfg:
            per_atom = interaction_energies_per_atom(molecules, key, e0s)
            filled["shift"] = float(np.mean(per_atom)) if per_atom else 0.0
        return filled

    def _make_scheduler(self):
        o = self.config.optim
        if o.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=o.plateau_factor, patience=o.plateau_patience)
        if o.scheduler == "cosine":
            warm, total = o.warmup_epochs, o.max_epochs

            def factor(epoch: int) -> float:
                if epoch < warm:
                    return (epoch + 1) / (warm + 1)
                return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(1, total - warm)))

            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        return None

    def _bootstrap_counts(self) -> torch.Tensor:
        """[M, N_train] float64: how often each member's bootstrap resample holds each training
        structure (multinomial, seeded by ``seed``, so a resume draws the same resamples)."""
        m = int(getattr(self.potential, "num_members", 1))
        n = len(self.train_graphs)
        rng = np.random.default_rng([self.config.seed, 7411])
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(m)])
        return torch.as_tensor(counts, dtype=torch.float64, device=self.config.device)

    # --- checkpoints --------------------------------------------------------------------

    def _state(self) -> Dict[str, object]:
        return {
            "model": self.potential.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
            "running": json.dumps(self.running),
            "best_valid": self.best_valid, "history": json.dumps(self.history),
            "stage_two_started": self._stage_two_started,
            "elapsed": self.elapsed, "config": json.dumps(self.config.to_dict()),
        }

    def save_checkpoint(self) -> None:
        if self.is_main:  # every rank holds the same state
            save_checkpoint(self.out / CHECKPOINT, self._state())

    def resume(self) -> None:
        """Load ``OUT/checkpoint.pt`` (weights, optimiser, EMA, counters and RNG states)."""
        state = load_checkpoint(self.out / CHECKPOINT)
        # compare after filling defaults, so options added to mlff later do not block a resume;
        # budgets, later stages and outputs may change (RESUMABLE_CHANGES)
        saved = TrainConfig.from_dict(json.loads(state["config"])).to_dict()  # type: ignore[arg-type]
        changed = [name for name, _, _ in changed_settings(as_json(saved), as_json(self.config.to_dict()))]
        blocking = [k for k in changed if k not in RESUMABLE_CHANGES]
        if blocking:
            raise ValueError(f"{self.out / CHECKPOINT} was written with a different config "
                             f"({', '.join(blocking)} changed); resume with the same config or choose "
                             f"another 'out' (may change on resume: {', '.join(RESUMABLE_CHANGES)})")
        self.potential.load_state_dict(state["model"])  # type: ignore[arg-type]
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])  # type: ignore[arg-type]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])  # type: ignore[arg-type]
        self.epoch = int(state["epoch"])  # type: ignore[arg-type]
        self.batch_in_epoch = int(state["batch_in_epoch"])  # type: ignore[arg-type]
        # checkpoints of mlff before the running losses were saved: the epoch's mean restarts
        self.running = json.loads(state["running"]) if "running" in state else []  # type: ignore[arg-type]
        self.step = int(state["step"])  # type: ignore[arg-type]
        self.best_valid = float(state["best_valid"])  # type: ignore[arg-type]
        self._stage_two_started = bool(state.get("stage_two_started", False))
        self.history = json.loads(state["history"])  # type: ignore[arg-type]
        self.elapsed = float(state["elapsed"])  # type: ignore[arg-type]

    # --- loop ---------------------------------------------------------------------------

    def _batches(self, epoch: int) -> List[List[int]]:
        order = np.random.default_rng(self.config.seed + epoch).permutation(len(self.train_graphs))
        b = self.config.optim.batch_size
        return [order[k : k + b].tolist() for k in range(0, len(order), b)]

    def _to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {k: v.to(self.config.device) for k, v in batch.items()}

    def validate(self) -> Tuple[float, Dict[str, object]]:
        """Validation loss and error metrics (EMA weights when EMA is on)."""
        acc = ErrorAccumulator()
        total, n = 0.0, 0
        stress = self.config.loss.stress > 0
        context = self.ema.average_parameters(self.potential) if self.ema else contextlib.nullcontext()
        with context:
            self.potential.eval()
            bs = self.config.optim.valid_batch_size
            for k in range(0, len(self.valid_set), bs):
                batch = self._to_device(G.collate(self.valid_set[k : k + bs]))
                pred = self.potential(batch, compute_forces=True, compute_stress=stress)
                total += float(weighted_loss(pred, batch, self.weights).detach()) * G.num_graphs(batch)
                n += G.num_graphs(batch)
                acc.add(pred, batch)
            self.potential.train()
        return total / max(n, 1), acc.summary()

    def train(self) -> Dict[str, object]:
        """Train to ``max_epochs`` (or the wall-clock budget) from the current state; returns
        the summary (epochs, steps, best validation loss, and :meth:`finalize`'s outputs)."""
        # one execution path for every call of the scripted parts (see the module docstring)
        with torch.jit.optimized_execution(False):
            return self._train()

    def _train(self) -> Dict[str, object]:
        from tqdm.auto import tqdm

        o = self.config.optim
        stress = self.config.loss.stress > 0
        start_time = time.time() - self.elapsed
        self.potential.train()
        while self.epoch < o.max_epochs:
            self._apply_stage(self.epoch)
            batches = self._batches(self.epoch)
            bar = tqdm(total=len(batches), initial=self.batch_in_epoch, disable=not self.progress,
                       desc=f"epoch {self.epoch + 1}/{o.max_epochs}", unit="batch")
            while self.batch_in_epoch < len(batches):
                idx = batches[self.batch_in_epoch][self.rank :: self.world]  # this rank's share
                batch = self._to_device(G.collate([self.train_graphs[i] for i in idx]))
                if self.member_counts is not None:
                    batch[MEMBER_WEIGHT] = self.member_counts[:, idx]
                totals = all_sum(loss_denominators(batch)) if self.world > 1 else None
                pred = self.forward_model(batch, compute_forces=True, compute_stress=stress)
                loss = weighted_loss(pred, batch, self.weights, totals)  # this share's part
                self.optimizer.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks; the shares' losses add up to the batch's
                (loss * self.world).backward()
                if self.world > 1:
                    loss = all_sum({"loss": loss.detach()})["loss"]
                if o.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.potential.parameters(), o.grad_clip)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.potential)
                self.step += 1
                self.batch_in_epoch += 1
                self.running.append(float(loss.detach()))  # restored by a mid-epoch resume
                bar.set_postfix(loss=f"{np.mean(self.running[-20:]):.4g}")
                bar.update(1)
                self.elapsed = time.time() - start_time
                if self.step % o.checkpoint_every_steps == 0:
                    self.save_checkpoint()
                if o.max_seconds is not None and self._out_of_time():
                    break
            bar.close()
            if self.batch_in_epoch < len(batches):  # wall-clock budget ran out mid-epoch
                self.save_checkpoint()
                break
            valid_loss, metrics = self.validate()
            if self.scheduler is not None:
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(valid_loss)
                else:
                    self.scheduler.step()
            record = {"epoch": self.epoch + 1, "step": self.step,
                      "train_loss": float(np.mean(self.running)) if self.running else None,
                      "valid_loss": valid_loss, "lr": self.optimizer.param_groups[0]["lr"],
                      "seconds": round(self.elapsed, 2), **metrics}
            self.history.append(record)
            if valid_loss < self.best_valid:
                self.best_valid = valid_loss
                if self.is_main:
                    self.save_best()
            self.epoch += 1
            self.batch_in_epoch = 0
            self.running = []
            self.save_checkpoint()
            if self.is_main:
                atomic_write_text(self.out / "metrics.jsonl",
                                  "".join(json.dumps(r) + "\n" for r in self.history))
                self.plot_learning_curve()
        summary: Dict[str, object] = {"epochs": self.epoch, "steps": self.step,
                                      "best_valid_loss": self.best_valid, "processes": self.world}
        if self.world > 1:
            torch.distributed.barrier()  # rank 0's files are complete
        if self.is_main:
            summary.update(self.finalize())
        return summary

    def _out_of_time(self) -> bool:
        """The wall-clock budget is spent (rank 0's clock decides, so all ranks stop together)."""
        over = torch.tensor([1.0 if self.elapsed > self.config.optim.max_seconds else 0.0])
        if self.world > 1:
            torch.distributed.broadcast(over, src=0)
        return bool(over.item())

    def finalize(self) -> Dict[str, object]:
        """Turn ``best_model.pt`` into the final ``model.pt``: ensembles get their recalibration
        factor fitted on the validation split; the test files are evaluated into ``OUT/eval``;
        the model is copied to ``export`` when the config names one."""
        import shutil

        from mlff.data.dataset import DataKeys
        from mlff.io import load_model_with_metadata
        from mlff.train import calibration
        from mlff.train.evaluate import evaluate

        best = self.out / "best_model.pt"
        if not best.exists():
            raise FileNotFoundError(f"{best} does not exist yet: train at least one epoch first")
        potential, metadata = load_model_with_metadata(best, self.config.device)
        summary: Dict[str, object] = {"model": str(self.out / "model.pt")}
        if potential.num_members > 1:
            std, err = [], []
            bs = self.config.optim.valid_batch_size
            for k in range(0, len(self.valid_set), bs):
                batch = self._to_device(G.collate(self.valid_set[k : k + bs]))
                pred = potential(batch, compute_forces=True)
                std.append(pred["forces_std_raw"].double().cpu().numpy())
                err.append((pred["forces"].double() - batch[G.FORCES]).cpu().numpy())
            scale = calibration.recalibration_factor(np.concatenate(std), np.concatenate(err))
            potential.std_scale.fill_(scale)
            metadata["calibration"] = {"std_scale": scale, "fitted_on": str(self.config.data.valid or
                                                                          "validation fraction")}
            summary["std_scale"] = scale
        metadata["training"] = {**dict(metadata.get("training", {})), "steps": self.step,
                                "epochs_run": self.epoch, "seconds": round(self.elapsed, 1)}
        save_model(potential, self.out / "model.pt", metadata=metadata)
        if self.config.data.test:
            keys = DataKeys(energy=self.config.data.energy_key, forces=self.config.data.forces_key,
                            stress=self.config.data.stress_key, virial=None)
            summary["test"] = evaluate(str(self.out / "model.pt"), list(self.config.data.test),
                                       str(self.out / "eval"), keys)
        if self.config.export:
            export = Path(self.config.export)
            export.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(export) as tmp:
                shutil.copyfile(self.out / "model.pt", tmp)
            summary["exported"] = str(export)
        return summary

    def _in_stage_two(self, epoch: int) -> bool:
        start = self.config.loss.stage_two_epoch
        return start is not None and epoch >= start

    def _apply_stage(self, epoch: int) -> None:
        """Loss weights of the epoch's stage; on entering stage two (not on a resume inside it)
        set its learning rate and restart the best-model tracking, since the validation loss
        changes meaning with the weights."""
        c = self.config.loss
        if not self._in_stage_two(epoch):
            return
        self.weights = LossWeights(c.stage_two_energy, c.stage_two_forces, c.stress, c.charges, c.dipole)
        if not self._stage_two_started:
            if c.stage_two_lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = c.stage_two_lr
                if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
                    self.scheduler.base_lrs = [c.stage_two_lr] * len(self.optimizer.param_groups)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.best = math.inf
                self.scheduler.num_bad_epochs = 0
            self.best_valid = math.inf
            self._stage_two_started = True

    def save_best(self) -> None:
        """``best_model.pt`` with the EMA weights (when EMA is on)."""
        context = self.ema.average_parameters(self.potential) if self.ema else contextlib.nullcontext()
        with context:
            save_model(self.potential, self.out / "best_model.pt",
                       metadata={"training": {"config": self.config.to_dict(), "epoch": self.epoch + 1,
                                              "valid_loss": self.best_valid}})

    def plot_learning_curve(self) -> None:
        plot_learning_curve(self.history, self.out / "learning_curve.png")


def training_domain(frames) -> Tuple[set, set]:
    """Total charges (``atoms.info["charge"]``, default 0) and spin multiplicities
    (``atoms.info["spin"]``, default 1) present in ``frames``."""
    charges = {int(round(float(f.info.get("charge", 0)))) for f in frames}
    spins = {int(round(float(f.info.get("spin", 1)))) for f in frames}
    return charges, spins


def run_training(config_path: str, resume: bool = False, progress: bool = True,
                 finalize_only: bool = False) -> Dict[str, object]:
    """Entry point of ``mlff train``: build the trainer, resume if asked, train, finalize.

    ``finalize_only``: skip training and finalize the run's current ``best_model.pt`` (an
    interim model from a run that is still going)."""
    config = TrainConfig.from_yaml(config_path)
    init_from_env(config.device)  # under torchrun/srun: join the process group
    trainer = Trainer(config, progress=progress)
    if finalize_only:
        trainer.resume()
        return trainer.finalize()
    if resume:
        trainer.resume()
    elif (trainer.out / CHECKPOINT).exists():
        raise FileExistsError(f"{trainer.out / CHECKPOINT} exists; pass --resume to continue it "
                              "or choose another 'out'")
    return trainer.train()

