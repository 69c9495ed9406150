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
boundary, by Lagrange multipliers), all right-hand sides :math:`\lambda_j`, j a vertex of
T, at once. The patch operator is the sum of its coarse cells' matrices, so every coarse
cell's interior fine dofs are eliminated once per rank (:mod:`msfem.condensation`) and a
patch problem lives on the coarse skeleton: 184 + 16 unknowns for k = 1 and 16 x 16 fine
cells per coarse cell instead of 2209 + 16 (dense LAPACK; larger patches by MUMPS, one
symbolic factorisation per patch sparsity). The multiscale space is
:math:`(1 - Q_k)V_H`, :math:`Q_k = \sum_T Q_T`.

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

from msfem import solvers
from msfem.condensation import CellCondensation, CellStore, CondensedCells, SkeletonPattern
from msfem.local import DirichletSolver
from msfem.mesh import StructuredHierarchy
from msfem.methods.base import ElementData, Method, Parameters, register
from msfem.patches import PatchEngine, PatchMesh, Where, nodal_functions
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
        if self.params.layers == 0 and hierarchy.M < 3:
            raise ValueError(f"LOD with layers = 0 needs M >= 3 fine cells per coarse cell (the "
                             f"constraints I_H w = 0 at T's vertices outnumber its interior fine "
                             f"dofs for M = 2); got M = {hierarchy.M}: use layers >= 1 or a "
                             f"larger M")
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
        # every cell of the patches, condensed in one go on the first local() (inside the
        # driver's collective error handling)
        patches = [self._patch_cells(h, int(c))[2] for c in cells]
        engine.region_cache["lod cells"] = np.unique(np.concatenate(patches)) if patches \
            else np.zeros(0, dtype=np.int64)

    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Element correctors :math:`Q_T\lambda_j` on the patch of T; T's element data.

        The saddle-point problem on the patch is solved on its coarse skeleton
        (:mod:`msfem.condensation`): every coarse cell's interior dofs are eliminated once
        per rank and build, whichever patches contain the cell.
        """
        h, bs, p = engine.hierarchy, engine.bs, engine.problem.degree
        lo, hi, cells, at = self._patch_cells(h, cell)
        pm = engine.patch_mesh(tuple(int(s) for s in (hi - lo) * h.M))
        shape = hi - lo
        cond, rows = self._condensed(engine, cells)
        skeleton, node_rows = self._skeleton(engine, pm, lo, hi)
        try:
            y = skeleton.solve(cond.E[rows], cond.F[rows[at]], at, None if skeleton.dense else
                               self._factorisation(engine, (pm.shape, self._touches(h, lo, hi))))
        except solvers.SolverError as err:
            raise solvers.SolverError(f"LOD correctors on {Where(cell, h.coarse_vertices(cell))}"
                                      f": {err}") from err
        w = skeleton.interior(cond, rows, y, at)  # Q_T λ_j on every cell of the patch
        r = w.shape[2]
        Q = np.zeros((skeleton.n_U, r))
        Q[skeleton.cell_dofs.ravel()] = w.reshape(-1, r)
        # element data: rows = the patch's nodes, columns = T's
        K = engine.patch_mesh((h.M,) * h.dim)
        Lam_T = _cell_nodal(K, h, bs)
        A_e = np.zeros((int(np.prod(shape + 1)) * bs, r))
        np.add.at(A_e, node_rows, -np.einsum("ckv,ckj->cvj", cond.Pt[rows], w))
        A_e[node_rows[at]] += cond.Pt[rows[at]].T @ Lam_T
        b_e = np.zeros(len(A_e))
        b_e[node_rows[at]] = Lam_T.T @ engine.cell_values([cell])[0][1]
        trial = -Q
        trial[skeleton.cell_dofs[at]] += self._share(K, cell, h, p, bs)[:, None] * Lam_T
        return ElementData(cell=int(cell), rows=self._rows(engine, cell, lo, hi),
                           cols=engine.cell_dofs[int(cell)], A=A_e, b=b_e,
                           fine_dofs=self._lattice_ids(pm, lo, h, p), trial=trial)

    # ------------------------------------------------------------------ pieces
    #: Sparse factorisations of condensed patch problems kept alive per rank (least recently
    #: used ones are destroyed): one per patch shape and placement kind reuses the symbolic
    #: phase, but every live MUMPS instance holds its factors -- and some hundred of them
    #: crash MUMPS/MPICH.
    SOLVERS_ALIVE = 8

    def _factorisation(self, engine: PatchEngine, key: tuple) -> DirichletSolver:
        """The factorisation of condensed patches with sparsity ``key`` (an LRU per rank)."""
        cache = engine.region_cache.setdefault("lod solvers", {})
        solver = cache.pop(key, None)
        if solver is None:
            symmetric = engine.problem.is_symmetric
            options = {"ksp_type": "preonly", "pc_type": "cholesky" if symmetric else "lu",
                       "pc_factor_mat_solver_type": "mumps", **engine.petsc_options}
            solver = DirichletSolver(symmetric=symmetric, prefix="msfem_lod_",
                                     petsc_options=options)
            while len(cache) >= self.SOLVERS_ALIVE:
                cache.pop(next(iter(cache))).destroy()
        cache[key] = solver  # most recently used last
        return solver

    def _patch_cells(self, h, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The patch box of T, its coarse cells (first axis fastest) and T's position."""
        lo, hi = self.patch_box(h, cell)
        shape = hi - lo
        squares = lo[:, None] + np.array(np.unravel_index(
            np.arange(int(np.prod(shape))), tuple(shape), order="F"))
        cells = np.ravel_multi_index(tuple(squares), tuple(h.N), order="F")
        at = int(np.ravel_multi_index(tuple(np.array(h.coarse_square(cell)[0]) - lo),
                                      tuple(shape), order="F"))
        return lo, hi, cells, at

    def _condensed(self, engine: PatchEngine, cells: np.ndarray
                   ) -> tuple[CondensedCells, np.ndarray]:
        """The condensed coarse cells ``cells`` and their rows (condensed once per build).

        The first call condenses every cell :meth:`prepare` listed; a cell outside that
        list (:meth:`local` called on its own) is condensed and appended when first asked.
        """
        store = engine.region_cache.get("lod condensed")
        if store is None:
            geometry = self._geometry(engine)
            store = engine.region_cache["lod condensed"] = CellStore(
                int(np.prod(engine.hierarchy.N)), lambda todo: geometry.condense(
                    np.stack([v for v, _ in engine.cell_values(todo)])),
                lambda c: str(Where(c, engine.hierarchy.coarse_vertices(c))))
        return store.rows(cells, engine.region_cache.pop("lod cells", None))

    @staticmethod
    def _geometry(engine: PatchEngine) -> CellCondensation:
        """The condensation of a coarse cell: its fine pattern, I_H's rows, the hats."""
        h, bs = engine.hierarchy, engine.bs
        K = engine.patch_mesh((h.M,) * h.dim)  # the mesh of every coarse cell (not moved)
        if ("lod condensation", engine.problem.is_symmetric) not in K.cache:
            K.cache[("lod condensation", engine.problem.is_symmetric)] = CellCondensation(
                *K.block_pattern_arrays(), K.interior, K.boundary,
                projection_matrix(h, engine.problem, engine), _cell_nodal(K, h, bs),
                engine.problem.is_symmetric)
        return K.cache[("lod condensation", engine.problem.is_symmetric)]

    def _skeleton(self, engine: PatchEngine, pm: PatchMesh, lo, hi
                  ) -> tuple[SkeletonPattern, np.ndarray]:
        r"""The skeleton unknowns of a patch and the patch rows of its cells' vertices.

        Unknowns: the dofs interior to U on coarse-cell boundaries, and the multipliers of
        :math:`(I_H w)(z) = 0` at the closed patch's nodes off ∂Ω (the averaging weight
        :math:`1/\#\{T \ni z\}` does not change the constraint and is left out). Cached per
        patch shape and the sides it shares with ∂Ω.
        """
        h, bs = engine.hierarchy, engine.bs
        key = ("lod skeleton", self._touches(h, lo, hi))
        if key in pm.cache:
            return pm.cache[key]
        shape = hi - lo
        corner = np.rint((h.coarse_vertices(0) - h.lower) / h.H).astype(np.int64)
        idx = np.array(list(itertools.product(*[range(int(s) + 1) for s in shape[::-1]])))[:, ::-1]
        free = ~np.any((idx + lo == 0) | (idx + lo == np.array(h.N)), axis=1)  # off ∂Ω
        number = np.where(free, np.cumsum(free) - 1, -1)
        functionals, nodes = [], []
        for i in range(int(np.prod(shape))):
            sq = np.array(np.unravel_index(i, tuple(shape), order="F"))
            vertex = np.ravel_multi_index(tuple((corner + sq).T), tuple(shape + 1), order="F")
            nodes.append(expand_blocks(vertex, bs))
            mult = np.repeat(number[vertex], bs)
            functionals.append(np.where(mult >= 0, mult * bs + np.tile(np.arange(bs),
                                                                       len(vertex)), -1))
        is_free = np.zeros(pm.matrix_shape[0], dtype=bool)
        is_free[pm.interior] = True
        pm.cache[key] = (SkeletonPattern(engine.cell_dofs_in(pm, shape), np.array(functionals),
                                         is_free, self._geometry(engine)), np.array(nodes))
        return pm.cache[key]

    @staticmethod
    def _touches(h, lo, hi) -> tuple:
        """Which sides of Ω the patch [lo, hi) (coarse squares) reaches."""
        return tuple((bool(a == 0), bool(b == n)) for a, b, n in zip(lo, hi, h.N))

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


register("lod", LOD, summary="Localized orthogonal decomposition (Målqvist & Peterseim 2014)")
