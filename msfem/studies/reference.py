r"""Reference solutions of a study: lean fine solves kept as values on the sub-grid lattice.

All grids of a study are *nested structured lattices* of the same box: the MsFEM sub-grid
has :math:`NM` cells per direction, the reference grid :math:`rNM` (``reference_factor``
r). Every node of the coarser lattice is a node of the finer one, so a finer solution is
*injected* into a coarser Lagrange space by taking its values at the shared nodes,

.. math:: (I u_{\text{ref}})(x_i) = u_{\text{ref}}(x_i) \qquad \text{for every dof } x_i,

which is how Hou & Wu (1997, §4.3) compare solutions at the coarse nodes. Two references:

* ``"fine"`` -- :math:`u_{h_r}` with :math:`h_r = h/r` (:func:`msfem.solve_fine`).
* ``"richardson"`` -- Hou & Wu's "exact" solution: for Lagrange degree p with nodal error
  :math:`O(h^{q})`, :math:`q = p + 1`, extrapolate the solves on :math:`h_r` and
  :math:`h_r/2` at the nodes of the sub-grid's dof lattice,

  .. math:: u_{\text{ref}} = \frac{2^q\, u_{h_r/2} - u_{h_r}}{2^q - 1}
     \quad (p = 1:\ (4 u_{h/2} - u_h)/3).

**Lean.** Only :math:`I u_{\text{ref}}` is kept: the values at the
:math:`(pNM + 1)^d` points of the sub-grid's dof lattice (spacing h/p), one array
identical on every rank (:class:`Reference`). Each fine solve gives its values there (one
``Allreduce``) and is freed -- mesh, matrix, multigrid hierarchy -- before the next one
starts, the largest (:math:`h_r/2`) first, with a lean multigrid setup
(:data:`REFERENCE_OPTIONS`); nothing of the study's cases is alive meanwhile
(:func:`msfem.studies.run.run_study` computes a reference before it builds a case). The
peak is that of one fine solve: measured on one rank for Hou--Wu's problem on 4096²
(16.8 M dofs), 10.5 GB -- mesh with its facets 3.8 GB, matrix 2.1 GB, CG + GAMG the rest
(before: 13.1 GB with the default GAMG setup, and more than 20 GB on two ranks when both
Richardson solves, the case's own meshes and the reference's lattice maps were alive at
once).

**Reuse.** :func:`reference_key` names everything that changes the numbers (problem,
coefficient, solver options, grid, kind); a study keeps every reference it computed by
that key, and with ``[study] reference_cache = "DIR"`` stores it as ``DIR/<key>.npz`` so
that other studies on the same grids (Hou--Wu Tables I and III, II and IV) load it
instead of solving again (:func:`load_reference`, :func:`save_reference`).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dolfinx
import numpy as np
from mpi4py import MPI

from msfem import solvers
from msfem.fine import solve_fine
from msfem.mesh import CELL_TYPES, StructuredHierarchy
from msfem.problem import Problem

#: Version of the cached reference files (bump when their content changes).
CACHE_VERSION = 1

#: PETSc options of the reference solves when the study gives no ``[solver]``: CG + GAMG
#: (:data:`msfem.solvers.FINE_OPTIONS`) with a lean setup for the symmetric problems of
#: the studies -- the aggregation graph is A's own (no symmetrised copy), filtered in place,
#: and aggressive coarsening by MIS-2 instead of the squared graph :math:`A^T A`. Measured
#: on Hou--Wu's problem with 4.2 M dofs: the same 24 iterations and solution, setup and
#: solve 0.73 GB instead of 1.44 GB above the assembled system.
REFERENCE_OPTIONS: dict[str, Any] = {
    **solvers.FINE_OPTIONS,
    "pc_gamg_graph_symmetrize": False,
    "pc_gamg_low_memory_threshold_filter": True,
    "pc_gamg_aggressive_square_graph": False,
}


@dataclass
class Reference:
    r"""The reference on the dof lattice of an MsFEM sub-grid (every rank holds all of it).

    Every rank holding the whole lattice (134 MB for a 4096² sub-grid) makes injection
    and nodal look-ups communication-free; it bounds the sub-grids a study can use.

    ``values[k]`` (shape ``(n_points, bs)``) is :math:`u_{\text{ref}}` at the lattice point
    with multi-index :math:`(i_1, \dots, i_d)`, :math:`k = i_1 + n i_2 + n^2 i_3`,
    :math:`n = pNM + 1`, at :math:`x = \text{lower} + i\,h/p` (h = side/NM).
    """

    values: np.ndarray
    NM: int
    degree: int
    lower: np.ndarray
    upper: np.ndarray
    seconds: float
    kind: str
    num_dofs: int

    @property
    def spacing(self) -> np.ndarray:
        """Spacing h/p of the dof lattice in each direction."""
        return (self.upper - self.lower) / (self.NM * self.degree)

    def at(self, x: np.ndarray) -> np.ndarray:
        """Values (n, bs) at points ``x`` (n, d) of the dof lattice (e.g. coarse vertices)."""
        return self.values[lattice_index(x, self.lower, self.spacing, self.NM * self.degree)]

    def inject(self, V: dolfinx.fem.FunctionSpace) -> dolfinx.fem.Function:
        """The reference on the dofs of a Lagrange space ``V`` on the MsFEM sub-grid."""
        dim = len(self.lower)
        x = V.tabulate_dof_coordinates()[:, :dim]
        u = dolfinx.fem.Function(V, name="u_ref")
        u.x.array[:] = self.at(x).ravel()
        return u


def lattice_index(x: np.ndarray, lower: np.ndarray, spacing: np.ndarray, cells: int
                  ) -> np.ndarray:
    """Index of points ``x`` (n, d) in a lattice of ``cells + 1`` points per direction.

    Raises:
        ValueError: if a point is not a lattice point.
    """
    x = np.asarray(x, dtype=float).reshape(len(x), len(lower))
    t = (x - lower) / spacing
    idx = np.rint(t).astype(np.int64)
    if len(t) and (np.abs(t - idx).max() > 1e-6 or idx.min() < 0 or idx.max() > cells):
        raise ValueError("points are not on the reference lattice")
    return np.ravel_multi_index(tuple(idx.T), (cells + 1,) * len(lower), order="F")


def reference_lattice(comm: MPI.Comm, NM: int, cell_type: str,
                      lower: Any = None, upper: Any = None) -> StructuredHierarchy:
    """Return a one-coarse-cell hierarchy whose fine mesh is the ``NM``-lattice of the box."""
    return StructuredHierarchy(comm, 1, NM, cell_type, lower, upper)


def box_corners(cell_type: str, lower: Any = None, upper: Any = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners of the box domain (defaults: the unit box), checked."""
    dim = CELL_TYPES[cell_type][0]
    lo = np.zeros(dim) if lower is None else np.asarray(lower, dtype=float).ravel()[:dim]
    hi = np.ones(dim) if upper is None else np.asarray(upper, dtype=float).ravel()[:dim]
    if lo.shape != (dim,) or hi.shape != (dim,) or not np.all(hi > lo):
        raise ValueError(f"lower = {lower!r}, upper = {upper!r} do not describe a {dim}D box")
    return lo, hi


def reference_key(config: Mapping[str, Any], coefficient: Mapping[str, Any], NM: int,
                  kind: str, factor: int) -> str:
    """A name of the reference: hash of problem, coefficient, mesh, solver, grid and kind."""
    data = {"version": CACHE_VERSION, "mesh": config.get("mesh", {}),
            "problem": config.get("problem", {}),
            "solver": config.get("solver") or REFERENCE_OPTIONS,
            "coefficient": dict(coefficient), "NM": NM, "kind": kind, "factor": factor}
    text = json.dumps(data, sort_keys=True, default=str)
    return f"NM{NM}-{kind}{factor}-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _release_memory() -> None:
    """Collect cycles and hand freed heap pages back to the system (glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, just not returned
        pass


def _solve_on_lattice(comm: MPI.Comm, problem: Problem, cells: int, cell_type: str,
                      lower: np.ndarray, upper: np.ndarray, target_cells: int,
                      petsc_options: Mapping[str, Any] | None) -> np.ndarray:
    """Fine solve on ``cells`` per direction; its values on the ``target_cells`` dof lattice.

    Collective; the mesh and solver are freed before returning. Returns the values
    (n_points, bs), the same on every rank.
    """
    grid = reference_lattice(comm, cells, cell_type, lower, upper)
    sol = solve_fine(grid.fine, problem, petsc_options=petsc_options)
    V = sol.u.function_space
    bs, dim = V.dofmap.index_map_bs, len(lower)
    n_owned = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:n_owned, :dim]
    spacing = (upper - lower) / target_cells
    t = (x - lower) / spacing
    on = np.all(np.abs(t - np.rint(t)) < 1e-6, axis=1)
    idx = lattice_index(x[on], lower, spacing, target_cells)
    values = np.zeros(((target_cells + 1) ** dim, bs))
    values[idx] = sol.u.x.array[: n_owned * bs].reshape(n_owned, bs)[on]
    del x, t, on, idx, sol, V, grid
    _release_memory()
    comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)  # owned dofs are disjoint
    return values


def compute_reference(comm: MPI.Comm, problem: Problem, NM: int, cell_type: str, *,
                      kind: str = "fine", factor: int = 2, lower: Any = None, upper: Any = None,
                      petsc_options: Mapping[str, Any] | None = None) -> Reference:
    r"""Compute the reference for an MsFEM sub-grid of ``NM`` cells per direction.

    Collective. The finest solve runs first and every solve is freed before the next
    (module docstring: *Lean*).

    Args:
        comm: communicator of the fine solves.
        problem: the problem.
        NM: fine cells per direction of the MsFEM sub-grid.
        cell_type: cell type of the structured meshes.
        kind: ``"fine"`` (:math:`u_{h/r}`) or ``"richardson"``
            (:math:`(2^q u_{h/2r} - u_{h/r})/(2^q-1)`, q = degree + 1).
        factor: r, the reference grid is r times finer than the sub-grid.
        lower: lower corner of the box domain (default: the origin).
        upper: upper corner of the box domain (default: all ones).
        petsc_options: PETSc options of the fine solves (default
            :data:`REFERENCE_OPTIONS`, CG + GAMG with a lean setup).

    """
    petsc_options = petsc_options or REFERENCE_OPTIONS
    if kind not in ("fine", "richardson"):
        raise ValueError(f"reference kind {kind!r} is not 'fine' or 'richardson'")
    lo, hi = box_corners(cell_type, lower, upper)
    p = problem.degree
    t0 = time.perf_counter()
    target = NM * p
    with dolfinx.common.Timer("~msfem: study reference"):
        ndofs = (NM * factor * p + 1) ** len(lo) * problem.block_size
        if kind == "richardson":
            fine_half = _solve_on_lattice(comm, problem, 2 * NM * factor, cell_type, lo, hi,
                                             target, petsc_options)
            ndofs += (2 * NM * factor * p + 1) ** len(lo) * problem.block_size
        values = _solve_on_lattice(comm, problem, NM * factor, cell_type, lo, hi, target,
                                      petsc_options)
        if kind == "richardson":
            q = p + 1
            values = (2**q * fine_half - values) / (2**q - 1)
            del fine_half
    seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return Reference(values, NM, p, lo, hi, seconds, kind, ndofs)


def save_reference(ref: Reference, path: str | Path, comm: MPI.Comm) -> None:
    """Store ``ref`` as ``path`` (.npz; rank 0 writes through a temporary file, atomic)."""
    error = None
    if comm.rank == 0:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, values=ref.values, NM=ref.NM, degree=ref.degree, lower=ref.lower,
                     upper=ref.upper, seconds=ref.seconds, kind=ref.kind,
                     num_dofs=ref.num_dofs, version=CACHE_VERSION)
            tmp.replace(path)
        except OSError as err:
            error = f"cannot write the reference cache {path}: {err}"
        finally:
            if tmp.exists():
                tmp.unlink()
    error = comm.bcast(error, root=0)
    if error:
        raise OSError(error)


def load_reference(path: str | Path, comm: MPI.Comm, NM: int, degree: int,
                   bounds: Sequence[np.ndarray]) -> Reference | None:
    """The reference stored at ``path``, or None if it is missing or does not fit (collective)."""
    ref = None
    if comm.rank == 0 and Path(path).exists():
        try:
            with np.load(path) as f:
                ref = Reference(f["values"], int(f["NM"]), int(f["degree"]), f["lower"],
                                f["upper"], float(f["seconds"]), str(f["kind"]),
                                int(f["num_dofs"]))
                version = int(f["version"])
        except (OSError, ValueError, KeyError):
            ref = None
        else:
            fits = version == CACHE_VERSION and ref.NM == NM and ref.degree == degree and \
                np.allclose(ref.lower, bounds[0]) and np.allclose(ref.upper, bounds[1])
            ref = ref if fits else None
    return comm.bcast(ref, root=0)
