r"""Reference solutions of a study and their injection into the MsFEM fine space.

All grids of a study are *nested structured lattices* of the same box: the MsFEM sub-grid
has :math:`NM` cells per direction, the reference grid :math:`rNM` (``reference_factor``
r). Every node of the coarser lattice is a node of the finer one, so a finer solution is
*injected* into a coarser Lagrange space by taking its values at the shared nodes,

.. math:: (I u_{\text{ref}})(x_i) = u_{\text{ref}}(x_i) \qquad \text{for every dof } x_i,

which is how Hou & Wu (1997, §4.3) compare solutions at the coarse nodes. The link
between the two distributed spaces is the partition-independent lattice id of each node
(:meth:`msfem.StructuredHierarchy.lattice_ids`), translated to the PETSc numbering of the
source by an application ordering (``AO``) and moved by a ``VecScatter`` -- as
:class:`msfem.transfer.FineMap` does.

Two references:

* ``"fine"`` -- :math:`u_{h_r}` with :math:`h_r = h/r` (:func:`msfem.solve_fine`).
* ``"richardson"`` -- Hou & Wu's "exact" solution: for Lagrange degree p with nodal error
  :math:`O(h^{q})`, :math:`q = p + 1`, extrapolate the solves on :math:`h_r` and
  :math:`h_r/2` at the nodes of the :math:`h_r` lattice,

  .. math:: u_{\text{ref}} = \frac{2^q\, u_{h_r/2} - u_{h_r}}{2^q - 1}
     \quad (p = 1:\ (4 u_{h/2} - u_h)/3).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dolfinx
from mpi4py import MPI

from msfem.fine import solve_fine
from msfem.mesh import StructuredHierarchy
from msfem.problem import Problem
from msfem.transfer import LatticeNumbering


@dataclass
class Reference:
    """A reference solution on the lattice of ``lattice`` (``r*NM`` cells per direction)."""

    u: dolfinx.fem.Function
    values: LatticeNumbering
    seconds: float
    kind: str
    num_dofs: int

    def inject(self, V: dolfinx.fem.FunctionSpace) -> dolfinx.fem.Function:
        """Inject the reference into the dofs of a (coarser) MsFEM fine space ``V``."""
        return self.values.inject(self.u, V)


def reference_lattice(comm: MPI.Comm, NM: int, cell_type: str,
                      lower: Any = None, upper: Any = None) -> StructuredHierarchy:
    """Return a one-coarse-cell hierarchy whose fine mesh is the ``NM``-lattice of the box."""
    return StructuredHierarchy(comm, 1, NM, cell_type, lower, upper)


def compute_reference(comm: MPI.Comm, problem: Problem, NM: int, cell_type: str, *,
                      kind: str = "fine", factor: int = 2, lower: Any = None, upper: Any = None,
                      petsc_options: Mapping[str, Any] | None = None) -> Reference:
    r"""Compute the reference for an MsFEM sub-grid of ``NM`` cells per direction.

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
        petsc_options: PETSc options of the fine solves (default CG + GAMG).

    """
    t0 = time.perf_counter()
    with dolfinx.common.Timer("~msfem: study reference"):
        grid = reference_lattice(comm, NM * factor, cell_type, lower, upper)
        sol = solve_fine(grid.fine, problem, petsc_options=petsc_options)
        u, ndofs = sol.u, sol.num_dofs
        values = LatticeNumbering(u.function_space, grid)
        if kind == "richardson":
            finer = reference_lattice(comm, 2 * NM * factor, cell_type, lower, upper)
            half = solve_fine(finer.fine, problem, petsc_options=petsc_options)
            u_half = LatticeNumbering(half.u.function_space, finer).inject(half.u,
                                                                           u.function_space)
            q = problem.degree + 1
            u.x.array[:] = (2**q * u_half.x.array - u.x.array) / (2**q - 1)
            ndofs += half.num_dofs
            del half, finer, u_half
        elif kind != "fine":
            raise ValueError(f"reference kind {kind!r} is not 'fine' or 'richardson'")
    seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return Reference(u, values, seconds, kind, ndofs)
