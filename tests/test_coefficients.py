"""Multiscale coefficient fields."""

import warnings

import dolfinx
import numpy as np
import pytest
import ufl
from mpi4py import MPI

import msfem
from msfem.coefficients import as_ufl, check_positive, smallest_eigenvalue


def _integrals(fld, comm):
    """(∫ a, ∫ a x, ∫ a y^2) on a 24x24 quadrilateral mesh of the unit square."""
    mesh = dolfinx.mesh.create_unit_square(comm, 24, 24, dolfinx.mesh.CellType.quadrilateral)
    a = as_ufl(fld, mesh).expr
    x = ufl.SpatialCoordinate(mesh)
    out = []
    for w in (1, x[0], x[1] ** 2):
        v = dolfinx.fem.assemble_scalar(dolfinx.fem.form(a * w * ufl.dx))
        out.append(comm.allreduce(v, op=MPI.SUM))
    return np.array(out)


@pytest.mark.parametrize("fld", [
    msfem.RandomCheckerboard(1.0, 10.0, cell=1 / 12, seed=3, ncells=(12, 12)),
    msfem.LogNormal(0.0, 1.0, correlation_length=0.1, seed=7),
])
def test_random_fields_same_on_any_number_of_ranks(comm, fld):
    a_world = _integrals(fld, comm)
    a_self = _integrals(fld, MPI.COMM_SELF)
    assert np.allclose(a_world, a_self, rtol=1e-12)
    # and the seed matters
    other = type(fld)(**{**fld.__dict__, "seed": fld.seed + 1})
    assert not np.allclose(_integrals(other, MPI.COMM_SELF), a_self, rtol=1e-3)


def test_random_checkerboard_volume_fraction():
    fld = msfem.RandomCheckerboard(1.0, 0.0 + 2.0, cell=1 / 64, seed=1, ncells=(64, 64), p=0.3)
    frac = fld.phases().mean()
    assert abs(frac - 0.3) < 3 * np.sqrt(0.3 * 0.7 / 64**2)


def test_symbolic_equals_numeric(comm):
    fld = msfem.HouWu(eps=0.1)
    mesh = dolfinx.mesh.create_unit_square(comm, 8, 8)
    pts = np.random.default_rng(0).random((3, 5))
    pts[2] = 0
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    f = dolfinx.fem.Function(V)
    f.interpolate(dolfinx.fem.Expression(fld.symbolic(ufl.SpatialCoordinate(mesh)),
                                         V.element.interpolation_points))
    x = V.tabulate_dof_coordinates().T
    assert np.allclose(f.x.array, fld.evaluate(x), rtol=1e-12)
    # P = 1.8 bounds: a >= (0.2/3.8) + (1/3.8)
    assert fld.evaluate(pts).min() > 0.2 / 3.8


def test_laminate_and_periodic_tensor():
    lam = msfem.Laminate(1.0, 3.0, eps=0.5, direction=1, fraction=0.25)
    x = np.array([[0.0, 0.0], [0.1, 0.2], [0.0, 0.0]])
    assert np.allclose(lam.evaluate(x), [1.0, 3.0])
    tens = msfem.Periodic(lambda y, ns: [[2 + ns.sin(2 * ns.pi * y[0]), 0], [0, 1]], 0.25,
                          shape=(2, 2))
    vals = tens.evaluate(np.zeros((3, 4)))
    assert vals.shape == (2, 2, 4) and np.allclose(vals[0, 0], 2)


def test_high_contrast_fields():
    ch = msfem.channels(1e6, 3, 0.05)
    x = np.array([[0.5, 0.5], [0.5, 0.3], [0, 0]])
    assert np.allclose(ch.evaluate(x), [1e6, 1.0])
    inc = msfem.square_inclusions(1e4, 4, 0.05)
    assert np.isclose(inc.evaluate(np.array([[0.125], [0.125], [0]]))[0], 1e4)


def test_non_positive_refused_with_location():
    lam = msfem.Laminate(-1.0, 3.0, eps=0.5)
    with pytest.raises(ValueError, match=r"value -1 at x = \[0.1"):
        check_positive(lam, np.array([[0.1], [0.2], [0.0]]))
    tens = msfem.ConstantField([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, -1
    with pytest.raises(ValueError, match="not positive definite"):
        check_positive(tens, np.zeros((3, 2)))


def test_smallest_eigenvalue():
    assert smallest_eigenvalue(np.array([2.0, -1.0, 3.0])) == (1, -1.0)
    # the symmetric part counts: [[1, 0], [5, 1]] has eigenvalues 1, 1 but is indefinite
    tensors = np.array([[[1.0, 3.0], [-3.0, 1.0]], [[1.0, 0.0], [5.0, 1.0]]])
    k, lam = smallest_eigenvalue(tensors)
    assert k == 1 and lam == pytest.approx(-1.5)
    k, lam = smallest_eigenvalue(np.array([1.0, np.inf, np.nan]))
    assert k == 1 and np.isnan(lam)
    assert smallest_eigenvalue(np.zeros((0, 2, 2))) == (-1, np.inf)
    with pytest.raises(ValueError, match="square tensors"):
        smallest_eigenvalue(np.ones((4, 2)))


@pytest.mark.parametrize("tensor, positive", [
    ([[1.0, 3.0], [-3.0, 1.0]], True),  # symmetric part I; eigenvalues 1 +- 3i
    ([[1.0, 0.0], [5.0, 1.0]], False),  # eigenvalues 1, 1; symmetric part has 1 - 2.5 < 0
])
def test_positivity_checks_agree_on_nonsymmetric_tensors(comm, tensor, positive):
    """Field at points, UFL at midpoints and a constant coefficient: one definition."""
    from msfem.fine import check_coefficients
    from msfem.homogenization.cell import check_positive_definite

    mesh = dolfinx.mesh.create_unit_square(comm, 2, 2)
    checks = {
        "field": lambda: check_positive(msfem.ConstantField(tensor), np.zeros((3, 2))),
        "ufl": lambda: check_positive_definite(mesh, ufl.as_matrix(tensor)),
        "constant": lambda: check_positive_definite(
            mesh, dolfinx.fem.Constant(mesh, np.array(tensor, dtype=dolfinx.default_scalar_type))),
        "problem-field": lambda: check_coefficients(
            msfem.diffusion(msfem.ConstantField(tensor)), mesh),
        "problem-number": lambda: check_coefficients(msfem.diffusion(tensor), mesh),
    }
    refused = {}
    for what, check in checks.items():
        try:
            check()
            refused[what] = False
        except ValueError as err:
            assert "not positive" in str(err)
            refused[what] = True
    assert refused == dict.fromkeys(checks, not positive)


def test_unresolved_eps_warns(comm):
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), f=1.0)
    hier = msfem.StructuredHierarchy(comm, 4, 4, "quadrilateral")  # h = 1/16 = eps/2
    with pytest.warns(msfem.UnresolvedScaleWarning, match="eps/h = 2.00"):
        msfem.solve_fine(hier.fine, problem)
    resolved = msfem.StructuredHierarchy(comm, 4, 16, "quadrilateral")  # eps/h = 8
    with warnings.catch_warnings():
        warnings.simplefilter("error", msfem.UnresolvedScaleWarning)
        msfem.solve_fine(resolved.fine, problem)


@pytest.mark.parametrize("cell", ["quadrilateral", "triangle", "hexahedron", "tetrahedron"])
def test_sampled_field_refresh_is_dolfinx_dg0_interpolation(cell):
    """A sampled field's DG0 values (cell midpoints, written directly) equal dolfinx's
    interpolation, scalar and tensor, also on non-affine quadrilaterals and after a move."""
    from msfem.coefficients import FieldOnMesh

    ct = getattr(dolfinx.mesh.CellType, cell)
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 5, 4, ct) if cell in (
        "quadrilateral", "triangle") else dolfinx.mesh.create_unit_cube(MPI.COMM_WORLD, 3, 3, 2, ct)
    mesh.geometry.x[:, 0] += 0.3 * mesh.geometry.x[:, 1] ** 2  # curved images of the cells
    fields = [msfem.UserField(lambda x: 1 + x[0] * np.sin(3 * x[1])),
              msfem.UserField(lambda x: np.array([[1 + x[0], 0.1 * x[1]], [0.1 * x[1], 2 + x[1]]]),
                              shape=(2, 2))]
    for fld in fields:
        on_mesh = FieldOnMesh(fld, mesh)
        for shift in (0.0, 0.25):
            mesh.geometry.x[:, 1] += shift
            on_mesh.refresh()
            ref = dolfinx.fem.Function(on_mesh.function.function_space)
            size = int(np.prod(fld.shape, dtype=int))
            ref.interpolate(lambda x: fld.evaluate(x).reshape(size, -1))
            assert np.abs(ref.x.array - on_mesh.function.x.array).max() < 1e-14
