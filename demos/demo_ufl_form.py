# %% [markdown]
# # Your own UFL form: anisotropic reaction–diffusion, then elasticity
#
# msfem never looks inside the bilinear form: a problem is *data*, a Python callable
# `bilinear(u, v, **coefficients) -> ufl.Form` that msfem compiles on the distributed fine
# mesh (for the reference) and on small patch meshes (for the multiscale basis). This
# demo writes two forms by hand, checks that each gives exactly the solution of msfem's
# built-in model problem with the same coefficients, and runs MsFEM on them.
#
# ```bash
# python demos/demo_ufl_form.py
# mpirun -n 2 python demos/demo_ufl_form.py
# MSFEM_DEMO_FAST=1 python demos/demo_ufl_form.py    # the small setting of the tests
# ```
#
# Figures go to `results/demos/ufl_form/` (or `$MSFEM_DEMO_OUT/ufl_form/`).

# %%
# ruff: noqa: D100
import os
from pathlib import Path

import numpy as np
from mpi4py import MPI

import msfem  # before dolfinx
import msfem.plot

# isort: split
import ufl

comm = MPI.COMM_WORLD
FAST = os.environ.get("MSFEM_DEMO_FAST", "0") == "1"
OUT = Path(os.environ.get("MSFEM_DEMO_OUT", "results/demos")) / "ufl_form"


def say(*args):
    """Print on rank 0 only."""
    if comm.rank == 0:
        print(*args, flush=True)


def max_difference(u, w):
    """The largest |u - w| over the dofs of two Functions on one space (all ranks)."""
    return comm.allreduce(float(np.abs(u.x.array - w.x.array).max(initial=0.0)), op=MPI.MAX)


eps = 1 / 8 if FAST else 1 / 16
N, M = 4, round(8 / (4 * eps))  # H = 1/4 = 2ε (fast) or 4ε; h = ε/8
hierarchy = msfem.StructuredHierarchy(comm, N, M, "quadrilateral")
variants = ("standard", "linear", "oversampling")

# %% [markdown]
# ## 1. Anisotropic reaction–diffusion
#
# $$
# -\nabla\cdot\bigl(A(x/\varepsilon)\nabla u\bigr) + c(x/\varepsilon)\,u = 1
# \text{ in } (0, 1)^2, \qquad u = 0 \text{ on } \partial\Omega,
# $$
#
# with a full, oscillating diffusion tensor and an oscillating reaction coefficient,
#
# $$
# A(y) = \begin{pmatrix} 2 + 1.5\sin 2\pi y_1 & 0.3 \\ 0.3 & 1 + 0.5\cos 2\pi y_2
# \end{pmatrix}, \qquad c(y) = 5 + 4\cos 2\pi(y_1 + y_2).
# $$
#
# A coefficient is a `Field`. `msfem.Periodic(cell_function, eps)` takes the cell function
# $y \mapsto a(y)$ on the unit period, written once with a math namespace `ns` that is
# NumPy when msfem evaluates the field (positivity and resolution checks) and UFL when it
# compiles a form. The form's arguments after `u, v` are the coefficient names.


# %%
def bilinear(u, v, A, c):
    """a(u, v) = ∫ A∇u·∇v + c u v."""
    return (ufl.inner(A * ufl.grad(u), ufl.grad(v)) + c * u * v) * ufl.dx


A = msfem.Periodic(lambda y, ns: [[2 + 1.5 * ns.sin(2 * ns.pi * y[0]), 0.3],
                                  [0.3, 1 + 0.5 * ns.cos(2 * ns.pi * y[1])]], eps, shape=(2, 2))
c = msfem.Periodic(lambda y, ns: 5 + 4 * ns.cos(2 * ns.pi * (y[0] + y[1])), eps)

# %% [markdown]
# The problem declares what the numerics need: only `A` must be uniformly positive
# definite (a reaction coefficient may vanish), and the form is symmetric, so the local
# problems may be factorised by Cholesky. `name` is a label, never read by the numerics.

# %%
problem = msfem.Problem(bilinear, {"A": A, "c": c}, source=1.0, positive=("A",),
                        symmetric=True, name="my reaction-diffusion")
reference = msfem.solve_fine(hierarchy.fine, problem)

# %% [markdown]
# The same equation through msfem's built-in `reaction_diffusion` must give the same fine
# solution, to round-off (the two forms are compiled separately by FFCx).

# %%
builtin = msfem.solve_fine(hierarchy.fine, msfem.reaction_diffusion(A, c, f=1.0))
difference = max_difference(reference.u, builtin.u)
say(f"reaction-diffusion: max |u_mine − u_builtin| = {difference:.1e}")
assert difference < 1e-10 * comm.allreduce(float(np.abs(builtin.u.x.array).max()), op=MPI.MAX)

# %% [markdown]
# MsFEM on this form: every variant builds its basis from *this* bilinear form on the
# coarse cells (or oversampled patches). The multiscale variants beat coarse $Q_1$ FEM
# (`standard`) in the energy norm $\|u_h - u_{ms}\|_a / \|u_h\|_a$.

# %%
errors = {}
for name in variants:
    solution = msfem.solve_coarse(msfem.MultiscaleSpace(hierarchy, problem, name).build())
    errors[name] = solution.errors(reference.u)
    say(f"{name:>12}: energy error {errors[name]['energy_rel']:.3e}, "
        f"L2 error {errors[name]['l2_rel']:.3e}")
msfem.plot.plot_error_field(
    OUT / "reaction_diffusion_error.png", [reference.u, solution.reconstruct()],
    title=f"anisotropic reaction-diffusion, MsFEM (oversampling), H = 1/{N}, "
          f"ε = 1/{round(1 / eps)}")
for name in ("linear", "oversampling"):
    assert errors[name]["energy_rel"] < errors["standard"]["energy_rel"], name

# %% [markdown]
# ## 2. Elasticity, written by hand
#
# Plane-strain linear elasticity with an oscillating Young's modulus $E(x/\varepsilon)$
# and Poisson ratio $\nu = 0.3$, clamped on the left edge, under its own weight:
#
# $$
# -\nabla\cdot\sigma(u) = (0, -1), \qquad
# \sigma(u) = E\,\bigl(\lambda_1 \operatorname{tr}\varepsilon(u) I
# + 2\mu_1\varepsilon(u)\bigr), \qquad
# \lambda_1 = \tfrac{\nu}{(1+\nu)(1-2\nu)},\ \mu_1 = \tfrac{1}{2(1+\nu)},
# $$
#
# $u = 0$ on $x = 0$ and traction-free elsewhere. A vector unknown is `shape=(2,)`; the
# algebraic multigrid of the fine solve needs the rigid body modes as near-null space.

# %%
nu = 0.3
lam1, mu1 = nu / ((1 + nu) * (1 - 2 * nu)), 1 / (2 * (1 + nu))


def elastic(u, v, E):
    """a(u, v) = ∫ σ(u) : ε(v) with σ = E (λ₁ tr ε I + 2 μ₁ ε)."""
    def strain(w):
        return ufl.sym(ufl.grad(w))

    stress = E * (lam1 * ufl.tr(strain(u)) * ufl.Identity(2) + 2 * mu1 * strain(u))
    return ufl.inner(stress, strain(v)) * ufl.dx


E = msfem.Periodic(lambda y, ns: 1 + 0.9 * ns.sin(2 * ns.pi * y[0]) * ns.sin(2 * ns.pi * y[1]),
                   eps)
clamped = (msfem.Dirichlet((0.0, 0.0), lambda x: np.isclose(x[0], 0.0)),)
solid = msfem.Problem(elastic, {"E": E}, source=(0.0, -1.0), shape=(2,), dirichlet=clamped,
                      near_nullspace="rigid", symmetric=True, name="my elasticity")
reference = msfem.solve_fine(hierarchy.fine, solid)
builtin = msfem.solve_fine(hierarchy.fine, msfem.elasticity(E, nu=nu, f=(0.0, -1.0),
                                                            dirichlet=clamped))
difference = max_difference(reference.u, builtin.u)
say(f"elasticity: max |u_mine − u_builtin| = {difference:.1e}")
assert difference < 1e-10 * comm.allreduce(float(np.abs(builtin.u.x.array).max()), op=MPI.MAX)

# %% [markdown]
# Vector MsFEM has one basis function per coarse vertex *and component*: $\phi_{i,0}$
# solves the local elasticity problems with the boundary data $(N_i, 0)$ on $\partial K$,
# so it moves in $y$ too wherever the coefficient couples the components. The picture
# shows the $x$ component of $\phi_{i,0}$ next to the hat.

# %%
errors = {}
spaces = {name: msfem.MultiscaleSpace(hierarchy, solid, name).build() for name in variants}
for name, space in spaces.items():
    solution = msfem.solve_coarse(space)
    errors[name] = solution.errors(reference.u)
    say(f"{name:>12}: energy error {errors[name]['energy_rel']:.3e}, "
        f"L2 error {errors[name]['l2_rel']:.3e}")
msfem.plot.plot_error_field(
    OUT / "elasticity_error.png", [reference.u, solution.reconstruct()],
    title=f"clamped plate under its own weight, MsFEM (oversampling), H = 1/{N}, "
          f"ε = 1/{round(1 / eps)}: |u| and |u_fine − u_ms|")
basis = msfem.plot.basis_function(spaces["linear"], component=0)
msfem.plot.plot_basis_function(OUT / "elasticity_basis_function.png", basis,
                               coarse_mesh=hierarchy.coarse)
for name in ("linear", "oversampling"):
    assert errors[name]["energy_rel"] < 0.8 * errors["standard"]["energy_rel"], name
say(f"figures written to {OUT}")
