"""Figure of docs/fe_hmm: FE-HMM's L2 error against delta/eps (from results.csv).

    python docs/fe_hmm/plot_delta.py
"""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(__file__).parent
rows = list(csv.DictReader(open(here / "results.csv")))
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
for ax, N in zip(axes, ("16", "8")):
    case = [r for r in rows if r["N"] == N]
    for bc, style in (("per", "o-"), ("dir", "s--")):
        pts = sorted((float(r["method"].split("-")[2]), float(r["l2_rel"]))
                     for r in case if r["method"].startswith(f"hmm-{bc}"))
        ax.semilogy(*zip(*pts), style, label=f"FE-HMM, {'periodic' if bc == 'per' else 'Dirichlet'}")
    for name, ls in (("homogenized", ":"), ("oversampling", "-.")):
        value = next(float(r["l2_rel"]) for r in case if r["method"] == name)
        ax.axhline(value, ls=ls, color="gray", label=f"{name} MsFEM" if name != "homogenized"
                   else "u0 (homogenized)")
    ax.set_title(f"N = {N}, H/ε = {case[0]['H_over_eps']}")
    ax.set_xlabel("δ/ε")
    ax.grid(True, which="both", alpha=0.3)
axes[0].set_ylabel("relative L2 error vs fine")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(here / "fig_error_vs_delta.png", dpi=150)
