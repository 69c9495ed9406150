"""LOD offline time per coarse element and energy error, next to oversampling MsFEM.

    python benchmarks/lod.py                    (1 rank; the issue's setup)
    mpiexec -n 2 python benchmarks/lod.py       (2 ranks: also the speed-up 1 -> 2 ranks)

Setup (the comparison with gridlod, docs/lod_gridlod.md): -div(a grad u) = 1 on (0,1)^2,
u = 0 on the boundary, Hou--Wu coefficient (P = 1.8, eps = 1/64) sampled at the fine-cell
midpoints (piecewise constant, as gridlod does), 32 x 32 coarse Q1 cells of 16 x 16 fine
cells; relative energy error of the fine-scale LOD solution (1 - Q_k) u_H against the
fine Q1 solution. Every time is the median of ``--repeat`` runs, max over ranks.

Printed: a table with, per method, the offline wall time per coarse element (all local
problems and element data), the coarse assemble + solve time, the relative energy error
and, on >= 2 ranks, the offline speed-up against one rank (the same build on
``COMM_SELF`` of rank 0, interleaved with the n-rank builds of this run, the other ranks
asleep meanwhile). Every build after one warm-up build on the same hierarchy.
``ceiling``: the speed-up this machine allows for this work -- n times the 1-rank time
over the time of n 1-rank builds of the whole problem running at once, one per rank (no
communication, no extra work: what shared memory bandwidth, caches and the host leave).
"""

import argparse
import gc
import time

import msfem  # first: it imports dolfinx_solver before dolfinx
import numpy as np
from _timing import idle_bcast
from mpi4py import MPI

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=32, help="coarse cells per direction")
parser.add_argument("--M", type=int, default=16, help="fine cells per coarse cell")
parser.add_argument("--eps", type=float, default=1 / 64)
parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--repeat", type=int, default=3)
parser.add_argument("--symbolic", action="store_true",
                    help="the coefficient at quadrature points instead of cell midpoints")
args = parser.parse_args()
comm = MPI.COMM_WORLD
houwu = msfem.HouWu(eps=args.eps, P=1.8)
a = houwu if args.symbolic else msfem.UserField(houwu.evaluate, eps=args.eps)  # DG0
problem = msfem.diffusion(a, 1.0)
DIRECT = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def build(c, h, name, params):
    """Offline wall time (max over ranks) of one build on hierarchy ``h``; the space."""
    gc.collect()
    space = msfem.MultiscaleSpace(h, problem, name, parameters=params)
    c.barrier()
    t0 = time.perf_counter()
    space.build()
    return c.allreduce(time.perf_counter() - t0, op=MPI.MAX), space


cases = [("oversampling", {"oversampling": 1})] + [("lod", {"layers": k}) for k in args.layers]
h = msfem.StructuredHierarchy(comm, args.N, args.M, "quadrilateral")
h1 = msfem.StructuredHierarchy(MPI.COMM_SELF, args.N, args.M, "quadrilateral") \
    if comm.size > 1 and comm.rank == 0 else None
rows = []
for name, params in cases:
    build(comm, h, name, params)  # warm-up: JIT, patch meshes of this hierarchy
    if h1 is not None:
        build(MPI.COMM_SELF, h1, name, params)
    times, serial = [], []
    for _ in range(args.repeat):  # n ranks and 1 rank interleaved: the machine drifts
        t, space = build(comm, h, name, params)
        times.append(t)
        if comm.size > 1:  # the same build on one rank (the others asleep)
            serial.append(idle_bcast(comm, build(MPI.COMM_SELF, h1, name, params)[0]
                                     if comm.rank == 0 else None))
    t_off = float(np.median(times))
    ceiling = float("nan")
    if comm.size > 1:  # the machine's own limit: every rank builds the whole problem at once
        h_all = h1 or msfem.StructuredHierarchy(MPI.COMM_SELF, args.N, args.M, "quadrilateral")
        build(MPI.COMM_SELF, h_all, name, params)  # (warm-up on the other ranks)
        comm.barrier()
        together = comm.allreduce(build(MPI.COMM_SELF, h_all, name, params)[0], op=MPI.MAX)
        ceiling = comm.size * float(np.median(serial)) / together
    fine = msfem.solve_fine(h.fine, problem, petsc_options=DIRECT)
    sol = msfem.solve_coarse(space)
    err = sol.errors(fine.u)["energy_rel"]
    t_on = sol.timings["coarse_assemble"] + sol.timings["coarse_solve"]
    speedup = float(np.median(serial)) / t_off if serial else float("nan")
    label = name if name != "lod" else f"lod k={params['layers']}"
    pairs = ", ".join(f"{a / b:.2f}" for a, b in zip(serial, times))
    rows.append((label, 1e3 * t_off / args.N**2, t_on, err, speedup, ceiling, pairs))
    del space, sol, fine
    gc.collect()

if comm.rank == 0:
    coef = "quadrature points" if args.symbolic else "cell midpoints (DG0)"
    print(f"LOD benchmark: N = {args.N}, M = {args.M}, eps = {args.eps:g}, coefficient at "
          f"{coef}, {comm.size} rank(s), median of {args.repeat}")
    print(f"{'method':16s} {'offline ms/element':>19s} {'online s':>9s} {'energy err':>11s}"
          f" {'speed-up 1->' + str(comm.size):>14s} {'ceiling':>8s}")
    for label, ms, t_on, err, s, ceil, pairs in rows:
        print(f"{label:16s} {ms:19.2f} {t_on:9.3f} {err:11.3e} {s:14.2f} {ceil:8.2f}"
              + (f"   (run by run: {pairs})" if pairs else ""))
