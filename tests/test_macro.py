"""Homogenized macro solution u0 and first-order corrector u1 (scale separation)."""

import numpy as np
import pytest
import ufl
from helpers import fitted_rate
from mpi4py import MPI

import msfem
from msfem import norms
from msfem.homogenization import cell_solution, corrector_solution, homogenized_solution


def test_laminate_effective_tensor_in_macro_cell_solution():
    """The macro module's A* of a laminate is the arithmetic/harmonic mean pair."""
    lam = msfem.Laminate(1.0, 9.0, eps=0.1, direction=0, fraction=0.5)
    A = cell_solution(lam).A_star
    assert A[0, 0] == pytest.approx(2 / (1 + 1 / 9), rel=1e-8)  # across: harmonic
    assert A[1, 1] == pytest.approx(5.0, rel=1e-8)  # along: arithmetic
    assert abs(A[0, 1]) < 1e-10


def test_scale_separation_rates(comm):
    """||u_eps - u0||_L2 = O(eps); ||u_eps - u1||_H1 = O(sqrt eps) (boundary layer) while
    ||u_eps - u0||_H1 = O(1) (REFERENCES.md §3)."""
    epss = [1 / 4, 1 / 8, 1 / 16]
    e0_l2, e0_h1, e1_h1 = [], [], []
    for eps in epss:
        problem = msfem.diffusion(msfem.HouWu(eps=eps), f=-1.0, quadrature_degree=4)
        hier = msfem.StructuredHierarchy(comm, 4, int(round(16 / (eps * 4))), "quadrilateral")
        u_eps = msfem.solve_fine(hier.fine, problem).u
        e0 = norms.errors(homogenized_solution(hier, problem), u_eps)
        e1 = norms.errors(corrector_solution(hier, problem), u_eps)
        e0_l2.append(e0["l2"])
        e0_h1.append(e0["h1"])
        e1_h1.append(e1["h1"])
    assert fitted_rate(epss, e0_l2) == pytest.approx(1.0, abs=0.25)
    assert abs(fitted_rate(epss, e0_h1)) < 0.1
    assert fitted_rate(epss, e1_h1) == pytest.approx(0.5, abs=0.2)
    assert e1_h1[-1] < 0.25 * e0_h1[-1]


def test_non_periodic_coefficient_refused(comm):
    hier = msfem.StructuredHierarchy(comm, 2, 8)
    problem = msfem.diffusion(msfem.RandomCheckerboard(1, 2, 1 / 8, seed=0, ncells=(8, 8)))
    with pytest.raises(ValueError, match="periodic coefficient"):
        homogenized_solution(hier, problem)
    with pytest.raises(ValueError, match="periodic Young's modulus"):
        homogenized_solution(hier, msfem.elasticity(problem.coefficients["a"]))


def test_same_on_any_number_of_ranks(comm):
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=-1.0)
    out = []
    for c in (comm, MPI.COMM_SELF):
        hier = msfem.StructuredHierarchy(c, 4, 8)
        u1 = corrector_solution(hier, problem, petsc_options=msfem.solvers.DIRECT_OPTIONS)
        out.append([norms.l2_norm(u1), norms.h1_seminorm(u1)])
    assert np.allclose(out[0], out[1], rtol=1e-10)


def _slow_fast():
    """a(x, y) = (1 + x_0)(2 + sin 2 pi y_1): A*(x) = (1 + x_0) diag(2, sqrt 3) exactly."""
    return msfem.LocallyPeriodic(lambda x, y, ns: (1 + x[0]) * (2 + ns.sin(2 * ns.pi * y[1])),
                                 eps=1 / 16)


def test_locally_periodic_effective_tensors(comm):
    from msfem.homogenization.macro import local_effective_tensors

    hier = msfem.StructuredHierarchy(comm, 4, 32)
    table = local_effective_tensors(hier, _slow_fast())
    for cid in range(hier.num_coarse_cells):
        c = hier.coarse_vertices(cid).mean(axis=0)
        exact = (1 + c[0]) * np.diag([2.0, np.sqrt(3.0)])
        assert np.allclose(table[cid], exact, rtol=1e-4, atol=1e-10)
    self_table = local_effective_tensors(msfem.StructuredHierarchy(MPI.COMM_SELF, 4, 32),
                                         _slow_fast())
    assert np.allclose(table, self_table, rtol=1e-12, atol=0)


def test_locally_periodic_u0_beats_frozen_coefficient(comm):
    """u0 with A*(x_K) per coarse cell is much closer to u_eps than u0 with A* frozen at the
    centre of the domain."""
    fld = _slow_fast()
    problem = msfem.diffusion(fld, f=1.0, quadrature_degree=4)
    hier = msfem.StructuredHierarchy(comm, 8, 16)
    u_eps = msfem.solve_fine(hier.fine, problem).u
    local = norms.errors(homogenized_solution(hier, problem), u_eps)["l2"]
    frozen = msfem.diffusion(msfem.ConstantField((1.5 * np.diag([2.0, np.sqrt(3.0)])).tolist()),
                             f=1.0)
    frozen_err = norms.errors(msfem.solve_fine(hier.fine, frozen).u, u_eps)["l2"]
    assert local < 0.5 * frozen_err


def test_homogenized_elasticity_converges(comm):
    """Elasticity with a periodic Young's modulus: ||u_eps - u0||_L2 = O(eps) with C* from
    the elasticity cell problems (plane strain, Mandel notation)."""
    errs, errs_h1, errs1_h1, epss = [], [], [], [1 / 4, 1 / 8]
    for eps in epss:
        E = msfem.Periodic(lambda y, ns: 1 + 0.6 * ns.sin(2 * ns.pi * y[0])
                           * ns.sin(2 * ns.pi * y[1]), eps)
        problem = msfem.elasticity(E, nu=0.3, f=(0.0, -1.0), quadrature_degree=4)
        hier = msfem.StructuredHierarchy(comm, 4, int(round(16 / (eps * 4))), "quadrilateral")
        u_eps = msfem.solve_fine(hier.fine, problem).u
        e0 = norms.errors(homogenized_solution(hier, problem), u_eps)
        e1 = norms.errors(corrector_solution(hier, problem), u_eps)
        errs.append(e0["l2_rel"])
        errs_h1.append(e0["h1_rel"])
        errs1_h1.append(e1["h1_rel"])
    assert fitted_rate(epss, errs) == pytest.approx(1.0, abs=0.3)
    assert errs[-1] < 0.05
    # the corrector u1 = u0 + eps chi_K(x/eps) (eps(u0) : E_K) fixes the gradient
    assert errs1_h1[-1] < 0.5 * errs_h1[-1] and errs1_h1[-1] < errs1_h1[0]


def test_undeclared_vector_problem_refused(comm):
    """A user's vector form (not declared elasticity) is refused, never homogenized as if."""
    def bilinear(u, v, E):
        return E * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx

    hier = msfem.StructuredHierarchy(comm, 2, 8)
    problem = msfem.Problem(bilinear, {"E": msfem.HouWu(eps=1 / 4)}, source=(0.0, -1.0),
                            shape=(2,), parameters={"nu": 0.3}, name="my-problem")
    with pytest.raises(ValueError, match="declare the operator.*'my-problem'"):
        homogenized_solution(hier, problem)
