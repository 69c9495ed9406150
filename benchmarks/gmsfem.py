"""GMsFEM offline cost per coarse neighbourhood, and online time against the fine solve.

    python benchmarks/gmsfem.py                 (1 rank; the issue's setup)
    mpiexec -n 2 python benchmarks/gmsfem.py    (2 ranks)

Setup: -div(a grad u) = -1 on (0,1)^2, u = 0 on the boundary, msfem's high-contrast
channels (contrast 1e4, 16 channels of width 1/64), 32 x 32 coarse Q1 cells of 16 x 16
fine cells, GMsFEM with 4 eigenfunctions per neighbourhood (``snapshots = "all"``; also
``"harmonic"`` with --harmonic). Times are medians of ``--repeat`` runs, max over ranks.

Printed: the offline time per neighbourhood split into partition of unity (the linear
MsFEM basis of every cell), snapshots, eigensolve and basis (products and element
matrices); the ratio of one eigensolve to one factorisation of the same local matrix
(PETSc Cholesky, nested dissection, of A_ω + σM on an interior neighbourhood: what the
shift-and-invert transformation factorises once); the online time (coarse assembly +
solve) against the fine CG + GAMG solve; the energy error against the fine solution.
"""

import argparse
import gc
import time

import msfem  # first: it imports dolfinx_solver before dolfinx
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from msfem.local import DirichletSolver
from msfem.patches import to_csr

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=32, help="coarse cells per direction")
parser.add_argument("--M", type=int, default=16, help="fine cells per coarse cell")
parser.add_argument("--eigenfunctions", type=int, default=4)
parser.add_argument("--contrast", type=float, default=1e4)
parser.add_argument("--repeat", type=int, default=3)
parser.add_argument("--harmonic", action="store_true", help="harmonic snapshots")
args = parser.parse_args()
comm = MPI.COMM_WORLD
a = msfem.coefficients.channels(args.contrast, 16, 1 / 64, length=(0.05, 0.95))
problem = msfem.diffusion(a, -1.0)
params = {"eigenfunctions": args.eigenfunctions,
          "snapshots": "harmonic" if args.harmonic else "all"}


def med(xs):
    return float(np.median(xs))


runs = []
for _ in range(args.repeat):
    gc.collect()
    h = msfem.StructuredHierarchy(comm, args.N, args.M, "quadrilateral")
    space = msfem.MultiscaleSpace(h, problem, "gmsfem", parameters=params)
    comm.barrier()
    t0 = time.perf_counter()
    space.build()
    t_off = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    report = space.method.report(comm)
    n_local = len(space.method.counts())
    t = {k: comm.allreduce(v / max(n_local, 1), op=MPI.MAX)
         for k, v in space.method.timings.items()}
    comm.barrier()
    t0 = time.perf_counter()
    sol = msfem.solve_coarse(space)
    t_on = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    runs.append((t_off, t, t_on, n_local, report, space, sol, h))

t_off = med([r[0] for r in runs])
parts = {k: med([r[1][k] for r in runs]) for k in runs[0][1]}
t_on = med([r[2] for r in runs])
n_local = runs[-1][3]
report, space, sol, h = runs[-1][4:]

# one factorisation of an interior neighbourhood's matrix (the same size and sparsity)
engine = space.engine()
pm = engine.patch_mesh((2 * args.M, 2 * args.M))
pm.move_to(h.lower + (np.array(h.N) // 2 - 1) * h.H)
A = to_csr(pm.assemble())
M = pm.metric_matrices()[0]
S = (A + 1e-6 * abs(A).max() / abs(M).max() * M).tocsr()
S = PETSc.Mat().createAIJ(S.shape, csr=(S.indptr, S.indices, S.data), comm=MPI.COMM_SELF)
t_fact = []
for _ in range(5):
    with DirichletSolver(S, symmetric=True, prefix="bench_factor_") as solver:
        t_fact.append(solver.petsc_seconds)
t_fact = comm.allreduce(med(t_fact), op=MPI.MAX)

t_fine, fine = [], None
for _ in range(args.repeat):
    comm.barrier()
    t0 = time.perf_counter()
    fine = msfem.solve_fine(h.fine, problem)
    t_fine.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
err = sol.errors(fine.u)["energy_rel"]

if comm.rank == 0:
    counts = list(report["functions"].values())
    print(f"GMsFEM, {args.eigenfunctions} eigenfunctions ({params['snapshots']} snapshots), "
          f"{args.N}x{args.N} coarse x {args.M}x{args.M} fine, channels contrast "
          f"{args.contrast:.0e}, {comm.size} rank(s)")
    print(f"  neighbourhoods: {len(counts)} (rank 0 solves {n_local}); functions kept: "
          f"{sum(counts)}")
    print(f"  offline: {t_off:.3f} s = {1e3 * t_off / max(n_local, 1):.2f} ms per neighbourhood "
          f"(rank 0)")
    for k in ("partition", "snapshots", "eigensolve", "basis"):
        print(f"    {k:>10}: {1e3 * parts[k]:7.3f} ms per neighbourhood")
    print(f"  one factorisation of an interior neighbourhood matrix "
          f"({S.getSize()[0]} dofs): {1e3 * t_fact:.3f} ms")
    print(f"  eigensolve / factorisation = {parts['eigensolve'] / t_fact:.2f}")
    print(f"  online (coarse assembly + solve): {t_on:.4f} s; fine CG+GAMG solve: "
          f"{med(t_fine):.4f} s; online / fine = {t_on / med(t_fine):.3f}")
    print(f"  energy error vs the fine solution: {err:.3e}")
