"""LOD localisation error ‖u_k − u_∞‖_a / ‖u_∞‖_a against the number of layers k.

    python benchmarks/lod_decay.py            (gridlod's 16 x 16 x 16^2 case, ~3 min)
    mpiexec -n 2 python benchmarks/lod_decay.py

The setup of benchmarks/lod.py (Hou--Wu, eps = 1/64, coefficient at the fine-cell
midpoints, f = 1), 16 x 16 coarse cells of 16 x 16 fine cells; u_∞ is Petrov--Galerkin LOD
with whole-domain patches (k = N). Printed per k: the localisation error, the factor by
which the last layer divided it, and the energy error against the fine solution.
"""

import argparse

import msfem  # first: it imports dolfinx_solver before dolfinx
import dolfinx
from mpi4py import MPI

from msfem.norms import energy_norm

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=16)
parser.add_argument("--M", type=int, default=16)
parser.add_argument("--eps", type=float, default=1 / 64)
parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4])
args = parser.parse_args()
comm = MPI.COMM_WORLD
houwu = msfem.HouWu(eps=args.eps, P=1.8)
problem = msfem.diffusion(msfem.UserField(houwu.evaluate, eps=args.eps), 1.0)
h = msfem.StructuredHierarchy(comm, args.N, args.M, "quadrilateral")
fine = msfem.solve_fine(h.fine, problem, petsc_options={
    "ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})


def lod(k):
    space = msfem.MultiscaleSpace(h, problem, "lod", parameters={"layers": k}).build()
    sol = msfem.solve_coarse(space)
    return sol.reconstruct(fine.u.function_space), sol.errors(fine.u)["energy_rel"]


u_inf, e_inf = lod(args.N)
disc = problem.discretise(fine.u.function_space)
norm = energy_norm(disc, u_inf)
rows, last = [], None
for k in args.layers:
    u_k, e_k = lod(k)
    d = dolfinx.fem.Function(fine.u.function_space)
    d.x.array[:] = u_k.x.array - u_inf.x.array
    loc = energy_norm(disc, d) / norm
    rows.append((k, loc, last / loc if last else float("nan"), e_k))
    last = loc
if comm.rank == 0:
    print(f"LOD localisation: N = {args.N}, M = {args.M}, eps = {args.eps:g}, {comm.size} "
          f"rank(s); ideal (k = N) energy error {e_inf:.3e}")
    print(f"{'k':>3s} {'||u_k - u_inf||_a/||u_inf||_a':>30s} {'factor':>7s} {'energy err':>11s}")
    for k, loc, factor, e in rows:
        print(f"{k:3d} {loc:30.3e} {factor:7.1f} {e:11.3e}")
