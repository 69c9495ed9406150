"""MsFEM offline/online speed, printed as ratios measured in this one run.

    python benchmarks/offline.py                       (M = 16 and M = 32, N = 32, 1 rank)
    mpiexec -n 2 python benchmarks/offline.py --M 16   (2 ranks: also the speed-up)

Every time is the median of ``--repeat`` runs (default 3).

* offline / floor  -- the headline: offline wall time over the *floor of the method*, the
  time of one assembly of the fine operator on the same mesh (dolfinx, same form and
  quadrature) plus the fastest available factorisation and solves of the same patch
  matrices (the min over PETSc LU, PETSc Cholesky, both nested dissection, and MUMPS of
  the time spent in PETSc by the offline phase run with that solver, patch by patch or
  batched, whichever is faster);
* offline / PETSc  -- the old ratio: offline over the PETSc factor + solve time of the
  default local solver;
* offline time per coarse element, peak memory (max RSS) after the offline phase per
  coarse element (of the whole process, an upper bound);
* offline speed-up 1 -> n ranks (needs >= 2 ranks): the 1-rank build runs on rank 0
  between the n-rank builds (the other ranks asleep), so slow drifts of the machine's
  speed cancel, and each timed build (n ranks or 1) runs right after an untimed one of
  its kind; next to it the speed-up of the fine assembly itself (the floor's own scaling
  on this machine) and the machine's ceiling: n times the 1-rank time over the
  time of n 1-rank builds of the whole problem running at once, one per rank (no
  communication, no extra work: what shared memory bandwidth, caches and the host leave);
* (offline + online) / fine CG+GAMG solve.
"""

import argparse
import gc
import resource
import time

import msfem  # first: it imports dolfinx_solver before dolfinx
import numpy as np
import dolfinx
import dolfinx.fem.petsc
from _timing import idle_bcast
from mpi4py import MPI

parser = argparse.ArgumentParser()
parser.add_argument("--N", type=int, default=32, help="coarse cells per direction")
parser.add_argument("--M", type=int, nargs="+", default=[16, 32],
                    help="fine cells per coarse cell")
parser.add_argument("--quadrature-degree", type=int, default=4)
parser.add_argument("--variants", nargs="+", default=["linear", "oversampling"])
parser.add_argument("--repeat", type=int, default=3,
                    help="runs of every measurement; the median is reported")
parser.add_argument("--speedup-repeat", type=int, default=9,
                    help="interleaved n-rank / 1-rank builds for the speed-up (median)")
args = parser.parse_args()
comm = MPI.COMM_WORLD
eps = 1.0 / (2 * args.N)
problem = msfem.diffusion(msfem.HouWu(eps=eps), f=-1.0, quadrature_degree=args.quadrature_degree)
SOLVERS = {
    "petsc-lu-nd": {"pc_type": "lu", "pc_factor_mat_solver_type": "petsc",
                    "pc_factor_mat_ordering_type": "nd"},
    "petsc-cholesky-nd": {"pc_type": "cholesky", "pc_factor_mat_solver_type": "petsc",
                          "pc_factor_mat_ordering_type": "nd"},
    "mumps-lu": {"pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
}


def offline(c, hier, variant, options=None, keep=False, batch_size=128):
    """Build the space; return it (``keep``) or only its timings (memory freed first).

    With PETSc ``options`` the local problems are patch factorisations (``local_solver =
    "sparse"``), as the floor counts them; else msfem's default.
    """
    gc.collect()
    layers = 1 if variant in ("oversampling", "petrov-galerkin") else 0
    space = msfem.MultiscaleSpace(hier, problem, variant, layers, petsc_options=options,
                                  batch_size=batch_size, parameters=None if options is None
                                  else {"local_solver": "sparse"})
    space.build()
    if keep:
        return space
    timings = dict(space.timings)
    del space
    gc.collect()
    return timings


def fine_assembly(hier):
    """Wall time of one assembly of the fine operator (max over ranks, median of runs)."""
    V = problem.function_space(hier.fine)
    disc = problem.discretise(V)
    A = dolfinx.fem.petsc.create_matrix(disc.a)
    dolfinx.fem.petsc.assemble_matrix(A, disc.a)  # warm-up (JIT, sparsity)
    times = []
    for _ in range(args.repeat):
        A.zeroEntries()
        hier.comm.barrier()
        t = time.perf_counter()
        dolfinx.fem.petsc.assemble_matrix(A, disc.a)
        A.assemble()
        times.append(hier.comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
    A.destroy()
    return float(np.median(times))


for M in args.M:
    hier = msfem.StructuredHierarchy(comm, args.N, M, "quadrilateral")
    n_cells = hier.num_coarse_cells
    msfem.solve_fine(hier.fine, problem)  # JIT warm-up
    t = time.perf_counter()
    fine = msfem.solve_fine(hier.fine, problem)
    t_fine = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    t_asm = fine_assembly(hier)
    scaling = ""
    if comm.size > 1:  # the floor's own scaling: the fine assembly on one rank, this run
        t_asm1 = None
        if comm.rank == 0:
            t_asm1 = fine_assembly(msfem.StructuredHierarchy(MPI.COMM_SELF, args.N, M,
                                                             "quadrilateral"))
        t_asm1 = idle_bcast(comm, t_asm1)
        scaling = f" (speed-up 1 -> {comm.size} ranks {t_asm1 / t_asm:.2f})"
    if comm.rank == 0:
        print(f"Hou-Wu eps={eps:.4g}, {args.N}x{args.N} coarse cells x {M}x{M} fine, "
              f"{fine.num_dofs} fine dofs, {comm.size} rank(s), quadrature degree "
              f"{args.quadrature_degree}; fine CG+GAMG {t_fine:.2f} s, one fine assembly "
              f"{t_asm:.3f} s{scaling}", flush=True)
    for variant in args.variants:
        offline(comm, hier, variant)  # warm-up (JIT of the patch forms)
        petsc = {}  # per-patch factorisations (batch_size=1) and the batched ones
        sparse = []  # the whole offline phase with those factorisations
        for name, opts in SOLVERS.items():
            for batch in (1, 128):
                t = [offline(comm, hier, variant, {"ksp_type": "preonly", **opts},
                             batch_size=batch) for _ in range(args.repeat)]
                petsc[f"{name}{'' if batch == 1 else '-batched'}"] = float(np.median([
                    comm.allreduce(r["local_petsc"], op=MPI.MAX) for r in t]))
                sparse.append(float(np.median([r["offline"] for r in t])))
        runs, serial = [], []
        h1 = msfem.StructuredHierarchy(MPI.COMM_SELF, args.N, M, "quadrilateral") \
            if comm.size > 1 and comm.rank == 0 else None
        if h1 is not None:
            offline(MPI.COMM_SELF, h1, variant)  # warm-up, as for the n-rank hierarchy
        # n ranks and 1 rank interleaved (the machine drifts); more runs than elsewhere:
        # a busy second core catches the host's own work, so 2-rank builds scatter more
        # every timed build follows an untimed one of the same kind: a rank that slept
        # while rank 0 built alone wakes on a cold (possibly down-clocked) core, and the
        # other hierarchy's build has evicted the caches -- on this VM that made the same
        # n-rank build up to 30 % slower than back to back (linear M=32: 0.85 vs 0.66 s)
        for _ in range(args.speedup_repeat if comm.size > 1 else args.repeat):
            if comm.size > 1:
                offline(comm, hier, variant)
            runs.append(offline(comm, hier, variant))
            if comm.size > 1:
                if comm.rank == 0:
                    offline(MPI.COMM_SELF, h1, variant)
                serial.append(idle_bcast(comm, offline(MPI.COMM_SELF, h1, variant)["offline"]
                                         if comm.rank == 0 else None))
        t_off = float(np.median([r["offline"] for r in runs]))
        ceiling = None
        if comm.size > 1:  # the machine's limit: every rank builds the whole problem at once
            h_all = h1 or msfem.StructuredHierarchy(MPI.COMM_SELF, args.N, M, "quadrilateral")
            offline(MPI.COMM_SELF, h_all, variant)  # (warm-up on the other ranks)
            together = []
            for _ in range(args.repeat):
                comm.barrier()
                together.append(comm.allreduce(
                    offline(MPI.COMM_SELF, h_all, variant)["offline"], op=MPI.MAX))
            together = float(np.median(together))
            ceiling = comm.size * float(np.median(serial)) / together
        t_petsc = float(np.median([comm.allreduce(r["local_petsc"], op=MPI.MAX) for r in runs]))
        if t_petsc == 0.0:  # condensed patches: no PETSc; the default sparse solver's time
            t_petsc = petsc["petsc-cholesky-nd"]
        space = offline(comm, hier, variant, keep=True)
        floor = t_asm + min(petsc.values())
        best = min(petsc, key=petsc.get)
        rss = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, op=MPI.SUM)
        sol = msfem.solve_coarse(space)
        sol.reconstruct()
        t_on = sol.timings["coarse_assemble"] + sol.timings["coarse_solve"] + \
            comm.allreduce(sol.timings["reconstruct"], op=MPI.MAX)
        lines = [
            f"{variant} M={M}: offline / floor = {t_off / floor:.2f}   (offline {t_off:.3f} s, "
            f"floor {floor:.3f} s = assembly {t_asm:.3f} + {best} {petsc[best]:.3f}; "
            f"offline with patch factorisations {min(sparse):.3f} s)",
            f"    offline / PETSc (default local solver) = {t_off / t_petsc:.2f};  offline "
            f"per coarse element {1e3 * t_off / n_cells:.3f} ms;  peak RSS "
            f"{rss / n_cells:.1f} kB per coarse element;  PETSc time by solver "
            + ", ".join(f"{k} {v:.3f}" for k, v in petsc.items()),
            f"    online {t_on:.3f} s;  (offline + online) / fine solve = "
            f"{(t_off + t_on) / t_fine:.2f}",
        ]
        if comm.size > 1:
            pairs = ", ".join(f"{a / r['offline']:.2f}" for a, r in zip(serial, runs))
            lines.append(f"    offline speed-up 1 -> {comm.size} ranks = "
                         f"{float(np.median(serial)) / t_off:.2f}  (run by run: {pairs});  "
                         f"machine ceiling {ceiling:.2f}")
        if comm.rank == 0:
            print("\n".join(lines), flush=True)
