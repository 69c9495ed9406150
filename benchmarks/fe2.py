"""FE² against a direct numerical simulation (DNS) as eps decreases; cost per iteration.

    python benchmarks/fe2.py [--N 16] [--eps 4 8 16 32 64] [--json docs/fe2/results.json]

Setup: nonlinear diffusion -div q(grad u) = f on (0,1)^2, u = 0 on the boundary, f = 20,
q = a(y)(1 + beta |g|^2) g with the laminate a = 1 / 10 (layers normal to x1, fraction 1/2,
beta = 1), 2 load steps. FE²: N x N macro Q1 cells, 2 x 2 Gauss points, 8 x 8 micro cells
on the unit cell (independent of eps). DNS: the eps-problem on the fine mesh with 8 cells
per eps (M = 8 / (eps N) fine cells per macro cell), SNES Newton + MUMPS
(msfem.fe2.dns.solve_dns).

Printed: the relative L2 distance ||u_eps - u_H|| / ||u_eps|| per eps and its fitted rate
(expected ~1 until the macro discretisation error O(H^2) takes over); the FE² cost per
macro Newton iteration split into micro solves / tangent (sensitivity solves, C, element
and global assembly) / macro solve; the DNS time per eps and the speed-up of FE² over the
DNS at the smallest eps. Times are wall seconds, max over ranks.
"""

import argparse
import json
import time
from pathlib import Path

import msfem  # first: it imports dolfinx_solver before dolfinx
import dolfinx
import numpy as np
import ufl
from mpi4py import MPI

from msfem.fe2 import FE2, create_law
from msfem.fe2.dns import solve_dns

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=16, help="macro cells per direction")
parser.add_argument("--eps", type=int, nargs="+", default=[4, 8, 16, 32, 64],
                    help="1/eps values")
parser.add_argument("--micro", type=int, default=8, help="micro cells per direction")
parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
args = parser.parse_args()
comm = MPI.COMM_WORLD
law = create_law("nonlinear-diffusion", {"a1": 1.0, "a2": 10.0, "beta": 1.0})
LOAD, STEPS = 20.0, 2


def say(*a):
    if comm.rank == 0:
        print(*a, flush=True)


def l2(expr):
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * ufl.dx))
    return float(np.sqrt(comm.allreduce(local, op=MPI.SUM)))


# FE²: the macro solution does not depend on eps (scale separation): solve it once
h0 = msfem.StructuredHierarchy(comm, args.N, 1, "quadrilateral")
comm.barrier()
t0 = time.perf_counter()
fe2 = FE2(h0, law, load=LOAD, micro_cells=args.micro, steps=STEPS)
result = fe2.solve()
t_fe2 = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
iterations = [t for s in result.steps for t in s["timings"]]
per_iteration = {k: float(np.mean([t[k] for t in iterations])) for k in iterations[0]}
say(f"FE2: {args.N}x{args.N} macro cells, {int(comm.allreduce(fe2.n_points))} macro points, "
    f"{args.micro}x{args.micro} micro cells, {comm.size} rank(s): {t_fe2:.2f} s, "
    f"{len(iterations)} macro iterations, {result.micro_solves} micro solves")
say("  residuals per step: " + " | ".join(
    ", ".join(f"{r:.1e}" for r in s["residuals"]) for s in result.steps))
say(f"  per macro iteration: micro {per_iteration['micro']:.3f} s, tangent "
    f"{per_iteration['tangent']:.3f} s, macro solve {per_iteration['macro_solve']:.4f} s; "
    f"Hill-Mandel max {result.hill_mandel_max:.1e}")

rows = []
for inv_eps in args.eps:
    M = 8 * inv_eps // args.N
    if M < 1 or 8 * inv_eps % args.N:
        say(f"skip 1/eps = {inv_eps}: 8/eps must be a multiple of N")
        continue
    h = msfem.StructuredHierarchy(comm, args.N, M, "quadrilateral")
    dns = solve_dns(h, law, 1.0 / inv_eps, load=LOAD, steps=STEPS)
    V = dns.u.function_space
    uH = dolfinx.fem.Function(V)
    cells = np.arange(V.mesh.topology.index_map(2).size_local, dtype=np.int32)
    uH.interpolate_nonmatching(result.U, cells, dolfinx.fem.create_interpolation_data(
        V, result.U.function_space, cells))
    error = l2((dns.u - uH) ** 2) / l2(dns.u ** 2)
    dofs = V.dofmap.index_map.size_global
    rows.append({"inv_eps": inv_eps, "fine_dofs": dofs, "l2_rel": error,
                 "dns_seconds": dns.seconds, "dns_newton": dns.iterations})
    say(f"1/eps = {inv_eps:3d}: DNS {dofs:7d} dofs, {dns.seconds:7.2f} s (Newton "
        f"{dns.iterations}), ||u_eps - u_H|| / ||u_eps|| = {error:.4e}")

eps = np.array([1.0 / r["inv_eps"] for r in rows])
err = np.array([r["l2_rel"] for r in rows])
rate = float(np.polyfit(np.log(eps), np.log(err), 1)[0]) if len(rows) > 1 else float("nan")
first = float(np.polyfit(np.log(eps[:3]), np.log(err[:3]), 1)[0]) if len(rows) > 2 else rate
speedup = rows[-1]["dns_seconds"] / t_fe2 if rows else float("nan")
say(f"fitted rate in eps: {rate:.2f} (all), {first:.2f} (three largest eps)")
say(f"speed-up of FE2 over the DNS at 1/eps = {rows[-1]['inv_eps'] if rows else '-'}: "
    f"{speedup:.2f}")
if args.json is not None and comm.rank == 0:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "N": args.N, "micro_cells": args.micro, "ranks": comm.size, "fe2_seconds": t_fe2,
        "fe2_per_iteration": per_iteration, "fe2_residuals": [s["residuals"]
                                                              for s in result.steps],
        "hill_mandel_max": result.hill_mandel_max, "micro_solves": result.micro_solves,
        "rows": rows, "rate": rate, "rate_three_largest": first, "speedup": speedup,
    }, indent=1) + "\n")
