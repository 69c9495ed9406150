"""FE-HMM (msfem.methods.fe_hmm) on a(x) = 1/(2 + cos(2πx₁/ε)): convergence to the
homogenized solution, the vanishing modelling error with periodic micro conditions, the
ε/δ boundary layer with Dirichlet ones.

A* = diag(1/2, 1/√3); u₀ = sin(πx₁) sin(πx₂) solves -div(A*∇u₀) = f with
f = π²(1/2 + 1/√3) sin(πx₁) sin(πx₂). Every test runs in serial and under mpirun -n 2.
"""

import json

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import pytest
import ufl
from helpers import fitted_rate, homogenized_q1, write_text_config
from mpi4py import MPI

import msfem
from msfem.cli import main
from msfem.coarse import solve

pytestmark = pytest.mark.filterwarnings("ignore::msfem.UnresolvedScaleWarning")

EPS = 1 / 16
C = np.pi ** 2 * (0.5 + 1 / np.sqrt(3))
A_STAR = np.diag([0.5, 1 / np.sqrt(3)])


def laminate(eps=EPS):
    return msfem.UserField(lambda x: 1 / (2 + np.cos(2 * np.pi * x[0] / eps)), eps=eps)


SOURCE = msfem.UserField(lambda x: C * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))


def fe_hmm(comm, N, **params):
    h = msfem.StructuredHierarchy(comm, N, 2, "quadrilateral")
    space = msfem.MultiscaleSpace(h, msfem.diffusion(laminate(), SOURCE), "fe-hmm",
                                  parameters=params).build()
    return space, solve(space)


def errors_to_u0(sol):
    """L2 and H1-seminorm errors of the macro solution against u₀ (collective)."""
    U = sol.U
    mesh = U.function_space.mesh
    x = ufl.SpatialCoordinate(mesh)
    e = U - ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])
    dx = ufl.dx(metadata={"quadrature_degree": 8})
    out = []
    for form in (e * e * dx, ufl.inner(ufl.grad(e), ufl.grad(e)) * dx):
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(form))
        out.append(float(np.sqrt(mesh.comm.allreduce(local, op=MPI.SUM))))
    return out


def homogenized_fe(space):
    """The Q1 FE solution with A* and the same macro rule (2 x 2 Gauss), in space's dofs."""
    V = space.coarse.function_space
    x = ufl.SpatialCoordinate(V.mesh)
    return homogenized_q1(V, A_STAR, C * ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1]))


def rel_max(a, b, comm):
    num = comm.allreduce(float(np.abs(a - b).max()), op=MPI.MAX)
    return num / comm.allreduce(float(np.abs(b).max()), op=MPI.MAX)


def test_macro_errors_are_order_h_in_h1_and_h2_in_l2(comm):
    errs = np.array([errors_to_u0(fe_hmm(comm, N, cells_per_eps=8)[1]) for N in (4, 8)])
    H = [1 / 4, 1 / 8]
    assert fitted_rate(H, errs[:, 0]) > 1.9
    assert 0.9 < fitted_rate(H, errs[:, 1]) < 1.2
    assert errs[1, 0] == pytest.approx(7.5872e-3, rel=2e-3)  # (8 x 8, the homogenized FE)


def test_periodic_micro_problems_give_the_homogenized_fe_solution(comm):
    """δ/ε integer, periodic: no modelling error, only the micro discretisation's."""
    diffs = []
    for cells in (8, 16):
        space, sol = fe_hmm(comm, 4, cells_per_eps=cells)
        ref = homogenized_fe(space)
        diffs.append(rel_max(sol.U.x.array, ref.x.array, comm))
    assert diffs[0] < 1e-5 and diffs[1] < 1e-8
    assert diffs[1] < 1e-2 * diffs[0]
    space, sol = fe_hmm(comm, 4, cells_per_eps=8, delta=2.0)  # two periods: the same
    assert rel_max(sol.U.x.array, homogenized_fe(space).x.array, comm) < 1e-5


def test_dirichlet_micro_problems_have_a_boundary_layer_of_order_eps_over_delta(comm):
    diffs = []
    for delta in (1.0, 2.0, 4.0):
        space, sol = fe_hmm(comm, 4, cells_per_eps=8, delta=delta, micro_bc="dirichlet")
        diffs.append(rel_max(sol.U.x.array, homogenized_fe(space).x.array, comm))
    assert diffs[0] > 1e-2  # a real modelling error ...
    rate = fitted_rate([1.0, 2.0, 4.0], diffs)
    assert -1.3 < rate < -0.8  # ... that decays like ε/δ


def test_locally_periodic_coefficient_and_ranks(comm):
    """a(x, x/ε) = (1 + x₂/2)/(2 + cos(2πx₁/ε)): close to the fine solution in L2."""
    a = msfem.UserField(lambda x: (1 + 0.5 * x[1]) / (2 + np.cos(2 * np.pi * x[0] / EPS)),
                        eps=EPS)
    h = msfem.StructuredHierarchy(comm, 8, 16, "quadrilateral")
    problem = msfem.diffusion(a, 1.0)
    space = msfem.MultiscaleSpace(h, problem, "fe-hmm", parameters={"cells_per_eps": 8})
    sol = solve(space.build())
    fine = msfem.solve_fine(h.fine, problem)
    e = sol.errors(fine.u)
    assert e["l2_rel"] < 0.05
    assert e["l2_rel"] == pytest.approx(0.02728413866069159, rel=1e-9)  # 1 and 2 ranks


def test_msfem_solve_runs_fe_hmm(shared_tmp):
    config = """
[mesh]
N = 4
M = 16
[coefficient]
type = "hou-wu"
eps = 0.125
[msfem]
method = "fe-hmm"
delta = 1.0
cells_per_eps = 8
[output]
png = false
"""
    out = shared_tmp / "fe_hmm"
    assert main(["solve", str(write_text_config(shared_tmp, config)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method_parameters"]["method"] == "fe-hmm"
    assert 0 < metrics["l2_rel"] < 0.2


@pytest.mark.parametrize("params, message", [
    ({"delta": 0.5}, "delta"),
    ({"micro_bc": "neumann"}, "micro_bc"),
    ({"cells_per_eps": 1}, "cells_per_eps"),
])
def test_bad_parameters(comm, params, message):
    h = msfem.StructuredHierarchy(comm, 2, 2, "quadrilateral")
    with pytest.raises(ValueError, match=message):
        msfem.MultiscaleSpace(h, msfem.diffusion(laminate(), 1.0), "fe-hmm", parameters=params)


def test_refuses_what_it_cannot_do(comm):
    h = msfem.StructuredHierarchy(comm, 2, 2, "quadrilateral")
    with pytest.raises(ValueError, match="scale eps"):
        msfem.MultiscaleSpace(h, msfem.diffusion(1.0, 1.0), "fe-hmm")
    tri = msfem.StructuredHierarchy(comm, 2, 2, "triangle")
    with pytest.raises(ValueError, match="quadrature = 'centroid'"):
        msfem.MultiscaleSpace(tri, msfem.diffusion(laminate(), 1.0), "fe-hmm",
                              parameters={"quadrature": "gauss"})
    # triangles with the centroid rule work (P1 macro space)
    space = msfem.MultiscaleSpace(tri, msfem.diffusion(laminate(), SOURCE), "fe-hmm",
                                  parameters={"cells_per_eps": 4}).build()
    assert np.isfinite(solve(space).U.x.array).all()


@pytest.mark.parametrize("cell, problem_of", [
    ("quadrilateral", lambda a: msfem.diffusion(a, SOURCE)),
    ("triangle", lambda a: msfem.diffusion(a, SOURCE)),
    ("quadrilateral", lambda a: msfem.elasticity(a, 0.3, f=(0.0, -1.0))),
])
def test_affine_coefficient_model_equals_assembling_every_batch(comm, monkeypatch, cell,
                                                                problem_of):
    """Sampled coefficients: the micro matrices come from A0 + Σ a_c K_c (fast path);
    the macro solution is the one of assembling every batch, to round-off."""
    from msfem.methods import fe_hmm

    h = msfem.StructuredHierarchy(comm, 4, 2, cell)
    problem = problem_of(laminate())
    params = {"cells_per_eps": 8, "quadrature": "centroid" if cell == "triangle" else None}
    space = msfem.MultiscaleSpace(h, problem, "fe-hmm", parameters=params).build()
    assert space.method._micro.model is not None  # the fast path was taken (and checked)
    fast = solve(space).U.x.array.copy()
    monkeypatch.setattr(fe_hmm._CoefficientModel, "build", classmethod(lambda cls, dom: None))
    space = msfem.MultiscaleSpace(h, problem, "fe-hmm", parameters=params).build()
    assert space.method._micro.model is None
    slow = solve(space).U.x.array
    assert rel_max(fast, slow, comm) < 1e-11
