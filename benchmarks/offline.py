"""MsFEM offline/online speed, printed as ratios measured in this one run.

    mpiexec -n 2 python benchmarks/offline.py [--N 32 --M 16]      (2 ranks: also speed-up)
    python benchmarks/offline.py --N 64 --M 32                     (the issue's size)

* offline overhead  = offline wall time / time PETSc spends factorising and solving the
  same patch matrices (everything else: patch assembly, boundary data, combination);
* offline speed-up  = offline time of the whole problem on one rank (COMM_SELF on rank 0)
  / offline time on COMM_WORLD (needs >= 2 ranks);
* online speed-up   = fine CG+GAMG solve / (coarse assemble + solve + reconstruct);
* total ratio       = (offline + online) / fine solve.
"""

import argparse
import time

from mpi4py import MPI

import msfem

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=32, help="coarse cells per direction")
parser.add_argument("--M", type=int, default=16, help="fine cells per coarse cell")
parser.add_argument("--eps", type=float, default=None, help="default: H/2")
parser.add_argument("--quadrature-degree", type=int, default=4)
parser.add_argument("--variants", nargs="+", default=["linear", "oscillatory", "oversampling"])
args = parser.parse_args()
comm = MPI.COMM_WORLD
eps = args.eps or 1.0 / (2 * args.N)
problem = msfem.diffusion(msfem.HouWu(eps=eps), f=-1.0, quadrature_degree=args.quadrature_degree)


def run(c, variant, layers):
    hier = msfem.StructuredHierarchy(c, args.N, args.M, "quadrilateral")
    space = msfem.MultiscaleSpace(hier, problem, variant, layers).build()
    sol = msfem.solve_coarse(space)
    sol.reconstruct()
    online = sol.timings["coarse_assemble"] + sol.timings["coarse_solve"] + \
        sol.timings["reconstruct"]
    petsc = c.allreduce(space.timings["local_petsc"], op=MPI.SUM)
    work = c.allreduce(space.timings["offline_rank"], op=MPI.SUM)
    return hier, space.timings["offline"], work / petsc, online


hier0 = msfem.StructuredHierarchy(comm, args.N, args.M, "quadrilateral")
msfem.solve_fine(hier0.fine, problem)  # JIT warm-up
t = time.perf_counter()
fine = msfem.solve_fine(hier0.fine, problem)
t_fine = time.perf_counter() - t
if comm.rank == 0:
    print(f"Hou-Wu eps={eps:.4g}, {args.N}x{args.N} coarse cells x {args.M}x{args.M} fine, "
          f"{fine.num_dofs} fine dofs, {comm.size} rank(s); fine CG+GAMG {t_fine:.2f} s")
for variant in args.variants:
    layers = 1 if variant in ("oversampling", "petrov-galerkin") else 0
    run(comm, variant, layers)  # warm-up (JIT of the patch forms)
    _, t_off, overhead, t_on = run(comm, variant, layers)
    line = (f"  {variant:13s} offline {t_off:7.2f} s  overhead (offline/PETSc) {overhead:5.2f}  "
            f"online {t_on:6.3f} s  fine/online {t_fine / t_on:7.1f}x  "
            f"(offline+online)/fine {(t_off + t_on) / t_fine:5.2f}")
    if comm.size > 1:
        t_serial = None
        if comm.rank == 0:
            _, t_serial, _, _ = run(MPI.COMM_SELF, variant, layers)
        t_serial = comm.bcast(t_serial, root=0)
        line += f"  speed-up 1->{comm.size} ranks {t_serial / t_off:4.2f}"
    if comm.rank == 0:
        print(line, flush=True)
