r"""The unit cell :math:`Y = [0, 1]^2` of ``msfem homogenize``: mesh, phases, coefficients.

A validated :class:`~msfem.homogenization.schema.CellSpec` becomes a mesh of :math:`Y`, the
DG0 indicator :math:`\chi_2` of phase 2 (sampled at cell midpoints on the structured
meshes, exact cell tags on the gmsh disc cell), and the cell coefficients:

* conductivity, two phases: :math:`a = a_1 + (a_2 - a_1)\chi_2`;
* conductivity, Hou--Wu: :math:`a(y)` of :class:`msfem.coefficients.HouWu` at
  :math:`\varepsilon = 1` (the one definition of that coefficient in msfem), with its
  arithmetic and harmonic means :math:`\langle a\rangle`,
  :math:`\langle a^{-1}\rangle^{-1}` (the Voigt and Reuss bounds);
* elasticity: the Lamé fields :math:`\lambda = k - \mu`, :math:`\mu` (2D plane strain,
  bulk modulus :math:`k = \lambda + \mu`) of the two phases.
"""

from __future__ import annotations

import math
from typing import Any

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import numpy as np
import ufl
from mpi4py import MPI

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)
from msfem.coefficients import HouWu
from msfem.homogenization.cell import cellwise_constant, tagged_constant
from msfem.homogenization.periodic import disc_cell
from msfem.homogenization.schema import CellSpec

__all__ = [
    "build_cell",
    "cell_mean",
    "conductivity",
    "lame_fields",
    "two_phase",
]

#: Quadrature degree of the means of the (smooth, trigonometric) Hou--Wu coefficient.
MEAN_QUADRATURE_DEGREE = 8


def build_cell(spec: CellSpec, comm: MPI.Comm = MPI.COMM_WORLD
               ) -> tuple[dolfinx.mesh.Mesh, dolfinx.fem.Function | None]:
    r"""Build the cell mesh and the DG0 indicator :math:`\chi_2` of phase 2.

    Phase 2 (fraction :math:`f`) is :math:`y_{direction} < f` (laminate),
    :math:`(y_1 < \frac12) = (y_2 < \frac12)` (checkerboard),
    :math:`|y - \frac12|_\infty < \frac12\sqrt f` (inclusion), sampled at the cell
    midpoints of an ``n`` x ``n`` mesh; the disc of area :math:`f` is meshed by gmsh
    (:func:`~msfem.homogenization.periodic.disc_cell`) and tagged exactly.

    Returns:
        ``(mesh, chi_2)``; ``chi_2`` is ``None`` for the (single-phase) Hou--Wu cell.

    """
    micro = spec.microstructure
    f = 0.5 if spec.fraction is None else spec.fraction
    if micro == "disc":
        mesh, tags = disc_cell(comm, f, mesh_size=1.0 / spec.n, order=spec.order)
        return mesh, tagged_constant(mesh, tags, {1: 0.0, 2: 1.0}, name="chi_2")
    cell = dolfinx.mesh.CellType[spec.cell_type]
    mesh = dolfinx.mesh.create_unit_square(comm, spec.n, spec.n, cell)
    if micro == "laminate":
        def inside(y):
            return y[:, spec.direction] < f
    elif micro == "checkerboard":
        def inside(y):
            return (y[:, 0] < 0.5) == (y[:, 1] < 0.5)
    elif micro == "inclusion":
        def inside(y):
            return np.all(np.abs(y - 0.5) < 0.5 * math.sqrt(f), axis=1)
    else:
        return mesh, None
    return mesh, cellwise_constant(mesh, lambda y: inside(y).astype(float), name="chi_2")


def cell_mean(mesh: dolfinx.mesh.Mesh, expr: Any, quadrature_degree: int | None = None) -> float:
    r"""The mean :math:`\langle f\rangle = |Y|^{-1}\int_Y f\,dy` of a UFL expression."""
    md = {} if quadrature_degree is None else {"quadrature_degree": quadrature_degree}
    dx = ufl.dx(domain=mesh, metadata=md)
    comm = mesh.comm
    total = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * dx)))
    volume = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * dx)))
    return float(total / volume)


def two_phase(chi: dolfinx.fem.Function, v1: float, v2: float, name: str
              ) -> dolfinx.fem.Function:
    r"""DG0 field :math:`v_1 + (v_2 - v_1)\chi_2`."""
    out = dolfinx.fem.Function(chi.function_space, name=name)
    out.x.array[:] = v1 + (v2 - v1) * chi.x.array
    return out


def conductivity(spec: CellSpec, mesh: dolfinx.mesh.Mesh, chi: dolfinx.fem.Function | None
                 ) -> tuple[Any, tuple[float, float] | None]:
    r"""The cell conductivity :math:`a` and, for a continuous one, its means.

    Two phases: :math:`a = a_1 + (a_2 - a_1)\chi_2` (DG0), no means (the bounds use the
    phase fraction). Hou--Wu (``chi`` is ``None``): :math:`a(y)` of
    :class:`~msfem.coefficients.HouWu` with :math:`\varepsilon = 1` as a UFL callable of
    :math:`y`, and :math:`(\langle a\rangle, \langle a^{-1}\rangle^{-1})`.
    """
    if chi is not None:
        return two_phase(chi, spec.phase1[0], spec.phase2[0], "a"), None
    a = HouWu(eps=1.0, P=spec.P).symbolic
    a_y = a(ufl.SpatialCoordinate(mesh))
    means = (cell_mean(mesh, a_y, MEAN_QUADRATURE_DEGREE),
             1.0 / cell_mean(mesh, 1.0 / a_y, MEAN_QUADRATURE_DEGREE))
    return a, means


def lame_fields(spec: CellSpec, chi: dolfinx.fem.Function
                ) -> tuple[dolfinx.fem.Function, dolfinx.fem.Function]:
    r"""The Lamé fields :math:`\lambda = k - \mu` and :math:`\mu` of the two phases (DG0)."""
    (k1, m1), (k2, m2) = spec.phase1, spec.phase2
    return two_phase(chi, k1 - m1, k2 - m2, "lambda"), two_phase(chi, m1, m2, "mu")
