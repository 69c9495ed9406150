r"""The report of a study: results table, observed rates, figures, published numbers.

Observed rates are least-squares slopes of :math:`\log e` against :math:`\log x` (and the
slope between the two smallest x, the "finest" pair), for every group of rows in which
only x varies:

* :math:`x = H` at fixed :math:`\varepsilon` (Hou--Wu Tables I/III: a negative rate is
  the resonance error :math:`O(\varepsilon/H)` growing as H decreases toward ε),
* :math:`x = \varepsilon` at fixed :math:`H/\varepsilon` (Tables II/IV),
* x = a swept coefficient parameter (e.g. the contrast) at fixed grid.

Figures (PNG for the report, PDF for papers; matplotlib's object API with the Agg canvas,
no global pyplot state) show the same groups on log--log axes; the resonance figure plots
the error against :math:`H/\varepsilon` with the line :math:`H = \varepsilon` marked.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from msfem import _runtime
from msfem.studies.plan import METRICS, Plan, fmt, published_matches

_TABLE_METRICS = ("nodal_linf", "nodal_l2", "l2_rel", "h1_rel", "energy_rel")
_LABELS = {"nodal_linf": r"$\|E\|_\infty$ (nodal)", "nodal_l2": r"$\|E\|_{l^2}$ (nodal)",
           "l2_rel": "rel. $L^2$ error", "h1_rel": "rel. $H^1$ error",
           "energy_rel": "rel. energy error", "l2": "$L^2$ error", "h1": "$H^1$ error",
           "energy": "energy error"}
_XLABELS = {"H_over_eps": r"$H/\varepsilon$", "H": "$H$", "eps": r"$\varepsilon$"}


@dataclass
class Family:
    """Groups of rows in which only ``x`` varies (one line per group in a figure)."""

    name: str
    x: str
    title: str
    groups: dict[str, list[dict[str, Any]]]


def _g(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}"
    return str(value)


def _group(rows: Sequence[Mapping[str, Any]], x: str, fixed: Sequence[str],
           label: Any) -> dict[str, list[dict[str, Any]]]:
    """Group rows equal in ``fixed`` (and in the fine grid NM, else in M) with ≥ 2 x."""
    best: dict[str, list[dict[str, Any]]] = {}
    for grid in ("_NM", "M"):
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in rows:
            if r.get(x) is None:
                continue
            r = dict(r, _NM=r["N"] * r["M"])
            groups.setdefault(tuple(fmt(r.get(k)) for k in (*fixed, grid)), []).append(r)
        out = {}
        for members in groups.values():
            xs = {round(float(m[x]), 12) for m in members}
            if len(xs) >= 2 and len(xs) == len(members):
                out[label(members[0])] = sorted(members, key=lambda m: float(m[x]))
        if len(out) > len(best):
            best = out
    return best


def families(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> list[Family]:
    """Return the families of groups the sweep supports (see the module docstring)."""
    params = list(plan.param_names)
    several_eps = len({_g(r.get("eps")) for r in rows}) > 1

    def name(r):
        ov = r["oversampling"]
        return r["method"] + (f" (os {ov})" if ov != "0" else "")

    def with_params(r, keys):
        extra = [f"{k}={_g(r.get(k))}" for k in keys]
        return name(r) + (", " + ", ".join(extra) if extra else "")

    out = []
    fixed_eps = ["method", "oversampling", "eps", *params]
    def label_eps(r):
        return with_params(r, (["eps"] if several_eps else []) + params)

    res = _group(rows, "H_over_eps", fixed_eps, label_eps)
    if res:
        out.append(Family("resonance", "H_over_eps", "error vs H/ε at fixed ε (resonance)", res))
    by_H = _group(rows, "H", fixed_eps, label_eps)
    if by_H:
        fixed_what = "ε" if any(r.get("eps") is not None for r in rows) else "coefficient"
        out.append(Family("error_vs_H", "H", f"error vs H at fixed {fixed_what}", by_H))
    ratio_rows = [dict(r, _ratio=None if r.get("H_over_eps") is None
                       else round(float(r["H_over_eps"]), 9)) for r in rows]
    fixed_ratio = ["method", "oversampling", "_ratio", *params]
    several_ratio = len({r["_ratio"] for r in ratio_rows}) > 1
    by_eps = _group(ratio_rows, "eps", fixed_ratio,
                    lambda r: with_params(r, params) + (f", H/ε={_g(r['_ratio'])}"
                                                        if several_ratio else ""))
    if by_eps:
        out.append(Family("error_vs_eps", "eps", "error vs ε at fixed H/ε", by_eps))
    fixed_H = ["method", "oversampling", "N", *params]  # scale separation: ε -> 0, H fixed
    by_eps_H = _group(rows, "eps", fixed_H, lambda r: with_params(r, params))
    if by_eps_H and not by_eps:
        out.append(Family("error_vs_eps_fixed_H", "eps", "error vs ε at fixed H "
                          "(scale separation)", by_eps_H))
    for p in params:
        others = [q for q in params if q != p]
        fixed = ["method", "oversampling", "eps", "N", "M", *others]
        several_grids = len({(r["N"], r["M"]) for r in rows}) > 1
        groups = _group(rows, p, fixed, lambda r: with_params(r, others) + (
            f", N={r['N']}, M={r['M']}" if several_grids else ""))
        if groups:
            out.append(Family(f"error_vs_{p}", p, f"error vs {p}", groups))
    return out


def fitted_rate(x: Sequence[float], e: Sequence[float]) -> tuple[float, float]:
    """(least-squares slope of log e vs log x, slope of the two smallest x); NaN if e ≤ 0."""
    xa, ea = np.asarray(x, dtype=float), np.asarray(e, dtype=float)
    if len(xa) < 2 or np.any(~np.isfinite(ea)) or np.any(ea <= 0):
        return math.nan, math.nan
    lx, le = np.log(xa), np.log(ea)
    fit = float(np.polyfit(lx, le, 1)[0])
    order = np.argsort(xa)
    pair = float((le[order[1]] - le[order[0]]) / (lx[order[1]] - lx[order[0]]))
    return fit, pair


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def results_table(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> str:
    """Format the results as a markdown table (3 significant digits)."""
    show_os = any(r["oversampling"] != "0" for r in rows)
    cols = (["method"] + (["oversampling"] if show_os else []) + list(plan.param_names)
            + ["eps", "N", "M", "H_over_eps", *_TABLE_METRICS, "t_offline", "t_online",
               "t_reference"])
    head = [c.replace("H_over_eps", "H/ε").replace("eps", "ε") for c in cols]
    return _markdown_table(head, [[_g(r.get(c)) for c in cols] for r in rows])


def rates_section(plan: Plan, fams: Sequence[Family]) -> str:
    """Tables of observed rates (fit over all points; finest pair in parentheses)."""
    text = []
    for fam in fams:
        if fam.name == "resonance":
            continue  # same groups as error_vs_H
        body = []
        for label, members in fam.groups.items():
            xs = [float(m[fam.x]) for m in members]
            cells = [label, str(len(members)), f"{_g(min(xs))} … {_g(max(xs))}"]
            for metric in plan.metrics:
                fit, pair = fitted_rate(xs, [m[metric] if m[metric] is not None else math.nan
                                             for m in members])
                cells.append("—" if math.isnan(fit) else f"{fit:.2f} ({pair:.2f})")
            body.append(cells)
        xl = {"H": "H", "eps": "ε"}.get(fam.x, fam.x)
        text.append(f"### {fam.title}: rate of e ∝ {xl}^p\n\n" + _markdown_table(
            ["group", "points", xl, *plan.metrics], body))
    if not text:
        return "The sweep has no group in which only H, ε or a coefficient parameter varies.\n"
    return ("Least-squares slope p of log(error) against log(x) over all points of a group; "
            "in parentheses the slope between the two smallest x.\n\n" + "\n".join(text))


def published_section(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> str:
    """Put published numbers beside ours, with the ratio ours/published."""
    pub = plan.published
    if not pub:
        return ""
    keys: list[str] = []
    metrics: list[str] = []
    for p in pub["rows"]:
        for k in p:
            target = metrics if k in METRICS else keys
            if k not in target:
                target.append(k)
    body = []
    for p in pub["rows"]:
        match = next((r for r in rows if published_matches(p, r)), None)
        cells = [_g(p.get(k)) for k in keys]
        for m in metrics:
            ours = None if match is None else match.get(m)
            theirs = p.get(m)
            ratio = (ours / theirs if ours is not None and theirs not in (None, 0) else None)
            cells += [_g(ours), _g(None if theirs is None else float(theirs)),
                      "—" if ratio is None or math.isnan(ratio) else f"{ratio:.3f}"]
        body.append(cells)
    head = keys + [f"{m} {w}" for m in metrics for w in ("ours", "published", "ratio")]
    note = f"\n{pub['note']}\n" if pub.get("note") else ""
    return (f"## Comparison with {pub['source']}\n{note}\nRatio = ours / published.\n\n"
            + _markdown_table(head, body))


def _savefig(fig, path: Path) -> None:
    """Save a figure through a temporary file and a rename (atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, format=path.suffix[1:])
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_family(plan: Plan, fam: Family, out_dir: Path) -> str | None:
    """Log--log figure of one family, one panel per metric; returns the PNG name."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    metrics = list(plan.metrics)
    fig = Figure(figsize=(3.8 * len(metrics) + 2.2, 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    order = [m.name for m in plan.methods]
    methods = sorted({m["method"] for g in fam.groups.values() for m in g},
                     key=lambda n: (order.index(n) if n in order else len(order), n))
    styles = ["-", "--", ":", "-."]
    plotted = False
    for ax, metric in zip(axes, metrics):
        for k, (label, members) in enumerate(fam.groups.items()):
            x = np.array([float(m[fam.x]) for m in members])
            y = np.array([np.nan if m[metric] is None else float(m[metric]) for m in members])
            ok = np.isfinite(y) & (y > 0)
            if ok.sum() < 1:
                continue
            index = methods.index(members[0]["method"])
            color = f"C{index}" if len(methods) <= 10 else \
                matplotlib.colormaps["tab20"](index % 20)
            same = [i for i, (lb, g) in enumerate(fam.groups.items())
                    if g[0]["method"] == members[0]["method"]]
            ax.loglog(x[ok], y[ok], marker="o", ms=4, color=color,
                      linestyle=styles[same.index(k) % len(styles)], label=label)
            plotted = True
        if fam.x == "H_over_eps":
            ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
        ticks = sorted({float(m[fam.x]) for g in fam.groups.values() for m in g})
        if len(ticks) <= 8:
            ax.set_xticks(ticks, [_g(t) for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(_XLABELS.get(fam.x, fam.x))
        ax.set_ylabel(_LABELS[metric])
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    if not plotted:
        return None
    legend: dict[str, Any] = {}  # every curve once (a panel may miss NaN metrics)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=7)
    fig.suptitle(f"{plan.name}: {fam.title}", fontsize=10)
    png = out_dir / f"fig_{fam.name}.png"
    _savefig(fig, png)
    _savefig(fig, png.with_suffix(".pdf"))
    return png.name


def runs_line(runs: Sequence[Mapping[str, Any]]) -> str:
    """One line on the wall time and peak memory of the invocations that computed the rows."""
    if not runs:
        return ""
    seconds = sum(float(r["seconds"]) for r in runs)
    peak = max(float(r["peak_memory_gb"]) for r in runs)
    ranks = sorted({int(r["ranks"]) for r in runs})
    parts = (f"{len(runs)} invocations, " if len(runs) > 1 else "")
    return (f"- computed in {seconds / 60:.1f} min wall time ({parts}"
            f"{', '.join(map(str, ranks))} MPI rank{'s' if ranks != [1] else ''}), peak "
            f"resident memory {peak:.2f} GB per rank (max over ranks and invocations)\n")


def build_report(plan: Plan, rows: Sequence[Mapping[str, Any]], out_dir: Path,
                 runs: Sequence[Mapping[str, Any]] = ()) -> str:
    """Build the markdown report (and, with ``figures``, the PNG/PDF figures in ``out_dir``)."""
    study = plan.config.get("study", {})
    ref = (f"fine solve on a grid {plan.reference_factor}× finer than the MsFEM sub-grid"
           if plan.reference == "fine" else
           f"Richardson extrapolation of fine solves {plan.reference_factor}× and "
           f"{2 * plan.reference_factor}× finer than the MsFEM sub-grid")
    ranks = sorted({r["ranks"] for r in rows if r.get("ranks") is not None})
    head = [f"# Study: {plan.name}\n"]
    if study.get("description"):
        head.append(study["description"].strip() + "\n")
    head.append(f"- configuration: `{plan.path.name}` (fingerprint `{plan.fingerprint()}`)\n"
                f"- coefficient: `{plan.config['coefficient']['type']}`, problem: "
                f"`{plan.config.get('problem', {}).get('type', 'diffusion')}`\n"
                f"- reference: {ref}, injected at the shared lattice nodes\n"
                f"- {len(rows)} rows ({len(plan.cases)} cases × methods), MPI ranks: "
                f"{', '.join(map(str, ranks))}\n"
                f"- errors: nodal ‖E‖∞, ‖E‖l2 = (Σ|E(x_i)|² H^d)^½ at the coarse vertices "
                f"(absolute, Hou–Wu); L2/H1/energy relative, broken over coarse cells; "
                f"times in seconds (max over ranks)\n")
    refined = sorted({(m.name, m.basis_refinement) for m in plan.methods
                      if m.basis_refinement > 1})
    if refined:  # (the bullets stay one list: appended to the last one)
        head[-1] += ("- exact basis: " + ", ".join(f"{n} on a sub-grid {r}× finer" for n, r
                                                   in refined)
                     + " than the case's (same coarse mesh and reference); nodal errors "
                     "only\n")
    if runs:
        head[-1] += runs_line(runs)
    fams = families(plan, rows)
    parts = ["\n".join(head), "## Results\n\n" + results_table(plan, rows)]
    pub = published_section(plan, rows)
    if pub:
        parts.append(pub)
    if study.get("discussion"):  # the author's reading of the results (config text)
        parts.append("## Discussion\n\n" + study["discussion"].strip() + "\n")
    parts.append("## Observed rates\n\n" + rates_section(plan, fams))
    if plan.figures and fams:
        figs = []
        for fam in fams:
            png = plot_family(plan, fam, out_dir)
            if png:
                figs.append(f"### {fam.title}\n\n![{fam.title}]({png})\n\n"
                            f"(PDF: `{Path(png).with_suffix('.pdf').name}`)\n")
        parts.append("## Figures\n\n" + "\n".join(figs))
    return "\n".join(parts)


def write_report(plan: Plan, rows: Sequence[Mapping[str, Any]], out_dir: str | Path,
                 comm: MPI.Comm = MPI.COMM_WORLD,
                 runs: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write ``out_dir/report.md`` and its figures (rank 0 builds, all files atomic).

    ``runs``: wall time and peak memory of the invocations (``study.json``), shown in the
    header.
    """
    out_dir = Path(out_dir)
    text, error = "", None
    if comm.rank == 0:
        try:
            text = build_report(plan, rows, out_dir, runs)
        except Exception as err:  # raise on every rank, not only on rank 0
            error = f"{type(err).__name__}: {err}"
    error = comm.bcast(error, root=0)
    if error:
        raise RuntimeError(f"writing the report of study {plan.name!r} failed: {error}")
    _runtime.atomic_write_text(out_dir / "report.md", text, comm)
