r"""Apparent properties of a window (box) of a microstructure, with the Hill--Mandel residual.

On a window :math:`\Omega = \prod_d[\ell_d, u_d]` solve :math:`-\operatorname{div}\sigma = 0`,
:math:`\sigma = a\nabla u` (conductivity) or :math:`\sigma = C\varepsilon(u)` (elasticity,
plane strain in 2D), under one of

* ``"kubc"`` kinematic uniform BC: :math:`u = \bar E x` on :math:`\partial\Omega`;
* ``"subc"`` static uniform BC: :math:`\sigma n = \bar\Sigma n` on :math:`\partial\Omega`
  (the kernel -- constants, or rigid motions -- is removed by pinning a corner:
  the value at :math:`\ell`; in elasticity also :math:`u_2` at :math:`\ell + L_1e_1`
  (and :math:`u_3` there and at :math:`\ell + L_2e_2` in 3D));
* ``"pbc"`` periodic BC: :math:`u = \bar E x + w`, :math:`w` periodic
  (:mod:`msfem.homogenization.periodic`), antiperiodic tractions;
* ``"mixed"``: a deliberately *bad* condition, :math:`u = \bar E x` on the two faces
  :math:`x_1 = \ell_1` and :math:`x_2 = \ell_2` only, traction-free elsewhere.

For each basis load :math:`\bar E_K` (resp. :math:`\bar\Sigma_K`) the averages
:math:`\langle\varepsilon\rangle_K`, :math:`\langle\sigma\rangle_K` give the apparent
tensor :math:`C^{app} = [\langle\sigma\rangle_K][\langle\varepsilon\rangle_K]^{-1}`
(Cartesian for conductivity, Mandel for elasticity) and the Hill--Mandel residual

.. math:: r_{HM} = \frac{|\langle\sigma:\varepsilon\rangle - \langle\sigma\rangle :
   \langle\varepsilon\rangle|}{|\langle\sigma:\varepsilon\rangle|},

which vanishes (to round-off, also discretely) for KUBC, SUBC and PBC, and not for
``"mixed"``. On one window :math:`C^{KUBC} \ge C^{PBC} \ge C^{SUBC}` (Huet 1990; Hazanov &
Huet 1994), also discretely on a common mesh.

The random microstructures of the windows are in
:mod:`msfem.homogenization.microstructures`, the SVE-to-RVE size study that repeats these
solves over windows and realisations in :mod:`msfem.homogenization.rve`.

References:
    S. Hazanov, C. Huet, J. Mech. Phys. Solids 42 (1994) 1995--2011;
    C. Huet, J. Mech. Phys. Solids 38 (1990) 813--841;
    M. Ostoja-Starzewski, *Microstructural randomness and scaling in mechanics of
    materials*, CRC 2008.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dolfinx
import dolfinx.common
import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
import numpy as np
import ufl
from petsc4py import PETSc

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)
from msfem.homogenization.cell import (
    Coefficient,
    check_lame,
    check_positive_definite,
    coefficient_expression,
    diffusive_flux,
    estimate_quadrature_degree,
    lame_stress,
    make_ksp,
    mandel_basis,
    solve_cell_problems,
    solve_checked,
)
from msfem.homogenization.periodic import PeriodicMap, box_bounds, periodic_map

__all__ = [
    "BOUNDARY_CONDITIONS",
    "ApparentTensor",
    "WindowProblem",
    "apparent_conductivity",
    "apparent_elasticity",
    "check_bc",
]

#: The admissible ``bc`` names; ``"mixed"`` is the deliberately bad one.
BOUNDARY_CONDITIONS = ("kubc", "subc", "pbc", "mixed")


@dataclass(frozen=True)
class ApparentTensor:
    r"""Apparent tensor of one window under one boundary condition.

    Attributes:
        tensor: :math:`C^{app} = [\langle\sigma\rangle_K][\langle\varepsilon\rangle_K]^{-1}`
            (Cartesian :math:`d\times d` for conductivity, Mandel for elasticity).
        bc: ``"kubc"``, ``"subc"``, ``"pbc"`` or ``"mixed"``.
        mean_strain: Columns :math:`\langle\varepsilon\rangle_K` (or
            :math:`\langle\nabla u\rangle_K`) of the basis load cases.
        mean_stress: Columns :math:`\langle\sigma\rangle_K`.
        mean_energy: :math:`\langle\sigma:\varepsilon\rangle_K` per load case.
        hill_mandel_residuals: :math:`r_{HM}` per load case.
        hill_mandel_residual: :math:`\max_K r_{HM}`.
    """

    tensor: np.ndarray
    bc: str
    mean_strain: np.ndarray
    mean_stress: np.ndarray
    mean_energy: np.ndarray
    hill_mandel_residuals: np.ndarray
    hill_mandel_residual: float


def check_bc(bc: str) -> str:
    """``bc`` in lower case; refuse a name not in :data:`BOUNDARY_CONDITIONS`."""
    if not isinstance(bc, str) or bc.lower() not in BOUNDARY_CONDITIONS:
        raise ValueError(f"unknown boundary condition {bc!r}; use one of {BOUNDARY_CONDITIONS}")
    return bc.lower()


class WindowProblem:
    r"""Compiled forms of one window problem; the coefficients may be updated in place.

    The bilinear form :math:`\int_\Omega \sigma(\nabla u) : \nabla v` (``vector``: with the
    symmetric gradient :math:`\varepsilon(u)`), the loads :math:`\bar E_K` (unit vectors, or
    the Mandel basis), and the averages :math:`\langle\varepsilon\rangle`,
    :math:`\langle\sigma\rangle`, :math:`\langle\sigma:\varepsilon\rangle` are compiled once;
    a study that changes only the values of the coefficient Function inside ``stress``
    reuses them (:func:`msfem.homogenization.rve.rve_size_study`).

    Args:
        mesh: Box-shaped window mesh.
        vector: Elasticity (vector unknown, strains) instead of conductivity.
        stress: The constitutive law :math:`\sigma(g)` as a UFL callable.
        degree: Lagrange degree.
        quadrature_degree: Quadrature degree of every form (default: estimated).
    """

    def __init__(self, mesh: dolfinx.mesh.Mesh, vector: bool, stress: Callable[[Any], Any],
                 degree: int, quadrature_degree: int | None) -> None:
        self.mesh = mesh
        d = self.dim = mesh.geometry.dim
        self.vector = vector
        self._pmap: PeriodicMap | None = None
        self.lower, self.upper = box_bounds(mesh)
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree, (d,) if vector else ()))
        self.grad = (lambda w: ufl.sym(ufl.grad(w))) if vector else ufl.grad
        self.stress = stress
        self.loads = mandel_basis(d) if vector else list(np.eye(d))
        shape = self.loads[0].shape
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        integrand = ufl.inner(stress(self.grad(u)), self.grad(v))
        q = estimate_quadrature_degree(integrand, quadrature_degree)
        dx = ufl.dx(domain=mesh, metadata={"quadrature_degree": q})
        ds = ufl.ds(domain=mesh, metadata={"quadrature_degree": q})
        n = ufl.FacetNormal(mesh)
        self.volume = mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * dx)))
        self.E = dolfinx.fem.Constant(mesh, np.zeros(shape, dtype=PETSc.ScalarType))
        self.B = dolfinx.fem.Constant(mesh, np.zeros(shape, dtype=PETSc.ScalarType))
        self.w = dolfinx.fem.Function(self.V)
        self.a = dolfinx.fem.form(integrand * dx)
        zero = dolfinx.fem.Constant(mesh, np.zeros(self.V.value_shape, dtype=PETSc.ScalarType))
        self.zero_rhs = dolfinx.fem.form(ufl.inner(zero, v) * dx)
        self.periodic_rhs = dolfinx.fem.form(-ufl.inner(stress(self.E), self.grad(v)) * dx)
        self.static_rhs = dolfinx.fem.form(ufl.inner(ufl.dot(self.E, n), v) * ds)
        strain = self.E + self.grad(self.w)
        self.mean_strain_form = dolfinx.fem.form(ufl.inner(strain, self.B) * dx)
        self.mean_stress_form = dolfinx.fem.form(ufl.inner(stress(strain), self.B) * dx)
        self.energy_form = dolfinx.fem.form(ufl.inner(stress(strain), strain) * dx)

    # ------------------------------------------------------------------ dofs
    def _face_dofs(self, faces: Sequence[tuple[int, int]]) -> np.ndarray:
        """Dofs (blocked) on the faces ``(axis, 0 = lower / 1 = upper)``."""
        tdim = self.mesh.topology.dim
        tol = 1e-10 * float(np.linalg.norm(self.upper - self.lower))

        def marker(x):
            hit = np.zeros(x.shape[1], dtype=bool)
            for axis, side in faces:
                val = self.lower[axis] if side == 0 else self.upper[axis]
                hit |= np.abs(x[axis] - val) < tol
            return hit

        self.mesh.topology.create_connectivity(tdim - 1, tdim)
        facets = dolfinx.mesh.locate_entities_boundary(self.mesh, tdim - 1, marker)
        return dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, facets)

    def _vertex_bcs(self, point: np.ndarray, components: Sequence[int]) -> list:
        tdim = self.mesh.topology.dim
        tol = 1e-10 * float(np.linalg.norm(self.upper - self.lower))
        self.mesh.topology.create_connectivity(0, tdim)
        verts = dolfinx.mesh.locate_entities(
            self.mesh, 0, lambda x: np.linalg.norm(x[: self.dim].T - point, axis=1) < tol)
        bcs = []
        zero = np.zeros((), dtype=PETSc.ScalarType)
        if not self.vector:
            dofs = dolfinx.fem.locate_dofs_topological(self.V, 0, verts)
            return [dolfinx.fem.dirichletbc(zero, dofs, self.V)]
        for c in components:
            dofs = dolfinx.fem.locate_dofs_topological(self.V.sub(c), 0, verts)
            bcs.append(dolfinx.fem.dirichletbc(zero, dofs, self.V.sub(c)))
        return bcs

    def _pins(self) -> list:
        """Kill constants (conductivity) or rigid motions (elasticity) by corner pins."""
        lo, L = self.lower, self.upper - self.lower
        if not self.vector:
            return self._vertex_bcs(lo, [0])
        bcs = self._vertex_bcs(lo, range(self.dim))
        e = np.eye(self.dim)
        if self.dim == 2:
            bcs += self._vertex_bcs(lo + L[0] * e[0], [1])
        else:
            bcs += self._vertex_bcs(lo + L[0] * e[0], [1, 2])
            bcs += self._vertex_bcs(lo + L[1] * e[1], [2])
        return bcs

    # ---------------------------------------------------------------- solves
    def _solve_dirichlet(self, faces, options, prefix) -> list[dolfinx.fem.Function]:
        """Total fields with u = E x on ``faces`` and zero traction elsewhere."""
        dofs = self._face_dofs(faces)
        g = dolfinx.fem.Function(self.V)
        bc = dolfinx.fem.dirichletbc(g, dofs)
        A = dolfinx.fem.petsc.assemble_matrix(self.a, bcs=[bc])
        A.assemble()
        ksp = make_ksp(A, prefix, options)
        b = dolfinx.fem.petsc.create_vector(self.V)
        fields = []
        try:
            for k, E in enumerate(self.loads):
                g.interpolate(lambda x, E=E: E @ x[: self.dim])  # u = E x (exact in V)
                with b.localForm() as loc:
                    loc.set(0.0)
                dolfinx.fem.petsc.assemble_vector(b, self.zero_rhs)  # type: ignore[arg-type]
                dolfinx.fem.petsc.apply_lifting(b, [self.a], bcs=[[bc]])
                b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)  # type: ignore[arg-type]
                dolfinx.fem.petsc.set_bc(b, [bc])
                u = dolfinx.fem.Function(self.V, name=f"u_{k}")
                solve_checked(ksp, b, u.x.petsc_vec, f"window problem ({faces}) load {k}")
                u.x.scatter_forward()
                fields.append(u)
        finally:
            for obj in (ksp, A, b):
                obj.destroy()
        return fields

    def _solve_static(self, options, prefix) -> list[dolfinx.fem.Function]:
        """Total fields with traction Sigma n on the whole boundary, pinned corners."""
        bcs = self._pins()
        A = dolfinx.fem.petsc.assemble_matrix(self.a, bcs=bcs)
        A.assemble()
        ksp = make_ksp(A, prefix, options)
        b = dolfinx.fem.petsc.create_vector(self.V)
        fields = []
        try:
            for k, S in enumerate(self.loads):
                self.E.value[...] = S
                with b.localForm() as loc:
                    loc.set(0.0)
                dolfinx.fem.petsc.assemble_vector(b, self.static_rhs)  # type: ignore[arg-type]
                b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)  # type: ignore[arg-type]
                dolfinx.fem.petsc.set_bc(b, bcs)
                u = dolfinx.fem.Function(self.V, name=f"u_{k}")
                solve_checked(ksp, b, u.x.petsc_vec, f"window problem (SUBC) load {k}")
                u.x.scatter_forward()
                fields.append(u)
        finally:
            for obj in (ksp, A, b):
                obj.destroy()
        return fields

    def apparent(self, bc: str, options: Mapping[str, Any] | None, prefix: str
                 ) -> ApparentTensor:
        r"""Solve the window under ``bc`` for every basis load; the apparent tensor.

        :math:`C^{app} = [\langle\sigma\rangle_K][\langle\varepsilon\rangle_K]^{-1}` and the
        Hill--Mandel residuals (module docstring); the KSP uses ``options`` under ``prefix``.
        """
        bc = check_bc(bc)
        d = self.dim
        if bc == "kubc":
            fields = self._solve_dirichlet([(i, s) for i in range(d) for s in (0, 1)], options,
                                           prefix)
        elif bc == "mixed":
            fields = self._solve_dirichlet([(0, 0), (1, 0)], options, prefix)
        elif bc == "subc":
            fields = self._solve_static(options, prefix)
        else:
            if self._pmap is None:
                self._pmap = periodic_map(self.V)
            fields = solve_cell_problems(self.V, self.a, self.periodic_rhs, self.E, self.loads,
                                          options, prefix, self._pmap)
        comm = self.mesh.comm
        m = len(self.loads)
        strain, stress, energy = np.zeros((m, m)), np.zeros((m, m)), np.zeros(m)

        def avg(form):
            return comm.allreduce(dolfinx.fem.assemble_scalar(form)) / self.volume

        for k, u in enumerate(fields):
            self.E.value[...] = self.loads[k] if bc == "pbc" else 0.0
            self.w.x.array[:] = u.x.array
            for i, B in enumerate(self.loads):
                self.B.value[...] = B
                strain[i, k] = avg(self.mean_strain_form)
                stress[i, k] = avg(self.mean_stress_form)
            energy[k] = avg(self.energy_form)
        hm = np.abs(energy - np.einsum("ik,ik->k", stress, strain)) / np.abs(energy)
        return ApparentTensor(tensor=stress @ np.linalg.inv(strain), bc=bc, mean_strain=strain,
                              mean_stress=stress, mean_energy=energy,
                              hill_mandel_residuals=hm, hill_mandel_residual=float(hm.max()))


def apparent_conductivity(
    window_mesh: dolfinx.mesh.Mesh,
    a: Coefficient,
    bc: str = "pbc",
    *,
    degree: int = 1,
    petsc_options: Mapping[str, Any] | None = None,
    petsc_options_prefix: str = "msfem_rve_conductivity_",
    quadrature_degree: int | None = None,
) -> ApparentTensor:
    r"""Apparent conductivity of a window under ``bc`` (see the module docstring).

    Solves :math:`-\operatorname{div}(a\nabla u) = 0` in the window with, for each
    :math:`\bar G = e_j` (KUBC, PBC, mixed: :math:`u = \bar G\cdot x` on the Dirichlet part,
    resp. :math:`u - \bar G\cdot x` periodic) or :math:`\bar q = e_j` (SUBC:
    :math:`a\nabla u\cdot n = \bar q\cdot n`), and returns
    :math:`A^{app} = [\langle a\nabla u\rangle][\langle\nabla u\rangle]^{-1}` with the
    Hill--Mandel residuals (Hazanov & Huet 1994).

    Args:
        window_mesh: Box-shaped mesh (for ``"pbc"`` with matching opposite faces).
        a: Scalar or tensor coefficient (``y -> UFL``, Function or number).
        bc: ``"kubc"``, ``"subc"``, ``"pbc"`` or ``"mixed"``.
        degree: Lagrange degree.
        petsc_options: PETSc options updating the MUMPS default.
        petsc_options_prefix: KSP options prefix.
        quadrature_degree: Quadrature degree of every form (default: estimated).

    Returns:
        The :class:`ApparentTensor`.
    """
    bc = check_bc(bc)
    expr = coefficient_expression(window_mesh, a)
    check_positive_definite(window_mesh, expr, "a")
    with dolfinx.common.Timer("~msfem: apparent properties"):
        win = WindowProblem(window_mesh, False, lambda g: diffusive_flux(expr, g), degree,
                            quadrature_degree)
        return win.apparent(bc, petsc_options, petsc_options_prefix)


def apparent_elasticity(
    window_mesh: dolfinx.mesh.Mesh,
    lmbda: Coefficient,
    mu: Coefficient,
    bc: str = "pbc",
    *,
    degree: int = 1,
    petsc_options: Mapping[str, Any] | None = None,
    petsc_options_prefix: str = "msfem_rve_elasticity_",
    quadrature_degree: int | None = None,
) -> ApparentTensor:
    r"""Apparent stiffness (Mandel notation) of a window under ``bc``.

    Solves :math:`-\operatorname{div} C\varepsilon(u) = 0`,
    :math:`C\varepsilon = \lambda\,\mathrm{tr}\,\varepsilon\,I + 2\mu\varepsilon` (plane strain
    in 2D), with :math:`u = \bar E x` on :math:`\partial\Omega` (KUBC),
    :math:`\sigma n = \bar\Sigma n` (SUBC, rigid motions pinned), :math:`u - \bar E x`
    periodic (PBC) or the bad ``"mixed"`` condition, for the Mandel basis loads; returns
    :math:`C^{app} = [\langle\sigma\rangle][\langle\varepsilon\rangle]^{-1}` and the
    Hill--Mandel residuals (Hazanov & Huet 1994; Kanit et al. 2003).

    Args:
        window_mesh: Box-shaped mesh (2D or 3D).
        lmbda: Lamé :math:`\lambda(y)`.
        mu: Lamé :math:`\mu(y)`.
        bc: ``"kubc"``, ``"subc"``, ``"pbc"`` or ``"mixed"``.
        degree: Lagrange degree.
        petsc_options: PETSc options updating the MUMPS default.
        petsc_options_prefix: KSP options prefix.
        quadrature_degree: Quadrature degree of every form (default: estimated).

    Returns:
        The :class:`ApparentTensor`.
    """
    bc = check_bc(bc)
    lam = coefficient_expression(window_mesh, lmbda)
    mu_ = coefficient_expression(window_mesh, mu)
    check_lame(window_mesh, lam, mu_)
    with dolfinx.common.Timer("~msfem: apparent properties"):
        win = WindowProblem(window_mesh, True, lame_stress(lam, mu_), degree, quadrature_degree)
        return win.apparent(bc, petsc_options, petsc_options_prefix)
