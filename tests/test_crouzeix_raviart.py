"""MsFEM à la Crouzeix--Raviart (msfem.methods.crouzeix_raviart) and perforated domains.

Every test runs in serial and under ``mpirun -n 2``; pinned numbers are the same on both.
"""

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import pytest
import ufl
from mpi4py import MPI

import msfem
from msfem import config
from msfem.coarse import solve
from msfem.coefficients import PeriodicDiscs
from msfem.fine import hole_dofs
from msfem.problem import hole_nodes

DIRECT = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def _fine(h, problem):
    return msfem.solve_fine(h.fine, problem, petsc_options=DIRECT)


def _errors(h, problem, method, fine, **parameters):
    space = msfem.MultiscaleSpace(h, problem, method, parameters=parameters).build()
    sol = solve(space)
    return space, sol, sol.errors(fine.u)


def _sorted_by_point(points, values, comm):
    """All ranks' (point, value) rows, sorted by the point (partition independent)."""
    rows = np.concatenate(comm.allgather(np.column_stack([points, values])))
    return rows[np.lexsort(np.round(rows[:, :-1], 9).T[::-1])]


def test_registered_and_accepted_by_config_and_studies():
    from msfem.studies.plan import all_methods

    assert "crouzeix-raviart" in msfem.methods.available()
    assert "crouzeix-raviart" in all_methods()
    assert config.method_of({"method": "crouzeix-raviart"})[0] == "crouzeix-raviart"


def test_constant_coefficient_reproduces_coarse_crouzeix_raviart_fem(comm):
    r"""a constant: φ_F is the coarse P1 CR function (harmonic, constant flux per face), so the
    coarse system is the CR FEM's; the face means equal dolfinx's CR dofs (midpoint values,
    the face means of P1 functions) to round-off."""
    h = msfem.StructuredHierarchy(comm, 4, 4, "triangle")
    A = [[2.0, 0.5], [0.5, 1.0]]

    def g(x):
        return 1 + x[0] - 2 * x[1]

    problem = msfem.diffusion(msfem.ConstantField(A), 1.0, dirichlet=[msfem.Dirichlet(g)])
    space = msfem.MultiscaleSpace(h, problem, "crouzeix-raviart").build()
    U = solve(space).vector.getArray()
    ms = _sorted_by_point(space.coarse.facet_midpoints(), U, comm)
    # the coarse CR FEM
    V = dolfinx.fem.functionspace(h.coarse, ("CR", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    facets = dolfinx.mesh.locate_entities_boundary(h.coarse, 1,
                                                   lambda x: np.ones(x.shape[1], bool))
    g_h = dolfinx.fem.Function(V)
    g_h.interpolate(g)
    bc = dolfinx.fem.dirichletbc(g_h, dolfinx.fem.locate_dofs_topological(V, 1, facets))
    cr = dolfinx.fem.petsc.LinearProblem(
        ufl.inner(ufl.as_matrix(A) * ufl.grad(u), ufl.grad(v)) * ufl.dx, 1.0 * v * ufl.dx,
        bcs=[bc], petsc_options=DIRECT, petsc_options_prefix="test_cr_").solve()
    n = V.dofmap.index_map.size_local
    ref = _sorted_by_point(V.tabulate_dof_coordinates()[:n, :2], cr.x.array[:n], comm)
    assert len(ms) == len(ref) == 56
    assert np.abs(ms[:, :2] - ref[:, :2]).max() < 1e-12
    assert np.abs(ms[:, 2] - ref[:, 2]).max() < 1e-10 * np.abs(ref[:, 2]).max()


def test_1d_equals_linear_msfem_and_is_nodally_exact(comm):
    """1D: a face mean is a point value, so MsFEM-CR is linear MsFEM: nodally exact."""
    a = msfem.Periodic(lambda y, ns: 1.5 + ns.sin(2 * ns.pi * y[0]), eps=1 / 16)
    problem = msfem.diffusion(a, 1.0, dirichlet=[msfem.Dirichlet(lambda x: 1 + x[0])])
    h = msfem.StructuredHierarchy(comm, 8, 16, "interval")
    fine = _fine(h, problem)
    _, _, cr = _errors(h, problem, "crouzeix-raviart", fine)
    _, _, linear = _errors(h, problem, "linear", fine)
    assert cr["nodal_linf"] < 1e-12 and linear["nodal_linf"] < 1e-12
    for key in ("energy_rel", "l2_rel", "h1_rel"):
        assert cr[key] == pytest.approx(linear[key], rel=1e-10), key
    assert 1e-3 < cr["energy_rel"] < 0.1


def test_oversampling_changes_nothing_for_a_constant_coefficient(comm):
    """Constant A on rectangles: the functions with constant face fluxes that are
    A-harmonic on any box are span{1, x, y, x² − 2y²} (A = diag(2, 1)), so the recombined
    face functions of S are K's own: 0, 1 and 2 layers give the same coarse solution."""
    h = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    problem = msfem.diffusion(msfem.ConstantField([[2.0, 0.0], [0.0, 1.0]]), 1.0,
                              dirichlet=[msfem.Dirichlet(lambda x: 1 + x[0])])
    U = [solve(msfem.MultiscaleSpace(h, problem, "crouzeix-raviart",
                                     parameters={"oversampling": k}).build()).vector.getArray()
         for k in (0, 1, 2)]
    scale = comm.allreduce(float(np.abs(U[0]).max()), op=MPI.MAX)
    for k in (1, 2):
        assert comm.allreduce(float(np.abs(U[k] - U[0]).max()), op=MPI.MAX) < 1e-10 * scale


def test_oversampling_reduces_the_error_at_resonance(comm):
    """Hou--Wu, H = ε: one layer of oversampling cuts MsFEM-CR's energy error by 30 %."""
    h = msfem.StructuredHierarchy(comm, 8, 8, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), 1.0)
    fine = _fine(h, problem)
    for layers, pinned in PINNED_OVERSAMPLING.items():
        _, sol, errs = _errors(h, problem, "crouzeix-raviart", fine, oversampling=layers)
        got = {"energy_rel": errs["energy_rel"], "l2_rel": errs["l2_rel"],
               "norm": sol.vector.norm()}
        for key, value in pinned.items():
            assert got[key] == pytest.approx(value, rel=1e-10), (layers, key)
    assert PINNED_OVERSAMPLING[1]["energy_rel"] < 0.7 * PINNED_OVERSAMPLING[0]["energy_rel"]


PINNED_OVERSAMPLING = {
    0: {"energy_rel": 0.3891720145087072, "l2_rel": 0.12570681671071085,
        "norm": 0.14148713936675017},
    1: {"energy_rel": 0.2692020044627687, "l2_rel": 0.05453161548735711,
        "norm": 0.13182724994908002},
}


@pytest.fixture(scope="module")
def perforated():
    r"""-Δu = 1 in a perforated unit square, u = 0 on ∂Ω and on the holes: discs of radius
    ε/4, period ε = 0.075, 16 x 16 coarse squares (H/ε = 5/6: coarse edges cut holes) of
    8 x 8 fine cells (ε/h = 9.6)."""
    comm = MPI.COMM_WORLD
    h = msfem.StructuredHierarchy(comm, 16, 8, "quadrilateral")
    holes = PeriodicDiscs(eps=0.075, radius=0.25)
    problem = msfem.diffusion(1.0, 1.0, holes=holes)
    fine = _fine(h, problem)
    errors = {m: _errors(h, problem, m, fine)[2]
              for m in ("linear", "oversampling", "crouzeix-raviart")}
    errors["cr-bubble"] = _errors(h, problem, "crouzeix-raviart", fine, bubble=True)[2]
    return h, problem, fine, errors


def test_holes_cut_the_coarse_edges(perforated):
    """The set-up of the next tests: some coarse edges run through holes."""
    h, problem, _, _ = perforated
    t = np.linspace(0, 1, 2001)
    x = np.zeros((3, len(t)))
    x[0], x[1] = 2 * h.H[0], t  # the coarse edge x = 2H = 5ε/3
    assert problem.holes.evaluate(x).max() == 1.0


def test_perforated_cr_beats_linear_msfem(perforated):
    """Holes cut coarse edges: linear MsFEM forces its affine trace through them, MsFEM-CR
    only fixes face means, so its energy error is lower (Le Bris, Legoll & Lozinski 2014)."""
    *_, errors = perforated
    cr, linear = errors["crouzeix-raviart"], errors["linear"]
    assert cr["energy_rel"] < 0.97 * linear["energy_rel"], errors
    assert cr["l2_rel"] < linear["l2_rel"], errors


def test_perforated_bubble_carries_the_load_between_the_holes(perforated):
    """u = O(ε²) between the holes: the face functions (harmonic in K) miss it, the bubble
    (the local response to a unit load) carries it -- the energy error drops 3x."""
    *_, errors = perforated
    assert errors["cr-bubble"]["energy_rel"] < 0.35 * errors["crouzeix-raviart"]["energy_rel"]


def test_perforated_errors_agree_with_pinned_values_on_any_partition(perforated):
    *_, errors = perforated
    for method, pinned in PINNED_PERFORATED.items():
        for key, value in pinned.items():
            assert errors[method][key] == pytest.approx(value, rel=1e-10), (method, key)


PINNED_PERFORATED = {
    "linear": {"energy_rel": 0.6643526146512921, "l2_rel": 0.4964329288624536},
    "oversampling": {"energy_rel": 0.6749588343372649, "l2_rel": 0.5179583020527084},
    "crouzeix-raviart": {"energy_rel": 0.6235170878867888, "l2_rel": 0.4097422024986344},
    "cr-bubble": {"energy_rel": 0.1874894627730514, "l2_rel": 0.10718840974022543},
}


def test_errors_agree_with_pinned_values_on_any_partition(comm):
    """Hou--Wu coefficient, no holes: triangles and quadrilaterals, 1 and 2 ranks (1e-10)."""
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), 1.0)
    for cell, pinned in PINNED.items():
        h = msfem.StructuredHierarchy(comm, 4, 16, cell)
        space, sol, errs = _errors(h, problem, "crouzeix-raviart", _fine(h, problem))
        got = {"energy_rel": errs["energy_rel"], "l2_rel": errs["l2_rel"],
               "norm": sol.vector.norm()}
        for key, value in pinned.items():
            assert got[key] == pytest.approx(value, rel=1e-10), (cell, key)


PINNED = {
    "triangle": {"energy_rel": 0.46225274214875783, "l2_rel": 0.14377953400013402,
                 "norm": 0.085138549025684},
    "quadrilateral": {"energy_rel": 0.4272137950206225, "l2_rel": 0.09185099007838136,
                      "norm": 0.06807460243350794},
}


@pytest.mark.parametrize("cell", ["triangle", "quadrilateral"])
def test_fine_hole_dofs_are_the_lattice_hole_nodes(comm, cell):
    """The distributed fine solve and the local problems pin the same dofs."""
    h = msfem.StructuredHierarchy(comm, 2, 8, cell)
    problem = msfem.diffusion(1.0, 1.0, holes=PeriodicDiscs(eps=0.2, radius=0.3, center=0.0))
    V = problem.function_space(h.fine)
    x = V.tabulate_dof_coordinates()[:, :2]
    mask = np.zeros(len(x), dtype=bool)
    mask[hole_dofs(problem, V)] = True
    assert np.array_equal(mask, hole_nodes(problem.holes, x, h))
    n = V.dofmap.index_map.size_local
    assert comm.allreduce(int(mask[:n].sum())) > 20
    u = _fine(h, problem).u
    assert np.all(u.x.array[mask] == 0.0) and u.x.array.max() > 0


def test_face_inside_a_hole_is_pinned_to_zero(comm):
    """A hole that swallows whole coarse edges: their φ_F = 0 and U_F = 0, no singular row."""
    h = msfem.StructuredHierarchy(comm, 8, 4, "quadrilateral")  # H = 1/8
    holes = PeriodicDiscs(eps=0.5, radius=0.3, center=0.0)  # discs of radius 0.15 at (i, j)/2
    problem = msfem.diffusion(1.0, 1.0, holes=holes)
    fine = _fine(h, problem)
    space, sol, errs = _errors(h, problem, "crouzeix-raviart", fine)
    U = sol.vector.getArray()
    mid = space.coarse.facet_midpoints()
    # the edges ending at a disc centre lie in the disc, with their neighbouring fine cells
    inside = np.linalg.norm(mid - np.rint(mid * 2) / 2, axis=1) < 0.07
    # 4 edges at (1/2, 1/2), 3 at each of 4 boundary centres, 2 at each corner
    assert comm.allreduce(int(inside.sum())) == 4 + 4 * 3 + 4 * 2
    assert np.all(U[inside] == 0.0) and comm.allreduce(int((U[~inside] != 0).sum())) > 100
    assert np.isfinite(errs["energy_rel"]) and errs["energy_rel"] < 1


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_any_computation(comm):
    h = msfem.StructuredHierarchy(comm, 2, 2, "quadrilateral")
    with pytest.raises(ValueError, match="scalar"):
        msfem.MultiscaleSpace(h, msfem.elasticity(1.0), "crouzeix-raviart")
    coarse = dolfinx.mesh.create_unit_square(comm, 2, 2)
    with pytest.raises(ValueError, match="structured hierarchy"):
        msfem.MultiscaleSpace(msfem.RefinedHierarchy(coarse, 1), msfem.diffusion(1.0),
                              "crouzeix-raviart")


@pytest.mark.parametrize("parameters, cell, holes, match", [
    ({"oversampling": -1}, "quadrilateral", False, "oversampling"),
    ({"oversampling": 1.5}, "quadrilateral", False, "oversampling"),
    ({"oversampling": True}, "quadrilateral", False, "oversampling"),
    ({"bubble": "yes"}, "quadrilateral", False, "bubble"),
    ({"oversampling": 1}, "triangle", False, "box-shaped patch"),
    ({"oversampling": 1}, "quadrilateral", True, "with holes"),
    ({"oversampling": 2}, "quadrilateral", False, "as large as the domain"),
])
def test_bad_parameters_are_refused(comm, parameters, cell, holes, match):
    h = msfem.StructuredHierarchy(comm, 2, 2, cell)
    problem = msfem.diffusion(1.0, 1.0, holes=PeriodicDiscs(eps=0.25) if holes else None)
    with pytest.raises(ValueError, match=match) as err:
        msfem.MultiscaleSpace(h, problem, "crouzeix-raviart", parameters=parameters)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["lod", "gmsfem", "petrov-galerkin", "oscillatory", "standard"])
def test_holes_refused_by_methods_without_them(comm, method):
    h = msfem.StructuredHierarchy(comm, 2, 4, "quadrilateral")
    problem = msfem.diffusion(1.0, 1.0, holes=PeriodicDiscs(eps=0.25))
    with pytest.raises(ValueError, match="perforated domains") as err:
        msfem.MultiscaleSpace(h, problem, method)
    assert "\n" not in str(err.value)


CONFIG = """
[mesh]
N = 4
M = 8

[coefficient]
type = "constant"
value = 1.0

[problem]
holes = {holes}

[msfem]
method = "{method}"
"""


@pytest.mark.parametrize("holes, method, match", [
    ('{ type = "periodic-discs", eps = 0.25 }', "lod", "does not handle perforated"),
    ('{ type = "periodic-discs" }', "crouzeix-raviart", "needs eps"),
    ('{ type = "squares", eps = 0.25 }', "linear", "holes type"),
    ('{ type = "periodic-discs", eps = 0.25, size = 1 }', "linear", "unknown key 'size'"),
    ('{ type = "periodic-discs", eps = 0.25, radius = 0.6 }', "linear", "below 0.5"),
])
def test_config_refuses_bad_holes(holes, method, match):
    import tomllib

    cfg = tomllib.loads(CONFIG.format(holes=holes, method=method))
    with pytest.raises(config.ConfigError, match=match):
        valid = config.validate(cfg)
        config.build_problem(valid["problem"], config.build_coefficient(valid["coefficient"]), 2)


def test_config_builds_a_perforated_problem():
    import tomllib

    cfg = config.validate(tomllib.loads(CONFIG.format(
        holes='{ type = "periodic-discs", eps = 0.25, radius = 0.2, center = 0.0 }',
        method="crouzeix-raviart")))
    problem = config.build_problem(cfg["problem"], config.build_coefficient(cfg["coefficient"]),
                                   2)
    assert problem.holes == PeriodicDiscs(eps=0.25, radius=0.2, center=0.0)
