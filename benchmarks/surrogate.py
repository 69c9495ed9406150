"""Hierarchical coupling against FE², all numbers from this one run.

    python benchmarks/surrogate.py [--samples 32] [--N 8] [--micro-cells 16]

Nonlinear diffusion (laminate a1 = 1, a2 = 10, beta = 1), load 10, 2 load steps, N x N
macro Q1 cells with 2 x 2 Gauss points. Prints

* the offline cost: RVE solves of the database and the fit of the law;
* the online cost per macro Newton iteration: the surrogate's (evaluation + assembly +
  macro solve) and FE²'s (RVE solves + assembly + macro solve);
* the break-even number of macro solves: offline / (FE² per solve - surrogate per solve);
* the surrogate's error against FE² (relative nodal l2 of the macro solution).
"""

import argparse
import tempfile
import time
from pathlib import Path

import msfem  # first: it imports dolfinx_solver before dolfinx
import numpy as np
from mpi4py import MPI

from msfem.fe2 import FE2, FE2Parameters
from msfem.surrogate import Design, RVEDatabase, SurrogateLaw, SurrogateMicro, build_database

parser = argparse.ArgumentParser()
parser.add_argument("--samples", type=int, default=32)
parser.add_argument("--N", type=int, default=8, help="macro cells per direction")
parser.add_argument("--micro-cells", type=int, default=16)
args = parser.parse_args()
comm = MPI.COMM_WORLD
LAW = {"a1": 1.0, "a2": 10.0, "beta": 1.0}
params = FE2Parameters(micro_cells=args.micro_cells, steps=2)


def solve(micro=None):
    h = msfem.StructuredHierarchy(comm, args.N, 1, "quadrilateral")
    fe2 = FE2(h, "nonlinear-diffusion", law_parameters=LAW, load=10.0, params=params,
              micro=micro)
    t = time.perf_counter()
    result = fe2.solve()
    wall = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    iterations = sum(len(s["residuals"]) for s in result.steps)
    return fe2, result, wall, iterations


solve()  # warm-up (JIT of the micro forms)
fe2, ref, t_fe2, it_fe2 = solve()
with tempfile.TemporaryDirectory() as tmp:
    path = Path(comm.bcast(tmp, root=0)) / "db.h5"
    t = time.perf_counter()
    build_database(path, "nonlinear-diffusion", 2, Design(samples=args.samples, lower=-0.75,
                   upper=0.75), law_parameters=LAW, micro=params, comm=comm)
    t_db = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    t = time.perf_counter()
    db = RVEDatabase.read(path, comm)
    law = SurrogateLaw.fit(db)
    t_fit = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    _, sur, t_sur, it_sur = solve(SurrogateMicro(law, comm=comm, tolerance=0.1))
    comm.barrier()
n = fe2.space.size_local
err = np.sqrt(comm.allreduce(float(np.sum((sur.U.x.array[:n] - ref.U.x.array[:n]) ** 2))) /
              comm.allreduce(float(np.sum(ref.U.x.array[:n] ** 2))))
offline = t_db + t_fit
break_even = offline / max(t_fe2 - t_sur, 1e-12)
if comm.rank == 0:
    print(f"nonlinear diffusion, {args.N}x{args.N} macro cells ({comm.allreduce(fe2.n_points)} "
          f"points), RVE {args.micro_cells}^2 cells, {comm.size} rank(s)")
    print(f"offline: database {args.samples} RVE solves {t_db:.3f} s + fit {t_fit:.3f} s = "
          f"{offline:.3f} s")
    print(f"online per macro Newton iteration: surrogate {1e3 * t_sur / it_sur:.2f} ms, "
          f"FE2 {1e3 * t_fe2 / it_fe2:.2f} ms  (ratio {t_fe2 / it_fe2 / (t_sur / it_sur):.1f}); "
          f"whole solve: surrogate {t_sur:.3f} s, FE2 {t_fe2:.3f} s ({ref.micro_solves} RVE "
          f"solves)")
    print(f"break-even: the surrogate beats FE2 from {break_even:.2f} macro solves on")
    print(f"surrogate error against FE2 (relative nodal l2): {err:.2e}")
