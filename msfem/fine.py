r"""The fine-scale reference solution: :math:`a(u_h, v) = L(v)` on the whole fine mesh.

Every multiscale error in msfem is measured against this solve, so it is the most
conservative piece: default CG + GAMG with the right near-null space (constants for
scalar problems, rigid body modes for vector ones) to a relative residual of 1e-12, or
MUMPS by options; the KSP converged reason is always checked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import dolfinx
import dolfinx.fem.petsc
import dolfinx.la.petsc
import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from msfem import (
    _runtime,  # noqa: F401
    solvers,
)
from msfem.coefficients import Field, check_positive, check_resolution, smallest_eigenvalue
from msfem.problem import Problem


def rigid_body_modes(V: dolfinx.fem.FunctionSpace) -> PETSc.NullSpace:
    """Orthonormalised rigid body modes (2D: 3, 3D: 6) of a vector space ``V``."""
    x = V.tabulate_dof_coordinates()
    imap = V.dofmap.index_map
    n, bs = imap.size_local, V.dofmap.index_map_bs
    gdim = V.mesh.geometry.dim
    x = x[:n, :gdim]
    modes = []
    for k in range(bs):  # translations
        m = np.zeros((n, bs))
        m[:, k] = 1.0
        modes.append(m)
    rotations = [(0, 1)] if bs == 2 else [(0, 1), (1, 2), (2, 0)]
    for i, j in rotations:
        m = np.zeros((n, bs))
        m[:, i], m[:, j] = -x[:, j], x[:, i]
        modes.append(m)
    vecs = []
    for m in modes:
        vec = dolfinx.la.vector(imap, bs)
        vec.array[: n * bs] = m.ravel()
        vecs.append(vec)
    dolfinx.la.orthonormalize(vecs)
    petsc_vecs = [dolfinx.la.petsc.create_vector_wrap(v) for v in vecs]
    nsp = PETSc.NullSpace().create(vectors=petsc_vecs, comm=V.mesh.comm)
    nsp.setAttr("_msfem_keepalive", vecs)  # the PETSc vectors wrap this memory
    return nsp


def check_coefficients(problem: Problem, mesh: dolfinx.mesh.Mesh,
                       resolution: bool = True) -> None:
    r"""Collectively refuse non-positive coefficients and warn about unresolved scales.

    Every coefficient the problem declares positive
    (:attr:`~msfem.problem.Problem.positive_coefficients`; by default all of them) must be
    uniformly positive definite, :math:`a(x) \ge \alpha > 0` (for a tensor: the smallest
    eigenvalue of its symmetric part, :func:`~msfem.coefficients.smallest_eigenvalue`),
    sampled at the owned cell midpoints; the others (e.g. a reaction coefficient
    :math:`c \ge 0`) are not checked. The warning is issued when a field's scale ε is not
    resolved by the mesh (``resolution=False``: not checked).
    """
    tdim = mesh.topology.dim
    n = mesh.topology.index_map(tdim).size_local
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim, np.arange(n, dtype=np.int32)).T
    positive = problem.positive_coefficients
    error = None
    for name, fld in problem.coefficients.items():
        if name not in positive:
            continue
        found = None
        if not isinstance(fld, Field):
            if not smallest_eigenvalue(np.asarray(fld, dtype=float)[None])[1] > 0:
                found = f"coefficient {name!r} = {fld} is not positive."
        else:
            try:
                check_positive(fld, mid, name=f"coefficient {name!r}")
            except ValueError as err:
                found = str(err)
        if found and problem.positive is None:
            found += (f" If {name!r} may vanish (e.g. a reaction coefficient c >= 0), leave it "
                      f"out of the coefficients the problem declares positive: "
                      f"Problem(positive=...).")
        error = found or error
    errors = [e for e in mesh.comm.allgather(error) if e]
    if errors:
        raise ValueError(errors[0])
    if not resolution:
        return
    h = mesh.comm.allreduce(float(mesh.h(tdim, np.arange(min(n, 1), dtype=np.int32)).max())
                            if n else 0.0, op=MPI.MAX)
    h_axis = h / np.sqrt(tdim)  # structured cells: diameter = sqrt(d) * h
    for fld in problem.coefficients.values():
        if isinstance(fld, Field):
            check_resolution(fld, h_axis, stacklevel=4)


def null_space(A: PETSc.Mat, V: dolfinx.fem.FunctionSpace,
               bcs: list[dolfinx.fem.DirichletBC]) -> PETSc.NullSpace | None:
    r"""The null space of a fine operator without Dirichlet data, or None.

    Collective. Only when no dof is constrained (pure Neumann / traction): the candidates
    are the constants (scalar unknown) or the rigid body modes (vector unknown), and
    those with :math:`\|Az\|_\infty \le 10^{-9}\|A\|_\infty\|z\|_\infty` are kept -- so a
    reaction term or a non-standard form that removes them leaves no null space. Nothing
    branches on the problem's name.
    """
    constrained = sum(int(bc.dof_indices()[1]) for bc in bcs)  # owned constrained dofs
    if V.mesh.comm.allreduce(constrained) > 0:
        return None
    if V.dofmap.index_map_bs > 1:
        candidates = rigid_body_modes(V).getVecs()
    else:
        z = A.createVecRight()
        z.set(1.0)
        z.normalize()
        candidates = [z]
    inf: Any = PETSc.NormType.INFINITY
    scale = cast(float, A.norm(inf))
    y = A.createVecLeft()
    kernel = []
    for z in candidates:
        A.mult(z, y)
        if cast(float, y.norm(inf)) <= 1e-9 * scale * cast(float, z.norm(inf)):
            kernel.append(z)
    y.destroy()
    if not kernel:
        return None
    if len(kernel) < len(candidates):  # a subset: orthonormal again
        kernel = [z.copy() for z in kernel]
        for i, z in enumerate(kernel):
            for w in kernel[:i]:
                z.axpy(-z.dot(w), w)
            z.normalize()
    return PETSc.NullSpace().create(vectors=kernel, comm=V.mesh.comm)


def check_compatible(null: PETSc.NullSpace, b: PETSc.Vec, what: str) -> None:
    r"""Refuse a load with a component along the null space: :math:`a(u, v) = L(v)` has no solution.

    A singular system :math:`Au = b` is solvable iff :math:`b \perp \ker A^	op` (here
    :math:`A` is symmetric): for pure Neumann diffusion :math:`\int_\Omega f + \int_{\Gamma_N}
    g = 0`. The test is :math:`|z\cdot b| \le 10^{-8}\|b\|_2` for each orthonormal null
    vector :math:`z`.

    Raises:
        ValueError: naming the relative size of the incompatible part.
    """
    norm = cast(float, b.norm())
    if norm == 0:
        return
    worst = max(abs(z.dot(b)) for z in null.getVecs()) / norm
    if worst > 1e-8:
        kind = "constants" if len(null.getVecs()) == 1 else "rigid body modes"
        raise ValueError(
            f"{what}: the problem has no Dirichlet data, so its operator is singular (null "
            f"space: {kind}), and the load is incompatible with it -- {worst:.3g} of the "
            f"load vector lies along the null space, so a(u, v) = L(v) has no solution. "
            f"Balance the load (for diffusion: integral of f plus the Neumann flux = 0) or "
            f"add Dirichlet data.")


def hole_dofs(problem: Problem, V: dolfinx.fem.FunctionSpace) -> np.ndarray:
    r"""Local dof blocks of ``V`` (owned and ghost) pinned by the problem's holes (collective).

    A fine cell is removed when its midpoint lies in a hole
    (:attr:`~msfem.problem.Problem.holes` > 0.5); every dof of a removed cell is pinned to
    u = 0. Each rank marks the dofs of its owned removed cells, a reverse scatter (add)
    tells the owners and a forward scatter the ghosts, so every rank agrees on a shared
    dof whatever the partition. The same set as :func:`msfem.problem.hole_nodes` on a
    structured lattice.
    """
    mesh = V.mesh
    tdim = mesh.topology.dim
    n_cells = mesh.topology.index_map(tdim).size_local
    imap = V.dofmap.index_map
    marks = dolfinx.la.vector(imap, 1)
    marks.array[:] = 0.0
    if problem.holes is not None and n_cells:
        cells = np.arange(n_cells, dtype=np.int32)
        mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells).T
        removed = cells[np.asarray(problem.holes.evaluate(mid)) > 0.5]
        marks.array[np.unique(V.dofmap.list[removed].ravel())] = 1.0
    marks.scatter_reverse(dolfinx.la.InsertMode.add)
    marks.scatter_forward()
    return np.flatnonzero(marks.array > 0).astype(np.int32)


@dataclass
class FineSolution:
    """The fine reference ``u`` with the solve statistics."""

    u: dolfinx.fem.Function
    iterations: int
    t_assemble: float
    t_solve: float
    num_dofs: int


def solve_fine(mesh: dolfinx.mesh.Mesh, problem: Problem, *,
               petsc_options: Mapping[str, Any] | None = None,
               prefix: str = "msfem_fine_") -> FineSolution:
    r"""Solve the problem on the distributed fine mesh.

    Find :math:`u_h` with :math:`a(u_h, v) = L(v)\ \forall v \in V_{h,0}`, :math:`u_h = g` on
    :math:`\Gamma_D` (and :math:`u_h = 0` on the dofs of the fine cells removed by
    ``problem.holes``, :func:`hole_dofs`). Without Dirichlet data (pure Neumann) the
    operator's null space (:func:`null_space`) is attached to the solver, an incompatible
    load is refused (:func:`check_compatible`), and :math:`u_h` is the solution of integral
    mean zero (scalar unknowns) or orthogonal to the rigid body modes (vector unknowns).

    Args:
        mesh: the fine mesh (e.g. ``hierarchy.fine``).
        problem: the problem (forms, data, boundary conditions).
        petsc_options: PETSc options for the prefix ``prefix`` (default
            :data:`msfem.solvers.FINE_OPTIONS`, CG + GAMG).
        prefix: PETSc options prefix.
    """
    check_coefficients(problem, mesh)
    V = problem.function_space(mesh)
    disc = problem.discretise(V)
    bcs = disc.dirichlet_bcs()
    if problem.holes is not None:  # perforated domain: u = 0 on the removed cells
        zero = dolfinx.fem.Constant(mesh, np.zeros(problem.shape))
        bcs.append(dolfinx.fem.dirichletbc(zero, hole_dofs(problem, V), V))
    t0 = time.perf_counter()
    with dolfinx.common.Timer("~msfem: fine assemble"):
        A = dolfinx.fem.petsc.assemble_matrix(disc.a, bcs=bcs)
        A.assemble()
        b = dolfinx.fem.petsc.assemble_vector(disc.L)
        dolfinx.fem.petsc.apply_lifting(b, [disc.a], bcs=[bcs])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)  # type: ignore[arg-type]
        dolfinx.fem.petsc.set_bc(b, bcs)
    t1 = time.perf_counter()
    kind = problem.near_nullspace or ("rigid" if problem.shape else "constant")
    if kind == "rigid":
        A.setNearNullSpace(rigid_body_modes(V))
    if problem.shape:
        A.setBlockSize(V.dofmap.index_map_bs)
    what = f"fine solve ({V.dofmap.index_map.size_global * V.dofmap.index_map_bs} dofs)"
    null = null_space(A, V, bcs)
    if null is not None:  # pure Neumann: solve in the complement of the null space
        check_compatible(null, b, what)
        A.setNullSpace(null)
        null.remove(b)  # round-off only: the load is compatible
    ksp = solvers.make_ksp(A, prefix, petsc_options, solvers.FINE_OPTIONS)
    u = dolfinx.fem.Function(V, name="u_fine")
    with dolfinx.common.Timer("~msfem: fine solve"):
        its = solvers.solve(ksp, b, u.x.petsc_vec, what)
    u.x.scatter_forward()
    if null is not None:  # the solution orthogonal to the null space
        if problem.shape:
            null.remove(u.x.petsc_vec)
            u.x.scatter_forward()
        else:  # of integral mean zero
            dx = ufl.dx(domain=mesh)
            mean = mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(u * dx))) \
                / mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * dx)))
            u.x.array[:] -= mean
    t2 = time.perf_counter()
    ndofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    ksp.destroy()
    A.destroy()
    b.destroy()
    return FineSolution(u, its, t1 - t0, t2 - t1, ndofs)
