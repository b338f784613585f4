"""A network of relative binding free energies: cycle closure and per-ligand values.

Edges are directed ``(A, B)`` with ddG(A -> B) = dG_bind(B) - dG_bind(A) and its standard error
(kcal/mol). Around any closed cycle the true ddG sum to zero, so a cycle's sum (its closure
error) measures the calculation's error; it is compared with its own standard deviation, the
edges' errors in quadrature (independent edges). The cycles reported are a fundamental cycle
basis (one per edge beyond a spanning tree: every other cycle is a sum of these).

The per-ligand values are the weighted least-squares solution of the network (the maximum
likelihood estimate for Gaussian errors, as cinnabar's MLE): g minimising
sum_e ((g_B - g_A - ddG_e) / sigma_e)^2, defined up to a constant, fixed so that the mean of
the ligands with an experiment equals the experiments' mean (or 0 without any). Their
covariance is the pseudo-inverse of the weighted Laplacian. Written by hand: a few lines of
numpy, where a dependency (networkx, cinnabar) would add more than it saves.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

#: a cycle closure beyond this many of its standard deviations is flagged
MAX_CLOSURE_SIGMA = 2.0


@dataclass(frozen=True)
class Edge:
    """ddG(a -> b) = dG_bind(b) - dG_bind(a) +- error (kcal/mol)."""

    a: str
    b: str
    ddG: float
    error: float

    @property
    def name(self) -> str:
        return f"{self.a}~{self.b}"


def _check(edges: Sequence[Edge]) -> None:
    seen = set()
    for e in edges:
        if e.a == e.b:
            raise ValueError(f"edge {e.name} joins a ligand to itself")
        key = frozenset((e.a, e.b))
        if key in seen:
            raise ValueError(f"edge {e.name} appears twice (either direction): give each pair once")
        seen.add(key)
        if not (np.isfinite(e.ddG) and np.isfinite(e.error) and e.error >= 0):
            raise ValueError(f"edge {e.name}: ddG {e.ddG} and error {e.error} must be finite, error >= 0")


def cycle_basis(edges: Sequence[Edge]) -> List[List[Tuple[int, int]]]:
    """Fundamental cycles of the undirected edge graph: each a list of ``(edge index, sign)``
    in walking order, sign +1 where the walk follows the edge's direction a -> b."""
    _check(edges)
    adjacency: Dict[str, List[Tuple[str, int]]] = {}
    for i, e in enumerate(edges):
        adjacency.setdefault(e.a, []).append((e.b, i))
        adjacency.setdefault(e.b, []).append((e.a, i))
    parent: Dict[str, Optional[Tuple[str, int]]] = {}
    depth: Dict[str, int] = {}
    tree = set()
    for root in adjacency:  # breadth-first spanning forest
        if root in parent:
            continue
        parent[root], depth[root] = None, 0
        queue = deque([root])
        while queue:
            node = queue.popleft()
            for other, i in adjacency[node]:
                if other not in parent:
                    parent[other], depth[other] = (node, i), depth[node] + 1
                    tree.add(i)
                    queue.append(other)

    def step(node: str) -> Tuple[str, Tuple[int, int]]:
        up, i = parent[node]  # the walk node -> up along tree edge i
        return up, (i, 1 if edges[i].a == node else -1)

    cycles = []
    for i, e in enumerate(edges):
        if i in tree:
            continue
        # the walk: a -> b along the edge, then b back up to the common ancestor and down to a
        from_b, from_a = [], []
        u, v = e.b, e.a
        while depth[u] > depth[v]:
            u, s = step(u)
            from_b.append(s)
        while depth[v] > depth[u]:
            v, s = step(v)
            from_a.append(s)
        while u != v:
            u, s = step(u)
            from_b.append(s)
            v, s = step(v)
            from_a.append(s)
        back_down = [(j, -sign) for j, sign in reversed(from_a)]
        cycles.append([(i, 1)] + from_b + back_down)
    return cycles


def cycle_closures(edges: Sequence[Edge]) -> List[dict]:
    """Every fundamental cycle: its ligands in order, the closure error (kcal/mol, the signed
    sum of its ddG), that sum's standard deviation, their ratio and a flag above
    :data:`MAX_CLOSURE_SIGMA`."""
    out = []
    for cycle in cycle_basis(edges):
        closure = sum(sign * edges[i].ddG for i, sign in cycle)
        sigma = float(np.sqrt(sum(edges[i].error ** 2 for i, _ in cycle)))
        ligands = [edges[i].a if sign > 0 else edges[i].b for i, sign in cycle]
        n_sigma = abs(closure) / sigma if sigma > 0 else (0.0 if closure == 0 else float("inf"))
        out.append({"system": "~".join(ligands + ligands[:1]), "edges": [edges[i].name for i, _ in cycle],
                    "cycle_closure": float(closure), "cycle_closure_err": sigma,
                    "closure_sigma": float(n_sigma), "within_2_sigma": bool(n_sigma <= MAX_CLOSURE_SIGMA)})
    return out


def ligand_values(edges: Sequence[Edge], experiment: Mapping[str, float] | None = None) -> Dict[str, Tuple[float, float]]:
    """Per-ligand dG (kcal/mol) and standard error from the network's weighted least squares;
    the constant from the experiments' mean (see the module docstring). A network in several
    pieces is refused: the pieces' offsets would be arbitrary."""
    _check(edges)
    ligands = sorted({e.a for e in edges} | {e.b for e in edges})
    if len(cycle_basis(edges)) != len(edges) - len(ligands) + 1:
        raise ValueError("the edges form more than one connected network: join them with an edge "
                         "or analyse each separately")
    index = {name: i for i, name in enumerate(ligands)}
    incidence = np.zeros((len(edges), len(ligands)))
    for row, e in enumerate(edges):
        incidence[row, index[e.a]], incidence[row, index[e.b]] = -1.0, 1.0
    sigma = np.array([max(e.error, 1e-6) for e in edges])  # a zero error would be an infinite weight
    weights = 1.0 / sigma ** 2
    laplacian = incidence.T @ (weights[:, None] * incidence)
    covariance = np.linalg.pinv(laplacian)  # the minimum-norm (sum-zero) solution's covariance
    values = covariance @ (incidence.T @ (weights * np.array([e.ddG for e in edges])))
    known = [index[name] for name in (experiment or {}) if name in index]
    if known:
        values += np.mean([experiment[ligands[i]] for i in known]) - values[known].mean()
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    return {name: (float(values[i]), float(errors[i])) for name, i in index.items()}


def edge_table(edges: Sequence[Edge], experiment: Mapping[str, float] | None = None) -> List[dict]:
    """One row per edge: ligand A, ligand B, ddG, error and the experimental ddG where both
    ligands have an experimental dG_bind (kcal/mol)."""
    experiment = experiment or {}
    rows = []
    for e in edges:
        expt = (experiment[e.b] - experiment[e.a]) if e.a in experiment and e.b in experiment else None
        rows.append({"system": e.name, "ligand_a": e.a, "ligand_b": e.b, "ddG": e.ddG, "ddG_err": e.error,
                     "experiment": expt})
    return rows


def error_statistics(pairs: Sequence[Tuple[float, float]]) -> Dict[str, float] | None:
    """MUE and RMSE of (calculated, experiment) pairs (kcal/mol); None without any."""
    if not pairs:
        return None
    d = np.array([c - x for c, x in pairs])
    return {"n": len(d), "mue": float(np.mean(np.abs(d))), "rmse": float(np.sqrt(np.mean(d ** 2)))}
