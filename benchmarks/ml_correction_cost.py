"""Where the time of an ML/MM correction goes: MD steps per second of the correction's
Systems (ethanol, the hydration protocol's 2.5 nm TIP3P box and vacuum; 4 fs, HMR) with and
without the model, one thread, same run (results/ml_correction_cost.json).

The ML share is 1 - t(MM) / t(ML/MM): what the TorchForce (and its CustomCVForce partner)
costs per step on top of the MM System.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_lock, record, versions, write_results  # noqa: E402


def steps_per_s(system, positions, box, platform: str, n: int = 200,
                parameters: dict | None = None) -> float:
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(298.15 * unit.kelvin, 1 / unit.picosecond,
                                                 4 * unit.femtosecond)
    props = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), props)
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    context.setPositions(positions)
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    integrator.step(20)
    start = time.perf_counter()
    integrator.step(n)
    return n / (time.perf_counter() - start)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    from mlff.md_workflows.free_energy import ml_interpolation as mi
    from mlff.md_workflows.free_energy.hydration import HydrationConfig, prepare_systems

    cfg = HydrationConfig(smiles="CCO", name="ethanol", forcefield="gaff", model="default")
    out = Path(__file__).resolve().parents[1] / "runs" / "ml_correction_cost"
    out.mkdir(parents=True, exist_ok=True)
    _, _, plain = prepare_systems(cfg, out)
    records = []
    for leg, platform in (("water", "CPU"), ("vacuum", "Reference")):
        system, pos, box, solute = plain[leg]
        spec = mi.model_spec("default", solute, plain["numbers"])
        ml_system, _ = mi.interpolated_system(system, spec)
        mm = steps_per_s(system, pos, box, platform)
        ml = steps_per_s(ml_system, pos, box, platform, parameters={mi.LAMBDA_ML: 0.5})
        share = 1.0 - ml / mm
        print(f"{leg}: MM {mm:.1f} steps/s, ML/MM {ml:.1f} steps/s: the model takes "
              f"{100 * share:.0f}% of a step ({1000 / ml:.1f} ms per step)", flush=True)
        records.append(record("ml_correction_cost", f"ethanol {leg}", system.getNumParticles(),
                              "steps_per_s", ml, "the same System without the model", mm,
                              dtype="float32 model", threads=1, lower_is_better=False,
                              vers=versions("openmm", "openmmtorch"), platform=platform,
                              ml_share_of_step=share, ms_per_step=1000 / ml))
    write_results("ml_correction_cost", records, keep_previous_by=("system",))
    return 0


if __name__ == "__main__":
    with benchmark_lock(__file__):
        raise SystemExit(main())
