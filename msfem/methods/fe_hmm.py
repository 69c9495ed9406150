r"""FE heterogeneous multiscale method (FE-HMM): Abdulle, GAKUTO Int. Ser. 31 (2009).

Macro space :math:`V_H`: P1/Q1 on the coarse mesh. In every coarse cell K, macro
quadrature points :math:`x_{K,l}` with weights :math:`\omega_{K,l}` (the 2^d-point Gauss
rule on boxes, the centroid on simplices); around each, a *sampling domain*
:math:`K_\delta = x_{K,l} + \delta(-\tfrac12, \tfrac12)^d` with :math:`\delta \ge
\varepsilon` (``delta`` = δ/ε). For a macro function :math:`v_H`, the micro function
:math:`v_h = v_{lin} + \tilde v` on :math:`K_\delta` solves

.. math::
    a_{K_\delta}(v_h, z) = 0 \quad \forall z \in W(K_\delta), \qquad
    v_{lin}(x) = v_H(x_{K,l}) + \nabla v_H(x_{K,l})\cdot(x - x_{K,l}),

with :math:`W` the periodic functions on :math:`K_\delta` (``micro_bc = "periodic"``) or
those vanishing on :math:`\partial K_\delta` (``"dirichlet"``), on a micro lattice of
``cells_per_eps`` cells per ε (h ≪ ε). The macro bilinear form is

.. math::
    B_H(v_H, w_H) = \sum_K \sum_l \frac{\omega_{K,l}}{|K_\delta|}
    a_{K_\delta}(v_h, w_h).

Because :math:`v_h` depends linearly on the affine data :math:`(v_H(x_{K,l}), \nabla
v_H(x_{K,l}))`, each sampling domain solves the micro problem once per affine basis
function :math:`p \in \{\mathbf e_c, \mathbf e_c (x_k - x_{K,l,k})\}` (one
factorisation, all right-hand sides) and keeps the matrix :math:`E_l = |K_\delta|^{-1}
[a(p_a + \tilde p_a, p_b + \tilde p_b)]_{ab}`; then :math:`A_K = \sum_l \omega_{K,l}
Q_l^T E_l Q_l` with :math:`Q_l` the affine data of K's macro basis at :math:`x_{K,l}`.
For diffusion, :math:`E_l` restricted to the gradients is the *effective tensor of the
sampling domain*: with periodic conditions and δ/ε an integer on a periodic coefficient it
is the homogenized :math:`A^*` (up to the micro discretisation), so FE-HMM is the
homogenized FE solution; with Dirichlet conditions it carries a boundary-layer error
:math:`O(\varepsilon/\delta)`. The load is :math:`(f, w_H)` by the same macro rule.

The micro meshes are ``COMM_SELF`` lattices, 8 sampling domains per mesh (measured:
8-16 is fastest), its forms compiled once and moved from batch to batch (the coefficient
is re-sampled there: locally periodic a(x, x/ε) and random fields work alike); one
block-diagonal factorisation per batch, its symbolic part reused. With cell-wise constant
data the micro forms use quadrature degree 2p (exact on lattice cells), and with
coefficients sampled per cell the micro matrix is the affine function
:math:`A_0 + \sum_c a_c K_c` of the cell values (:class:`_CoefficientModel`, checked
against an assembly on the first batch); for symmetric forms the batch's reduced matrix,
right-hand sides and :math:`P^T A P` are then one sparse product with the cell values
(:meth:`_CoefficientModel.reduced`) and :math:`E = P^T A P - \mathrm{rhs}^T X`.
There is no fine basis on K (``ElementData.trial`` is ``None``): the multiscale solution
is the macro function u_H, compared with references by interpolation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Literal

import dolfinx
import numpy as np
import pydantic
import scipy.sparse as sp
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from msfem import solvers
from msfem.coefficients import ConstantField
from msfem.local import DirichletSolver
from msfem.mesh import create_lattice_mesh
from msfem.methods.base import ElementData, Method, Parameters, register
from msfem.patches import PatchEngine, to_csr
from msfem.problem import Problem

#: The Gauss rule per direction on boxes: points ±1/√3 (degree 3, exact for Q1 × Q1).
_GAUSS = np.array([-1.0, 1.0]) / math.sqrt(3.0)


class FEHMMParameters(Parameters):
    """Parameters of :class:`FEHMM`.

    Attributes:
        delta: δ/ε, the size of the sampling domains in units of the coefficient's scale
            ε (at least 1).
        micro_bc: boundary condition of the micro fluctuations: ``"periodic"`` or
            ``"dirichlet"``.
        cells_per_eps: micro cells per ε and direction (h = ε / cells_per_eps).
        quadrature: macro quadrature: ``"gauss"`` (2^d points; boxes) or ``"centroid"``
            (one point); ``None``: Gauss on boxes, centroid on simplices.
    """

    delta: float = pydantic.Field(1.0, ge=1.0)
    micro_bc: Literal["periodic", "dirichlet"] = "periodic"
    cells_per_eps: int = pydantic.Field(16, ge=2)
    quadrature: Literal["gauss", "centroid"] | None = None


class FEHMM(Method):
    """FE-HMM: macro element matrices from micro problems on sampling domains."""

    name = "fe-hmm"
    Parameters = FEHMMParameters
    params: FEHMMParameters
    fine_scale_on_hierarchy = False  # the micro meshes resolve ε (cells_per_eps)

    def __init__(self, params: FEHMMParameters | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._micro: _SamplingDomain | None = None
        self.timings: dict[str, float] = {}
        self.micro_problems = 0

    def is_conforming(self, hierarchy) -> bool:
        """The macro space is the conforming P1/Q1 space (no fine basis, though)."""
        return False

    # ------------------------------------------------------------------ protocol
    def validate(self, hierarchy, problem: Problem) -> None:
        """A coefficient with a scale ε, a load f given as a field, Gauss points on boxes."""
        if scale(problem) is None:
            raise ValueError("fe-hmm needs a coefficient with a scale eps (the sampling "
                             "domains have size delta * eps); give the Field an eps")
        if problem.linear is not None or problem.neumann:
            raise ValueError("fe-hmm takes the load as a source f (Problem.source); loads "
                             "given as Problem.linear or Neumann data are not supported")
        if self._rule(hierarchy) == "gauss" and hierarchy.cell_type not in (
                "interval", "quadrilateral", "hexahedron"):
            raise ValueError(f"quadrature = 'gauss' is the tensor rule of boxes; use "
                             f"quadrature = 'centroid' on {hierarchy.cell_type} cells")

    def prepare(self, engine: PatchEngine, cells: np.ndarray) -> None:
        """The micro mesh and its forms (once per rank)."""
        self.timings = {"micro assembly": 0.0, "micro solve": 0.0, "macro": 0.0}
        self.micro_problems = 0
        if self._micro is None or self._micro.problem is not engine.problem:
            self._micro = _SamplingDomain(engine.hierarchy, engine.problem, self.params)

    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Element matrix :math:`\sum_l \omega_l Q_l^T E_l Q_l` and load of coarse cell K."""
        return self.local_batch(np.array([cell]), engine)[0]

    def local_batch(self, cells: np.ndarray, engine: PatchEngine) -> list[ElementData]:
        """Element data of several cells: their sampling domains in batches of copies."""
        h, problem = engine.hierarchy, engine.problem
        if self._micro is None:
            self.prepare(engine, np.asarray(cells))
        assert self._micro is not None
        rule = self._rule(h)
        bs, d = problem.block_size, h.dim
        verts = np.array([h.coarse_vertices(int(c)) for c in cells])  # (C, nv, d)
        shift = verts[:, 0] - verts[0, 0]
        if np.allclose(verts - shift[:, None], verts[0]):  # translates of one cell (lattice)
            points, weights = macro_quadrature(verts[0], rule)
            P = len(points)
            centres = (points[None] + shift[:, None]).reshape(-1, d)
            E = self._micro.effective(centres, lambda k: f"sampling domain at x = "
                                      f"{centres[k]} of coarse cell {cells[k // P]}")
            t0 = time.perf_counter()
            Q = self._affine_data(verts[0], points, bs)  # (P, (d+1) bs, nv bs)
            QtE = np.einsum("pki,cpkl->cpil", Q, E.reshape(len(cells), P, *E.shape[1:]))
            A_all = np.einsum("p,cpil,plj->cij", weights, QtE, Q)
            N = shape_functions(verts[0], points)[0]  # (P, nv)
            f = field_values(problem.source, centres, bs).reshape(len(cells), P, bs)
            b_all = np.zeros((len(cells), N.shape[1] * bs))
            for comp in range(bs):
                b_all[:, comp::bs] = (f[:, :, comp] * weights) @ N
            out = [ElementData(cell=int(c), rows=engine.cell_dofs[int(c)],
                               cols=engine.cell_dofs[int(c)], A=A_all[i], b=b_all[i])
                   for i, c in enumerate(cells)]
        else:
            quad = [macro_quadrature(v, rule) for v in verts]
            centres = np.vstack([q[0] for q in quad])
            owner = np.repeat([int(c) for c in cells], [len(q[1]) for q in quad])
            E = self._micro.effective(centres, lambda k: f"sampling domain at x = "
                                      f"{centres[k]} of coarse cell {owner[k]}")
            t0 = time.perf_counter()
            out, k = [], 0
            for c, v, (points, weights) in zip(cells, verts, quad):
                P = len(points)
                Q = self._affine_data(v, points, bs)
                N = shape_functions(v, points)[0]
                f = field_values(problem.source, points, bs)  # (P, bs)
                b = np.zeros(N.shape[1] * bs)
                for comp in range(bs):
                    b[comp::bs] = (weights * f[:, comp]) @ N
                A = np.tensordot(weights, Q.transpose(0, 2, 1) @ E[k:k + P] @ Q, axes=1)
                k += P
                dofs = engine.cell_dofs[int(c)]
                out.append(ElementData(cell=int(c), rows=dofs, cols=dofs, A=A, b=b))
        self.timings["macro"] += time.perf_counter() - t0
        self.timings["micro assembly"] = self._micro.t_assemble
        self.timings["micro solve"] = self._micro.t_solve
        self.micro_problems = self._micro.count
        return out

    @staticmethod
    def _affine_data(vertices: np.ndarray, points: np.ndarray, bs: int) -> np.ndarray:
        """Q (P, (d+1) bs, nv bs): the macro basis functions' values and gradients.

        At ``points``, in the order of the micro problems' affine data.
        """
        N, G = shape_functions(vertices, points)  # (P, nv), (P, nv, d)
        P, nv, d = G.shape
        Q = np.zeros((P, (d + 1) * bs, nv * bs))
        for comp in range(bs):
            Q[:, comp * (d + 1), comp::bs] = N
            Q[:, comp * (d + 1) + 1:(comp + 1) * (d + 1), comp::bs] = G.transpose(0, 2, 1)
        return Q

    def energy_matrix(self, cell: int, engine: PatchEngine) -> None:
        """No fine matrix on K: FE-HMM has no fine basis."""
        return None

    def _rule(self, hierarchy) -> str:
        if self.params.quadrature is not None:
            return self.params.quadrature
        return "gauss" if hierarchy.cell_type in ("interval", "quadrilateral", "hexahedron") \
            else "centroid"


register("fe-hmm", FEHMM, summary="FE heterogeneous multiscale method (Abdulle 2009)")


def scale(problem: Problem) -> float | None:
    """The scale ε of the problem's coefficients (the first one that has one)."""
    for f in problem.coefficients.values():
        eps = getattr(f, "eps", None)
        if eps:
            return float(eps)
    return None


# ---------------------------------------------------------------------------- macro
def macro_quadrature(vertices: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, d) and weights (n,) of the macro rule on the cell with ``vertices``.

    ``"gauss"``: the 2^d-point tensor Gauss rule on an axis-aligned box; ``"centroid"``:
    the centroid with the cell's volume.
    """
    d = vertices.shape[1]
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    if rule == "gauss":
        xi = np.array(np.meshgrid(*[_GAUSS] * d, indexing="ij")).reshape(d, -1).T
        points = (lo + hi) / 2 + xi * (hi - lo) / 2
        return points, np.full(len(points), np.prod(hi - lo) / len(points))
    if len(vertices) == d + 1:  # simplex
        T = (vertices[1:] - vertices[0]).T
        volume = abs(np.linalg.det(T)) / math.factorial(d)
    else:
        volume = float(np.prod(hi - lo))
    return vertices.mean(axis=0)[None, :], np.array([volume])


def shape_functions(vertices: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Values and gradients at ``x`` of the P1/Q1 nodal basis of a cell.

    ``x`` is one point (d,) -- values (nv,), gradients (nv, d) -- or several (P, d) --
    values (P, nv), gradients (P, nv, d). Boxes: :math:`N_i = \prod_k \tfrac12(1 +
    s_{ik}\xi_k)`, :math:`\xi = 2(x - c)/H`, :math:`s_i = \mathrm{sign}(x_i - c)`;
    simplices: barycentric coordinates.
    """
    X = np.atleast_2d(np.asarray(x, dtype=float))
    nv, d = vertices.shape
    if nv == d + 1:  # simplex: λ = T⁻¹(x − v₀), gradients constant
        Tinv = np.linalg.inv((vertices[1:] - vertices[0]).T)
        lam = (X - vertices[0]) @ Tinv.T
        N = np.hstack([1.0 - lam.sum(axis=1, keepdims=True), lam])
        G = np.broadcast_to(np.vstack([-Tinv.sum(axis=0), Tinv]), (len(X), nv, d)).copy()
    else:
        c = vertices.mean(axis=0)
        H = vertices.max(axis=0) - vertices.min(axis=0)
        s = np.sign(vertices - c)
        f = (1 + s[None] * (2 * (X - c) / H)[:, None, :]) / 2  # (P, nv, d)
        N = f.prod(axis=2)
        G = np.empty((len(X), nv, d))
        for k in range(d):
            others = np.prod(np.delete(f, k, axis=2), axis=2) if d > 1 else 1.0
            G[:, :, k] = s[:, k] / H[k] * others
    return (N[0], G[0]) if np.ndim(x) == 1 else (N, G)


def field_values(value: Any, points: np.ndarray, bs: int) -> np.ndarray:
    """A load (a :class:`~msfem.coefficients.Field`, a number or a vector) at ``points``.

    ``points`` has shape (n, d); returns shape (n, bs). ``None`` is zero.
    """
    n = len(points)
    if value is None:
        return np.zeros((n, bs))
    if hasattr(value, "evaluate"):
        x = np.zeros((3, n))
        x[: points.shape[1]] = points.T
        values = np.asarray(value.evaluate(x), dtype=float)
        return values.reshape(-1, n).T if values.size == n * bs else \
            np.broadcast_to(values.reshape(-1, 1), (n, bs)).copy()
    return np.broadcast_to(np.asarray(value, dtype=float).ravel(), (n, bs)).copy()


class _CoefficientModel:
    r"""The micro matrix as an affine function of the sampled (DG0) coefficients.

    For a form affine in its cell-wise constant coefficients :math:`a_j`,
    :math:`A(a) = A_0 + \sum_j \sum_c a_{j,c} K_{j,c}` with :math:`K_{j,c}` the element
    matrix of cell c for :math:`a_j = 1`. The :math:`K_{j,c}` come from one assembly per
    colour of cells that share no dof (lattice cells: 2^d times the simplices per square)
    and coefficient, so a batch of sampling domains costs a field evaluation at the cell
    midpoints and one scatter-add instead of moving the mesh and assembling. The model is
    checked against a real assembly on the first batch (and dropped if it does not match).
    """

    def __init__(self, dom: _SamplingDomain, fields: list, A0: np.ndarray,
                 terms: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 pattern: tuple[np.ndarray, np.ndarray, tuple[int, int]]):
        self.fields, self.A0, self.terms, self.pattern = fields, A0, terms, pattern
        geo = dom.mesh.geometry.dofmaps[0]
        self.mid_local = dom.x_local[geo].mean(axis=1)  # cell midpoints in their copy
        self.cell_copy = dom.node_copy[geo[:, 0]]

    @classmethod
    def build(cls, dom: _SamplingDomain) -> _CoefficientModel | None:
        """The model of ``dom``'s form, or ``None`` (vector-valued sampled coefficients)."""
        fields = [f for f in dom.disc.fields.values() if f.function is not None]
        if not fields or any(f.field.shape for f in fields):
            return None
        mesh, V = dom.mesh, dom.V
        tdim = mesh.topology.dim
        n_cells = mesh.topology.index_map(tdim).size_local
        cell_dofs = V.dofmap.list[:n_cells]
        bs = V.dofmap.index_map_bs
        if n_cells * (cell_dofs.shape[1] * bs) ** 2 * len(fields) > dom.MAX_MODEL_ENTRIES:
            return None  # too much memory: assemble every batch instead
        geo = mesh.geometry.dofmaps[0][:n_cells]
        colour = _colour(dom.x_local[geo], dom.node_copy[geo[:, 0]])
        functions = [f.function for f in fields if f.function is not None]
        saved = [u.x.array.copy() for u in functions]

        def assemble() -> sp.csr_matrix:
            dom.A.zeroEntries()
            dolfinx.fem.petsc.assemble_matrix(dom.A, dom.disc.a)  # type: ignore[arg-type]
            dom.A.assemble()
            indptr, indices, data = dom.A.getValuesCSR()
            return sp.csr_matrix((data.copy(), indices.copy(), indptr.copy()),
                                 shape=dom.A.getSize())

        for u in functions:
            u.x.array[:] = 0.0
        A0 = assemble()
        # every cell's (row, col) pairs -> positions in A's CSR values
        dofs = (cell_dofs[:, :, None] * bs + np.arange(bs)).reshape(n_cells, -1)
        rows = np.repeat(dofs, dofs.shape[1], axis=1)
        cols = np.tile(dofs, (1, dofs.shape[1]))
        N = A0.shape[1]
        keys = np.repeat(np.arange(A0.shape[0]), np.diff(A0.indptr)) * N + A0.indices
        pos = np.searchsorted(keys, (rows * N + cols).ravel())
        cell = np.repeat(np.arange(n_cells), dofs.shape[1] ** 2)
        terms = []
        for u in functions:
            values = np.zeros(len(pos))
            dof0 = u.function_space.dofmap.list[:n_cells, 0]
            for k in np.unique(colour):
                u.x.array[:] = 0.0
                u.x.array[dof0[colour == k]] = 1.0
                data = assemble().data - A0.data
                mine = colour[cell] == k
                values[mine] = data[pos[mine]]
            u.x.array[:] = 0.0
            terms.append((pos, cell, values))
        for u, x in zip(functions, saved):
            u.x.array[:] = x
        return cls(dom, fields, A0.data, terms, (A0.indices, A0.indptr, A0.shape))

    def cell_values(self, corners: np.ndarray) -> list[np.ndarray]:
        """Each field's value at the cell midpoints, copies' corners at ``corners``."""
        x = self.mid_local + corners[self.cell_copy]
        X = np.zeros((3, len(x)))
        X[: x.shape[1]] = x.T
        return [np.asarray(f.field.evaluate(X), dtype=float).ravel() for f in self.fields]

    def matrix(self, corners: np.ndarray) -> sp.csr_matrix:
        """The micro matrix with the copies' corners at ``corners`` (copies, d)."""
        data = self.A0.copy()
        for a, (pos, cell, values) in zip(self.cell_values(corners), self.terms):
            data += np.bincount(pos, weights=a[cell] * values, minlength=len(data))
        indices, indptr, shape = self.pattern
        return sp.csr_matrix((data, indices, indptr), shape=shape)

    def reduced(self, dom: _SamplingDomain) -> tuple[sp.csr_matrix, np.ndarray]:
        r"""The batch's reduced system as one linear map of the cells' coefficient values.

        With :math:`A = A_0 + \sum_c a_c K_c` everything the batch needs is affine in the
        values :math:`a_c`: the reduced matrix :math:`R^T A R` (CSR values in ``dom``'s
        reduction pattern), the right-hand sides :math:`-R^T A P` and, per copy,
        :math:`P^T A P`. Returns (M, y0) with ``[values, rhs, PᵀAP] = M a + y0``.
        """
        red, pattern = dom._reduction
        assert pattern is not None, "the reduction pattern comes from the first batch"
        keep, target, _, r_indices, _ = pattern
        nnz_red, P = len(r_indices), dom.P_aff_b
        k, B = P.shape[1], dom.copies
        n_rhs = int(red.max() + 1) * k
        indices, indptr, shape = self.pattern
        row_of = np.repeat(np.arange(shape[0]), np.diff(indptr))
        to_red = np.full(len(self.A0), -1, dtype=np.int64)
        to_red[np.flatnonzero(keep)] = target
        n_cells = len(self.cell_copy)
        rows, cols, vals = [], [], []
        for fi, (pos, cell, values) in enumerate(self.terms):
            col = fi * n_cells + cell
            r, c = row_of[pos], indices[pos]
            t = to_red[pos]
            ok = t >= 0
            rows.append(t[ok])
            cols.append(col[ok])
            vals.append(values[ok])
            rr = red[r]
            ok = rr >= 0  # rhs[red(r), j] -= A_rc P[c, j]
            rows.append((nnz_red + rr[ok][:, None] * k + np.arange(k)).ravel())
            cols.append(np.repeat(col[ok], k))
            vals.append((-values[ok][:, None] * P[c[ok]]).ravel())
            # (PᵀAP)_ij of the cell's copy, summed per cell first: one bincount
            local = (values[:, None, None] * P[r][:, :, None] * P[c][:, None, :]).reshape(
                len(values), k * k)
            g = np.bincount((cell[:, None] * (k * k) + np.arange(k * k)).ravel(),
                            weights=local.ravel(), minlength=n_cells * k * k)
            rows.append((nnz_red + n_rhs + self.cell_copy[:, None] * (k * k)
                         + np.arange(k * k)).ravel())
            cols.append(np.repeat(fi * n_cells + np.arange(n_cells), k * k))
            vals.append(g)
        M = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(nnz_red + n_rhs + B * k * k, len(self.terms) * n_cells))
        A0 = sp.csr_matrix((self.A0, indices, indptr), shape=shape)
        A0P = A0 @ P
        y0 = np.concatenate([
            np.bincount(target, weights=self.A0[keep], minlength=nnz_red),
            -(dom.Rb.T @ A0P).ravel(),
            np.einsum("bnj,bnl->bjl", dom.P_box,
                      A0P[dom.order].reshape(B, -1, k)).ravel()])
        return M, y0


def _colour(x_cells: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Colours of lattice cells such that cells of one colour share no dof.

    ``x_cells`` (n_cells, n_vertices, d): the cells' vertices in their own lattice;
    ``group`` (n_cells,): which lattice (copy) each cell is in -- copies share no dof. A
    cell's colour is the parity of its lattice square per axis and its rank among the
    cells of that square (the simplices of a Kuhn split): squares of equal parity are two
    apart and share no dof.
    """
    lo = x_cells.min(axis=1)
    step = (x_cells.max(axis=1) - lo).max(axis=0)  # the lattice spacing per axis
    square = np.floor((lo - lo.min(axis=0)) / step + 0.5).astype(np.int64)
    parity = (square % 2) @ (2 ** np.arange(square.shape[1]))
    mid = x_cells.mean(axis=1)
    order = np.lexsort((*mid.T[::-1], *square.T[::-1], group))
    key = np.column_stack([group, square])[order]
    first = np.r_[True, np.any(key[1:] != key[:-1], axis=1)]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(key)), 0))
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = np.arange(len(key)) - group_start
    return parity * (rank.max() + 1) + rank


def piecewise_constant(disc) -> bool:
    """Whether the bilinear form of a Discretisation has cell-wise constant data only.

    Every coefficient sampled (DG0) or constant, and no spatial coordinate in the form:
    then a quadrature of degree 2p integrates it exactly on affine cells.
    """
    from ufl.algorithms.analysis import extract_type

    if extract_type(disc.a_ufl, ufl.SpatialCoordinate):
        return False
    return all(f.function is not None or isinstance(f.field, ConstantField)
               for f in disc.fields.values())


# ---------------------------------------------------------------------------- micro
class _SamplingDomain:
    r"""``copies`` micro lattices :math:`K_\delta` in one ``COMM_SELF`` mesh.

    The copies are disjoint boxes, each moved to one macro point: one re-sampling of the
    coefficients, one assembly, one block-diagonal factorisation (the symbolic part reused
    from batch to batch) and one solve serve ``copies`` sampling domains.
    :meth:`effective` returns :math:`E = |K_\delta|^{-1} U^T A U` per domain, with
    :math:`U = P_{aff} + R\,X` the micro solutions of the affine data.
    """

    #: Cells of the batch mesh at most (the number of copies adapts to the micro mesh).
    MAX_BATCH_CELLS = 200_000
    #: Element-matrix entries of the affine coefficient model at most (memory).
    MAX_MODEL_ENTRIES = 20_000_000

    def __init__(self, hierarchy, problem: Problem, params: FEHMMParameters,
                 copies: int = 8):
        eps = scale(problem)
        assert eps is not None
        d, bs = hierarchy.dim, problem.block_size
        n = max(2, int(round(params.delta * params.cells_per_eps)))
        cells_per_box = n ** d * math.factorial(d) if hierarchy.cell_type in (
            "triangle", "tetrahedron") else n ** d
        copies = int(min(copies, max(1, self.MAX_BATCH_CELLS // cells_per_box)))
        self.delta, self.problem, self.copies, self.bs = params.delta * eps, problem, copies, bs
        one, _ = create_lattice_mesh(MPI.COMM_SELF, hierarchy.cell_type, (n,) * d,
                                     [self.delta / n] * d)
        V1 = problem.function_space(one)
        x1 = V1.tabulate_dof_coordinates()[:, :d]
        self.volume = self.delta ** d
        # the affine functions e_c, e_c (x_k - centre_k) at one box's dofs
        nb = len(x1)
        self.P_aff = np.zeros((nb * bs, (d + 1) * bs))
        for c in range(bs):
            self.P_aff[c::bs, c * (d + 1)] = 1.0
            self.P_aff[c::bs, c * (d + 1) + 1:(c + 1) * (d + 1)] = x1 - self.delta / 2
        if params.micro_bc == "periodic":
            from msfem.homogenization.periodic import periodic_map

            pmap = periodic_map(V1)
            P = to_csr(pmap.P)
            free = np.setdiff1d(np.arange(P.shape[1]), pmap.corner_dofs)
            R1 = P[:, free].tocsr()  # fluctuation = R x (corner pinned: no kernel)
            pmap.destroy()
        else:
            one.topology.create_connectivity(d - 1, d)
            facets = dolfinx.mesh.exterior_facet_indices(one.topology)
            bd = dolfinx.fem.locate_dofs_topological(V1, d - 1, facets)
            inner = np.setdiff1d(np.arange(nb), bd)
            dofs = (inner[:, None] * bs + np.arange(bs)).ravel()
            R1 = sp.csr_matrix((np.ones(len(dofs)), (dofs, np.arange(len(dofs)))),
                               shape=(nb * bs, len(dofs)))
        self.R1 = R1
        self.R = sp.block_diag([R1] * copies, format="csr")
        # the batch mesh: ``copies`` translates of the box, pitch 2δ along x_0
        pitch = 2 * self.delta
        g1 = one.geometry
        n_nodes = len(g1.x)
        xs = np.vstack([g1.x[:, :d] + np.eye(d)[0] * pitch * b for b in range(copies)])
        cells = np.vstack([g1.dofmaps[0] + b * n_nodes for b in range(copies)])
        domain = one.ufl_domain()
        assert domain is not None  # a UFL domain of its own (forms must not mix meshes)
        self.mesh = dolfinx.mesh.create_mesh(MPI.COMM_SELF, cells.astype(np.int64),
                                             ufl.Mesh(domain.ufl_coordinate_element()), xs)
        original = np.asarray(self.mesh.geometry.input_global_indices, dtype=np.int64)
        self.node_copy = original // n_nodes
        self.x_local = g1.x[original % n_nodes, :d]  # node positions inside its box
        self.V = problem.function_space(self.mesh)
        none = np.zeros(0, dtype=np.int32)
        self.disc = problem.discretise(self.V, boundary_facets=lambda marker: none)
        if piecewise_constant(self.disc) and problem.quadrature_degree is None:
            # exact with 2p (products of two degree-p functions on affine lattice cells):
            # a quarter (2D) of the default rule's points
            self.disc = dataclasses.replace(problem, quadrature_degree=2 * problem.degree
                                            ).discretise(self.V, boundary_facets=lambda m: none)
        self.A = dolfinx.fem.petsc.create_matrix(self.disc.a)
        # batch dofs -> (copy, dof of one box): by position (any Lagrange degree)
        xb = self.V.tabulate_dof_coordinates()[:, :d]
        copy = np.floor(xb[:, 0] / pitch + 0.25).astype(np.int64)
        rel = xb - np.outer(copy, np.eye(d)[0] * pitch)
        step = self.delta / (n * problem.degree)
        key = lambda x: np.ravel_multi_index(  # noqa: E731
            tuple(np.rint(x / step).astype(np.int64).T), (n * problem.degree + 1,) * d)
        lookup = np.empty(int((n * problem.degree + 1) ** d), dtype=np.int64)
        lookup[key(x1)] = np.arange(nb)
        block = copy * nb + lookup[key(rel)]  # box-order block of every batch dof block
        box = (block[:, None] * bs + np.arange(bs)).ravel()  # batch dof -> box-order dof
        # the reduction A_red = Rᵀ A R as a scatter-add of A's values (fixed pattern):
        # R has one unit entry per row (periodic master or interior dof), or none (pinned)
        Rb = self.R[box].tocsr()  # R in the batch dof order
        red = np.full(Rb.shape[0], -1, dtype=np.int64)
        has = np.diff(Rb.indptr) > 0
        red[has] = Rb.indices[Rb.indptr[:-1][has]]
        self.Rb = Rb
        self.P_aff_b = np.tile(self.P_aff, (copies, 1))[box]
        self.order = np.argsort(box)  # batch dofs in box order (copy-major)
        self.dof_copy = box // (nb * bs)  # the copy of every batch dof
        self._reduction: tuple[np.ndarray, tuple | None] = (red, None)
        self.solver = DirichletSolver(symmetric=problem.is_symmetric, prefix="msfem_micro_")
        # the affine data per copy, (copies, n, k) in box order (E = Pᵀ A U per copy)
        self.P_box = self.P_aff_b[self.order].reshape(copies, nb * bs, -1)
        self.t_assemble = self.t_solve = 0.0
        self.count = 0
        self.model = _CoefficientModel.build(self) if piecewise_constant(self.disc) else None
        self._validated = False
        self._linear: tuple[sp.csr_matrix, np.ndarray] | None = None

    def _reduce(self, A: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """:math:`R^T A R` by one scatter-add of A's values (the pattern computed once).

        Returns its CSR (values, indptr, indices, size); the index arrays are the same
        objects on every call.
        """
        red, pattern = self._reduction
        if pattern is None:
            rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
            r, c = red[rows], red[A.indices]
            keep = (r >= 0) & (c >= 0)
            m = int(red.max()) + 1
            flat = r[keep] * m + c[keep]
            unique, target = np.unique(flat, return_inverse=True)
            indptr = np.searchsorted(unique // m, np.arange(m + 1)).astype(PETSc.IntType)
            pattern = (keep, target, indptr, (unique % m).astype(PETSc.IntType), m)
            self._reduction = (red, pattern)
        keep, target, indptr, indices, m = pattern
        data = np.bincount(target, weights=A.data[keep], minlength=len(indices))
        return data, indptr, indices, m

    def _micro_solve(self, data: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                     rhs: np.ndarray, n: int, what) -> np.ndarray:
        """Factorise the batch's reduced matrix (CSR) and solve for all affine data."""
        m = self.R1.shape[1]
        self.last = (data, indptr, indices, len(indptr) - 1, rhs, m)  # (benchmarks slice it)
        try:
            self.solver.set_values(indptr, indices, data)  # numeric phase after the first
            return self.solver.solve(rhs)
        except solvers.SolverError as err:
            raise solvers.SolverError(f"fe-hmm: micro problems of the {what(0)} ... (batch of "
                                      f"{n}): {err}; is the coefficient positive there?") from err

    def _rhs_X(self, rhs: np.ndarray, X: np.ndarray) -> np.ndarray:
        r""":math:`\mathrm{rhs}^T X` per copy, shape (copies, k, k)."""
        B, m, k = self.copies, self.R1.shape[1], X.shape[1]
        return np.einsum("bmj,bml->bjl", rhs.reshape(B, m, k), X.reshape(B, m, k))

    def _solve_linear(self, corners: np.ndarray, n: int, t0: float, what) -> np.ndarray:
        r""":meth:`_batch` from :meth:`_CoefficientModel.reduced` (symmetric forms).

        :math:`E = P^T A U = P^T A P - \mathrm{rhs}^T X` per copy (see :meth:`_batch`).
        """
        assert self._linear is not None and self.model is not None
        M, y0 = self._linear
        y = M @ np.concatenate(self.model.cell_values(corners)) + y0
        _, pattern = self._reduction
        assert pattern is not None
        _, _, indptr, indices, _ = pattern
        nnz, (B, k), m = len(indices), (self.copies, self.P_aff.shape[1]), self.R1.shape[1]
        rhs = y[nnz:nnz + B * m * k].reshape(B * m, k)
        PtAP = y[nnz + B * m * k:].reshape(B, k, k)
        t1 = time.perf_counter()
        self.t_assemble += t1 - t0
        X = self._micro_solve(y[:nnz], indptr, indices, rhs, n, what)
        E = (PtAP - self._rhs_X(rhs, X)) / self.volume
        self.t_solve += time.perf_counter() - t1
        self.count += n
        return E[:n]

    def effective(self, centres: np.ndarray, what) -> np.ndarray:
        """:math:`E` of the sampling domains centred at ``centres`` (n, d); (n, k, k)."""
        k = self.P_aff.shape[1]
        out = np.empty((len(centres), k, k))
        for start in range(0, len(centres), self.copies):
            batch = centres[start:start + self.copies]
            out[start:start + len(batch)] = self._batch(batch, lambda j: what(start + j))
        return out

    def _batch(self, centres: np.ndarray, what) -> np.ndarray:
        t0 = time.perf_counter()
        B, d = self.copies, centres.shape[1]
        where = np.vstack([centres, np.repeat(centres[-1:], B - len(centres), axis=0)])
        corners = where - self.delta / 2
        if self._linear is not None:  # the reduced system from the cells' coefficients
            return self._solve_linear(corners, len(centres), t0, what)
        if self.model is not None and self._validated:
            A = self.model.matrix(corners)  # the matrix from the coefficients' cell values
        else:
            self.mesh.geometry.x[:, :d] = self.x_local + corners[self.node_copy]
            self.disc.refresh()
            self.A.zeroEntries()
            dolfinx.fem.petsc.assemble_matrix(self.A, self.disc.a)  # type: ignore[arg-type]
            self.A.assemble()
            indptr, indices, data = self.A.getValuesCSR()
            A = sp.csr_matrix((data, indices, indptr), shape=self.A.getSize())
            if self.model is not None:  # check the affine model once, on real data
                scale = np.abs(A.data).max()
                if np.abs(self.model.matrix(corners).data - A.data).max() > 1e-12 * scale:
                    self.model = None  # the form is not affine in its sampled coefficients
                self._validated = True
        data, indptr, indices, _ = self._reduce(A)
        AP = A @ self.P_aff_b
        rhs = -(self.Rb.T @ AP)
        t1 = time.perf_counter()
        self.t_assemble += t1 - t0
        X = self._micro_solve(data, indptr, indices, rhs, len(centres), what)
        n, k = self.P_aff.shape
        APr = AP[self.order].reshape(B, n, k)
        E = np.einsum("bnj,bnl->bjl", self.P_box, APr)  # Pᵀ A P per copy
        if self.problem.is_symmetric:
            # E = Pᵀ A U with U = P + R X and Rᵀ A U = 0; Pᵀ A R X = (Rᵀ A P)ᵀ X = -rhsᵀ X
            E -= self._rhs_X(rhs, X)
        else:
            ARX = (A @ (self.Rb @ X))[self.order].reshape(B, n, k)
            E += np.einsum("bnj,bnl->bjl", self.P_box, ARX)
        E /= self.volume
        self.t_solve += time.perf_counter() - t1
        if self.model is not None and self._validated and self.problem.is_symmetric:
            self._linear = self.model.reduced(self)  # later batches: one product
        self.count += len(centres)
        return E[: len(centres)]
