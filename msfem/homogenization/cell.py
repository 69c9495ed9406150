r"""Periodic cell problems and effective (homogenized) tensors.

**Diffusion.** For a Y-periodic, uniformly positive definite :math:`a(y)` (scalar or
:math:`d\times d`) and each unit vector :math:`e_j`, find :math:`\chi_j \in H^1_\#(Y)` with
:math:`\langle\chi_j\rangle = 0` and

.. math:: -\operatorname{div}_y\bigl(a(y)(e_j + \nabla_y\chi_j)\bigr) = 0 \quad\text{in } Y,
   \qquad\text{i.e.}\quad
   \int_Y a\nabla\chi_j\cdot\nabla v\,dy = -\int_Y a e_j\cdot\nabla v\,dy
   \quad\forall v\in H^1_\#(Y).

The effective tensor has two equivalent expressions,

.. math:: A^*_{ij} = \langle a(e_j + \nabla\chi_j)\cdot(e_i + \nabla\chi_i)\rangle
   \quad\text{(energy)}, \qquad
   A^*_{ij} = \langle a(e_j + \nabla\chi_j)\rangle\cdot e_i \quad\text{(flux)},

with :math:`\langle f\rangle = |Y|^{-1}\int_Y f\,dy`. Their difference is
:math:`\langle a(e_j+\nabla\chi_j)\cdot\nabla\chi_i\rangle`, which vanishes for the
Galerkin solution too (:math:`\chi_i` is a test function), so it measures the algebraic
solve; the energy form equals the flux form only for symmetric :math:`a`.

**Elasticity.** For :math:`C(y)` isotropic with Lamé fields :math:`\lambda(y), \mu(y)`
(:math:`\sigma = \lambda\,\mathrm{tr}\,\varepsilon\, I + 2\mu\varepsilon`; in 2D this is
plane strain) and each Mandel basis strain :math:`E_K` (2D: :math:`e_1\otimes e_1`,
:math:`e_2\otimes e_2`, :math:`(e_1\otimes e_2 + e_2\otimes e_1)/\sqrt2`), find
:math:`\chi_K` periodic with zero mean and

.. math:: -\operatorname{div}_y\bigl(C(y)(E_K + \varepsilon_y(\chi_K))\bigr) = 0, \qquad
   C^*_{KL} = \langle C(E_L + \varepsilon(\chi_L)) : (E_K + \varepsilon(\chi_K))\rangle,

so :math:`C^*` is in Mandel notation (:math:`\Sigma = C^* E` with
:math:`(\Sigma_{11}, \Sigma_{22}, \sqrt2\Sigma_{12})`).

References:
    A. Bensoussan, J.-L. Lions, G. Papanicolaou, *Asymptotic Analysis for Periodic
    Structures*, North-Holland 1978, ch. 1 §2; G. Allaire, *Shape optimization by the
    homogenization method*, Springer 2002, §1.3 (cell problems, energy and flux formulas);
    E. Sanchez-Palencia, *Non-homogeneous media and vibration theory*, Springer 1980
    (elasticity).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import basix
import dolfinx
import dolfinx.common
import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
import numpy as np
import ufl
from petsc4py import PETSc

from msfem import (
    _runtime,  # noqa: F401  (imports dolfinx_solver first when installed)
    solvers,
)
from msfem.coefficients import smallest_eigenvalue
from msfem.homogenization.periodic import PeriodicMap, periodic_map, subtract_mean
from msfem.solvers import DIRECT_OPTIONS

__all__ = [
    "Coefficient",
    "DIRECT_OPTIONS",
    "EffectiveTensor",
    "HomogenizationSolverError",
    "cellwise_constant",
    "check_positive_definite",
    "check_lame",
    "coefficient_expression",
    "diffusive_flux",
    "effective_elasticity",
    "effective_tensor",
    "estimate_quadrature_degree",
    "lame_stress",
    "make_ksp",
    "mandel_basis",
    "solve_cell_problems",
    "solve_checked",
    "tagged_constant",
]

#: A coefficient: ``y -> UFL expression`` (``y = ufl.SpatialCoordinate(mesh)``), a dolfinx
#: Function on the cell mesh (or any UFL expression on it), or a number.
Coefficient = Union[Callable[[Any], Any], dolfinx.fem.Function, float]

#: Default solver of every homogenization solve: :data:`msfem.solvers.DIRECT_OPTIONS`
#: (LU by MUMPS, serial and parallel).


class HomogenizationSolverError(solvers.SolverError):
    """A PETSc solve of a cell or RVE problem failed or diverged."""


@dataclass(frozen=True)
class EffectiveTensor:
    r"""An effective tensor with both of its formulas and the correctors.

    Attributes:
        tensor: Energy formula, :math:`\langle a(e_j+\nabla\chi_j)\cdot(e_i+\nabla\chi_i)
            \rangle` (diffusion, :math:`d\times d`) or :math:`C^*` in Mandel notation
            (elasticity, 3x3 in 2D, 6x6 in 3D).
        flux_tensor: Flux formula, :math:`\langle a(e_j+\nabla\chi_j)\rangle\cdot e_i`.
        correctors: The zero-mean periodic correctors :math:`\chi_j` (or :math:`\chi_K`).
        energy_flux_defect: :math:`\max_{ij}|A^E_{ij}-A^F_{ij}| / \max_{ij}|A^E_{ij}|`.
        volume: :math:`|Y|`.
    """

    tensor: np.ndarray
    flux_tensor: np.ndarray
    correctors: tuple[dolfinx.fem.Function, ...]
    energy_flux_defect: float
    volume: float


# --------------------------------------------------------------------------- solvers
def make_ksp(A: PETSc.Mat, prefix: str, options: Mapping[str, Any] | None) -> PETSc.KSP:
    """KSP on ``A`` from :data:`DIRECT_OPTIONS` updated by ``options`` under ``prefix``."""
    return solvers.make_ksp(A, prefix, options, DIRECT_OPTIONS)


def solve_checked(ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec, what: str) -> None:
    """Solve ``A x = b``; raise :class:`HomogenizationSolverError` naming the KSP reason."""
    try:
        solvers.solve(ksp, b, x, what)
    except solvers.SolverError as err:
        raise HomogenizationSolverError(str(err)) from err


# ---------------------------------------------------------------------- coefficients
def coefficient_expression(mesh: dolfinx.mesh.Mesh, a: Coefficient) -> Any:
    """Turn a :data:`Coefficient` into a UFL expression on ``mesh``."""
    if isinstance(a, ufl.core.expr.Expr):  # Function, Constant or any UFL expression
        return a
    if isinstance(a, (int, float, np.floating, np.integer)):
        return dolfinx.fem.Constant(mesh, dolfinx.default_scalar_type(a))
    if isinstance(a, np.ndarray):
        return dolfinx.fem.Constant(mesh, np.asarray(a, dtype=PETSc.ScalarType))
    if callable(a):
        return ufl.as_ufl(a(ufl.SpatialCoordinate(mesh)))
    raise TypeError(f"unsupported coefficient {a!r}: pass y -> UFL, a Function or a number")


def cellwise_constant(
    mesh: dolfinx.mesh.Mesh, values_at: Callable[[np.ndarray], np.ndarray], name: str = "a"
) -> dolfinx.fem.Function:
    """A DG0 Function whose value on each cell is ``values_at(midpoint)``.

    ``values_at`` receives the midpoints of all local cells (owned and ghost), shape
    ``(num_cells, gdim)``, and returns one value per cell, so the field depends only on
    the geometry, never on the parallel partition.
    """
    tdim = mesh.topology.dim
    imap = mesh.topology.index_map(tdim)
    n = imap.size_local + imap.num_ghosts
    cells = np.arange(n, dtype=np.int32)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells)[:, : mesh.geometry.dim]
    Q = dolfinx.fem.functionspace(mesh, ("DG", 0))
    f = dolfinx.fem.Function(Q, name=name)
    f.x.array[Q.dofmap.list[:n, 0]] = np.asarray(values_at(mid), dtype=float).reshape(n)
    return f


def tagged_constant(
    mesh: dolfinx.mesh.Mesh, cell_tags: dolfinx.mesh.MeshTags, values: Mapping[int, float],
    name: str = "a",
) -> dolfinx.fem.Function:
    """A DG0 Function equal to ``values[tag]`` on the cells tagged ``tag`` (e.g. gmsh phases)."""
    Q = dolfinx.fem.functionspace(mesh, ("DG", 0))
    f = dolfinx.fem.Function(Q, name=name)
    for tag, val in values.items():
        cells = cell_tags.find(tag)
        f.x.array[Q.dofmap.list[cells, 0]] = val
    f.x.scatter_forward()
    return f


def _sample_midpoints(mesh: dolfinx.mesh.Mesh, expr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``expr`` at the midpoints of the owned cells, and the midpoints."""
    tdim = mesh.topology.dim
    n = mesh.topology.index_map(tdim).size_local
    cells = np.arange(n, dtype=np.int32)
    ref = basix.geometry(mesh.basix_cell()).mean(axis=0)[None, :]
    if not ufl.domain.extract_domains(expr):  # constant-valued UFL: attach the mesh
        expr = dolfinx.fem.Constant(mesh, dolfinx.default_scalar_type(1.0)) * expr
    values = dolfinx.fem.Expression(expr, ref).eval(mesh, cells).reshape(n, -1)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells)[:, : mesh.geometry.dim]
    return values, mid


def check_positive_definite(mesh: dolfinx.mesh.Mesh, expr: Any, name: str = "a") -> None:
    r"""Refuse a coefficient that is not positive definite at some cell midpoint.

    Scalars must be :math:`> 0`, :math:`d\times d` tensors must have a positive definite
    symmetric part (:func:`msfem.coefficients.smallest_eigenvalue`, the test shared with
    :func:`msfem.coefficients.check_positive`). Collective: every rank raises the same
    error.

    Raises:
        ValueError: naming the midpoint and the value found there.
    """
    shape = ufl.shape(expr)
    if isinstance(expr, dolfinx.fem.Constant):
        values = np.atleast_1d(expr.value).reshape(1, -1)
        mid = np.full((1, mesh.geometry.dim), np.nan)
    else:
        values, mid = _sample_midpoints(mesh, expr)
    error = None
    k, worst = smallest_eigenvalue(values.reshape((-1, *shape)))
    if not worst > 0:
        error = (f"coefficient {name} is not positive definite at y = "
                 f"{np.array2string(mid[k], precision=6)}: value "
                 f"{np.array2string(np.real(values[k]), precision=6)} "
                 f"(smallest eigenvalue {worst:.6g})")
    errors = [e for e in mesh.comm.allgather(error) if e]
    if errors:
        raise ValueError(errors[0])


def estimate_quadrature_degree(integrand: Any, requested: int | None = None) -> int:
    r"""Quadrature degree of the cell and window forms: ``requested``, else an estimate.

    For a bilinear ``integrand`` of Lagrange degree :math:`k`: UFL's estimate of its total
    polynomial degree, capped at :math:`2k + 4` (oscillating coefficients make UFL's
    estimate large), and at least :math:`2k - 2` (the degree of
    :math:`\nabla u\cdot\nabla v` on affine simplices) and 1.
    """
    if requested is not None:
        return int(requested)
    from ufl.algorithms import estimate_total_polynomial_degree
    from ufl.algorithms.apply_algebra_lowering import apply_algebra_lowering

    est = int(estimate_total_polynomial_degree(apply_algebra_lowering(integrand)))
    element_degree = max(int(arg.ufl_element().embedded_superdegree)
                         for arg in ufl.algorithms.extract_arguments(integrand))
    return max(2 * element_degree - 2, min(est, 2 * element_degree + 4), 1)


def diffusive_flux(a: Any, g: Any) -> Any:
    r"""The flux :math:`a g` of a scalar or :math:`a\cdot g` of a tensor coefficient."""
    return a * g if ufl.shape(a) == () else ufl.dot(a, g)


def mandel_basis(dim: int) -> list[np.ndarray]:
    r"""Mandel basis of symmetric :math:`d\times d` tensors (orthonormal for ``:``).

    2D: :math:`(11, 22, 12)`; 3D: :math:`(11, 22, 33, 23, 13, 12)`, shear entries
    :math:`(e_i\otimes e_j + e_j\otimes e_i)/\sqrt2`.
    """
    pairs = [(0, 0), (1, 1), (0, 1)] if dim == 2 else [(0, 0), (1, 1), (2, 2), (1, 2),
                                                        (0, 2), (0, 1)]
    basis = []
    for i, j in pairs:
        E = np.zeros((dim, dim))
        if i == j:
            E[i, i] = 1.0
        else:
            E[i, j] = E[j, i] = 1.0 / np.sqrt(2.0)
        basis.append(E)
    return basis


# ------------------------------------------------------------------ generic solver
def solve_cell_problems(
    V: dolfinx.fem.FunctionSpace,
    bilinear: dolfinx.fem.Form,
    rhs: dolfinx.fem.Form,
    load: dolfinx.fem.Constant,
    loads: Sequence[np.ndarray],
    petsc_options: Mapping[str, Any] | None,
    prefix: str,
    pmap: PeriodicMap | None = None,
) -> list[dolfinx.fem.Function]:
    r"""Solve :math:`P^\top A P\hat\chi = P^\top b(E)` for each macroscopic load ``E``.

    The periodic problems :math:`\int_Y \sigma(\nabla\chi)\cdot\nabla v = -\int_Y
    \sigma(E)\cdot\nabla v` for all periodic :math:`v` (``bilinear`` and ``rhs``, the
    load swapped into the constant ``load``); used for the cell problems of this module
    and the periodic windows of :mod:`msfem.homogenization.apparent`. One factorisation,
    one solve per load; the corner dofs are pinned and the mean is subtracted afterwards
    (see :mod:`msfem.homogenization.periodic`). A given ``pmap`` is reused (and not
    destroyed).
    """
    own_map = pmap is None
    pmap = periodic_map(V) if pmap is None else pmap
    A = dolfinx.fem.petsc.assemble_matrix(bilinear)
    A.assemble()
    A_red = pmap.reduce_matrix(A)
    pmap.pin(A_red)
    ksp = make_ksp(A_red, prefix, petsc_options)
    b = dolfinx.fem.petsc.create_vector(V)
    b_red = pmap.create_reduced_vector()
    x_red = pmap.create_reduced_vector()
    r0, r1 = b_red.getOwnershipRange()
    pinned = [int(i) for i in pmap.corner_dofs if r0 <= i < r1]
    correctors = []
    try:
        for k, E in enumerate(loads):
            load.value[...] = E
            with b.localForm() as loc:
                loc.set(0.0)
            dolfinx.fem.petsc.assemble_vector(b, rhs)  # type: ignore[arg-type]
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)  # type: ignore[arg-type]
            pmap.reduce_vector(b, b_red)
            b_red.setValues(pinned, np.zeros(len(pinned)))  # type: ignore[arg-type]
            b_red.assemble()
            solve_checked(ksp, b_red, x_red, f"cell problem {k}")
            chi = dolfinx.fem.Function(V, name=f"chi_{k}")
            pmap.expand(x_red, chi)
            subtract_mean(chi)
            correctors.append(chi)
    finally:
        for obj in (ksp, A, A_red, b, b_red, x_red):
            obj.destroy()
        if own_map:
            pmap.destroy()
    return correctors


def _averages(
    mesh: dolfinx.mesh.Mesh,
    correctors: Sequence[dolfinx.fem.Function],
    loads: Sequence[np.ndarray],
    stress: Callable[[Any], Any],
    grad: Callable[[Any], Any],
    quadrature_degree: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Energy and flux matrices with one compiled form each (loads and correctors swapped in)."""
    comm = mesh.comm
    V = correctors[0].function_space
    shape = np.shape(loads[0])
    Ei = dolfinx.fem.Constant(mesh, np.zeros(shape, dtype=PETSc.ScalarType))
    Ej = dolfinx.fem.Constant(mesh, np.zeros(shape, dtype=PETSc.ScalarType))
    wi, wj = dolfinx.fem.Function(V), dolfinx.fem.Function(V)
    dx = ufl.dx(domain=mesh, metadata={"quadrature_degree": quadrature_degree})
    energy = dolfinx.fem.form(ufl.inner(stress(Ej + grad(wj)), Ei + grad(wi)) * dx)
    flux = dolfinx.fem.form(ufl.inner(stress(Ej + grad(wj)), Ei) * dx)
    volume = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * dx)))
    n = len(loads)
    AE, AF = np.zeros((n, n)), np.zeros((n, n))
    for j in range(n):
        Ej.value[...] = loads[j]
        wj.x.array[:] = correctors[j].x.array
        for i in range(n):
            Ei.value[...] = loads[i]
            wi.x.array[:] = correctors[i].x.array
            AE[i, j] = comm.allreduce(dolfinx.fem.assemble_scalar(energy)) / volume
            AF[i, j] = comm.allreduce(dolfinx.fem.assemble_scalar(flux)) / volume
    return AE, AF, float(volume)


def _result(AE, AF, correctors, volume) -> EffectiveTensor:
    scale = max(float(np.abs(AE).max()), np.finfo(float).tiny)
    return EffectiveTensor(tensor=AE, flux_tensor=AF, correctors=tuple(correctors),
                           energy_flux_defect=float(np.abs(AE - AF).max() / scale),
                           volume=volume)


# ------------------------------------------------------------------ public solvers
def effective_tensor(
    cell_mesh: dolfinx.mesh.Mesh,
    a: Coefficient,
    *,
    degree: int = 1,
    petsc_options: Mapping[str, Any] | None = None,
    petsc_options_prefix: str = "msfem_cell_diffusion_",
    quadrature_degree: int | None = None,
) -> EffectiveTensor:
    r"""Effective diffusion tensor :math:`A^*` from the periodic cell problems.

    Solves, for :math:`j = 1..d`, :math:`\chi_j\in V_{h,\#}` with zero mean and

    .. math:: \int_Y a(e_j + \nabla\chi_j)\cdot\nabla v\,dy = 0 \quad \forall v\in V_{h,\#},

    then :math:`A^*_{ij} = \langle a(e_j+\nabla\chi_j)\cdot(e_i+\nabla\chi_i)\rangle`
    (``tensor``) and :math:`\langle a(e_j+\nabla\chi_j)\rangle\cdot e_i` (``flux_tensor``);
    Bensoussan--Lions--Papanicolaou 1978, ch. 1 (2.11)-(2.13).

    Args:
        cell_mesh: Box-shaped cell whose opposite faces have matching nodes.
        a: Scalar or :math:`d\times d` coefficient: ``y -> UFL`` with
            ``y = ufl.SpatialCoordinate(cell_mesh)``, a dolfinx Function, or a number.
        degree: Lagrange degree of the correctors.
        petsc_options: PETSc options updating :data:`DIRECT_OPTIONS` (MUMPS LU).
        petsc_options_prefix: Options prefix of the KSP.
        quadrature_degree: Quadrature degree of every form (default: UFL's estimate for
            the bilinear form, capped at ``2 * degree + 4``). The same rule in the solve
            and in the averages makes energy and flux formulas agree to round-off.

    Returns:
        The :class:`EffectiveTensor`.

    Raises:
        ValueError: if ``a`` is not positive definite at a cell midpoint, or the mesh is not
            periodic.
        HomogenizationSolverError: if the KSP fails.
    """
    with dolfinx.common.Timer("~msfem: homogenization cell problems"):
        mesh = cell_mesh
        d = mesh.geometry.dim
        a_expr = coefficient_expression(mesh, a)
        if ufl.shape(a_expr) not in ((), (d, d)):
            raise ValueError(f"coefficient shape {ufl.shape(a_expr)} is neither () nor {(d, d)}")
        check_positive_definite(mesh, a_expr, "a")
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        load = dolfinx.fem.Constant(mesh, np.zeros(d, dtype=PETSc.ScalarType))
        integrand = ufl.inner(diffusive_flux(a_expr, ufl.grad(u)), ufl.grad(v))
        q = estimate_quadrature_degree(integrand, quadrature_degree)
        dx = ufl.dx(domain=mesh, metadata={"quadrature_degree": q})
        bilinear = dolfinx.fem.form(integrand * dx)
        rhs = dolfinx.fem.form(-ufl.inner(diffusive_flux(a_expr, load), ufl.grad(v)) * dx)
        loads = list(np.eye(d))
        chis = solve_cell_problems(V, bilinear, rhs, load, loads, petsc_options,
                                    petsc_options_prefix)
        AE, AF, vol = _averages(mesh, chis, loads, lambda g: diffusive_flux(a_expr, g),
                                ufl.grad, q)
        return _result(AE, AF, chis, vol)


def lame_stress(lmbda: Any, mu: Any) -> Callable[[Any], Any]:
    r"""Isotropic Hooke law (plane strain in 2D).

    :math:`\sigma(\varepsilon) = \lambda\,\mathrm{tr}\,\varepsilon\,I + 2\mu\varepsilon`.
    """

    def stress(eps: Any) -> Any:
        return lmbda * ufl.tr(eps) * ufl.Identity(ufl.shape(eps)[0]) + 2 * mu * eps

    return stress


def check_lame(mesh: dolfinx.mesh.Mesh, lmbda: Any, mu: Any) -> None:
    r"""Refuse Lamé fields with :math:`\mu \le 0` or bulk modulus :math:`\le 0`.

    The bulk modulus is :math:`\lambda+\mu` in 2D plane strain, :math:`\lambda + 2\mu/3` in 3D.
    """
    d = mesh.geometry.dim
    check_positive_definite(mesh, mu, "mu")
    check_positive_definite(mesh, lmbda + (1.0 if d == 2 else 2.0 / 3.0) * mu,
                            "bulk modulus (lambda + mu in 2D, lambda + 2 mu / 3 in 3D)")


def effective_elasticity(
    cell_mesh: dolfinx.mesh.Mesh,
    lmbda: Coefficient,
    mu: Coefficient,
    *,
    degree: int = 1,
    petsc_options: Mapping[str, Any] | None = None,
    petsc_options_prefix: str = "msfem_cell_elasticity_",
    quadrature_degree: int | None = None,
) -> EffectiveTensor:
    r"""Effective stiffness :math:`C^*` (Mandel notation) from the periodic cell problems.

    For each Mandel basis strain :math:`E_K` (:func:`mandel_basis`) solves
    :math:`\chi_K\in V_{h,\#}^d` with zero mean and

    .. math:: \int_Y C(y)(E_K + \varepsilon(\chi_K)) : \varepsilon(v)\,dy = 0
       \quad\forall v\in V_{h,\#}^d,

    :math:`C(y)\varepsilon = \lambda(y)\,\mathrm{tr}\,\varepsilon\,I + 2\mu(y)\varepsilon`
    (plane strain in 2D), then
    :math:`C^*_{KL} = \langle C(E_L+\varepsilon(\chi_L)) : (E_K+\varepsilon(\chi_K))\rangle`
    (``tensor``) and :math:`\langle C(E_L+\varepsilon(\chi_L))\rangle : E_K`
    (``flux_tensor``); Sanchez-Palencia 1980, ch. 6.

    Args:
        cell_mesh: Box-shaped cell with matching nodes on opposite faces (2D or 3D).
        lmbda: Lamé :math:`\lambda(y)` (callable ``y -> UFL``, Function or number).
        mu: Lamé :math:`\mu(y)`.
        degree: Lagrange degree of the correctors.
        petsc_options: PETSc options updating :data:`DIRECT_OPTIONS`.
        petsc_options_prefix: Options prefix of the KSP.
        quadrature_degree: Quadrature degree of every form (default: UFL's estimate for
            the bilinear form, capped at ``2 * degree + 4``). The same rule in the solve
            and in the averages makes energy and flux formulas agree to round-off.

    Returns:
        The :class:`EffectiveTensor` (3x3 in 2D, 6x6 in 3D).

    Raises:
        ValueError: if :math:`\mu\le0` or the bulk modulus is :math:`\le 0` at a midpoint.
        HomogenizationSolverError: if the KSP fails.
    """
    with dolfinx.common.Timer("~msfem: homogenization cell problems"):
        mesh = cell_mesh
        d = mesh.geometry.dim
        lam = coefficient_expression(mesh, lmbda)
        mu_ = coefficient_expression(mesh, mu)
        check_lame(mesh, lam, mu_)
        stress = lame_stress(lam, mu_)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree, (d,)))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        load = dolfinx.fem.Constant(mesh, np.zeros((d, d), dtype=PETSc.ScalarType))
        integrand = ufl.inner(stress(ufl.sym(ufl.grad(u))), ufl.sym(ufl.grad(v)))
        q = estimate_quadrature_degree(integrand, quadrature_degree)
        dx = ufl.dx(domain=mesh, metadata={"quadrature_degree": q})
        bilinear = dolfinx.fem.form(integrand * dx)
        rhs = dolfinx.fem.form(-ufl.inner(stress(load), ufl.sym(ufl.grad(v))) * dx)
        loads = mandel_basis(d)
        chis = solve_cell_problems(V, bilinear, rhs, load, loads, petsc_options,
                                    petsc_options_prefix)
        AE, AF, vol = _averages(mesh, chis, loads, stress, lambda w: ufl.sym(ufl.grad(w)), q)
        return _result(AE, AF, chis, vol)
