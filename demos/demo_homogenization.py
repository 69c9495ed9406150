# %% [markdown]
# # Periodic homogenization: cell problems, $A^*$, $u_0$ and the first-order corrector
#
# For a coefficient that oscillates with period $\varepsilon$, the solution $u_\varepsilon$
# of
#
# $$
# -\nabla\cdot\bigl(a(x/\varepsilon)\nabla u_\varepsilon\bigr) = f \text{ in } \Omega,
# \qquad u_\varepsilon = 0 \text{ on } \partial\Omega
# $$
#
# converges, as $\varepsilon \to 0$, to the solution $u_0$ of a problem with a constant
# *effective* tensor $A^*$ (Bensoussan, Lions & Papanicolaou 1978). This demo computes
# $A^*$ from the cell problems, checks it against a closed form, and then compares
# $u_0$ and the first-order corrector with the fine solution — including the boundary
# layer that the corrector leaves along $\partial\Omega$.
#
# ```bash
# python demos/demo_homogenization.py
# mpirun -n 2 python demos/demo_homogenization.py
# MSFEM_DEMO_FAST=1 python demos/demo_homogenization.py    # the small setting of the tests
# ```
#
# Figures go to `results/demos/homogenization/` (or `$MSFEM_DEMO_OUT/homogenization/`).

# %%
# ruff: noqa: D100
import os
from pathlib import Path

import numpy as np
from mpi4py import MPI

import msfem  # before dolfinx
import msfem.plot
from msfem import norms
from msfem.homogenization import cell_solution, corrector_solution, homogenized_solution

comm = MPI.COMM_WORLD
FAST = os.environ.get("MSFEM_DEMO_FAST", "0") == "1"
OUT = Path(os.environ.get("MSFEM_DEMO_OUT", "results/demos")) / "homogenization"


def say(*args):
    """Print on rank 0 only."""
    if comm.rank == 0:
        print(*args, flush=True)


# %% [markdown]
# ## Cell problems and the effective tensor
#
# On the unit cell $Y = (0, 1)^2$, the correctors $\chi_j$ are $Y$-periodic with mean
# zero and solve
#
# $$
# -\nabla_y\cdot\bigl(a(y)(e_j + \nabla_y\chi_j)\bigr) = 0, \qquad
# A^*_{ij} = \bigl\langle a\,(e_j + \nabla_y\chi_j)\cdot(e_i + \nabla_y\chi_i)\bigr\rangle .
# $$
#
# A separable coefficient $a(y) = f(y_1)\,g(y_2)$ has a closed form: $\chi_1$ depends on
# $y_1$ only, $f(1 + \chi_1') = \langle 1/f\rangle^{-1}$, hence
# $A^*_{11} = \langle g\rangle\,\langle 1/f\rangle^{-1}$ and likewise
# $A^*_{22} = \langle f\rangle\,\langle 1/g\rangle^{-1}$, $A^*_{12} = 0$. With
# $\langle 1/(p + q\sin 2\pi t)\rangle = (p^2 - q^2)^{-1/2}$, the coefficient
# $a(y) = (2 + 1.5\sin 2\pi y_1)(1.5 + \cos 2\pi y_2)$ has
#
# $$
# A^* = \operatorname{diag}\bigl(1.5\sqrt{1.75},\ 2\sqrt{1.25}\bigr)
#     = \operatorname{diag}(1.98431\ldots,\ 2.23607\ldots).
# $$
#
# `cell_solution(field)` solves the cell problems of a periodic `Field` (P2 on a
# $32\times 32$ cell, on `COMM_SELF` on every rank: the cell problem is small, and $A^*$
# is then the same bits on every rank).

# %%
separable = msfem.Periodic(
    lambda y, ns: (2 + 1.5 * ns.sin(2 * ns.pi * y[0])) * (1.5 + ns.cos(2 * ns.pi * y[1])),
    eps=1.0)
A_star = cell_solution(separable).A_star
exact = np.diag([1.5 * np.sqrt(1.75), 2 * np.sqrt(1.25)])
say(f"A* (cell problems) = {(np.round(A_star, 6) + 0.0).tolist()}")  # + 0.0: no "-0.0"
say(f"A* (closed form)   = {(np.round(exact, 6) + 0.0).tolist()}")
assert np.abs(A_star - exact).max() < 1e-4 * np.abs(exact).max()

# %% [markdown]
# $A^*$ also lies between the harmonic and the arithmetic mean of $a$ (the Wiener or
# Voigt–Reuss bounds): here $\langle 1/a\rangle^{-1} = \sqrt{1.75\cdot 1.25}$ and
# $\langle a\rangle = 3$.

# %%
eigenvalues = np.linalg.eigvalsh(A_star)
assert np.sqrt(1.75 * 1.25) < eigenvalues.min() and eigenvalues.max() < 3.0

# %% [markdown]
# ## The Hou–Wu coefficient: $u_0$ and the corrector against $u_\varepsilon$
#
# From here on the coefficient is that of Hou & Wu (1997), which is not separable: its
# correctors depend on both $y_1$ and $y_2$.

# %%
houwu = cell_solution(msfem.HouWu(eps=1.0))
say(f"A* (Hou-Wu, P = 1.8) = {(np.round(houwu.A_star, 5) + 0.0).tolist()}")

if comm.rank == 0:  # the cell problems live on COMM_SELF: rank 0 draws them alone
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    fig.subplots_adjust(wspace=0.35, top=0.85)
    for j, (ax, chi) in enumerate(zip(fig.subplots(1, 2), houwu.correctors)):
        y = chi.function_space.tabulate_dof_coordinates()
        art = ax.tricontourf(y[:, 0], y[:, 1], chi.x.array, levels=24, cmap="RdBu_r")
        fig.colorbar(art, ax=ax, format="%.2f")
        ax.set_aspect("equal")
        ax.set_xlabel("$y_1$")
        ax.set_ylabel("$y_2$")
        ax.set_title(f"$\\chi_{j + 1}$")
    fig.suptitle("Cell correctors of the Hou–Wu coefficient")
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "correctors.png", dpi=110)

# %% [markdown]
# With the load $f = -1$ on the unit square, the homogenized solution solves
# $-\nabla\cdot(A^*\nabla u_0) = f$, $u_0 = 0$ on $\partial\Omega$, and the first-order
# corrector adds the oscillation back,
#
# $$
# u_0 + \varepsilon u_1, \qquad u_1(x) = \chi_j(x/\varepsilon)\,\partial_j u_0(x)
# $$
#
# (`corrector_solution` returns the sum $u_0 + \varepsilon u_1$, on the fine mesh). Known
# limits: $\|u_\varepsilon - u_0\|_{L^2} = O(\varepsilon)$, but
# $\|\nabla(u_\varepsilon - u_0)\|_{L^2}$ does not go to zero; the corrector fixes the
# gradient up to a boundary layer, $\|u_\varepsilon - u_0 - \varepsilon u_1\|_{H^1} =
# O(\sqrt\varepsilon)$, because $\varepsilon u_1 \ne 0$ on $\partial\Omega$. We solve
# for a few $\varepsilon$ with 16 fine cells per period.

# %%
epsilons = [1 / 4, 1 / 8] if FAST else [1 / 4, 1 / 8, 1 / 16, 1 / 32]
rows = []
for eps in epsilons:
    problem = msfem.diffusion(msfem.HouWu(eps=eps), f=-1.0)
    hierarchy = msfem.StructuredHierarchy(comm, 4, round(4 / eps), "quadrilateral")
    u_eps = msfem.solve_fine(hierarchy.fine, problem).u
    u0 = homogenized_solution(hierarchy, problem)
    u0_u1 = corrector_solution(hierarchy, problem)
    e0, e1 = norms.errors(u0, u_eps), norms.errors(u0_u1, u_eps)
    rows.append((eps, e0["l2_rel"], e0["h1_rel"], e1["h1_rel"]))
    say(f"ε = 1/{round(1 / eps):<3d} |u_ε − u0|_L2 {e0['l2_rel']:.3e}   "
        f"|u_ε − u0|_H1 {e0['h1_rel']:.3e}   |u_ε − u0 − εu1|_H1 {e1['h1_rel']:.3e}  "
        f"(relative)")

eps_, l2_0, h1_0, h1_1 = map(np.array, zip(*rows))


def rate(errors):
    """The fitted slope of log(error) against log(ε)."""
    return float(np.polyfit(np.log(eps_), np.log(errors), 1)[0])


say(f"fitted rates in ε: u0 in L2 {rate(l2_0):.2f}, u0 in H1 {rate(h1_0):.2f}, "
    f"u0 + εu1 in H1 {rate(h1_1):.2f}")
assert abs(rate(l2_0) - 1.0) < 0.3  # O(ε)
assert abs(rate(h1_0)) < 0.1  # O(1): u0 misses the oscillation of the gradient
assert abs(rate(h1_1) - 0.5) < 0.2  # O(√ε): the boundary layer
assert h1_1[-1] < 0.25 * h1_0[-1]

# %% [markdown]
# ## The boundary layer
#
# In the interior $u_0 + \varepsilon u_1$ follows the oscillations of $u_\varepsilon$;
# near $\partial\Omega$ it cannot, since it does not vanish there. The error field of the
# smallest $\varepsilon$ and its profile along the line $y = 1/2$ show it.

# %%
msfem.plot.plot_error_field(
    OUT / "corrector_error.png", [u_eps, u0_u1], ["u_ε", "u0 + εu1"],
    title=f"Hou–Wu coefficient, ε = 1/{round(1 / eps)}: fine solution vs first-order "
          f"corrector")


def on_line(u, y0=0.5):
    """(x, u(x, y0)) at the fine nodes on the line y = y0, gathered on rank 0."""
    V = u.function_space
    n = V.dofmap.index_map.size_local  # owned dofs only: no duplicates
    x = V.tabulate_dof_coordinates()[:n]
    on = np.isclose(x[:, 1], y0)
    parts = comm.gather((x[on, 0], u.x.array[:n][on]), root=0)
    if comm.rank != 0:
        return None, None
    xs, values = (np.concatenate(p) for p in zip(*parts))
    order = np.argsort(xs)
    return xs[order], values[order]


x_line, ue_line = on_line(u_eps)
_, u0_line = on_line(u0)
_, u1_line = on_line(u0_u1)
if comm.rank == 0:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4))
    fig.subplots_adjust(top=0.88, bottom=0.14)
    ax = fig.subplots()
    ax.plot(x_line, ue_line - u0_line, lw=1.0, label="$u_\\varepsilon - u_0$")
    ax.plot(x_line, ue_line - u1_line, lw=1.4, label="$u_\\varepsilon - u_0 - \\varepsilon u_1$")
    for k in range(round(1 / eps) + 1):
        ax.axvline(k * eps, color="0.85", lw=0.5, zorder=0)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("x (grey lines: periods)")
    ax.set_ylabel("error at y = 1/2")
    ax.set_title(f"Hou–Wu, ε = 1/{round(1 / eps)}: the corrector removes the "
                 f"oscillation except in a layer at ∂Ω")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(OUT / "boundary_layer.png", dpi=110)
say(f"figures written to {OUT}")
