"""Hierarchical coupling (msfem.surrogate): database, learned law, macro solve, bad input.

The linear law on the laminate of test_fe2 has the analytic A* = diag(harmonic, arithmetic
mean), so the fitted law must be A* and the macro solution FE²'s. For the nonlinear laws
the surrogate is checked against FE² and against RVE solves it never saw; objectivity and
symmetry of the mechanical law are identities. Every test runs in serial and under
mpirun -n 2 (database files live in a directory shared by the ranks).
"""

import json
import warnings

import h5py
import numpy as np
import pytest
from helpers import A1, A2, A_STAR, NONLINEAR, write_text_config
from mpi4py import MPI

import msfem
from msfem import Dirichlet
from msfem.cli import main
from msfem.fe2 import FE2, RVE, FE2Parameters, create_law
from msfem.surrogate import (
    DatabaseError,
    Design,
    RVEDatabase,
    SurrogateLaw,
    SurrogateMicro,
    SurrogateWarning,
    build_database,
)
from msfem.transfer import CoarseGather

LINEAR = {"a1": A1, "a2": A2}
MICRO = FE2Parameters(micro_cells=8)


def hierarchy(comm):
    return msfem.StructuredHierarchy(comm, 4, 1, "quadrilateral")


def database(path, law, params, samples, comm, lower=-0.75, upper=0.75, **kw):
    build_database(path, law, 2, Design(samples=samples, lower=lower, upper=upper),
                   law_parameters=params, micro=MICRO, comm=comm, **kw)
    return RVEDatabase.read(path, comm)


def relative(a, b, fe2, comm):
    n = fe2.space.size_local
    diff = comm.allreduce(float(np.sum((a.x.array[:n] - b.x.array[:n]) ** 2)))
    return float(np.sqrt(diff / comm.allreduce(float(np.sum(b.x.array[:n] ** 2)))))


def fe2_solve(comm, law, params, micro=None):
    fe2 = FE2(hierarchy(comm), law, law_parameters=params, load=10.0, steps=2, params=MICRO,
              micro=micro)
    return fe2, fe2.solve()


# ----------------------------------------------------------------------------- linear law
def test_linear_law_reproduces_the_homogenized_tensor_and_fe2(comm, shared_tmp):
    db = database(shared_tmp / "linear.h5", "linear-diffusion", LINEAR, 8, comm)
    law = SurrogateLaw.fit(db)
    G = np.random.default_rng(0).uniform(-0.7, 0.7, (10, 2))
    Q, C, u = law.evaluate(G)
    assert np.abs(C - A_STAR).max() < 1e-6 * A2
    assert np.abs(Q - G @ A_STAR).max() < 1e-6 * A2
    assert law.gp is None and np.all(u == 0)  # affine data: the trend is exact
    fe2, ref = fe2_solve(comm, "linear-diffusion", LINEAR)
    _, sur = fe2_solve(comm, "linear-diffusion", LINEAR, SurrogateMicro(law, comm=comm))
    assert relative(sur.U, ref.U, fe2, comm) < 1e-6


# ----------------------------------------------------------------------------- nonlinear laws
def test_nonlinear_diffusion_converges_to_fe2_as_samples_are_added(comm, shared_tmp):
    fe2, ref = fe2_solve(comm, "nonlinear-diffusion", NONLINEAR)
    G = fe2.gradients(CoarseGather(ref.U.x.petsc_vec, list(fe2.cell_dofs))(ref.U.x.petsc_vec))
    assert comm.allreduce(float(np.abs(G).max(initial=0)), op=MPI.MAX) < 0.75  # in the box
    errors = []
    for n in (8, 16, 32):
        db = database(shared_tmp / "nonlinear.h5", "nonlinear-diffusion", NONLINEAR, n, comm)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SurrogateWarning)  # inside the box: no warning
            _, sur = fe2_solve(comm, "nonlinear-diffusion", NONLINEAR,
                               SurrogateMicro(SurrogateLaw.fit(db), comm=comm, tolerance=0.1))
        errors.append(relative(sur.U, ref.U, fe2, comm))
    assert errors[0] < 2e-2 and errors[-1] < 1e-3  # 1 % reached with 8 samples
    assert errors[0] > errors[1] > errors[2]


def test_neo_hooke_law_is_objective_symmetric_and_close_to_unseen_rve_solves(comm, shared_tmp):
    params = {"mu2": 5.0, "lambda2": 5.0}
    build_database(shared_tmp / "neo.h5", "neo-hooke", 2, Design(samples=32, lower=-0.1,
                   upper=0.1), law_parameters=params, micro=MICRO, comm=comm)
    law = SurrogateLaw.fit(RVEDatabase.read(shared_tmp / "neo.h5", comm))
    H = np.array([[0.05, 0.02], [-0.03, 0.04]])
    t = 0.3
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    F = np.eye(2) + H
    Q, C, _ = law.evaluate(np.array([H.ravel(), (R @ F - np.eye(2)).ravel()]))
    P, PR = Q[0].reshape(2, 2), Q[1].reshape(2, 2)
    assert np.abs(PR - R @ P).max() < 1e-12 * np.abs(P).max()  # objectivity
    S = np.linalg.solve(F, P)
    assert np.abs(S - S.T).max() < 1e-12 * np.abs(S).max()  # P F^T symmetric
    # the tangent is the derivative of the stress (consistent Newton), up to its
    # symmetrisation, which is of the size of the fit error
    e = 1e-6
    fd = np.column_stack([(law.evaluate(H.ravel() + e * d)[0][0] -
                           law.evaluate(H.ravel() - e * d)[0][0]) / (2 * e) for d in np.eye(4)])
    assert np.abs(fd - C[0]).max() < 1e-2 * np.abs(C[0]).max()
    # unseen RVE solves: within 1 % of the largest stress
    rve = RVE(create_law("neo-hooke", params), 2, "quadrilateral", 8)
    Gs = np.random.default_rng(1).uniform(-0.09, 0.09, (6, 4))
    Qs, _, _ = law.evaluate(Gs)
    exact = np.array([rve.solve(g).Q for g in Gs])
    rve.destroy()
    assert np.abs(Qs - exact).max() < 1e-2 * np.abs(exact).max()


def test_neo_hooke_macro_solution_agrees_with_fe2(comm, shared_tmp):
    params = {"mu2": 5.0, "lambda2": 5.0}
    stretch = [Dirichlet([0.0, 0.0], lambda x: np.isclose(x[0], 0.0)),
               Dirichlet(lambda x: np.vstack([0.05 * x[0], 0 * x[0]]),
                         lambda x: np.isclose(x[0], 1.0))]

    def solve(micro=None):
        fe2 = FE2(msfem.StructuredHierarchy(comm, 2, 1, "quadrilateral"), "neo-hooke",
                  law_parameters=params, dirichlet=stretch, steps=2, params=MICRO,
                  micro=micro)
        return fe2, fe2.solve()

    fe2, ref = solve()
    build_database(shared_tmp / "neo_macro.h5", "neo-hooke", 2,
                   Design(samples=16, lower=[-0.01, -0.02, -0.03, -0.03],
                          upper=[0.07, 0.02, 0.03, 0.01]),
                   law_parameters=params, micro=MICRO, comm=comm)
    law = SurrogateLaw.fit(RVEDatabase.read(shared_tmp / "neo_macro.h5", comm))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurrogateWarning)  # the load path is in the box
        _, sur = solve(SurrogateMicro(law, comm=comm, tolerance=1e-2))
    assert relative(sur.U, ref.U, fe2, comm) < 1e-4  # measured 6.7e-6 with 16 samples


# ----------------------------------------------------------------------------- extrapolation
def test_outside_the_sampled_box_the_solve_warns_or_learns(comm, shared_tmp):
    fe2, ref = fe2_solve(comm, "nonlinear-diffusion", NONLINEAR)
    path = shared_tmp / "small.h5"
    db = database(path, "nonlinear-diffusion", NONLINEAR, 8, comm, lower=-0.2, upper=0.2)
    with pytest.warns(SurrogateWarning, match="outside the sampled box") if comm.rank == 0 \
            else warnings.catch_warnings():
        fe2_solve(comm, "nonlinear-diffusion", NONLINEAR,
                  SurrogateMicro(SurrogateLaw.fit(db), comm=comm, tolerance=1e-3))
    micro = SurrogateMicro(SurrogateLaw.fit(db), db, comm=comm, tolerance=1e-3, active=True,
                           max_new=8, max_rounds=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurrogateWarning)
        _, sur = fe2_solve(comm, "nonlinear-diffusion", NONLINEAR, micro)
    assert micro.added > 0 and sur.micro_solves == micro.added
    assert micro.law.box[1].max() > 0.5  # the law now covers the load path
    assert relative(sur.U, ref.U, fe2, comm) < 1e-2
    assert len(RVEDatabase.read(path, comm).G) == 8 + micro.added  # written to the file


# ----------------------------------------------------------------------------- database
def test_killed_build_resumes_to_the_same_file_and_ranks_agree(comm, shared_tmp):
    path = shared_tmp / "resumed.h5"
    database(path, "nonlinear-diffusion", NONLINEAR, 12, comm, stop_after=5)
    with h5py.File(path, "r") as f:
        assert int(f["done"][:].sum()) == 5
    comm.barrier()  # every rank has closed the file before rank 0 writes it again
    database(path, "nonlinear-diffusion", NONLINEAR, 12, comm)
    # an uninterrupted build on one rank (every rank its own file)
    fresh = shared_tmp / f"fresh{comm.rank}.h5"
    database(fresh, "nonlinear-diffusion", NONLINEAR, 12, MPI.COMM_SELF)
    with h5py.File(path, "r") as a, h5py.File(fresh, "r") as b:
        for name in ("G", "Q", "C", "done", "source"):
            assert np.array_equal(a[name][:], b[name][:]), (name, a[name][:], b[name][:])
        assert a.attrs["fingerprint"] == b.attrs["fingerprint"]
    # a longer Sobol design extends the file; its first rows are kept
    comm.barrier()
    database(path, "nonlinear-diffusion", NONLINEAR, 16, comm)
    with h5py.File(path, "r") as a, h5py.File(fresh, "r") as b:
        assert len(a["G"]) == 16 and np.array_equal(a["Q"][:12], b["Q"][:])


# ----------------------------------------------------------------------------- bad input
def test_bad_databases_are_refused_with_one_line(comm, shared_tmp):
    with pytest.raises(DatabaseError, match="no RVE database at"):
        RVEDatabase.read(shared_tmp / "missing.h5", comm)
    corrupt = shared_tmp / "corrupt.h5"
    if comm.rank == 0:
        corrupt.write_bytes(b"not an HDF5 file at all")
    comm.barrier()
    with pytest.raises(DatabaseError, match="not a readable HDF5 file"):
        RVEDatabase.read(corrupt, comm)
    empty = shared_tmp / "empty.h5"
    build_database(empty, "nonlinear-diffusion", 2, Design(samples=4),
                   law_parameters=NONLINEAR, micro=MICRO, comm=comm, stop_after=0)
    with pytest.raises(DatabaseError, match="no finished sample"):
        RVEDatabase.read(empty, comm)
    other = shared_tmp / "other.h5"
    database(other, "nonlinear-diffusion", NONLINEAR, 4, comm)
    with pytest.raises(DatabaseError, match="built for another micro problem.*beta"):
        build_database(other, "nonlinear-diffusion", 2, Design(samples=4, lower=-0.75,
                       upper=0.75), law_parameters={**NONLINEAR, "beta": 2.0}, micro=MICRO,
                       comm=comm)
    lhs = shared_tmp / "lhs.h5"
    build_database(lhs, "linear-diffusion", 2, Design(samples=4, design="latin-hypercube"),
                   law_parameters=LINEAR, micro=MICRO, comm=comm)
    with pytest.raises(DatabaseError, match="not nested"):
        build_database(lhs, "linear-diffusion", 2, Design(samples=6, design="latin-hypercube"),
                       law_parameters=LINEAR, micro=MICRO, comm=comm)
    with pytest.raises(ValueError, match="empty sampling box"):
        Design(lower=1.0, upper=-1.0).box(2)
    with pytest.raises(ValueError, match="active learning needs the database"):
        SurrogateMicro(SurrogateLaw.fit(RVEDatabase.read(other, comm)), active=True)


# ----------------------------------------------------------------------------- command line
CONFIG = """
[mesh]
N = 4
cell = "quadrilateral"

[fe2]
law = "nonlinear-diffusion"
parameters = { a1 = 1.0, a2 = 10.0, beta = 1.0 }
micro_cells = 8
steps = 2

[problem]
load = 10.0

[surrogate]
samples = 16
lower = -0.75
upper = 0.75
tolerance = {tolerance}
"""


def test_cli_build_and_solve(comm, shared_tmp):
    config = write_text_config(shared_tmp, CONFIG.replace("{tolerance}", "1e-3"))
    db, out = shared_tmp / "cli.h5", shared_tmp / "out"
    assert main(["surrogate", "build", str(config), "--out", str(db)]) == 0
    assert main(["surrogate", "solve", str(config), "--db", str(db), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 16 + metrics["samples_added"]
    assert metrics["max_uncertainty"] <= 1e-3
    # a config for another law: the fingerprint check names it
    bad = write_text_config(shared_tmp, CONFIG.replace("{tolerance}", "1e-3").replace(
        "beta = 1.0", "beta = 3.0"), "bad.toml")
    assert main(["surrogate", "solve", str(bad), "--db", str(db), "--out",
                 str(shared_tmp / "bad")]) == 2
    wrong = write_text_config(shared_tmp, CONFIG.replace("{tolerance}", "-1"), "wrong.toml")
    assert main(["surrogate", "build", str(wrong), "--out", str(shared_tmp / "w.h5")]) == 2
