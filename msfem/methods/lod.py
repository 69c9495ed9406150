r"""Localized orthogonal decomposition (LOD): Målqvist & Peterseim, Math. Comp. 83 (2014).

Coarse space :math:`V_H` (Q1 on the coarse intervals, quadrilaterals or hexahedra;
vector-valued for elasticity), fine space :math:`V_h` on the fine sub-grid. The
quasi-interpolation :math:`I_H: V_h \to V_H` is the element-wise :math:`L^2` projection
onto Q1 followed by nodal averaging,

.. math::
    (I_H v)(z) = \frac{1}{\#\{T \ni z\}} \sum_{T \ni z} (\Pi_T v)(z), \qquad
    \Pi_T v \in Q_1(T),\ (\Pi_T v - v, q)_T = 0\ \forall q \in Q_1(T),

(Målqvist & Peterseim §3; the choice of gridlod): it is a projection onto :math:`V_H`
(:math:`\Pi_T` reproduces :math:`Q_1(T)`), local (one coarse layer), :math:`L^2`- and
:math:`H^1`-stable, and needs only the fine mass matrix of one coarse cell -- the same for
every cell of the lattice. The fine-scale space is :math:`W_h = \ker I_H`.

For every coarse cell T and its patch :math:`U = U_k(T)` (T and ``layers`` = k layers of
coarse cells, clipped to Ω), the element correctors
:math:`Q_T\lambda_j \in W_h(U) = \{w \in V_h: w = 0 \text{ outside } U,\ I_H w = 0\}`,

.. math::
    a(Q_T\lambda_j, w) = a_T(\lambda_j, w) \quad \forall w \in W_h(U),

are solved as one saddle-point problem per patch (the constraints
:math:`(I_H w)(z) = 0` at the coarse nodes z of the closed patch, off the Dirichlet
boundary, by Lagrange multipliers), one factorisation and all right-hand sides
:math:`\lambda_j`, j a vertex of T, at once (:class:`msfem.local.ConstrainedSolver`, Schur
complement on the multipliers). The multiscale space is :math:`(1 - Q_k)V_H`,
:math:`Q_k = \sum_T Q_T`.

* Petrov--Galerkin LOD (``test = "petrov-galerkin"``, the default, as in gridlod): find
  :math:`u_H \in V_H` with :math:`a((1 - Q_k)u_H, v_H) = (f, v_H)` for all
  :math:`v_H \in V_H`. The element data of T couple the coarse dofs of the patch's nodes
  (rows) with T's (columns),

  .. math::
      A_T[i, j] = a_T(\lambda_j, \lambda_i) - a(Q_T\lambda_j, \lambda_i), \qquad
      b_T[i] = (f, \lambda_i)_T,

  so the coarse matrix couples nodes up to 2k + 1 cells apart.
* Galerkin LOD (``test = "galerkin"``): test space :math:`(1 - Q_k)V_H` as well,
  :math:`A_H = P^T A_h P`, :math:`b_H = P^T b_h` with the prolongation
  :math:`P = (1 - Q_k)\Lambda` assembled from the elements (``assembly = "ptap"``). With
  whole-domain patches it is the Galerkin projection onto the a-orthogonal complement of
  :math:`W_h`, so :math:`u_H = I_H u_h`.

The trial functions of T's element are :math:`\lambda_j|_T - Q_T\lambda_j` on the fine dofs
of U (the nodal part weighted by one over the number of coarse cells sharing a fine dof),
so the elements' pieces *add up* to the conforming :math:`u_{ms} = (1 - Q_k)u_H`
(:attr:`Method.reconstruction` ``= "sum"``) and its errors are global fine-space norms.
Error (Målqvist & Peterseim, Thm. 4.13): :math:`\|u - u_k\|_a \lesssim (H +
e^{-ck})\|f\|_{L^2}`, no :math:`\varepsilon/H` resonance term.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import pydantic
import scipy.sparse as sp

from msfem import solvers
from msfem.local import ConstrainedSolver
from msfem.mesh import StructuredHierarchy
from msfem.methods.base import ElementData, Method, Parameters, register
from msfem.patches import PatchEngine, PatchMesh, Where, blocked, nodal_functions
from msfem.transfer import expand_blocks

#: Cell types with a Q1 coarse space (the quasi-interpolation is defined for them).
CELL_TYPES = ("interval", "quadrilateral", "hexahedron")


class LODParameters(Parameters):
    """Parameters of :class:`LOD`.

    Attributes:
        layers: k, the coarse layers of the patch :math:`U_k(T)` around T (0: U = T). The
            localisation error decays like :math:`e^{-ck}`; k ≈ log(1/H) keeps it at the
            level of the ideal method's O(H).
        test: ``"petrov-galerkin"`` (test space :math:`V_H`) or ``"galerkin"`` (test space
            :math:`(1 - Q_k)V_H`, symmetric).
    """

    layers: int = pydantic.Field(2, ge=0)
    test: Literal["petrov-galerkin", "galerkin"] = "petrov-galerkin"

    @pydantic.field_validator("layers", mode="before")
    @classmethod
    def _integer(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a non-negative integer (coarse layers)")
        return value


class LOD(Method):
    """Localized orthogonal decomposition (see the module docstring)."""

    name = "lod"
    Parameters = LODParameters
    params: LODParameters
    reconstruction = "sum"

    # ------------------------------------------------------------------ properties
    @property
    def galerkin(self) -> bool:
        """Galerkin (symmetric) LOD or Petrov--Galerkin LOD."""
        return self.params.test == "galerkin"

    @property
    def coarse_assembly(self) -> str:
        """Petrov--Galerkin: element data; Galerkin: :math:`P^T A_h P`."""
        return "ptap" if self.galerkin else "element"

    def is_conforming(self, hierarchy) -> bool:
        r"""The multiscale functions :math:`(1 - Q_k)\lambda_j` are conforming."""
        return True

    def layers(self, hierarchy) -> int:
        """Fine layers of the patch (k M)."""
        return self.params.layers * int(getattr(hierarchy, "M", 1))

    @property
    def label(self) -> str:
        """``lod`` (Petrov--Galerkin) or ``lod-galerkin``."""
        return self.registry_name or ("lod-galerkin" if self.galerkin else "lod")

    # ------------------------------------------------------------------ protocol
    def validate(self, hierarchy, problem) -> None:
        """Structured Q1 hierarchy, M >= 2, Dirichlet data on all of ∂Ω."""
        if not isinstance(hierarchy, StructuredHierarchy):
            raise ValueError("LOD needs a structured hierarchy (its quasi-interpolation is "
                             "built on the coarse lattice); use [mesh] N and M, not a gmsh mesh")
        if hierarchy.cell_type not in CELL_TYPES:
            raise ValueError(
                f"LOD's quasi-interpolation (element-wise L2 projection onto Q1, nodal "
                f"averaging) is defined for {', '.join(CELL_TYPES)} cells, not "
                f"{hierarchy.cell_type!r}; use cell = 'quadrilateral' (or 'hexahedron')")
        if hierarchy.M < 2:
            raise ValueError(f"LOD needs M >= 2 fine cells per coarse cell (the fine-scale "
                             f"space ker I_H is empty for M = 1); got M = {hierarchy.M}")
        if len(problem.dirichlet) != 1 or problem.dirichlet[0].marker is not None or \
                problem.neumann:
            raise ValueError("LOD supports Dirichlet data on all of ∂Ω (one Dirichlet "
                             "condition without a marker, no Neumann part)")

    def patch_box(self, hierarchy, cell: int) -> tuple[np.ndarray, np.ndarray]:
        """First and last+1 coarse square of the patch :math:`U_k(T)` (clipped to Ω)."""
        sq = np.array(hierarchy.coarse_square(cell)[0])
        k = self.params.layers
        return np.maximum(sq - k, 0), np.minimum(sq + k + 1, np.array(hierarchy.N))

    def _vertices(self, hierarchy, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Coordinates of the coarse nodes of the closed patch, first axis fastest."""
        ranges = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
        idx = np.array(list(itertools.product(*ranges[::-1])))[:, ::-1]
        return hierarchy.lower + idx * hierarchy.H

    def schedule(self, hierarchy, cells: np.ndarray) -> np.ndarray:
        """Cells whose patches share a sparsity (shape and sides on ∂Ω) in a row.

        Each such group reuses one symbolic factorisation; in lattice order the patches
        near ∂Ω cycle through more shapes than the solver cache keeps (k = 3 on 32 x 32
        cells: 463 symbolic factorisations in lattice order, 81 = 9² grouped).
        """
        if len(cells) == 0:
            return cells
        keys = []
        for c in cells:
            lo, hi = self.patch_box(hierarchy, int(c))
            keys.append((*(hi - lo), *np.ravel(self._touches(hierarchy, lo, hi))))
        order = np.lexsort(np.array(keys, dtype=np.int64).T[::-1])
        return cells[order]

    def prepare(self, engine: PatchEngine, cells: np.ndarray) -> None:
        """The patches' coarse dofs (collective; patch operators are sums of K-matrices)."""
        h = engine.hierarchy
        if not engine.cell_integrals_only():  # (the same answer on every rank)
            raise ValueError("LOD's patch operators are sums of the coarse cells' matrices: "
                             "the bilinear form may hold cell integrals (dx) only")
        verts = [self._vertices(h, *self.patch_box(h, int(c))) for c in cells]
        x = np.concatenate(verts) if verts else np.zeros((0, h.dim))
        dofs = engine.coarse_space.vertex_dofs(x)  # one (collective) AO lookup
        sizes = np.cumsum([0] + [len(v) * engine.bs for v in verts])
        engine.region_cache["lod rows"] = {int(c): dofs[a:b] for c, a, b in
                                           zip(cells, sizes[:-1], sizes[1:])}

    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Element correctors :math:`Q_T\lambda_j` on the patch of T; T's element data."""
        h, bs, p = engine.hierarchy, engine.bs, engine.problem.degree
        lo, hi = self.patch_box(h, cell)
        pm = engine.patch_mesh(tuple(int(s) for s in (hi - lo) * h.M))
        # the patch operator: the sum of its coarse cells' matrices (each assembled once)
        A_U_csr = sp.csr_matrix((engine.summed_patch_values(pm, lo, hi),
                                 *pm.block_pattern_arrays()), shape=pm.matrix_shape)
        values, load_T = engine.cell_values([cell])[0]
        K = engine.patch_mesh((h.M,) * h.dim)  # T's mesh (its position is not needed)
        K_vertices = h.coarse_vertices(cell)
        what = Where(cell, K_vertices)
        # T's matrix and nodal functions; right-hand sides a_T(λ_j, ·) on the patch
        A_T = sp.csr_matrix((values, *K.block_pattern_arrays()), shape=K.matrix_shape)
        Lam_T = _cell_nodal(K, h, bs)
        in_patch = expand_blocks(pm.lookup[np.ravel_multi_index(
            tuple((K.dof_index + (np.array(h.coarse_square(cell)[0]) - lo) * h.M * p).T),
            pm.node_shape, order="F")], bs)
        n_U = pm.matrix_shape[0]
        rhs = np.zeros((n_U, Lam_T.shape[1]))
        rhs[in_patch] = A_T @ Lam_T
        # the constraints I_H w = 0
        key = self._touches(h, lo, hi)  # patches of one shape and position share patterns
        A_II = self._interior_block(pm, A_U_csr, key)
        C = self._constraints(engine, pm, lo, hi)
        Q = np.zeros_like(rhs)
        if C.shape[0] and len(pm.interior):
            solver = self._solver(engine, (pm.shape, key))
            t0 = solver.petsc_seconds
            try:
                solver.set_operators(A_II, C)
                Q[pm.interior], _ = solver.solve(rhs[pm.interior])
            except solvers.SolverError as err:
                raise solvers.SolverError(f"LOD correctors on {what}: {err}") from err
            engine.t_petsc += solver.petsc_seconds - t0
        # element data: rows = the patch's nodes, columns = T's
        Lam_U = self._patch_nodal(pm, lo, hi, h, bs)
        rows = self._rows(engine, cell, lo, hi)
        at_T = expand_blocks(self._vertex_positions(h, K_vertices, lo, hi), bs)
        A_e = -(Lam_U.T @ (A_U_csr @ Q))
        A_e[at_T] += Lam_T.T @ (A_T @ Lam_T)
        b_e = np.zeros(len(rows))
        b_e[at_T] = Lam_T.T @ load_T
        trial = -Q
        trial[in_patch] += self._share(K, cell, h, p, bs)[:, None] * Lam_T
        return ElementData(cell=int(cell), rows=rows, cols=engine.cell_dofs[int(cell)], A=A_e,
                           b=b_e, fine_dofs=self._lattice_ids(pm, lo, h, p), trial=trial)

    # ------------------------------------------------------------------ pieces
    #: Constrained solvers kept alive per rank (least recently used ones are destroyed):
    #: one per patch shape and placement kind reuses the symbolic factorisation, but every
    #: live MUMPS instance holds its factors -- and some hundred of them crash MUMPS/MPICH.
    SOLVERS_ALIVE = 8

    def _solver(self, engine: PatchEngine, key: tuple) -> ConstrainedSolver:
        """The constrained solver of patches with sparsity ``key`` (an LRU cache per rank)."""
        cache = engine.region_cache.setdefault("lod solvers", {})
        solver = cache.pop(key, None)
        if solver is None:
            solver = ConstrainedSolver(symmetric=engine.problem.is_symmetric,
                                       prefix="msfem_lod_", petsc_options=engine.petsc_options)
            while len(cache) >= self.SOLVERS_ALIVE:
                cache.pop(next(iter(cache))).destroy()
        cache[key] = solver  # most recently used last
        return solver

    @staticmethod
    def _touches(h, lo, hi) -> tuple:
        """Which sides of Ω the patch [lo, hi) (coarse squares) reaches."""
        return tuple((bool(a == 0), bool(b == n)) for a, b, n in zip(lo, hi, h.N))

    @staticmethod
    def _interior_block(pm: PatchMesh, A: sp.csr_matrix, key: tuple) -> sp.csr_matrix:
        """A[interior, interior] with the index pattern cached per patch placement kind."""
        A.sort_indices()
        cached = pm.cache.get(("lod II", key))
        if cached is None or not (np.array_equal(cached[0], A.indptr)
                                  and np.array_equal(cached[1], A.indices)):
            probe = sp.csr_matrix((np.arange(A.nnz, dtype=float), A.indices, A.indptr),
                                  shape=A.shape)
            sub = probe[pm.interior][:, pm.interior].tocsr()
            sub.sort_indices()
            cached = (A.indptr.copy(), A.indices.copy(), sub.data.astype(np.int64),
                      sub.indices, sub.indptr, sub.shape)
            pm.cache[("lod II", key)] = cached
        _, _, at, indices, indptr, shape = cached
        return sp.csr_matrix((A.data[at], indices, indptr), shape=shape)

    def _rows(self, engine: PatchEngine, cell: int, lo, hi) -> np.ndarray:
        """Global coarse dofs of the patch's nodes (prepared; else one AO lookup)."""
        prepared = engine.region_cache.get("lod rows")
        if prepared is not None and int(cell) in prepared:
            return prepared[int(cell)]
        return engine.coarse_space.vertex_dofs(self._vertices(engine.hierarchy, lo, hi))

    @staticmethod
    def _vertex_positions(h, points: np.ndarray, lo, hi) -> np.ndarray:
        """Positions of coarse nodes ``points`` among the patch's nodes (first axis fastest)."""
        idx = np.rint((points - h.lower) / h.H).astype(np.int64) - lo
        return np.ravel_multi_index(tuple(idx.T), tuple(hi - lo + 1), order="F")

    @staticmethod
    def _lattice_ids(pm: PatchMesh, lo, h, p: int) -> np.ndarray:
        """Global fine-lattice ids of the patch's dofs (no mesh move needed)."""
        idx = pm.dof_index + np.asarray(lo) * h.M * p
        return np.ravel_multi_index(tuple(idx.T), pm.lattice_shape, order="F")

    @staticmethod
    def _share(K: PatchMesh, cell: int, h, p: int, bs: int) -> np.ndarray:
        """1 / (number of coarse cells sharing each of T's fine dofs), blocked."""
        idx = K.dof_index + np.array(h.coarse_square(cell)[0]) * h.M * p
        n = np.array(h.N) * h.M * p
        on_interface = (idx % (h.M * p) == 0) & (idx > 0) & (idx < n)
        return np.repeat(1.0 / np.prod(np.where(on_interface, 2.0, 1.0), axis=1), bs)

    def _patch_nodal(self, pm: PatchMesh, lo, hi, h, bs: int) -> np.ndarray:
        r"""The hat functions :math:`\lambda_z` of the patch's nodes at its fine dofs (CSR)."""
        key = ("lod hats", tuple(hi - lo))
        if key not in pm.cache:
            t = pm.rel_coords / h.H  # coarse units from the patch's first node
            hats = None
            for d in range(h.dim):
                n = int(hi[d] - lo[d]) + 1
                hat_d = np.maximum(0.0, 1.0 - np.abs(t[:, d, None] - np.arange(n)[None, :]))
                hat_d = sp.csr_matrix(hat_d)
                # first axis fastest: column index z_0 + n_0 z_1 + ...
                hats = hat_d if hats is None else sp.csr_matrix(
                    _row_kron(hat_d, hats))
            assert hats is not None
            pm.cache[key] = sp.csr_matrix(blocked(hats.toarray(), bs))
        return pm.cache[key]

    def _constraints(self, engine: PatchEngine, pm: PatchMesh, lo, hi) -> sp.csr_matrix:
        r"""Rows of :math:`I_H` at the patch's free nodes, on the patch's interior dofs.

        Row z is :math:`\sum_{T' \ni z,\ T' \subset U} (R_{T'})_{z,\cdot}` with the local
        projection :math:`R_{T'} = (\Lambda^T M_h \Lambda)^{-1}\Lambda^T M_h` (the L2
        projection onto Q1(T'), M_h the fine mass matrix of T'); the averaging weight
        :math:`1/\#\{T \ni z\}` does not change the constraint :math:`(I_H w)(z) = 0` and is
        left out. Cached per patch shape and the sides it shares with ∂Ω.
        """
        h, bs, p = engine.hierarchy, engine.bs, engine.problem.degree
        N = np.array(h.N)
        key = ("lod constraints", tuple(hi - lo), self._touches(h, lo, hi))
        if key in pm.cache:
            return pm.cache[key]
        K = engine.patch_mesh((h.M,) * h.dim)  # the mesh of every coarse cell (not moved)
        R = projection_matrix(h, engine.problem, engine)  # (2^d bs, n_K bs)
        corner = np.rint((h.coarse_vertices(0) - h.lower) / h.H).astype(np.int64)
        shape = hi - lo
        rows, cols, vals = [], [], []
        for square in itertools.product(*[range(int(s)) for s in shape]):
            sq = np.array(square)
            dofs = pm.lookup[np.ravel_multi_index(tuple((K.dof_index + sq * h.M * p).T),
                                                  pm.node_shape, order="F")]
            nodes = np.ravel_multi_index(tuple((corner + sq).T), tuple(shape + 1), order="F")
            r = expand_blocks(nodes, bs)
            c = expand_blocks(dofs, bs)
            rows.append(np.repeat(r, len(c)))
            cols.append(np.tile(c, len(r)))
            vals.append(R.ravel())
        n_nodes = int(np.prod(shape + 1))
        full = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n_nodes * bs, pm.matrix_shape[0]))
        # free nodes: off the Dirichlet boundary (all of ∂Ω)
        idx = np.array(list(itertools.product(*[range(int(s) + 1) for s in shape[::-1]])))[:, ::-1]
        on_boundary = np.any((idx + lo == 0) | (idx + lo == N), axis=1)
        free = expand_blocks(np.flatnonzero(~on_boundary), bs)
        C = full[free][:, pm.interior].tocsr()
        pm.cache[key] = C
        return C


def projection_matrix(hierarchy, problem, engine: PatchEngine | None = None) -> np.ndarray:
    r"""The local :math:`L^2` projection onto Q1 of one coarse cell, as a matrix.

    :math:`R = (\Lambda^T M_h \Lambda)^{-1}\Lambda^T M_h`, shape (2^d bs, n_K bs): the
    values of :math:`\Pi_T v` at T's vertices (``coarse_vertices`` order) from v at T's
    fine dofs (the dof order of the coarse-cell patch mesh), the same for every cell.
    """
    engine = engine or PatchEngine(hierarchy, problem, None)
    h, bs = hierarchy, problem.block_size
    K = engine.patch_mesh((h.M,) * h.dim)
    if ("lod R",) not in K.cache:
        M_h = K.metric_matrices()[0]
        Lam = _cell_nodal(K, h, bs)
        K.cache[("lod R",)] = np.linalg.solve(Lam.T @ (M_h @ Lam), (M_h @ Lam).T)
    return K.cache[("lod R",)]


def _cell_nodal(K: PatchMesh, h, bs: int) -> np.ndarray:
    """The coarse nodal functions of a cell at its fine dofs (translation invariant, cached).

    ``K`` is the mesh of one coarse cell (:meth:`PatchEngine.coarse_cell`); columns in the
    order of ``hierarchy.coarse_vertices``.
    """
    if ("lod N",) not in K.cache:
        K.cache[("lod N",)] = nodal_functions(h.cell_type, K.rel_coords,
                                              h.coarse_vertices(0) - h.lower, h.H, bs)
    return K.cache[("lod N",)]


def quasi_interpolation(space, u) -> np.ndarray:
    r""":math:`I_H u` of a fine Function ``u``: owned values of the coarse vector (collective).

    The element-wise :math:`L^2` projection onto Q1 followed by nodal averaging (module
    docstring), with :math:`(I_H u)(z) = 0` at the Dirichlet nodes (all of ∂Ω).
    """
    from petsc4py import PETSc

    from msfem.transfer import FineMap

    h = space.hierarchy
    engine = space.engine()
    R = projection_matrix(h, space.problem, engine)
    _, cells = h.owned_coarse_cells
    K = engine.patch_mesh((h.M,) * h.dim)
    p = space.problem.degree
    ids = [np.ravel_multi_index(tuple((K.dof_index + np.array(h.coarse_square(int(c))[0])
                                       * h.M * p).T), K.lattice_shape, order="F")
           for c in cells]
    local = FineMap(u.function_space, ids, engine.fine_numbering()).gather(u)
    holder = space.coarse.create_vector("I_H u")
    total = holder.x.petsc_vec if hasattr(holder, "x") else holder.petsc_vec
    count = total.duplicate()
    total.set(0.0)
    count.set(0.0)
    for c, values in zip(cells, local):
        dofs = engine.cell_dofs[int(c)].astype(PETSc.IntType)
        total.setValues(dofs, R @ values, addv=PETSc.InsertMode.ADD_VALUES)
        count.setValues(dofs, np.ones(len(dofs)), addv=PETSc.InsertMode.ADD_VALUES)
    for v in (total, count):
        v.assemble()
    total.pointwiseDivide(total, count)
    rows, _ = space.coarse.dirichlet(space.problem)
    total.setValues(rows.astype(PETSc.IntType), np.zeros(len(rows)))
    total.assemble()
    out = total.getArray(readonly=True).copy()
    count.destroy()
    return out


def _row_kron(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    """Row-wise Kronecker product: row r is kron(a[r], b[r]) (tensor-product functions)."""
    a, b = a.toarray(), b.toarray()
    return sp.csr_matrix((a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1))


register("lod", LOD, summary="Localized orthogonal decomposition (Målqvist & Peterseim 2014)")
