r"""Homogenized macro solution and the first-order corrector on the fine mesh.

For a periodic coefficient :math:`a(x/\varepsilon)` (a :class:`~msfem.coefficients.Field`
with period ``eps``) and the diffusion problem :math:`-\nabla\cdot(a\nabla u_\varepsilon)
= f`:

.. math::
    -\nabla\cdot(A^*\nabla u_0) = f, \qquad
    u_1 = u_0 + \varepsilon\,\chi_j(x/\varepsilon)\,\partial_j u_0,

with :math:`A^*` and :math:`\chi_j` from the cell problems of
:mod:`msfem.homogenization.cell` (Bensoussan, Lions & Papanicolaou 1978); for isotropic
elasticity with a periodic Young's modulus :math:`E(x/\varepsilon)` likewise
:math:`C^*` and :math:`\chi_K` over the Mandel basis strains. Which of the two a problem
is, is read from its declared :attr:`~msfem.problem.Problem.operator` (``"diffusion"``,
``"elasticity"``), never from its name; other forms are refused. Known limits
(REFERENCES.md §3): :math:`\|u_\varepsilon - u_0\|_{L^2} = O(\varepsilon)`,
:math:`\|u_\varepsilon - u_1\|_{H^1} = O(\sqrt\varepsilon)` on a bounded domain (the
corrector violates the boundary condition: boundary layer).

The cell problem is solved on ``COMM_SELF`` by every rank (it is small), so :math:`A^*`
and :math:`\chi` are bitwise identical on all ranks and independent of the partition;
:math:`u_0` is solved on the distributed fine mesh of the hierarchy, and :math:`u_1` is
interpolated at its fine dofs (:math:`\partial_j u_0` by a lumped :math:`L^2`
projection onto the fine Lagrange space).

Locally periodic coefficients :math:`a(x, x/\varepsilon)`
(:class:`~msfem.coefficients.LocallyPeriodic`): one cell problem per coarse cell K at its
centre :math:`x_K`, :math:`A^*(x) \approx A^*(x_K)` on K (an :math:`O(H)` approximation of
the slow variation). Every rank solves the cell problems of the coarse cells it owns on
``COMM_SELF`` (one compiled form, :math:`x_K` passed as a ``fem.Constant``); the small
table of tensors is then shared by an allgather over the coarse cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import dolfinx
import dolfinx.geometry
import numpy as np
import ufl
from mpi4py import MPI

from msfem import _runtime  # noqa: F401
from msfem.coefficients import (
    UFL,
    Checkerboard,
    ConstantField,
    Field,
    HouWu,
    Inclusions,
    Laminate,
    LocallyPeriodic,
    Periodic,
    UserField,
)
from msfem.fine import solve_fine
from msfem.homogenization.cell import (
    cellwise_constant,
    effective_elasticity,
    effective_tensor,
    mandel_basis,
)
from msfem.problem import Problem, diffusion

PERIODIC_FIELDS = (HouWu, Periodic, Laminate, Checkerboard, Inclusions)
#: Resolution of the unit cell (cells per direction) and corrector degree.
CELL_RESOLUTION, CELL_DEGREE = 32, 2


@dataclass(frozen=True)
class CellSolution:
    r""":math:`A^*` and the correctors :math:`\chi_j` (on a COMM_SELF unit cell)."""

    A_star: np.ndarray
    correctors: tuple[dolfinx.fem.Function, ...]
    eps: float


#: The operators (:data:`msfem.problem.OPERATORS`) with built-in cell problems: the name of
#: the coefficient of each that oscillates, and what it is.
HOMOGENIZED_COEFFICIENTS = {"diffusion": ("a", "coefficient"),
                            "elasticity": ("E", "Young's modulus")}


def _periodic_coefficient(problem: Problem, *, periodic: bool = True) -> Field:
    """The coefficient that the cell problems homogenize, read from the declared ``operator``.

    With ``periodic``, refuse a coefficient that is not one of :data:`PERIODIC_FIELDS`.
    """
    if problem.operator not in HOMOGENIZED_COEFFICIENTS:
        raise ValueError(
            "homogenized solutions are implemented for problems that declare the operator "
            f"{' or '.join(repr(k) for k in HOMOGENIZED_COEFFICIENTS)} (msfem.diffusion, "
            "msfem.elasticity, or Problem(operator=...)); got "
            f"{problem.name!r} with operator {problem.operator!r}, coefficients "
            f"{list(problem.coefficients)} and value shape {problem.shape}")
    name, what = HOMOGENIZED_COEFFICIENTS[problem.operator]
    fld = problem.coefficients[name]
    if not isinstance(fld, Field) or (periodic and not isinstance(fld, PERIODIC_FIELDS)):
        raise ValueError(
            f"homogenization needs a periodic {what} {name!r} "
            f"({', '.join(c.__name__ for c in PERIODIC_FIELDS)}),"
            f" got {type(fld).__name__}; for random media use the RVE tools "
            f"(msfem.homogenization.rve)")
    return fld


def _poisson_ratio(problem: Problem) -> float | None:
    """Poisson's ratio ν of an elasticity problem (its cell problems are elastic), else None."""
    return float(problem.parameters["nu"]) if problem.operator == "elasticity" else None


def _unit_cell(dim: int, n: int) -> dolfinx.mesh.Mesh:
    if dim == 2:
        return dolfinx.mesh.create_unit_square(MPI.COMM_SELF, n, n,
                                               dolfinx.mesh.CellType.quadrilateral)
    return dolfinx.mesh.create_unit_cube(MPI.COMM_SELF, n, n, n,
                                         dolfinx.mesh.CellType.hexahedron)


def _period(fld: Field) -> float:
    """The period ε of ``fld`` (the cell problems need one)."""
    if fld.eps is None:
        raise ValueError(f"cell problems need a periodic field, got {type(fld).__name__} "
                         f"without a period (eps)")
    return float(fld.eps)


def _on_cell(fld: Field, cell: dolfinx.mesh.Mesh):
    r"""The cell coefficient :math:`y \mapsto \mathrm{fld}(\varepsilon y)` on the unit cell."""
    eps = _period(fld)
    expr = fld.symbolic(eps * ufl.SpatialCoordinate(cell))
    if expr is not None:
        return expr

    def values_at(mid):  # (n, d) midpoints -> (n,) values (piecewise-constant media)
        x = np.zeros((3, len(mid)))
        x[: mid.shape[1]] = eps * mid.T
        return fld.evaluate(x)

    return cellwise_constant(cell, values_at)


def cell_solution(fld: Field, n: int = CELL_RESOLUTION, degree: int = CELL_DEGREE,
                  nu: float | None = None) -> CellSolution:
    r"""Solve the cell problems of the periodic field ``fld`` on :math:`Y = (0,1)^d`.

    The cell coefficient is :math:`a(y) = \mathrm{fld}(\varepsilon y)`. With ``nu`` given,
    ``fld`` is a Young's modulus and the elasticity cell problems give :math:`C^*` (Mandel
    notation, plane strain in 2D) with :math:`\lambda = E\nu/((1+\nu)(1-2\nu))`,
    :math:`\mu = E/(2(1+\nu))`. Cached: the same arguments, however passed, solve once.
    """
    return _cached_cell_solution(fld, int(n), int(degree), None if nu is None else float(nu))


@lru_cache(maxsize=8)
def _cached_cell_solution(fld: Field, n: int, degree: int, nu: float | None) -> CellSolution:
    cell = _unit_cell(getattr(fld, "dim", 2), n)
    a = _on_cell(fld, cell)
    if nu is None:
        result = effective_tensor(cell, a, degree=degree)
    else:
        result = effective_elasticity(cell, a * (nu / ((1 + nu) * (1 - 2 * nu))),
                                      a * (1 / (2 * (1 + nu))), degree=degree)
    return CellSolution(np.array(result.tensor), tuple(result.correctors), _period(fld))


def local_effective_tensors(hierarchy, fld: LocallyPeriodic, n: int = 16,
                            degree: int = CELL_DEGREE) -> np.ndarray:
    r""":math:`A^*(x_K)` for every coarse cell K (indexed by lattice id), shape (n_K, d, d).

    Solves :math:`-\nabla_y\cdot(a(x_K, y)(e_j + \nabla_y\chi_j)) = 0` on the unit cell
    for the coarse cells owned by this rank, then allgathers the table.
    """
    d = hierarchy.dim
    cell = _unit_cell(d, n)
    xK = dolfinx.fem.Constant(cell, np.zeros(d))
    x_ufl = ufl.as_vector([xK[i] for i in range(d)])

    def a(y):
        value = fld.cell_function(x_ufl, y, UFL)
        return ufl.as_matrix(value) if fld.shape else value

    _, lattice = hierarchy.owned_coarse_cells
    mine = []
    for cid in lattice:
        xK.value[:] = hierarchy.coarse_vertices(int(cid)).mean(axis=0)
        mine.append((int(cid), effective_tensor(cell, a, degree=degree).tensor))
    table = np.zeros((hierarchy.num_coarse_cells, d, d))
    for part in hierarchy.comm.allgather(mine):
        for cid, tensor in part:
            table[cid] = tensor
    return table


def homogenized_problem(problem: Problem, hierarchy=None) -> Problem:
    r"""The same boundary value problem with the oscillating coefficient homogenized.

    Diffusion (``operator="diffusion"``): :math:`a` replaced by :math:`A^*`, constant, or
    piecewise constant on the coarse cells of ``hierarchy`` for locally periodic fields.
    Elasticity (``operator="elasticity"``): :math:`a_0(u, v) = \int \varepsilon_M(v) \cdot
    C^* \varepsilon_M(u)` with :math:`C^*` from the cell problems and
    :math:`\varepsilon_M` the strain in Mandel notation.
    """
    fld = _periodic_coefficient(problem, periodic=False)
    if problem.operator == "elasticity":
        return _homogenized_elasticity(problem, _periodic_coefficient(problem))
    if isinstance(problem.source, Sequence):
        raise ValueError(f"a homogenized diffusion problem needs a scalar source, got "
                         f"{problem.source!r}")
    A_star: Field
    if isinstance(fld, LocallyPeriodic):
        if hierarchy is None:
            raise ValueError("a locally periodic coefficient needs the hierarchy (one cell "
                             "problem per coarse cell)")
        table = local_effective_tensors(hierarchy, fld)
        A_star = UserField(lambda x: np.moveaxis(table[hierarchy.locate_coarse(x)], 0, -1),
                           shape=table.shape[1:])
    else:
        A_star = ConstantField(cell_solution(_periodic_coefficient(problem)).A_star.tolist())
    return diffusion(A_star, f=problem.source, dirichlet=problem.dirichlet,
                     neumann=problem.neumann, degree=problem.degree, name="homogenized")


def _homogenized_elasticity(problem: Problem, fld: Field) -> Problem:
    r"""Elasticity with the effective stiffness :math:`C^*`.

    :math:`a_0(u, v) = \int \varepsilon_M(v) \cdot C^* \varepsilon_M(u)`, with
    :math:`\varepsilon_M` the strain in Mandel notation. The result is a general form
    (``operator=None``) with a rigid-body near-null space.
    """
    C = cell_solution(fld, nu=_poisson_ratio(problem)).A_star
    dim = problem.shape[0]
    basis = [ufl.as_matrix(B.tolist()) for B in mandel_basis(dim)]

    def bilinear(u, v, C):
        def mandel(w):
            return ufl.as_vector([ufl.inner(ufl.sym(ufl.grad(w)), B) for B in basis])

        return ufl.inner(C * mandel(u), mandel(v)) * ufl.dx

    return Problem(bilinear, {"C": ConstantField(C.tolist())}, source=problem.source,
                   shape=problem.shape, dirichlet=problem.dirichlet, neumann=problem.neumann,
                   degree=problem.degree, near_nullspace="rigid", name="homogenized-elasticity")


def homogenized_solution(hierarchy, problem: Problem, *,
                         petsc_options=None) -> dolfinx.fem.Function:
    r"""The homogenized solution :math:`u_0` on the fine space of ``hierarchy``."""
    u0 = solve_fine(hierarchy.fine, homogenized_problem(problem, hierarchy),
                    petsc_options=petsc_options, prefix="msfem_homogenized_").u
    u0.name = "u0"
    return u0


def corrector_solution(hierarchy, problem: Problem, *, petsc_options=None) -> dolfinx.fem.Function:
    r"""The first-order corrector, interpolated at the fine dofs.

    Diffusion: :math:`u_1 = u_0 + \varepsilon\chi_j(x/\varepsilon)\,\partial_j u_0`;
    elasticity: :math:`u_1 = u_0 + \varepsilon\chi_K(x/\varepsilon)\,
    (\varepsilon(u_0) : E_K)` over the Mandel basis strains :math:`E_K`. The derivatives
    of :math:`u_0` are lumped :math:`L^2` projections onto the fine Lagrange space.
    """
    u0 = homogenized_solution(hierarchy, problem, petsc_options=petsc_options)  # validates
    nu = _poisson_ratio(problem)
    cs = cell_solution(_periodic_coefficient(problem), nu=nu)
    V = u0.function_space
    mesh = V.mesh
    dim = mesh.topology.dim
    if nu is not None:  # elastic cell problems: loads are the Mandel basis strains
        strain = ufl.sym(ufl.grad(u0))
        derivs = _lumped(u0, [ufl.inner(strain, ufl.as_matrix(B.tolist()))
                              for B in mandel_basis(dim)])
    else:
        derivs = _lumped(u0, [u0.dx(j) for j in range(dim)])
    bs = V.dofmap.index_map_bs
    x = V.tabulate_dof_coordinates()[:, :dim]
    chi = _evaluate(cs.correctors, np.mod(x / cs.eps, 1.0))  # [(n_local, bs)] per load
    u1 = dolfinx.fem.Function(V, name="u1")
    blocks = u0.x.array.reshape(-1, bs).copy()
    for k, chi_k in enumerate(chi):
        blocks += cs.eps * chi_k * derivs[:, k:k + 1]
    u1.x.array[:] = blocks.ravel()
    u1.x.scatter_forward()
    return u1


def _lumped(u: dolfinx.fem.Function, exprs) -> np.ndarray:
    r"""Lumped projections of scalar expressions of ``u``, shape (n_local, len(exprs)).

    :math:`g_i = \int g\,\varphi_i / \int\varphi_i` at every local dof (block) of ``u``'s
    space.
    """
    mesh = u.function_space.mesh
    degree = u.function_space.ufl_element().embedded_superdegree
    Q = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))  # same dof layout as blocks
    v = ufl.TestFunction(Q)
    mass = dolfinx.fem.assemble_vector(dolfinx.fem.form(v * ufl.dx))
    mass.scatter_reverse(dolfinx.la.InsertMode.add)
    mass.scatter_forward()
    out = np.zeros((len(mass.array), len(exprs)))
    for j, expr in enumerate(exprs):
        g = dolfinx.fem.assemble_vector(dolfinx.fem.form(expr * v * ufl.dx))
        g.scatter_reverse(dolfinx.la.InsertMode.add)
        g.scatter_forward()
        out[:, j] = g.array / mass.array
    return out


def _evaluate(functions, y: np.ndarray) -> list[np.ndarray]:
    """Values (n, value_size) of COMM_SELF cell functions at points ``y`` (n, d)."""
    mesh = functions[0].function_space.mesh
    dim = mesh.topology.dim
    pts = np.zeros((len(y), 3))
    pts[:, :dim] = np.clip(y, 1e-12, 1 - 1e-12)
    tree = dolfinx.geometry.bb_tree(mesh, dim)
    candidates = dolfinx.geometry.compute_collisions_points(tree, pts)
    cells = dolfinx.geometry.compute_colliding_cells(mesh, candidates, pts)
    first = np.array([cells.links(i)[0] for i in range(len(pts))], dtype=np.int32)
    return [np.asarray(f.eval(pts, first)).reshape(len(pts), -1) for f in functions]
