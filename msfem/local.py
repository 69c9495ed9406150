r"""Local solvers of the multiscale methods: sequential sparse problems on ``MPI.COMM_SELF``.

Every multiscale method solves many small problems on a patch :math:`S` with the fine
operator :math:`A` of :math:`S` (a sequential PETSc AIJ matrix) and dense right-hand sides:

* :class:`DirichletSolver` / :func:`solve_dirichlet` -- MsFEM basis functions,
  :math:`A_{II}\Psi_I = -A_{IB}G`, :math:`\Psi_B = G`;
* :class:`ConstrainedSolver` -- saddle-point problems
  :math:`\begin{bmatrix}A & C^T\\ C & 0\end{bmatrix}
  \begin{bmatrix}x\\ \lambda\end{bmatrix} = \begin{bmatrix}f\\ g\end{bmatrix}`
  (LOD correctors with :math:`I_H w = 0`, MsFEM-CR face means);
* :func:`solve_neumann` -- pure Neumann problems made unique by :math:`\int_S u = 0`;
* :func:`eigensolve` -- the generalised eigenproblem :math:`A x = \lambda B x` of the GMsFEM
  snapshot spaces.

Each solver factorises its matrix once and solves all right-hand sides of a patch together
(``KSPMatSolve`` with dense matrices). Settings are PETSc options dicts under a unique prefix
(``msfem_dirichlet_``, ``msfem_constrained_``, ``msfem_neumann_``, ``msfem_eigen_``); options
not set by the dict, e.g. ``-msfem_dirichlet_ksp_view``, can come from the command line.
Every failure (zero pivot, unconverged eigenpairs) raises :class:`msfem.solvers.SolverError`.

Default factorisations, measured on a 2D 5-point Laplacian with 128 x 128 unknowns
(n = 16384) and 16 right-hand sides, one process (best of 7, PETSc 3.25.5, MUMPS from the
same build):

===============================  ==========  ===========  ===========
                                 factorise   refactorise  16 solves
===============================  ==========  ===========  ===========
PETSc LU, nested dissection        17 ms       10 ms        6 ms
PETSc Cholesky, nested diss.       22 ms        6 ms        6 ms
MUMPS LU (its own ordering)        47 ms        9 ms        6 ms
MUMPS Cholesky (its own order.)    45 ms        8 ms        6 ms
MUMPS LU given PETSc's nd order   360 ms      360 ms       25 ms
===============================  ==========  ===========  ===========

("refactorise": :meth:`DirichletSolver.set_operator` with a new matrix of the same sparsity,
numeric factorisation only.) PETSc's native factorisation is 2-2.7x faster than MUMPS for a
first factorisation on one process -- MUMPS spends ~37 ms in its analysis phase -- and as
fast when refactorising, so the sequential solvers default to it
(:data:`msfem.solvers.LOCAL_OPTIONS`). MUMPS remains the default where pivoting is required
(the indefinite saddle-point matrix of :class:`ConstrainedSolver`). For
:func:`eigensolve` (8 smallest eigenpairs of the 128 x 128 Neumann Laplacian) PETSc's
Cholesky of :math:`A - \sigma B` takes 56 ms in all against 108 ms with MUMPS.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Self, TypeAlias, cast

import numpy as np
import scipy.linalg
import scipy.sparse
from mpi4py import MPI
from petsc4py import PETSc

from msfem import _runtime, solvers  # noqa: F401  (_runtime: imports dolfinx_solver first)
from msfem.solvers import SolverError

__all__ = [
    "CONSTRAINED_OPTIONS",
    "DIRICHLET_OPTIONS",
    "EIGEN_OPTIONS",
    "ConstrainedSolver",
    "DirichletSolver",
    "eigensolve",
    "solve_dirichlet",
    "solve_neumann",
]

#: :class:`DirichletSolver` defaults: PETSc's sequential sparse LU with nested dissection
#: (``pc_type`` becomes ``cholesky`` for ``symmetric=True``).
DIRICHLET_OPTIONS: dict[str, Any] = dict(solvers.LOCAL_OPTIONS)
#: :class:`ConstrainedSolver` defaults: MUMPS LU, whose threshold pivoting handles the zero
#: multiplier block (PETSc's native LU does not pivot).
CONSTRAINED_OPTIONS: dict[str, Any] = dict(solvers.DIRECT_OPTIONS)
#: :func:`eigensolve` defaults: Krylov--Schur with shift-and-invert about a target below the
#: spectrum, so :math:`A - \sigma B` is SPD and PETSc's Cholesky factorises it.
EIGEN_OPTIONS: dict[str, Any] = {
    "eps_type": "krylovschur",
    "eps_tol": 1e-10,
    "eps_max_it": 500,
    "st_type": "sinvert",
    "st_ksp_type": "preonly",
    "st_pc_type": "cholesky",
    "st_pc_factor_mat_solver_type": "petsc",
    "st_pc_factor_mat_ordering_type": "nd",
}

_PC_FAILED = {v: k for k, v in vars(PETSc.PC.FailedReason).items() if not k.startswith("_")}

Array = np.ndarray
SparseLike: TypeAlias = PETSc.Mat | scipy.sparse.sparray | scipy.sparse.spmatrix | np.ndarray


# --------------------------------------------------------------------------- helpers
def _norm_inf(A: PETSc.Mat) -> float:
    r""":math:`\|A\|_\infty` (the petsc4py stubs type ``norm`` as float or pair of floats)."""
    return cast(float, A.norm(PETSc.NormType.INFINITY))  # type: ignore[arg-type]


def _check_sequential(A: PETSc.Mat, name: str) -> None:
    if A.getComm().getSize() != 1:
        raise ValueError(f"{name} must be a sequential matrix on COMM_SELF, got a matrix on "
                         f"{A.getComm().getSize()} processes")


def _to_csr(M: SparseLike) -> scipy.sparse.csr_matrix:
    """``M`` (PETSc AIJ or dense, scipy sparse, numpy array) as a scipy CSR matrix."""
    if isinstance(M, PETSc.Mat):
        _check_sequential(M, "matrix")
        if M.getType() in (PETSc.Mat.Type.SEQDENSE, PETSc.Mat.Type.DENSE):
            out = scipy.sparse.csr_matrix(M.getDenseArray())
        else:
            aij = M if M.getType() in (PETSc.Mat.Type.SEQAIJ, PETSc.Mat.Type.AIJ) \
                else M.convert(PETSc.Mat.Type.SEQAIJ, PETSc.Mat())
            indptr, indices, data = aij.getValuesCSR()
            out = scipy.sparse.csr_matrix((data, indices, indptr), shape=aij.getSize())
            if aij is not M:
                aij.destroy()
    else:
        out = scipy.sparse.csr_matrix(np.atleast_2d(M) if isinstance(M, np.ndarray) else M,
                                      dtype=PETSc.ScalarType)
    return out


def _columns(B: Array, n: int, name: str) -> tuple[Array, bool]:
    """``B`` as a float array of shape (n, k); also whether it was a single vector."""
    B = np.asarray(B, dtype=PETSc.ScalarType)
    vector = B.ndim == 1
    B = B.reshape(n, -1) if vector else B
    if B.ndim != 2 or B.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, got shape {B.shape}")
    return B, vector


def _factor_defaults(defaults: Mapping[str, Any], options: Mapping[str, Any] | None,
                     key: str = "") -> dict[str, Any]:
    """``defaults`` with PETSc's ordering dropped unless PETSc itself factorises.

    MUMPS handed PETSc's nested-dissection ordering is 8x slower on the 2D Laplacian (360
    ms against 43 ms with its own), so a default ordering must not outlive a switch of
    ``{key}pc_factor_mat_solver_type``.
    """
    out, options = dict(defaults), options or {}
    solver = options.get(f"{key}pc_factor_mat_solver_type",
                         out.get(f"{key}pc_factor_mat_solver_type"))
    if str(solver) != "petsc" and f"{key}pc_factor_mat_ordering_type" not in options:
        out.pop(f"{key}pc_factor_mat_ordering_type", None)
    return out


@contextlib.contextmanager
def _options(prefix: str, merged: Mapping[str, Any]) -> Iterator[None]:
    """Put ``merged`` into the PETSc options database under ``prefix`` for the block."""
    opts = PETSc.Options()
    opts.prefixPush(prefix)
    try:
        for key, value in merged.items():
            opts.setValue(key, value)
        yield
    finally:
        opts.prefixPop()
        for key in merged:
            opts.delValue(prefix + key)


def _column_max_abs(X: Array) -> Array:
    r""":math:`\max_i |X_{ij}|` per column j.

    Transposed first: NumPy's axis-0 reduction of a tall, narrow array is ~10x slower.
    """
    return np.ascontiguousarray(np.abs(X).T).max(axis=1)


class _Factorisation:
    """Own copy of a sequential AIJ matrix and a KSP holding its factorisation.

    :meth:`set_operator` with a matrix of the same sparsity copies the values into the owned
    matrix, so the KSP sees the same ``Mat`` with a new state and redoes only the numeric
    factorisation (PETSc restarts from the symbolic phase whenever the ``Mat`` object
    changes).
    """

    def __init__(self, what: str, prefix: str, petsc_options: Mapping[str, Any] | None,
                 defaults: Mapping[str, Any], symmetric: bool) -> None:
        self.what, self.prefix, self.symmetric = what, prefix, symmetric
        self.petsc_options = petsc_options
        self.defaults = _factor_defaults(defaults, petsc_options)
        self.A: PETSc.Mat | None = None
        self.ksp: PETSc.KSP | None = None
        self._pattern: tuple[Array, Array] | None = None
        self._arrays: tuple[Array, Array, Array] | None = None  # set_values' shared storage
        self._dense: tuple | None = None  # (shape, B buffer, X buffer, B Mat, X Mat)
        self._norm = 0.0
        #: Wall time spent inside PETSc's factorisation and solves (benchmarks' floor).
        self.petsc_seconds = 0.0

    @property
    def size(self) -> int:
        if self.A is None:
            raise RuntimeError(f"{self.what}: no operator set")
        return self.A.getSize()[0]

    def set_operator(self, A: PETSc.Mat, same_pattern: bool = False) -> None:
        _check_sequential(A, self.what)
        m, n = A.getSize()
        if m != n:
            raise ValueError(f"{self.what}: the matrix must be square, got {m} x {n}")
        if A.getType() not in (PETSc.Mat.Type.SEQAIJ, PETSc.Mat.Type.AIJ):
            aij = A.convert(PETSc.Mat.Type.SEQAIJ, PETSc.Mat())
            try:
                return self.set_operator(aij)
            finally:
                aij.destroy()
        if same_pattern and self.A is not None and self.A.getSize() == (m, n):
            same = True  # the caller guarantees the sparsity (e.g. one patch shape)
        else:
            ia, ja = A.getRowIJ()
            same = self.A is not None and self.A.getSize() == (m, n) and \
                self._pattern is not None and np.array_equal(ia, self._pattern[0]) and \
                np.array_equal(ja, self._pattern[1])
        if same:
            assert self.A is not None  # `same` implies an operator is set
            A.copy(self.A, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)  # type: ignore[arg-type]
            self._arrays = None  # (set_values starts afresh after a copied operator)
        else:
            if self.A is not None:
                self.A.destroy()
            self._arrays = None
            self.A = self._mark(A.duplicate(copy=True))
            self._pattern = (ia.copy(), ja.copy())
        if self.ksp is None:
            self.ksp = solvers.make_ksp(self.A, self.prefix, self.petsc_options, self.defaults)
        elif not same and self.ksp.getOperators()[0].getSize() != (m, n):
            self.ksp.destroy()  # PETSc does not allow resizing the operators of a KSP
            self.ksp = solvers.make_ksp(self.A, self.prefix, self.petsc_options, self.defaults)
        else:
            self.ksp.setOperators(self.A)
        self._factorise()

    def _mark(self, A: PETSc.Mat) -> PETSc.Mat:
        """The owned matrix, flagged symmetric for the factorisation when it is."""
        if self.symmetric:
            A.setOption(PETSc.Mat.Option.SYMMETRIC, True)  # type: ignore[arg-type]
            A.setOption(PETSc.Mat.Option.SYMMETRY_ETERNAL, True)  # type: ignore[arg-type]
        return A

    def set_values(self, indptr: Array, indices: Array, values: Array) -> None:
        """Set the operator from CSR arrays and factorise.

        Called again with the *same* ``indptr``/``indices`` objects, the values are copied
        into the storage the owned matrix shares (``MatCreateSeqAIJWithArrays``): no PETSc
        copy, numeric factorisation only.
        """
        buf = self._arrays
        if buf is not None and buf[0] is indptr and buf[1] is indices and self.A is not None:
            np.copyto(buf[2], values)
            self.A.stateIncrease()  # new values: PCSetUp redoes the numeric factorisation
            assert self.ksp is not None
            self.ksp.setOperators(self.A)
            self._factorise()
            return
        n = len(indptr) - 1
        storage = (np.ascontiguousarray(indptr, dtype=PETSc.IntType),
                   np.ascontiguousarray(indices, dtype=PETSc.IntType),
                   np.array(values, dtype=PETSc.ScalarType))
        if self.A is not None:
            self.A.destroy()
        A = PETSc.Mat().createAIJWithArrays((n, n), csr=storage, comm=MPI.COMM_SELF)  # type: ignore[arg-type]
        self.A = self._mark(A)
        self._pattern = (storage[0], storage[1])
        self._arrays = (indptr, indices, storage[2])
        if self.ksp is not None:  # a new Mat object: PETSc redoes the symbolic phase
            self.ksp.destroy()
        self.ksp = solvers.make_ksp(self.A, self.prefix, self.petsc_options, self.defaults)
        self._factorise()

    def _factorise(self) -> None:
        assert self.ksp is not None and self.A is not None
        self._norm = _norm_inf(self.A)
        t0 = time.perf_counter()
        try:
            self.ksp.setUp()
        except PETSc.Error as err:
            raise SolverError(f"{self.what}: factorisation failed ({err})") from err
        finally:
            self.petsc_seconds += time.perf_counter() - t0
        failed = self.ksp.getPC().getFailedReason()
        if failed != PETSc.PC.FailedReason.NOERROR:
            pc = self.ksp.getPC()
            raise SolverError(
                f"{self.what}: factorisation failed with {_PC_FAILED.get(failed, failed)} "
                f"(-{self.prefix}pc_type {pc.getType()}, solver "
                f"{pc.getFactorSolverType() if pc.getType() in ('lu', 'cholesky') else '-'}); "
                f"the matrix is singular or needs pivoting.")

    def solve(self, B: Array) -> Array:
        """Solve ``A X = B`` for the columns of the dense (n, k) array ``B``."""
        assert self.ksp is not None
        n, k = B.shape
        X = np.empty((n, k), dtype=PETSc.ScalarType)
        if k == 0 or n == 0:
            return X
        if self._dense is None or self._dense[0] != (n, k):  # dense B, X sharing numpy memory
            self._destroy_dense()
            bufs = np.zeros((n, k), order="F"), np.zeros((n, k), order="F")
            mats = tuple(PETSc.Mat().createDense((n, k), array=b, comm=MPI.COMM_SELF)  # type: ignore[arg-type]
                         for b in bufs)
            self._dense = ((n, k), *bufs, *mats)
        _, B_buf, X_buf, Bm, Xm = self._dense
        B_buf[:] = B
        Bm.stateIncrease()
        t0 = time.perf_counter()
        try:
            self.ksp.matSolve(Bm, Xm)
            self.petsc_seconds += time.perf_counter() - t0
        except PETSc.Error as err:
            raise SolverError(f"{self.what}: PETSc failed ({err})") from err
        solvers.check(self.ksp, self.what)
        X[:] = X_buf
        x_norm = _column_max_abs(X)  # NaN and inf propagate into the column maxima
        if not np.isfinite(x_norm).all():
            raise SolverError(f"{self.what}: the solution is not finite (singular matrix?)")
        # ||x|| <= ||A^-1|| ||b||: a larger ratio proves cond(A) > 1/eps, i.e. A is singular
        # to working precision even when no pivot was exactly zero
        ratio = self._norm * x_norm
        b_norm = _column_max_abs(B)
        if np.any(ratio > b_norm / np.finfo(float).eps):
            worst = np.max(ratio / np.maximum(b_norm, np.finfo(float).tiny))
            raise SolverError(
                f"{self.what}: the matrix is singular to working precision (||A|| ||x|| / ||b||"
                f" = {worst:.1e} > 1/eps, a lower bound of its condition number)")
        return X

    def _destroy_dense(self) -> None:
        if self._dense is not None:
            for mat in self._dense[3:]:
                mat.destroy()
            self._dense = None

    def destroy(self) -> None:
        self._destroy_dense()
        for obj in (self.ksp, self.A):
            if obj is not None:
                obj.destroy()
        self.ksp = self.A = None
        self._pattern = self._arrays = None


class _Destroyable:
    """A solver holding one :class:`_Factorisation`; context-manager protocol over destroy."""

    _factor: _Factorisation

    @property
    def ksp(self) -> PETSc.KSP | None:
        """The KSP holding the factorisation (``None`` before the operator is set)."""
        return self._factor.ksp

    @property
    def petsc_seconds(self) -> float:
        """Wall time spent inside PETSc factorising and solving, since creation."""
        return self._factor.petsc_seconds

    def destroy(self) -> None:  # pragma: no cover - overridden
        """Free the PETSc objects."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _setup(self, set_operators: Callable[..., None], *operators: Any) -> None:
        """Call ``set_operators(*operators)`` from a constructor; free everything if it fails."""
        try:
            set_operators(*operators)
        except BaseException:
            self.destroy()
            raise


# --------------------------------------------------------------------------- Dirichlet
class DirichletSolver(_Destroyable):
    r"""Factorise the interior block :math:`A_{II}` once and solve for many right-hand sides.

    Solves

    .. math::
       A_{II} X = B, \qquad B \in \mathbb R^{n_I \times k},

    the interior equations of a Dirichlet problem on a patch (the right-hand side of
    :math:`A_{II}\Psi_I = -A_{IB}G` is formed by :func:`solve_dirichlet`). All ``k`` columns
    are solved at once with ``KSPMatSolve``. :meth:`set_operator` with a matrix of the same
    sparsity reuses the KSP and the symbolic factorisation (ordering and fill): only the
    numeric factorisation is redone.

    The default is PETSc's native sparse factorisation with nested-dissection ordering --
    Cholesky when ``symmetric=True``, LU otherwise (:data:`DIRICHLET_OPTIONS`). Measured on a
    128 x 128 5-point Laplacian it factorises in 17 ms (LU) / 22 ms (Cholesky) against
    45-47 ms for MUMPS, and refactorises in 10 ms / 6 ms against 9 ms / 8 ms (table in
    :mod:`msfem.local`). Switching to MUMPS through ``petsc_options`` also drops the default
    nested-dissection ordering, which would make MUMPS 8x slower.

    Args:
        A: Sequential AIJ matrix :math:`A_{II}`, or ``None`` to set it later. It is copied;
            the caller keeps ownership.
        symmetric: ``A`` is symmetric: use Cholesky instead of LU.
        prefix: PETSc options prefix.
        petsc_options: PETSc options overriding the defaults, e.g.
            ``{"pc_factor_mat_solver_type": "mumps"}``.

    Raises:
        SolverError: The factorisation failed (e.g. a zero pivot of a singular matrix).

    Example:
        >>> with DirichletSolver(A_II, symmetric=True) as dirichlet:  # doctest: +SKIP
        ...     X = dirichlet.solve(B)
    """

    def __init__(self, A: PETSc.Mat | None = None, *, symmetric: bool = False,
                 prefix: str = "msfem_dirichlet_",
                 petsc_options: Mapping[str, Any] | None = None) -> None:
        defaults = dict(DIRICHLET_OPTIONS)
        if symmetric:
            defaults["pc_type"] = "cholesky"
        self._factor = _Factorisation("Dirichlet solver (A_II X = B)", prefix, petsc_options,
                                      defaults, symmetric)
        if A is not None:
            self._setup(self.set_operator, A)

    def set_operator(self, A: PETSc.Mat, same_pattern: bool = False) -> None:
        """Set and factorise :math:`A_{II}`; same sparsity as before: numeric phase only.

        Args:
            A: Square sequential AIJ matrix (copied).
            same_pattern: the caller guarantees the sparsity of the previous operator (skips
                the comparison of the row/column index arrays).

        Raises:
            SolverError: The factorisation failed.
        """
        self._factor.set_operator(A, same_pattern)

    def set_values(self, indptr: Array, indices: Array, values: Array) -> None:
        """Set :math:`A_{II}` from CSR arrays and factorise.

        With the same ``indptr``/``indices`` objects as the previous call (a cached
        pattern) the values go straight into the matrix's storage: numeric phase only.
        """
        self._factor.set_values(indptr, indices, values)

    def solve(self, B: Array) -> Array:
        r"""Solve :math:`A_{II} X = B`.

        Args:
            B: Right-hand sides, shape ``(n_I,)`` or ``(n_I, k)``.

        Returns:
            :math:`X`, the same shape as ``B``.

        Raises:
            SolverError: The solve failed or produced non-finite values.
        """
        B2, vector = _columns(B, self._factor.size, "B")
        X = self._factor.solve(B2)
        return X[:, 0] if vector else X

    def destroy(self) -> None:
        """Free the factorisation and the copy of the matrix."""
        self._factor.destroy()


def solve_dirichlet(A: PETSc.Mat, interior: Sequence[int] | Array,
                    boundary: Sequence[int] | Array, G: Array, *, symmetric: bool = False,
                    prefix: str = "msfem_dirichlet_",
                    petsc_options: Mapping[str, Any] | None = None) -> Array:
    r"""Discrete :math:`A`-harmonic extensions of boundary data.

    Returns :math:`\Psi` with

    .. math::
       \Psi_B = G, \qquad A_{II}\Psi_I = -A_{IB}\,G,

    i.e. the fine-scale solutions of :math:`a_S(\psi, v) = 0` for all
    :math:`v \in V_{h,0}(S)` with :math:`\psi = g` on :math:`\partial S` -- the MsFEM basis
    functions of Hou and Wu (J. Comput. Phys. 134, 1997), one per column of ``G``.

    Args:
        A: The patch operator (sequential AIJ, ``n x n``).
        interior: Indices I of the free dofs.
        boundary: Indices B of the Dirichlet dofs (I and B partition ``range(n)``).
        G: Boundary values, shape ``(n_B,)`` or ``(n_B, k)``.
        symmetric: ``A`` is symmetric (Cholesky).
        prefix: PETSc options prefix.
        petsc_options: PETSc options overriding :data:`DIRICHLET_OPTIONS`.

    Returns:
        :math:`\Psi`, shape ``(n,)`` or ``(n, k)`` like ``G``.

    Raises:
        SolverError: The factorisation of :math:`A_{II}` or the solve failed.
    """
    _check_sequential(A, "A")
    n = A.getSize()[0]
    interior = np.asarray(interior, dtype=PETSc.IntType)
    boundary = np.asarray(boundary, dtype=PETSc.IntType)
    if len(interior) + len(boundary) != n or len(np.union1d(interior, boundary)) != n:
        raise ValueError(f"interior ({len(interior)}) and boundary ({len(boundary)}) must "
                         f"partition the {n} dofs")
    G2, vector = _columns(G, len(boundary), "G")
    rhs = -(_to_csr(A)[interior][:, boundary] @ G2)
    isI = PETSc.IS().createGeneral(interior, comm=MPI.COMM_SELF)  # type: ignore[arg-type]
    A_II = A.createSubMatrix(isI, isI)
    try:
        with DirichletSolver(A_II, symmetric=symmetric, prefix=prefix,
                             petsc_options=petsc_options) as dirichlet:
            psi_I = dirichlet.solve(rhs)
    finally:
        A_II.destroy()
        isI.destroy()
    psi = np.empty((n, G2.shape[1]), dtype=PETSc.ScalarType)
    psi[interior] = psi_I
    psi[boundary] = G2
    return psi[:, 0] if vector else psi


# --------------------------------------------------------------------------- constrained
class ConstrainedSolver(_Destroyable):
    r"""Saddle-point problems with a few linear constraints, many right-hand sides.

    Solves

    .. math::
       \begin{bmatrix} A & C^T \\ C & 0 \end{bmatrix}
       \begin{bmatrix} X \\ \Lambda \end{bmatrix} =
       \begin{bmatrix} F \\ G \end{bmatrix},
       \qquad A \in \mathbb R^{n\times n},\ C \in \mathbb R^{m\times n},\ m \ll n,

    i.e. minimises :math:`\tfrac12 x^T A x - f^T x` subject to :math:`C x = g` for symmetric
    :math:`A`: the LOD corrector problems with :math:`C = I_H` (Målqvist and Peterseim,
    Math. Comp. 83, 2014) and MsFEM-CR with :math:`C` the face means (Le Bris, Legoll and
    Lozinski, Chin. Ann. Math. 34B, 2013).

    By default (monolithic route) the block matrix is assembled as one AIJ matrix (with
    explicit zeros on the multiplier diagonal) and factorised once by MUMPS
    (:data:`CONSTRAINED_OPTIONS`), whose threshold pivoting handles the zero block. It only
    needs the block matrix to be invertible: :math:`A` itself may be singular (a Neumann
    operator whose kernel :math:`C` removes), where a Schur complement needs :math:`A^{-1}`.

    ``schur=True`` instead factorises :math:`A` (PETSc, as :class:`DirichletSolver`), forms
    :math:`Z = A^{-1}C^T` and :math:`S = C Z` (dense :math:`m \times m`), and solves
    :math:`S\Lambda = C A^{-1}F - G`, :math:`X = A^{-1}F - Z\Lambda`. It needs an invertible
    :math:`A` (e.g. the LOD patch operator with zero Dirichlet conditions). Measured on the
    128 x 128 Dirichlet Laplacian with m = 25 local constraint rows and 16 right-hand sides:
    set-up 35-42 ms (Schur) against 54-60 ms (monolithic :math:`LDL^T`), but refactorising
    with the same sparsity 20-49 ms against 10-11 ms (the :math:`m` solves for :math:`Z`
    are redone) and 16 solves 10-22 ms against 6-9 ms; on the singular Neumann operator with
    the mean constraint only the monolithic route works (49 ms, 10 ms to refactorise). Hence
    monolithic is the default.

    A singular block matrix (e.g. constraints that do not remove the kernel of :math:`A`)
    raises :class:`~msfem.solvers.SolverError`: at the factorisation on a zero pivot, or at
    the solve when :math:`\|K\|\,\|x\|/\|b\| > 1/\epsilon` proves it singular to working
    precision (pivoting solvers such as MUMPS LU return a huge finite solution instead of
    failing).

    Args:
        A: Sequential AIJ ``n x n`` matrix, or ``None`` (then also ``C``) to set it later.
        C: Constraint matrix ``m x n`` (``m >= 1``): PETSc, scipy sparse or dense numpy.
        symmetric: ``A`` is symmetric: MUMPS :math:`LDL^T` (``pc_type cholesky``) instead of
            LU on the block matrix (5-15 % faster), Cholesky of :math:`A` for ``schur``.
        schur: Use the Schur complement on the multipliers (needs an invertible :math:`A`).
        prefix: PETSc options prefix.
        petsc_options: PETSc options overriding the defaults (:data:`CONSTRAINED_OPTIONS`,
            or :data:`DIRICHLET_OPTIONS` for ``schur``).

    Raises:
        SolverError: The factorisation failed (the block matrix, or :math:`A` for ``schur``,
            is singular), or the Schur complement is singular (dependent constraints).
    """

    def __init__(self, A: PETSc.Mat | None = None, C: SparseLike | None = None, *,
                 symmetric: bool = False, schur: bool = False,
                 prefix: str = "msfem_constrained_",
                 petsc_options: Mapping[str, Any] | None = None) -> None:
        self.schur = schur
        defaults = dict(DIRICHLET_OPTIONS if schur else CONSTRAINED_OPTIONS)
        if symmetric:
            defaults["pc_type"] = "cholesky"
        what = "constrained solver (A of the Schur complement C A^-1 C^T)" if schur else \
            "constrained solver ([[A, C^T], [C, 0]])"
        self._factor = _Factorisation(what, prefix, petsc_options, defaults, symmetric)
        self.n = self.m = 0
        self._C: scipy.sparse.csr_matrix | None = None
        self._Z: Array | None = None  # A^-1 C^T
        self._S: tuple[Array, Array] | None = None  # LU of C A^-1 C^T
        self._blocks: tuple | None = None  # cached block pattern (see _block)
        if (A is None) != (C is None):
            raise ValueError("give both A and C, or neither")
        if A is not None and C is not None:
            self._setup(self.set_operators, A, C)

    def set_operators(self, A: SparseLike, C: SparseLike) -> None:
        """Assemble and factorise the block matrix; same sparsity as before: numeric only.

        Args:
            A: Square sequential AIJ matrix ``n x n`` (PETSc, or scipy sparse).
            C: Constraint matrix ``m x n``.

        Raises:
            SolverError: The factorisation failed.
        """
        if isinstance(A, PETSc.Mat):
            _check_sequential(A, "A")
        A_csr = _to_csr(A)
        n = A_csr.shape[0]
        C_csr = _to_csr(C)
        if C_csr.shape[1] != n:
            raise ValueError(f"C must have {n} columns, got shape {C_csr.shape}")
        m = C_csr.shape[0]
        if m == 0:
            raise ValueError("C has no rows: use DirichletSolver for unconstrained problems")
        if self.schur:
            self._factor.set_operator(A if isinstance(A, PETSc.Mat) else PETSc.Mat().createAIJ(
                A_csr.shape, csr=(A_csr.indptr, A_csr.indices, A_csr.data),
                comm=MPI.COMM_SELF))  # type: ignore[arg-type]
            Z = self._factor.solve(np.ascontiguousarray(C_csr.T.toarray()))
            S = np.atleast_2d(C_csr @ Z)
            if np.linalg.cond(S) > 1 / (100 * np.finfo(float).eps):
                raise SolverError(f"{self._factor.what}: the Schur complement C A^-1 C^T is "
                                  f"singular (condition number {np.linalg.cond(S):.1e}); are "
                                  f"the constraints linearly dependent?")
            self._Z, self._S = Z, scipy.linalg.lu_factor(S)
        else:
            K, same = self._block(A_csr, C_csr)
            self._factor.set_operator(K, same_pattern=same)
        self._C, self.n, self.m = C_csr, n, m

    def _block(self, A: scipy.sparse.csr_matrix, C: scipy.sparse.csr_matrix
               ) -> tuple[PETSc.Mat, bool]:
        """The block matrix [[A, Cᵀ], [C, 0]] as a PETSc matrix, its pattern cached.

        Returns the matrix and whether it has the sparsity of the previous call.

        For operators with the sparsity of the previous call (e.g. patches of one shape)
        only the values are gathered into the cached block matrix (no ``bmat``, no new
        PETSc matrix): ``values = concat(A.data, C.data, 0)[perm]``.
        """
        A.sort_indices()
        C.sort_indices()
        key = (A.shape, A.nnz, C.shape, C.nnz)
        cached = self._blocks
        same = cached is not None and cached[0] == key and all(
            np.array_equal(x, y) for x, y in zip(cached[1], (A.indptr, A.indices, C.indptr,
                                                             C.indices)))
        source = np.concatenate([A.data, C.data, [0.0]])
        if not same:
            m = C.shape[0]
            code = lambda M, first: scipy.sparse.csr_matrix(  # noqa: E731
                (np.arange(first, first + M.nnz, dtype=float), M.indices, M.indptr),
                shape=M.shape)
            zero = scipy.sparse.csr_matrix((np.full(m, -1.0), (np.arange(m), np.arange(m))),
                                           shape=(m, m))  # explicit zeros on the diagonal
            K = scipy.sparse.bmat([[code(A, 1), code(C, A.nnz + 1).T],
                                   [code(C, A.nnz + 1), zero]], format="csr")
            K.sort_indices()
            perm = np.where(K.data < 0, len(source), K.data).astype(np.int64) - 1
            values = source[perm]
            if cached is not None:
                cached[3].destroy()
            csr = (K.indptr.astype(PETSc.IntType), K.indices.astype(PETSc.IntType), values)
            petsc = PETSc.Mat().createAIJWithArrays(K.shape, csr, comm=MPI.COMM_SELF)  # type: ignore[arg-type]
            patterns = (A.indptr.copy(), A.indices.copy(), C.indptr.copy(), C.indices.copy())
            # PETSc uses the csr arrays in place: they live as long as the cache
            self._blocks = (key, patterns, (perm, values), petsc, csr)
            return petsc, False
        assert cached is not None
        perm, values = cached[2]
        np.take(source, perm, out=values)  # PETSc shares ``values``
        cached[3].assemble()  # new state: the factorisation sees new values
        return cached[3], True

    def solve(self, F: Array, G: Array | None = None) -> tuple[Array, Array]:
        r"""Solve :math:`A X + C^T\Lambda = F`, :math:`C X = G`.

        Args:
            F: Right-hand sides, shape ``(n,)`` or ``(n, k)``.
            G: Constraint values, shape ``(m,)`` or ``(m, k)``; ``None`` means zero.

        Returns:
            ``(X, Lambda)``: the solutions, shape ``(n, k)``, and the Lagrange multipliers,
            shape ``(m, k)`` (1D for 1D ``F``).

        Raises:
            SolverError: The solve failed.
        """
        F2, vector = _columns(F, self.n, "F")
        G2 = np.zeros((self.m, F2.shape[1]), dtype=PETSc.ScalarType)
        if G is not None:
            G2, _ = _columns(G, self.m, "G")
            if G2.shape[1] != F2.shape[1]:
                raise ValueError(f"F has {F2.shape[1]} columns, G has {G2.shape[1]}")
        if self.schur:
            assert self._C is not None and self._Z is not None and self._S is not None
            Y = self._factor.solve(F2)
            lam = scipy.linalg.lu_solve(self._S, self._C @ Y - G2)
            X = Y - self._Z @ lam
        else:
            sol = self._factor.solve(np.vstack([F2, G2]))
            X, lam = sol[: self.n], sol[self.n:]
        return (X[:, 0], lam[:, 0]) if vector else (X, lam)

    def destroy(self) -> None:
        """Free the factorisation and the block matrix."""
        if self._blocks is not None:
            self._blocks[3].destroy()
            self._blocks = None
        self._factor.destroy()
        self._C = self._Z = self._S = None


def solve_neumann(A: PETSc.Mat, rhs: Array, mean_weights: Array, *,
                  prefix: str = "msfem_neumann_",
                  petsc_options: Mapping[str, Any] | None = None) -> tuple[Array, Array]:
    r"""Pure Neumann problem made unique by a zero (weighted) mean.

    Solves

    .. math::
       A u + w\,\lambda = f, \qquad w^T u = 0,

    with :math:`w = M\mathbf 1` (``mean_weights``, :math:`M` the mass matrix), so
    :math:`w^T u = \int_S u_h\,dx`. For a symmetric :math:`A` with kernel
    :math:`\mathbf 1` the multiplier is :math:`\lambda = \mathbf 1^T f / \mathbf 1^T w`:
    zero exactly when :math:`f` is compatible (:math:`\int_S f + \int_{\partial S} g_N = 0`),
    otherwise :math:`u` solves the problem with the load projected to compatibility,
    :math:`f - \lambda w` -- check the returned multiplier.

    Args:
        A: Sequential AIJ Neumann operator ``n x n`` (may be singular).
        rhs: Loads, shape ``(n,)`` or ``(n, k)``.
        mean_weights: :math:`w`, shape ``(n,)``.
        prefix: PETSc options prefix.
        petsc_options: PETSc options overriding :data:`CONSTRAINED_OPTIONS`.

    Returns:
        ``(u, lam)``: the zero-mean solutions (shape of ``rhs``) and the multipliers
        (a float for 1D ``rhs``, else shape ``(k,)``).

    Raises:
        SolverError: The factorisation failed (e.g. :math:`w^T` does not remove the kernel).
    """
    w = np.asarray(mean_weights, dtype=PETSc.ScalarType).reshape(1, -1)
    with ConstrainedSolver(A, w, prefix=prefix, petsc_options=petsc_options) as constrained:
        u, lam = constrained.solve(rhs)
    return u, (lam[0] if np.ndim(rhs) == 1 else lam[0, :])


# --------------------------------------------------------------------------- eigen
def eigensolve(A: PETSc.Mat, B: PETSc.Mat, n: int, *, target: float | None = None,
               prefix: str = "msfem_eigen_",
               petsc_options: Mapping[str, Any] | None = None) -> tuple[Array, Array]:
    r"""The ``n`` smallest eigenpairs of :math:`A x = \lambda B x`.

    Solves the generalised Hermitian eigenproblem (SLEPc ``GHEP``)

    .. math::
       A x_i = \lambda_i B x_i, \qquad x_i^T B x_j = \delta_{ij}, \qquad
       \lambda_1 \le \dots \le \lambda_n,

    for :math:`A` symmetric positive semi-definite and :math:`B` SPD -- e.g. the GMsFEM
    spectral problem :math:`-\nabla\cdot(\kappa\nabla\psi) = \lambda\tilde\kappa\psi` with
    Neumann conditions (Efendiev, Galvis and Hou, J. Comput. Phys. 251, 2013), whose
    smallest eigenvalue is 0. Krylov--Schur with shift-and-invert about ``target``
    :math:`\sigma < 0` keeps :math:`A - \sigma B` SPD even for singular :math:`A` and makes
    the eigenvalues nearest 0 dominant; the default :math:`\sigma = -10^{-6}\,
    \|A\|_\infty / \|B\|_\infty` is far below the spectrum's scale. The converged vectors
    are Rayleigh--Ritz post-processed (a dense ``eigh`` of :math:`X^TAX, X^TBX`), which makes
    them :math:`B`-orthonormal also within multiple eigenvalues.

    Args:
        A: Sequential AIJ matrix, symmetric positive semi-definite.
        B: Sequential AIJ matrix, SPD.
        n: Number of eigenpairs.
        target: Shift :math:`\sigma` of the spectral transformation (must not be an
            eigenvalue). The eigenvalues closest to it are returned. A target inside the
            spectrum makes :math:`A - \sigma B` indefinite: pass
            ``{"st_pc_type": "lu", "st_pc_factor_mat_solver_type": "mumps"}`` with it.
        prefix: PETSc/SLEPc options prefix.
        petsc_options: Options overriding :data:`EIGEN_OPTIONS`, e.g. ``{"eps_tol": 1e-8}``.

    Returns:
        ``(eigenvalues, eigenvectors)``: shape ``(n,)`` ascending, and ``(N, n)``
        :math:`B`-orthonormal columns (sign: largest-magnitude entry positive).

    Raises:
        SolverError: Fewer than ``n`` eigenpairs converged, or the factorisation of
            :math:`A - \sigma B` failed.
    """
    from slepc4py import SLEPc

    _check_sequential(A, "A")
    _check_sequential(B, "B")
    N = A.getSize()[0]
    if not 0 < n <= N:
        raise ValueError(f"n must be in [1, {N}], got {n}")
    if target is None:
        target = -1e-6 * _norm_inf(A) / _norm_inf(B)
    merged = _factor_defaults(EIGEN_OPTIONS, petsc_options, "st_")
    merged.update(petsc_options or {})
    if str(merged.get("st_pc_type")) not in ("lu", "cholesky"):
        merged.pop("st_pc_factor_mat_solver_type", None)
        merged.pop("st_pc_factor_mat_ordering_type", None)
    what = "eigensolver (A x = lambda B x)"
    eps = SLEPc.EPS().create(MPI.COMM_SELF)
    try:
        eps.setOperators(A, B)
        eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
        eps.setDimensions(nev=n)
        eps.setTarget(target)
        eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_MAGNITUDE)
        eps.setOptionsPrefix(prefix)
        with _options(prefix, merged):
            eps.setFromOptions()
        try:
            eps.solve()
        except (PETSc.Error, SystemError) as err:  # slepc4py 3.25 wraps errors of the
            cause = err.__cause__ or err  # ST factorisation in a SystemError
            raise SolverError(f"{what}: SLEPc failed with target {target:.3e} ({cause}); is "
                              f"the target an eigenvalue?") from err
        nconv = eps.getConverged()
        if nconv < n:
            reasons = {v: k for k, v in vars(SLEPc.EPS.ConvergedReason).items()
                       if not k.startswith("_")}
            raise SolverError(
                f"{what}: only {nconv} of {n} eigenpairs converged (reason "
                f"{reasons.get(eps.getConvergedReason(), eps.getConvergedReason())} after "
                f"{eps.getIterationNumber()} iterations); raise -{prefix}eps_max_it or "
                f"-{prefix}eps_ncv, or loosen -{prefix}eps_tol.")
        X = np.empty((N, nconv), dtype=PETSc.ScalarType)
        x = A.createVecRight()
        for i in range(nconv):
            eps.getEigenvector(i, x)
            X[:, i] = x.getArray()
        x.destroy()
    finally:
        eps.destroy()
    A_csr, B_csr = _to_csr(A), _to_csr(B)
    A_X, B_X = X.T @ (A_csr @ X), X.T @ (B_csr @ X)
    lam, Y = scipy.linalg.eigh((A_X + A_X.T) / 2, (B_X + B_X.T) / 2)
    lam, X = lam[:n], X @ Y[:, :n]
    rows = np.argmax(np.abs(X), axis=0)
    X *= np.sign(X[rows, np.arange(n)])
    return lam, X
