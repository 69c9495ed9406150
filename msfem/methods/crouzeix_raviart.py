r"""MsFEM à la Crouzeix--Raviart: Le Bris, Legoll & Lozinski, Chin. Ann. Math. 34B (2013).

The coarse dofs are the means of :math:`u` over the coarse faces F (edges in 2D, points
in 1D). On each coarse cell K, the basis function :math:`\phi_F` of face F solves

.. math::
    -\nabla\cdot(A\nabla\phi_F) = 0 \ \text{in } K, \qquad
    A\nabla\phi_F\cdot n = \lambda_{F'} \ \text{constant on each face } F' \subset \partial K,
    \qquad \frac{1}{|F'|}\int_{F'}\phi_F = \delta_{FF'},

discretised on K's fine sub-grid as the constrained minimisation

.. math::
    \phi_F = \arg\min\Big\{a_K(\phi, \phi):\ \phi \in V_h(K),\
    \frac{1}{|F'|}\int_{F'}\phi = \delta_{FF'}\ \forall F' \subset \partial K\Big\},

i.e. the saddle-point problem

.. math::
    \begin{bmatrix} A_K & C^T \\ C & 0 \end{bmatrix}
    \begin{bmatrix} \Phi \\ \Lambda \end{bmatrix} =
    \begin{bmatrix} 0 \\ I \end{bmatrix}, \qquad
    C_{F'i} = \frac{1}{|F'|}\int_{F'} N_i\,ds,

with :math:`A_K` K's full (Neumann) fine stiffness matrix and :math:`N_i` the fine basis
functions; the multipliers give the constant face fluxes, :math:`A\nabla\phi_F\cdot n =
-\Lambda_{F'F}/|F'|` on :math:`F'` (weakly: the stationarity
:math:`a_K(\phi_F, v) = -\sum_{F'}\Lambda_{F'F}\int_{F'} v/|F'|` for all v).
One factorisation of the block matrix per cell (MUMPS, :class:`msfem.local.ConstrainedSolver`,
the symbolic part reused across the cells of one shape), all faces at once. The load is
not in the basis (plain MsFEM-CR; see ``bubble`` below):
:math:`A_K[F, F'] = a_K(\phi_{F'}, \phi_F)`, :math:`b_K[F] = L_K(\phi_F)`. The method is
nonconforming -- only the face means match across faces -- so its errors are broken
(``reconstruction = "broken"``).

Special cases, both tested (``tests/test_crouzeix_raviart.py``):

* a constant coefficient: :math:`a_K(\lambda_F, v) = \sum_{F'}(A\nabla\lambda_F\cdot n_{F'})
  \int_{F'} v` for the coarse P1 Crouzeix--Raviart function :math:`\lambda_F` (harmonic on
  K, constant flux per face), which vanishes on the constraint kernel, so
  :math:`\phi_F = \lambda_F` (it is in the fine space) and MsFEM-CR *is* the coarse CR FEM
  on triangles (rotated :math:`Q_1` is the analogue on quadrilaterals, not tested);
* 1D: a face is a point and its mean the point value, so :math:`\phi_F` is the
  :math:`a`-harmonic function with nodal values :math:`\delta`: MsFEM-CR is linear MsFEM,
  nodally exact.

**Perforated domains** (Le Bris, Legoll & Lozinski, Multiscale Model. Simul. 12, 2014).
With ``problem.holes`` every fine dof on a removed fine cell is pinned to 0
(:func:`msfem.problem.hole_nodes`): those dofs are dropped from :math:`A_K` and
:math:`C`, so :math:`\phi_F = 0` on the holes and the face means run over the whole face
(zero on its part inside a hole). A face entirely inside a hole (all its fine dofs
pinned) has :math:`\phi_F = 0`: its constraint is dropped and the element puts a
positive diagonal entry on its (zero) row, so the coarse unknown is 0 and the coarse
matrix stays regular. When a hole leaves K so few free dofs that the mean rows of two
faces are dependent, the later face (in K's face order) gets no function on K. On ∂Ω the
coarse Dirichlet value of a face is the mean of g over it (zero on its part in the holes),
:class:`CrouzeixRaviartSpace`.

With ``bubble = true`` (MsFEM-CR-β) the space has one more function per coarse cell, the
bubble :math:`\beta_K` (the same saddle-point matrix, right-hand side
:math:`(\int_K N_i, 0)`; see :class:`CrouzeixRaviartParameters`), which carries the
response to the load inside K -- the part of u that the face functions, harmonic in K,
miss (dominant in perforated domains, where u = O(ε²) between the holes). With
``oversampling = k`` the face problems are posed on K plus k coarse layers and recombined
on K (:class:`CrouzeixRaviartParameters`).

Supported: scalar problems (any UFL form, any Lagrange degree) on structured hierarchies
of intervals, triangles, quadrilaterals, tetrahedra and hexahedra.
"""

from __future__ import annotations

import itertools
from typing import Any

import basix
import dolfinx
import numpy as np
import pydantic
import scipy.sparse as sp
import ufl

from msfem import solvers
from msfem.coarse_space import EntityCoarseSpace
from msfem.local import ConstrainedSolver
from msfem.mesh import StructuredHierarchy
from msfem.methods.base import ElementData, Method, Parameters, register
from msfem.patches import PatchEngine, PatchMesh, Where, to_csr
from msfem.problem import Problem, dirichlet_values, hole_nodes

#: Quadrature degree of the face means of the Dirichlet data g.
FACE_QUADRATURE_DEGREE = 8
#: Coarse facet reference cells by number of vertices (facet dimension, vertices).
_FACET_CELLS = {(1, 2): basix.CellType.interval, (2, 3): basix.CellType.triangle,
                (2, 4): basix.CellType.quadrilateral}


class CrouzeixRaviartParameters(Parameters):
    """Parameters of :class:`CrouzeixRaviart`.

    Attributes:
        bubble: enrich the space with one multiscale bubble per coarse cell (MsFEM-CR-β of
            Le Bris, Legoll & Lozinski): β_K minimises ½ a_K(β, β) − ∫_K β subject to zero
            face means, i.e. −div(A∇β_K) = 1 in K with constant face fluxes; one more coarse
            dof per cell.
        oversampling: coarse layers of the oversampling patch S ⊇ K (0: S = K). The face
            problems are solved on the box S with the means over S's faces (ψ_E minimises
            a_S(ψ, ψ) with mean δ_EE' over each face E' of S) and recombined on K,
            φ_F = Σ_E (V⁻¹)_EF ψ_E|_K with V_F'E the mean of ψ_E over K's face F', so that
            the face means on K are δ_FF' (Le Bris, Legoll & Lozinski 2013). Tensor-product
            cells (the box S has the faces of K), no holes.
    """

    bubble: pydantic.StrictBool = False
    oversampling: int = pydantic.Field(0, ge=0)

    @pydantic.field_validator("oversampling", mode="before")
    @classmethod
    def _integer(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a non-negative integer (coarse layers)")
        return value


class CrouzeixRaviartSpace(EntityCoarseSpace):
    r"""One dof per coarse facet, the face mean; Dirichlet values are face means of g.

    Args:
        hierarchy: the structured hierarchy.
        problem: the problem (its holes zero the Dirichlet data inside them).
        bubble: one more dof per coarse cell (the bubble's coefficient).
    """

    def __init__(self, hierarchy, problem: Problem, bubble: bool = False):
        super().__init__(hierarchy, {hierarchy.dim - 1: 1, hierarchy.dim: int(bubble)})
        self.fdim = hierarchy.dim - 1
        self.holes = problem.holes

    def facet_midpoints(self) -> np.ndarray:
        """Midpoints (n, d) of the owned coarse facets, in the order of the owned dofs."""
        mesh = self.hierarchy.coarse
        n = self.maps[self.fdim].size_local
        facets = np.arange(n, dtype=np.int32)
        order = np.argsort(self.entity_dofs(self.fdim, facets))
        mid = dolfinx.mesh.compute_midpoints(mesh, self.fdim, facets)[:, : self.hierarchy.dim]
        return mid[order]

    def face_means(self, bc, facets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        r""":math:`\frac{1}{|F|}\int_F g\,(1 - \chi_{holes})` on coarse ``facets`` (Gauss rule).

        The facets are affine (simplices) or axis-parallel rectangles, so the Jacobian is
        constant and the mean is the weighted mean of the quadrature values.
        """
        mesh = self.hierarchy.coarse
        nodes = dolfinx.mesh.entities_to_geometry(mesh, self.fdim, facets.astype(np.int32))
        X = mesh.geometry.x[nodes]  # (n, n_nodes, 3)
        n, nv, _ = X.shape
        if self.fdim == 0:
            pts, w = np.zeros((1, 0)), np.ones(1)
            shapes = np.ones((1, 1))
        else:
            rule = basix.make_quadrature(_FACET_CELLS[(self.fdim, nv)],
                                         FACE_QUADRATURE_DEGREE)
            pts, w = np.asarray(rule[0], dtype=float), np.asarray(rule[1], dtype=float)
            if nv == self.fdim + 1:  # simplex: affine map from the reference vertices
                shapes = np.column_stack([1 - pts.sum(axis=1), pts])
            else:  # quadrilateral (dolfinx's tensor-product vertex order)
                s, t = pts[:, 0], pts[:, 1]
                shapes = np.column_stack([(1 - s) * (1 - t), s * (1 - t), (1 - s) * t, s * t])
        x = np.einsum("qv,nvk->knq", shapes, X).reshape(3, -1)  # (3, n * n_q)
        g = dirichlet_values(bc, x, shape)[0]
        if self.holes is not None:
            g = np.where(np.asarray(self.holes.evaluate(x)) > 0.5, 0.0, g)
        return (g.reshape(n, -1) * w).sum(axis=1) / w.sum()

    def dirichlet(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        r"""Owned facet dofs on Γ_D with :math:`U_F = \frac{1}{|F|}\int_F g`."""
        mesh = self.hierarchy.coarse
        rows, vals = [], []
        seen: set[int] = set()
        for bc in problem.dirichlet:
            marker = bc.marker or (lambda x: np.ones(x.shape[1], dtype=bool))
            facets = dolfinx.mesh.locate_entities_boundary(mesh, self.fdim, marker)
            facets = np.array([f for f in facets if f < self.maps[self.fdim].size_local
                               and f not in seen], dtype=np.int32)
            seen.update(facets.tolist())
            if len(facets) == 0:
                continue
            rows.append(self.to_global(self.entity_dofs(self.fdim, facets)))
            vals.append(self.face_means(bc, facets, problem.shape))
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(rows), np.concatenate(vals)


class CrouzeixRaviart(Method):
    """MsFEM à la Crouzeix--Raviart: face-mean dofs, weakly constant face fluxes."""

    name = "crouzeix-raviart"
    Parameters = CrouzeixRaviartParameters
    params: CrouzeixRaviartParameters

    def is_conforming(self, hierarchy) -> bool:
        """Conforming in 1D only (a face mean is a point value); nonconforming otherwise."""
        return hierarchy.dim == 1

    def holes_error(self) -> str | None:
        """MsFEM-CR solves perforated problems (``Problem.holes``)."""
        return None

    def validate(self, hierarchy, problem: Problem) -> None:
        """Scalar problems on structured hierarchies (lattice faces)."""
        if not isinstance(hierarchy, StructuredHierarchy):
            raise ValueError("crouzeix-raviart needs a structured hierarchy (its coarse faces "
                             "are found on the fine lattice); use [mesh] N and M, not a gmsh "
                             "mesh")
        if problem.block_size != 1:
            raise ValueError(f"crouzeix-raviart has one scalar dof per coarse face; the problem "
                             f"has value shape {tuple(problem.shape)} -- use a scalar problem "
                             f"(e.g. diffusion), or 'linear' for elasticity")
        layers = self.params.oversampling
        if layers and hierarchy.cell_type not in ("interval", "quadrilateral", "hexahedron"):
            raise ValueError(f"crouzeix-raviart oversampling needs a box-shaped patch with the "
                             f"faces of K: cell = 'quadrilateral' or 'hexahedron' (or "
                             f"'interval'), not {hierarchy.cell_type!r}; or oversampling = 0")
        if layers and problem.holes is not None:
            raise ValueError("crouzeix-raviart oversampling with holes is not supported; use "
                             "oversampling = 0 (bubble = true is the remedy for holes)")
        if layers >= max(hierarchy.N):
            raise ValueError(f"crouzeix-raviart oversampling = {layers} coarse layers is as "
                             f"large as the domain ({max(hierarchy.N)} coarse cells); choose "
                             f"fewer")

    def coarse_space(self, hierarchy, problem: Problem) -> CrouzeixRaviartSpace:
        """One dof per coarse facet (face means), plus one per cell with bubbles."""
        return CrouzeixRaviartSpace(hierarchy, problem, self.params.bubble)

    def energy_matrix(self, cell: int, engine: PatchEngine) -> sp.csr_matrix:
        """K's fine stiffness matrix, assembled again (spaces without stored ones)."""
        return to_csr(engine.coarse_cell(cell).assemble())

    # ------------------------------------------------------------------ local problems
    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""The face functions :math:`\phi_F` of K (module docstring) and its element data."""
        h, problem = engine.hierarchy, engine.problem
        K = engine.coarse_cell(cell)
        what = Where(cell, h.coarse_vertices(cell))
        R, on_face, centroids = _face_rows(K, h.cell_type, h.coarse_vertices(cell) - K.origin,
                                           float(h.H.max()))
        perm = self._face_order(cell, engine, K, centroids)
        R, on_face = R[perm], [on_face[k] for k in perm]
        A = to_csr(K.assemble())
        n, m = A.shape[0], len(perm)
        swallowed = np.zeros(0, dtype=np.int64)
        if problem.holes is not None:
            pinned = hole_nodes(problem.holes, K.dof_coordinates(), h)
            free = np.flatnonzero(~pinned)
            swallowed = np.flatnonzero([np.all(pinned[d]) for d in on_face])
            kept = _independent(R[:, free], np.setdiff1d(np.arange(m), swallowed))
        else:
            free, kept = np.arange(n), np.arange(m)
        bubble = int(self.params.bubble)
        phi = np.zeros((n, m + bubble))
        faces = kept  # the face functions solved on K
        if self.params.oversampling:
            phi[:, :m] = self._oversampled(cell, engine, K, R, what)
            faces = np.zeros(0, dtype=np.int64)
        if len(kept) and len(faces) + bubble:
            A_ff = A if len(free) == n else A[free][:, free]
            C = sp.csr_matrix(R[kept][:, free])
            # right-hand sides: the face functions (loads 0, means δ), the bubble (load ∫v)
            F = np.zeros((len(free), len(faces) + bubble))
            G = np.zeros((len(kept), len(faces) + bubble))
            G[:, : len(faces)] = np.eye(len(kept))[:, : len(faces)]
            if bubble:
                F[:, -1] = (K.metric_matrices()[0] @ np.ones(n))[free]
            solver = self._solver(engine, K)
            t0 = solver.petsc_seconds
            try:
                solver.set_operators(A_ff, C)
                X, _ = solver.solve(F, G)
            except solvers.SolverError as err:
                raise solvers.SolverError(f"MsFEM-CR local problems on {what}: {err}") from err
            engine.t_petsc += solver.petsc_seconds - t0
            phi[np.ix_(free, np.append(faces, m) if bubble else faces)] = X
        A_e = phi.T @ (A @ phi)
        # faces inside a hole (and a bubble without free dofs): φ = 0, pin the unknown to 0
        zero = np.append(swallowed, [m] if bubble and not phi[:, m].any() else [])
        if len(zero):
            zero = zero.astype(np.int64)
            diag = np.abs(np.diag(A_e))
            A_e[zero, zero] = diag.max() if diag.max() > 0 else 1.0
        dofs = engine.cell_dofs[int(cell)]
        return ElementData(cell=int(cell), rows=dofs, cols=dofs, A=A_e, b=phi.T @ K.load(),
                           fine_dofs=K.lattice_ids(), trial=phi, energy=A,
                           metrics=K.metric_matrices())

    def _oversampled(self, cell: int, engine: PatchEngine, K: PatchMesh, R_K: np.ndarray,
                     what: Where) -> np.ndarray:
        r"""Face functions of K from the face problems on the oversampling box S.

        :math:`\psi_j` minimise :math:`a_S` with the means over S's faces :math:`\delta`
        (S's full fine matrix, assembled on S: its boundary rows are needed), restricted to
        K and recombined by the inverse of their face means on K (``R_K``, rows in K's dof
        order).
        """
        h = engine.hierarchy
        patch = h.patch(cell, self.params.oversampling * h.M)
        S = engine.patch_mesh(patch.shape)
        S.move_to(h.lower + np.array(patch.lo) * h.h)
        box = np.array([c[::-1] for c in itertools.product((0, 1), repeat=h.dim)], dtype=float)
        R_S, _, _ = _face_rows(S, h.cell_type, box * np.array(patch.shape) * h.h,
                               float(h.H.max()))
        solver = self._solver(engine, S)
        t0 = solver.petsc_seconds
        try:
            solver.set_operators(to_csr(S.assemble()), sp.csr_matrix(R_S))
            psi, _ = solver.solve(np.zeros((R_S.shape[1], len(R_S))), np.eye(len(R_S)))
        except solvers.SolverError as err:
            raise solvers.SolverError(f"MsFEM-CR oversampled problems of {what}: {err}") \
                from err
        engine.t_petsc += solver.petsc_seconds - t0
        S_index = K.dof_index + np.array(patch.offset) * engine.problem.degree
        psi_K = psi[S.lookup[np.ravel_multi_index(tuple(S_index.T), S.node_shape, order="F")]]
        V = R_K @ psi_K
        if np.linalg.cond(V) > 1e12:
            raise solvers.SolverError(f"the oversampled face functions of {what} are linearly "
                                      f"dependent on K's faces (cond {np.linalg.cond(V):.1e}); "
                                      f"reduce the oversampling")
        return psi_K @ np.linalg.inv(V)

    @staticmethod
    def _face_order(cell: int, engine: PatchEngine, K: PatchMesh,
                    centroids: np.ndarray) -> np.ndarray:
        """For each of K's coarse facet dofs (``engine.cell_dofs`` order), its face of K.

        The dofs follow dolfinx's local facet order of the coarse cell, which depends on the
        mesh's numbering; the faces are matched by their centroids.
        """
        h = engine.hierarchy
        mesh = h.coarse
        tdim = h.dim
        facets = mesh.topology.connectivity(tdim, tdim - 1).links(engine.local_index[int(cell)])
        mid = dolfinx.mesh.compute_midpoints(mesh, tdim - 1, facets.astype(np.int32))[:, :tdim]
        dist = np.linalg.norm(mid[:, None, :] - (centroids + K.origin)[None], axis=2)
        perm = np.argmin(dist, axis=1)
        if dist[np.arange(len(perm)), perm].max() > 1e-8 * float(h.H.max()) or \
                len(set(perm.tolist())) != len(perm):
            raise RuntimeError(f"coarse cell {cell}: its facets do not match the faces of its "
                               f"fine mesh")
        return perm

    #: Constrained solvers kept per rank (one per K-mesh shape; every live MUMPS instance
    #: holds its factors).
    SOLVERS_ALIVE = 8

    @classmethod
    def _solver(cls, engine: PatchEngine, K: PatchMesh) -> ConstrainedSolver:
        """The constrained solver of K-meshes of this shape (symbolic factorisation reused)."""
        cache = engine.region_cache.setdefault("crouzeix-raviart solvers", {})
        key = id(K)
        solver = cache.pop(key, None)
        if solver is None:
            solver = ConstrainedSolver(symmetric=engine.problem.is_symmetric,
                                       prefix="msfem_cr_", petsc_options=engine.petsc_options)
            while len(cache) >= cls.SOLVERS_ALIVE:
                cache.pop(next(iter(cache))).destroy()
        cache[key] = solver
        return solver


def _independent(C: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The ``candidates`` rows of ``C`` kept in order when independent of the earlier ones.

    Gram--Schmidt with a relative tolerance of 1e-10: a hole may leave K so few free dofs
    that two faces' mean rows are parallel (e.g. one free corner dof shared by two
    faces); the later face then gets no function on K (φ_F = 0 there).
    """
    basis: list[np.ndarray] = []
    kept = []
    for k in candidates:
        r = np.array(C[k], dtype=float)
        norm = np.linalg.norm(r)
        for q in basis:
            r -= (q @ r) * q
        if norm > 0 and np.linalg.norm(r) > 1e-10 * norm:
            basis.append(r / np.linalg.norm(r))
            kept.append(int(k))
    return np.array(kept, dtype=np.int64)


def _faces(cell_type: str, vertices: np.ndarray) -> list[np.ndarray]:
    """Vertex subsets of the faces of a coarse cell: simplices omit one vertex, boxes fix a side."""
    n, d = vertices.shape
    if cell_type in ("interval", "triangle", "tetrahedron"):
        return [np.delete(np.arange(n), k) for k in range(n)]
    faces = []
    for axis, side in itertools.product(range(d), (0, 1)):
        bound = vertices[:, axis].max() if side else vertices[:, axis].min()
        faces.append(np.flatnonzero(np.isclose(vertices[:, axis], bound)))
    return faces


def _on_hyperplane(points: np.ndarray, face: np.ndarray, scale: float) -> np.ndarray:
    """Which ``points`` (n, d) lie on the affine hull of the ``face`` vertices (k, d)."""
    if face.shape[0] == 1:  # 1D: the face is a point
        return np.linalg.norm(points - face[0], axis=1) < 1e-9 * scale
    normal = np.linalg.svd(face[1:] - face[0])[2][-1]
    return np.abs((points - face[0]) @ normal) < 1e-9 * scale


def _face_rows(K: PatchMesh, cell_type: str, vertices: np.ndarray, scale: float
               ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    r"""Face-mean rows :math:`C_{Fi} = \int_F N_i\,ds / |F|` of a patch mesh (cached).

    ``vertices`` are the corners of the cell the mesh fills (K, or the box S), relative to
    the mesh's origin. Returns the rows (n_faces, n_dofs), the dofs lying on each face and
    the face centroids relative to the origin, faces in the order of :func:`_faces`. The
    exterior fine facets are tagged by the face they lie on, and ``v ds(F)`` is compiled
    and assembled once per mesh shape (translation invariant).
    """
    key = ("crouzeix-raviart faces",)
    if key not in K.cache:
        tdim = vertices.shape[1]
        faces = [vertices[f] for f in _faces(cell_type, vertices)]
        mid = dolfinx.mesh.compute_midpoints(K.mesh, tdim - 1, K.exterior)[:, :tdim] - K.origin
        tags = np.zeros(len(K.exterior), dtype=np.int32)
        for k, face in enumerate(faces):
            tags[_on_hyperplane(mid, face, scale)] = k + 1
        if np.any(tags == 0):
            raise RuntimeError("MsFEM-CR: an exterior fine facet of a coarse cell lies on no "
                               "coarse face")
        order = np.argsort(K.exterior)
        mt = dolfinx.mesh.meshtags(K.mesh, tdim - 1, K.exterior[order], tags[order])
        ds = ufl.Measure("ds", domain=K.mesh, subdomain_data=mt)
        v = ufl.TestFunction(K.V)
        rows = np.array([dolfinx.fem.assemble_vector(dolfinx.fem.form(v * ds(k + 1))).array
                         for k in range(len(faces))])
        rows /= rows.sum(axis=1, keepdims=True)  # Σ_i ∫_F N_i = |F|
        on_face = [np.flatnonzero(_on_hyperplane(K.rel_coords, face, scale)) for face in faces]
        K.cache[key] = (rows, on_face, np.array([f.mean(axis=0) for f in faces]))
    rows, on_face, centroids = K.cache[key]
    return rows, on_face, centroids


register("crouzeix-raviart", CrouzeixRaviart,
         summary="MsFEM à la Crouzeix-Raviart (Le Bris, Legoll & Lozinski 2013): face means")
