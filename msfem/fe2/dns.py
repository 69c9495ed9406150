r"""Direct numerical simulation (DNS): the full nonlinear problem at scale ε on the fine mesh.

The reference that FE² approximates as :math:`\varepsilon \to 0`: on the fine mesh of the
hierarchy (P1/Q1), find :math:`u_\varepsilon` with :math:`u_\varepsilon = \lambda_n g` on
:math:`\Gamma_D` and

.. math::
    \int_\Omega q(g(u_\varepsilon); x/\varepsilon)\cdot\nabla v\,dx
    = \lambda_n \int_\Omega f\cdot v\,dx \quad \forall v, \qquad
    g = \nabla u_\varepsilon \ \ (\text{mechanics: } F = I + \nabla u_\varepsilon),

with the same micro law :math:`W(g; y)` evaluated at :math:`y = x/\varepsilon` (its phases
sampled at the fine cell midpoints, so the fine mesh should resolve ε: at least 8 cells per
ε, and a multiple of the phase layout). Solved by PETSc SNES (Newton, MUMPS LU) through
``dolfinx.fem.petsc.NonlinearProblem``, with the same load steps
:math:`\lambda_n = n/N` as FE².
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from msfem import solvers
from msfem.fe2.laws import Law
from msfem.homogenization.cell import cellwise_constant
from msfem.mesh import StructuredHierarchy
from msfem.problem import Dirichlet, dirichlet_values

__all__ = ["DNSResult", "solve_dns"]

#: SNES defaults of the DNS: Newton with a full step, MUMPS LU, relative tolerance 1e-10.
DNS_OPTIONS: dict[str, Any] = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "basic",
    "snes_rtol": 1e-10,
    "snes_atol": 1e-12,
    "snes_max_it": 30,
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}


@dataclass
class DNSResult:
    r"""The fine-scale solution and its Newton record.

    Attributes:
        u: :math:`u_\varepsilon` on the fine mesh.
        iterations: Newton iterations per load step.
        seconds: wall time of the solve (max over ranks).
    """

    u: dolfinx.fem.Function
    iterations: list[int] = field(default_factory=list)
    seconds: float = 0.0


def solve_dns(hierarchy: StructuredHierarchy, law: Law, eps: float, *,
              load: float | Sequence[float] = 0.0,
              dirichlet: Sequence[Dirichlet] = (Dirichlet(0.0),), steps: int = 1,
              quadrature_degree: int = 2,
              petsc_options: Mapping[str, Any] | None = None) -> DNSResult:
    r"""Solve the ε-problem of the module docstring on ``hierarchy.fine`` (collective).

    Raises:
        SolverError: SNES did not converge in a load step (naming it and the reason).
    """
    mesh = hierarchy.fine
    d = hierarchy.dim
    shape = law.value_shape(d)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, shape))
    u = dolfinx.fem.Function(V, name="u_dns")
    chi = cellwise_constant(mesh, lambda x: law.params.phase_2(np.mod(x / eps, 1.0))
                            .astype(float), name="chi_2")
    zero = ufl.zero(*law.gradient_shape(d))
    g = ufl.variable(law.total_gradient(zero, ufl.grad(u)))
    q = ufl.diff(law.energy(g, chi), g)
    lam = dolfinx.fem.Constant(mesh, 0.0)
    f_value = np.zeros(shape) if np.ndim(load) == 0 and load == 0 and shape else \
        np.asarray(load, dtype=float)
    f = dolfinx.fem.Constant(mesh, f_value.astype(PETSc.ScalarType))
    v = ufl.TestFunction(V)
    dx = ufl.dx(metadata={"quadrature_degree": quadrature_degree})
    residual = ufl.inner(q, ufl.grad(v)) * dx - lam * ufl.inner(f, v) * dx
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    bcs, data = [], []
    for bc in dirichlet:
        marker = bc.marker or (lambda x: np.ones(x.shape[1], dtype=bool))
        facets = dolfinx.mesh.locate_entities_boundary(mesh, tdim - 1, marker)
        dofs = dolfinx.fem.locate_dofs_topological(V, tdim - 1, facets)
        full = dolfinx.fem.Function(V)
        full.interpolate(lambda x, bc=bc: dirichlet_values(bc, x, shape))
        scaled = dolfinx.fem.Function(V)
        bcs.append(dolfinx.fem.dirichletbc(scaled, dofs))
        data.append((full, scaled))
    options = dict(DNS_OPTIONS)
    options.update(petsc_options or {})
    problem = dolfinx.fem.petsc.NonlinearProblem(
        residual, u, bcs=bcs, petsc_options_prefix="msfem_fe2_dns_", petsc_options=options)
    result = DNSResult(u=u)
    t0 = time.perf_counter()
    for n in range(1, steps + 1):
        factor = n / steps
        lam.value = factor  # type: ignore[assignment]
        for full, scaled in data:
            scaled.x.array[:] = factor * full.x.array
        problem.solve()
        snes = problem.solver
        reason = int(snes.getConvergedReason())  # type: ignore[call-overload]
        if reason <= 0:
            raise solvers.SolverError(f"DNS at eps = {eps:g}: SNES did not converge in load "
                                      f"step {n}/{steps} (reason {reason}, "
                                      f"{snes.getIterationNumber()} iterations)")
        result.iterations.append(int(snes.getIterationNumber()))
    result.seconds = float(mesh.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return result
