"""FE-HMM: time per micro problem against one factorisation + solve of its matrix.

    python benchmarks/fe_hmm.py                 (1 rank)
    mpiexec -n 2 python benchmarks/fe_hmm.py    (2 ranks: also the speed-up 1 -> 2 ranks)

Setup: a(x) = 1 / (2 + cos(2 pi x1 / eps)), eps = 1/64, f such that the homogenized
solution is sin(pi x1) sin(pi x2) on (0,1)^2; 32 x 32 coarse Q1 cells (2 x 2 Gauss points:
4096 sampling domains), periodic micro conditions, delta = eps, ``--cells`` micro cells
per eps. Times are medians of ``--repeat`` runs, max over ranks.

Printed: the offline time per micro problem and its parts (move + re-sample + assemble +
reduce; factorise + solve + E = U^T A U), the floor -- one factorisation and solve of the
same reduced micro matrix with all right-hand sides (PETSc Cholesky, nested dissection,
symbolic part reused, as in the loop) -- and their ratio; on >= 2 ranks the offline
speed-up against the same build on one rank (COMM_SELF of rank 0, this run).
"""

import argparse
import gc
import time

import msfem  # first: it imports dolfinx_solver before dolfinx
import numpy as np
import scipy.sparse as sp
from mpi4py import MPI
from petsc4py import PETSc

from msfem.local import DirichletSolver

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=32)
parser.add_argument("--eps", type=float, default=1 / 64)
parser.add_argument("--cells", type=int, default=16, help="micro cells per eps")
parser.add_argument("--delta", type=float, default=1.0)
parser.add_argument("--repeat", type=int, default=3)
args = parser.parse_args()
comm = MPI.COMM_WORLD
eps = args.eps
a = msfem.UserField(lambda x: 1 / (2 + np.cos(2 * np.pi * x[0] / eps)), eps=eps)
c = np.pi ** 2 * (0.5 + 1 / np.sqrt(3))
f = msfem.UserField(lambda x: c * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
problem = msfem.diffusion(a, f)
params = {"delta": args.delta, "cells_per_eps": args.cells}


def build(cm):
    times, parts = [], []
    for _ in range(args.repeat):
        gc.collect()
        h = msfem.StructuredHierarchy(cm, args.N, 2, "quadrilateral")
        space = msfem.MultiscaleSpace(h, problem, "fe-hmm", parameters=params)
        cm.barrier()
        t0 = time.perf_counter()
        space.build()
        times.append(cm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        m = space.method
        parts.append((m.timings["micro assembly"], m.timings["micro solve"],
                      m.micro_problems))
    return float(np.median(times)), parts[-1], space


t_off, (t_asm, t_sol, n_micro), space = build(comm)
# the floor: factorise + solve the reduced matrix of one sampling domain, same options
micro = space.method._micro  # noqa: SLF001 (benchmark: the method's own micro domains)
micro.effective(np.array([[0.5, 0.5]]), lambda k: "benchmark")
data, indptr, indices, size, rhs, m = micro.last  # the batch's reduced system
A_red = sp.csr_matrix((data, indices, indptr), shape=(size, size))
A, rhs = A_red[:m, :m], rhs[:m]  # its first domain's block
A = A.tocsr()
A.sort_indices()
mat = PETSc.Mat().createAIJ(A.shape, csr=(A.indptr, A.indices, A.data), comm=MPI.COMM_SELF)
solver = DirichletSolver(symmetric=True, prefix="bench_micro_")
solver.set_operator(mat)
floors = []
for _ in range(20):
    t0 = time.perf_counter()
    solver.set_operator(mat, same_pattern=True)
    solver.solve(rhs)
    floors.append(time.perf_counter() - t0)
floor = comm.allreduce(float(np.median(floors)), op=MPI.MAX)
per = t_off / max(n_micro, 1)
speedup = None
if comm.size > 1:
    t_one = None
    if comm.rank == 0:
        t_one = build(MPI.COMM_SELF)[0]
    t_one = comm.bcast(t_one, root=0)
    speedup = t_one / t_off
if comm.rank == 0:
    print(f"FE-HMM, {args.N}x{args.N} coarse Q1, 4 Gauss points per cell, delta = "
          f"{args.delta} eps, {args.cells} micro cells per eps ({A.shape[0]} micro unknowns), "
          f"{comm.size} rank(s)")
    print(f"  micro problems on rank 0: {n_micro}; offline {t_off:.3f} s = "
          f"{1e3 * per:.3f} ms per micro problem")
    print(f"    assemble (move, re-sample, assemble, reduce): "
          f"{1e3 * t_asm / n_micro:.3f} ms; factorise + solve + E: "
          f"{1e3 * t_sol / n_micro:.3f} ms")
    print(f"  floor (one factorisation + solve of the same micro matrix): "
          f"{1e3 * floor:.3f} ms")
    print(f"  time per micro problem / floor = {per / floor:.2f}")
    if speedup is not None:
        print(f"  offline speed-up 1 -> {comm.size} ranks: {speedup:.2f}")
