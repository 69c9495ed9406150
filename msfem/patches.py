r"""Patch meshes and the per-rank engine of local problems (all on ``COMM_SELF``).

A *patch* is a union of fine cells around a coarse cell K (K itself, K plus oversampling
layers, a sampling region). On a structured hierarchy a patch is a box of fine lattice
squares (or, for S = K on simplices, one coarse simplex of the Kuhn split); its mesh is
built once per patch *shape* and translated to every coarse cell, because coefficients
are functions of the global coordinates. The forms are compiled once per shape
(:class:`PatchMesh`) and only their coefficient data is refreshed after a move.

The :class:`PatchEngine` is what a method's ``local(cell, engine)`` receives: the
hierarchy, the problem, the coarse space, the cache of patch meshes and the local
Dirichlet solve (:class:`msfem.local.DirichletSolver`, one per patch shape)

.. math::
    A_{II}\,\Psi_I = -A_{IB}\,G, \qquad \Psi_B = G

(one factorisation of the interior block, all right-hand sides at once). Other local
solvers (constrained / saddle-point, Neumann with mean constraints, SLEPc
eigenproblems) are in :mod:`msfem.local`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dolfinx
import dolfinx.fem.petsc
import dolfinx.la
import numpy as np
import scipy.sparse as sp
import ufl
from mpi4py import MPI
from petsc4py import PETSc
from scipy.spatial import cKDTree

from msfem import (
    _runtime,  # noqa: F401
    solvers,
)
from msfem.local import DirichletSolver
from msfem.mesh import RefinedHierarchy, create_lattice_mesh, locate_sub
from msfem.problem import Discretisation, Problem
from msfem.transfer import expand_blocks


def _weak_method(method: Callable) -> Callable:
    """``method`` without a strong reference to its object.

    A mesh's discretisation keeps the mesh's facet finder; a bound method would make a
    reference cycle, and COMM_SELF meshes in cycles live until the next garbage
    collection (each holds an MPI communicator).
    """
    ref = weakref.WeakMethod(method)

    def call(*args, **kwargs):
        bound = ref()
        assert bound is not None, "the mesh of this discretisation was freed"
        return bound(*args, **kwargs)

    return call


def _index_set(indices: np.ndarray) -> PETSc.IS:
    """A sequential PETSc index set."""
    return PETSc.IS().createGeneral(np.asarray(indices, dtype=PETSc.IntType),  # type: ignore[arg-type]
                                    comm=MPI.COMM_SELF)  # type: ignore[arg-type]


class Where:
    """Names a coarse cell in error messages (formatted only when an error is raised)."""

    __slots__ = ("cell", "vertices")

    def __init__(self, cell: int, vertices: np.ndarray):
        self.cell, self.vertices = cell, vertices

    def __str__(self) -> str:
        return f"coarse cell {self.cell} (vertices {self.vertices.round(6).tolist()})"


def polynomial_basis(cell_type: str, xi: np.ndarray) -> np.ndarray:
    r"""Values (n, m) of the coarse polynomial space at local coordinates ``xi`` (n, d).

    P1 (simplices): :math:`\{1, \xi_1, \dots, \xi_d\}`; Q1 (intervals, quadrilaterals,
    hexahedra): all products :math:`\prod_{k \in s} \xi_k` over subsets s.
    """
    n, d = xi.shape
    if cell_type in ("triangle", "tetrahedron"):
        return np.column_stack([np.ones(n)] + [xi[:, k] for k in range(d)])
    cols = []
    for subset in itertools.product((0, 1), repeat=d):
        cols.append(np.prod(np.where(np.array(subset)[None, :] == 1, xi, 1.0), axis=1))
    return np.column_stack(cols)


def blocked(scalar: np.ndarray, bs: int) -> np.ndarray:
    """Scalar functions (n, m) to vector ones (n*bs, m*bs): one copy per component."""
    if bs == 1:
        return scalar
    out = np.zeros((scalar.shape[0] * bs, scalar.shape[1] * bs))
    for c in range(bs):
        out[c::bs, c::bs] = scalar
    return out


def nodal_functions(cell_type: str, x: np.ndarray, vertices: np.ndarray, H: np.ndarray,
                    bs: int) -> np.ndarray:
    r"""Coarse nodal functions :math:`N_i(x)` of the cell with ``vertices`` at points ``x``.

    :math:`N_i = \sum_j p_j\,(P^{-1})_{ji}` with :math:`p_j` the :func:`polynomial_basis`
    and :math:`P_{kj} = p_j(x_k)`, so :math:`N_i(x_k) = \delta_{ik}`; blocked for vector
    problems.
    """
    center = vertices.mean(axis=0)
    poly = polynomial_basis(cell_type, (x - center) / H)
    return blocked(poly @ np.linalg.inv(polynomial_basis(cell_type, (vertices - center) / H)),
                   bs)


class BlockDiagonal:
    """The CSR pattern of a block-diagonal matrix of ``B`` blocks of one pattern.

    ``pattern`` is (positions, indptr, indices, shape) as from
    :meth:`PatchMesh.block_pattern`, ``width`` the number of values of each block's full
    matrix. :meth:`values` picks the blocks' entries out of ``data`` (B, width).
    """

    def __init__(self, pattern: tuple, B: int, width: int):
        pos, indptr, indices, (nr, nc) = pattern
        nnz = len(pos)
        self.positions = (np.asarray(pos)[None, :] + width * np.arange(B)[:, None]).ravel()
        self.indices = (indices[None, :] + nc * np.arange(B)[:, None]).ravel().astype(
            PETSc.IntType)
        self.indptr = np.concatenate([
            (indptr[:-1][None, :] + nnz * np.arange(B)[:, None]).ravel(), [B * nnz]]).astype(
            PETSc.IntType)
        self.shape = (B * nr, B * nc)

    def values(self, data: np.ndarray) -> np.ndarray:
        """The block-diagonal matrix's CSR values from the blocks' full values ``data``."""
        return np.take(data, self.positions)

    def csr(self, data: np.ndarray) -> sp.csr_matrix:
        """The block-diagonal matrix (SciPy CSR)."""
        return sp.csr_matrix((self.values(data), self.indices, self.indptr), shape=self.shape)


def nearest_dofs(x: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``x`` (n, d) nearest to each of ``points`` (m, d)."""
    return np.array([int(np.argmin(np.linalg.norm(x - p, axis=1))) for p in points],
                    dtype=np.int64)


def to_csr(A: PETSc.Mat) -> sp.csr_matrix:
    """A sequential PETSc AIJ matrix as a SciPy CSR matrix (copies the arrays)."""
    indptr, indices, data = A.getValuesCSR()
    return sp.csr_matrix((data, indices, indptr), shape=A.getSize())


def form_csr(form) -> sp.csr_matrix:
    """Assemble a bilinear form (no boundary conditions) into a SciPy CSR matrix."""
    return dolfinx.fem.assemble_matrix(form).to_scipy()


#: Metric matrices of patch meshes by geometry and element (:meth:`PatchMesh.metric_matrices`).
_METRICS: dict[tuple, tuple[sp.csr_matrix, sp.csr_matrix]] = {}


def metric_forms(V: dolfinx.fem.FunctionSpace) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    r"""Mass and stiffness matrices :math:`\int u\cdot v`, :math:`\int \nabla u:\nabla v`."""
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    return (form_csr(dolfinx.fem.form(ufl.inner(u, v) * ufl.dx)),
            form_csr(dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)))


class PatchMesh:
    """A lattice patch mesh on COMM_SELF with the problem's forms, translated to each cell.

    Args:
        hierarchy: the structured hierarchy.
        problem: the problem (its forms are compiled once for this mesh).
        shape: fine squares per axis.
        keep_sub: for one coarse simplex: the Kuhn sub-cell whose fine cells to keep.
    """

    def __init__(self, hierarchy, problem: Problem, shape: tuple[int, ...],
                 keep_sub: int | None):
        h = hierarchy
        self.shape, self.problem = shape, problem
        keep = None
        if keep_sub is not None:
            M, split = h.M, h.split
            centroid = split.mean(axis=1)  # (n_sub, d)

            def keep(square, sub):
                t = (square + centroid[sub].T) / M
                return locate_sub(t, split) == keep_sub

        self.mesh, _ = create_lattice_mesh(MPI.COMM_SELF, h.cell_type, shape, h.h, keep=keep)
        self.x0 = self.mesh.geometry.x.copy()
        self.V = problem.function_space(self.mesh)
        self.bs = self.V.dofmap.index_map_bs
        deg = problem.degree
        xd = self.V.tabulate_dof_coordinates()[:, : h.dim]
        self.dof_index = np.rint(xd / (h.h / deg)).astype(np.int64)  # integer lattice coords
        self.node_shape = np.array(shape) * deg + 1
        ravel = np.ravel_multi_index(tuple(self.dof_index.T), self.node_shape, order="F")
        self.lookup = np.full(int(np.prod(self.node_shape)), -1, dtype=np.int64)
        self.lookup[ravel] = np.arange(len(ravel))
        tdim = h.dim
        self.mesh.topology.create_connectivity(tdim - 1, tdim)
        self.exterior = dolfinx.mesh.exterior_facet_indices(self.mesh.topology)
        bdofs = dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, self.exterior)
        self.boundary_blocks = np.sort(bdofs)
        interior = np.setdiff1d(np.arange(len(xd)), self.boundary_blocks)
        self.boundary = expand_blocks(self.boundary_blocks, self.bs)
        self.interior = expand_blocks(interior, self.bs)
        self._domain = (h.lower, h.upper)
        self._disc: Discretisation | None = None  # compiled on first use (:attr:`disc`)
        self._A: PETSc.Mat | None = None  # the PETSc matrix of a (created on first use)
        self.isI = _index_set(self.interior)
        self.solver: DirichletSolver | None = None
        self.A_II: PETSc.Mat | None = None  # buffer of the interior block
        self.origin = np.zeros(h.dim)
        self._geometry_origin = self.origin  # where the mesh geometry is (move_to)
        self._neumann_key: tuple = ()
        self._metrics: tuple[sp.csr_matrix, sp.csr_matrix] | None = None
        self.rel_coords = self.dof_index * (h.h / deg)
        self._patterns: dict[str, tuple] = {}
        self._csr: dolfinx.la.MatrixCSR | None = None
        self._load: tuple[Any, np.ndarray] | None = None
        self.lattice_shape = np.array(h.N) * h.M * deg + 1
        self.lattice_origin = h.lower
        self.lattice_step = h.h / deg
        self.cache: dict[tuple, Any] = {}  # position-independent data (boundary data, ...)

    def boundary_facets(self, marker) -> np.ndarray:
        """Exterior facets of this mesh lying on ∂Ω where ``marker`` holds."""
        tdim = self.mesh.topology.dim
        mid = dolfinx.mesh.compute_midpoints(self.mesh, tdim - 1, self.exterior).T
        lo, hi = self._domain
        d = len(lo)
        tol = 1e-10 * float(np.max(hi - lo))
        on = np.any(np.abs(mid[:d] - lo[:, None]) < tol, axis=0) | np.any(
            np.abs(mid[:d] - hi[:, None]) < tol, axis=0)
        on &= np.asarray(marker(mid), dtype=bool)
        return self.exterior[on].astype(np.int32)

    def move_to(self, origin: np.ndarray) -> None:
        """Translate the mesh so that its lattice origin sits at ``origin``."""
        d = len(origin)
        self.mesh.geometry.x[:, :d] = self.x0[:, :d] + origin
        self.origin = np.array(origin, dtype=float)
        self._geometry_origin = self.origin
        problem = self.problem
        if problem.neumann:  # which facets carry Neumann data depends on the position
            key = tuple(tuple(self.boundary_facets(bc.marker)) for bc in problem.neumann)
            if key != self._neumann_key:
                self._disc = None  # compiled again, with these facets, on first use
                self._neumann_key = key
        if self._disc is not None:
            self._disc.refresh()

    @property
    def disc(self) -> Discretisation:
        """The problem's forms on this mesh, at its current position.

        Compiled on first use: patch meshes that only lend their dof layout (e.g. the
        patches of condensed MsFEM problems) never compile a form.
        """
        if self._disc is None:
            self._disc = self.problem.discretise(
                self.V, boundary_facets=_weak_method(self.boundary_facets))
        return self._disc

    def place(self, origin: np.ndarray) -> None:
        """Set the position seen by the coordinate queries only (no move, no re-sampling).

        :meth:`dof_coordinates`, :meth:`positions` and :meth:`lattice_ids` then refer to
        ``origin``; assembling needs :meth:`move_to` first (checked).
        """
        self.origin = np.array(origin, dtype=float)

    def _check_geometry(self) -> None:
        if self.origin is not self._geometry_origin:
            raise RuntimeError("patch mesh placed without moving its geometry: call move_to "
                               "before assembling on it")

    @property
    def A(self) -> PETSc.Mat:
        """The PETSc matrix of ``a`` on this mesh (created, and ``a`` compiled, on first use)."""
        if self._A is None:
            self._A = dolfinx.fem.petsc.create_matrix(self.disc.a)
        return self._A

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """Shape of the fine matrix of ``a`` on this mesh."""
        n = (self.V.dofmap.index_map.size_local + self.V.dofmap.index_map.num_ghosts) * self.bs
        return n, n

    def block_pattern_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, indptr) of the fine matrix of ``a`` on this mesh (fixed sparsity)."""
        if "csr" not in self._patterns:  # (set by PatchEngine._summation for summed patches)
            A = self._values_matrix()  # the same pattern as the PETSc matrix self.A
            self._patterns["csr"] = (A.indices.astype(PETSc.IntType),
                                     A.indptr.astype(PETSc.IntType))
        return self._patterns["csr"]

    def _values_matrix(self) -> dolfinx.la.MatrixCSR:
        """The dolfinx CSR matrix of ``a`` on this mesh (expanded blocks; PETSc's pattern)."""
        if self._csr is None:
            self._csr = dolfinx.fem.create_matrix(self.disc.a,
                                                  block_mode=dolfinx.la.BlockMode.expanded)
        return self._csr

    def assemble_values(self) -> np.ndarray:
        """Assemble the fine matrix of ``a`` and return its CSR values (fixed sparsity).

        Assembled into a dolfinx ``MatrixCSR`` (no PETSc insertion), whose pattern is
        :meth:`block_pattern_arrays`.
        """
        self._check_geometry()
        A = self._values_matrix()
        A.data[:] = 0.0
        dolfinx.fem.assemble_matrix(A, self.disc.a)  # type: ignore[arg-type]
        return A.data.copy()

    def assemble(self) -> PETSc.Mat:
        """Assemble the fine matrix of ``a`` on the mesh (no boundary conditions)."""
        self._check_geometry()
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.disc.a)  # type: ignore[arg-type]
        self.A.assemble()
        return self.A

    def load(self) -> np.ndarray:
        """Assemble the fine load vector of ``L`` on the mesh.

        A translation-invariant ``L`` (e.g. a constant source) is assembled once per
        discretisation and copied.
        """
        self._check_geometry()
        disc = self.disc
        if disc.L_translation_invariant and self._load is not None and \
                self._load[0] is disc:
            return self._load[1].copy()
        b = np.zeros(self.matrix_shape[0])
        dolfinx.fem.assemble_vector(b, disc.L)  # type: ignore[arg-type]
        if disc.L_translation_invariant:
            self._load = (disc, b.copy())
        return b

    def dof_coordinates(self) -> np.ndarray:
        """Coordinates (n_blocks, d) of the dofs in the current position."""
        return self.rel_coords + self.origin

    def lattice_ids(self) -> np.ndarray:
        """Global fine-lattice ids of the dofs in the current position."""
        idx = self.dof_index + np.rint((self.origin - self.lattice_origin)
                                       / self.lattice_step).astype(np.int64)
        return np.ravel_multi_index(tuple(idx.T), self.lattice_shape, order="F")

    def lattice_ids_at(self, origins: np.ndarray) -> np.ndarray:
        """:meth:`lattice_ids` of the mesh moved to each of ``origins`` (B, d): (B, n)."""
        shift = np.rint((origins - self.lattice_origin) / self.lattice_step).astype(np.int64)
        idx = self.dof_index[None, :, :] + shift[:, None, :]
        return np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)), self.lattice_shape,
                                    order="F")

    def block_pattern(self, A: sp.csr_matrix | None, block: str) -> tuple:
        """Pattern of the block ``"II"``, ``"IB"`` or ``"all"`` of this mesh's matrix ``A``.

        Returns (positions of its entries in ``A.data``, indptr, indices, shape), cached:
        every matrix of this mesh has the same sparsity (``A = None``: the pattern of
        :meth:`block_pattern_arrays`).
        """
        if block not in self._patterns:
            if A is None:
                indices, indptr = self.block_pattern_arrays()
                A = sp.csr_matrix((np.zeros(len(indices)), indices, indptr),
                                  shape=self.matrix_shape)
            if block == "all":
                self._patterns[block] = (np.arange(A.nnz), A.indptr.copy(), A.indices.copy(),
                                         A.shape)
            else:
                probe = sp.csr_matrix((np.arange(A.nnz, dtype=float), A.indices, A.indptr),
                                      shape=A.shape)
                cols = self.interior if block == "II" else self.boundary
                sub = probe[self.interior][:, cols].tocsr()
                sub.sort_indices()
                self._patterns[block] = (sub.data.astype(np.int64), sub.indptr, sub.indices,
                                         sub.shape)
        return self._patterns[block]

    def interior_boundary_block(self, A: sp.csr_matrix) -> sp.csr_matrix:
        """The block A[interior, boundary] (index pattern cached: the sparsity is fixed)."""
        idx, indptr, indices, shape = self.block_pattern(A, "IB")
        return sp.csr_matrix((A.data[idx], indices, indptr), shape=shape)

    def metric_matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Mass and stiffness matrices of this mesh (translation invariant, cached).

        Shared by every patch mesh of the process with the same untranslated geometry,
        cells, element and dof numbering (each space of a sweep would compile and
        assemble them again otherwise); treat them as read-only.
        """
        if self._metrics is None:
            dofmap = self.V.dofmap
            key = (self.x0.tobytes(), self.mesh.geometry.dofmap.tobytes(),
                   str(self.V.ufl_element()), dofmap.list.tobytes(), dofmap.bs)
            cached = _METRICS.get(key)
            if cached is None:
                cached = _METRICS[key] = metric_forms(self.V)
                while len(_METRICS) > 32:  # (a few shapes per hierarchy)
                    _METRICS.pop(next(iter(_METRICS)))
            self._metrics = cached
        return self._metrics

    def positions(self, points: np.ndarray) -> np.ndarray:
        """Dof blocks at ``points`` (n, d) in the current position (cached per offset)."""
        key = ("at", tuple(np.round((points - self.origin) / self.lattice_step, 6).ravel()))
        if key not in self.cache:
            self.cache[key] = nearest_dofs(self.dof_coordinates(), points)
        return self.cache[key]


class CellMesh:
    """A union of fine cells of an unstructured hierarchy, copied to COMM_SELF.

    Built from the node coordinates of its cells (sorted by centroid, so the mesh does not
    depend on the partition): the fine cells of one owned coarse cell K (``fine_cells``
    given: they are on this rank, dolfinx refines in place, and ``fine_blocks`` -- the
    global fine dof block of each dof -- is computed), or of an oversampling patch, whose
    cells may come from other ranks (:meth:`PatchEngine.gather_patches`). Attributes mirror
    :class:`PatchMesh` (``V``, ``disc``, ``interior``, ``boundary``, ``boundary_blocks``).
    """

    def __init__(self, engine: PatchEngine, coords: np.ndarray,
                 fine_cells: np.ndarray | None = None, what: str = ""):
        h = engine.hierarchy
        fine = h.fine
        n, nodes_per_cell, gdim = coords.shape
        order = np.lexsort(np.round(coords.mean(axis=1) / (1e-9 * float(h.H[0]))).T[::-1])
        coords = coords[order]
        flat = coords.reshape(-1, gdim)
        key = np.round(flat / (1e-9 * float(h.H[0]))).astype(np.int64)
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        domain = ufl.Mesh(fine.ufl_domain().ufl_coordinate_element())  # its own UFL domain
        self.mesh = dolfinx.mesh.create_mesh(
            MPI.COMM_SELF, inverse.reshape(n, nodes_per_cell).astype(np.int64), domain,
            flat[first])
        self.engine = engine
        self.V = engine.problem.function_space(self.mesh)
        self.bs = self.V.dofmap.index_map_bs
        tdim = h.dim
        self.mesh.topology.create_connectivity(tdim - 1, tdim)
        self.exterior = dolfinx.mesh.exterior_facet_indices(self.mesh.topology)
        self.disc = engine.problem.discretise(
            self.V, boundary_facets=_weak_method(self.boundary_facets))
        self.boundary_blocks = np.sort(dolfinx.fem.locate_dofs_topological(
            self.V, tdim - 1, self.exterior))
        self.xd = self.V.tabulate_dof_coordinates()[:, :tdim]
        self.boundary = expand_blocks(self.boundary_blocks, self.bs)
        self.interior = expand_blocks(
            np.setdiff1d(np.arange(len(self.xd)), self.boundary_blocks), self.bs)
        self.fine_blocks: np.ndarray | None = None
        if fine_cells is not None:
            Vf, xf = engine.fine_dof_coordinates()
            cand = np.unique(Vf.dofmap.list[fine_cells].ravel())
            dist, nearest = cKDTree(xf[cand]).query(self.xd)
            if dist.max() > 1e-10 * float(h.H[0]):
                raise RuntimeError(f"{what}: local and fine dofs do not match")
            self.fine_blocks = np.asarray(
                Vf.dofmap.index_map.local_to_global(cand[nearest].astype(np.int32)),
                dtype=np.int64)

    def boundary_facets(self, marker) -> np.ndarray:
        """Exterior facets of this mesh on ∂Ω where ``marker`` holds.

        ∂Ω: the facets of the global fine boundary known to this rank.
        """
        tdim = self.mesh.topology.dim
        mid = dolfinx.mesh.compute_midpoints(self.mesh, tdim - 1, self.exterior)
        on = self.engine.on_domain_boundary(mid[:, : tdim])
        on &= np.asarray(marker(mid.T), dtype=bool)
        return self.exterior[on].astype(np.int32)

    def dof_coordinates(self) -> np.ndarray:
        """Coordinates (n_blocks, d) of the dofs."""
        return self.xd

    def positions(self, points: np.ndarray) -> np.ndarray:
        """Dof blocks nearest to ``points`` (n, d)."""
        return nearest_dofs(self.xd, points)

    def assemble(self) -> PETSc.Mat:
        """Assemble the fine matrix of ``a`` on K (no boundary conditions)."""
        A = dolfinx.fem.petsc.assemble_matrix(self.disc.a)
        A.assemble()
        return A

    def load(self) -> np.ndarray:
        """Assemble the fine load vector of ``L`` on K."""
        return dolfinx.fem.assemble_vector(self.disc.L).array.copy()


class PatchEngine:
    """Per-rank context of the local problems: caches and the local Dirichlet solver.

    Args:
        hierarchy: structured or refined hierarchy.
        problem: the problem.
        coarse_space: the method's coarse space.
        petsc_options: options of the local factorisations (prefix ``msfem_local_``).
    """

    #: Unknowns per block-diagonal factorisation in :meth:`dirichlet_batch` (measured on
    #: Hou-Wu, 32x32 coarse cells: PETSc's time per placement is lowest at 1-2k unknowns
    #: and 15-20 % higher at 8k, the factors then leaving the cache).
    BATCH_UNKNOWNS = 2048

    def __init__(self, hierarchy, problem: Problem, coarse_space,
                 petsc_options: Mapping[str, Any] | None = None):
        self.hierarchy, self.problem, self.coarse_space = hierarchy, problem, coarse_space
        self.petsc_options = dict(petsc_options or {})
        self.bs = problem.block_size
        self.unstructured = isinstance(hierarchy, RefinedHierarchy)
        self.meshes: dict[tuple, PatchMesh] = {}
        self.cell_dofs: dict[int, np.ndarray] = {}
        self.local_index: dict[int, int] = {}
        self.t_petsc = 0.0
        self.region_cache: dict[Any, Any] = {}
        self._fine_dofs: tuple | None = None
        self._n_cell_meshes = 0
        self.box_A: PETSc.Mat | None = None
        self.batch_solvers: dict[tuple, DirichletSolver] = {}
        self.batch_patterns: dict[tuple, BlockDiagonal] = {}
        self.box_patches: set[tuple] = set()
        self._numbering = None
        self._boundary_tree: cKDTree | None = None
        self.patch_coords: dict[int, np.ndarray] = {}

    def prepare(self, local_cells: np.ndarray, cells: np.ndarray) -> None:
        """Collective set-up for the owned cells (their coarse dofs, in one batch)."""
        if self.unstructured:  # collective pieces used inside the (local) cell loop
            self.fine_dof_coordinates()
            _ = self.hierarchy.H
            fine = self.hierarchy.fine
            tdim = fine.topology.dim
            fine.topology.create_connectivity(tdim - 1, tdim)
            facets = dolfinx.mesh.exterior_facet_indices(fine.topology)
            mid = dolfinx.mesh.compute_midpoints(fine, tdim - 1, facets)[:, :tdim]
            self._boundary_tree = cKDTree(mid) if len(mid) else None
        dofs = self.coarse_space.cell_dofs(local_cells, cells)
        self.cell_dofs = {int(c): d for c, d in zip(cells, dofs)}
        self.local_index = {int(c): int(lc) for c, lc in zip(cells, local_cells)}

    # ------------------------------------------------------------------ meshes
    def patch_mesh(self, shape: tuple[int, ...], keep_sub: int | None = None) -> PatchMesh:
        """The (cached) patch mesh of a shape; ``keep_sub``: one Kuhn simplex only."""
        key = (tuple(shape), keep_sub)
        if key not in self.meshes:
            self.meshes[key] = PatchMesh(self.hierarchy, self.problem, tuple(shape), keep_sub)
        return self.meshes[key]

    def coarse_cell(self, cell: int) -> PatchMesh:
        """The (cached) mesh of coarse cell ``cell``'s fine cells, moved onto the cell.

        Structured hierarchies: a box of M^d fine squares, or one Kuhn simplex of it.
        """
        h = self.hierarchy
        sq, sub = h.coarse_square(cell)
        K = self.patch_mesh((h.M,) * h.dim, sub if h.n_sub > 1 else None)
        K.move_to(h.lower + np.array(sq) * h.M * h.h)
        return K

    def cell_mesh(self, cell: int) -> CellMesh:
        """K's fine cells on COMM_SELF (unstructured hierarchies; one mesh per cell)."""
        self._collect()
        h = self.hierarchy
        cells = h.fine_cells(cell)
        coords = h.fine.geometry.x[h.fine.geometry.dofmaps[0][cells], : h.fine.geometry.dim]
        return CellMesh(self, coords, cells, what=f"coarse cell {cell}")

    def patch_cell_mesh(self, cell: int) -> CellMesh:
        """The oversampling patch of (local) coarse cell ``cell`` on COMM_SELF.

        Unstructured hierarchies, after :meth:`gather_patches`.
        """
        self._collect()
        return CellMesh(self, self.patch_coords[int(cell)], what=f"patch of coarse cell {cell}")

    def _collect(self) -> None:
        self._n_cell_meshes += 1
        if self._n_cell_meshes % 32 == 0:  # COMM_SELF meshes hold duplicated communicators
            gc.collect()

    def on_domain_boundary(self, points: np.ndarray) -> np.ndarray:
        """Whether facet midpoints ``points`` (n, d) lie on a facet of ∂Ω of this rank."""
        if self._boundary_tree is None:
            return np.zeros(len(points), dtype=bool)
        dist, _ = self._boundary_tree.query(points)
        return dist < 1e-9 * float(self.hierarchy.H[0])

    def gather_patches(self, layers: int) -> None:
        r"""Collect the fine cells of every owned coarse cell's patch (collective).

        The patch of K is K plus ``layers`` layers of vertex neighbours. The coarse cells'
        vertices are all-gathered (the coarse mesh is small) to find the patches; the fine
        cells of patch cells owned elsewhere come in one exchange (``alltoall``).
        """
        h = self.hierarchy
        comm = h.comm
        n_owned = h.coarse.topology.index_map(h.dim).size_local
        verts = np.array([h.coarse_vertices(c) for c in range(n_owned)]).reshape(
            n_owned, -1, h.dim)
        gathered = comm.allgather(verts)
        owner = np.concatenate([np.full(len(v), r) for r, v in enumerate(gathered)])
        local = np.concatenate([np.arange(len(v)) for v in gathered])
        first = np.cumsum([0] + [len(v) for v in gathered])
        allv = np.concatenate([v for v in gathered if len(v)]) if len(owner) else \
            np.zeros((0, 1, h.dim))
        tol = 1e-9 * float(h.H[0])
        keys = np.round(allv.reshape(-1, h.dim) / tol).astype(np.int64)
        _, vid = np.unique(keys, axis=0, return_inverse=True)
        n_cells, nv = allv.shape[:2]
        c2v = sp.csr_matrix((np.ones(n_cells * nv), (np.repeat(np.arange(n_cells), nv),
                                                     vid.ravel())))
        adjacent = (c2v @ c2v.T).tocsr()
        mine = first[comm.rank] + np.arange(n_owned)
        patches = {}
        for g in mine:
            members = np.zeros(n_cells, dtype=bool)
            members[g] = True
            for _ in range(layers):
                members |= (adjacent @ members.astype(float)) > 0
            patches[int(g - first[comm.rank])] = np.flatnonzero(members)
        # one exchange: the fine cells of the patch cells owned by other ranks
        wanted = np.unique(np.concatenate(list(patches.values()))) if patches else \
            np.zeros(0, dtype=int)
        requests = [wanted[(owner[wanted] == r)] for r in range(comm.size)]
        asked = comm.alltoall([local[w] for w in requests])
        geo = h.fine.geometry

        def fine_coords(c):
            return geo.x[geo.dofmaps[0][h.fine_cells(int(c))], : geo.dim]

        replies = comm.alltoall([[fine_coords(c) for c in cs] for cs in asked])
        coords = {}
        for r, cs in enumerate(requests):
            for g, xc in zip(cs, replies[r]):
                coords[int(g)] = xc
        self.patch_coords = {c: np.concatenate([coords[int(g)] for g in members])
                             for c, members in patches.items()}

    def fine_numbering(self):
        """The :class:`~msfem.transfer.LatticeNumbering` of the fine space (cached).

        Collective on the first call.
        """
        from msfem.transfer import LatticeNumbering

        if self._numbering is None:
            self._numbering = LatticeNumbering(self.problem.function_space(self.hierarchy.fine),
                                               self.hierarchy)
        return self._numbering

    def fine_dof_coordinates(self) -> tuple[dolfinx.fem.FunctionSpace, np.ndarray]:
        """The distributed fine space and its dof coordinates (cached)."""
        if self._fine_dofs is None:
            Vf = self.problem.function_space(self.hierarchy.fine)
            self._fine_dofs = (Vf, Vf.tabulate_dof_coordinates()[:, : self.hierarchy.dim])
        return self._fine_dofs

    def extract_patches(self, placements: list[tuple[PatchMesh, tuple[int, ...]]]) -> None:
        """Prepare the patches' blocks from one assembly of the fine operator (collective).

        The distributed fine operator :math:`A_h` is assembled once; this rank keeps the
        rows and columns of the lattice box covering its patches (``placements``: patch
        mesh, first fine square) as one sequential matrix (one ``MatCreateSubMatrices``
        call on several ranks), from which :meth:`dirichlet` takes each patch's
        :math:`A_{II}` and :math:`A_{IB}` (rows and columns in the patch mesh's order)
        without communication: an interior dof's support lies in the patch, so these
        blocks equal those of the patch assembled on its own.
        """
        h = self.hierarchy
        deg = self.problem.degree
        with dolfinx.common.Timer("~msfem: offline (fine operator, patch box)"):
            numbering = self.fine_numbering()
            V = numbering.V
            A = dolfinx.fem.petsc.assemble_matrix(self.problem.discretise(V).a)
            A.assemble()
            # global blocks of the lattice box covering all patches: one AO lookup
            if placements:
                lo_box = np.min([lo for _, lo in placements], axis=0)
                hi_box = np.max([np.array(lo) + pm.shape for pm, lo in placements], axis=0)
            else:
                lo_box = hi_box = np.zeros(h.dim, dtype=int)
            box_shape: tuple[int, ...] = tuple(
                int(n) for n in np.asarray((hi_box - lo_box) * deg + 1).ravel())
            nodes = np.array(np.unravel_index(np.arange(int(np.prod(box_shape))),
                                              box_shape)) + (lo_box * deg)[:, None]
            box_ids = np.ravel_multi_index(tuple(nodes), np.array(h.N) * h.M * deg + 1,
                                           order="F")  # lattice ids (hierarchy.lattice_ids)
            box_blocks = numbering.blocks(box_ids)
            if h.comm.size == 1:  # the operator is sequential: index it directly
                self.box_A, self.box_blocks = A, box_blocks
            else:
                isU = _index_set(expand_blocks(box_blocks, self.bs))
                self.box_A = A.createSubMatrices([isU], [isU])[0]
                self.box_blocks = np.arange(len(box_blocks), dtype=np.int64)
                for obj in (isU, A):
                    obj.destroy()
            self.box_lo, self.box_shape = np.asarray(lo_box), box_shape
            self.box_patches = {(id(pm), tuple(lo)) for pm, lo in placements}

    def _box_dofs(self, pm: PatchMesh, lo: tuple[int, ...]) -> np.ndarray:
        """Rows of the box operator of patch mesh ``pm`` at ``lo`` (in the mesh's dof order)."""
        deg = self.problem.degree
        assert self.box_A is not None, "extract_patches() prepares the box operator"
        at = np.ravel_multi_index(
            tuple((pm.dof_index + (np.array(lo) - self.box_lo) * deg).T), self.box_shape)
        return expand_blocks(self.box_blocks[at], self.bs)

    def patch_matrix(self, pm: PatchMesh, lo: tuple[int, ...]) -> PETSc.Mat:
        """The fine matrix of ``a`` on the patch mesh ``pm`` placed at fine square ``lo``.

        Taken from the box operator when :meth:`extract_patches` prepared the placement
        (rows of dofs on the patch boundary then hold couplings from outside the patch, so
        only its interior rows equal the patch's own matrix), else assembled on the patch
        mesh. The caller destroys it.
        """
        if (id(pm), tuple(lo)) in self.box_patches:
            isU = _index_set(self._box_dofs(pm, lo))
            assert self.box_A is not None
            A = self.box_A.createSubMatrix(isU, isU)
            isU.destroy()
            return A
        pm.move_to(self.hierarchy.lower + np.array(lo) * self.hierarchy.h)
        return pm.assemble().copy()

    def _box_blocks(self, pm: PatchMesh, lo: tuple[int, ...]) -> tuple[PETSc.Mat, sp.csr_matrix]:
        """A_II (PETSc) and A_IB (CSR) of patch mesh ``pm`` at ``lo`` from the box operator."""
        dofs = self._box_dofs(pm, lo)
        assert self.box_A is not None
        isI, isB = _index_set(dofs[pm.interior]), _index_set(dofs[pm.boundary])
        A_II = self.box_A.createSubMatrix(isI, isI)
        A_IB = self.box_A.createSubMatrix(isI, isB)
        A_IB_csr = to_csr(A_IB)
        for obj in (A_IB, isI, isB):
            obj.destroy()
        return A_II, A_IB_csr

    # ------------------------------------------------------------------ solvers
    def solver(self, pm: PatchMesh | None = None) -> DirichletSolver:
        """The local Dirichlet solver of patch mesh ``pm``, or a new one (``pm=None``).

        One per patch shape: the symbolic factorisation is reused. Cholesky when the
        problem is symmetric (:attr:`~msfem.problem.Problem.is_symmetric`), else LU;
        PETSc's native factorisation with nested dissection; prefix ``msfem_local_``
        (``petsc_options`` override).
        """
        if pm is not None and pm.solver is not None:
            return pm.solver
        s = DirichletSolver(symmetric=self.problem.is_symmetric, prefix="msfem_local_",
                            petsc_options=self.petsc_options)
        if pm is not None:
            pm.solver = s
        return s

    def factorise(self, solver: DirichletSolver, A_II: PETSc.Mat, what: str | Where,
                  same_pattern: bool = False) -> None:
        """Factorise :math:`A_{II}` in ``solver`` (timed; errors name the cell).

        ``same_pattern``: A_II has the sparsity of the solver's previous operator.
        """
        with self._factorising(solver, what):
            solver.set_operator(A_II, same_pattern=same_pattern)

    @contextlib.contextmanager
    def _factorising(self, solver: DirichletSolver, what: str | Where) -> Iterator[None]:
        """Time a factorisation in ``solver``; its errors name the cell."""
        t0 = solver.petsc_seconds
        try:
            yield
        except solvers.SolverError as err:
            raise solvers.SolverError(f"local problem on {what}: {err}. Check that the "
                                      f"coefficient is positive there.") from err
        finally:
            self.t_petsc += solver.petsc_seconds - t0

    def solve(self, solver: DirichletSolver, rhs: np.ndarray, what: str | Where) -> np.ndarray:
        """Solve with the factorisation in ``solver`` for all columns of ``rhs`` (timed)."""
        t0 = solver.petsc_seconds
        try:
            X = solver.solve(np.ascontiguousarray(rhs))
        except solvers.SolverError as err:
            raise solvers.SolverError(f"local problem on {what}: {err}") from err
        self.t_petsc += solver.petsc_seconds - t0
        return X

    def dirichlet_batch(self, pm: PatchMesh, data: np.ndarray, G: np.ndarray,
                        what: str) -> np.ndarray:
        r"""The Dirichlet problems of many placements of one patch mesh at once.

        ``data[k]`` are the values of the k-th placement's matrix (the sparsity of ``pm``),
        ``G`` the boundary data of all placements stacked (``B * n_boundary`` rows). The
        interior blocks form one block-diagonal matrix: one factorisation (symbolic part
        reused for batches of the same size) and one solve for every placement.
        Returns Ψ, shape (B, n_dofs, n_functions).
        """
        B = len(data)
        nI, nB = len(pm.interior), len(pm.boundary)
        psi = np.empty((B, nI + nB, G.shape[1]))
        psi[:, pm.boundary] = G.reshape(B, nB, -1)
        if nI == 0:  # (a coarse tetrahedron with M = 1 has no interior dof)
            return psi
        chunk = max(1, self.BATCH_UNKNOWNS // nI)  # factorisations of ~2k unknowns
        if B > chunk:  # equal chunks: one symbolic factorisation serves them all
            chunk = -(-B // -(-B // chunk))
            G = G.reshape(B, nB, -1)
            for k in range(0, B, chunk):
                part = slice(k, k + chunk)
                psi[part] = self.dirichlet_batch(pm, data[part],
                                                 G[part].reshape(-1, G.shape[2]), what)
            return psi
        II, IB = (self.block_diagonal(pm, B, block) for block in ("II", "IB"))
        key = (id(pm), B)
        solver = self.batch_solvers.get(key)
        if solver is None:
            solver = self.batch_solvers[key] = self.solver()
        with self._factorising(solver, what):  # (numeric phase only after the first batch)
            solver.set_values(II.indptr, II.indices, II.values(data))
        X = self.solve(solver, -(IB.csr(data) @ G), what)
        psi[:, pm.interior] = X.reshape(B, nI, -1)
        return psi

    def block_diagonal(self, pm: PatchMesh, B: int, block: str) -> BlockDiagonal:
        """The (cached) pattern of ``B`` copies of block ``"II"``/``"IB"``/``"all"`` of ``pm``."""
        key = (id(pm), B, block)
        if key not in self.batch_patterns:
            self.batch_patterns[key] = BlockDiagonal(pm.block_pattern(None, block), B,
                                                     len(pm.block_pattern_arrays()[0]))
        return self.batch_patterns[key]

    # ------------------------------------------------------------------ patches from K
    def cell_integrals_only(self) -> bool:
        """Whether the bilinear form has cell integrals only.

        Then a patch's matrix is the sum of its cells' (facet integrals would couple
        across the cells' faces).
        """
        if "cell integrals only" not in self.region_cache:
            h = self.hierarchy
            K = self.patch_mesh((h.M,) * h.dim)
            self.region_cache["cell integrals only"] = all(
                itg.integral_type() == "cell" for itg in K.disc.a_ufl.integrals())
        return self.region_cache["cell integrals only"]

    def cell_values(self, cells: np.ndarray | list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(matrix values, load) of coarse cells ``cells`` on their K-mesh (cached).

        Each cell is assembled once per rank and build (:attr:`region_cache`), in the
        pattern of :meth:`PatchMesh.block_pattern_arrays` of the K-mesh.
        """
        h = self.hierarchy
        cache = self.region_cache.setdefault("K values", {})
        missing = [c for c in dict.fromkeys(int(c) for c in cells) if c not in cache]
        if missing:
            K = self.patch_mesh((h.M,) * h.dim)
            squares = np.array(np.unravel_index(np.array(missing) // h.n_sub, h.N,
                                                order="F")).T
            for c, sq in zip(missing, squares):
                K.move_to(h.lower + sq * h.M * h.h)
                cache[c] = (K.assemble_values(), K.load())
        return [cache[int(c)] for c in cells]

    def summed_patch_values(self, S: PatchMesh, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        r"""CSR values (pattern of ``S``) of the fine matrix of :math:`a` on a box patch.

        The patch is the union of the coarse squares ``lo <= sq < hi`` (per axis), so
        :math:`A_S = \sum_j R_j^T A_{K_j} R_j` -- every fine cell assembled once per rank
        (:meth:`cell_values`), no assembly on the patch. Quadrilateral/hexahedral
        hierarchies (one coarse cell per square).
        """
        return self.summed_patches_values(S, np.asarray(lo)[None], np.asarray(hi)[None])[0]

    def box_cells(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Coarse cells of the boxes ``lo <= square < hi`` of one shape, (B, squares).

        ``lo``, ``hi``: (B, d); the squares of each box first axis fastest (one coarse cell
        per square: quadrilateral/hexahedral hierarchies).
        """
        shape = hi[0] - lo[0]
        rel = np.array(np.unravel_index(np.arange(int(np.prod(shape))), tuple(shape),
                                        order="F"))  # (d, squares)
        squares = lo[:, :, None] + rel[None]  # (B, d, squares)
        return np.ravel_multi_index(tuple(np.moveaxis(squares, 1, 0)), self.hierarchy.N,
                                    order="F")

    def summed_patches_values(self, S: PatchMesh, lo: np.ndarray, hi: np.ndarray
                              ) -> np.ndarray:
        """:meth:`summed_patch_values` of several patches of S's shape: ``lo``, ``hi`` (B, d).

        One sparse product for all of them; returns (B, nnz of S's pattern).
        """
        shape = hi[0] - lo[0]
        cells = self.box_cells(lo, hi)
        key = ("sum", S.shape)
        if key not in S.cache:
            S.cache[key] = self._summation(S, shape)
        T = S.cache[key]
        V = np.stack([v for v, _ in self.cell_values(cells.ravel())]).reshape(len(lo), -1)
        return np.ascontiguousarray((T @ V.T).T)

    def cell_dofs_in(self, S: PatchMesh, shape: np.ndarray) -> np.ndarray:
        """S's dof of every K-mesh dof of each coarse square of S, (squares, n_K).

        S is the box of ``shape`` coarse squares (first axis fastest); quadrilateral or
        hexahedral hierarchies.
        """
        h = self.hierarchy
        deg, bs = self.problem.degree, self.bs
        K = self.patch_mesh((h.M,) * h.dim)
        k_dofs = np.arange(K.matrix_shape[0])
        squares = np.array(np.unravel_index(np.arange(int(np.prod(shape))), tuple(shape),
                                            order="F")).T
        out = np.empty((len(squares), len(k_dofs)), dtype=np.int64)
        for i, sq in enumerate(squares):
            node = K.dof_index[k_dofs // bs] + sq * h.M * deg
            blocks = S.lookup[np.ravel_multi_index(tuple(node.T), S.node_shape, order="F")]
            out[i] = blocks * bs + k_dofs % bs
        return out

    def _summation(self, S: PatchMesh, shape: np.ndarray) -> sp.csr_matrix:
        """The 0/1 matrix adding the K-matrices of ``shape`` coarse squares into S's pattern.

        Columns: the K-matrices' values one square after the other, first axis fastest.
        """
        h = self.hierarchy
        K = self.patch_mesh((h.M,) * h.dim)
        k_indices, k_indptr = K.block_pattern_arrays()
        nS = S.matrix_shape[0]
        k_rows = np.repeat(np.arange(K.matrix_shape[0]), np.diff(k_indptr))
        # K's entries as (row, column) keys of S, K at each square's offset
        mapped = [to_S[k_rows] * nS + to_S[k_indices] for to_S in self.cell_dofs_in(S, shape)]
        if "csr" not in S._patterns:  # S's pattern: the union of its cells' (no form needed)
            union = np.unique(np.concatenate(mapped))
            S._patterns["csr"] = ((union % nS).astype(PETSc.IntType), np.searchsorted(
                union // nS, np.arange(nS + 1)).astype(PETSc.IntType))
        s_indices, s_indptr = S.block_pattern_arrays()
        s_keys = np.repeat(np.arange(nS), np.diff(s_indptr)) * nS + s_indices  # sorted
        rows, cols = [], []
        for j, keys in enumerate(mapped):
            at = np.searchsorted(s_keys, keys)
            assert np.array_equal(s_keys[np.minimum(at, len(s_keys) - 1)], keys), \
                "K's pattern is not contained in the patch's"
            rows.append(at)
            cols.append(j * len(k_indices) + np.arange(len(k_indices)))
        rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.ones(len(rows_a)), (rows_a, cols_a)),
                             shape=(len(s_indices), len(mapped) * len(k_indices)))

    def dirichlet_values(self, pm: PatchMesh, values: np.ndarray, G: np.ndarray,
                         what: str | Where) -> np.ndarray:
        r""":meth:`dirichlet` with the patch matrix given by its CSR ``values``."""
        pos, indptr, indices, _ = pm.block_pattern(None, "II")
        psi = np.empty((len(pm.interior) + len(pm.boundary), G.shape[1]))
        psi[pm.boundary] = G
        if not len(pm.interior):
            return psi
        solver = self.solver(pm)
        with self._factorising(solver, what):
            solver.set_values(indptr, indices, values[pos])
        pos, indptr, indices, shape = pm.block_pattern(None, "IB")
        A_IB = sp.csr_matrix((values[pos], indices, indptr), shape=shape)
        psi[pm.interior] = self.solve(solver, -(A_IB @ G), what)
        return psi

    def interior_solve(self, pm: PatchMesh, rhs: np.ndarray, what: str) -> np.ndarray:
        """Solve again with the last factorisation on ``pm`` (e.g. a load on the interior)."""
        return self.solve(self.solver(pm), rhs, what)

    def dirichlet(self, pm: PatchMesh, G: np.ndarray, what: str | Where,
                  lo: tuple[int, ...] | None = None) -> tuple[np.ndarray, sp.csr_matrix | None]:
        r"""Solve :math:`A_{II}\Psi_I = -A_{IB}G`, :math:`\Psi_B = G` on the patch mesh.

        Returns Ψ (all dofs × functions) and the patch matrix A (CSR). With ``lo`` (the
        patch's first fine square) of a patch prepared by :meth:`extract_patches`, the
        blocks come from the fine operator and the patch matrix is not formed (``None``).
        """
        A_csr = None
        if lo is not None and (id(pm), tuple(lo)) in self.box_patches:
            A_II, A_IB = self._box_blocks(pm, lo)
        else:
            A = pm.assemble()
            pm.A_II = A_II = A.createSubMatrix(pm.isI, pm.isI, submat=pm.A_II)
            A_csr = to_csr(A)
            A_IB = pm.interior_boundary_block(A_csr)
        # one patch mesh: the same sparsity, extracted or assembled, in the same order
        psi = self._extend(self.solver(pm), A_II, A_IB, G, pm, what, same_pattern=True)
        if A_II is not pm.A_II:
            A_II.destroy()
        return psi, A_csr

    def _extend(self, solver: DirichletSolver, A_II: PETSc.Mat, A_IB: sp.csr_matrix,
                G: np.ndarray, mesh: PatchMesh | CellMesh, what: str | Where,
                same_pattern: bool = False) -> np.ndarray:
        r""":math:`\Psi_B = G`, :math:`\Psi_I = -A_{II}^{-1} A_{IB} G` on ``mesh``."""
        psi = np.empty((len(mesh.interior) + len(mesh.boundary), G.shape[1]))
        psi[mesh.boundary] = G
        if len(mesh.interior):  # (a coarse tetrahedron with M = 1 has no interior dof)
            self.factorise(solver, A_II, what, same_pattern=same_pattern)
            psi[mesh.interior] = self.solve(solver, -(A_IB @ G), what)
        return psi

    def dirichlet_unstructured(self, cm: CellMesh, A: PETSc.Mat, A_csr: sp.csr_matrix,
                               G: np.ndarray, what: str | Where) -> np.ndarray:
        """The same Dirichlet solve on a :class:`CellMesh` (its own factorisation).

        ``A`` is the mesh's matrix and ``A_csr`` its CSR copy.
        """
        isI = _index_set(cm.interior)
        A_II = A.createSubMatrix(isI, isI)
        solver = self.solver()
        psi = self._extend(solver, A_II, A_csr[cm.interior][:, cm.boundary], G, cm, what)
        for obj in (solver, A_II, isI):
            obj.destroy()
        return psi
