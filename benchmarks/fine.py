"""Fine-solver speed: assembly and solve time per million dofs, GAMG-CG vs MUMPS.

    python benchmarks/fine.py [--n 512]        (or under mpiexec -n 2)

Prints ratios measured in this one run (no absolute targets are asserted anywhere).
"""

import argparse
import time

from mpi4py import MPI

import msfem
from msfem.solvers import DIRECT_OPTIONS

parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, default=512, help="fine cells per direction")
parser.add_argument("--eps", type=float, default=1 / 32)
args = parser.parse_args()
comm = MPI.COMM_WORLD
hier = msfem.StructuredHierarchy(comm, args.n // 16, 16, "quadrilateral")
problem = msfem.diffusion(msfem.HouWu(eps=args.eps), f=-1.0)
msfem.solve_fine(hier.fine, problem)  # warm-up: JIT compilation
t = time.perf_counter()
gamg = msfem.solve_fine(hier.fine, problem)
t_gamg = time.perf_counter() - t
t = time.perf_counter()
mumps = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS)
t_mumps = time.perf_counter() - t
mdofs = gamg.num_dofs / 1e6
if comm.rank == 0:
    print(f"fine Q1 Hou-Wu problem: {gamg.num_dofs} dofs on {comm.size} rank(s)")
    print(f"  assembly          : {gamg.t_assemble / mdofs:8.3f} s per million dofs")
    print(f"  CG+GAMG solve     : {gamg.t_solve / mdofs:8.3f} s per million dofs "
          f"({gamg.iterations} iterations, rtol 1e-12)")
    print(f"  MUMPS solve       : {mumps.t_solve / mdofs:8.3f} s per million dofs")
    print(f"  ratio GAMG-CG / MUMPS solve time: {gamg.t_solve / mumps.t_solve:.3f}")
    print(f"  ratio total (assemble+solve) GAMG / MUMPS: {t_gamg / t_mumps:.3f}")
