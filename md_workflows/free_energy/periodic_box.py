"""The periodic-box size rule of the free-energy workflows (standard library only, so that
light modules such as :mod:`.hydration_config` can check a box without importing OpenMM)."""

from __future__ import annotations

#: Extra box edge (nm) kept above twice the cutoff when a barostat may shrink the box.
BAROSTAT_MARGIN_NM = 0.2


def minimum_box_edge_nm(cutoff_nm: float, barostat: bool = True) -> float:
    """Smallest allowed edge (nm) of a cubic periodic box for a real-space cutoff (nm).

    The rule, used by :func:`~mlff.md_workflows.free_energy.parametrize.solvated_system` and by
    :class:`~mlff.md_workflows.free_energy.hydration_config.HydrationConfig`:

    - PME and the Lennard-Jones cutoff use the minimum-image convention (an atom sees one
      image of every other atom), so the edge must be at least ``2 * cutoff_nm``; OpenMM
      refuses a smaller box.
    - A Monte Carlo barostat (NPT) shrinks the box while the water settles (by a few percent
      from a freshly solvated box), and OpenMM stops the run once the edge falls below twice
      the cutoff. With ``barostat`` (the default, the safe choice) the edge must therefore be
      at least ``2 * cutoff_nm + BAROSTAT_MARGIN_NM`` (0.2 nm), e.g. 2.0 nm for a 0.9 nm
      cutoff. A fixed box (NVT, ``barostat=False``) needs only ``2 * cutoff_nm``.
    """
    return 2.0 * cutoff_nm + (BAROSTAT_MARGIN_NM if barostat else 0.0)
