r"""Multiscale basis functions: local problems on patches, one pipeline for every variant.

For a coarse cell K with vertices :math:`x_1, \dots, x_m` and a patch :math:`S \supseteq K`
(K itself, or K plus oversampling layers, clipped to Ω), the *local problems* are

.. math::
    a_S(\psi_j, v) = 0 \quad \forall v \in V_{h,0}(S), \qquad \psi_j = g_j \ \text{on}\ \partial S,

solved on the fine sub-grid of S (one factorisation per patch, all right-hand sides at
once). The basis of K is the combination

.. math::
    \phi_i = \sum_j c_{ij}\, \psi_j|_K, \qquad C = V^{-1},\ V_{kj} = \psi_j(x_k),

so that :math:`\phi_i(x_k) = \delta_{ik}`. A :class:`Variant` is the choice of

* ``"standard"`` has no local problems: :math:`\phi_i = N_i`, the coarse nodal
  functions, i.e. the standard coarse FEM with the fine-scale quadrature of the form,
* the patch (``oversampling``: 0 layers → S = K, conforming),
* the boundary data :math:`g_j` (``"polynomial"``: a basis of the coarse element's space,
  P1 :math:`\{1, \xi_1, \dots\}` or Q1 :math:`\{1, \xi_1, \xi_2, \xi_1\xi_2, \dots\}`,
  times unit vectors for vector problems; ``"oscillatory"``: Hou--Wu's reduced 1D problems
  along the edges of ∂S),
* the test functions (``"galerkin"``: :math:`\phi_i`; ``"petrov-galerkin"``: the coarse
  nodal functions :math:`N_i`, Hou, Wu & Zhang, Comm. Math. Sci. 2 (2004)).

=================  ===========  ==========  ===============  ============================
variant            patch        boundary    test             reference
standard           --           --          Galerkin         coarse P1/Q1 FEM (LFEM)
linear             K            polynomial  Galerkin         Hou & Wu (1997) MFEM-L
oscillatory        K            oscillatory Galerkin         Hou & Wu (1997) MFEM-O
oversampling       S ⊋ K        polynomial  Galerkin         Hou & Wu (1997) §3.4; EHW (2000)
petrov-galerkin    S ⊋ K        polynomial  Petrov-Galerkin  Hou, Wu & Zhang (2004)
=================  ===========  ==========  ===============  ============================

Local meshes live on ``COMM_SELF``: a patch mesh is built once per patch *shape* and
translated to every coarse cell (coefficients are functions of the global coordinates),
so a rank touches only the coarse cells it owns and never the global fine mesh.

Dirichlet data on ∂Ω (subtlety (a) of REFERENCES.md §2): a clipped patch gets the same
boundary data :math:`g_j` on ∂S ∩ ∂Ω as elsewhere, as in Hou & Wu's original method; the
coarse Dirichlet condition then holds at the coarse vertices, and between them the
oversampled basis need not vanish on ∂Ω. That trace error is part of the broken error.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dolfinx
import dolfinx.fem.petsc
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
from msfem.coefficients import Field
from msfem.mesh import (
    Oversampling,
    Patch,
    RefinedHierarchy,
    StructuredHierarchy,
    _locate_sub,
    create_lattice_mesh,
)
from msfem.problem import Problem


@dataclass(frozen=True)
class Variant:
    """An MsFEM variant: boundary data of the local problems, test space, oversampling."""

    name: str
    boundary: str  # "polynomial" | "oscillatory"
    test: str  # "galerkin" | "petrov-galerkin"
    oversampled: bool  # accepts oversampling layers


VARIANTS: dict[str, Variant] = {
    "standard": Variant("standard", "none", "galerkin", False),
    "linear": Variant("linear", "polynomial", "galerkin", False),
    "oscillatory": Variant("oscillatory", "oscillatory", "galerkin", False),
    "oversampling": Variant("oversampling", "polynomial", "galerkin", True),
    "petrov-galerkin": Variant("petrov-galerkin", "polynomial", "petrov-galerkin", True),
}


def get_variant(name: str, boundary: str | None = None) -> Variant:
    """Look up a variant by name (``boundary`` overrides its boundary data)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown MsFEM variant {name!r}; valid variants: {sorted(VARIANTS)}")
    v = VARIANTS[name]
    if boundary is not None:
        if boundary not in ("polynomial", "oscillatory"):
            raise ValueError(f"boundary data {boundary!r} is not 'polynomial' or 'oscillatory'")
        v = Variant(v.name, boundary, v.test, v.oversampled)
    return v


@dataclass
class ElementBasis:
    r"""The multiscale basis of one coarse cell K, stored as element data.

    Attributes:
        cell: lattice id of K.
        coarse_dofs: local (unblocked) coarse dof index of each basis function.
        lattice: global lattice ids of the fine dof blocks of K (K-mesh order).
        phi: basis values, shape (n_fine_dofs_K * bs, n_basis) (trial functions).
        A: element matrix :math:`a_K(\phi_j, w_i)`; b: element load :math:`L_K(w_i)`.
        A_K: fine matrix of :math:`a` restricted to the cells of K (for energy norms).
        K_key: key of the K-mesh in the cache (for its mass and stiffness matrices).
        fine_blocks: unstructured hierarchies: global fine dof blocks of K (instead of
            lattice ids); metrics: their mass and stiffness matrices (no cache).
    """

    cell: int
    coarse_dofs: np.ndarray
    lattice: np.ndarray | None
    phi: np.ndarray
    A: np.ndarray
    b: np.ndarray
    A_K: sp.csr_matrix
    K_key: tuple | None
    fine_blocks: np.ndarray | None = None
    metrics: tuple[sp.csr_matrix, sp.csr_matrix] | None = None
    vertex_blocks: np.ndarray | None = None


class _LocalMesh:
    """A patch mesh on COMM_SELF, its forms and index sets, translated to each cell."""

    def __init__(self, space: MultiscaleSpace, shape: tuple[int, ...], keep_sub: int | None):
        h = space.hierarchy
        self.shape = shape
        keep = None
        if keep_sub is not None:
            M, split = h.M, h.split
            centroid = split.mean(axis=1)  # (n_sub, d)

            def keep(square, sub):
                t = (square + centroid[sub].T) / M
                return _locate_sub(t, split) == keep_sub

        self.mesh, _ = create_lattice_mesh(MPI.COMM_SELF, h.cell_type, shape, h.h, keep=keep)
        self.x0 = self.mesh.geometry.x.copy()
        self.V = space.problem.function_space(self.mesh)
        self.bs = self.V.dofmap.index_map_bs
        deg = space.problem.degree
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
        n = len(xd)
        interior = np.setdiff1d(np.arange(n), self.boundary_blocks)
        self.boundary = expand_blocks(self.boundary_blocks, self.bs)
        self.interior = expand_blocks(interior, self.bs)
        self._domain = (h.lower, h.upper)
        self.disc = space.problem.discretise(self.V, boundary_facets=self._boundary_facets)
        self.A = dolfinx.fem.petsc.create_matrix(self.disc.a)
        self.isI = PETSc.IS().createGeneral(self.interior.astype(np.int32), comm=MPI.COMM_SELF)
        self.A_II: PETSc.Mat | None = None
        self.ksp: PETSc.KSP | None = None
        self.origin = np.zeros(h.dim)
        self._domain = (h.lower, h.upper)
        self._neumann_key: tuple = ()
        self.M_K: sp.csr_matrix | None = None
        self.L_K: sp.csr_matrix | None = None
        self.rel_coords = self.dof_index * (h.h / deg)
        self._ib: tuple | None = None
        self.cache: dict[tuple, Any] = {}  # position-independent data (boundary data, ...)

    def _boundary_facets(self, marker) -> np.ndarray:
        """Exterior facets of this local mesh lying on ∂Ω where ``marker`` holds."""
        tdim = self.mesh.topology.dim
        mid = dolfinx.mesh.compute_midpoints(self.mesh, tdim - 1, self.exterior).T
        lo, hi = self._domain
        d = len(lo)
        tol = 1e-10 * float(np.max(hi - lo))
        on = np.any(np.abs(mid[:d] - lo[:, None]) < tol, axis=0) | np.any(
            np.abs(mid[:d] - hi[:, None]) < tol, axis=0)
        on &= np.asarray(marker(mid), dtype=bool)
        return self.exterior[on].astype(np.int32)

    def move_to(self, origin: np.ndarray, problem: Problem) -> None:
        """Translate the mesh so that its lattice origin sits at ``origin``."""
        d = len(origin)
        self.mesh.geometry.x[:, :d] = self.x0[:, :d] + origin
        self.origin = origin
        if problem.neumann:  # which facets carry Neumann data depends on the position
            key = tuple(tuple(self._boundary_facets(bc.marker)) for bc in problem.neumann)
            if key != self._neumann_key:
                self.disc = problem.discretise(self.V, boundary_facets=self._boundary_facets)
                self._neumann_key = key
        self.disc.refresh()

    def assemble(self) -> PETSc.Mat:
        """Assemble the fine matrix of ``a`` on the local mesh (no boundary conditions)."""
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.disc.a)
        self.A.assemble()
        return self.A

    def load(self) -> np.ndarray:
        """Assemble the fine load vector of ``L`` on the local mesh."""
        b = dolfinx.fem.assemble_vector(self.disc.L)
        return b.array.copy()

    def dof_coordinates(self) -> np.ndarray:
        """Coordinates (n_blocks, d) of the dofs in the current position."""
        return self.rel_coords + self.origin

    def interior_boundary_block(self, A: sp.csr_matrix) -> sp.csr_matrix:
        """The block A[interior, boundary] (index pattern cached: the sparsity is fixed)."""
        if self._ib is None:
            probe = sp.csr_matrix((np.arange(A.nnz, dtype=float), A.indices, A.indptr),
                                  shape=A.shape)
            sub = probe[self.interior][:, self.boundary].tocsr()
            sub.sort_indices()
            self._ib = (sub.data.astype(np.int64), sub.indices, sub.indptr, sub.shape)
        idx, indices, indptr, shape = self._ib
        return sp.csr_matrix((A.data[idx], indices, indptr), shape=shape)

    def metric_matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Mass and stiffness (∫u·v, ∫∇u:∇v) matrices of this mesh (translation invariant)."""
        if self.M_K is None:
            u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
            self.M_K = _csr(dolfinx.fem.form(ufl.inner(u, v) * ufl.dx))
            self.L_K = _csr(dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx))
        return self.M_K, self.L_K


def _csr(form) -> sp.csr_matrix:
    A = dolfinx.fem.assemble_matrix(form)
    return A.to_scipy()


def _blocked(scalar: np.ndarray, bs: int) -> np.ndarray:
    """Scalar functions (n, m) to vector ones (n*bs, m*bs): one copy per component."""
    if bs == 1:
        return scalar
    out = np.zeros((scalar.shape[0] * bs, scalar.shape[1] * bs))
    for c in range(bs):
        out[c::bs, c::bs] = scalar
    return out


def expand_blocks(blocks: np.ndarray, bs: int) -> np.ndarray:
    """Block indices to scalar (unblocked) indices ``block * bs + c``, c = 0..bs-1."""
    return (np.asarray(blocks, dtype=np.int64)[:, None] * bs + np.arange(bs)).ravel()


def _petsc_to_csr(A: PETSc.Mat) -> sp.csr_matrix:
    indptr, indices, data = A.getValuesCSR()
    return sp.csr_matrix((data, indices, indptr), shape=A.getSize())


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


class MultiscaleSpace:
    r"""The multiscale space :math:`V_H^{ms} = \mathrm{span}\{\phi_i\}` of a problem.

    Args:
        hierarchy: a :class:`~msfem.mesh.StructuredHierarchy`.
        problem: the problem whose bilinear form defines the local problems.
        variant: ``"linear"``, ``"oscillatory"``, ``"oversampling"`` or
            ``"petrov-galerkin"`` (see the module docstring).
        oversampling: patch size: an :class:`~msfem.mesh.Oversampling`, or an int
            (coarse layers). Default for the oversampled variants: one coarse layer.
        boundary: override the variant's boundary data (``"polynomial"``/``"oscillatory"``).
        edge_coefficient: name of the coefficient driving the oscillatory edge problems
            (default: the first coefficient of the problem).
        petsc_options: options of the local LU solves (prefix ``msfem_local_``).

    The basis of the coarse cells owned by this rank is computed by :meth:`build`.
    """

    def __init__(self, hierarchy: StructuredHierarchy, problem: Problem, variant: str = "linear",
                 oversampling: Oversampling | int | None = None, *, boundary: str | None = None,
                 edge_coefficient: str | None = None,
                 petsc_options: Mapping[str, Any] | None = None):
        self.hierarchy, self.problem = hierarchy, problem
        self.variant = get_variant(variant, boundary)
        self.unstructured = isinstance(hierarchy, RefinedHierarchy)
        if not (self.unstructured or isinstance(hierarchy, StructuredHierarchy)):
            raise TypeError("MultiscaleSpace needs a StructuredHierarchy or a RefinedHierarchy")
        if isinstance(oversampling, (int, np.integer)) and not isinstance(oversampling, bool):
            oversampling = Oversampling(coarse_layers=int(oversampling))
        if oversampling is None:
            oversampling = Oversampling(coarse_layers=1 if self.variant.oversampled
                                        and not self.unstructured else 0)
        self.oversampling = oversampling
        if self.unstructured:
            if oversampling.layers(1) > 0:
                raise ValueError(
                    "oversampling is implemented on structured hierarchies only; on an "
                    "unstructured (gmsh) hierarchy use oversampling=0 (variants standard, "
                    "linear, oscillatory, petrov-galerkin without oversampling)")
            if problem.neumann:
                raise ValueError("Neumann data with an unstructured hierarchy is not supported "
                                 "by the multiscale basis yet; use a StructuredHierarchy")
            self._init_common(problem, edge_coefficient, petsc_options)
            return
        self.layers = oversampling.layers(hierarchy.M)
        if self.layers > 0 and not self.variant.oversampled:
            raise ValueError(
                f"variant {self.variant.name!r} has no oversampling (got {oversampling}); use "
                f"variant 'oversampling' or 'petrov-galerkin', or set oversampling to 0")
        max_layers = max(n * hierarchy.M for n in hierarchy.N)
        if oversampling.sampling_region is not None:
            if oversampling.sampling_region % hierarchy.M:
                raise ValueError(f"sampling_region = {oversampling.sampling_region} must be a "
                                 f"multiple of M = {hierarchy.M}")
        elif self.layers >= max_layers:
            raise ValueError(
                f"oversampling patch ({self.layers} fine layers) is larger than the domain "
                f"({max_layers} fine cells per direction); choose fewer layers")
        self._init_common(problem, edge_coefficient, petsc_options)

    def _init_common(self, problem: Problem, edge_coefficient: str | None,
                     petsc_options: Mapping[str, Any] | None) -> None:
        hierarchy = self.hierarchy
        if self.unstructured:
            self.layers = 0
        if self.variant.boundary == "oscillatory":
            if hierarchy.dim == 3:
                raise ValueError("oscillatory boundary data is defined by 1D edge problems; in "
                                 "3D the face data is not defined by Hou & Wu -- use 'linear' or "
                                 "'oversampling' for 3D hierarchies")
            if getattr(hierarchy, "n_sub", 1) > 1 and self.layers > 0:
                raise ValueError("oscillatory boundary data on a box-shaped oversampling patch "
                                 "gives 4 functions for a triangle's 3 vertices; use polynomial "
                                 "boundary data with triangles")
            names = list(problem.coefficients)
            if not names:
                raise ValueError("oscillatory boundary data needs a coefficient field")
            self.edge_coefficient = edge_coefficient or names[0]
            if self.edge_coefficient not in problem.coefficients:
                raise ValueError(f"edge_coefficient {edge_coefficient!r} is not one of {names}")
        self.petsc_options = dict(petsc_options or {})
        self.conforming = self.layers == 0
        self.bs = problem.block_size
        self.coarse_space = dolfinx.fem.functionspace(
            hierarchy.coarse, ("Lagrange", 1, problem.shape))
        self._meshes: dict[tuple, _LocalMesh] = {}
        self.elements: list[ElementBasis] = []
        self.timings: dict[str, float] = {}
        self._t_petsc = 0.0
        self._last_region: tuple | None = None
        self.built = False

    def fine_map(self, V: dolfinx.fem.FunctionSpace | None = None):
        """The (cached) :class:`~msfem.coarse.FineMap` of the distributed fine space ``V``.

        It maps between element data and ``V`` (default: the problem's space on the fine mesh).
        """
        from msfem.coarse import FineMap

        cached = getattr(self, "_fine_map", None)
        if V is None:
            V = cached.V if cached is not None else self.problem.function_space(self.hierarchy.fine)
        same = cached is not None and cached.V.mesh is V.mesh and \
            cached.V.ufl_element() == V.ufl_element()  # same mesh + element: same dof layout
        if not same:
            self._fine_map = FineMap(V, self.hierarchy, self)
        return self._fine_map

    # ----------------------------------------------------------------- local meshes
    def _local_mesh(self, shape: tuple[int, ...], keep_sub: int | None) -> tuple[tuple, _LocalMesh]:
        key = (shape, keep_sub)
        if key not in self._meshes:
            self._meshes[key] = _LocalMesh(self, shape, keep_sub)
        return key, self._meshes[key]

    def patch(self, cell: int) -> Patch:
        """The patch S of coarse cell ``cell`` (box around K, or its sampling region)."""
        if self.oversampling.sampling_region is not None:
            return self.hierarchy.sampling_region(cell, self.oversampling.sampling_region)
        return self.hierarchy.patch(cell, self.layers)

    def _factorise(self, lm: _LocalMesh, A: PETSc.Mat, cell: int) -> None:
        lm.A_II = A.createSubMatrix(lm.isI, lm.isI, submat=lm.A_II)
        if lm.ksp is None:
            lm.ksp = solvers.make_ksp(lm.A_II, "msfem_local_", self.petsc_options,
                                      solvers.LOCAL_OPTIONS)
        else:
            lm.ksp.setOperators(lm.A_II)
        try:
            lm.ksp.setUp()
        except PETSc.Error as err:
            raise solvers.SolverError(
                f"local factorisation failed on coarse cell {cell} (vertices "
                f"{self.hierarchy.coarse_vertices(cell).round(6).tolist()}): {err}. Check that "
                f"the coefficient is positive there.") from err

    # ----------------------------------------------------------------- boundary data
    def _boundary_data(self, lm: _LocalMesh, corners: np.ndarray, K_vertices: np.ndarray,
                       center: np.ndarray) -> np.ndarray:
        """Dirichlet data G (n_boundary_dofs, n_functions) on ∂S for the local problems."""
        x = lm.dof_coordinates()[lm.boundary_blocks]
        bs = self.bs
        if self.variant.boundary == "polynomial":  # depends on the position of K in S only
            key = ("G", tuple(np.round((center - lm.origin) / self.hierarchy.h, 6)))
            if key not in lm.cache:
                scalar = polynomial_basis(self.hierarchy.cell_type, (x - center) / self.hierarchy.H)
                lm.cache[key] = _blocked(scalar, bs)
            return lm.cache[key]
        else:
            scalar = self._oscillatory_data(x, corners, box=len(corners) == 2**self.hierarchy.dim
                                            and self.hierarchy.dim > 1)
        return _blocked(scalar, bs)

    def _oscillatory_data(self, x: np.ndarray, corners: np.ndarray, box: bool) -> np.ndarray:
        r"""Hou--Wu oscillatory nodal data on the edges of the polygon ``corners``.

        On each edge e = [x_a, x_b] solve the reduced problem
        :math:`\frac{d}{ds}(a_e \frac{d\phi}{ds}) = 0`, :math:`\phi(x_a) = 1, \phi(x_b) = 0`
        with linear elements on the fine nodes of the edge (element stiffness
        :math:`\bar a_\tau/|\tau|`, :math:`\bar a_\tau` the 3-point Gauss mean of
        :math:`t\cdot a\, t` on the fine segment τ).
        """
        fld: Field = self.problem.coefficients[self.edge_coefficient]
        if not isinstance(fld, Field):
            from msfem.coefficients import ConstantField
            fld = ConstantField(fld)
        n_c = len(corners)
        data = np.zeros((len(x), n_c))
        gauss = np.array([0.5 - np.sqrt(15) / 10, 0.5, 0.5 + np.sqrt(15) / 10])
        weights = np.array([5, 8, 5]) / 18
        for a, b in itertools.combinations(range(n_c), 2):
            xa, xb = corners[a], corners[b]
            if box and np.count_nonzero(np.abs(xb - xa) > 1e-12) != 1:
                continue  # box: edges are axis-parallel
            length = np.linalg.norm(xb - xa)
            t = (xb - xa) / length
            s = (x - xa) @ t
            dist = np.linalg.norm(x - xa - np.outer(s, t), axis=1)
            on = np.flatnonzero((dist < 1e-9 * length) & (s > -1e-9 * length)
                                & (s < length * (1 + 1e-9)))
            order = on[np.argsort(s[on])]
            sn = s[order]
            seg = np.diff(sn)
            pts = sn[:-1, None] + seg[:, None] * gauss[None, :]  # (n_seg, 3)
            P = xa[None, None, :] + pts[..., None] * t[None, None, :]
            P3 = np.zeros((3, P.shape[0] * 3))
            P3[: len(xa)] = P.reshape(-1, len(xa)).T
            vals = fld.evaluate(P3)
            if vals.ndim > 1:  # tensor: tangential component t·A·t
                d = len(t)
                vals = np.einsum("i,ijn,j->n", t, vals.reshape(d, d, -1), t)
            abar = (vals.reshape(-1, 3) * weights).sum(axis=1)
            resistance = seg / abar
            cum = np.concatenate([[0.0], np.cumsum(resistance)]) / resistance.sum()
            data[order, a] = 1.0 - cum
            data[order, b] = cum
        # at the corners themselves the value is exact (δ)
        for k, c in enumerate(corners):
            at = np.linalg.norm(x - c, axis=1) < 1e-9
            data[at] = 0.0
            data[at, k] = 1.0
        return data

    # ----------------------------------------------------------------- one coarse cell
    def local_basis(self, cell: int) -> ElementBasis:
        r"""Solve the local problems of coarse cell ``cell`` and return its element data."""
        if self.unstructured:
            return self._local_basis_unstructured(cell)
        h = self.hierarchy
        patch: Patch = self.patch(cell)
        _, sub = h.coarse_square(cell)
        simplex = h.n_sub > 1
        oversampled = self.layers > 0
        # the patch mesh S (a box of fine squares; for S = K a single coarse simplex)
        S_key, S = self._local_mesh(patch.shape, sub if (simplex and not oversampled) else None)
        if oversampled:
            K_key, Kmesh = self._local_mesh((h.M,) * h.dim, sub if simplex else None)
        else:
            K_key, Kmesh = S_key, S
        origin_S = h.lower + np.array(patch.lo) * h.h
        origin_K = h.lower + np.array(patch.cell_lo) * h.h
        S.move_to(origin_S, self.problem)
        if oversampled:
            Kmesh.move_to(origin_K, self.problem)
        K_vertices = h.coarse_vertices(cell)
        center = K_vertices.mean(axis=0)
        if oversampled or not simplex:  # box-shaped S: its 2^d corners
            lo = h.lower + np.array(patch.lo) * h.h
            hi = h.lower + np.array(patch.hi) * h.h
            corners = np.array([lo + (hi - lo) * np.array(c[::-1])
                                for c in itertools.product((0, 1), repeat=h.dim)])
        else:
            corners = K_vertices

        if self.variant.boundary == "none":
            return self._element(cell, Kmesh, K_key, self._nodal(Kmesh, K_vertices, center),
                                 _petsc_to_csr(Kmesh.assemble()), K_vertices, center)

        # local problems on S (a sampling region's solutions are shared by its cells)
        region = (patch.lo, patch.hi)
        if self._last_region is not None and self._last_region[0] == region:
            psi, A_csr = self._last_region[1], None
        else:
            psi, A_csr = self._solve_patch(S, cell, corners, K_vertices, center)
            if self.oversampling.sampling_region is not None:
                self._last_region = (region, psi)

        # restrict to K (K-mesh dof order) and normalise: φ_i(x_k) = δ_ik
        S_index = Kmesh.dof_index + np.array(patch.offset) * self.problem.degree
        S_blocks = S.lookup[np.ravel_multi_index(tuple(S_index.T), S.node_shape, order="F")]
        psi_K = psi[expand_blocks(S_blocks, self.bs)]
        vertex_blocks = self._vertex_blocks(Kmesh, K_vertices)
        Vmat = psi_K[expand_blocks(vertex_blocks, self.bs)]
        try:
            C = np.linalg.inv(Vmat)
        except np.linalg.LinAlgError as err:
            raise solvers.SolverError(
                f"the oversampled functions of coarse cell {cell} are linearly dependent at its "
                f"vertices; reduce the oversampling") from err
        phi = psi_K @ C

        A_K = A_csr if not oversampled else _petsc_to_csr(Kmesh.assemble())
        return self._element(cell, Kmesh, K_key, phi, A_K, K_vertices, center)

    # ----------------------------------------------------------------- unstructured
    def _local_basis_unstructured(self, cell: int) -> ElementBasis:
        r"""Local problems on the fine cells of a gmsh coarse cell K (S = K).

        The fine cells of an owned coarse cell are on this rank (dolfinx refines in
        place), so K's mesh is copied to ``COMM_SELF``; one mesh and one factorisation per
        coarse cell (no translation cache: every K has its own shape).
        """
        h = self.hierarchy
        fine = h.fine
        cells = h.fine_cells(cell)
        nodes = fine.geometry.dofmaps[0][cells]
        used, local_cells = np.unique(nodes, return_inverse=True)
        x = fine.geometry.x[used, : fine.geometry.dim]
        domain = ufl.Mesh(fine.ufl_domain().ufl_coordinate_element())  # its own UFL domain
        mesh = dolfinx.mesh.create_mesh(MPI.COMM_SELF, local_cells.reshape(nodes.shape),
                                        domain, x)
        V = self.problem.function_space(mesh)
        disc = self.problem.discretise(V)
        A = dolfinx.fem.petsc.assemble_matrix(disc.a)
        A.assemble()
        tdim = h.dim
        mesh.topology.create_connectivity(tdim - 1, tdim)
        bblocks = np.sort(dolfinx.fem.locate_dofs_topological(
            V, tdim - 1, dolfinx.mesh.exterior_facet_indices(mesh.topology)))
        xd = V.tabulate_dof_coordinates()[:, :tdim]
        boundary = expand_blocks(bblocks, self.bs)
        interior = expand_blocks(np.setdiff1d(np.arange(len(xd)), bblocks), self.bs)
        K_vertices = h.coarse_vertices(cell)
        center = K_vertices.mean(axis=0)
        vertex_blocks = np.array([int(np.argmin(np.linalg.norm(xd - v, axis=1)))
                                  for v in K_vertices])
        poly = polynomial_basis(h.cell_type, (xd - center) / h.H)
        N = _blocked(poly @ np.linalg.inv(polynomial_basis(h.cell_type,
                                                           (K_vertices - center) / h.H)),
                     self.bs)
        A_csr = _petsc_to_csr(A)
        if self.variant.boundary == "none":
            phi = N
        else:
            if self.variant.boundary == "polynomial":
                G = N[boundary]
            else:
                G = _blocked(self._oscillatory_data(xd[bblocks], K_vertices, box=False),
                             self.bs)
            isI = PETSc.IS().createGeneral(interior.astype(np.int32), comm=MPI.COMM_SELF)
            A_II = A.createSubMatrix(isI, isI)
            ksp = solvers.make_ksp(A_II, "msfem_local_", self.petsc_options,
                                   solvers.LOCAL_OPTIONS)
            rhs = -(A_csr[interior][:, boundary] @ G)
            B = PETSc.Mat().createDense(rhs.shape, array=np.ascontiguousarray(rhs),
                                        comm=MPI.COMM_SELF)
            X = PETSc.Mat().createDense(rhs.shape, comm=MPI.COMM_SELF)
            X.setUp()
            t0 = time.perf_counter()
            try:
                ksp.setUp()
                ksp.matSolve(B, X)
            except PETSc.Error as err:
                raise solvers.SolverError(
                    f"local factorisation failed on coarse cell {cell} (vertices "
                    f"{K_vertices.round(6).tolist()}): {err}") from err
            self._t_petsc += time.perf_counter() - t0
            psi = np.empty((len(xd) * self.bs, G.shape[1]))
            psi[interior] = X.getDenseArray()
            psi[boundary] = G
            for obj in (B, X, ksp, A_II, isI):
                obj.destroy()
            phi = psi @ np.linalg.inv(psi[expand_blocks(vertex_blocks, self.bs)])
        b_K = dolfinx.fem.assemble_vector(disc.L).array.copy()
        W = N if self.variant.test == "petrov-galerkin" else phi
        # global fine dof blocks of K's dofs: match coordinates with the fine space
        if getattr(self, "_fine_dofs", None) is None:
            Vf = self.problem.function_space(fine)
            self._fine_dofs = (Vf, Vf.tabulate_dof_coordinates()[:, :tdim])
        Vf, xf = self._fine_dofs
        cand = np.unique(Vf.dofmap.list[cells].ravel())
        dist, nearest = cKDTree(xf[cand]).query(xd)
        if dist.max() > 1e-10 * float(h.H[0]):
            raise RuntimeError(f"coarse cell {cell}: local and fine dofs do not match")
        blocks = Vf.dofmap.index_map.local_to_global(cand[nearest].astype(np.int32))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        metrics = (_csr(dolfinx.fem.form(ufl.inner(u, v) * ufl.dx)),
                   _csr(dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)))
        A.destroy()
        del disc, V, mesh  # each COMM_SELF mesh holds duplicated communicators: free them
        self._n_meshes = getattr(self, "_n_meshes", 0) + 1
        if self._n_meshes % 32 == 0:
            gc.collect()
        return ElementBasis(cell, np.zeros(0, dtype=np.int64), None, phi, W.T @ (A_csr @ phi),
                            W.T @ b_K, A_csr, None, fine_blocks=np.asarray(blocks),
                            metrics=metrics, vertex_blocks=vertex_blocks)

    def metric_matrices(self, e: ElementBasis) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Mass and stiffness matrices of the fine sub-grid of element ``e``."""
        if e.metrics is not None:
            return e.metrics
        return self._meshes[e.K_key].metric_matrices()

    def _nodal(self, Kmesh: _LocalMesh, K_vertices: np.ndarray, center: np.ndarray) -> np.ndarray:
        """The coarse nodal functions N_i at the fine dofs of K (vector: per component)."""
        h = self.hierarchy
        key = ("N", tuple(np.round((center - Kmesh.origin) / h.h, 6)))
        if key not in Kmesh.cache:
            poly = polynomial_basis(h.cell_type, (Kmesh.dof_coordinates() - center) / h.H)
            Pv = polynomial_basis(h.cell_type, (K_vertices - center) / h.H)
            Kmesh.cache[key] = _blocked(poly @ np.linalg.inv(Pv), self.bs)
        return Kmesh.cache[key]

    def _element(self, cell: int, Kmesh: _LocalMesh, K_key: tuple, phi: np.ndarray,
                 A_K: sp.csr_matrix, K_vertices: np.ndarray, center: np.ndarray) -> ElementBasis:
        r"""Element matrix :math:`a_K(\phi_j, w_i)` and load :math:`L_K(w_i)`."""
        b_K = Kmesh.load()
        W = self._nodal(Kmesh, K_vertices, center) if self.variant.test == "petrov-galerkin" \
            else phi
        A_e = W.T @ (A_K @ phi)
        b_e = W.T @ b_K
        h = self.hierarchy
        deg = self.problem.degree
        idx = Kmesh.dof_index + np.rint((Kmesh.origin - h.lower) / (h.h / deg)).astype(np.int64)
        lattice = np.ravel_multi_index(tuple(idx.T), np.array(h.N) * h.M * deg + 1, order="F")
        return ElementBasis(cell, np.zeros(0, dtype=np.int64), lattice, phi, A_e, b_e,
                            A_K, K_key)  # A_K is a fresh CSR per cell: no copy

    def _solve_patch(self, S: _LocalMesh, cell: int, corners: np.ndarray,
                     K_vertices: np.ndarray, center: np.ndarray):
        r"""Solve :math:`A_{II}\Psi_I = -A_{IB}G`, :math:`\Psi_B = G` on the patch mesh S."""
        A_S = S.assemble()
        t0 = time.perf_counter()
        self._factorise(S, A_S, cell)
        self._t_petsc += time.perf_counter() - t0
        G = self._boundary_data(S, corners, K_vertices, center)
        A_csr = _petsc_to_csr(A_S)
        rhs = -(S.interior_boundary_block(A_csr) @ G)
        B = PETSc.Mat().createDense(rhs.shape, array=np.ascontiguousarray(rhs), comm=MPI.COMM_SELF)
        X = PETSc.Mat().createDense(rhs.shape, comm=MPI.COMM_SELF)
        X.setUp()
        t0 = time.perf_counter()
        try:
            S.ksp.matSolve(B, X)
        except PETSc.Error as err:
            raise solvers.SolverError(f"local solve failed on coarse cell {cell}: {err}") from err
        self._t_petsc += time.perf_counter() - t0
        psi = np.empty((len(S.interior) + len(S.boundary), G.shape[1]))
        psi[S.interior] = X.getDenseArray()
        psi[S.boundary] = G
        B.destroy()
        X.destroy()

        return psi, A_csr

    def _vertex_blocks(self, lm: _LocalMesh, vertices: np.ndarray) -> np.ndarray:
        key = ("V", tuple(np.round((vertices - lm.origin) / self.hierarchy.h, 6).ravel()))
        if key not in lm.cache:
            x = lm.dof_coordinates()
            lm.cache[key] = np.array([int(np.argmin(np.linalg.norm(x - v, axis=1)))
                                      for v in vertices], dtype=np.int64)
        return lm.cache[key]

    # ----------------------------------------------------------------- all owned cells
    def build(self, progress: bool = False) -> MultiscaleSpace:
        """Compute the basis of every coarse cell owned by this rank (offline phase).

        ``timings["offline"]`` is the wall time (max over ranks); ``timings["local_petsc"]``
        the part spent in PETSc factorising and solving the local problems (this rank).
        """
        from msfem._runtime import logger
        from msfem.fine import check_coefficients

        h = self.hierarchy
        check_coefficients(self.problem, h.fine)  # collective: refuse a <= 0, warn unresolved
        local, lattice = h.owned_coarse_cells
        Vc = self.coarse_space
        bs = self.bs
        xc = Vc.tabulate_dof_coordinates()[:, : h.dim]
        t0 = time.perf_counter()
        self._t_petsc = 0.0
        self._last_region = None
        self.elements = []
        n = len(local)
        if self.oversampling.sampling_region is not None:  # cells of one region in a row
            order = np.lexsort(np.array([self.patch(int(c)).lo for c in lattice]).T[::-1])
            local, lattice = local[order], lattice[order]
        with dolfinx.common.Timer("~msfem: offline (basis)"):
            for k, (c, cell) in enumerate(zip(local, lattice)):
                e = self.local_basis(int(cell))
                # coarse dofs in the order of K's vertices (vertex-major, component-minor)
                cdofs = Vc.dofmap.cell_dofs(int(c))
                verts = h.coarse_vertices(int(cell))
                order = [int(cdofs[np.argmin(np.linalg.norm(xc[cdofs] - v, axis=1))])
                         for v in verts]
                e.coarse_dofs = expand_blocks(np.array(order), bs)
                self.elements.append(e)
                if progress and ((k + 1) % max(1, -(-n // 10)) == 0 or k + 1 == n):
                    logger.info("  basis: %d/%d coarse cells on rank 0", k + 1, n)
        with dolfinx.common.Timer("~msfem: offline (downscaling map)"):
            self._fine_map = None
            self.fine_map()  # element dofs <-> distributed fine dofs, for reconstruction
        self.timings["offline"] = h.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        self.timings["offline_rank"] = time.perf_counter() - t0
        self.timings["local_petsc"] = self._t_petsc
        self.built = True
        return self
