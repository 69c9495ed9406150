r"""The coarse MPI-distributed system, its solution and the fine-scale reconstruction.

Element by element from the methods' element data (:class:`msfem.methods.ElementData`):
every element adds its block ``A[rows, cols]`` and ``b[rows]``, in PETSc's global
numbering of the method's coarse space,

.. math::
    A_H[i, j] = \sum_K a_K(\phi_j, w_i), \qquad b_H[i] = \sum_K L_K(w_i).

The sparsity is taken from the element data (PETSc's COO assembly), so blocks may be
rectangular and may couple coarse dofs several cells apart.

with :math:`w_i = \phi_i` (Galerkin) or :math:`w_i = N_i` (Petrov--Galerkin). For the
conforming variants this equals :math:`P^T A_h P` with the prolongation
:math:`P_{f, i} = \phi_i(x_f)` (see :func:`prolongation`, checked in the tests); for the
nonconforming (oversampled) ones it is the broken bilinear form. Dirichlet data enters
at the coarse boundary vertices, :math:`U_i = g(x_i)`. The fine-scale reconstruction
(downscaling) is :math:`u_{ms}|_K = \sum_i U_i \phi_i^K`; where neighbouring elements
disagree (nonconforming variants) a fine dof gets the average.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import scipy.linalg
from mpi4py import MPI
from petsc4py import PETSc

from msfem import (
    _runtime,  # noqa: F401
    solvers,
)
from msfem.space import MultiscaleSpace
from msfem.transfer import CoarseGather, FineMap, LatticeNumbering, expand_blocks


@dataclass
class CoarseSolution:
    """Coarse solution ``U`` (a dolfinx Function on the coarse space) and timings."""

    space: MultiscaleSpace
    U: Any
    timings: dict[str, float] = field(default_factory=dict)
    _gather: CoarseGather | None = None

    @property
    def vector(self) -> PETSc.Vec:
        """A copy of the coarse solution as a PETSc vector (collective).

        A copy, so that it outlives this object: a ``petsc_vec`` view of a dolfinx vector
        must not be used after the vector is freed (``solve_coarse(space).vector.norm()``
        would read freed memory and crash at garbage collection).
        """
        return _petsc_vec(self.U).copy()

    def element_values(self) -> list[np.ndarray]:
        """The coarse solution at the trial dofs of every owned element (collective)."""
        if self._gather is None:
            self._gather = CoarseGather(_petsc_vec(self.U),
                                        [e.cols for e in self.space.elements])
        return self._gather(_petsc_vec(self.U))

    def reconstruct(self, V: dolfinx.fem.FunctionSpace | None = None) -> dolfinx.fem.Function:
        r"""The fine-scale reconstruction :math:`u_{ms} = \sum_i U_i\phi_i` on the fine space.

        Methods without a fine basis (FE-HMM): the macro function :math:`u_H` interpolated
        onto the fine space (its coarse space must be a Lagrange space).
        """
        t0 = time.perf_counter()
        if not self.space.has_fine_basis():
            u = self._interpolate_macro(V)
            self.timings["reconstruct"] = time.perf_counter() - t0
            return u
        fmap = self.fine_map(V)
        values = [e.trial @ U for e, U in zip(self.space.elements, self.element_values())]
        if self.space.method.reconstruction == "sum":  # overlapping pieces add up (LOD)
            u = fmap.add(values, name="u_msfem")
        else:
            u = fmap.average(values, name="u_msfem")
        self.timings["reconstruct"] = time.perf_counter() - t0
        return u

    def errors(self, u_ref: dolfinx.fem.Function) -> dict[str, float]:
        """Errors against a fine reference on the hierarchy's fine mesh.

        Relative and absolute broken L2, H1-seminorm and energy errors of the
        reconstruction (global ones for methods whose element pieces add up, e.g. LOD),
        and nodal max / l2 errors at the coarse vertices (of the reconstruction for those
        methods, whose coarse unknowns are not nodal values).
        """
        from msfem import norms

        h = self.space.hierarchy
        if not self.space.has_fine_basis():  # the macro function u_H: global norms
            return self._macro_errors(u_ref)
        fmap = self.fine_map(u_ref.function_space)
        u, local_ref = None, None  # the reference on the elements' fine dofs (broken norms)
        if self.space.method.reconstruction == "sum":  # a conforming u_ms: global norms
            u = self.reconstruct(u_ref.function_space)
            disc = self.space.problem.discretise(u_ref.function_space)
            out = {k: float(v) for k, v in norms.errors(u, u_ref, disc).items()}
        else:
            local_ref = fmap.gather(u_ref)
            out = norms.broken_errors(self.space.elements, self.element_values(), local_ref,
                                      h.comm, energy=self.space.energy_matrix)
        nodal = self.space.coarse.vertex_values(_petsc_vec(self.U).getArray(readonly=True))
        if nodal is None:  # a coarse space without vertex values
            out.update(nodal_linf=float("nan"), nodal_l2=float("nan"))
            return out
        xc, vals = nodal
        if self.space.unstructured:
            at_vertices = self.space.coarse.vertex_values(self._vertex_reference(
                local_ref if local_ref is not None else fmap.gather(u_ref)))
            assert at_vertices is not None
            ref = at_vertices[1]
        else:
            numbering = fmap.numbering or LatticeNumbering(u_ref.function_space, h)
            ref = numbering.values_at(u_ref, xc)  # the fine map's numbering: no new AO
            if u is not None:  # the coarse unknowns are not nodal values (LOD): u_ms(x_i)
                vals = numbering.values_at(u, xc)
        out.update(norms.nodal_errors(vals, ref, [float(H) for H in h.H], h.comm))
        return out

    def _vertex_reference(self, local_ref: list[np.ndarray]) -> np.ndarray:
        """Owned part of a coarse vector holding the reference at the vertex dofs.

        Taken from the elements' fine dofs at their vertices (unstructured hierarchies);
        the vertex dofs are the first ``n_vertices * bs`` trial dofs of an element.
        """
        bs = self.space.bs
        holder = self.space.coarse.create_vector("reference")  # owns the PETSc vector
        vec = _petsc_vec(holder)
        vec.set(0.0)
        for e, ref in zip(self.space.elements, local_ref):
            if e.vertex_blocks is None:
                raise ValueError(
                    f"nodal errors on an unstructured hierarchy need the positions of the "
                    f"coarse vertices among the fine dofs, but method {self.space.name!r} has "
                    f"no fine basis on coarse cell {e.cell} (vertex_blocks is None)")
            rows = expand_blocks(e.vertex_blocks, bs)
            vec.setValues(e.cols[: len(rows)].astype(PETSc.IntType),  # type: ignore[arg-type]
                          ref[rows],
                          addv=PETSc.InsertMode.INSERT_VALUES)  # type: ignore[arg-type]
        vec.assemble()
        return vec.getArray(readonly=True).copy()

    def _macro_errors(self, u_ref: dolfinx.fem.Function) -> dict[str, float]:
        """Global errors of the macro function u_H on the fine mesh, nodal errors of U."""
        from msfem import norms

        h = self.space.hierarchy
        macro = self.reconstruct(u_ref.function_space)
        disc = self.space.problem.discretise(u_ref.function_space)
        out = {k: float(v) for k, v in norms.errors(macro, u_ref, disc).items()}
        nodal = self.space.coarse.vertex_values(_petsc_vec(self.U).getArray(readonly=True))
        if nodal is None or self.space.unstructured:
            return {**out, "nodal_linf": float("nan"), "nodal_l2": float("nan")}
        ref = LatticeNumbering(u_ref.function_space, h).values_at(u_ref, nodal[0])
        out.update(norms.nodal_errors(nodal[1], ref, [float(H) for H in h.H], h.comm))
        return out

    def _interpolate_macro(self, V: dolfinx.fem.FunctionSpace | None) -> dolfinx.fem.Function:
        """:math:`u_H` (the coarse Lagrange function) interpolated onto the fine space ``V``."""
        Vc = self.space.coarse_space
        if Vc is None:
            raise ValueError(f"method {self.space.name!r} has neither a fine basis nor a "
                             f"Lagrange coarse space: nothing to reconstruct")
        if V is None:
            V = self.space.problem.function_space(self.space.hierarchy.fine)
        return interpolate_coarse(self.U, V, "u_msfem")

    def fine_map(self, V: dolfinx.fem.FunctionSpace | None = None) -> FineMap:
        """The map between element-local fine dofs and the distributed fine space.

        Built once per space and cached on the :class:`MultiscaleSpace`.
        """
        return self.space.fine_map(V)


def _petsc_vec(U) -> PETSc.Vec:
    """The PETSc vector of a coarse dolfinx Function or ``dolfinx.la.Vector``."""
    return U.x.petsc_vec if hasattr(U, "x") else U.petsc_vec


def assemble_coarse(space: MultiscaleSpace) -> tuple[PETSc.Mat, PETSc.Vec]:
    """Assemble :math:`A_H` and :math:`b_H` from the element data (Dirichlet rows not applied).

    PETSc's COO assembly: the sparsity is the union of the element blocks' (row, column)
    pairs, entries for rows owned elsewhere are sent to their owner and summed.
    """
    cs = space.coarse
    comm = space.hierarchy.comm
    n = cs.size_local
    A = PETSc.Mat().create(comm=comm)  # type: ignore[arg-type]
    A.setSizes(((n, PETSc.DETERMINE), (n, PETSc.DETERMINE)))
    A.setType(PETSc.Mat.Type.AIJ)
    els = space.elements
    if els:
        rows = np.concatenate([np.repeat(e.rows, len(e.cols)) for e in els])
        cols = np.concatenate([np.tile(e.cols, len(e.rows)) for e in els])
        vals = np.concatenate([np.asarray(e.A, dtype=float).ravel() for e in els])
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
        vals = np.zeros(0)
    A.setPreallocationCOO(rows.astype(PETSc.IntType), cols.astype(PETSc.IntType))  # type: ignore[arg-type]
    A.setValuesCOO(vals, addv=PETSc.InsertMode.ADD_VALUES)  # type: ignore[arg-type]
    A.assemble()
    b = A.createVecLeft()
    b.set(0.0)
    for e in els:
        b.setValues(e.rows.astype(PETSc.IntType), e.b,  # type: ignore[arg-type]
                    addv=PETSc.InsertMode.ADD_VALUES)  # type: ignore[arg-type]
    b.assemble()
    return A, b


def assemble_coarse_ptap(space: MultiscaleSpace) -> tuple[PETSc.Mat, PETSc.Vec]:
    r"""Galerkin projection of the fine system: :math:`A_H = P^T A_h P`, :math:`b_H = P^T b_h`.

    ``MatPtAP`` with the distributed prolongation of :func:`prolongation` and the fine
    operator assembled once on the fine mesh; only for conforming Galerkin methods, where
    it equals the element-by-element assembly.
    """
    if not space.conforming or not space.method.galerkin:
        raise ValueError(
            f"PtAP assembly needs a conforming Galerkin method (standard, linear, "
            f"oscillatory without oversampling), not {space.name!r} with "
            f"{space.layers} oversampling layers; use assembly='element'")
    V = space.fine_map().V
    disc = space.problem.discretise(V)
    A_h = dolfinx.fem.petsc.assemble_matrix(disc.a)
    A_h.assemble()
    b_h = dolfinx.fem.petsc.assemble_vector(disc.L)
    b_h.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)  # type: ignore[arg-type]
    P = prolongation(space, V)
    A = A_h.PtAP(P)
    b = P.createVecRight()
    P.multTranspose(b_h, b)
    for obj in (A_h, b_h, P):
        obj.destroy()
    return A, b


def solve(space: MultiscaleSpace, *, petsc_options: Mapping[str, Any] | None = None,
          prefix: str = "msfem_coarse_", assembly: str | None = None) -> CoarseSolution:
    r"""Assemble and solve the coarse system :math:`A_H U = b_H`, :math:`U_i = g(x_i)` on Γ_D.

    Args:
        space: a :class:`~msfem.space.MultiscaleSpace` (built here if it is not yet).
        petsc_options: options of the coarse KSP (default MUMPS LU:
            :data:`msfem.solvers.DIRECT_OPTIONS`).
        prefix: PETSc options prefix of the coarse solver.
        assembly: ``"element"`` (:func:`assemble_coarse`) or ``"ptap"``
            (:func:`assemble_coarse_ptap`, conforming Galerkin methods); default: the
            method's (:attr:`~msfem.methods.Method.coarse_assembly`).
    """
    default = space.method.coarse_assembly
    assembly = default if assembly is None else assembly
    if assembly not in ("element", "ptap"):
        raise ValueError(f"assembly must be 'element' or 'ptap', got {assembly!r}")
    if default == "ptap" and assembly == "element":
        raise ValueError(f"method {space.name!r} assembles its coarse system as P^T A_h P "
                         f"(its test functions are not local to the elements); leave "
                         f"assembly unset or use assembly = 'ptap'")
    if not space.built:
        space.build()
    t0 = time.perf_counter()
    with dolfinx.common.Timer("~msfem: online (coarse assemble)"):
        A, b = assemble_coarse(space) if assembly == "element" else assemble_coarse_ptap(space)
        rows, vals = space.coarse.dirichlet(space.problem)
        U = space.coarse.create_vector("U_coarse")
        x = _petsc_vec(U)
        grow = rows.astype(PETSc.IntType)
        x.set(0.0)
        x.setValues(grow, vals)  # type: ignore[arg-type]
        x.assemble()
        A.zeroRowsColumns(grow, diag=1.0, x=x, b=b)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    ksp = solvers.make_ksp(A, prefix, petsc_options, solvers.DIRECT_OPTIONS)
    with dolfinx.common.Timer("~msfem: online (coarse solve)"):
        solvers.solve(ksp, b, x, f"coarse solve ({A.getSize()[0]} dofs)")
    (U.x if hasattr(U, "x") else U).scatter_forward()
    t2 = time.perf_counter()
    ksp.destroy()
    A.destroy()
    b.destroy()
    comm = space.hierarchy.comm
    timings = {"coarse_assemble": comm.allreduce(t1 - t0, op=MPI.MAX),
               "coarse_solve": comm.allreduce(t2 - t1, op=MPI.MAX)}
    return CoarseSolution(space, U, timings)


def prolongation(space: MultiscaleSpace, V: dolfinx.fem.FunctionSpace) -> PETSc.Mat:
    r"""The prolongation :math:`P_{f,i} = \phi_i(x_f)` (fine dofs × coarse dofs, MPIAIJ).

    Rows shared by several coarse cells carry the average of the element values (equal
    for conforming methods), or their sum for methods whose element pieces add up
    (:attr:`~msfem.methods.Method.reconstruction` ``= "sum"``, LOD). For conforming
    methods :math:`P^T A_h P = A_H`.
    """
    fmap = space.fine_map(V)
    bs = space.bs
    nf = V.dofmap.index_map.size_local * bs
    nc = space.coarse.size_local
    if space.method.reconstruction == "sum":  # the elements' pieces add up
        counts = np.ones(len(fmap.global_dofs))
    else:
        counts = np.concatenate(fmap.multiplicity()) if space.elements else np.zeros(0)
    space.check_fine_basis("the prolongation")  # collective: every rank raises
    P = PETSc.Mat().create(comm=V.mesh.comm)
    P.setSizes(((nf, PETSc.DETERMINE), (nc, PETSc.DETERMINE)))
    P.setType(PETSc.Mat.Type.AIJ)
    rows, cols, vals = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    for k, e in enumerate(space.elements):
        assert e.trial is not None
        r = fmap.global_dofs[fmap.offsets[k]:fmap.offsets[k + 1]]
        w = counts[fmap.offsets[k]:fmap.offsets[k + 1]]
        rows.append(np.repeat(r, len(e.cols)))
        cols.append(np.tile(e.cols, len(r)))
        vals.append((e.trial / w[:, None]).ravel())
    P.setPreallocationCOO(np.concatenate(rows).astype(PETSc.IntType),  # type: ignore[arg-type]
                          np.concatenate(cols).astype(PETSc.IntType))  # type: ignore[arg-type]
    P.setValuesCOO(np.concatenate(vals), addv=PETSc.InsertMode.ADD_VALUES)  # type: ignore[arg-type]
    P.assemble()
    return P


def interpolate_coarse(U: dolfinx.fem.Function, V: dolfinx.fem.FunctionSpace,
                       name: str) -> dolfinx.fem.Function:
    """The coarse Lagrange function ``U`` interpolated onto the (nested) fine space ``V``.

    Exact for P1/Q1 coarse functions on a refining fine mesh (collective).
    """
    u = dolfinx.fem.Function(V, name=name)
    tdim = V.mesh.topology.dim
    cells = np.arange(V.mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    u.interpolate_nonmatching(U, cells, dolfinx.fem.create_interpolation_data(
        V, U.function_space, cells))
    u.x.scatter_forward()
    return u


def inf_sup(space: MultiscaleSpace, max_dofs: int = 4000) -> tuple[float, float]:
    r"""Discrete inf-sup and continuity constants of the coarse operator (collective).

    With the trial functions :math:`\phi_j`, the test functions :math:`w_i` and the
    broken energy Gram matrices :math:`G_\phi = [\sum_K a_K(\phi_j, \phi_i)]`,
    :math:`G_w = [\sum_K a_K(w_j, w_i)]` on the free (non-Dirichlet) coarse dofs,

    .. math::
        \beta = \min_U \max_V \frac{V^T A_H U}{\|V\|_{G_w}\|U\|_{G_\phi}}
        = \sigma_{\min}(L_w^{-1} A_H L_\phi^{-T}), \qquad
        \gamma = \sigma_{\max}(\cdot),

    :math:`G = LL^T`. A Galerkin method has :math:`\beta = \gamma = 1` in these norms; a
    Petrov--Galerkin method is quasi-optimal with constant :math:`\gamma/\beta`, so a
    :math:`\beta` that falls with the contrast explains errors that grow with it. Dense
    (the coarse operator is gathered on every rank): for coarse spaces of at most
    ``max_dofs`` dofs; methods with broken reconstructions and a fine basis only.
    """
    comm = space.hierarchy.comm
    n = space.coarse.size_global
    if n > max_dofs:
        raise ValueError(f"inf_sup: {n} coarse dofs is more than max_dofs = {max_dofs} (a "
                         f"dense computation); use a smaller coarse grid or raise max_dofs")
    if space.method.reconstruction != "broken":
        raise ValueError(f"inf_sup: method {space.name!r} adds its elements' functions "
                         f"(reconstruction {space.method.reconstruction!r}); the broken "
                         f"Gram matrices are not its norms")
    space.check_fine_basis("inf_sup")
    A, G_phi, G_w = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    for e in space.elements:
        assert e.trial is not None
        W = e.trial if e.test is None else e.test
        E = space.energy_matrix(e)
        A[np.ix_(e.rows, e.cols)] += W.T @ (E @ e.trial)
        G_phi[np.ix_(e.cols, e.cols)] += e.trial.T @ (E @ e.trial)
        G_w[np.ix_(e.rows, e.rows)] += W.T @ (E @ W)
    for M in (A, G_phi, G_w):
        comm.Allreduce(MPI.IN_PLACE, M, op=MPI.SUM)
    fixed = np.unique(np.concatenate(comm.allgather(space.coarse.dirichlet(space.problem)[0])))
    free = np.setdiff1d(np.arange(n), fixed)
    A, G_phi, G_w = (M[np.ix_(free, free)] for M in (A, G_phi, G_w))
    L_phi = np.linalg.cholesky(G_phi)
    L_w = np.linalg.cholesky(G_w)
    B = scipy.linalg.solve_triangular(L_w, A, lower=True)
    B = scipy.linalg.solve_triangular(L_phi, B.T, lower=True).T
    s = np.linalg.svd(B, compute_uv=False)
    return float(s.min()), float(s.max())
