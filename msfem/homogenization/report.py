r"""Output of ``msfem homogenize`` and ``msfem rve``: tables, JSON summaries, CSV, figure.

Formatting only -- every number is computed by :mod:`~msfem.homogenization.cell`,
:mod:`~msfem.homogenization.verification` and :mod:`~msfem.homogenization.rve`. The RVE
summary states the relative precision :math:`\varepsilon_{rel} = 2D(V)/(\bar Z\sqrt n)`
per window size and boundary condition, the RVE sizes (first window meeting the
precision, and the extrapolation of the variance law,
:func:`~msfem.homogenization.rve.fit_rve_size`), Huet's ordering
:math:`\bar Z^{KUBC} \ge \bar Z^{PBC} \ge \bar Z^{SUBC}` and the bounds of a two-phase
isotropic medium (Voigt, Reuss, Hashin--Shtrikman, and Dykhne's :math:`\sqrt{ab}` at
fraction 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from msfem.homogenization import bounds
from msfem.homogenization.rve import RVEStudy, fit_rve_size
from msfem.homogenization.schema import RVESpec
from msfem.io import json_safe

__all__ = [
    "format_table",
    "plain",
    "rve_csv",
    "rve_figure",
    "rve_summary",
]

_BC_LABELS = {"kubc": "KUBC", "pbc": "PBC", "subc": "SUBC", "mixed": "mixed"}


def plain(value: Any) -> Any:
    """JSON types for ``value`` (NumPy to lists/floats, non-finite floats to ``None``)."""
    return json_safe(value, nonfinite_to_none=True)


def _g(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_g(v, digits)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_g(v, digits) for v in value) + "]"
    return f"{value:.{digits}g}"


_BOUND_LABELS = {"voigt": "Voigt (arithmetic)", "reuss": "Reuss (harmonic)",
                 "hashin_shtrikman": "Hashin-Shtrikman"}
_REFERENCE_LABELS = {"laminate": "laminate (exact)", "dykhne": "Dykhne sqrt(a1 a2)",
                     "perrins": "Perrins et al. 1979", "hill_equal_shear": "Hill equal shear"}


def format_table(summary: Mapping[str, Any]) -> str:
    """The readable report of :func:`~msfem.homogenization.cli.homogenize` (no ``--json``)."""
    s = summary
    mesh = s["mesh"]
    frac = s["volume_fraction"]
    lines = [f"msfem homogenize {s['config_file']}",
             f"  {s['physics']}, {s['microstructure']}: {mesh['description']}, "
             f"P{mesh['degree']} ({mesh['num_dofs']} dofs), {s['ranks']} rank(s), "
             f"{s['runtime_s']:.3g} s"]
    if frac["requested"] is not None:
        lines.append(f"  phases {_g(s['phases'])}; fraction of phase 2: "
                     f"{_g(frac['requested'])} (on the mesh {_g(frac['mesh'])})")
    notation = s["notation"]
    for label, key in (("effective tensor (energy)", "effective_tensor"),
                       ("flux tensor", "flux_tensor")):
        rows = np.asarray(s[key])
        lines.append(f"\n  {label}, {notation}:")
        lines += ["    [" + "  ".join(f"{v:12.6g}" for v in row) + " ]" for row in rows]
    lines.append(f"  energy-flux defect {s['energy_flux_defect']:.3g}")
    if "effective_scalar" in s:
        lines.append(f"  tr(A*)/2 = {s['effective_scalar']:.6g}, eigenvalues "
                     f"{_g(s['eigenvalues'])}")
    if "moduli" in s:
        lines.append(f"  moduli: {_g(s['moduli'])}")
    lines.append(f"\n  {'bound':<26}{'value':<40}violation")
    for key, value in s["bounds"].items():
        viols = [v for k, v in s["bound_violations"].items() if k.startswith(key)]
        status = ("inside" if max(viols) == 0 else f"outside by {max(viols):.2e}") if viols \
            else "(not checked)"
        lines.append(f"  {_BOUND_LABELS.get(key, key):<26}{_g(value):<40}{status}")
    if s["reference"]:
        lines.append(f"\n  {'reference':<26}{'value':<40}rel. difference")
        for key, r in s["reference"].items():
            value = r["value"]
            if isinstance(value, (list, np.ndarray)):
                value = np.diag(np.asarray(value)).tolist()
            lines.append(f"  {_REFERENCE_LABELS.get(key, key):<26}{_g(value):<40}"
                         f"{r['relative_error']:.2e}")
    for note in s["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def rve_summary(spec: RVESpec, study: RVEStudy, cfg: Mapping[str, Any],
                config_path: Path) -> dict[str, Any]:
    r"""The JSON summary of ``msfem rve`` (``rve.json``).

    Per boundary condition: :math:`\bar Z`, :math:`D(V)`, :math:`\varepsilon_{rel}`, the
    RVE size and its extrapolation (:func:`~msfem.homogenization.rve.fit_rve_size`), the
    largest Hill--Mandel residual; per window size, whether Huet's ordering
    :math:`\bar Z^{KUBC} \ge \bar Z^{PBC} \ge \bar Z^{SUBC}` holds (to 1e-10 relative);
    and the two-phase bounds of the configured phases and fraction.
    """
    a, b = spec.values
    f = spec.fraction
    lo, hi = bounds.hashin_shtrikman(a, b, f, dim=2)
    refs = {"voigt": bounds.voigt(a, b, f), "reuss": bounds.reuss(a, b, f),
            "hashin_shtrikman": [lo, hi]}
    if f == 0.5:
        refs["effective_dykhne"] = math.sqrt(a * b)
    per_bc = {bc: {"mean": study.mean[bc], "std": study.std[bc],
                   "eps_rel": study.relative_error[bc], "rve_size": study.rve_size[bc],
                   "rve_size_fit": fit_rve_size(study, bc),
                   "hill_mandel_residual": study.hill_mandel_residual[bc]}
              for bc in spec.bcs}
    order = [bc for bc in ("kubc", "pbc", "subc") if bc in spec.bcs]
    ordered = [bool(all(study.mean[u][s] >= study.mean[v][s] - 1e-10 * abs(study.mean[u][s])
                        for u, v in zip(order, order[1:])))
               for s in range(len(study.window_sizes))]
    return {
        "command": "rve",
        "config_file": str(config_path),
        "quantity": "tr(A_app)/2 (apparent conductivity)",
        "window_sizes": study.window_sizes,
        "realisations": study.n_realisations,
        "precision": study.precision,
        "rve_size": {bc: study.rve_size[bc] for bc in spec.bcs},
        "bcs": per_bc,
        "ordering_kubc_ge_pbc_ge_subc": ordered,
        "reference": refs,
        "config": cfg,
    }


def rve_csv(spec: RVESpec, study: RVEStudy) -> str:
    """``rve.csv``: one row ``window, bc, mean, std, eps_rel, n`` per window size and bc."""
    lines = ["window,bc,mean,std,eps_rel,n"]
    for s, size in enumerate(study.window_sizes):
        for bc in spec.bcs:
            lines.append(f"{int(size)},{bc},{study.mean[bc][s]:.12g},{study.std[bc][s]:.12g},"
                         f"{study.relative_error[bc][s]:.12g},{study.n_realisations}")
    return "\n".join(lines) + "\n"


def rve_figure(spec: RVESpec, study: RVEStudy, summary: Mapping[str, Any], out: Path) -> None:
    """Apparent conductivity (mean ± std) and ε_rel against L/ℓ; PNG and PDF in ``out``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    sizes = study.window_sizes.astype(float)
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax, ax_err = fig.subplots(1, 2)
    shift = {bc: 1.0 + 0.025 * (i - (len(spec.bcs) - 1) / 2) for i, bc in enumerate(spec.bcs)}
    for i, bc in enumerate(spec.bcs):
        label = _BC_LABELS.get(bc, bc)
        ax.errorbar(sizes * shift[bc], study.mean[bc], yerr=study.std[bc], marker="o", ms=4,
                    capsize=3, color=f"C{i}", label=f"{label} (mean ± std)")
        ax_err.loglog(sizes, study.relative_error[bc], marker="o", ms=4, color=f"C{i}",
                      label=label)
    ref = summary["reference"]
    lo, hi = ref["hashin_shtrikman"]
    ax.axhspan(lo, hi, color="0.85", alpha=0.5, lw=0, label="Hashin-Shtrikman bounds")
    ax.axhline(ref["voigt"], color="0.4", ls=":", lw=1, label="Voigt")
    ax.axhline(ref["reuss"], color="0.4", ls="-.", lw=1, label="Reuss")
    if "effective_dykhne" in ref:
        ax.axhline(ref["effective_dykhne"], color="k", lw=1.2,
                   label=r"effective $\sqrt{ab}$ (Dykhne)")
    ax_err.axhline(study.precision, color="k", ls="--", lw=1,
                   label=rf"precision {study.precision:g}")
    for axis in (ax, ax_err):
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{int(s)}" for s in sizes])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(r"window size $L/\ell$")
        axis.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.set_ylabel(r"apparent conductivity $\mathrm{tr}\,A^{app}/2$")
    ax_err.set_ylabel(r"$\varepsilon_{rel} = 2D(V)/(\bar Z\sqrt{n})$")
    ax.legend(fontsize=7)
    ax_err.legend(fontsize=7)
    a, b = spec.values
    fig.suptitle(f"random checkerboard a = ({a:g}, {b:g}), fraction {spec.fraction:g}, "
                 f"{study.n_realisations} realisations", fontsize=10)
    fig.savefig(out / "rve.png", dpi=150)  # out is the temporary directory: no torn files
    fig.savefig(out / "rve.pdf")
