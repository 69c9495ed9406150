"""Atomistic models and atomistic-to-continuum coupling (msfem.atomistic).

NumPy/SciPy only: under mpirun every rank runs the same computation.
"""

import numpy as np
import pytest

from msfem.atomistic import (
    Harmonic,
    LennardJones,
    PairModel,
    RelaxationError,
    bond_defect_chain,
    chain,
    crack,
    equilibrium_spacing,
    errors,
    fire,
    ghost_force_iteration,
    newton,
    patch_test_forces,
    rep_mesh,
    triangular,
    vacancy,
)
from msfem.atomistic.coupling import Coupling
from msfem.atomistic.problems import CHAIN_POTENTIAL, TRIANGULAR_POTENTIAL

CONSISTENT = ("gfc", "qnl", "blended")


def perturbed_cluster(seed=0):
    lat = triangular(equilibrium_spacing(TRIANGULAR_POTENTIAL, triangular()))
    X = lat.sites(-4 * lat.spacing, 4 * lat.spacing)
    return X, X + 0.05 * np.random.default_rng(seed).standard_normal(X.shape)


def test_lennard_jones_energy_and_forces_match_ase():
    ase = pytest.importorskip("ase")
    from ase.calculators.lj import LennardJones as AseLJ

    pot = LennardJones(epsilon=0.7, sigma=1.1, cutoff=2.4, switch_on=2.0)
    X, x = perturbed_cluster()
    x = x * 1.1
    model = PairModel(X * 1.1, pot, skin=0.3)
    atoms = ase.Atoms(f"Ar{len(x)}", positions=np.c_[x, np.zeros(len(x))], pbc=False)
    atoms.calc = AseLJ(epsilon=0.7, sigma=1.1, rc=2.4, ro=2.0, smooth=True)
    E_ase, f_ase = atoms.get_potential_energy(), atoms.get_forces()
    assert model.energy(x) == pytest.approx(E_ase, rel=1e-12)
    assert np.abs(model.forces(x) - f_ase[:, :2]).max() <= 1e-10 * np.abs(f_ase).max()
    assert model.site_energies(x) == pytest.approx(atoms.get_potential_energies(), abs=1e-12)


@pytest.mark.parametrize("pot", [LennardJones(cutoff=2.5, switch_on=1.9),
                                 Harmonic(stiffness=3.0, rest_length=1.1, cutoff=2.5)])
def test_derivatives_and_hessian_by_finite_differences(pot):
    r = np.linspace(0.95, 2.45, 31) + 0.013      # off the switch-on kink of phi"
    h = 1e-6
    assert pot.first(r) == pytest.approx((pot.energy(r + h) - pot.energy(r - h)) / (2 * h),
                                         rel=1e-6, abs=1e-7)
    assert pot.second(r) == pytest.approx((pot.first(r + h) - pot.first(r - h)) / (2 * h),
                                          rel=1e-6, abs=1e-6)
    X, x = perturbed_cluster(1)
    model = PairModel(X, pot, skin=0.3)
    v = np.random.default_rng(2).standard_normal(x.size)
    grad = lambda u: -model.forces(u.reshape(x.shape)).ravel()  # noqa: E731
    fd = (grad(x.ravel() + h * v) - grad(x.ravel() - h * v)) / (2 * h)
    Hv = model.hessian(x) @ v
    assert np.abs(fd - Hv).max() <= 1e-6 * np.abs(Hv).max()
    fd_e = (model.energy(x + h * v.reshape(x.shape)) - model.energy(x - h * v.reshape(x.shape)))
    assert fd_e / (2 * h) == pytest.approx(-model.forces(x).ravel() @ v, rel=1e-6)


def test_equilibrium_spacing_is_stress_free():
    for lat, pot in ((chain(), CHAIN_POTENTIAL), (triangular(), TRIANGULAR_POTENTIAL)):
        a = equilibrium_spacing(pot, lat)
        r = np.linalg.norm(lat.with_spacing(a).neighbour_vectors(pot.cutoff), axis=1)
        assert abs(np.sum(pot.first(r) * r)) < 1e-12
    # harmonic nearest-neighbour springs: a = r0
    assert equilibrium_spacing(Harmonic(1.0, 1.3, cutoff=1.5), chain()) == pytest.approx(1.3)


def test_newton_and_fire_relax_to_the_same_state():
    p = bond_defect_chain(24, scale=0.5, strain=0.02)
    x_newton, result = p.reference()
    assert result.converged and result.reason == "CONVERGED_FORCE_TOL"
    x0 = p.affine()
    free = ~p.fixed

    def grad(u):
        x = x0.copy()
        x[free, 0] = u
        return -p.model.forces(x)[free, 0]

    relaxed = fire(grad, x0[free, 0], force_tol=1e-9, dt=0.02, dt_max=0.05)
    assert relaxed.converged
    assert np.abs(relaxed.u - x_newton[free, 0]).max() < 1e-9


@pytest.mark.parametrize("dim", [1, 2])
def test_patch_test_consistent_schemes_have_no_ghost_forces(dim):
    if dim == 1:
        p = bond_defect_chain(60, scale=1.0, strain=0.03)
        R = 3.5
    else:
        p = vacancy(9, empty=False, layer=1.0)
        R = 3
    bond_force = np.max(np.abs(p.model.potential.first(
        np.linalg.norm(p.lattice.neighbour_vectors(p.model.potential.cutoff) @ p.F.T, axis=1))))
    ghost = {m: np.abs(patch_test_forces(p.coupled(m, R), p.F)).max() / bond_force
             for m in ("qce", *CONSISTENT)}
    for m in CONSISTENT:
        assert ghost[m] <= 1e-10, (m, ghost[m])
    assert ghost["qce"] > 1e-3


def test_harmonic_nn_nnn_chain_patch_test():
    springs = Harmonic(stiffness=1.0, rest_length=1.0, cutoff=1.5)     # a = 0.6: NN + NNN
    p = bond_defect_chain(60, scale=1.0, strain=0.03, potential=springs, bracket=(0.55, 0.7))
    assert p.lattice.spacing == pytest.approx(0.6)
    f0 = abs(springs.first(np.array([2 * 0.6 * 1.03]))[0])
    ghost = {m: np.abs(patch_test_forces(p.coupled(m, 3.5), p.F)).max() / f0
             for m in ("qce", *CONSISTENT)}
    assert all(ghost[m] <= 1e-10 for m in CONSISTENT), ghost
    assert ghost["qce"] > 1e-3


def test_shenoy_dead_load_iteration_reaches_the_force_based_solution():
    for p, R in ((bond_defect_chain(40, scale=0.5), 2.5), (vacancy(8), 3)):
        iterated = ghost_force_iteration(p.coupling(R), p.F)
        direct = p.coupled("gfc", R).solve(p.F)
        assert iterated.relaxation.converged and iterated.relaxation.iterations > 1
        assert np.abs(iterated.x - direct.x).max() < 1e-9


def test_whole_chain_atomistic_equals_reference():
    p = bond_defect_chain(40, scale=0.5, strain=0.02)
    ref, _ = p.reference()
    for m in ("qce", *CONSISTENT):
        sol = p.coupled(m, 100).solve(p.F)
        assert np.abs(sol.x - ref).max() < 1e-9, m
        assert sol.relaxation.converged


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_chain_error_falls_as_the_atomistic_region_grows(scale):
    p = bond_defect_chain(80, scale=scale, strain=0.02)
    radii = np.array([0.5, 1.5, 2.5, 3.5])
    err = {m: np.array([errors(p, p.coupled(m, R).solve(p.F).x)["max"] for R in radii])
           for m in ("qce", *CONSISTENT)}
    for m in CONSISTENT:
        assert np.all(np.diff(err[m]) < 0), (m, err[m])
        rate = -np.polyfit(radii, np.log(err[m]), 1)[0]     # err ~ exp(-rate R / a)
        assert rate > 3.0, (m, rate)
        assert err[m][-1] < 1e-9
    # energy-based QC: the ghost-force error does not go away (Dobson & Luskin 2009)
    assert err["qce"][-1] > 1e-5 and err["qce"][-1] > 0.5 * err["qce"][1]


def test_vacancy_coupled_solutions_converge_to_the_atomistic_reference():
    p = vacancy(12)
    radii = np.array([3.0, 4.0, 5.0])      # (at R = 2a GFC can trail QCE in a larger body)
    err = {m: np.array([errors(p, p.coupled(m, R).solve(p.F).x)["l2_rel"] for R in radii])
           for m in ("qce", *CONSISTENT)}
    for m in CONSISTENT:
        assert np.all(np.diff(err[m]) < 0), (m, err[m])
        assert np.all(err[m] <= err["qce"]), (m, err[m], err["qce"])


def test_crack_slit_and_k_field():
    p = crack(8, K=1.0)
    ref, _ = p.reference()
    # the K-field is the far field: the atomistic solution deviates from it by a few percent
    dev = np.linalg.norm(ref - p.affine(), axis=1).max()
    assert 0 < dev < 0.1 * np.linalg.norm(ref - p.X, axis=1).max()
    for m in ("qce", *CONSISTENT):          # everything atomistic: the reference itself
        assert np.abs(p.coupled(m, 100).solve(p.F).x - ref).max() < 1e-9, m
    p = crack(12, K=1.0)
    radii = [3.0, 4.0, 6.0]
    for m in CONSISTENT:
        err = [errors(p, p.coupled(m, R).solve(p.F).x)["l2_rel"] for R in radii]
        assert np.all(np.diff(err) < 0), (m, err)


def test_bad_inputs_give_one_line_errors():
    with pytest.raises(ValueError, match="no equilibrium spacing"):
        equilibrium_spacing(Harmonic(1.0, rest_length=2.0, cutoff=1.5), chain())
    with pytest.raises(ValueError, match="overlap"):
        PairModel(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), TRIANGULAR_POTENTIAL)
    lat = triangular(1.1)
    nodes = lat.sites(-3.3, 3.3)
    nodes[5] += [0.3, 0.0]
    with pytest.raises(ValueError, match="not on a site of the triangular lattice"):
        rep_mesh(lat, nodes)
    p = bond_defect_chain(24, scale=0.5, strain=0.02)
    with pytest.raises(RelaxationError, match="did not converge .* max_iterations"):
        p.coupled("qnl", 2).solve(p.F, max_iterations=1)
    with pytest.raises(ValueError, match="defect bond .* not inside the atomistic region"):
        g = p.coupling(3)
        Coupling(p.model, p.lattice, g.mesh, np.zeros(len(p.X), bool), p.fixed)
    with pytest.raises(ValueError, match="not a mesh node"):
        g = p.coupling(3)
        Coupling(p.model, p.lattice, rep_mesh(p.lattice, p.X[::2]), g.atomistic, p.fixed)
    with pytest.raises(ValueError, match="unknown coupling method"):
        p.coupled("qcf", 2)
    with pytest.raises(RelaxationError, match="DIVERGED_MAX_IT"):
        newton(lambda u: u - 1.0 + 0.3 * np.sin(u), lambda u: None, np.zeros(1),
               max_iterations=0)
