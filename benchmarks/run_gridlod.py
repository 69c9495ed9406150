"""Reference numbers from gridlod (Hellman & Keil) for the msfem LOD comparison.

Runs gridlod's standard Petrov-Galerkin LOD path, exactly as in
gridlod/test/test_pgexamples.py (lod.computeBasisCorrectors +
lod.computeBasisCoarseQuantities per coarse element, pglod.assembleMsStiffnessMatrix,
coarse solve on the interior coarse nodes), on

    -div(a grad u) = 1 in (0,1)^2,  u = 0 on the boundary,
    a = Hou-Wu (P = 1.8, eps = 1/64) sampled at fine-cell midpoints.

Usage (from /work/gridlod_ref, with the venv):

    venv/bin/python run_gridlod.py --coarse 32 --fine 16 --k 1 2 3 --repeat 3
    venv/bin/python run_gridlod.py --coarse 16 --fine 16 --k 1 2 3 4 16 --repeat 2 --kinf 16
    venv/bin/python run_gridlod.py --merge results_32.json results_16.json \
        --out /work/main/benchmarks/gridlod_results.json

Nothing of gridlod is copied: it is imported from ./gridlod (PYTHONPATH set below).
"""
import os

# One BLAS thread: the machine has 2 shared cores; keep timings serial and comparable.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import gc
import json
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# gridlod's source tree (a checkout of commit 0ed4c09): $GRIDLOD_DIR, else ./gridlod
sys.path.insert(0, os.environ.get("GRIDLOD_DIR", os.path.join(HERE, "gridlod")))

import numpy as np
import scipy

from gridlod import coef, femsolver, fem, interp, lod, pglod, util
from gridlod.world import Patch, World

P_HW = 1.8
EPS = 1.0 / 64


def hou_wu(x, y, eps=EPS, P=P_HW):
    k = 2 * np.pi / eps
    sx, cy, sy = np.sin(k * x), np.cos(k * y), np.sin(k * y)
    return (2 + P * sx) / (2 + P * cy) + (2 + sy) / (2 + P * sx)


def gridlod_commit():
    try:
        return subprocess.check_output(
            ["git", "--git-dir=/work/.mirror/fredrikhellman+gridlod/repo", "rev-parse", "HEAD"],
            text=True).strip()
    except Exception:
        return "unknown"


def solver_name():
    try:
        import sksparse.cholmod  # noqa: F401  (used by gridlod.linalg.schurComplementSolve)
        return "cholmod"
    except ImportError:
        return "scipy-splu"


def setup(N, n):
    NWorldCoarse = np.array([N, N])
    NCoarseElement = np.array([n, n])
    NWorldFine = NWorldCoarse * NCoarseElement
    bc = np.array([[0, 0], [0, 0]])  # 0 = Dirichlet on every face
    world = World(NWorldCoarse, NCoarseElement, bc)
    xt = util.tCoordinates(NWorldFine)  # fine-cell midpoints, x index fastest
    aFine = hou_wu(xt[:, 0], xt[:, 1])
    return world, bc, aFine


def fine_solution(world, bc, aFine, cache):
    """Fine Q1 FEM solution with gridlod's femsolver (f = 1 nodal, fine mass matrix)."""
    if cache and os.path.exists(cache):
        d = np.load(cache)
        return d["u"], float(d["t"])
    fFine = np.ones(world.NpFine)
    t = time.perf_counter()
    uFine, AFine, MFine = femsolver.solveFine(world, aFine, fFine, None, bc)
    t = time.perf_counter() - t
    if cache:
        np.savez(cache, u=uFine, t=t)
    return uFine, t


def offline(world, bc, aFine, k, keep_correctors, measure_kms_only=False):
    """All element correctors + element PG matrices, then the global PG matrix.

    Returns timings and (optionally) patches / correctors for the error computation."""
    tCorr = tCsi = tKmsOnly = 0.0
    patchT, correctorsListT, KmsijT = [], [], []
    tStart = time.perf_counter()
    for TInd in range(world.NtCoarse):
        t0 = time.perf_counter()
        patch = Patch(world, k, TInd)
        IPatch = lambda: interp.L2ProjectionPatchMatrix(patch, bc)
        aPatch = lambda: coef.localizeCoefficient(patch, aFine)
        correctorsList = lod.computeBasisCorrectors(patch, IPatch, aPatch)
        t1 = time.perf_counter()
        csi = lod.computeBasisCoarseQuantities(patch, correctorsList, aPatch)
        t2 = time.perf_counter()
        tCorr += t1 - t0
        tCsi += t2 - t1
        patchT.append(patch)
        KmsijT.append(csi.Kmsij)
        if measure_kms_only:
            # Same T'-loop of gridlod (lod.performTPrimeLoop) but accumulating only
            # Kmsij (no L_T'ij / mu_T' eigenproblems of the error indicator).
            t3 = time.perf_counter()
            Kms2 = np.zeros_like(csi.Kmsij)
            TI = util.convertpCoordIndexToLinearIndex(patch.NPatchCoarse - 1, patch.iElementPatchCoarse)

            def acc(TPrimeInd, TPrimei, P, Q, KTPrime, B, C):
                if TPrimeInd == TI:
                    Kms2[TPrimei, :] += np.dot(P.T, KTPrime * P) - B
                else:
                    Kms2[TPrimei, :] += -B
            lod.performTPrimeLoop(patch, list(world.localBasis.T), correctorsList, aPatch, acc)
            tKmsOnly += time.perf_counter() - t3
            assert np.allclose(Kms2, csi.Kmsij)
        if keep_correctors:
            correctorsListT.append(correctorsList)
        else:
            del correctorsList
    tLoop = time.perf_counter() - tStart - tKmsOnly  # the side measurement is not offline time
    t4 = time.perf_counter()
    KFull = pglod.assembleMsStiffnessMatrix(world, patchT, KmsijT)
    tAsm = time.perf_counter() - t4
    return dict(t_loop=tLoop, t_correctors=tCorr, t_coarse_quantities=tCsi,
                t_kms_only_loop=tKmsOnly if measure_kms_only else None,
                t_assemble_Kms=tAsm, offline_total=tLoop + tAsm), KFull, patchT, correctorsListT


def lod_fine_from_correctors(world, patchT, correctorsListT, xFull):
    """(1 - Q_k) u_H on the fine grid: P u_H - sum_T sum_j u_H(x_j) Q_T lambda_j.

    Same index maps as pglod.assembleBasisCorrectors, but scatter-added (that
    routine builds Python lists of every entry; too much memory at 32x32, k=3)."""
    NWorldCoarse, NCoarseElement = world.NWorldCoarse, world.NCoarseElement
    NWorldFine = NWorldCoarse * NCoarseElement
    TpIndexMap = util.lowerLeftpIndexMap(np.ones_like(NWorldCoarse), NWorldCoarse)
    TpStartIndices = util.lowerLeftpIndexMap(NWorldCoarse - 1, NWorldCoarse)
    corr = np.zeros(world.NpFine)
    for TInd in range(world.NtCoarse):
        patch = patchT[TInd]
        rowsT = (util.convertpCoordIndexToLinearIndex(NWorldFine, patch.iPatchWorldCoarse * NCoarseElement)
                 + util.lowerLeftpIndexMap(patch.NPatchCoarse * NCoarseElement, NWorldFine))
        colsT = TpStartIndices[TInd] + TpIndexMap
        corr[rowsT] += np.column_stack(correctorsListT[TInd]) @ xFull[colsT]
    basis = fem.assembleProlongationMatrix(NWorldCoarse, NCoarseElement)
    return basis * xFull - corr


def run(args):
    N, n = args.coarse, args.fine
    world, bc, aFine = setup(N, n)
    NWorldFine = world.NWorldFine
    AFine = fem.assemblePatchMatrix(NWorldFine, world.ALocFine, aFine)
    MCoarse = fem.assemblePatchMatrix(world.NWorldCoarse, world.MLocCoarse)
    uFine, tFine = fine_solution(world, bc, aFine, os.path.join(HERE, f"ufine_{N}x{n}.npz"))
    energy = lambda v: np.sqrt(v @ (AFine @ v))
    normFine = energy(uFine)
    # I_H u_fine: gridlod's L2ProjectionPatchMatrix on a patch that is the whole world.
    IWorld = interp.L2ProjectionPatchMatrix(Patch(world, int(N), 0), bc)
    IHuFine = IWorld @ uFine
    # nodal values of u_fine at the coarse nodes
    uFineAtCoarse = uFine[util.fillpIndexMap(world.NWorldCoarse, NWorldFine)]
    print(f"[{N}x{N} x {n}^2] fine solve {tFine:.2f}s, |u_fine|_a = {normFine:.6e}", flush=True)

    cases, uLodByK = [], {}
    for k in args.k:
        reps = []
        keep = None
        nrep = 1 if (args.single_repeat_from is not None and k >= args.single_repeat_from) else args.repeat
        for r in range(nrep):
            last = r == nrep - 1
            gc.collect()
            tim, KFull, patchT, corrT = offline(world, bc, aFine, k, keep_correctors=last,
                                                measure_kms_only=(last and args.kms_only))
            # coarse load: (f, lambda_i) with f = 1 (coarse mass matrix x nodal f, as in the example)
            bFull = MCoarse @ np.ones(world.NpCoarse)
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                xFull, _ = pglod.solve(world, KFull, bFull, bc)
                ts.append(time.perf_counter() - t)
            tim["coarse_solve"] = float(np.median(ts))
            tim["loadavg_1min_after"] = os.getloadavg()[0]  # other work shares the 2 cores
            reps.append(tim)
            print(f"  k={k} rep {r}: offline {tim['offline_total']:.2f}s "
                  f"(correctors {tim['t_correctors']:.2f}, coarse quantities {tim['t_coarse_quantities']:.2f}, "
                  f"Kms assembly {tim['t_assemble_Kms']:.3f}) coarse solve {tim['coarse_solve']*1e3:.2f} ms",
                  flush=True)
            if last:
                keep = (KFull, patchT, corrT, xFull)
            else:
                del patchT, corrT
        KFull, patchT, corrT, xFull = keep
        uLod = lod_fine_from_correctors(world, patchT, corrT, xFull)
        checked = None
        nEntries = sum(p.NpFine for p in patchT) * 4
        if nEntries < 12e6:  # cross-check against gridlod's own assembly
            basisCorrectors = pglod.assembleBasisCorrectors(world, patchT, corrT)
            modifiedBasis = fem.assembleProlongationMatrix(world.NWorldCoarse, world.NCoarseElement) - basisCorrectors
            uLod2 = modifiedBasis * xFull
            checked = float(np.max(np.abs(uLod2 - uLod)))
            del basisCorrectors, modifiedBasis
        del patchT, corrT
        gc.collect()
        uLodByK[k] = uLod
        med = lambda key: float(np.median([t[key] for t in reps]))
        dIH = xFull - IHuFine
        case = dict(
            coarse=int(N), fine_per_coarse=int(n), k=int(k), repeats=nrep,
            offline_s_total=med("offline_total"),
            offline_ms_per_element=1e3 * med("offline_total") / world.NtCoarse,
            offline_s_correctors=med("t_correctors"),
            offline_s_coarse_quantities=med("t_coarse_quantities"),
            offline_s_assemble_Kms=med("t_assemble_Kms"),
            offline_s_kms_only_loop_single_run=reps[-1]["t_kms_only_loop"],
            offline_s_total_all_runs=[t["offline_total"] for t in reps],
            loadavg_1min_after_each_run=[t["loadavg_1min_after"] for t in reps],
            coarse_solve_s=med("coarse_solve"),
            energy_error_rel=float(energy(uFine - uLod) / normFine),
            uH_minus_IHufine_rel_l2vec=float(np.linalg.norm(dIH) / np.linalg.norm(IHuFine)),
            uH_minus_IHufine_rel_L2=float(np.sqrt(dIH @ (MCoarse @ dIH)) / np.sqrt(IHuFine @ (MCoarse @ IHuFine))),
            uH_minus_ufine_at_coarse_nodes_rel_l2vec=float(np.linalg.norm(xFull - uFineAtCoarse) / np.linalg.norm(uFineAtCoarse)),
            check_scatter_vs_assembleBasisCorrectors_maxabs=checked,
        )
        cases.append(case)
        print("   ", json.dumps({k2: v for k2, v in case.items() if k2 != "offline_s_total_all_runs"}), flush=True)

    if args.kinf is not None and args.kinf in uLodByK:
        uInf = uLodByK[args.kinf]
        nInf = energy(uInf)
        for c in cases:
            c["localisation_error_rel"] = float(energy(uLodByK[c["k"]] - uInf) / nInf)
            c["k_infinity_reference"] = int(args.kinf)
            c["whole_domain_patch"] = bool(c["k"] >= N)
    return dict(coarse=N, fine_per_coarse=n, fine_solve_s=tFine, fine_energy_norm=float(normFine),
                fine_solver="gridlod.femsolver.solveFine (scipy spsolve / SuperLU)", cases=cases)


def machine_note():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores shared with other work, 1 BLAS thread, serial; "
            f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}; "
            "timings are medians of the repeats and noisy")


TIMING_KEYS = ("offline_s_correctors", "offline_s_coarse_quantities", "offline_s_assemble_Kms",
               "coarse_solve_s")


def merge_cases(cases):
    groups = {}
    for c in cases:
        groups.setdefault((c["coarse"], c["fine_per_coarse"], c["k"]), []).append(c)
    out = []
    for key, cs in groups.items():
        if len(cs) == 1:
            out.append(cs[0])
            continue
        for c in cs[1:]:
            assert abs(c["energy_error_rel"] - cs[0]["energy_error_rel"]) < 1e-12
        m = dict(cs[0])
        allruns = [t for c in cs for t in c["offline_s_total_all_runs"]]
        nt = m["coarse"] ** 2
        m["offline_s_total"] = float(np.median(allruns))
        m["offline_ms_per_element"] = 1e3 * m["offline_s_total"] / nt
        for kk in TIMING_KEYS:
            m[kk] = float(np.mean([c[kk] for c in cs]))
        m["repeats"] = len(allruns)
        m["offline_s_total_all_runs"] = allruns
        m["sessions"] = [{kk: c.get(kk) for kk in ("offline_s_total", "offline_ms_per_element", "offline_s_total_all_runs",
                                                   "loadavg_1min_after_each_run") + TIMING_KEYS} for c in cs]
        m.pop("loadavg_1min_after_each_run", None)
        out.append(m)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coarse", type=int, default=32)
    ap.add_argument("--fine", type=int, default=16)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--single-repeat-from", type=int, default=None, help="run k >= this only once")
    ap.add_argument("--kinf", type=int, default=None, help="k used as u_infinity for the localisation error")
    ap.add_argument("--kms-only", action="store_true", help="also time the Kmsij-only T' loop (last repeat)")
    ap.add_argument("--json", default=None, help="write this run's results here")
    ap.add_argument("--merge", nargs="+", default=None, help="merge run JSONs into --out")
    ap.add_argument("--out", default=None)
    ap.add_argument("--note", action="append", help="free-text note stored in the merged JSON")
    args = ap.parse_args()
    if args.merge:
        runs = [json.load(open(p)) for p in args.merge]
        out = dict(gridlod_commit=gridlod_commit(), solver=solver_name(), machine=machine_note(),
                   problem="-div(a grad u) = 1 on (0,1)^2, u = 0 on boundary; Hou-Wu a, P = 1.8, "
                           "eps = 1/64, piecewise constant at fine-cell midpoints; Q1 coarse/fine",
                   timing_note="A case run in several sessions (separate processes, different "
                               "machine load) is merged: offline_s_total = median over all runs of "
                               "all sessions; the other timings = mean of the session medians; "
                               "per-session values under 'sessions'. Errors are identical across sessions.",
                   cases=merge_cases([c for r in runs for c in r["cases"]]),
                   notes=args.note or [],
                   fine_solves=list({(r["coarse"], r["fine_per_coarse"]): dict(
                       coarse=r["coarse"], fine_per_coarse=r["fine_per_coarse"],
                       fine_solve_s=r["fine_solve_s"], fine_energy_norm=r["fine_energy_norm"],
                       solver=r["fine_solver"]) for r in runs}.values()))
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
        return
    res = run(args)
    res.update(gridlod_commit=gridlod_commit(), solver=solver_name(), machine=machine_note())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
