r"""Periodic homogenization, effective tensors and RVE apparent properties.

The workflow, one module per step:

1. **Periodicity** (:mod:`~msfem.homogenization.periodic`): on a box cell
   :math:`Y` with matching nodes on opposite faces, the map :math:`P` from periodic master
   dofs to all dofs turns a Galerkin system into :math:`P^\top A P\,\hat u = P^\top b`,
   :math:`u = P\hat u` (no dolfinx_mpc); the kernel is removed by pinning a corner.
2. **Cell problems** (:mod:`~msfem.homogenization.cell`): find :math:`\chi_j`
   Y-periodic with zero mean,

   .. math:: -\operatorname{div}_y\bigl(a(y)(e_j + \nabla_y\chi_j)\bigr) = 0,

   and :math:`A^*_{ij} = \langle a(e_j+\nabla\chi_j)\cdot(e_i+\nabla\chi_i)\rangle
   = \langle a(e_j+\nabla\chi_j)\rangle\cdot e_i`; elasticity likewise with the Mandel
   basis strains, giving :math:`C^*` in Mandel notation.
3. **Oracles** (:mod:`~msfem.homogenization.bounds`): Voigt/Reuss, Hashin--Shtrikman,
   Hill's equal-shear formula, Perrins--McKenzie--McPhedran for square arrays of discs.
4. **Macro problems** (:mod:`~msfem.homogenization.macro`): the homogenized solution
   :math:`u_0` and the first-order corrector :math:`u_1` of a problem that declares its
   operator (``"diffusion"`` or ``"elasticity"``).
5. **Windows** (:mod:`~msfem.homogenization.apparent`): apparent tensors under KUBC, SUBC,
   PBC (and a deliberately bad mixed condition) with the Hill--Mandel residual
   :math:`|\langle\sigma:\varepsilon\rangle - \langle\sigma\rangle:\langle\varepsilon\rangle|
   / |\langle\sigma:\varepsilon\rangle|`.
6. **Random microstructures** (:mod:`~msfem.homogenization.microstructures`): seeded random
   checkerboards and random sequential addition of discs, independent of the partition.
7. **RVE size** (:mod:`~msfem.homogenization.rve`): the SVE-to-RVE study of Kanit et al.
   (2003), :math:`\varepsilon_{rel} = 2D(V)/(\bar Z\sqrt n)`.

The commands ``msfem homogenize`` and ``msfem rve`` (:mod:`~msfem.homogenization.cli`) read
their configuration through :mod:`~msfem.homogenization.schema`, build unit cells in
:mod:`~msfem.homogenization.unit_cell`, check results in
:mod:`~msfem.homogenization.verification` and write them with
:mod:`~msfem.homogenization.report`.

Every solve is a PETSc KSP (default MUMPS LU) configured by an options dict under a
unique prefix; the converged reason is checked.
"""

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)
from msfem.homogenization.apparent import (
    BOUNDARY_CONDITIONS,
    ApparentTensor,
    apparent_conductivity,
    apparent_elasticity,
)
from msfem.homogenization.bounds import (
    hashin_shtrikman,
    hashin_shtrikman_plane_strain,
    hill_equal_shear,
    perrins,
    reuss,
    voigt,
)
from msfem.homogenization.cell import (
    DIRECT_OPTIONS,
    EffectiveTensor,
    HomogenizationSolverError,
    cellwise_constant,
    effective_elasticity,
    effective_tensor,
    mandel_basis,
    tagged_constant,
)
from msfem.homogenization.macro import (
    cell_solution,
    corrector_solution,
    homogenized_problem,
    homogenized_solution,
)
from msfem.homogenization.microstructures import (
    MICROSTRUCTURES,
    DiscPacking,
    random_checkerboard,
    random_inclusions,
    random_sequential_addition,
)
from msfem.homogenization.periodic import PeriodicMap, disc_cell, periodic_map, subtract_mean
from msfem.homogenization.rve import RVEStudy, rve_size_study

__all__ = [
    "MICROSTRUCTURES",
    "DiscPacking",
    "random_inclusions",
    "random_sequential_addition",
    "cell_solution",
    "corrector_solution",
    "homogenized_problem",
    "homogenized_solution",
    "BOUNDARY_CONDITIONS",
    "DIRECT_OPTIONS",
    "ApparentTensor",
    "EffectiveTensor",
    "HomogenizationSolverError",
    "PeriodicMap",
    "RVEStudy",
    "apparent_conductivity",
    "apparent_elasticity",
    "cellwise_constant",
    "disc_cell",
    "effective_elasticity",
    "effective_tensor",
    "hashin_shtrikman",
    "hashin_shtrikman_plane_strain",
    "hill_equal_shear",
    "mandel_basis",
    "periodic_map",
    "perrins",
    "random_checkerboard",
    "reuss",
    "rve_size_study",
    "subtract_mean",
    "tagged_constant",
    "voigt",
]
