r"""Static condensation of coarse-cell interiors: patch problems on the coarse skeleton.

A patch U is a union of coarse cells c, and a fine dof interior to a coarse cell is interior
to every patch that contains the cell. Constrained patch problems of the form

.. math::
    \begin{bmatrix} A_U & C_U^T \\ C_U & 0 \end{bmatrix}
    \begin{bmatrix} w \\ \mu \end{bmatrix} = \begin{bmatrix} r \\ 0 \end{bmatrix},
    \qquad A_U = \sum_{c \subset U} A^c, \quad
    C_U = \sum_{c \subset U} E_c^T R\, ,

(:math:`A^c` the fine matrix of cell c, R a fixed set of m linear functionals on a cell's
fine dofs, e.g. the :math:`L^2` projection onto Q1 at its vertices, :math:`E_c` placing
them among the patch's multipliers; w = 0 on ∂U) are solved by eliminating every cell's
interior dofs I once per cell, whichever patch the cell belongs to:

.. math::
    w_I = Z_r - Z \begin{bmatrix} w_B \\ \mu_c \end{bmatrix}, \qquad
    Z = A_{II}^{-1} \begin{bmatrix} A_{IB} & R_I^T \end{bmatrix}, \quad
    Z_r = A_{II}^{-1} r_I,

which leaves on every cell the condensed operator and right-hand side on its boundary dofs
B and its m functionals,

.. math::
    E_c = \begin{bmatrix} A_{BB} - A_{BI} Z_1 & R_B^T - A_{BI} Z_2 \\
                          R_B - R_I Z_1 & -R_I Z_2 \end{bmatrix}, \qquad
    F_c = \begin{bmatrix} r_B - A_{BI} Z_r \\ -R_I Z_r \end{bmatrix}.

A patch problem is then :math:`\sum_c E_c` on the skeleton dofs interior to U and the
patch's multipliers -- for LOD with one layer 184 + 16 unknowns instead of 2209 + 16, and
the cells' eliminations are shared by the :math:`(2k+1)^d` patches containing them. The
cells' interior blocks are factorised together as one banded block-diagonal matrix (reverse
Cuthill--McKee order; LAPACK ``pbtrf`` for symmetric forms, ``gbtrf`` otherwise). A
skeleton problem of at most :data:`DENSE_MAX` unknowns is solved dense through the Schur
complement on the multipliers,
:math:`x_S = S^{-1}(F_S - E_{S\mu}\mu)`,
:math:`(E_{\mu S}S^{-1}E_{S\mu} - E_{\mu\mu})\mu = E_{\mu S}S^{-1}F_S - F_\mu`
(S by Cholesky or LU), a larger one as a sparse matrix by the caller's factorisation
(LOD: MUMPS, one symbolic phase per patch sparsity).

Memory: per cell :math:`n_I (n_B + m + r)` doubles for Z (2D Q1, 16 x 16 fine cells per
coarse cell, scalar: 130 kB).

Unconstrained Dirichlet problems (MsFEM's oversampled local problems:
:math:`A_U\psi = 0` inside U, :math:`\psi = g` on ∂U) need only the Schur complements
:math:`E_c = A_{BB} - A_{BI}A_{II}^{-1}A_{IB}` (:meth:`CellCondensation.schur`; for
symmetric cells :math:`A_{II} = LL^T`, :math:`W = L^{-1}A_{IB}`, :math:`E_c = A_{BB} -
W^TW`, a forward solve only). The skeleton problem
:math:`(\sum_c E_c)_{SS}\,\psi_S = -\sum_c (E_c g_c)_S` is solved by
:meth:`SkeletonPattern.dirichlet`, and the function is extended into a cell by
:math:`\psi_I = -A_{II}^{-1}A_{IB}\psi_B` (:meth:`CellSchur.extend`, from the kept
banded factors: per cell :math:`n_I(b + 1)` doubles, b the bandwidth, instead of Z).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, TypeVar

import numpy as np
import scipy.linalg
import scipy.linalg.lapack as lapack
import scipy.sparse as sp
from petsc4py import PETSc
from scipy.sparse.csgraph import reverse_cuthill_mckee

from msfem.local import DirichletSolver
from msfem.solvers import SolverError

__all__ = ["CellCondensation", "CellSchur", "CellStore", "CondensedCells", "SingularCell",
           "SkeletonPattern"]

#: Largest condensed patch problem solved as a dense matrix; above it a sparse factorisation
#: (MUMPS) is faster. Measured on Hou-Wu, 16 x 16 fine cells per coarse cell, one rank:
#: n = 200 (LOD k = 1): dense 0.49 ms, MUMPS LDL^T 1.18 ms; n = 652 (k = 2): 6.9 ms against
#: 3.6 ms; n = 1360 (k = 3): 34 ms against 8.3 ms.
DENSE_MAX = 400
#: Bytes of right-hand sides per LAPACK call when condensing cells: the banded solves are
#: level-2 (each right-hand side streams the factors), so a chunk of cells is kept small
#: enough for the core's cache. Hou-Wu, 16 x 16 fine cells per coarse cell, one rank: the
#: Schur complements take 0.35 ms per cell in chunks of 128 cells (factors 3.9 MB), 0.26 ms
#: one cell at a time; 32 x 32: 8.1 against 3.3 ms.
CHUNK_BYTES = 512 * 1024


def _block_diagonal(data: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    shape: tuple[int, int]) -> sp.csr_matrix:
    """One sparse matrix with the blocks ``data`` (n_c, nnz) of pattern (rows, cols)."""
    n_c = data.shape[0]
    r = (rows[None, :] + shape[0] * np.arange(n_c)[:, None]).ravel()
    c = (cols[None, :] + shape[1] * np.arange(n_c)[:, None]).ravel()
    return sp.csr_matrix((data.ravel(), (r, c)), shape=(n_c * shape[0], n_c * shape[1]))


class CellCondensation:
    r"""The condensation of one cell geometry (its fine pattern and functionals R).

    Args:
        indices, indptr: the CSR pattern of a cell's fine matrix :math:`A^c` (n_K dofs).
        interior, boundary: the cell's interior and boundary dofs (sorted, disjoint).
        R: the m functionals, shape (m, n_K).
        trial: the r functions whose right-hand sides :math:`A^c \Lambda` are condensed
            too, shape (n_K, r).
        symmetric: whether every :math:`A^c` is symmetric (Cholesky instead of LU).
    """

    def __init__(self, indices: np.ndarray, indptr: np.ndarray, interior: np.ndarray,
                 boundary: np.ndarray, R: np.ndarray, trial: np.ndarray, symmetric: bool):
        n_K = len(indptr) - 1
        self.n_K, self.symmetric = n_K, symmetric
        self.interior, self.boundary = np.asarray(interior), np.asarray(boundary)
        self.R, self.trial = np.asarray(R, dtype=float), np.asarray(trial, dtype=float)
        self.m, self.r = self.R.shape[0], self.trial.shape[1]
        rows = np.repeat(np.arange(n_K), np.diff(indptr))
        cols = np.asarray(indices, dtype=np.int64)
        self.rows, self.cols = rows, cols
        where = np.full(n_K, -1, dtype=np.int64)
        kind = np.zeros(n_K, dtype=np.int8)  # 0 interior, 1 boundary
        where[self.interior] = np.arange(len(self.interior))
        where[self.boundary] = np.arange(len(self.boundary))
        kind[self.boundary] = 1
        self.n_I, self.n_B = len(self.interior), len(self.boundary)

        def block(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            sel = np.flatnonzero((kind[rows] == a) & (kind[cols] == b))
            return sel, where[rows[sel]], where[cols[sel]]

        self.II, self.IB, self.BI, self.BB = block(0, 0), block(0, 1), block(1, 0), block(1, 1)
        # banded storage of A_II in reverse Cuthill--McKee order
        _, i, j = self.II
        pattern = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(self.n_I, self.n_I))
        perm = reverse_cuthill_mckee(pattern + pattern.T, symmetric_mode=True)
        self.perm = np.asarray(perm, dtype=np.int64)  # new position -> interior index
        self.inv = np.empty_like(self.perm)
        self.inv[self.perm] = np.arange(self.n_I)
        pi, pj = self.inv[i], self.inv[j]
        self.band = int(np.max(np.abs(pi - pj))) if len(pi) else 0
        if symmetric:
            lower = pi >= pj
            self._band_sel = self.II[0][lower]
            self._band_at = (pi[lower] - pj[lower], pj[lower])
        else:
            kl = ku = self.band
            self._band_sel = self.II[0]
            self._band_at = (kl + ku + pi - pj, pj)
        self.R_I, self.R_B = self.R[:, self.interior], self.R[:, self.boundary]

    @property
    def n_condensed(self) -> int:
        """Unknowns of a condensed cell: boundary dofs and functionals (n_B + m)."""
        return self.n_B + self.m

    def condense(self, values: np.ndarray) -> CondensedCells:
        """Condense cells with fine-matrix values ``values`` (n_c, nnz), in chunks."""
        values = np.atleast_2d(values)
        n_c, n_I, n = len(values), self.n_I, self.n_condensed
        out = CondensedCells(self, np.empty((n_c, n_I, n)), np.empty((n_c, n_I, self.r)),
                             np.empty((n_c, n, n)), np.empty((n_c, n, self.r)),
                             np.empty((n_c, self.n_K, self.r)))
        chunk = self._chunk_cells(n + self.r)
        for a in range(0, n_c, chunk):
            self._chunk(values[a:a + chunk], out, a)
        return out

    def _chunk(self, V: np.ndarray, out: CondensedCells, at: int) -> None:
        """Condense the cells ``V`` into ``out`` from row ``at`` on."""
        n_c, n_I, n_B, m, r = len(V), self.n_I, self.n_B, self.m, self.r
        # right-hand sides of the interior solves: [A_IB | R_I^T | (A Λ)_I], permuted
        P = _block_diagonal(V, self.rows, self.cols, (self.n_K, self.n_K)) @ \
            np.tile(self.trial, (n_c, 1))  # A^c Λ, stacked
        P = P.reshape(n_c, self.n_K, r)
        rhs = np.zeros((n_c, n_I, n_B + m + r))
        sel, i, j = self.IB
        rhs[:, i, j] = V[:, sel]
        rhs[:, :, n_B:n_B + m] = self.R_I.T
        rhs[:, :, n_B + m:] = P[:, self.interior]
        rhs = rhs[:, self.perm].reshape(n_c * n_I, -1)
        Z = self._interior_solve(V, rhs, at).reshape(n_c, n_I, -1)[:, self.inv]
        # condensed operators and right-hand sides
        sel, i, j = self.BI
        W = (_block_diagonal(V[:, sel], i, j, (n_B, n_I)) @ Z.reshape(n_c * n_I, -1)
             ).reshape(n_c, n_B, -1)
        U = np.matmul(self.R_I, Z)  # (n_c, m, n_B + m + r)
        cut = slice(at, at + n_c)
        E = out.E[cut]
        E[:, :n_B, :n_B] = -W[:, :, :n_B]
        sel, i, j = self.BB
        E[:, i, j] += V[:, sel]  # (the pairs (i, j) are distinct)
        E[:, :n_B, n_B:] = self.R_B.T - W[:, :, n_B:n_B + m]
        E[:, n_B:, :n_B] = self.R_B - U[:, :, :n_B]
        E[:, n_B:, n_B:] = -U[:, :, n_B:n_B + m]
        out.F[cut, :n_B] = P[:, self.boundary] - W[:, :, n_B + m:]
        out.F[cut, n_B:] = -U[:, :, n_B + m:]
        # the functions' weak form against the cells' test dofs: (Λ^T A^c)^T = A^c^T Λ
        if self.symmetric:
            out.Pt[cut] = P
        else:
            out.Pt[cut] = (_block_diagonal(V, self.cols, self.rows, (self.n_K, self.n_K))
                           @ np.tile(self.trial, (n_c, 1))).reshape(n_c, self.n_K, r)
        out.Z[cut] = Z[:, :, :n_B + m]
        out.Z_r[cut] = Z[:, :, n_B + m:]

    def schur(self, values: np.ndarray) -> CellSchur:
        r"""Schur complements :math:`A_{BB} - A_{BI}A_{II}^{-1}A_{IB}` of cells ``values``.

        Keeps the banded factors of every :math:`A_{II}` for :meth:`CellSchur.extend`
        (memory per cell: the band, not :math:`A_{II}^{-1}A_{IB}`). Symmetric cells need
        the forward solve only: :math:`A_{II} = LL^T`, :math:`W = L^{-1}A_{IB}`,
        :math:`E = A_{BB} - W^TW` (LAPACK ``tbtrs`` and one batched product).
        """
        values = np.atleast_2d(values)
        n_c, n_I, n_B = len(values), self.n_I, self.n_B
        rows = self.band + 1 if self.symmetric else 3 * self.band + 1
        out = CellSchur(self, np.empty((n_c, n_B, n_B)),
                        np.empty((n_c, n_I, rows)),
                        None if self.symmetric else np.empty((n_c, n_I), dtype=np.int32))
        sel_bb, i_bb, j_bb = self.BB
        chunk = self._chunk_cells(n_B)
        for a in range(0, n_c, chunk):
            V = values[a:a + chunk]
            cut = slice(a, a + len(V))
            rhs = self._interior_rhs(V)
            factor, pivots = self._factorise(V, a)
            if self.symmetric:
                W, info = lapack.dtbtrs(factor, rhs, uplo=b"L")
                self._check(info)
                W = W.reshape(len(V), n_I, n_B)
                out.E[cut] = -np.matmul(W.transpose(0, 2, 1), W)
            else:
                assert pivots is not None and out.pivots is not None
                Z = self._solve(factor, pivots, rhs).reshape(len(V), n_I, n_B)[:, self.inv]
                sel, i, j = self.BI
                out.E[cut] = -(_block_diagonal(V[:, sel], i, j, (n_B, n_I))
                               @ Z.reshape(-1, n_B)).reshape(len(V), n_B, n_B)
                out.pivots[cut] = (pivots.reshape(len(V), n_I)
                                   - n_I * np.arange(len(V))[:, None])
            out.E[cut][:, i_bb, j_bb] += V[:, sel_bb]  # (the pairs (i, j) are distinct)
            out.factors[cut] = factor.T.reshape(len(V), n_I, rows)  # (a view: F-ordered band)
        return out

    def _chunk_cells(self, columns: int) -> int:
        """Cells per LAPACK call with ``columns`` right-hand sides (:data:`CHUNK_BYTES`)."""
        return max(1, CHUNK_BYTES // (8 * max(1, self.n_I * columns)))

    def _interior_rhs(self, V: np.ndarray) -> np.ndarray:
        """:math:`A_{IB}` of the cells ``V`` stacked, rows in banded order (n_c n_I, n_B)."""
        rhs = np.zeros((len(V), self.n_I, self.n_B))
        sel, i, j = self.IB
        rhs[:, i, j] = V[:, sel]
        return rhs[:, self.perm].reshape(-1, self.n_B)

    def _interior_solve(self, V: np.ndarray, rhs: np.ndarray, first: int = 0) -> np.ndarray:
        """:math:`A_{II}^{-1}` rhs for all cells of a chunk: one banded factorisation."""
        return self._solve(*self._factorise(V, first), rhs)

    def _factorise(self, V: np.ndarray, first: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Banded factors of the cells' :math:`A_{II}` as one block-diagonal band.

        Returns LAPACK's band array (rows, n_c n_I) and, non-symmetric, its pivots. A
        singular block raises :class:`SingularCell` with its position (``first`` + index
        in ``V``).
        """
        n_c, n_I, b = len(V), self.n_I, self.band
        rows = b + 1 if self.symmetric else 3 * b + 1
        band = np.zeros((rows, n_c, n_I), order="C")
        d, j = self._band_at
        band[d[:, None], np.arange(n_c)[None, :], j[:, None]] = V[:, self._band_sel].T
        ab = band.reshape(rows, n_c * n_I)
        if self.symmetric:
            c, info = lapack.dpbtrf(ab, lower=1)
            piv = None
        else:
            c, piv, info = lapack.dgbtrf(ab, b, b)
        if info > 0:  # the failing pivot's row: its cell
            raise SingularCell(first + (info - 1) // n_I)
        self._check(info)
        return c, piv

    def _solve(self, factor: np.ndarray, pivots: np.ndarray | None, rhs: np.ndarray
               ) -> np.ndarray:
        """Solve with the banded factors of :meth:`_factorise`."""
        if pivots is None:
            x, info = lapack.dpbtrs(factor, rhs, lower=1)
        else:
            x, info = lapack.dgbtrs(factor, self.band, self.band, rhs, pivots)
        self._check(info)
        return x

    @staticmethod
    def _check(info: int) -> None:
        if info != 0:
            raise SolverError(f"LAPACK banded solve failed (info {info})")


class SingularCell(SolverError):
    """A cell whose interior block is singular or not positive definite.

    Attributes:
        cell: its position among the condensed cells.
    """

    def __init__(self, cell: int):
        self.cell = int(cell)
        super().__init__(f"the interior block of a coarse cell (number {cell} of those "
                         f"condensed) is singular or not positive definite; check that the "
                         f"coefficients are positive")


@dataclass
class CondensedCells:
    r"""Condensed cells (arrays over the cells, in the order they were condensed).

    Attributes:
        geometry: the :class:`CellCondensation`.
        Z: (n_c, n_I, n_B + m) -- :math:`A_{II}^{-1}[A_{IB}\ R_I^T]`.
        Z_r: (n_c, n_I, r) -- :math:`A_{II}^{-1}(A^c\Lambda)_I`.
        E: (n_c, n_B + m, n_B + m) condensed operators.
        F: (n_c, n_B + m, r) condensed right-hand sides of :math:`A^c\Lambda`.
        Pt: (n_c, n_K, r) -- :math:`(A^c)^T\Lambda` (the functions' weak form).
    """

    geometry: CellCondensation
    Z: np.ndarray
    Z_r: np.ndarray
    E: np.ndarray
    F: np.ndarray
    Pt: np.ndarray


@dataclass
class CellSchur:
    r"""Schur complements of cells on their boundary dofs (:meth:`CellCondensation.schur`).

    Attributes:
        geometry: the :class:`CellCondensation`.
        E: (n_c, n_B, n_B) -- :math:`A_{BB} - A_{BI}A_{II}^{-1}A_{IB}`.
        factors: (n_c, n_I, band rows) LAPACK band factors of :math:`A_{II}` (banded order;
            ``factors[c].T`` is LAPACK's Fortran-ordered band array).
        pivots: (n_c, n_I) their pivots (LU, non-symmetric cells), or ``None`` (Cholesky).
    """

    geometry: CellCondensation
    E: np.ndarray
    factors: np.ndarray
    pivots: np.ndarray | None

    def extend(self, rows: np.ndarray, values: np.ndarray, boundary: np.ndarray
               ) -> np.ndarray:
        r"""The discrete harmonic extension into cells ``rows`` of ``boundary`` (B, n_B, r).

        ``values`` (B, nnz): those cells' fine-matrix values (the caller holds them; not
        kept here). Returns the cells' full vectors (B, n_K, r):
        :math:`w_B = g`, :math:`w_I = -A_{II}^{-1}A_{IB}\,g` -- banded solves with the
        kept factors.
        """
        g = self.geometry
        rows = np.asarray(rows)
        B, r = len(rows), boundary.shape[2]
        sel, i, j = g.IB
        A_IB = _block_diagonal(np.asarray(values)[:, sel], i, j, (g.n_I, g.n_B))
        rhs = -(A_IB @ boundary.reshape(B * g.n_B, r)).reshape(B, g.n_I, r)[:, g.perm]
        x = np.empty((B, g.n_I, r))
        chunk = g._chunk_cells(self.factors.shape[2])  # (each right-hand side streams them)
        for a in range(0, B, chunk):
            part = rows[a:a + chunk]
            factor = self.factors[part].reshape(-1, self.factors.shape[2]).T  # F-ordered
            pivots = None if self.pivots is None else (
                self.pivots[part] + g.n_I * np.arange(len(part))[:, None]
            ).astype(np.int32).ravel()
            x[a:a + chunk] = g._solve(factor, pivots, rhs[a:a + chunk].reshape(-1, r)
                                      ).reshape(len(part), g.n_I, r)
        w = np.empty((B, g.n_K, r))
        w[:, g.interior] = x[:, g.inv]
        w[:, g.boundary] = boundary
        return w


Cells = TypeVar("Cells", CondensedCells, CellSchur)


class CellStore(Generic[Cells]):
    """Condensed cells of one rank and build, looked up by coarse cell, condensed on demand.

    Args:
        n_cells: coarse cells of the hierarchy (global numbering).
        condense: condenses a sorted array of coarse cells (a :class:`CondensedCells` or
            :class:`CellSchur` with one row per cell, in that order).
        where: names a coarse cell in errors (default: its number).
    """

    def __init__(self, n_cells: int, condense: Callable[[np.ndarray], Cells],
                 where: Callable[[int], str] = lambda c: f"coarse cell {c}"):
        self.index = np.full(n_cells, -1, dtype=np.int64)
        self.condense: Callable[[np.ndarray], Cells] = condense
        self.where = where
        self.cells: Cells | None = None

    def rows(self, cells: np.ndarray, prefetch: np.ndarray | None = None
             ) -> tuple[Cells, np.ndarray]:
        """The condensed cells and the rows of ``cells`` in them.

        Missing cells (and every missing cell of ``prefetch``, to condense in one go) are
        condensed and appended.
        """
        cells = np.asarray(cells, dtype=np.int64)
        if np.any(self.index[cells] < 0):
            todo = np.unique(np.concatenate([cells, np.asarray(
                [] if prefetch is None else prefetch, dtype=np.int64)]))
            todo = todo[self.index[todo] < 0]
            try:
                new = self.condense(todo)
            except SingularCell as err:
                raise SolverError(f"local problems on {self.where(int(todo[err.cell]))}: its "
                                  f"interior block is singular or not positive definite; "
                                  f"check that the coefficients are positive there") from err
            old = self.cells
            if old is not None:  # every array field grows by the new cells' rows
                grown: dict[str, Any] = {
                    f.name: np.concatenate([getattr(old, f.name), getattr(new, f.name)])
                    for f in fields(new) if isinstance(getattr(new, f.name), np.ndarray)}
                new = replace(new, **grown)
            self.index[todo] = len(new.E) - len(todo) + np.arange(len(todo))
            self.cells = new
        assert self.cells is not None
        return self.cells, self.index[cells]


class SkeletonPattern:
    r"""The condensed unknowns of one patch shape: skeleton dofs and multipliers.

    Args:
        cell_dofs: (n_cells, n_K) the patch dof of every cell dof (cells of the patch in
            a fixed order).
        cell_functionals: (n_cells, m) the patch multiplier of every cell functional, -1
            where the functional is not constrained (e.g. a node on the Dirichlet boundary).
        free: (n_U,) bool, the patch dofs that are unknowns (not on ∂U).
        geometry: the cells' :class:`CellCondensation`.
    """

    def __init__(self, cell_dofs: np.ndarray, cell_functionals: np.ndarray, free: np.ndarray,
                 geometry: CellCondensation):
        g = geometry
        self.cell_dofs, self.n_U = cell_dofs, len(free)
        bdofs = cell_dofs[:, g.boundary]
        skeleton = np.unique(bdofs[free[bdofs]])
        self.n_S = len(skeleton)
        at = np.full(self.n_U, -1, dtype=np.int64)
        at[skeleton] = np.arange(self.n_S)
        n_mu = int(cell_functionals.max()) + 1 if cell_functionals.size else 0
        self.n_mu = n_mu
        n = self.n_S + n_mu
        self.n = n
        local = np.concatenate([at[bdofs], np.where(cell_functionals >= 0,
                                                    self.n_S + cell_functionals, -1)], axis=1)
        self.local = np.where(local >= 0, local, n)  # (n_cells, n_B + m); n: dropped
        loc = self.local
        self.pairs = (loc[:, :, None] * (n + 1) + loc[:, None, :]).ravel()
        self.symmetric = g.symmetric
        self._csr: tuple[np.ndarray, np.ndarray] | None = None
        self._slot = np.zeros(0, dtype=np.int64)

    @property
    def dense(self) -> bool:
        """Whether the condensed problem is solved as a dense matrix (small patches)."""
        return self.n <= DENSE_MAX

    def csr_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, indices) of the condensed patch matrix (the union of its cells' blocks)."""
        if self._csr is None:
            n = self.n
            keys = self.pairs[(self.pairs // (n + 1) < n) & (self.pairs % (n + 1) < n)]
            keys = np.unique(keys)
            rows, cols = keys // (n + 1), keys % (n + 1)
            indptr = np.searchsorted(rows, np.arange(n + 1)).astype(PETSc.IntType)
            self._csr = (indptr, cols.astype(PETSc.IntType))
            slot = np.searchsorted(keys, self.pairs)
            valid = (slot < len(keys)) & (keys[np.minimum(slot, len(keys) - 1)] == self.pairs)
            self._slot = np.where(valid, slot, len(keys))
        return self._csr

    def solve(self, E: np.ndarray, F: np.ndarray, at: int,
              factorisation: DirichletSolver | None = None) -> np.ndarray:
        r"""Solve the patch's condensed problem; cell ``at`` (position) carries the load.

        ``E`` (n_cells, n_B + m, n_B + m) are the cells' condensed operators in the order of
        ``cell_dofs``, ``F`` (n_B + m, r) the loaded cell's right-hand side. Small problems
        (:attr:`dense`) by LAPACK, larger ones by the sparse ``factorisation`` (one per
        pattern reuses its symbolic phase). Returns the condensed solution per cell,
        (n_cells, n_B + m, r), zero at dropped unknowns.
        """
        rhs = np.zeros((self.n + 1, F.shape[1]))
        rhs[self.local[at]] = F
        return self._solve(E, rhs, factorisation)

    def dirichlet(self, E: np.ndarray, G: np.ndarray,
                  factorisation: DirichletSolver | None = None) -> np.ndarray:
        r"""The patch problem :math:`\sum_c E_c` with values ``G`` on its dropped dofs.

        ``G`` (n_cells, n_B, r): every cell's boundary values, zero at skeleton unknowns
        (e.g. Dirichlet data on ∂U). Solves :math:`S x = -\sum_c E_c g_c` on the skeleton
        (no multipliers, m = 0) and returns every cell's boundary values (n_cells, n_B, r):
        the solution at unknowns, ``G`` elsewhere.
        """
        if self.n_mu:
            raise ValueError("SkeletonPattern.dirichlet: a pattern without multipliers only")
        r = G.shape[2]
        rhs = np.zeros((self.n + 1, r))
        np.add.at(rhs, self.local.ravel(), -np.matmul(E, G).reshape(-1, r))
        return self._solve(E, rhs, factorisation) + G

    def _solve(self, E: np.ndarray, rhs: np.ndarray, factorisation: DirichletSolver | None
               ) -> np.ndarray:
        """Assemble the cells' ``E`` and solve with the summed ``rhs`` (n + 1, r)."""
        n = self.n
        x = np.zeros_like(rhs)
        if self.dense:
            K = np.bincount(self.pairs, weights=E.ravel(), minlength=(n + 1) ** 2)
            x[:n] = self._dense_solve(K.reshape(n + 1, n + 1)[:n, :n], rhs[:n])
        else:
            if factorisation is None:
                raise ValueError("a condensed problem of this size needs a sparse factorisation")
            indptr, indices = self.csr_pattern()
            values = np.bincount(self._slot, weights=E.ravel(), minlength=len(indices) + 1)
            factorisation.set_values(indptr, indices, values[:len(indices)])
            x[:n] = factorisation.solve(rhs[:n])
        return x[self.local]

    def _dense_solve(self, K: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """Schur complement on the multipliers; S by Cholesky (symmetric) or LU."""
        n_S, r = self.n_S, rhs.shape[1]
        S, G1, G2, D = K[:n_S, :n_S], K[:n_S, n_S:], K[n_S:, :n_S], K[n_S:, n_S:]
        try:
            if self.symmetric:
                fac = scipy.linalg.cho_factor(S, lower=True, check_finite=False)
                inv = scipy.linalg.cho_solve(fac, np.hstack([rhs[:n_S], G1]),
                                             check_finite=False)
            else:
                lu = scipy.linalg.lu_factor(S, check_finite=False)
                inv = scipy.linalg.lu_solve(lu, np.hstack([rhs[:n_S], G1]), check_finite=False)
            if not self.n_mu:
                return inv[:, :r]
            mu = scipy.linalg.solve(G2 @ inv[:, r:] - D, G2 @ inv[:, :r] - rhs[n_S:],
                                    assume_a="sym" if self.symmetric else "gen",
                                    check_finite=False)
        except (np.linalg.LinAlgError, ValueError) as err:
            raise SolverError(f"condensed skeleton problem: {err}") from err
        return np.vstack([inv[:, :r] - inv[:, r:] @ mu, mu])

    def interior(self, cells: CondensedCells, rows: np.ndarray, y: np.ndarray, at: int
                 ) -> np.ndarray:
        """The fine solution on every cell's dofs, (n_cells, n_K, r), from the condensed ``y``.

        ``rows``: the cells' rows in ``cells`` (patch order); cell ``at`` carries the load.
        """
        g = cells.geometry
        w = np.empty((len(rows), g.n_K, y.shape[2]))
        w_I = -np.matmul(cells.Z[rows], y)
        w_I[at] += cells.Z_r[rows[at]]
        w[:, g.interior] = w_I
        w[:, g.boundary] = y[:, :g.n_B]
        return w
