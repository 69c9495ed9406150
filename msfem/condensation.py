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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack as lapack
import scipy.sparse as sp
from petsc4py import PETSc
from scipy.sparse.csgraph import reverse_cuthill_mckee

from msfem.local import DirichletSolver
from msfem.solvers import SolverError

__all__ = ["CellCondensation", "CondensedCells", "SkeletonPattern"]

#: Largest condensed patch problem solved as a dense matrix; above it a sparse factorisation
#: (MUMPS) is faster. Measured on Hou-Wu, 16 x 16 fine cells per coarse cell, one rank:
#: n = 200 (LOD k = 1): dense 0.49 ms, MUMPS LDL^T 1.18 ms; n = 652 (k = 2): 6.9 ms against
#: 3.6 ms; n = 1360 (k = 3): 34 ms against 8.3 ms.
DENSE_MAX = 400
#: Cells condensed per LAPACK call (bounds the temporaries: ~25 MB for 2D Q1, M = 16).
CHUNK = 128


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
        for a in range(0, n_c, CHUNK):
            self._chunk(values[a:a + CHUNK], out, a)
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
        Z = self._interior_solve(V, rhs).reshape(n_c, n_I, -1)[:, self.inv]
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

    def _interior_solve(self, V: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """:math:`A_{II}^{-1}` rhs for all cells of a chunk: one banded factorisation."""
        n_c, n_I, b = len(V), self.n_I, self.band
        rows = b + 1 if self.symmetric else 3 * b + 1
        band = np.zeros((rows, n_c, n_I), order="C")
        d, j = self._band_at
        band[d[:, None], np.arange(n_c)[None, :], j[:, None]] = V[:, self._band_sel].T
        ab = band.reshape(rows, n_c * n_I)
        if self.symmetric:
            c, info = lapack.dpbtrf(ab, lower=1)
            if info == 0:
                x, info = lapack.dpbtrs(c, rhs, lower=1)
        else:
            lu, piv, info = lapack.dgbtrf(ab, b, b)
            if info == 0:
                x, info = lapack.dgbtrs(lu, b, b, rhs, piv)
        if info != 0:
            raise SolverError(f"the interior block of a coarse cell is singular or not "
                              f"positive definite (LAPACK info {info}); check that the "
                              f"coefficients are positive")
        return x


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
        n, r = self.n, F.shape[1]
        rhs = np.zeros((n + 1, r))
        rhs[self.local[at]] = F
        x = np.zeros((n + 1, r))
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
