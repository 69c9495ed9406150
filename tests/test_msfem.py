"""MsFEM core: exactness, 1D nodal exactness, resonance signature, elasticity, user forms,
parallel agreement, PᵀAP, bad input."""

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import pytest
import ufl
from helpers import fitted_rate
from mpi4py import MPI
from petsc4py import PETSc

import msfem
from msfem.coarse import assemble_coarse
from msfem.coefficients import Periodic
from msfem.solvers import DIRECT_OPTIONS

VARIANTS = [("standard", 0), ("linear", 0), ("oscillatory", 0), ("oversampling", 1),
            ("oversampling", msfem.Oversampling(ratio=2.0)), ("petrov-galerkin", 1)]


def coarse_fem(hier, problem):
    """Standard coarse P1/Q1 FEM, solved directly on the coarse mesh."""
    return msfem.solve_fine(hier.coarse, problem, petsc_options=DIRECT_OPTIONS).u


@pytest.mark.parametrize("cell", ["quadrilateral", "triangle"])
@pytest.mark.parametrize("variant,oversampling", VARIANTS)
def test_constant_coefficient_reproduces_coarse_fem(comm, cell, variant, oversampling):
    hier = msfem.StructuredHierarchy(comm, 4, 4, cell)
    problem = msfem.diffusion(2.5, f=1.0)
    space = msfem.MultiscaleSpace(hier, problem, variant, oversampling).build()
    U = msfem.solve_coarse(space).U
    ref = coarse_fem(hier, problem)
    assert np.abs(U.x.array - ref.x.array).max() < 1e-10 * np.abs(ref.x.array).max()


def test_constant_modulus_elasticity_equals_coarse_p1(comm):
    hier = msfem.StructuredHierarchy(comm, 4, 4, "triangle")
    problem = msfem.elasticity(3.0, nu=0.3, f=(0.5, -1.0))
    ref = coarse_fem(hier, problem)
    for variant, os in [("linear", 0), ("oversampling", 1), ("petrov-galerkin", 1)]:
        U = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build()).U
        assert np.abs(U.x.array - ref.x.array).max() < 1e-10 * np.abs(ref.x.array).max()


def test_1d_nodally_exact(comm):
    """In 1D the MsFEM solution equals the fine solution at the coarse nodes, and converges
    to the exact u_eps there at the fine-grid rate h^2 (REFERENCES.md §4)."""
    from test_fine import exact_1d, one_d_problem

    eps = 1 / 4
    problem = one_d_problem(eps)
    errs, hs = [], []
    for M in (16, 32, 64):
        hier = msfem.StructuredHierarchy(comm, 8, M, "interval")
        fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
        for variant in ("linear", "oscillatory"):
            sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant).build())
            e = sol.errors(fine)
            assert e["nodal_linf"] < 1e-12
        Vc = sol.U.function_space
        n = Vc.dofmap.index_map.size_local
        x = Vc.tabulate_dof_coordinates()[:n, 0]
        local = np.abs(sol.U.x.array[:n] - exact_1d(x, eps)).max() if n else 0.0
        errs.append(comm.allreduce(local, op=MPI.MAX))
        hs.append(hier.h[0])
    assert fitted_rate(hs, errs) == pytest.approx(2, abs=0.1)


@pytest.fixture(scope="module")
def resonance():
    """Hou–Wu coefficient at eps = 1/32 on a fixed fine grid h = 1/256 = eps/8."""
    comm = MPI.COMM_WORLD
    eps = 1 / 32
    problem = msfem.diffusion(msfem.HouWu(eps=eps), f=-1.0, quadrature_degree=4)
    out = {}
    for ratio in (1, 2, 4):
        N = int(round(1 / (ratio * eps)))
        hier = msfem.StructuredHierarchy(comm, N, 256 // N, "quadrilateral")
        ref = msfem.solve_fine(hier.fine, problem).u
        for variant, os in [("linear", 0), ("oversampling", 1)]:
            space = msfem.MultiscaleSpace(hier, problem, variant, os).build()
            out[ratio, variant] = msfem.solve_coarse(space).errors(ref)
    return out


def test_resonance_linear_nodal_error_grows_towards_eps(resonance):
    H_over_eps = np.array([1, 2, 4])
    nodal = [resonance[r, "linear"]["nodal_l2"] for r in H_over_eps]
    assert fitted_rate(H_over_eps, nodal) < -0.5  # error grows as H decreases to eps


def test_oversampling_reduces_resonance(resonance):
    gain = resonance[2, "linear"]["energy_rel"] / resonance[2, "oversampling"]["energy_rel"]
    assert gain > 1.5
    # the gain shrinks as H/eps grows (the O(H) part dominates)
    gains = [resonance[r, "linear"]["energy_rel"] / resonance[r, "oversampling"]["energy_rel"]
             for r in (1, 2, 4)]
    assert gains[0] > gains[1] > gains[2]


def test_elasticity_oscillating_modulus_beats_coarse_fem(comm):
    eps = 1 / 8
    E = msfem.Periodic(lambda y, ns: 1 + 0.9 * ns.sin(2 * ns.pi * y[0]) * ns.sin(2 * ns.pi * y[1]),
                       eps)
    problem = msfem.elasticity(E, nu=0.3, f=(0.0, -1.0))
    hier = msfem.StructuredHierarchy(comm, 4, 16, "quadrilateral")
    ref = msfem.solve_fine(hier.fine, problem).u
    err = {v: msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, v).build()).errors(ref)
           for v in ("standard", "linear")}
    assert err["linear"]["energy_rel"] < 0.8 * err["standard"]["energy_rel"]


def test_user_form_anisotropic_reaction_diffusion(comm):
    """A user's own form through the public API only; H = 4 eps."""
    eps = 1 / 16

    def bilinear(u, v, A, c):
        return (ufl.inner(A * ufl.grad(u), ufl.grad(v)) + c * u * v) * ufl.dx

    A = Periodic(lambda y, ns: [[2 + 1.5 * ns.sin(2 * ns.pi * y[0]), 0.3],
                                [0.3, 1 + 0.5 * ns.cos(2 * ns.pi * y[1])]], eps, shape=(2, 2))
    c = Periodic(lambda y, ns: 5 + 4 * ns.cos(2 * ns.pi * (y[0] + y[1])), eps)
    problem = msfem.Problem(bilinear, {"A": A, "c": c}, source=1.0, name="my-form")
    hier = msfem.StructuredHierarchy(comm, 4, 32, "quadrilateral")
    ref = msfem.solve_fine(hier.fine, problem).u
    err = {v: msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, v, os).build()).errors(ref)
           for v, os in [("standard", 0), ("linear", 0), ("oversampling", 1)]}
    assert err["linear"]["energy_rel"] < err["standard"]["energy_rel"]
    assert err["oversampling"]["energy_rel"] < err["standard"]["energy_rel"]


def _errors_on(comm, variant, os):
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), f=-1.0)
    hier = msfem.StructuredHierarchy(comm, 8, 8, "quadrilateral")
    ref = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build())
    Vc = sol.U.function_space
    n = Vc.dofmap.index_map.size_local
    # coarse solution keyed by its coordinates (partition independent)
    x = np.round(Vc.tabulate_dof_coordinates()[:n, :2], 12)
    pairs = comm.allgather(np.column_stack([x, sol.U.x.array[:n]]))
    table = np.concatenate(pairs)
    table = table[np.lexsort((table[:, 1], table[:, 0]))]
    return table, sol.errors(ref)


@pytest.mark.parametrize("variant,os", [("linear", 0), ("oscillatory", 0),
                                        ("oversampling", 1), ("petrov-galerkin", 1)])
def test_same_numbers_on_any_number_of_ranks(comm, variant, os):
    t_world, e_world = _errors_on(comm, variant, os)
    t_self, e_self = _errors_on(MPI.COMM_SELF, variant, os)
    assert np.allclose(t_world, t_self, rtol=1e-10, atol=1e-14)
    for key in e_self:
        assert e_world[key] == pytest.approx(e_self[key], rel=1e-10)


def test_conforming_coarse_matrix_is_PtAP(comm):
    hier = msfem.StructuredHierarchy(comm, 4, 8, "triangle")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=1.0)
    space = msfem.MultiscaleSpace(hier, problem, "linear").build()
    A_H, _ = assemble_coarse(space)
    V = problem.function_space(hier.fine)
    disc = problem.discretise(V)
    A_h = dolfinx.fem.petsc.assemble_matrix(disc.a)
    A_h.assemble()
    P = msfem.prolongation(space, V)
    PtAP = A_h.PtAP(P)
    D = PtAP.copy()
    D.axpy(-1.0, A_H, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
    assert D.norm(PETSc.NormType.FROBENIUS) < 1e-10 * A_H.norm(PETSc.NormType.FROBENIUS)


def test_reconstruction_matches_element_data(comm):
    """u_ms = P U for a conforming variant, and the broken energy error of u_ms computed
    globally equals the element-wise one."""
    hier = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=-1.0)
    ref = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS)
    sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "linear").build())
    u_ms = sol.reconstruct()
    e = sol.errors(ref.u)
    from msfem import norms
    disc = problem.discretise(u_ms.function_space)
    glob = norms.errors(u_ms, ref.u, disc)
    assert glob["energy_rel"] == pytest.approx(e["energy_rel"], rel=1e-8)
    assert glob["l2_rel"] == pytest.approx(e["l2_rel"], rel=1e-8)


def test_unknown_variant_lists_valid(comm):
    hier = msfem.StructuredHierarchy(comm, 2, 2)
    with pytest.raises(ValueError, match="valid methods: .*linear.*oversampling"):
        msfem.MultiscaleSpace(hier, msfem.diffusion(1.0), "galerkin-magic")


def test_oversampling_patch_too_large_or_unsupported(comm):
    hier = msfem.StructuredHierarchy(comm, 2, 4)
    with pytest.raises(ValueError, match="larger than the domain"):
        msfem.MultiscaleSpace(hier, msfem.diffusion(1.0), "oversampling", 2)
    with pytest.raises(ValueError, match="has no oversampling"):
        msfem.MultiscaleSpace(hier, msfem.diffusion(1.0), "linear", 1)


def test_local_factorisation_failure_names_cell(comm):
    def singular(u, v):  # a(u, v) = 0: every local matrix is singular
        zero = dolfinx.fem.Constant(u.ufl_function_space().mesh, 0.0)
        return zero * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx

    hier = msfem.StructuredHierarchy(comm, 2, 4)
    problem = msfem.Problem(singular, {}, source=1.0)
    space = msfem.MultiscaleSpace(hier, problem, "linear",
                                  petsc_options={"pc_factor_shift_type": "none"})
    if len(hier.owned_coarse_cells[0]) == 0:
        return
    with pytest.raises(msfem.SolverError, match="coarse cell"):
        space.build()


@pytest.mark.parametrize("cell", ["hexahedron", "tetrahedron"])
def test_3d_variants_reproduce_coarse_fem(comm, cell):
    hier = msfem.StructuredHierarchy(comm, 3, 2, cell)
    problem = msfem.diffusion(1.5, f=1.0)
    ref = coarse_fem(hier, problem)
    for variant, os in [("linear", 0), ("oversampling", 1), ("petrov-galerkin", 1)]:
        U = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build()).U
        assert np.abs(U.x.array - ref.x.array).max() < 1e-10 * np.abs(ref.x.array).max()
    with pytest.raises(ValueError, match="3D"):
        msfem.MultiscaleSpace(hier, problem, "oscillatory")


def test_sampling_regions(comm):
    """Hou–Wu's sampling regions (Tables III/IV): reproduce coarse FEM for a constant
    coefficient; shared region solutions equal per-cell recomputation."""
    hier = msfem.StructuredHierarchy(comm, 4, 4, "quadrilateral")
    os = msfem.Oversampling(sampling_region=8)
    problem = msfem.diffusion(2.0, f=1.0)
    for boundary in ("polynomial", "oscillatory"):
        U = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "oversampling", os,
                                                     boundary=boundary).build()).U
        ref = coarse_fem(hier, problem)
        assert np.abs(U.x.array - ref.x.array).max() < 1e-10 * np.abs(ref.x.array).max()
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 2), f=-1.0)
    space = msfem.MultiscaleSpace(hier, problem, "oversampling", os, boundary="oscillatory")
    shared = msfem.solve_coarse(space.build()).U.x.array.copy()
    local, lattice = hier.owned_coarse_cells
    alone = []
    for c in lattice:
        space._last_region = None
        alone.append(space.local_basis(int(c)))
    by_cell = sorted(space.elements, key=lambda e: e.cell)
    for e, f in zip(by_cell, sorted(alone, key=lambda e: e.cell)):
        assert np.allclose(e.A, f.A, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="multiple of M"):
        msfem.MultiscaleSpace(hier, problem, "oversampling", msfem.Oversampling(sampling_region=6))
    assert np.isfinite(shared).all()


@pytest.mark.parametrize("variant,os", [("linear", 0), ("oscillatory", 0), ("oversampling", 1),
                                        ("petrov-galerkin", 1)])
def test_nonzero_dirichlet_and_neumann_data(comm, variant, os):
    """u = 1 + x + 2y solves -div(a grad u) = 0 for a constant a: with u = g on x = 0, 1
    and the flux a du/dn = ±2a on y = 0, 1 (through the basis into the coarse load) every
    variant is exact at the coarse vertices and in the reconstruction."""
    a = 3.0

    def left_right(x):
        return np.isclose(x[0], 0) | np.isclose(x[0], 1)

    problem = msfem.diffusion(
        a, f=0.0, dirichlet=(msfem.Dirichlet(lambda x: 1 + x[0] + 2 * x[1], left_right),),
        neumann=(msfem.Neumann(2 * a, lambda x: np.isclose(x[1], 1)),
                 msfem.Neumann(-2 * a, lambda x: np.isclose(x[1], 0))))
    hier = msfem.StructuredHierarchy(comm, 4, 4, "quadrilateral")
    sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build())
    Vc = sol.U.function_space
    xc = Vc.tabulate_dof_coordinates()
    assert np.allclose(sol.U.x.array, 1 + xc[:, 0] + 2 * xc[:, 1], atol=1e-10)
    u = sol.reconstruct()
    x = u.function_space.tabulate_dof_coordinates()
    assert np.allclose(u.x.array, 1 + x[:, 0] + 2 * x[:, 1], atol=1e-10)


def test_local_solver_by_options_prefix(comm):
    """The local factorisation is chosen by PETSc options (MUMPS vs PETSc's own LU)."""
    hier = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 2), f=-1.0)
    U = [msfem.solve_coarse(msfem.MultiscaleSpace(
        hier, problem, "oversampling", 1, petsc_options=opts,
        parameters={"local_solver": "sparse"}).build()).U.x.array.copy()
        for opts in ({}, {"pc_factor_mat_solver_type": "mumps"})]
    assert np.allclose(U[0], U[1], rtol=1e-10, atol=1e-14)


def test_user_linear_form(comm):
    """A user's load form L(v) = ∫ g v dx through Problem.linear equals source = g."""
    hier = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    a = msfem.HouWu(eps=1 / 2)

    def bilinear(u, v, a):
        return a * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx

    def linear(v, a):
        x = ufl.SpatialCoordinate(v.ufl_function_space().mesh)
        return (1 + x[0]) * v * ufl.dx

    g = msfem.UserField(lambda x: 1 + x[0], lambda x: 1 + x[0])
    U = [msfem.solve_coarse(msfem.MultiscaleSpace(hier, p, "linear").build()).U.x.array.copy()
         for p in (msfem.Problem(bilinear, {"a": a}, linear=linear),
                   msfem.Problem(bilinear, {"a": a}, source=g))]
    assert np.allclose(U[0], U[1], rtol=1e-12, atol=1e-15)

    def boundary_load(v, a):
        return v * ufl.ds

    with pytest.raises(ValueError, match="cell integrals"):
        msfem.solve_fine(hier.fine, msfem.Problem(bilinear, {"a": a}, linear=boundary_load))


@pytest.mark.parametrize("variant", ["standard", "linear", "oscillatory"])
def test_ptap_assembly_gives_the_same_solution(comm, variant):
    """MatPtAP on the distributed fine operator = element-by-element assembly."""
    hier = msfem.StructuredHierarchy(comm, 4, 8, "triangle")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 2), f=-1.0, neumann=(msfem.Neumann(
        0.5, lambda x: np.isclose(x[1], 1)),), dirichlet=(msfem.Dirichlet(
            0.0, lambda x: x[1] < 1 - 1e-12),))
    space = msfem.MultiscaleSpace(hier, problem, variant).build()
    U = [msfem.solve_coarse(space, assembly=a).U.x.array.copy() for a in ("element", "ptap")]
    assert np.allclose(U[0], U[1], rtol=1e-10, atol=1e-14)
    over = msfem.MultiscaleSpace(hier, problem, "oversampling", 1)
    with pytest.raises(ValueError, match="conforming Galerkin"):
        msfem.solve_coarse(over, assembly="ptap")


# ------------------------------------------------------------- unstructured (gmsh) coarse mesh
LSHAPE = __import__("os").path.join(__import__("os").path.dirname(__file__), "..",
                                    "meshes", "lshape.py")
NON_OVERSAMPLED = ["standard", "linear", "oscillatory", "petrov-galerkin"]
UNSTRUCTURED = [(v, 0) for v in NON_OVERSAMPLED] + [("oversampling", 2), ("petrov-galerkin", 1)]


def test_unstructured_constant_coefficient_reproduces_coarse_fem(comm):
    hier = msfem.RefinedHierarchy.from_gmsh(LSHAPE, 2, comm)
    problem = msfem.diffusion(2.0, f=1.0)
    ref = coarse_fem(hier, problem)
    for variant, os in UNSTRUCTURED:
        U = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build()).U
        assert np.abs(U.x.array - ref.x.array).max() < 1e-10 * np.abs(ref.x.array).max()
    with pytest.raises(ValueError, match="coarse layers"):
        msfem.MultiscaleSpace(hier, problem, "oversampling", msfem.Oversampling(ratio=2.0))
    with pytest.raises(ValueError, match="has no oversampling"):
        msfem.MultiscaleSpace(hier, problem, "linear", 1)


def test_unstructured_neumann_data_and_oversampling_exact_for_linear_solution(comm):
    """u = 1 + x + 2y on the L-shape, constant a: Dirichlet data on x = 0 and x = 1, the
    flux a du/dn on the other edges (through the basis into the coarse load)."""
    a = 3.0

    def on(axis, value, lo=None):
        return lambda x: np.isclose(x[axis], value) & (
            True if lo is None else x[1 - axis] > lo - 1e-12)

    problem = msfem.diffusion(
        a, f=0.0, dirichlet=(msfem.Dirichlet(lambda x: 1 + x[0] + 2 * x[1],
                                             lambda x: np.isclose(x[0], 0) | np.isclose(x[0], 1)),),
        neumann=(msfem.Neumann(-2 * a, on(1, 0.0)), msfem.Neumann(2 * a, on(1, 1.0)),
                 msfem.Neumann(2 * a, on(1, 0.5, lo=0.5)), msfem.Neumann(a, on(0, 0.5, lo=0.5))))
    hier = msfem.RefinedHierarchy.from_gmsh(LSHAPE, 2, comm)
    for variant, os in [("linear", 0), ("oversampling", 1), ("petrov-galerkin", 1)]:
        sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build())
        xc = sol.U.function_space.tabulate_dof_coordinates()
        assert np.allclose(sol.U.x.array, 1 + xc[:, 0] + 2 * xc[:, 1], atol=1e-10), variant
        u = sol.reconstruct()
        x = u.function_space.tabulate_dof_coordinates()
        assert np.allclose(u.x.array, 1 + x[:, 0] + 2 * x[:, 1], atol=1e-10), variant


def _lshape_oversampling(comm):
    hier = msfem.RefinedHierarchy.from_gmsh(LSHAPE, 3, comm)
    problem = msfem.diffusion(msfem.HouWu(eps=0.125), f=-1.0)  # H / eps = 2
    ref = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    return {v: msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, v, os).build()
                                  ).errors(ref) for v, os in [("linear", 0), ("oversampling", 1)]}


@pytest.mark.filterwarnings("ignore::msfem.UnresolvedScaleWarning")
def test_unstructured_oversampling_lowers_energy_error_and_is_partition_independent(comm):
    """Oversampling by one coarse layer of vertex neighbours on the gmsh L-shape at H/eps = 2:
    patches reaching into other ranks' cells give the same numbers as one rank."""
    err = _lshape_oversampling(comm)
    assert err["oversampling"]["energy_rel"] < 0.75 * err["linear"]["energy_rel"]
    if comm.size == 1:
        return  # the comparison runs in the MPI pass
    serial = _lshape_oversampling(MPI.COMM_SELF)
    for v in err:
        for key in ("energy_rel", "l2_rel", "h1_rel", "nodal_linf", "nodal_l2"):
            assert err[v][key] == pytest.approx(serial[v][key], rel=1e-10)


def _lshape_errors(comm):
    hier = msfem.RefinedHierarchy.from_gmsh(LSHAPE, 3, comm)
    problem = msfem.diffusion(msfem.HouWu(eps=0.25), f=-1.0)
    ref = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    return {v: msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, v, 0).build()).errors(ref)
            for v in NON_OVERSAMPLED}


def test_unstructured_multiscale_beats_coarse_fem_and_is_partition_independent(comm):
    err = _lshape_errors(comm)
    for v in ("linear", "oscillatory"):
        assert err[v]["energy_rel"] < err["standard"]["energy_rel"]
        assert err[v]["nodal_linf"] < err["standard"]["nodal_linf"]
    serial = _lshape_errors(MPI.COMM_SELF)
    for v in NON_OVERSAMPLED:
        for key in ("energy_rel", "l2_rel", "h1_rel", "nodal_linf", "nodal_l2"):
            assert err[v][key] == pytest.approx(serial[v][key], rel=1e-10)


@pytest.mark.parametrize("layers", [1, 2])
def test_summed_patch_matrix_is_the_patch_assembled_on_its_own(comm, layers):
    """An oversampling patch of whole coarse cells: the sum of its cells' K-matrices is
    the fine matrix assembled on the patch mesh (interior and domain-clipped patches)."""
    from msfem.patches import to_csr

    h = msfem.StructuredHierarchy(comm, 4, 4, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), f=-1.0)
    space = msfem.MultiscaleSpace(h, problem, "oversampling", layers)
    engine, method = space.engine(), space.method
    for cell in (0, 5, 15):
        patch = method.patch(h, cell)
        S = engine.patch_mesh(patch.shape)
        lo = np.array(patch.lo) // h.M
        summed = engine.summed_patch_values(S, lo, lo + np.array(patch.shape) // h.M)
        S.move_to(h.lower + np.array(patch.lo) * h.h)
        A = to_csr(S.assemble())
        indices, indptr = S.block_pattern_arrays()
        assert np.array_equal(A.indices, indices) and np.array_equal(A.indptr, indptr)
        assert np.abs(A.data - summed).max() < 1e-13 * np.abs(A.data).max()


@pytest.mark.parametrize("variant", ["oversampling", "petrov-galerkin"])
def test_batched_oversampling_equals_cell_by_cell(comm, variant):
    """Oversampled patches batched by shape (one summation product, batched inverse and
    element products) give every cell's element data of the one-cell path."""
    h = msfem.StructuredHierarchy(comm, 5, 4, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 8), f=-1.0)
    space = msfem.MultiscaleSpace(h, problem, variant, 1).build()
    assert len(space.elements) == len(h.owned_coarse_cells[1])
    for e in space.elements:
        f = space.local_basis(e.cell)
        scale = np.abs(f.A).max()
        assert np.abs(e.A - f.A).max() < 1e-12 * scale
        assert np.abs(e.b - f.b).max() < 1e-12 * np.abs(f.b).max()
        assert np.abs(e.trial - f.trial).max() < 1e-12
        assert np.array_equal(e.fine_dofs, f.fine_dofs)
        assert abs(e.energy - f.energy).max() < 1e-12 * scale


def test_oversampling_assembles_every_fine_cell_once(comm, monkeypatch):
    """Summed patches: each coarse cell's matrix is assembled once per rank -- the owned
    cells and the halo their patches reach, no more (one fine assembly's work)."""
    from msfem.patches import PatchMesh

    calls = [0]
    assemble = PatchMesh.assemble_values

    def counted(self):
        calls[0] += 1
        return assemble(self)

    monkeypatch.setattr(PatchMesh, "assemble_values", counted)
    h = msfem.StructuredHierarchy(comm, 6, 4, "quadrilateral")
    space = msfem.MultiscaleSpace(h, msfem.diffusion(msfem.HouWu(eps=1 / 8), f=-1.0),
                                  "oversampling", 1, batch_size=5).build()
    reached = {int(c) for e in space.elements
               for c in h.patch_coarse_cells(space.method.patch(h, e.cell))}
    assert calls[0] == len(reached)


@pytest.mark.parametrize("variant,layers,dense,vector", [
    ("oversampling", 1, True, False), ("petrov-galerkin", 1, True, False),
    ("oversampling", 2, False, False), ("oversampling", 1, True, True)])
def test_condensed_local_problems_equal_patch_factorisations(comm, variant, layers, dense,
                                                             vector, monkeypatch):
    """Whole-coarse-layer patches solved on the coarse skeleton (cell interiors condensed
    once per rank; dense, or sparse above DENSE_MAX) give the element data and the coarse
    solution of one PETSc factorisation per patch, serial and distributed."""
    import msfem.condensation as condensation

    if not dense:
        monkeypatch.setattr(condensation, "DENSE_MAX", 0)
    h = msfem.StructuredHierarchy(comm, 6, 4, "quadrilateral")
    a = msfem.HouWu(eps=1 / 3)
    problem = msfem.elasticity(a, nu=0.3, f=(0.0, -1.0)) if vector else \
        msfem.diffusion(a, f=-1.0)
    spaces = [msfem.MultiscaleSpace(h, problem, variant, layers,
                                    parameters={"local_solver": solver}).build()
              for solver in ("condensed", "sparse")]
    for e, f in zip(*(s.elements for s in spaces)):
        assert e.cell == f.cell
        assert np.abs(e.trial - f.trial).max() < 1e-11
        assert np.abs(e.A - f.A).max() < 1e-11 * np.abs(f.A).max()
    U = [msfem.solve_coarse(s).U.x.array for s in spaces]
    assert np.abs(U[0] - U[1]).max() < 1e-10 * np.abs(U[1]).max()


def test_condensed_singular_cell_names_it(comm):
    """A coefficient that is zero on one coarse cell: the condensed path names the cell."""
    h = msfem.StructuredHierarchy(comm, 3, 4, "quadrilateral")

    def form(u, v):  # a = 0 on the middle coarse cell (number 4)
        x = ufl.SpatialCoordinate(u.ufl_function_space().mesh)
        on = ufl.conditional(ufl.And(ufl.gt(x[0], 1 / 3), ufl.lt(x[0], 2 / 3)), 1.0, 0.0)
        inside = ufl.conditional(ufl.And(ufl.gt(x[1], 1 / 3), ufl.lt(x[1], 2 / 3)), on, 0.0)
        return (1.0 - inside) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx

    space = msfem.MultiscaleSpace(h, msfem.Problem(form, {}, source=1.0), "oversampling", 1)
    with pytest.raises(msfem.SolverError, match=r"coarse cell 4 .*positive"):
        space.build()
