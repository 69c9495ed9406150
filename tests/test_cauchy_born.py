"""Cauchy-Born continuum of the lattice models: UFL elastic constants, hyperelastic FE."""

import numpy as np
import pytest
from mpi4py import MPI

from msfem.atomistic import (
    CauchyBornProblem,
    Harmonic,
    chain,
    elastic_constants,
    equilibrium_spacing,
    lattice_elastic_constants,
    strain_energy_density,
    triangular,
)
from msfem.atomistic.problems import CHAIN_POTENTIAL, TRIANGULAR_POTENTIAL
from msfem.solvers import SolverError

# lattice, potential, bracket of the equilibrium spacing (harmonic NN + NNN springs of rest
# length 1: a = 3/5, with the cutoff 1.5 between 2a and 3a)
CASES = {
    "chain-lj": (chain(), CHAIN_POTENTIAL, None),
    "chain-harmonic-nn+nnn": (chain(), Harmonic(2.0, rest_length=1.0, cutoff=1.5), (0.55, 0.7)),
    "triangular-lj": (triangular(), TRIANGULAR_POTENTIAL, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ufl_elastic_constants_equal_the_lattice_hessian(case):
    lat, pot, bracket = CASES[case]
    lat = lat.with_spacing(equilibrium_spacing(pot, lat, bracket))
    if bracket:
        assert lat.spacing == pytest.approx(0.6, rel=1e-12)
    C_ufl = elastic_constants(lat, pot)
    C_lat = lattice_elastic_constants(lat, pot)
    assert np.abs(C_ufl - C_lat).max() <= 1e-8 * np.abs(C_lat).max()
    if lat.dim == 2:      # central forces on a triangular lattice: isotropic, C11 = 3 C12
        assert C_lat[0, 0, 0, 0] == pytest.approx(3 * C_lat[0, 0, 1, 1], rel=1e-12)
        assert C_lat[0, 1, 0, 1] == pytest.approx(C_lat[0, 0, 1, 1], rel=1e-12)


def test_ufl_elastic_constants_under_strain():
    lat, pot, _ = CASES["triangular-lj"]
    lat = lat.with_spacing(equilibrium_spacing(pot, lat))
    F = np.array([[1.01, 0.02], [0.0, 0.99]])
    # finite differences of the NumPy W(F) at F
    h = 1e-5
    C_ufl = elastic_constants(lat, pot, F)
    E = np.eye(2)
    for (i, J, k, L) in [(0, 0, 0, 0), (0, 1, 1, 0), (1, 1, 0, 0), (0, 1, 0, 1)]:
        dA = np.outer(E[i], E[J]) * h
        dB = np.outer(E[k], E[L]) * h
        W = lambda G: strain_energy_density(G, lat, pot)  # noqa: E731
        fd = (W(F + dA + dB) - W(F + dA - dB) - W(F - dA + dB) + W(F - dA - dB)) / (4 * h * h)
        assert C_ufl[i, J, k, L] == pytest.approx(fd, rel=1e-5, abs=1e-5)


def test_cauchy_born_fe_problem_reproduces_a_homogeneous_deformation():
    import dolfinx.mesh

    lat, pot, _ = CASES["triangular-lj"]
    lat = lat.with_spacing(equilibrium_spacing(pot, lat))
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 4, 4)
    problem = CauchyBornProblem(mesh, lat, pot)
    F = np.array([[1.02, 0.01], [0.0, 0.985]])
    u = problem.solve(F, steps=2)
    x = problem.V.tabulate_dof_coordinates()[:, :2]
    exact = x @ (F - np.eye(2)).T
    local = np.abs(u.x.array.reshape(-1, 2) - exact).max(initial=0.0)
    assert mesh.comm.allreduce(local, op=MPI.MAX) < 1e-10
    assert problem.energy() == pytest.approx(strain_energy_density(F, lat, pot), rel=1e-12)
    bad = CauchyBornProblem(mesh, lat, pot, petsc_options_prefix="test_cb_bad_",
                            petsc_options={"snes_max_it": 0})
    with pytest.raises(SolverError, match="did not converge at load step 1/1"):
        bad.solve(np.array([[1.05, 0.0], [0.0, 1.0]]))


def test_numpy_cauchy_born_energy_equals_ufl_on_a_nonhomogeneous_field():
    """Sum_e |e| W(F_e) in NumPy (the coupling's continuum) = the dolfinx integral of W."""
    import dolfinx.fem
    import ufl
    from scipy.spatial import cKDTree

    from msfem.atomistic import rep_mesh, strain_energy_ufl
    from msfem.atomistic.cauchy_born import bond_density

    lat, pot, _ = CASES["triangular-lj"]
    lat = lat.with_spacing(equilibrium_spacing(pot, lat))
    nodes = lat.sites(-6 * lat.spacing, 6 * lat.spacing)
    mesh = rep_mesh(lat, nodes[np.all(lat.indices(nodes) % 2 == 0, axis=1)])
    Y = mesh.nodes
    y = Y @ np.array([[1.01, 0.02], [0.0, 0.99]]).T + 0.02 * np.sin(Y[:, ::-1] / 3)
    R = lat.neighbour_vectors(pot.cutoff)
    omega = np.outer(mesh.volumes, np.full(len(R), 0.5 / lat.atomic_volume))
    E_numpy = bond_density(mesh.deformation_gradients(y), R, pot, omega, 0)[0].sum()

    dmesh = mesh.to_dolfinx()
    V = dolfinx.fem.functionspace(dmesh, ("Lagrange", 1, (2,)))
    u = dolfinx.fem.Function(V)
    _, k = cKDTree(Y).query(V.tabulate_dof_coordinates()[:, :2])
    u.x.array[:] = (y - Y)[k].ravel()
    W = strain_energy_ufl(ufl.Identity(2) + ufl.grad(u), lat, pot)
    E_ufl = dolfinx.fem.assemble_scalar(dolfinx.fem.form(W * ufl.dx))
    assert E_ufl == pytest.approx(E_numpy, rel=1e-12)
