"""Static condensation of cell interiors: the skeleton solve equals the full saddle point."""

import numpy as np
import pytest
import scipy.sparse as sp

import msfem.condensation as condensation
from msfem.condensation import CellCondensation, SkeletonPattern
from msfem.local import DirichletSolver

pytestmark = pytest.mark.serial_only  # sequential algebra; one rank is enough

N_K, R_FUN = 6, 2  # dofs per cell: 0 and 5 on its boundary, 1..4 inside (a 1D chain)


def _chain(n_cells: int, symmetric: bool, seed: int = 0):
    """Cells of a 1D chain sharing end dofs; random full cell matrices and functionals."""
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(n_cells):
        B = rng.standard_normal((N_K, N_K))
        A = B @ B.T + N_K * np.eye(N_K)
        mats.append(A if symmetric else A + 0.3 * rng.standard_normal((N_K, N_K)))
    R = rng.standard_normal((R_FUN, N_K))
    trial = rng.standard_normal((N_K, 3))
    return mats, R, trial


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dense", [True, False])
def test_skeleton_solve_equals_the_saddle_point_problem(symmetric, dense, monkeypatch):
    n_cells, load = 4, 1  # the patch: 4 cells, the second carries the load
    mats, R, trial = _chain(n_cells, symmetric)
    pattern = np.ones((N_K, N_K))
    csr = sp.csr_matrix(pattern)
    geometry = CellCondensation(csr.indices, csr.indptr, np.arange(1, N_K - 1),
                                np.array([0, N_K - 1]), R, trial, symmetric)
    cells = geometry.condense(np.array([sp.csr_matrix(A).data for A in mats]))
    # patch dofs: cell c holds 5c..5c+5; the chain's two ends lie on ∂U
    cell_dofs = np.array([np.arange(N_K) + (N_K - 1) * c for c in range(n_cells)])
    n_U = cell_dofs.max() + 1
    free = np.ones(n_U, dtype=bool)
    free[[0, n_U - 1]] = False
    functionals = np.arange(n_cells * R_FUN).reshape(n_cells, R_FUN) - 1  # 7 multipliers:
    # the first cell's first functional is not constrained (-1)
    monkeypatch.setattr(condensation, "DENSE_MAX", 10**6 if dense else 0)
    skeleton = SkeletonPattern(cell_dofs, functionals, free, geometry)
    solver = None if dense else DirichletSolver(
        symmetric=symmetric, prefix="test_skeleton_",
        petsc_options={"ksp_type": "preonly", "pc_type": "cholesky" if symmetric else "lu",
                       "pc_factor_mat_solver_type": "mumps"})
    rows = np.arange(n_cells)
    y = skeleton.solve(cells.E, cells.F[load], load, solver)
    w = skeleton.interior(cells, rows, y, load)
    # the full saddle point on the free dofs
    A = np.zeros((n_U, n_U))
    n_mu = functionals.max() + 1
    C = np.zeros((n_mu, n_U))
    for c in range(n_cells):
        A[np.ix_(cell_dofs[c], cell_dofs[c])] += mats[c]
        for f in range(R_FUN):
            if functionals[c, f] >= 0:
                C[functionals[c, f], cell_dofs[c]] += R[f]
    rhs = np.zeros((n_U, trial.shape[1]))
    rhs[cell_dofs[load]] = mats[load] @ trial
    idx = np.flatnonzero(free)
    K = np.block([[A[np.ix_(idx, idx)], C[:, idx].T], [C[:, idx], np.zeros((n_mu, n_mu))]])
    x = np.linalg.solve(K, np.vstack([rhs[idx], np.zeros((n_mu, rhs.shape[1]))]))
    full = np.zeros((n_U, rhs.shape[1]))
    full[idx] = x[:len(idx)]
    for c in range(n_cells):
        np.testing.assert_allclose(w[c], full[cell_dofs[c]], rtol=0, atol=1e-12)
    # the constraints hold and Pt is the functions' weak form A^T Λ
    assert np.abs(C[:, idx] @ full[idx]).max() < 1e-12
    np.testing.assert_allclose(cells.Pt[load], mats[load].T @ trial, atol=1e-12)
    if solver is not None:
        solver.destroy()


def test_a_singular_cell_interior_is_a_clear_error():
    A = np.ones((N_K, N_K))  # rank one: its interior block is singular
    csr = sp.csr_matrix(A)
    geometry = CellCondensation(csr.indices, csr.indptr, np.arange(1, N_K - 1),
                                np.array([0, N_K - 1]), np.ones((1, N_K)), np.ones((N_K, 1)),
                                symmetric=True)
    with pytest.raises(condensation.SolverError, match="coefficients are positive"):
        geometry.condense(csr.data[None])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dense", [True, False])
def test_schur_skeleton_dirichlet_and_extension_equal_the_patch_solve(symmetric, dense,
                                                                       monkeypatch):
    """MsFEM's condensed local problem: Schur complements summed on the skeleton, data on
    ∂U, then the harmonic extension into one cell -- the Dirichlet problem on the patch."""
    n_cells, r = 5, 3
    mats, _, _ = _chain(n_cells, symmetric, seed=1)
    csr = sp.csr_matrix(np.ones((N_K, N_K)))
    monkeypatch.setattr(condensation, "CHUNK_BYTES", 1)  # one cell per LAPACK call
    geometry = CellCondensation(csr.indices, csr.indptr, np.arange(1, N_K - 1),
                                np.array([0, N_K - 1]), np.zeros((0, N_K)), np.zeros((N_K, 0)),
                                symmetric)
    values = np.array([sp.csr_matrix(A).data for A in mats])
    schur = geometry.schur(values)
    cell_dofs = np.array([np.arange(N_K) + (N_K - 1) * c for c in range(n_cells)])
    n_U = cell_dofs.max() + 1
    free = np.ones(n_U, dtype=bool)
    free[[0, n_U - 1]] = False
    monkeypatch.setattr(condensation, "DENSE_MAX", 10**6 if dense else 0)
    skeleton = SkeletonPattern(cell_dofs, np.zeros((n_cells, 0), dtype=np.int64), free,
                               geometry)
    solver = None if dense else DirichletSolver(
        symmetric=symmetric, prefix="test_skeleton_dirichlet_",
        petsc_options={"ksp_type": "preonly", "pc_type": "cholesky" if symmetric else "lu",
                       "pc_factor_mat_solver_type": "mumps"})
    G = np.random.default_rng(2).standard_normal((2, r))  # data at the chain's two ends
    data = np.zeros((n_U, r))
    data[[0, n_U - 1]] = G
    G_cells = data[cell_dofs[:, geometry.boundary]]
    y = skeleton.dirichlet(schur.E, G_cells, solver)
    w = schur.extend(np.arange(n_cells), values, y)
    A = np.zeros((n_U, n_U))
    for c in range(n_cells):
        A[np.ix_(cell_dofs[c], cell_dofs[c])] += mats[c]
    idx = np.flatnonzero(free)
    full = data.copy()
    full[idx] = np.linalg.solve(A[np.ix_(idx, idx)], -A[np.ix_(idx, ~free)] @ G)
    for c in range(n_cells):
        np.testing.assert_allclose(w[c], full[cell_dofs[c]], rtol=0, atol=1e-12)
    # the Schur complement itself: A_BB - A_BI A_II^-1 A_IB
    inner, B = np.arange(1, N_K - 1), np.array([0, N_K - 1])
    A0 = mats[0]
    S0 = A0[np.ix_(B, B)] - A0[np.ix_(B, inner)] @ np.linalg.solve(
        A0[np.ix_(inner, inner)], A0[np.ix_(inner, B)])
    np.testing.assert_allclose(schur.E[0], S0, rtol=1e-12, atol=1e-12)
    if solver is not None:
        solver.destroy()


def test_a_singular_cell_names_its_coarse_cell():
    """A singular interior among several cells: the error names that cell."""
    mats, _, _ = _chain(3, True)
    mats[1] = np.ones((N_K, N_K))  # rank one
    csr = sp.csr_matrix(np.ones((N_K, N_K)))
    geometry = CellCondensation(csr.indices, csr.indptr, np.arange(1, N_K - 1),
                                np.array([0, N_K - 1]), np.zeros((0, N_K)), np.zeros((N_K, 0)),
                                symmetric=True)
    values = np.array([sp.csr_matrix(A).data for A in mats])
    store = condensation.CellStore(10, lambda todo: geometry.schur(values[todo - 4]))
    with pytest.raises(condensation.SolverError, match="coarse cell 5: .*positive"):
        store.rows(np.array([4, 5, 6]))
