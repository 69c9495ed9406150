r"""The coarse MPI-distributed system, its solution and the fine-scale reconstruction.

Element by element through the dofmap of a dolfinx coarse space (ownership and ghosts
from its index map):

.. math::
    A_H[i, j] = \sum_K a_K(\phi_j, w_i), \qquad b_H[i] = \sum_K L_K(w_i),

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
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from msfem import (
    _runtime,  # noqa: F401
    solvers,
)
from msfem.basis import MultiscaleSpace, expand_blocks
from msfem.problem import dirichlet_values


@dataclass
class CoarseSolution:
    """Coarse solution ``U`` (a dolfinx Function on the coarse space) and timings."""

    space: MultiscaleSpace
    U: dolfinx.fem.Function
    timings: dict[str, float] = field(default_factory=dict)

    def reconstruct(self, V: dolfinx.fem.FunctionSpace | None = None) -> dolfinx.fem.Function:
        r"""The fine-scale reconstruction :math:`u_{ms} = \sum_i U_i\phi_i` on the fine space."""
        t0 = time.perf_counter()
        fmap = self.fine_map(V)
        values = [e.phi @ self.U.x.array[e.coarse_dofs] for e in self.space.elements]
        u = fmap.average(values, name="u_msfem")
        self.timings["reconstruct"] = time.perf_counter() - t0
        return u

    def errors(self, u_ref: dolfinx.fem.Function) -> dict[str, float]:
        """Errors against a fine reference on the hierarchy's fine mesh.

        Relative and absolute broken L2, H1-seminorm and energy errors of the
        reconstruction, and nodal max / l2 errors at the coarse vertices.
        """
        from msfem import norms

        h = self.space.hierarchy
        fmap = self.fine_map(u_ref.function_space)
        local_ref = fmap.gather(u_ref)
        out = norms.broken_errors(self.space, self.U, local_ref, h.comm)
        Vc = self.space.coarse_space
        n_owned = Vc.dofmap.index_map.size_local
        vals = self.U.x.array[: n_owned * self.space.bs].reshape(n_owned, -1)
        if self.space.unstructured:
            ref = self._vertex_reference(local_ref)
        else:
            xc = Vc.tabulate_dof_coordinates()[:n_owned, : h.dim]
            ref = fmap.values_at(u_ref, h.lattice_ids(xc, self.space.problem.degree))
        out.update(norms.nodal_errors(vals, ref, h.H, h.comm))
        return out

    def _vertex_reference(self, local_ref: list[np.ndarray]) -> np.ndarray:
        """Reference values (n_owned, bs) at the owned coarse vertices.

        Taken from the elements' fine dofs at their vertices (unstructured hierarchies).
        """
        Vc = self.space.coarse_space
        bs = self.space.bs
        f = dolfinx.fem.Function(Vc)
        vec = f.x.petsc_vec
        vec.set(0.0)
        for e, ref in zip(self.space.elements, local_ref):
            rows = expand_blocks(e.vertex_blocks, bs)
            g = _global_indices(Vc, e.coarse_dofs).astype(PETSc.IntType)
            vec.setValues(g, ref[rows], addv=PETSc.InsertMode.INSERT_VALUES)
        vec.assemble()
        n_owned = Vc.dofmap.index_map.size_local
        return vec.getArray(readonly=True)[: n_owned * bs].reshape(n_owned, bs).copy()

    def fine_map(self, V: dolfinx.fem.FunctionSpace | None = None) -> FineMap:
        """The map between element-local fine dofs and the distributed fine space.

        Built once per space and cached on the :class:`MultiscaleSpace`.
        """
        return self.space.fine_map(V)


class FineMap:
    """Element-local fine dofs ↔ global dofs of the distributed fine space ``V``.

    The link is the partition-independent lattice id of each fine dof, translated to
    dolfinx's global numbering by a PETSc application ordering (``AO``); on unstructured
    hierarchies the elements carry the global fine dofs themselves.
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, hierarchy, space: MultiscaleSpace):
        self.V, self.space = V, space
        imap, bs = V.dofmap.index_map, V.dofmap.index_map_bs
        self.bs = bs
        self._ao = None
        if space.unstructured:
            self.sizes = [len(e.fine_blocks) for e in space.elements]
            blocks = (np.concatenate([e.fine_blocks for e in space.elements])
                      if space.elements else np.zeros(0, dtype=np.int64)).astype(np.int64)
        else:
            lattice = hierarchy.dof_lattice(V)[: imap.size_local]
            petsc_idx = np.arange(*imap.local_range, dtype=np.int64)
            self._ao = PETSc.AO().createMapping(lattice.astype(PETSc.IntType),
                                                petsc_idx.astype(PETSc.IntType),
                                                comm=V.mesh.comm)
            self.sizes = [len(e.lattice) for e in space.elements]
            all_lat = (np.concatenate([e.lattice for e in space.elements])
                       if space.elements else np.zeros(0, dtype=np.int64))
            blocks = np.asarray(self._ao.app2petsc(all_lat.astype(PETSc.IntType)),
                                dtype=np.int64)
        self.global_dofs = expand_blocks(blocks, bs)
        self.offsets = np.concatenate([[0], np.cumsum(np.array(self.sizes, dtype=int) * bs)])
        self._scatter = None
        self._inv_count: dolfinx.fem.Function | None = None

    def _ensure_scatter(self, vec: PETSc.Vec) -> None:
        if self._scatter is None:
            self._local = PETSc.Vec().createSeq(len(self.global_dofs), comm=MPI.COMM_SELF)
            is_from = PETSc.IS().createGeneral(self.global_dofs.astype(PETSc.IntType),
                                               comm=MPI.COMM_SELF)
            self._scatter = PETSc.Scatter().create(vec, is_from, self._local, None)

    def gather(self, u: dolfinx.fem.Function) -> list[np.ndarray]:
        """Values of ``u`` on the fine dofs of each owned coarse cell (K-mesh order)."""
        vec = u.x.petsc_vec
        self._ensure_scatter(vec)
        self._scatter.scatter(vec, self._local, addv=PETSc.InsertMode.INSERT,
                              mode=PETSc.ScatterMode.FORWARD)
        arr = self._local.getArray(readonly=True).copy()
        return [arr[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def _sum(self, values: np.ndarray, out: PETSc.Vec) -> None:
        """``out`` = Σ over elements of the element-local ``values`` (reverse scatter, ADD)."""
        self._ensure_scatter(out)
        out.set(0.0)
        self._local.setArray(values)
        self._scatter.scatter(self._local, out, addv=PETSc.InsertMode.ADD_VALUES,
                              mode=PETSc.ScatterMode.REVERSE)

    def values_at(self, u: dolfinx.fem.Function, lattice: np.ndarray) -> np.ndarray:
        """Values (n, bs) of ``u`` at fine lattice nodes ``lattice`` (collective)."""
        blocks = np.asarray(self._ao.app2petsc(np.asarray(lattice, dtype=PETSc.IntType)),
                            dtype=np.int64)
        idx = expand_blocks(blocks, self.bs)
        vec = u.x.petsc_vec
        local = PETSc.Vec().createSeq(len(idx), comm=MPI.COMM_SELF)
        is_from = PETSc.IS().createGeneral(idx.astype(PETSc.IntType), comm=MPI.COMM_SELF)
        sc = PETSc.Scatter().create(vec, is_from, local, None)
        sc.scatter(vec, local, addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
        out = local.getArray(readonly=True).copy().reshape(-1, self.bs)
        sc.destroy()
        local.destroy()
        is_from.destroy()
        return out

    def _inverse_count(self) -> PETSc.Vec:
        if self._inv_count is None:
            c = dolfinx.fem.Function(self.V)
            self._sum(np.ones(len(self.global_dofs)), c.x.petsc_vec)
            arr = c.x.petsc_vec.getArray()
            arr[arr == 0] = 1.0  # dofs of no owned element (cannot happen on a full hierarchy)
            c.x.petsc_vec.reciprocal()
            self._inv_count = c
        return self._inv_count.x.petsc_vec

    def multiplicity(self) -> list[np.ndarray]:
        """For each element, how many elements (all ranks) share each of its fine dofs."""
        inv = dolfinx.fem.Function(self.V)
        self._inverse_count().copy(inv.x.petsc_vec)
        return [1.0 / v for v in self.gather(inv)]

    def average(self, values: list[np.ndarray], name: str = "u") -> dolfinx.fem.Function:
        """A fine Function from element-local values (averaged where elements overlap)."""
        u = dolfinx.fem.Function(self.V, name=name)
        total = u.x.petsc_vec
        self._sum(np.concatenate(values) if values else np.zeros(0), total)
        total.pointwiseMult(total, self._inverse_count())
        u.x.scatter_forward()
        return u


def _coarse_boundary(space: MultiscaleSpace) -> tuple[np.ndarray, np.ndarray]:
    """Owned coarse dofs (unblocked local) on Γ_D and their Dirichlet values."""
    h, problem = space.hierarchy, space.problem
    Vc = space.coarse_space
    tdim = h.dim
    bs = space.bs
    n_owned = Vc.dofmap.index_map.size_local
    xc = Vc.tabulate_dof_coordinates()
    rows, vals = [], []
    seen: set[int] = set()
    for bc in problem.dirichlet:
        marker = bc.marker or (lambda x: np.ones(x.shape[1], dtype=bool))
        facets = dolfinx.mesh.locate_entities_boundary(h.coarse, tdim - 1, marker)
        blocks = dolfinx.fem.locate_dofs_topological(Vc, tdim - 1, facets)
        blocks = np.array([b for b in blocks if b < n_owned and b not in seen], dtype=np.int64)
        seen.update(blocks.tolist())
        if len(blocks) == 0:
            continue
        g = dirichlet_values(bc, xc[blocks].T, problem.shape)  # (bs, n)
        rows.append(expand_blocks(blocks, bs))
        vals.append(g.T.ravel())
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(rows), np.concatenate(vals)


def _global_indices(Vc: dolfinx.fem.FunctionSpace, local: np.ndarray) -> np.ndarray:
    bs = Vc.dofmap.index_map_bs
    blocks = Vc.dofmap.index_map.local_to_global(np.asarray(local // bs, dtype=np.int32))
    return blocks * bs + local % bs


def assemble_coarse(space: MultiscaleSpace) -> tuple[PETSc.Mat, PETSc.Vec]:
    """Assemble :math:`A_H` and :math:`b_H` from the element data (Dirichlet rows not applied)."""
    Vc = space.coarse_space
    u, v = ufl.TrialFunction(Vc), ufl.TestFunction(Vc)
    A = dolfinx.fem.petsc.create_matrix(dolfinx.fem.form(ufl.inner(u, v) * ufl.dx))
    A.zeroEntries()
    A.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
    b = dolfinx.fem.petsc.create_vector(Vc)
    b.set(0.0)
    for e in space.elements:
        g = _global_indices(Vc, e.coarse_dofs).astype(PETSc.IntType)
        A.setValues(g, g, e.A, addv=PETSc.InsertMode.ADD_VALUES)
        b.setValues(g, e.b, addv=PETSc.InsertMode.ADD_VALUES)
    A.assemble()
    b.assemble()
    return A, b


def assemble_coarse_ptap(space: MultiscaleSpace) -> tuple[PETSc.Mat, PETSc.Vec]:
    r"""Galerkin projection of the fine system: :math:`A_H = P^T A_h P`, :math:`b_H = P^T b_h`.

    ``MatPtAP`` with the distributed prolongation of :func:`prolongation` and the fine
    operator assembled once on the fine mesh; only for conforming Galerkin variants, where
    it equals the element-by-element assembly.
    """
    if not space.conforming or space.variant.test != "galerkin":
        raise ValueError(
            f"PtAP assembly needs a conforming Galerkin variant (standard, linear, "
            f"oscillatory without oversampling), not {space.variant.name!r} with "
            f"{space.layers} oversampling layers; use assembly='element'")
    V = space.fine_map().V
    disc = space.problem.discretise(V)
    A_h = dolfinx.fem.petsc.assemble_matrix(disc.a)
    A_h.assemble()
    b_h = dolfinx.fem.petsc.assemble_vector(disc.L)
    b_h.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    P = prolongation(space, V)
    A = A_h.PtAP(P)
    b = P.createVecRight()
    P.multTranspose(b_h, b)
    for obj in (A_h, b_h, P):
        obj.destroy()
    return A, b


def solve(space: MultiscaleSpace, *, petsc_options: Mapping[str, Any] | None = None,
          prefix: str = "msfem_coarse_", assembly: str = "element") -> CoarseSolution:
    r"""Assemble and solve the coarse system :math:`A_H U = b_H`, :math:`U_i = g(x_i)` on Γ_D.

    Args:
        space: a :class:`~msfem.basis.MultiscaleSpace` (built here if it is not yet).
        petsc_options: options of the coarse KSP (default MUMPS LU:
            :data:`msfem.solvers.DIRECT_OPTIONS`).
        prefix: PETSc options prefix of the coarse solver.
        assembly: ``"element"`` (:func:`assemble_coarse`, every variant) or ``"ptap"``
            (:func:`assemble_coarse_ptap`, conforming Galerkin variants).
    """
    if assembly not in ("element", "ptap"):
        raise ValueError(f"assembly must be 'element' or 'ptap', got {assembly!r}")
    if not space.built:
        space.build()
    t0 = time.perf_counter()
    Vc = space.coarse_space
    with dolfinx.common.Timer("~msfem: online (coarse assemble)"):
        A, b = assemble_coarse(space) if assembly == "element" else assemble_coarse_ptap(space)
        rows, vals = _coarse_boundary(space)
        U = dolfinx.fem.Function(Vc, name="U_coarse")
        x = U.x.petsc_vec
        grow = _global_indices(Vc, rows).astype(PETSc.IntType)
        x.set(0.0)
        x.setValues(grow, vals)
        x.assemble()
        A.zeroRowsColumns(grow, diag=1.0, x=x, b=b)
    t1 = time.perf_counter()
    ksp = solvers.make_ksp(A, prefix, petsc_options, solvers.DIRECT_OPTIONS)
    with dolfinx.common.Timer("~msfem: online (coarse solve)"):
        solvers.solve(ksp, b, x, f"coarse solve ({A.getSize()[0]} dofs)")
    U.x.scatter_forward()
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
    for conforming variants). For conforming variants :math:`P^T A_h P = A_H`.
    """
    fmap = space.fine_map(V)
    Vc = space.coarse_space
    bs = space.bs
    nf = V.dofmap.index_map.size_local * bs
    nc = Vc.dofmap.index_map.size_local * bs
    counts = np.concatenate(fmap.multiplicity()) if space.elements else np.zeros(0)
    P = PETSc.Mat().createAIJ(((nf, None), (nc, None)), comm=V.mesh.comm)
    P.setPreallocationNNZ((8 * bs, 8 * bs))
    P.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, False)
    for k, e in enumerate(space.elements):
        rows = fmap.global_dofs[fmap.offsets[k]:fmap.offsets[k + 1]].astype(PETSc.IntType)
        cols = _global_indices(Vc, e.coarse_dofs).astype(PETSc.IntType)
        w = counts[fmap.offsets[k]:fmap.offsets[k + 1]]
        P.setValues(rows, cols, e.phi / w[:, None], addv=PETSc.InsertMode.ADD_VALUES)
    P.assemble()
    return P
