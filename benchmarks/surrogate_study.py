"""Study: homogenized-linear vs learned law vs FE² on a nonlinear diffusion and a solid.

    python benchmarks/surrogate_study.py [--json docs/surrogate/results.json]
                                         [--png docs/surrogate/error_vs_samples.png]

For each of ``studies/surrogate_nonlinear_diffusion.toml`` and
``studies/surrogate_neo_hooke.toml`` (FE² configurations with a ``[surrogate]`` section):

* FE² (the reference): an RVE solve at every macro point and Newton iterate;
* homogenized-linear: the law linearised at G = 0, Q = C(0) G (C(0) from one RVE solve);
* the learned law fitted to databases of 8, 16, 32, 64 Sobol' samples over the
  configuration's box (active learning off: the error of the samples alone), and once
  with active learning on from the smallest database.

Prints and stores the relative nodal l2 distance of each macro solution to FE²'s, the
macro Newton iterations, the RVE solves and the wall times (offline: database + fit).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import msfem  # first: it imports dolfinx_solver before dolfinx
import numpy as np
from mpi4py import MPI

from msfem.fe2 import FE2, RVE
from msfem.fe2.rve import MicroResult
from msfem.surrogate import RVEDatabase, SurrogateLaw, SurrogateMicro, build_database
from msfem.surrogate.run import load_config
from msfem.transfer import CoarseGather

ROOT = Path(__file__).resolve().parent.parent
CASES = {"nonlinear diffusion": ROOT / "studies/surrogate_nonlinear_diffusion.toml",
         "neo-Hooke solid": ROOT / "studies/surrogate_neo_hooke.toml"}
parser = argparse.ArgumentParser()
parser.add_argument("--samples", type=int, nargs="+", default=[8, 16, 32, 64])
parser.add_argument("--json", type=Path, default=None)
parser.add_argument("--png", type=Path, default=None)
args = parser.parse_args()
comm = MPI.COMM_WORLD


class Linearised:
    """Q = C(0) G: the homogenized law linearised at G = 0 (a MicroModel)."""

    size, solves, t_newton = 0, 0, 0.0

    def __init__(self, C0):
        self.C0 = C0

    def solve(self, G, w_hat=None, what=""):
        return MicroResult(Q=self.C0 @ np.ravel(G), C=self.C0, w=np.zeros(0), residuals=[0.0])

    def update(self, gradients, what):
        pass


def run(cfg, micro=None):
    m = cfg.mesh
    h = msfem.StructuredHierarchy(comm, m.N, m.M, m.cell, lower=m.lower, upper=m.upper)
    fe2 = FE2(h, cfg.law(), load=cfg.problem.load, dirichlet=cfg.dirichlet(h.lower, h.upper),
              params=cfg.fe2.solver_parameters(), micro=micro)
    t = time.perf_counter()
    result = fe2.solve()
    wall = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    return fe2, result, wall


def distance(a, b, n):
    d = comm.allreduce(float(np.sum((a.x.array[:n] - b.x.array[:n]) ** 2)))
    return float(np.sqrt(d / comm.allreduce(float(np.sum(b.x.array[:n] ** 2)))))


def newton(result):
    return [len(s["residuals"]) - 1 for s in result.steps]


out = {}
for name, path in CASES.items():
    cfg = load_config(path)
    s = cfg.surrogate
    run(cfg)  # warm-up
    fe2, ref, t_ref = run(cfg)
    n = fe2.space.size_local
    vec = ref.U.x.petsc_vec
    G = fe2.gradients(CoarseGather(vec, list(fe2.cell_dofs))(vec))
    g_lo = comm.allreduce(G.min(axis=0), op=MPI.MIN)
    g_hi = comm.allreduce(G.max(axis=0), op=MPI.MAX)
    m = G.shape[1]
    p = cfg.fe2.solver_parameters()
    rve = RVE(cfg.law(), cfg.mesh.dim, cfg.mesh.cell, p.micro_cells,
              quadrature_degree=p.micro_quadrature_degree)
    C0 = rve.solve(np.zeros(m)).C
    rve.destroy()
    _, lin, t_lin = run(cfg, Linearised(C0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(comm.bcast(tmp, root=0)) / "db.h5"
        for k, samples in enumerate(args.samples):
            t = time.perf_counter()
            build_database(db_path, cfg.law(), cfg.mesh.dim,
                           s.design_only().model_copy(update={"samples": samples}),
                           cell_type=cfg.mesh.cell, micro=p, comm=comm)
            t_db = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
            t = time.perf_counter()
            db = RVEDatabase.read(db_path, comm)
            law = SurrogateLaw.fit(db, degree=s.degree, seed=s.seed)
            t_fit = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
            micro = SurrogateMicro(law, comm=comm, tolerance=s.tolerance)
            _, sur, t_sur = run(cfg, micro)
            rows.append({"samples": samples, "error": distance(sur.U, ref.U, n),
                         "newton": newton(sur), "max_uncertainty": micro.max_uncertainty,
                         "database_seconds": t_db, "fit_seconds": t_fit,
                         "solve_seconds": t_sur})
        # active learning from a fresh smallest database
        db_path.unlink() if comm.rank == 0 else None
        comm.barrier()
        build_database(db_path, cfg.law(), cfg.mesh.dim,
                       s.design_only().model_copy(update={"samples": args.samples[0]}),
                       cell_type=cfg.mesh.cell, micro=p, comm=comm)
        db = RVEDatabase.read(db_path, comm)
        micro = SurrogateMicro(SurrogateLaw.fit(db, degree=s.degree, seed=s.seed), db,
                               comm=comm, tolerance=s.tolerance, active=True,
                               max_new=s.max_new, max_rounds=s.max_rounds)
        _, act, t_act = run(cfg, micro)
        active = {"start_samples": args.samples[0], "added": micro.added,
                  "error": distance(act.U, ref.U, n), "newton": newton(act),
                  "max_uncertainty": micro.max_uncertainty, "solve_seconds": t_act}
        comm.barrier()
    out[name] = {
        "config": str(path.relative_to(ROOT)), "macro_points": int(comm.allreduce(fe2.n_points)),
        "gradient_range": [g_lo.tolist(), g_hi.tolist()],
        "box": [np.broadcast_to(s.lower, (m,)).tolist(), np.broadcast_to(s.upper, (m,)).tolist()],
        "fe2": {"newton": newton(ref), "rve_solves": ref.micro_solves, "seconds": t_ref},
        "linearised": {"error": distance(lin.U, ref.U, n), "seconds": t_lin},
        "surrogate": rows, "active": active}
    if comm.rank == 0:
        r = out[name]
        print(f"{name}: {r['macro_points']} macro points, G in [{np.round(g_lo, 3)}, "
              f"{np.round(g_hi, 3)}]; FE2 {t_ref:.2f} s ({ref.micro_solves} RVE solves, "
              f"Newton {newton(ref)})")
        print(f"  homogenized-linear: error {r['linearised']['error']:.2e}")
        for row in rows:
            print(f"  surrogate {row['samples']:3d} samples: error {row['error']:.2e}, max "
                  f"uncertainty {row['max_uncertainty']:.1e}, Newton {row['newton']}, offline "
                  f"{row['database_seconds'] + row['fit_seconds']:.2f} s, solve "
                  f"{row['solve_seconds']:.3f} s")
        print(f"  active learning from {active['start_samples']}: +{active['added']} samples, "
              f"error {active['error']:.2e}, solve {active['solve_seconds']:.2f} s", flush=True)

if comm.rank == 0 and args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
if comm.rank == 0 and args.png:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (name, r), colour in zip(out.items(), ("C0", "C1")):
        x = [row["samples"] for row in r["surrogate"]]
        ax.loglog(x, [row["error"] for row in r["surrogate"]], "o-", color=colour,
                  label=f"{name}: learned law")
        ax.axhline(r["linearised"]["error"], color=colour, ls="--",
                   label=f"{name}: homogenized-linear")
    ax.set_xlabel("database samples (Sobol')")
    ax.set_ylabel("relative nodal $l^2$ distance to FE$^2$")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=150)
