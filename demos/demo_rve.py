# %% [markdown]
# # RVE study: apparent properties under KUBC, SUBC and PBC, Hill–Mandel, RVE size
#
# A random medium has no unit cell. Its effective tensor is approached by the *apparent*
# tensors of finite windows (statistical volume elements), which depend on the boundary
# condition put on the window. This demo computes them for a random two-phase
# checkerboard, checks the Hill–Mandel condition and the ordering of the boundary
# conditions, and runs the SVE → RVE study of Kanit et al. (2003).
#
# ```bash
# python demos/demo_rve.py
# mpirun -n 2 python demos/demo_rve.py
# MSFEM_DEMO_FAST=1 python demos/demo_rve.py    # the small setting of the tests
# ```
#
# The figure goes to `results/demos/rve/` (or `$MSFEM_DEMO_OUT/rve/`).
#
# ## The medium and its known effective conductivity
#
# Squares of side $\ell = 1$ take the conductivity $\sigma_1 = 1$ or $\sigma_2 = 10$, each
# with probability $1/2$, independently. This medium is isotropic and statistically
# invariant under the exchange of the two phases, so by Keller's (1964) and Dykhne's (1971)
# duality its effective conductivity is exactly
#
# $$
# \sigma^* = \sqrt{\sigma_1\sigma_2} = \sqrt{10} \approx 3.162 .
# $$

# %%
# ruff: noqa: D100
import os
from pathlib import Path

import numpy as np
from mpi4py import MPI

from msfem.homogenization import (  # msfem before dolfinx: it loads PETSc and MPI first
    BOUNDARY_CONDITIONS,
    apparent_conductivity,
    apparent_elasticity,
    random_checkerboard,
    reuss,
    rve_size_study,
    voigt,
)

# isort: split
import dolfinx

comm = MPI.COMM_WORLD
FAST = os.environ.get("MSFEM_DEMO_FAST", "0") == "1"
OUT = Path(os.environ.get("MSFEM_DEMO_OUT", "results/demos")) / "rve"


def say(*args):
    """Print on rank 0 only."""
    if comm.rank == 0:
        print(*args, flush=True)


def fmt(T):
    """A small matrix on one line."""
    return str((np.round(np.asarray(T), 3) + 0.0).tolist())  # + 0.0: no "-0.0"


def min_eig(C):
    """The smallest eigenvalue of the symmetric part of C (Loewner order: C >= 0)."""
    return float(np.linalg.eigvalsh(0.5 * (C + C.T)).min())


sigma = (1.0, 10.0)
exact = np.sqrt(sigma[0] * sigma[1])

# %% [markdown]
# ## One window, four boundary conditions
#
# A window $[0, L]^2$ meshed with 4 quadrilaterals per square. The apparent conductivity
# solves $-\nabla\cdot(\sigma\nabla u) = 0$ in the window for two load cases, with
#
# * **KUBC** (kinematic uniform): $u = \bar G\cdot x$ on the boundary;
# * **SUBC** (static uniform): $\sigma\nabla u\cdot n = \bar q\cdot n$;
# * **PBC** (periodic): $u - \bar G\cdot x$ periodic, fluxes anti-periodic;
# * **mixed**: $u = \bar G\cdot x$ on two opposite sides, no flux through the others —
#   a deliberately bad condition,
#
# and $A^{app} = [\langle\sigma\nabla u\rangle][\langle\nabla u\rangle]^{-1}$. The
# Hill–Mandel condition
# $\langle\sigma\nabla u\cdot\nabla u\rangle = \langle\sigma\nabla u\rangle\cdot
# \langle\nabla u\rangle$, which makes the window's energy that of its averages, holds for
# KUBC, SUBC and PBC by the divergence theorem; the residual
# $r_{HM} = |\langle\sigma\nabla u\cdot\nabla u\rangle - \langle\sigma\nabla u\rangle\cdot
# \langle\nabla u\rangle| / \langle\sigma\nabla u\cdot\nabla u\rangle$ measures it.
# The random field is drawn on the global grid of squares, so it is the same on any
# number of ranks.

# %%
L = 4 if FAST else 8
window = dolfinx.mesh.create_rectangle(comm, [np.zeros(2), np.full(2, float(L))], [4 * L] * 2,
                                       dolfinx.mesh.CellType.quadrilateral)
a = random_checkerboard(window, cell_size=1.0, values=sigma, seed=[7, L])
# the realised volume fraction of phase σ2 (the mean of the DG0 field)
n_cells = window.topology.index_map(2).size_local
f2 = comm.allreduce(float((a.x.array[:n_cells] == sigma[1]).sum()), op=MPI.SUM) / (4 * L) ** 2

apparent = {bc: apparent_conductivity(window, a, bc) for bc in BOUNDARY_CONDITIONS}
say(f"window {L} x {L}, fraction of σ2 = {f2:.3f}: Voigt {voigt(*sigma, f2):.3f}, "
    f"Reuss {reuss(*sigma, f2):.3f}, √10 = {exact:.3f}")
for bc, res in apparent.items():
    say(f"  {bc:>5}: A_app = {fmt(res.tensor)}, "
        f"r_HM = {res.hill_mandel_residual:.1e}")

# %% [markdown]
# What holds for every realisation, and the demo checks:
#
# * Hill–Mandel: $r_{HM}$ is round-off for KUBC, SUBC, PBC, and not for the mixed
#   condition;
# * Huet's ordering (from the minimum energy principles):
#   $A^{app}_{KUBC} \ge A^{app}_{PBC} \ge A^{app}_{SUBC}$ in the Loewner order;
# * the Voigt and Reuss bounds of the realised volume fraction bracket them.

# %%
for bc in ("kubc", "subc", "pbc"):
    assert apparent[bc].hill_mandel_residual < 1e-10, bc
assert apparent["mixed"].hill_mandel_residual > 1e-3
K, P, S = (apparent[bc].tensor for bc in ("kubc", "pbc", "subc"))
assert min_eig(K - P) > -1e-10 and min_eig(P - S) > -1e-10
assert np.linalg.eigvalsh(K).max() <= voigt(*sigma, f2) + 1e-10
assert np.linalg.eigvalsh(S).min() >= reuss(*sigma, f2) - 1e-10

# %% [markdown]
# The same for elasticity: the phases get Lamé parameters $\lambda = \sigma$,
# $\mu = \sigma/2$; the apparent stiffness is a $3\times 3$ matrix in Mandel notation.

# %%
for bc in BOUNDARY_CONDITIONS:
    res = apparent_elasticity(window, a, 0.5 * a, bc)
    say(f"  elasticity {bc:>5}: C_app = {fmt(res.tensor)}, "
        f"r_HM = {res.hill_mandel_residual:.1e}")
    if bc != "mixed":
        assert res.hill_mandel_residual < 1e-10, bc

# %% [markdown]
# ## From SVE to RVE
#
# How large must a window be? Kanit et al. (2003): for each window size $L/\ell$ draw $n$
# realisations, compute the scalar $Z = \operatorname{tr}A^{app}/2$ under each boundary
# condition, and call the window an RVE for the relative precision $\varepsilon_{rel}$ once
# $2D(Z)/(\bar Z\sqrt n) \le \varepsilon_{rel}$, with $D$ the standard deviation.
# `rve_size_study` does this (one mesh per size; the realisations only change the
# coefficient).

# %%
sizes = [2, 4, 8] if FAST else [2, 4, 8, 16]
study = rve_size_study(sizes, n_realisations=8 if FAST else 16, values=sigma,
                       elements_per_cell=4, precision=0.05, seed=3)
for bc in ("kubc", "pbc", "subc"):
    say(f"{bc:>5}: mean " + ", ".join(f"{m:.3f}" for m in study.mean[bc])
        + "; ε_rel " + ", ".join(f"{e:.3f}" for e in study.relative_error[bc])
        + f"; RVE size (5 %): {study.rve_size[bc]}")

if comm.rank == 0:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    fig.subplots_adjust(top=0.88, bottom=0.13)
    ax = fig.subplots()
    for k, (bc, marker) in enumerate((("kubc", "v"), ("pbc", "o"), ("subc", "^"))):
        shift = 1 + 0.04 * (k - 1)  # side by side
        ax.errorbar(study.window_sizes * shift, study.mean[bc], yerr=study.std[bc],
                    marker=marker, capsize=3, label=bc.upper())
    ax.axhline(exact, color="k", lw=0.8, ls="--", label="√10 (Keller–Dykhne)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(study.window_sizes, labels=[f"{s:g}" for s in study.window_sizes])
    ax.set_xlabel("window size L/ℓ")
    ax.set_ylabel("apparent conductivity  tr A_app / 2  (mean ± std)")
    ax.set_title(f"Random (1, 10) checkerboard, {study.n_realisations} realisations per size")
    ax.legend()
    ax.grid(alpha=0.3)
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "rve_size.png", dpi=110)

# %% [markdown]
# The checks: realisation by realisation KUBC ≥ PBC ≥ SUBC; the gap between the KUBC and
# SUBC means closes as the window grows, and the two means bracket the exact $\sqrt{10}$
# at every size; Hill–Mandel holds throughout.

# %%
assert np.all(study.samples["kubc"] >= study.samples["pbc"] - 1e-12)
assert np.all(study.samples["pbc"] >= study.samples["subc"] - 1e-12)
gap = study.mean["kubc"] - study.mean["subc"]
assert np.all(np.diff(gap) < 0), gap
assert np.all((study.mean["subc"] < exact) & (exact < study.mean["kubc"]))
assert max(study.hill_mandel_residual.values()) < 1e-10
say("KUBC − SUBC gap of the means: " + ", ".join(f"{g:.3f}" for g in gap))
say(f"figure written to {OUT}")
