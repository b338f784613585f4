"""Exponential moving average of model weights (evaluate and save the averaged weights)."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """Shadow copy ``s <- decay * s + (1 - decay) * p`` of every floating-point parameter.

    Use ``with ema.average_parameters(model): ...`` to evaluate with the averaged weights; the
    training weights are restored on exit. ``state_dict``/``load_state_dict`` for checkpoints.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: Dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.is_floating_point()
        }
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[None]:
        backup = {name: p.detach().clone() for name, p in model.named_parameters() if name in self.shadow}
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in self.shadow:
                    p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in backup:
                        p.copy_(backup[name])

    def state_dict(self) -> Dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.num_updates = int(state["num_updates"])  # type: ignore[arg-type]
        shadow = state["shadow"]
        assert isinstance(shadow, dict)
        missing = set(self.shadow) - set(shadow)
        if missing:
            raise ValueError(f"EMA state lacks parameters {sorted(missing)[:5]}...")
        for k in self.shadow:
            self.shadow[k].copy_(shadow[k])
