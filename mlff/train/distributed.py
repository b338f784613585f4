"""Data-parallel training across processes with torch.distributed (gloo on CPU, nccl on GPU).

Two ways in, one code path:

- ``mlff train CONFIG --nproc N`` starts N processes on this machine (:func:`launch`);
- ``torchrun --nproc_per_node N -m mlff.md_workflows.cli train CONFIG`` (or ``srun`` under
  SLURM with the same environment variables) starts them itself; :func:`init_from_env` joins
  the group from ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``.

Every rank builds the same model and data (same seeds), takes its share ``batch[rank::world]``
of each global batch, and the model is wrapped in ``DistributedDataParallel``, which averages the
gradients. The loss of a share is normalised by the *global* counts (graphs, atoms) of the
batch, so the sum over ranks is exactly the loss one process computes on the whole batch: the
loss curve is that of a single process with the same global batch, to float round-off. Rank 0
alone writes checkpoints, metrics, plots and the final model; all ranks read the checkpoint on
``--resume``.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Dict, Tuple

import torch
import torch.distributed as dist
from torch import Tensor


def rank_world() -> Tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backend_for(device: str) -> str:
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group described by torchrun's environment variables (``WORLD_SIZE`` >
    1); returns whether this process is now part of a group."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend_for(device))
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def all_sum(values: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Element-wise sums over ranks of float64 tensors (one collective for all of them)."""
    if rank_world()[1] == 1 or not values:
        return values
    keys = sorted(values)
    flat = torch.cat([values[k].reshape(-1).to(torch.float64) for k in keys])
    dist.all_reduce(flat)
    out, start = {}, 0
    for k in keys:
        n = values[k].numel()
        out[k] = flat[start : start + n].view(values[k].shape)
        start += n
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, device: str, threads: int,
            target: Callable[..., object], args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    dist.init_process_group(backend_for(device), rank=rank, world_size=world)
    try:
        target(*args)
    finally:
        dist.destroy_process_group()


def launch(nproc: int, device: str, target: Callable[..., object], *args: object) -> None:
    """Run ``target(*args)`` in ``nproc`` processes of one process group on this machine
    (``torch.multiprocessing.spawn``; if one process fails, the others are stopped and the
    error is raised here). Each process gets ``cpu_count // nproc`` torch threads."""
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    threads = max(1, (os.cpu_count() or 1) // nproc)
    mp.spawn(_worker, args=(nproc, _free_port(), device, threads, target, args), nprocs=nproc, join=True)


def _rank_main(config_path: str, resume: bool, progress: bool) -> None:
    import json

    from mlff.train.trainer import run_training

    summary = run_training(config_path, resume=resume, progress=progress)
    if rank_world()[0] == 0:
        print(json.dumps(summary, default=str), flush=True)


def run_training_parallel(config_path: str, nproc: int, resume: bool = False,
                          progress: bool = True) -> None:
    """``mlff train CONFIG --nproc N``: :func:`mlff.train.trainer.run_training` in ``nproc``
    data-parallel processes on this machine; rank 0 prints the summary."""
    from mlff.train.config import TrainConfig

    config = TrainConfig.from_yaml(config_path)  # a bad config fails here, before any spawn
    launch(nproc, config.device, _rank_main, config_path, resume, progress)
