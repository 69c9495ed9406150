"""Local solvers (msfem.local) against scipy/numpy dense solves and analytic values.

Everything runs on COMM_SELF: under mpirun every rank runs the same problems independently.
"""

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from mpi4py import MPI
from petsc4py import PETSc

from msfem.local import (
    ConstrainedSolver,
    DirichletSolver,
    eigensolve,
    solve_dirichlet,
    solve_neumann,
)
from msfem.solvers import SolverError


# ----------------------------------------------------------------------------- helpers
def to_petsc(M):
    M = sp.csr_matrix(M)
    M.sort_indices()
    return PETSc.Mat().createAIJ(
        M.shape, csr=(M.indptr.astype(PETSc.IntType), M.indices.astype(PETSc.IntType),
                      M.data.astype(PETSc.ScalarType)), comm=MPI.COMM_SELF)


def tridiag(n, lo, mid, hi):
    return sp.diags([lo * np.ones(n - 1), mid * np.ones(n), hi * np.ones(n - 1)], [-1, 0, 1])


def laplacian_2d(n):
    """5-point Laplacian on the n x n interior nodes of a grid (Dirichlet), unscaled."""
    T, eye = tridiag(n, -1.0, 2.0, -1.0), sp.eye(n)
    return (sp.kron(T, eye) + sp.kron(eye, T)).tocsr()


def p1_neumann_1d(N):
    """P1 stiffness K and mass M on [0, 1] with N uniform elements (natural BCs)."""
    h = 1.0 / N
    K = tridiag(N + 1, -1.0, 2.0, -1.0).tolil() / h
    M = tridiag(N + 1, 1.0, 4.0, 1.0).tolil() * h / 6
    K[0, 0] = K[N, N] = 1.0 / h
    M[0, 0] = M[N, N] = h / 3
    return K.tocsr(), M.tocsr()


def graph_laplacian_2d(n, kappa_edges):
    """Neumann 5-point operator -div(kappa grad) on an n x n node grid, edge conductances."""
    idx = np.arange(n * n).reshape(n, n)
    edges = np.vstack([np.c_[idx[:, :-1].ravel(), idx[:, 1:].ravel()],
                       np.c_[idx[:-1, :].ravel(), idx[1:, :].ravel()]])
    k = kappa_edges(len(edges))
    i, j = edges.T
    A = sp.coo_matrix((np.r_[-k, -k, k, k], (np.r_[i, j, i, j], np.r_[j, i, i, j])),
                      shape=(n * n, n * n))
    return A.tocsr()


@pytest.fixture
def laplacian():
    A = laplacian_2d(40)
    A_petsc = to_petsc(A)
    yield A, A_petsc
    A_petsc.destroy()


# ----------------------------------------------------------------------------- Dirichlet
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("solver_type", ["petsc", "mumps"])
def test_dirichlet_many_rhs_match_spsolve(laplacian, symmetric, solver_type):
    A, A_petsc = laplacian
    B = np.random.default_rng(1).standard_normal((A.shape[0], 5))
    ref = spla.spsolve(A.tocsc(), B)
    with DirichletSolver(A_petsc, symmetric=symmetric,
                         petsc_options={"pc_factor_mat_solver_type": solver_type}) as dirichlet:
        X = dirichlet.solve(B)
        x0 = dirichlet.solve(B[:, 0])
        assert dirichlet.ksp.getPC().getType() == ("cholesky" if symmetric else "lu")
    assert X.shape == (A.shape[0], 5) and x0.shape == (A.shape[0],)
    assert np.abs(X - ref).max() < 1e-10 * np.abs(ref).max()
    assert np.abs(x0 - ref[:, 0]).max() < 1e-10 * np.abs(ref).max()


def test_dirichlet_nonsymmetric_lu():
    """Convection-diffusion (nonsymmetric): catches transposed dense layouts."""
    n = 30
    A = (laplacian_2d(n) + sp.kron(sp.eye(n), tridiag(n, -0.8, 0.0, 0.8))).tocsr()
    B = np.random.default_rng(2).standard_normal((n * n, 3))
    A_petsc = to_petsc(A)
    with DirichletSolver(A_petsc) as dirichlet:
        X = dirichlet.solve(B)
    A_petsc.destroy()
    ref = spla.spsolve(A.tocsc(), B)
    assert np.abs(X - ref).max() < 1e-10 * np.abs(ref).max()


def test_dirichlet_set_operator_reuses_symbolic_factorisation(laplacian):
    A, A_petsc = laplacian
    B = np.random.default_rng(3).standard_normal((A.shape[0], 5))
    ref = spla.spsolve(A.tocsc(), B)
    A3 = to_petsc(3.0 * A)
    PETSc.Log.begin()
    stage = PETSc.Log.Stage("test_local_reuse")
    stage.push()
    try:
        with DirichletSolver(A_petsc) as dirichlet:
            ksp = dirichlet.ksp
            X1 = dirichlet.solve(B)
            dirichlet.set_operator(A3)
            assert dirichlet.ksp is ksp  # same KSP, new numeric factorisation
            X3 = dirichlet.solve(B)
    finally:
        stage.pop()
    A3.destroy()
    symbolic = PETSc.Log.Event("MatLUFactorSym").getPerfInfo(stage)["count"]
    numeric = PETSc.Log.Event("MatLUFactorNum").getPerfInfo(stage)["count"]
    assert (symbolic, numeric) == (1, 2)
    assert np.abs(X1 - ref).max() < 1e-10 * np.abs(ref).max()
    assert np.abs(X3 - ref / 3).max() < 1e-10 * np.abs(ref).max()
    # the caller's matrix is untouched by the value copy
    assert np.isclose(A_petsc.getValue(0, 0), 4.0)


def test_dirichlet_set_values_shares_storage_and_refactorises_numerically(laplacian):
    """set_values with a cached pattern: the values go into the matrix's storage, PETSc
    redoes only the numeric factorisation, and the solutions are the new matrix's."""
    A, _ = laplacian
    A = A.tocsr()
    A.sort_indices()
    indptr, indices = A.indptr.astype(PETSc.IntType), A.indices.astype(PETSc.IntType)
    B = np.random.default_rng(4).standard_normal((A.shape[0], 3))
    ref = spla.spsolve(A.tocsc(), B)
    PETSc.Log.begin()
    stage = PETSc.Log.Stage("test_local_set_values")
    stage.push()
    try:
        with DirichletSolver(symmetric=False) as dirichlet:
            dirichlet.set_values(indptr, indices, A.data)
            X1 = dirichlet.solve(B)
            dirichlet.set_values(indptr, indices, 2.0 * A.data)  # same pattern objects
            X2 = dirichlet.solve(B)
            dirichlet.set_values(indptr.copy(), indices.copy(), 4.0 * A.data)  # new objects
            X4 = dirichlet.solve(B)
    finally:
        stage.pop()
    symbolic = PETSc.Log.Event("MatLUFactorSym").getPerfInfo(stage)["count"]
    numeric = PETSc.Log.Event("MatLUFactorNum").getPerfInfo(stage)["count"]
    assert (symbolic, numeric) == (2, 3)
    for X, scale in ((X1, 1.0), (X2, 2.0), (X4, 4.0)):
        assert np.abs(X - ref / scale).max() < 1e-10 * np.abs(ref).max()


def test_dirichlet_set_operator_new_pattern(laplacian):
    A, A_petsc = laplacian
    small = laplacian_2d(7) + sp.eye(49)
    small_petsc = to_petsc(small)
    b = np.arange(49.0)
    with DirichletSolver(A_petsc, symmetric=True) as dirichlet:
        dirichlet.set_operator(small_petsc)
        x = dirichlet.solve(b)
    small_petsc.destroy()
    assert np.abs(x - spla.spsolve(small.tocsc(), b)).max() < 1e-12 * np.abs(x).max()


def test_solve_dirichlet_reproduces_discrete_harmonic_polynomials():
    """The 5-point stencil is exact on quadratics: x^2 - y^2, xy, 1 are discrete harmonic."""
    n = 21
    A = laplacian_2d(n)  # full grid; only the interior rows matter
    x, y = (c.ravel() for c in np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n),
                                            indexing="ij"))
    on_boundary = (x < 1e-12) | (x > 1 - 1e-12) | (y < 1e-12) | (y > 1 - 1e-12)
    interior, boundary = np.flatnonzero(~on_boundary), np.flatnonzero(on_boundary)
    exact = np.c_[x**2 - y**2, x * y, np.ones_like(x), 2 * x - 3 * y]
    A_petsc = to_petsc(A)
    psi = solve_dirichlet(A_petsc, interior, boundary, exact[boundary], symmetric=True)
    psi0 = solve_dirichlet(A_petsc, interior, boundary, exact[boundary, 0])
    A_petsc.destroy()
    assert psi.shape == exact.shape and psi0.shape == x.shape
    assert np.abs(psi - exact).max() < 1e-12
    assert np.abs(psi0 - exact[:, 0]).max() < 1e-12


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("missing_diagonal", [False, True])
def test_singular_dirichlet_raises(symmetric, missing_diagonal):
    A = laplacian_2d(8).tocoo()
    keep = (A.row != 5) & (A.col != 5)
    data = np.where(keep, A.data, 0.0)  # zero row and column 5, entries stored
    A = sp.csr_matrix((data, (A.row, A.col)), shape=A.shape)
    if missing_diagonal:
        A.eliminate_zeros()
    A_petsc = to_petsc(A)
    with pytest.raises(SolverError, match="Dirichlet solver"):
        DirichletSolver(A_petsc, symmetric=symmetric)
    with pytest.raises(SolverError, match="Dirichlet solver"):
        DirichletSolver(A_petsc, petsc_options={"pc_factor_mat_solver_type": "mumps"})
    A_petsc.destroy()


# ----------------------------------------------------------------------------- constrained
def kkt_reference(A, C, F, G):
    n, m = A.shape[0], C.shape[0]
    K = np.block([[A, C.T], [C, np.zeros((m, m))]])
    sol = np.linalg.solve(K, np.vstack([F, G]))
    return sol[:n], sol[n:]


@pytest.mark.parametrize("symmetric,schur", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_constrained_matches_dense_kkt(symmetric, schur):
    rng = np.random.default_rng(4)
    n, m, k = 80, 3, 4
    R = sp.random(n, n, density=0.05, random_state=5)
    A = (R @ R.T + 0.5 * sp.eye(n)).toarray()
    C = rng.standard_normal((m, n))
    F, G = rng.standard_normal((n, k)), rng.standard_normal((m, k))
    X_ref, L_ref = kkt_reference(A, C, F, G)
    A_petsc = to_petsc(A)
    with ConstrainedSolver(A_petsc, C, symmetric=symmetric, schur=schur) as constrained:
        X, L = constrained.solve(F, G)
        X0, L0 = constrained.solve(F[:, 0])  # g = 0, single vector
    A_petsc.destroy()
    scale = np.abs(X_ref).max()
    assert np.abs(X - X_ref).max() < 1e-10 * scale
    assert np.abs(L - L_ref).max() < 1e-10 * np.abs(L_ref).max()
    X0_ref, L0_ref = kkt_reference(A, C, F[:, :1], np.zeros((m, 1)))
    assert X0.shape == (n,) and L0.shape == (m,)
    assert np.abs(X0 - X0_ref[:, 0]).max() < 1e-10 * np.abs(X0_ref).max()
    assert np.abs(C @ X0).max() < 1e-12 * np.abs(X0).max() * np.abs(C).max() * n


@pytest.mark.parametrize("fmt", ["numpy", "scipy", "petsc"])
def test_constrained_accepts_sparse_constraints_and_reuses(fmt):
    """Sparse C (point constraints) in every format; set_operators with scaled A."""
    n = 60
    A = (laplacian_2d(10)[:n, :n] + sp.eye(n)).toarray()
    C = np.zeros((3, n))
    C[0, 5], C[1, 20], C[2, 40:43] = 1.0, 1.0, 1.0 / 3
    F = np.random.default_rng(6).standard_normal((n, 2))
    G = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    X_ref, L_ref = kkt_reference(A, C, F, G)
    X2_ref, L2_ref = kkt_reference(2 * A, C, F, G)
    C_in = {"numpy": C, "scipy": sp.csr_matrix(C), "petsc": to_petsc(C)}[fmt]
    A_petsc, A2_petsc = to_petsc(A), to_petsc(2 * A)
    with ConstrainedSolver(A_petsc, C_in, symmetric=True) as constrained:
        X, L = constrained.solve(F, G)
        constrained.set_operators(A2_petsc, C_in)
        X2, L2 = constrained.solve(F, G)
    for M in (A_petsc, A2_petsc, C_in):
        if isinstance(M, PETSc.Mat):
            M.destroy()
    assert np.abs(X - X_ref).max() < 1e-10 * np.abs(X_ref).max()
    assert np.abs(L - L_ref).max() < 1e-10 * np.abs(L_ref).max()
    assert np.abs(X2 - X2_ref).max() < 1e-10 * np.abs(X2_ref).max()
    assert np.abs(L2 - L2_ref).max() < 1e-10 * np.abs(L2_ref).max()


@pytest.mark.parametrize("symmetric", [False, True])
def test_constrained_singular_neumann_with_mean_constraint(symmetric):
    N = 64
    K, M = p1_neumann_1d(N)
    w = M @ np.ones(N + 1)
    f = np.random.default_rng(7).standard_normal((N + 1, 3))
    K_petsc = to_petsc(K)
    with ConstrainedSolver(K_petsc, w[None, :], symmetric=symmetric) as constrained:
        x, lam = constrained.solve(f)
    assert np.abs(w @ x).max() < 1e-12 * np.abs(x).max()
    assert np.abs(K @ x - (f - np.outer(w, lam[0]))).max() < 1e-10 * np.abs(f).max()
    # 1^T K = 0, so the multiplier is the incompatibility 1^T f / 1^T w
    assert np.allclose(lam[0], f.sum(axis=0) / w.sum(), rtol=1e-10, atol=0)
    # the Schur route needs A^-1: it must refuse the singular operator
    with pytest.raises(SolverError, match="constrained solver"):
        ConstrainedSolver(K_petsc, w[None, :], symmetric=symmetric, schur=True)
    K_petsc.destroy()


# ----------------------------------------------------------------------------- Neumann
def test_neumann_1d_converges_at_rate_two():
    """-u'' = cos(pi x), u'(0) = u'(1) = 0, int u = 0: u = cos(pi x) / pi^2."""
    hs, errors = [], []
    for N in (32, 64, 128):
        K, M = p1_neumann_1d(N)
        x = np.linspace(0, 1, N + 1)
        K_petsc = to_petsc(K)
        u, lam = solve_neumann(K_petsc, M @ np.cos(np.pi * x), M @ np.ones(N + 1))
        K_petsc.destroy()
        assert np.ndim(lam) == 0 and abs(lam) < 1e-12  # compatible load
        assert abs(np.sum(M @ u)) < 1e-14
        hs.append(1.0 / N)
        errors.append(np.abs(u - np.cos(np.pi * x) / np.pi**2).max())
    rate = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(rate - 2.0) < 0.05, (rate, errors)
    assert errors[-1] < 2e-5


def test_neumann_incompatible_loads_report_multiplier():
    N = 40
    K, M = p1_neumann_1d(N)
    w = M @ np.ones(N + 1)
    x = np.linspace(0, 1, N + 1)
    F = np.c_[M @ np.cos(np.pi * x), M @ (np.cos(np.pi * x) + 0.7), M @ x]
    K_petsc = to_petsc(K)
    u, lam = solve_neumann(K_petsc, F, w)
    K_petsc.destroy()
    assert u.shape == F.shape and lam.shape == (3,)
    np.testing.assert_allclose(lam, [0.0, 0.7, 0.5], atol=1e-12)
    # u solves the projected problem K u = f - lam w with zero mean
    assert np.abs(K @ u - (F - np.outer(w, lam))).max() < 1e-11
    assert np.abs(w @ u).max() < 1e-14


# ----------------------------------------------------------------------------- eigen
def p1_neumann_eigenvalues(N, k):
    """Exact generalised eigenvalues of the P1 Neumann pencil (K, M) on N elements."""
    h = 1.0 / N
    c = np.cos(k * np.pi * h)
    return 6 / h**2 * (1 - c) / (2 + c)


def test_eigen_1d_neumann_laplacian():
    n = 4
    k = np.arange(n)
    rel_errors = []
    for N in (64, 128, 256):
        K, M = p1_neumann_1d(N)
        K_petsc, M_petsc = to_petsc(K), to_petsc(M)
        lam, X = eigensolve(K_petsc, M_petsc, n)
        K_petsc.destroy()
        M_petsc.destroy()
        assert lam.shape == (n,) and X.shape == (N + 1, n)
        assert abs(lam[0]) < 1e-8
        np.testing.assert_allclose(lam[1:], p1_neumann_eigenvalues(N, k[1:]), rtol=1e-9)
        np.testing.assert_allclose(X.T @ M @ X, np.eye(n), atol=1e-10)
        assert np.abs(K @ X - (M @ X) * lam).max() < 1e-8 * np.abs(K).max()
        rel_errors.append(np.abs(lam[1:] / (k[1:] * np.pi) ** 2 - 1))
    assert rel_errors[-1].max() < 1e-3  # 256 elements
    rates = np.polyfit(np.log([1 / 64, 1 / 128, 1 / 256]), np.log(rel_errors), 1)[0]
    assert np.all(np.abs(rates - 2.0) < 0.05), rates
    # the first eigenvector is the constant, M-normalised on |(0, 1)| = 1
    np.testing.assert_allclose(X[:, 0], 1.0, atol=1e-8)


def test_eigen_2d_high_contrast_matches_dense_eigh():
    n_grid = 10
    rng = np.random.default_rng(8)
    A = graph_laplacian_2d(n_grid, lambda n_edges: 10.0 ** rng.uniform(-2, 2, n_edges))
    B = sp.diags(10.0 ** rng.uniform(-1, 1, n_grid**2)).tocsr()  # kappa-tilde weights
    lam_ref, V_ref = scipy.linalg.eigh(A.toarray(), B.toarray(), subset_by_index=[0, 5])
    A_petsc, B_petsc = to_petsc(A), to_petsc(B)
    lam, X = eigensolve(A_petsc, B_petsc, 6)
    lam_mumps, _ = eigensolve(A_petsc, B_petsc, 6,
                              petsc_options={"st_pc_factor_mat_solver_type": "mumps"})
    A_petsc.destroy()
    B_petsc.destroy()
    assert abs(lam[0]) < 1e-8
    np.testing.assert_allclose(lam, lam_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(lam_mumps, lam_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(X.T @ B @ X, np.eye(6), atol=1e-10)
    # simple eigenvalues: the same vectors up to sign
    np.testing.assert_allclose(np.abs(np.sum(X * (B @ V_ref), axis=0)), 1.0, atol=1e-8)


def test_eigen_degenerate_eigenvalues_are_b_orthonormal():
    """5-point Neumann square: lambda_2 = lambda_3 (x and y modes) -- still B-orthonormal."""
    n_grid = 24
    A = graph_laplacian_2d(n_grid, np.ones)
    B = sp.eye(n_grid**2, format="csr")
    lam_ref = np.sort(np.add.outer(*(2 * [2 - 2 * np.cos(np.pi * np.arange(n_grid) / n_grid)]))
                      .ravel())[:5]  # separable: sums of 1D Neumann eigenvalues
    A_petsc, B_petsc = to_petsc(A), to_petsc(B)
    lam, X = eigensolve(A_petsc, B_petsc, 5)
    A_petsc.destroy()
    B_petsc.destroy()
    np.testing.assert_allclose(lam, lam_ref, rtol=1e-9, atol=1e-10)
    assert abs(lam[1] - lam[2]) < 1e-10
    np.testing.assert_allclose(X.T @ X, np.eye(5), atol=1e-10)


def test_eigen_not_converged_raises():
    K, M = p1_neumann_1d(200)
    K_petsc, M_petsc = to_petsc(K), to_petsc(M)
    with pytest.raises(SolverError, match="eigenpairs converged"):
        eigensolve(K_petsc, M_petsc, 20, petsc_options={"eps_max_it": 1, "eps_ncv": 21})
    K_petsc.destroy()
    M_petsc.destroy()


@pytest.mark.parametrize("symmetric", [False, True])
def test_constrained_kernel_not_removed_raises(symmetric):
    """A constraint orthogonal to the constants leaves the KKT matrix singular."""
    K, _ = p1_neumann_1d(50)
    c = np.zeros((1, 51))
    c[0, 3], c[0, 7] = 1.0, -1.0
    K_petsc = to_petsc(K)
    with pytest.raises(SolverError, match="constrained solver"):
        with ConstrainedSolver(K_petsc, c, symmetric=symmetric) as constrained:
            constrained.solve(np.ones(51))
    K_petsc.destroy()


def test_singular_without_zero_pivot_raises():
    """The Neumann Laplacian as A_II: MUMPS LU meets no exact zero pivot, the solve objects."""
    K, _ = p1_neumann_1d(50)
    K_petsc = to_petsc(K)
    with pytest.raises(SolverError, match="singular"):
        with DirichletSolver(K_petsc,
                             petsc_options={"pc_factor_mat_solver_type": "mumps"}) as dirichlet:
            dirichlet.solve(np.linspace(0, 1, 51))
    K_petsc.destroy()


@pytest.mark.parametrize("solver_type", ["petsc", "mumps"])
def test_eigen_target_on_eigenvalue_raises(solver_type):
    """Shift 0 on the singular Neumann operator: A - 0 B cannot be factorised."""
    K, M = p1_neumann_1d(50)
    K_petsc, M_petsc = to_petsc(K), to_petsc(M)
    with pytest.raises(SolverError, match="eigensolver"):
        eigensolve(K_petsc, M_petsc, 3, target=0.0,
                   petsc_options={"st_pc_factor_mat_solver_type": solver_type})
    K_petsc.destroy()
    M_petsc.destroy()
