r"""The atomistic-to-continuum coupling study: writes ``docs/atomistic/report.md`` and figures.

Run ``python -m msfem.atomistic.study [--out docs/atomistic] [--fast]`` (NumPy, one
process; under ``mpiexec`` every rank computes and rank 0 writes). It measures

1. the Cauchy--Born elastic constants from UFL against the lattice Hessian;
2. the patch test: out-of-balance forces of each method in a uniformly strained perfect
   crystal (the ghost forces of energy-based QC);
3. a soft and a stiff bond in a chain, a vacancy in a triangular crystal under uniform
   strain, and a mode-I crack under its K-field: errors of each coupled method against
   the full atomistic reference as the atomistic region of radius R grows, with fitted
   rates (exponential in 1D, :math:`\|e\| \sim e^{-\kappa R/a}`; algebraic in 2D,
   :math:`\|e\| \sim R^{-p}`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from msfem.atomistic.cauchy_born import elastic_constants, lattice_elastic_constants
from msfem.atomistic.coupling import METHODS, deform, patch_test_forces
from msfem.atomistic.problems import DefectProblem, bond_defect_chain, crack, errors, vacancy

LABELS = {"qce": "QCE (energy-based)", "gfc": "GFC (ghost-force corrected)",
          "qnl": "QNL (quasinonlocal)", "blended": "blended (bridging domain)"}


def bond_force(p: DefectProblem) -> float:
    r"""Largest bond force :math:`|\phi'(|Fr|)|` over the neighbour vectors r."""
    R = deform(p.F, p.lattice.neighbour_vectors(p.model.potential.cutoff))
    return float(np.max(np.abs(p.model.potential.first(np.linalg.norm(R, axis=1)))))


def patch_test(p: DefectProblem, radius: float) -> dict[str, Any]:
    """Max out-of-balance force per method at y = FY, relative to a bond force."""
    f0 = bond_force(p)
    out: dict[str, Any] = {}
    for m in METHODS:
        scheme = p.coupled(m, radius)
        g = np.linalg.norm(patch_test_forces(scheme, p.F), axis=1) / f0
        out[m] = {"max": float(g.max()), "forces": g}
        if m != "blended":
            out[m]["nodes"] = scheme.coupling.mesh.nodes
    return out


def sweep(p: DefectProblem, radii: list[float], coarse: int = 3) -> dict[str, Any]:
    """Errors, dofs and times of every method at every radius, plus the reference."""
    t = time.perf_counter()
    ref, rel = p.reference()
    t_ref = time.perf_counter() - t
    rows = []
    for m in METHODS:
        for R in radii:
            t = time.perf_counter()
            sol = p.coupled(m, R, coarse=coarse).solve(p.F)
            dt = time.perf_counter() - t
            rows.append({"method": m, "R": R, "dofs": sol.dofs, "time": dt,
                         "iterations": sol.relaxation.iterations, **errors(p, sol.x)})
    return {"reference": {"dofs": int((~p.fixed).sum() * p.model.dim), "time": t_ref,
                          "iterations": rel.iterations, "atoms": len(p.X)},
            "rows": rows}


def rate(radii: np.ndarray, err: np.ndarray, kind: str, floor: float = 1e-11) -> float:
    """Least-squares rate: exponential (-slope of log e vs R/a) or algebraic (vs log R)."""
    keep = err > floor
    if keep.sum() < 2:
        return float("nan")
    x = radii[keep] if kind == "exp" else np.log(radii[keep])
    return float(-np.polyfit(x, np.log(err[keep]), 1)[0])


def _table(res: dict[str, Any], key: str, kind: str) -> list[str]:
    radii = sorted({r["R"] for r in res["rows"]})
    head = "| method | " + " | ".join(f"R = {R:g}" for R in radii) + " | rate |"
    lines = [head, "|---" * (len(radii) + 2) + "|"]
    for m in METHODS:
        e = np.array([r[key] for r in res["rows"] if r["method"] == m])
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{v:.2e}" for v in e)
                     + f" | {rate(np.array(radii, float), e, kind):.2f} |")
    return lines


def _figures(out: Path, chains: dict[str, Any], plane: dict[str, Any], patch1: dict[str, Any],
             patch2: dict[str, Any], p2: DefectProblem, R_show: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for ax, (name, res) in zip(axes[:2], chains.items(), strict=True):
        for m in METHODS:
            r = [x for x in res["rows"] if x["method"] == m]
            ax.semilogy([x["R"] for x in r], [max(x["max"], 1e-16) for x in r], "o-",
                        label=LABELS[m])
        ax.set(xlabel="atomistic region radius R / a", ylabel="max |x - x*|",
               title=f"chain, {name} bond")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    for ax, (name, res) in zip(axes[2:], plane.items(), strict=True):
        for m in METHODS:
            r = [x for x in res["rows"] if x["method"] == m]
            ax.loglog([x["R"] for x in r], [x["l2_rel"] for x in r], "o-", label=LABELS[m])
        ax.set(xlabel="atomistic region radius R / a", ylabel="‖x − x*‖ / ‖x* − FX‖",
               title=f"triangular crystal, {name}")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fig_error_vs_region.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    for m in ("qce", "gfc", "qnl"):
        x = patch1[m]["nodes"][:, 0] / p2.lattice.spacing
        order = np.argsort(x)
        ax.semilogy(x[order], np.maximum(patch1[m]["forces"][order], 1e-17), ".-",
                    label=LABELS[m])
    ax.set(xlabel="node position X / a", ylabel="|f| / bond force",
           title="patch test, chain (uniform strain 3%)")
    ax.legend(fontsize=8)
    ax = axes[1]
    nodes = patch2["qce"]["nodes"]
    sc = ax.scatter(*nodes.T, c=patch2["qce"]["forces"], s=8, cmap="magma_r")
    fig.colorbar(sc, ax=ax, label="|f| / bond force")
    ax.set_aspect("equal")
    ax.set_title("QCE ghost forces, perfect triangular crystal")
    fig.tight_layout()
    fig.savefig(out / "fig_ghost_forces.png", dpi=110)
    plt.close(fig)

    ref, _ = p2.reference()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    for ax, m in zip(axes, METHODS, strict=True):
        scheme = p2.coupled(m, R_show)
        sol = scheme.solve(p2.F)
        e = np.linalg.norm(sol.x - ref, axis=1)
        window = 12 * p2.lattice.spacing
        show = np.all(np.abs(p2.X) <= window, axis=1)
        mesh = scheme.coupling.mesh
        ax.triplot(mesh.nodes[:, 0], mesh.nodes[:, 1], mesh.cells, lw=0.3, color="0.7")
        sc = ax.scatter(*p2.X[show].T, c=e[show], s=14, cmap="viridis", zorder=3)
        R = R_show * p2.lattice.spacing
        ax.add_patch(plt.Circle((0, 0), R, fill=False, color="r", lw=0.8, zorder=4))
        ax.set_xlim(-window, window)
        ax.set_ylim(-window, window)
        fig.colorbar(sc, ax=ax, fraction=0.046)
        ax.set_aspect("equal")
        ax.set_title(f"{LABELS[m]}, R = {R_show:g}a", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("vacancy: atoms coloured by |x - x*| (central window; mesh in grey, "
                 "atomistic region in red)")
    fig.tight_layout()
    fig.savefig(out / "fig_atoms_error.png", dpi=110)
    plt.close(fig)


def run(out: Path, fast: bool = False) -> dict[str, Any]:
    """Run the study and write ``report.md``, ``results.json`` and figures into ``out``."""
    from msfem._runtime import atomic_directory
    from msfem.atomistic.lattice import chain, triangular
    from msfem.atomistic.potentials import equilibrium_spacing
    from msfem.atomistic.problems import CHAIN_POTENTIAL, TRIANGULAR_POTENTIAL

    comm = MPI.COMM_WORLD
    constants = {}
    for lat0, pot in ((chain(), CHAIN_POTENTIAL), (triangular(), TRIANGULAR_POTENTIAL)):
        lat = lat0.with_spacing(equilibrium_spacing(pot, lat0))
        C_ufl, C_lat = elastic_constants(lat, pot), lattice_elastic_constants(lat, pot)
        constants[lat.name] = {"a": lat.spacing, "C1111": float(C_lat.flat[0]),
                               "C1122": float(C_lat[0, 0, 1, 1]) if lat.dim > 1 else None,
                               "rel_diff": float(np.abs(C_ufl - C_lat).max()
                                                 / np.abs(C_lat).max())}
    patch1 = patch_test(bond_defect_chain(60, scale=1.0, strain=0.03), 3.5)
    patch2 = patch_test(vacancy(10 if fast else 14, empty=False), 3)
    chain_radii = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    chains = {name: sweep(bond_defect_chain(121, scale=s, strain=0.02), chain_radii)
              for name, s in (("soft (0.5)", 0.5), ("stiff (2)", 2.0))}
    p2 = vacancy(14 if fast else 24)
    vac_radii = [2.0, 3.0, 4.0, 6.0] if fast else [2.0, 3.0, 4.0, 6.0, 8.0, 10.0]
    vac = sweep(p2, vac_radii)
    crk = sweep(crack(12 if fast else 16, K=1.0), [3.0, 4.0, 6.0] if fast else
                [3.0, 4.0, 6.0, 8.0])
    results = {"elastic_constants": constants,
               "patch_test": {"chain": {m: v["max"] for m, v in patch1.items()},
                              "triangular": {m: v["max"] for m, v in patch2.items()}},
               "chain": chains, "vacancy": vac, "crack": crk}
    with atomic_directory(out, comm) as tmp:
        if comm.rank == 0:
            _figures(tmp, chains, {"vacancy": vac, "mode-I crack": crk}, patch1, patch2, p2, 4.0)
            (tmp / "results.json").write_text(json.dumps(results, indent=1, default=float))
            (tmp / "report.md").write_text(report(results, p2))
    return results


def report(res: dict[str, Any], p2: DefectProblem) -> str:
    """The Markdown report."""
    c = res["elastic_constants"]
    pt = res["patch_test"]
    lines = [
        "# Atomistic-to-continuum coupling: chain bond defect, 2D vacancy, 2D crack",
        "",
        "Written by `python -m msfem.atomistic.study` (code: `msfem/atomistic/`). Lennard-Jones",
        "pair potential with the C¹ switch of ASE's `LennardJones(smooth=True)`; nearest and",
        "next-nearest neighbours interact (chain: cutoff 2.7σ, switch from 2.3σ; triangular",
        "lattice: cutoff 2.1σ, switch from 1.95σ). Every lattice is at its stress-free spacing.",
        "Methods: energy-based QC (Tadmor, Ortiz & Phillips 1996), ghost-force corrected QC",
        "(Shenoy et al. 1999; solved by Newton as its self-consistent force-based limit — the",
        "published dead-load iteration, `ghost_force_iteration`, reaches the same state to",
        "1e-9 in the tests), quasinonlocal QC",
        "(Shimokawa et al. 2004, bond form of E, Lu & Yang 2006), blended bridging-domain",
        "handshake (Xiao & Belytschko 2004) with per-bond energy blending and Lagrange-",
        "multiplier ties. See the module docstrings for the equations.",
        "",
        "## 1. Cauchy–Born elastic constants",
        "",
        "C = ∂²W/∂F∂F at F = I from UFL (`ufl.diff` twice, compiled `dolfinx.fem.Expression`)",
        "against the bulk second derivative of the atomistic energy under homogeneous",
        "deformation, from the sparse lattice Hessian (mixed differences of blocks: no",
        "surface terms).",
        "",
        "| lattice | a/σ | C₁₁₁₁ | C₁₁₂₂ | max rel. difference |",
        "|---|---|---|---|---|",
    ]
    for name, v in c.items():
        c12 = "—" if v["C1122"] is None else f"{v['C1122']:.6f}"
        lines.append(f"| {name} | {v['a']:.6f} | {v['C1111']:.6f} | {c12} | "
                     f"{v['rel_diff']:.1e} |")
    lines += [
        "",
        "## 2. Patch test (uniformly strained perfect crystal)",
        "",
        "Largest out-of-balance force on any unknown at y = FY, relative to the largest bond",
        "force |φ′(|Fr|)| (chain: 3% strain, atomistic radius 3.5a; triangular crystal:",
        "F = I + [[0.02, 0.005], [0.005, −0.01]], radius 3a).",
        "",
        "| method | chain | triangular |",
        "|---|---|---|",
    ]
    for m in METHODS:
        lines.append(f"| {LABELS[m]} | {pt['chain'][m]:.1e} | {pt['triangular'][m]:.1e} |")
    lines += [
        "",
        "QCE carries ghost forces at the interfaces; the three consistent schemes are at",
        "rounding level.",
        "",
        "![ghost forces](fig_ghost_forces.png)",
        "",
        "## 3. Errors as the atomistic region grows",
        "",
        "Atomistic region: atoms within R of the defect (all of them nodes), coarse nodes on",
        "the sub-lattice of spacing 3a elsewhere, and a layer next to the fixed boundary pad",
        "(chain: 6a, crystal: 2a) treated atomistically by every method (the pad imposes FX while",
        "the relaxed body has a slightly different far-field strain; the boundary layer between",
        "them is not representable by coarse elements). The blended method's α falls from 1 at",
        "R to 0 at R + 2a. Errors against the full atomistic relaxation x* of the same body.",
        "",
    ]
    for name, r in res["chain"].items():
        ref = r["reference"]
        lines += [f"### Chain, {name} bond ({ref['atoms']} atoms, 2% strain)", "",
                  "Max error max_i |x_i − x*_i| (rate κ of e ~ exp(−κR/a), fitted above 1e-11):",
                  "", *_table(r, "max", "exp"), ""]
    ref = res["vacancy"]["reference"]
    lines += [f"### Vacancy, triangular crystal ({ref['atoms']} atoms)", "",
              "Relative l2 error over atoms, ‖x − x*‖ / ‖x* − FX‖ (rate p of e ~ R^(−p)):", "",
              *_table(res["vacancy"], "l2_rel", "alg"), "",
              "Relative max error, max|x − x*| / max|x* − FX|:", "",
              *_table(res["vacancy"], "max_rel", "alg"), "",
              "Energy error (E(x) − E(x*)) / (E(FX) − E(x*)) (the atomistic energy of the",
              "coupled configuration above the minimum, relative to the relaxation energy):", "",
              *_table(res["vacancy"], "energy_rel", "alg"), "",
              "![errors](fig_error_vs_region.png)", "",
              "![atoms coloured by error](fig_atoms_error.png)", ""]
    ref = res["crack"]["reference"]
    lines += [f"### Mode-I crack, triangular crystal ({ref['atoms']} atoms, K = 1)", "",
              "A straight crack (bonds across the plane cut behind the tip, a slit in the mesh)",
              "loaded by the isotropic plane-strain K-field on the pad, with the Cauchy–Born",
              "constants of the crystal. The layer along the crack faces is atomistic in every",
              "coupled model (as along the pad); R is the radius around the tip. Here x* − FX is",
              "the deviation of the atomistic solution from the K-field (a few percent of the",
              "K-field displacement), so the relative errors are relative to a small quantity.", "",
              "Relative l2 error over atoms, ‖x − x*‖ / ‖x* − FX‖:", "",
              *_table(res["crack"], "l2_rel", "alg"), "",
              "Max error max|x − x*| (absolute, units of σ):", "",
              *_table(res["crack"], "max", "alg"), ""]
    rows, ref = res["vacancy"]["rows"], res["vacancy"]["reference"]
    lines += ["### Cost (vacancy)", "",
              f"Atomistic reference: {ref['dofs']} unknowns, {ref['time']:.2f} s "
              f"({ref['iterations']} Newton iterations).", "",
              "| method | R | unknowns | build + solve time [s] |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['R']:g} | {r['dofs']} | {r['time']:.2f} |")
    lines += [
        "",
        "## Findings",
        "",
        "- The Cauchy–Born constants from UFL equal the lattice Hessian's to rounding.",
        "- GFC, QNL and blending pass the patch test; QCE does not, and its error does not",
        "  decrease as the atomistic region grows: the ghost forces sit at the interface",
        "  whatever its radius (Dobson & Luskin, M2AN 43 (2009) 591).",
        "- In the chain the consistent schemes converge exponentially in R (the defect's",
        "  perturbation of a next-nearest-neighbour chain decays exponentially) down to",
        "  rounding; in 2D the vacancy field decays like 1/r and the coarse-graining error of",
        "  the elements next to the interface (~h²|∇²u| ~ h²/R³) sets an algebraic rate.",
        "- At the smallest region (R = 2a, 18 atoms around the vacancy) GFC can be less",
        "  accurate than QCE in the largest body; from R = 3a on every consistent scheme beats",
        "  QCE, whose error stays at the level of the defect displacement itself.",
        "- The blended method is the most accurate at a given R in 2D, but it resolves a",
        "  wider zone (R + overlap + cutoff) and has the most unknowns (atoms, nodes and",
        "  multipliers in the overlap).",
        "- Crack: the consistent schemes converge slowly (the √r K-field is coarse-grained",
        "  by 3a elements right outside R); blending converges fastest because it resolves",
        "  R + overlap + cutoff. QCE again does not converge.",
        "- QCE's 2D error includes the ghost forces at the boundary layer's interface (figure",
        "  of ghost forces, right), which every coupled model has; its error map shows both.",
        "- Cost: at these sizes the coupled models have 3-4 times fewer unknowns than the",
        "  reference but are not faster: building the mesh, interpolation and bond weights in",
        "  Python costs as much as the whole sparse atomistic Newton solve (see",
        "  `benchmarks/atomistic.py`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m msfem.atomistic.study [--out DIR] [--fast]``."""
    parser = argparse.ArgumentParser(prog="python -m msfem.atomistic.study")
    parser.add_argument("--out", default="docs/atomistic", type=Path)
    parser.add_argument("--fast", action="store_true", help="smaller bodies and fewer radii")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    run(args.out, fast=args.fast)
    if MPI.COMM_WORLD.rank == 0:
        print(f"wrote {args.out}/report.md in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
