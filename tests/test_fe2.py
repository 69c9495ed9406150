"""FE² (msfem.fe2): the linear law reproduces the homogenized solve, quadratic Newton at
both scales, Hill--Mandel, checkpoint/restart, rank independence and bad input.

The linear law on a laminate (a1 = 1, a2 = 10, layers normal to y1, fraction 1/2) has the
exact discrete cell solution on a lattice aligned with the layers, so FE² must equal the Q1
solve with A* = diag(harmonic mean, arithmetic mean) and the same 2 x 2 Gauss rule. Every
test runs in serial and under mpirun -n 2.
"""

import json

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import pytest
import ufl
from helpers import A1, A2, A_STAR, NONLINEAR, homogenized_q1, write_text_config
from mpi4py import MPI

import msfem
from msfem.cli import main
from msfem.fe2 import (
    FE2,
    LAWS,
    Law,
    MicroSolverError,
    TangentError,
    create_law,
    register_law,
)
from msfem.fe2.run import load_config


def hierarchy(comm, N=3):
    return msfem.StructuredHierarchy(comm, N, 1, "quadrilateral")


def owned(result, fe2):
    return result.U.x.array[: fe2.space.size_local]


def nodal_norm(result, fe2, comm):
    return float(np.sqrt(comm.allreduce(float(np.sum(owned(result, fe2) ** 2)))))


def test_linear_law_equals_the_homogenized_solve(comm):
    fe2 = FE2(hierarchy(comm, 4), "linear-diffusion", law_parameters={"a1": A1, "a2": A2},
              load=1.0, micro_cells=8)
    result = fe2.solve()
    ref = homogenized_q1(fe2.space.function_space, A_STAR, 1.0, "test_fe2_hom_")
    diff = comm.allreduce(float(np.abs(result.U.x.array - ref.x.array).max()), op=MPI.MAX)
    scale = comm.allreduce(float(np.abs(ref.x.array).max()), op=MPI.MAX)
    assert diff < 1e-8 * scale
    # the micro tangent is A* itself
    C = fe2.rve.solve(np.array([1.0, 0.3])).C
    assert np.abs(C - A_STAR).max() < 1e-12 * A2
    # linear: one Newton iteration, one micro iteration per point
    assert len(result.steps[0]["residuals"]) == 2
    assert result.steps[0]["micro_iterations"][-1] <= 1


def quadratic(residuals, floor):
    """Ratios r_{k+1} / r_k^2 over the iterates above the round-off floor."""
    r = [x for x in residuals if x > floor]
    return [b / a ** 2 for a, b in zip(r[:-1], r[1:])]


def test_nonlinear_law_newton_converges_quadratically_at_both_scales(comm):
    fe2 = FE2(hierarchy(comm), "nonlinear-diffusion", law_parameters=NONLINEAR, load=20.0,
              micro_cells=8, steps=2)
    result = fe2.solve()
    for step in result.steps:
        r = step["residuals"]
        assert r[-1] < 1e-10 * r[0]
        assert 3 <= len(r) - 1 <= 6
        assert max(quadratic(r[1:], 1e-9)) < 5.0  # |r_{k+1}| <= C |r_k|^2
        assert r[-1] / r[-2] < 1e-2  # (the last one is at the round-off floor)
    # the micro Newton: from zero at a large gradient
    micro = fe2.rve.solve(np.array([2.0, -1.0])).residuals
    assert micro[-1] < 1e-11 * micro[0]
    assert max(quadratic(micro[1:], 1e-9)) < 5.0
    assert micro[-1] / micro[-2] < 1e-4


def test_neo_hooke_newton_and_hill_mandel(comm):
    stretch = msfem.Dirichlet(lambda x: np.array([0.1 * x[0], -0.05 * x[1]]))
    fe2 = FE2(hierarchy(comm, 2), "neo-hooke",
              law_parameters={"microstructure": "disc", "fraction": 0.3},
              load=[0.0, -0.2], dirichlet=[stretch], micro_cells=8, steps=2)
    result = fe2.solve()
    for step in result.steps:
        r = step["residuals"]
        assert r[-1] < 1e-10 * max(r)
        assert r[-1] / r[-2] < 1e-5
    assert result.hill_mandel_max < 1e-10
    # the tangent is the derivative of the stress (finite differences)
    H = np.array([[0.1, 0.02], [0.0, -0.05]]).ravel()
    res = fe2.rve.solve(H)
    e = 1e-6
    for k in range(4):
        dH = np.zeros(4)
        dH[k] = e
        fd = (fe2.rve.solve(H + dH, res.w).Q - fe2.rve.solve(H - dH, res.w).Q) / (2 * e)
        assert np.abs(fd - res.C[:, k]).max() < 1e-7 * np.abs(res.C).max()


def test_hill_mandel_at_every_point_and_step(comm):
    fe2 = FE2(hierarchy(comm), "nonlinear-diffusion", law_parameters=NONLINEAR, load=20.0,
              micro_cells=8, steps=3, hill_mandel_tolerance=1e-10)  # checked at each point
    result = fe2.solve()
    assert len(result.steps) == 3
    assert all(s["hill_mandel"] < 1e-10 for s in result.steps)
    assert result.hill_mandel_max == max(s["hill_mandel"] for s in result.steps)


def test_restart_reproduces_the_uninterrupted_run(comm, shared_tmp):
    def run(**kwargs):
        fe2 = FE2(hierarchy(comm), "nonlinear-diffusion", law_parameters=NONLINEAR,
                  load=20.0, micro_cells=8, steps=3)
        return fe2, fe2.solve(**kwargs)

    fe2, full = run(checkpoint=shared_tmp / "full")
    _, first = run(checkpoint=shared_tmp / "split", stop_after=1)
    assert len(first.steps) == 1
    _, rest = run(checkpoint=shared_tmp / "split", restart=True)
    assert rest.restarted_from == 1
    diff = comm.allreduce(float(np.abs(owned(rest, fe2) - owned(full, fe2)).max()),
                          op=MPI.MAX)
    assert diff < 1e-12
    for a, b in zip(rest.steps, full.steps):
        assert a["residuals"][:-1] == pytest.approx(b["residuals"][:-1], rel=1e-9)
    state = json.loads((shared_tmp / "split" / "state.json").read_text())
    assert state["step"] == 3 and state["ranks"] == comm.size


def test_rank_independent_number(comm):
    """Pinned in serial; the same under mpirun -n 2."""
    fe2 = FE2(hierarchy(comm, 4), "nonlinear-diffusion", law_parameters=NONLINEAR,
              load=20.0, micro_cells=8, steps=2)
    result = fe2.solve()
    assert nodal_norm(result, fe2, comm) == pytest.approx(PINNED_NORM, rel=1e-10)


PINNED_NORM = 0.5940403027759377


def test_msfem_fe2_command_and_restart(shared_tmp):
    config = """
[mesh]
N = 2
[fe2]
law = "nonlinear-diffusion"
parameters = { a1 = 1.0, a2 = 10.0, beta = 1.0 }
micro_cells = 8
steps = 2
[problem]
load = 20.0
dirichlet = { value = 0.0, gradient = [0.5, 0.0] }
[output]
fields = true
"""
    path = write_text_config(shared_tmp, config)
    out = shared_tmp / "fe2"
    assert main(["fe2", str(path), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["steps"]) == 2 and metrics["hill_mandel_max"] < 1e-10
    assert set(metrics["timings"]) >= {"micro", "tangent", "macro_solve"}
    assert all(set(t) == {"micro", "tangent", "macro_solve"}
               for s in metrics["steps"] for t in s["timings"])
    assert (out / "fields" / "u_fe2.bp").exists() and (out / "checkpoint").is_dir()
    assert main(["fe2", str(path), "--out", str(out), "--restart"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["restarted_from"] == 2
    assert again["u_l2_nodal"] == pytest.approx(metrics["u_l2_nodal"], rel=1e-12)


# ------------------------------------------------------------------------- bad input
def test_unknown_law_and_bad_parameters(shared_tmp):
    with pytest.raises(ValueError, match="unknown micro law 'plastic'; valid laws: "
                                         "linear-diffusion, nonlinear-diffusion, neo-hooke"):
        create_law("plastic")
    with pytest.raises(ValueError, match="beta"):
        create_law("nonlinear-diffusion", {"beta": -1.0})
    with pytest.raises(ValueError, match="gamma: .*parameters: "):
        create_law("nonlinear-diffusion", {"gamma": 1.0})
    bad = {"unknown_law": ('law = "plastic"', "unknown micro law 'plastic'"),
           "unknown_key": ('law = "linear-diffusion"\nbogus = 1', r"\[fe2\] bogus: unknown key"),
           "bad_steps": ('law = "linear-diffusion"\nsteps = 0', r"\[fe2\] steps")}
    for name, (fe2_section, message) in bad.items():
        path = write_text_config(shared_tmp, f"[mesh]\nN = 2\n[fe2]\n{fe2_section}\n",
                                 name=f"{name}.toml")
        with pytest.raises(ValueError, match=message) as info:
            load_config(path)
        assert "\n" not in str(info.value)
    assert main(["fe2", str(shared_tmp / "unknown_law.toml"), "--out",
                 str(shared_tmp / "never")]) == 2
    assert not (shared_tmp / "never").exists()


def test_diverging_micro_problem_keeps_the_last_good_checkpoint(comm, shared_tmp):
    """Compression to F11 = -0.5 in step 2: det F < 0 in the cell, ln J is NaN."""
    squeeze = msfem.Dirichlet(lambda x: np.array([-1.5 * x[0], 0 * x[0]]))
    fe2 = FE2(hierarchy(comm, 2), "neo-hooke", dirichlet=[squeeze], micro_cells=4, steps=2)
    directory = shared_tmp / "squeeze"
    with pytest.raises(MicroSolverError,
                       match=r"macro point \d at x = .* of macro cell \d+, load step 2/2 "
                             r".*residual is not finite.*det F <= 0") as info:
        fe2.solve(checkpoint=directory)
    assert "\n" not in str(info.value)
    state = json.loads((directory / "state.json").read_text())
    assert state["step"] == 1


def test_micro_newton_iteration_limit_names_the_point(comm):
    fe2 = FE2(hierarchy(comm, 2), "nonlinear-diffusion", law_parameters=NONLINEAR,
              load=20.0, micro_cells=4, micro_max_iterations=1)
    with pytest.raises(MicroSolverError, match=r"load step 1/1 .*did not converge in 1 "
                                               r"iterations"):
        fe2.solve()


def test_non_positive_tangent_is_refused(comm):
    @register_law("concave-test")
    class Concave(Law):
        linear = True

        def energy(self, g, chi):
            return -0.5 * ufl.inner(g, g)

    try:
        fe2 = FE2(hierarchy(comm, 2), "concave-test", load=1.0, micro_cells=4)
        with pytest.raises(TangentError, match="tangent dQ/dG is not positive: the smallest "
                                               "eigenvalue"):
            fe2.solve()
    finally:
        LAWS.pop("concave-test")


def test_restart_refuses_another_rank_count_or_run(comm, shared_tmp):
    def make(**kwargs):
        return FE2(hierarchy(comm, 2), "linear-diffusion", load=1.0, micro_cells=4, **kwargs)

    directory = shared_tmp / "ranks"
    make().solve(checkpoint=directory)
    with pytest.raises(ValueError, match="belongs to another run: micro_cells"):
        FE2(hierarchy(comm, 2), "linear-diffusion", load=1.0,
            micro_cells=6).solve(checkpoint=directory, restart=True)
    state = directory / "state.json"
    if comm.rank == 0:
        data = json.loads(state.read_text())
        data["ranks"] = comm.size + 1
        state.write_text(json.dumps(data))
    comm.barrier()
    with pytest.raises(ValueError, match=f"written by {comm.size + 1} ranks; restart it on "
                                         f"{comm.size + 1} ranks, not {comm.size}"):
        make().solve(checkpoint=directory, restart=True)
    with pytest.raises(ValueError, match="no FE2 checkpoint"):
        make().solve(checkpoint=shared_tmp / "nothing", restart=True)


def test_fe2_approaches_the_dns_as_eps_decreases(comm):
    """||u_eps - u_H|| / ||u_eps|| roughly halves with eps (rate ~1, benchmarks/fe2.py)."""
    from msfem.fe2.dns import solve_dns

    law = create_law("nonlinear-diffusion", NONLINEAR)
    fe2 = FE2(hierarchy(comm, 8), law, load=20.0, micro_cells=4, steps=2)
    U = fe2.solve().U
    errors = []
    for inv_eps in (4, 8):
        h = msfem.StructuredHierarchy(comm, 8, inv_eps, "quadrilateral")  # 8 cells per eps
        dns = solve_dns(h, law, 1.0 / inv_eps, load=20.0, steps=2)
        V = dns.u.function_space
        uH = dolfinx.fem.Function(V)
        cells = np.arange(V.mesh.topology.index_map(2).size_local, dtype=np.int32)
        uH.interpolate_nonmatching(U, cells, dolfinx.fem.create_interpolation_data(
            V, U.function_space, cells))
        norms = [comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(e ** 2 * ufl.dx)),
                                op=MPI.SUM) for e in (dns.u - uH, dns.u)]
        errors.append(float(np.sqrt(norms[0] / norms[1])))
    assert errors[0] < 0.2
    assert 0.4 < errors[1] / errors[0] < 0.65


@pytest.mark.parametrize("name", ["fe2_nonlinear_diffusion.toml", "fe2_neo_hooke.toml"])
def test_study_configurations_are_valid(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "studies" / name)
    assert cfg.fe2.law in LAWS and cfg.fe2.steps >= 1
