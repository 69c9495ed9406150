"""Fine-scale reference solver: manufactured solutions, 1D exact solution, parallel agreement."""

import numpy as np
import pytest
import ufl
from helpers import fitted_rate
from mpi4py import MPI

import msfem
from msfem import norms
from msfem.coefficients import Periodic, UserField
from msfem.solvers import DIRECT_OPTIONS


def _manufactured(dim):
    """u = prod sin(pi x_i), a = 1 + x_0^2 / 2 (smooth), f = -div(a grad u)."""
    def u_exact(x):
        out = ufl.sin(ufl.pi * x[0])
        for i in range(1, dim):
            out = out * ufl.sin(ufl.pi * x[i])
        return out

    a = UserField(lambda x: 1 + 0.5 * x[0] ** 2, lambda x: 1 + 0.5 * x[0] ** 2)
    f = UserField(lambda x: np.zeros(x.shape[1]),
                  lambda x: -ufl.div((1 + 0.5 * x[0] ** 2) * ufl.grad(u_exact(x))))
    return u_exact, msfem.diffusion(a, f=f)


@pytest.mark.parametrize("cell,degree,sizes,rates", [
    ("triangle", 1, (4, 8, 16, 32), (2, 1)),
    ("quadrilateral", 1, (4, 8, 16, 32), (2, 1)),
    ("tetrahedron", 1, (4, 8, 16), (2, 1)),
    ("triangle", 2, (4, 8, 16), (3, 2)),
])
def test_manufactured_rates(comm, cell, degree, sizes, rates):
    dim = 3 if cell == "tetrahedron" else 2
    u_exact, problem = _manufactured(dim)
    problem = msfem.Problem(problem.bilinear, problem.coefficients, problem.source,
                            degree=degree)
    e_l2, e_h1 = [], []
    for n in sizes:
        hier = msfem.StructuredHierarchy(comm, n, 1, cell)
        sol = msfem.solve_fine(hier.fine, problem)
        x = ufl.SpatialCoordinate(hier.fine)
        err = norms.errors(sol.u, u_exact(x))
        e_l2.append(err["l2"])
        e_h1.append(err["h1"])
    h = 1.0 / np.array(sizes)
    assert fitted_rate(h[-2:], e_l2[-2:]) == pytest.approx(rates[0], abs=0.15)
    assert fitted_rate(h[-2:], e_h1[-2:]) == pytest.approx(rates[1], abs=0.15)


def test_elasticity_manufactured_rates(comm):
    nu = 0.3
    lam, mu = nu / ((1 + nu) * (1 - 2 * nu)), 1 / (2 * (1 + nu))

    def u_exact(x):
        s = ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])
        return ufl.as_vector([s, x[0] * x[1] * s])

    def body_force(x):
        eps = ufl.sym(ufl.grad(u_exact(x)))
        return -ufl.div(lam * ufl.tr(eps) * ufl.Identity(2) + 2 * mu * eps)

    f = UserField(lambda x: np.zeros((2, x.shape[1])), body_force, shape=(2,))
    problem = msfem.elasticity(1.0, nu=nu, f=f)
    e_l2, e_h1, sizes = [], [], (8, 16, 32)
    for n in sizes:
        hier = msfem.StructuredHierarchy(comm, n, 1, "triangle")
        sol = msfem.solve_fine(hier.fine, problem)
        err = norms.errors(sol.u, u_exact(ufl.SpatialCoordinate(hier.fine)))
        e_l2.append(err["l2"])
        e_h1.append(err["h1"])
    h = 1.0 / np.array(sizes)
    assert fitted_rate(h[-2:], e_l2[-2:]) == pytest.approx(2, abs=0.15)
    assert fitted_rate(h[-2:], e_h1[-2:]) == pytest.approx(1, abs=0.15)


def exact_1d(x, eps):
    """REFERENCES.md §4: -(A u')' = 1, A = 1/(2 + cos(2 pi x / eps))."""
    s, c = np.sin(2 * np.pi * x / eps), np.cos(2 * np.pi * x / eps)
    return x - x**2 + eps * (s / (4 * np.pi) - x * s / (2 * np.pi)
                             - eps * c / (4 * np.pi**2) + eps / (4 * np.pi**2))


def one_d_problem(eps):
    A = Periodic(lambda y, ns: 1 / (2 + ns.cos(2 * ns.pi * y[0])), eps)
    return msfem.diffusion(A, f=1.0)


def test_1d_exact_solution(comm):
    """P1 on a resolved grid converges to the exact u_eps at rate 2 in L2 and 1 in H1."""
    eps = 0.25
    e_l2, e_h1, sizes = [], [], (64, 128, 256)
    for n in sizes:
        hier = msfem.StructuredHierarchy(comm, n, 1, "interval")
        sol = msfem.solve_fine(hier.fine, one_d_problem(eps), petsc_options=DIRECT_OPTIONS)
        x = ufl.SpatialCoordinate(hier.fine)[0]
        k = 2 * ufl.pi / eps
        u_ex = x - x**2 + eps * (ufl.sin(k * x) / (4 * ufl.pi) - x * ufl.sin(k * x) / (2 * ufl.pi)
                                 - eps * ufl.cos(k * x) / (4 * ufl.pi**2) + eps / (4 * ufl.pi**2))
        err = norms.errors(sol.u, u_ex)
        e_l2.append(err["l2"])
        e_h1.append(err["h1"])
    h = 1.0 / np.array(sizes)
    assert fitted_rate(h, e_l2) == pytest.approx(2, abs=0.1)
    assert fitted_rate(h, e_h1) == pytest.approx(1, abs=0.1)
    # the homogenized solution u0 = x(1-x) agrees with u_eps at x = k eps
    assert abs(exact_1d(np.array([0.5]), eps)[0] - 0.25) < 1e-14


def test_parallel_agreement(comm):
    """Partition-independent numbers: norms of the fine solution on WORLD vs SELF."""
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), f=-1.0)
    out = []
    for c in (comm, MPI.COMM_SELF):
        hier = msfem.StructuredHierarchy(c, 4, 16, "quadrilateral")
        u = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
        out.append((norms.l2_norm(u), norms.h1_seminorm(u)))
    assert np.allclose(out[0], out[1], rtol=1e-10, atol=0)


def test_gamg_matches_direct(comm):
    problem = msfem.elasticity(msfem.HouWu(eps=1 / 4), nu=0.3)
    hier = msfem.StructuredHierarchy(comm, 4, 8, "triangle")
    u1 = msfem.solve_fine(hier.fine, problem).u
    u2 = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    assert norms.l2_norm(u1 - u2) / norms.l2_norm(u2) < 1e-9


def test_solver_divergence_raises(comm):
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=1.0)
    hier = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    with pytest.raises(msfem.SolverError, match="DIVERGED_MAX_IT"):
        msfem.solve_fine(hier.fine, problem, petsc_options={"ksp_max_it": 1, "ksp_rtol": 1e-14})


def test_non_positive_coefficient_refused(comm):
    problem = msfem.diffusion(msfem.Laminate(-1.0, 2.0, eps=0.25), f=1.0)
    hier = msfem.StructuredHierarchy(comm, 2, 8, "quadrilateral")
    with pytest.raises(ValueError, match="not positive definite"):
        msfem.solve_fine(hier.fine, problem)


def test_mixed_boundary_conditions(comm):
    """u = x on x=0,1 (Dirichlet), zero flux on y=0,1 (Neumann): exact solution u = x."""
    problem = msfem.diffusion(2.0, f=0.0, dirichlet=(msfem.Dirichlet(
        lambda x: x[0], lambda x: np.isclose(x[0], 0) | np.isclose(x[0], 1)),),
        neumann=(msfem.Neumann(0.0, lambda x: np.isclose(x[1], 0) | np.isclose(x[1], 1)),))
    hier = msfem.StructuredHierarchy(comm, 4, 2, "triangle")
    u = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    x = ufl.SpatialCoordinate(hier.fine)
    assert norms.l2_norm(u - x[0]) < 1e-12


def _reaction_diffusion_form(u, v, a, c):
    return (ufl.inner(a * ufl.grad(u), ufl.grad(v)) + c * u * v) * ufl.dx


@pytest.mark.parametrize("c", [msfem.Laminate(0.0, 1.0, eps=0.5), 0.0])
def test_positivity_is_declared_not_read_from_the_name(comm, c):
    """A user's form whose reaction coefficient vanishes on half of each period (or is 0)."""
    from msfem.fine import check_coefficients

    hier = msfem.StructuredHierarchy(comm, 2, 8, "quadrilateral")
    coefficients = {"a": msfem.HouWu(eps=0.5), "c": c}
    declared = msfem.Problem(_reaction_diffusion_form, coefficients, source=1.0,
                             name="my-problem", positive=("a",))
    assert declared.positive_coefficients == ("a",)
    check_coefficients(declared, hier.fine)  # c >= 0 may vanish: not checked
    undeclared = msfem.Problem(_reaction_diffusion_form, coefficients, source=1.0,
                               name="my-problem")
    assert undeclared.positive_coefficients == ("a", "c")
    with pytest.raises(ValueError, match="coefficient 'c'.*Problem\\(positive=...\\)"):
        check_coefficients(undeclared, hier.fine)
    # the name is a label only: calling the problem "reaction-diffusion" declares nothing
    named = msfem.Problem(_reaction_diffusion_form, coefficients, name="reaction-diffusion")
    with pytest.raises(ValueError, match="coefficient 'c'"):
        check_coefficients(named, hier.fine)
    # the model constructor declares its reaction coefficient as allowed to vanish
    check_coefficients(msfem.reaction_diffusion(msfem.HouWu(eps=0.5), c), hier.fine)


def test_problem_declarations_are_validated():
    a = msfem.HouWu(eps=0.25)
    with pytest.raises(ValueError, match="not coefficients"):
        msfem.Problem(_reaction_diffusion_form, {"a": a, "c": 1.0}, positive=("A",))
    with pytest.raises(ValueError, match="near_nullspace"):
        msfem.Problem(_reaction_diffusion_form, {"a": a, "c": 1.0}, near_nullspace="rigid-body")
    with pytest.raises(ValueError, match="operator 'diffusion' has the coefficients"):
        msfem.Problem(_reaction_diffusion_form, {"a": a, "c": 1.0}, operator="diffusion")
    with pytest.raises(ValueError, match="needs a vector unknown"):
        msfem.Problem(_reaction_diffusion_form, {"E": a}, operator="elasticity",
                      parameters={"nu": 0.3})
    with pytest.raises(ValueError, match="use one of"):
        msfem.Problem(_reaction_diffusion_form, {"a": a, "c": 1.0}, operator="helmholtz")
    assert msfem.diffusion(a).operator == "diffusion"
    assert msfem.elasticity(a).operator == "elasticity"
    assert msfem.elasticity(a).near_nullspace == "rigid"
    assert msfem.reaction_diffusion(a, 0.0).positive == ("A",)
