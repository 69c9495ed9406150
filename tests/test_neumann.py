"""Pure Neumann problems: the null space is attached, an incompatible load is refused.

Before, a pure Neumann problem with a load that has no solution "converged" to
max|u| = 3e11 without a word. Runs in serial and under ``mpiexec -n 2``.
"""

import dolfinx
import numpy as np
import pytest
import ufl
from mpi4py import MPI

import msfem

COMM = MPI.COMM_WORLD


@pytest.fixture(scope="module")
def hierarchy():
    return msfem.StructuredHierarchy(COMM, N=4, M=8)


def integral(mesh, expr) -> float:
    return mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * ufl.dx)))


def test_compatible_load_gives_the_mean_zero_solution(hierarchy):
    # -u'' = x - 1/2 with u' = 0 at x = 0, 1: u = -(x - 1/2)^3/6 + (x - 1/2)/8, mean zero
    f = msfem.UserField(lambda x: x[0] - 0.5, lambda x: x[0] - 0.5)
    u = msfem.solve_fine(hierarchy.fine, msfem.diffusion(1.0, f=f, dirichlet=())).u
    x = ufl.SpatialCoordinate(hierarchy.fine)
    exact = -(x[0] - 0.5) ** 3 / 6 + (x[0] - 0.5) / 8
    assert abs(integral(hierarchy.fine, u)) < 1e-12
    assert np.sqrt(integral(hierarchy.fine, (u - exact) ** 2)) < 5e-5  # O(h^2), h = 1/32


@pytest.mark.parametrize("problem", [
    msfem.diffusion(1.0, f=1.0, dirichlet=()),
    msfem.diffusion(msfem.HouWu(eps=0.25), f=-1.0, dirichlet=()),
    msfem.elasticity(1.0, f=(0.0, -1.0), dirichlet=()),
], ids=["diffusion", "hou-wu", "elasticity"])
def test_incompatible_load_is_refused(hierarchy, problem):
    with pytest.raises(ValueError, match="no Dirichlet data.*incompatible.*has no solution"):
        msfem.solve_fine(hierarchy.fine, problem)


def test_balanced_traction_free_elasticity_is_solved(hierarchy):
    # net force and moment of f = (x - 1/2, 0) vanish: a solution orthogonal to rigid modes
    f = msfem.UserField(lambda x: np.array([x[0] - 0.5, 0 * x[0]]),
                        lambda x: ufl.as_vector([x[0] - 0.5, 0]), shape=(2,))
    sol = msfem.solve_fine(hierarchy.fine, msfem.elasticity(1.0, f=f, dirichlet=()))
    u = sol.u
    assert np.isfinite(u.x.array).all()
    assert COMM.allreduce(np.abs(u.x.array).max(), op=MPI.MAX) < 1.0
    for k in range(2):  # no net translation (u_x is odd about x = 1/2)
        assert abs(integral(hierarchy.fine, u[k])) < 1e-8


def test_a_reaction_term_removes_the_null_space(hierarchy):
    sol = msfem.solve_fine(hierarchy.fine, msfem.reaction_diffusion(1.0, 1.0, f=1.0,
                                                                    dirichlet=()))
    # -u'' + u = 1 with zero flux: u = 1 exactly
    assert COMM.allreduce(np.abs(sol.u.x.array - 1).max(), op=MPI.MAX) < 1e-8
