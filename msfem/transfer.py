r"""Element data ↔ distributed spaces: the one place where local and global dofs meet.

Every method returns, per owned coarse cell K, values on K's fine dofs (its trial and
test functions) and coarse dofs in PETSc's global numbering. Two maps link them to the
distributed objects:

* :class:`FineMap` -- the fine dofs of all owned elements ↔ a fine dolfinx space
  :math:`V_h`: gather a Function onto the elements, sum / average element values into a
  Function. Elements on a structured hierarchy name their fine dofs by their
  partition-independent lattice ids (translated by a PETSc application ordering, ``AO``);
  on unstructured hierarchies by their global dof blocks.
* :class:`CoarseGather` -- the coarse dofs of all owned elements ← a distributed coarse
  vector :math:`U` (one ``VecScatter``; works for dofs that are neither owned nor ghosted
  on this rank, e.g. the far couplings of LOD).

Both are built once (one scatter each) and reused for every gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import dolfinx
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from msfem import _runtime  # noqa: F401


def expand_blocks(blocks: np.ndarray, bs: int) -> np.ndarray:
    """Block indices to scalar (unblocked) indices ``block * bs + c``, c = 0..bs-1."""
    return (np.asarray(blocks, dtype=np.int64)[:, None] * bs + np.arange(bs)).ravel()


def _scatter_to_local(vec: PETSc.Vec, indices: np.ndarray) -> tuple[PETSc.Scatter, PETSc.Vec]:
    local = PETSc.Vec().createSeq(len(indices), comm=MPI.COMM_SELF)  # type: ignore[arg-type]
    is_from = PETSc.IS().createGeneral(np.asarray(indices, dtype=PETSc.IntType), comm=MPI.COMM_SELF)  # type: ignore[arg-type]
    scatter = PETSc.Scatter().create(vec, is_from, local, None)  # type: ignore[arg-type]
    is_from.destroy()
    return scatter, local


class LatticeNumbering:
    """Global dof blocks of a fine Lagrange space from fine-lattice ids (a PETSc ``AO``).

    Args:
        V: a Lagrange space on the fine mesh of ``hierarchy`` (or any mesh whose dofs lie
            on that hierarchy's fine lattice).
        hierarchy: a :class:`~msfem.mesh.StructuredHierarchy`.
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, hierarchy):
        imap = V.dofmap.index_map
        self.V, self.hierarchy, self.bs = V, hierarchy, V.dofmap.index_map_bs
        self.degree = V.ufl_element().embedded_superdegree
        lattice = hierarchy.dof_lattice(V)[: imap.size_local]
        petsc_idx = np.arange(*imap.local_range, dtype=np.int64)
        self.ao: PETSc.AO | None = None
        self._lookup: np.ndarray | None = None
        if V.mesh.comm.size == 1:  # one rank: a lookup array is the whole ordering
            self._lookup = np.full(int(lattice.max()) + 1 if len(lattice) else 0, -1,
                                   dtype=np.int64)
            self._lookup[lattice] = petsc_idx
        else:
            self.ao = PETSc.AO().createMapping(lattice.astype(PETSc.IntType),
                                               petsc_idx.astype(PETSc.IntType), comm=V.mesh.comm)  # type: ignore[arg-type]

    def blocks(self, lattice: np.ndarray) -> np.ndarray:
        """Global dof blocks of the lattice ids ``lattice`` (-1 where none)."""
        if self._lookup is not None:
            ids = np.asarray(lattice, dtype=np.int64)
            inside = (ids >= 0) & (ids < len(self._lookup))
            return np.where(inside, self._lookup[np.where(inside, ids, 0)], -1)
        assert self.ao is not None
        return np.asarray(self.ao.app2petsc(np.asarray(lattice, dtype=PETSc.IntType)),  # type: ignore[arg-type]
                          dtype=np.int64)

    def values_at(self, u: dolfinx.fem.Function, x: np.ndarray) -> np.ndarray:
        """Values (n, bs) of ``u`` at this rank's lattice points ``x`` (n, d) (collective)."""
        blocks = self.blocks(self.hierarchy.lattice_ids(np.asarray(x, dtype=float), self.degree))
        if len(blocks) and blocks.min() < 0:
            raise ValueError("points outside the lattice of the source space")
        vec = u.x.petsc_vec
        scatter, local = _scatter_to_local(vec, expand_blocks(blocks, self.bs))
        scatter.scatter(vec, local, addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)  # type: ignore[arg-type]
        out = local.getArray(readonly=True).copy().reshape(-1, self.bs)
        scatter.destroy()
        local.destroy()
        return out

    def inject(self, u: dolfinx.fem.Function, V: dolfinx.fem.FunctionSpace,
               name: str = "u_ref") -> dolfinx.fem.Function:
        r"""``u`` injected into a coarser (or equal) lattice space ``V`` (collective).

        Nodal values: :math:`(Iu)(x_i) = u(x_i)` for every dof :math:`x_i` of ``V``.
        """
        n = V.dofmap.index_map.size_local
        x = V.tabulate_dof_coordinates()[:n, : self.hierarchy.dim]
        out = dolfinx.fem.Function(V, name=name)
        out.x.array[: n * self.bs] = self.values_at(u, x).ravel()
        out.x.scatter_forward()
        return out


class FineMap:
    """Fine dofs of the owned elements ↔ global dofs of the distributed fine space ``V``.

    Args:
        V: the fine space.
        fine_dofs: per owned element, the ids of its fine dof blocks (element order):
            lattice ids when ``numbering`` is given, global blocks otherwise.
        numbering: a :class:`LatticeNumbering` of ``V`` (structured hierarchies).
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, fine_dofs: Sequence[np.ndarray],
                 numbering: LatticeNumbering | None = None):
        self.V, self.numbering = V, numbering
        self.bs = V.dofmap.index_map_bs
        self.sizes = [len(f) for f in fine_dofs]
        ids = (np.concatenate(fine_dofs) if len(fine_dofs) else np.zeros(0)).astype(np.int64)
        blocks = numbering.blocks(ids) if numbering is not None else ids
        self.global_dofs = expand_blocks(blocks, self.bs)
        self.offsets = np.concatenate([[0], np.cumsum(np.array(self.sizes, dtype=int) * self.bs)])
        self._scatter: tuple[PETSc.Scatter, PETSc.Vec] | None = None
        self._inv_count: dolfinx.fem.Function | None = None

    def _ensure_scatter(self, vec: PETSc.Vec) -> tuple[PETSc.Scatter, PETSc.Vec]:
        """The scatter from ``vec``'s layout to the element-local dofs, and the local vector."""
        if self._scatter is None:
            self._scatter = _scatter_to_local(vec, self.global_dofs)
        return self._scatter

    def gather(self, u: dolfinx.fem.Function) -> list[np.ndarray]:
        """Values of ``u`` on the fine dofs of each owned element (element order)."""
        vec = u.x.petsc_vec
        scatter, local = self._ensure_scatter(vec)
        scatter.scatter(vec, local, addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)  # type: ignore[arg-type]
        arr = local.getArray(readonly=True).copy()
        return [arr[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def _sum(self, values: np.ndarray, out: PETSc.Vec) -> None:
        """``out`` = Σ over elements of the element-local ``values`` (reverse scatter, ADD)."""
        scatter, local = self._ensure_scatter(out)
        out.set(0.0)
        local.setArray(values)  # type: ignore[arg-type]
        scatter.scatter(local, out, addv=PETSc.InsertMode.ADD_VALUES,  # type: ignore[arg-type]
                        mode=PETSc.ScatterMode.REVERSE)  # type: ignore[arg-type]

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

    def add(self, values: list[np.ndarray], name: str = "u") -> dolfinx.fem.Function:
        """A fine Function from element-local values, summed where elements overlap."""
        u = dolfinx.fem.Function(self.V, name=name)
        self._sum(np.concatenate(values) if values else np.zeros(0), u.x.petsc_vec)
        u.x.scatter_forward()
        return u

    def average(self, values: list[np.ndarray], name: str = "u") -> dolfinx.fem.Function:
        """A fine Function from element-local values (averaged where elements overlap)."""
        u = dolfinx.fem.Function(self.V, name=name)
        total = u.x.petsc_vec
        self._sum(np.concatenate(values) if values else np.zeros(0), total)
        total.pointwiseMult(total, self._inverse_count())
        u.x.scatter_forward()
        return u


class CoarseGather:
    """Values of a distributed coarse vector at the coarse dofs of each owned element.

    Args:
        vec: a vector with the coarse layout (only its parallel layout is used).
        dofs: per owned element, its coarse dofs in PETSc's global numbering.
    """

    def __init__(self, vec: PETSc.Vec, dofs: Sequence[np.ndarray]):
        self.sizes = np.array([len(d) for d in dofs], dtype=int)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        idx = np.concatenate(dofs) if len(dofs) else np.zeros(0, dtype=np.int64)
        self._scatter, self._local = _scatter_to_local(vec, idx)

    def __call__(self, vec: PETSc.Vec) -> list[np.ndarray]:
        """Element-wise values of ``vec`` (collective)."""
        self._scatter.scatter(vec, self._local, addv=PETSc.InsertMode.INSERT,  # type: ignore[arg-type]
                              mode=PETSc.ScatterMode.FORWARD)  # type: ignore[arg-type]
        arr = self._local.getArray(readonly=True).copy()
        return [arr[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]
