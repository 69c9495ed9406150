r"""Apparent properties of a window (box) of a microstructure, and the SVE-to-RVE size study.

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

Random microstructures for the SVE-to-RVE study (:func:`rve_size_study`), both DG0 fields
evaluated at cell midpoints from a seeded global description, hence independent of the
parallel partition:

* :func:`random_checkerboard`: squares of side :math:`\ell`, each phase 2 with
  probability :math:`f`;
* :func:`random_inclusions`: non-overlapping discs (balls in 3D) of radius :math:`r\ell`
  placed by random sequential addition (:func:`random_sequential_addition`) up to the area
  fraction :math:`f`, by default wrapped periodically across the window boundary so that
  the PBC window is a genuinely periodic composite.

References:
    S. Hazanov, C. Huet, J. Mech. Phys. Solids 42 (1994) 1995--2011;
    C. Huet, J. Mech. Phys. Solids 38 (1990) 813--841;
    T. Kanit, S. Forest, I. Galliet, V. Mounoury, D. Jeulin, Int. J. Solids Struct. 40 (2003)
    3647--3679 (RVE size from the variance of apparent properties);
    M. Ostoja-Starzewski, *Microstructural randomness and scaling in mechanics of
    materials*, CRC 2008.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dolfinx  # noqa: E402
import dolfinx.common  # noqa: E402
import dolfinx.fem  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import dolfinx.mesh  # noqa: E402
import numpy as np
import ufl  # noqa: E402
from mpi4py import MPI  # noqa: E402
from petsc4py import PETSc  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)
from msfem.homogenization.cell import (  # noqa: E402
    Coefficient,
    _flux,
    _quadrature_degree,
    _solve_cell_problems,
    cellwise_constant,
    check_lame,
    check_positive_definite,
    coefficient_expression,
    lame_stress,
    make_ksp,
    mandel_basis,
    solve_checked,
)
from msfem.homogenization.periodic import box_bounds, periodic_map  # noqa: E402

__all__ = [
    "BOUNDARY_CONDITIONS",
    "MICROSTRUCTURES",
    "ApparentTensor",
    "DiscPacking",
    "RVEStudy",
    "apparent_conductivity",
    "apparent_elasticity",
    "random_checkerboard",
    "random_inclusions",
    "random_sequential_addition",
    "rve_size_study",
]

#: The admissible ``bc`` names; ``"mixed"`` is the deliberately bad one.
BOUNDARY_CONDITIONS = ("kubc", "subc", "pbc", "mixed")

#: The random microstructures of :func:`rve_size_study`.
MICROSTRUCTURES = ("checkerboard", "inclusions")


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


def _check_bc(bc: str) -> str:
    if not isinstance(bc, str) or bc.lower() not in BOUNDARY_CONDITIONS:
        raise ValueError(f"unknown boundary condition {bc!r}; use one of {BOUNDARY_CONDITIONS}")
    return bc.lower()


class _Window:
    """Compiled forms of one window problem; the coefficients may be updated in place."""

    def __init__(self, mesh: dolfinx.mesh.Mesh, vector: bool, stress: Callable[[Any], Any],
                 degree: int, quadrature_degree: int | None) -> None:
        self.mesh = mesh
        d = self.dim = mesh.geometry.dim
        self.vector = vector
        self._pmap = None
        self.lower, self.upper = box_bounds(mesh)
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree, (d,) if vector else ()))
        self.grad = (lambda w: ufl.sym(ufl.grad(w))) if vector else ufl.grad
        self.stress = stress
        self.loads = mandel_basis(d) if vector else list(np.eye(d))
        shape = self.loads[0].shape
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        integrand = ufl.inner(stress(self.grad(u)), self.grad(v))
        q = _quadrature_degree(integrand, quadrature_degree)
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
        if not self.vector:
            dofs = dolfinx.fem.locate_dofs_topological(self.V, 0, verts)
            return [dolfinx.fem.dirichletbc(PETSc.ScalarType(0), dofs, self.V)]
        for c in components:
            dofs = dolfinx.fem.locate_dofs_topological(self.V.sub(c), 0, verts)
            bcs.append(dolfinx.fem.dirichletbc(PETSc.ScalarType(0), dofs, self.V.sub(c)))
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
                dolfinx.fem.petsc.assemble_vector(b, self.zero_rhs)
                dolfinx.fem.petsc.apply_lifting(b, [self.a], bcs=[[bc]])
                b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
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
                dolfinx.fem.petsc.assemble_vector(b, self.static_rhs)
                b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
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
        bc = _check_bc(bc)
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
            fields = _solve_cell_problems(self.V, self.a, self.periodic_rhs, self.E, self.loads,
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
    bc = _check_bc(bc)
    expr = coefficient_expression(window_mesh, a)
    check_positive_definite(window_mesh, expr, "a")
    with dolfinx.common.Timer("~msfem: apparent properties"):
        win = _Window(window_mesh, False, lambda g: _flux(expr, g), degree, quadrature_degree)
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
    bc = _check_bc(bc)
    lam = coefficient_expression(window_mesh, lmbda)
    mu_ = coefficient_expression(window_mesh, mu)
    check_lame(window_mesh, lam, mu_)
    with dolfinx.common.Timer("~msfem: apparent properties"):
        win = _Window(window_mesh, True, lame_stress(lam, mu_), degree, quadrature_degree)
        return win.apparent(bc, petsc_options, petsc_options_prefix)


# --------------------------------------------------------------------------- SVE -> RVE
def _checkerboard_phase(
    mesh: dolfinx.mesh.Mesh, cell_size: float, seed: int | Sequence[int], fraction: float
) -> Callable[[np.ndarray], np.ndarray]:
    """``midpoints -> bool`` (phase 2) of the seeded global checkerboard of ``mesh``'s box."""
    lo, hi = box_bounds(mesh)
    shape = tuple(int(np.ceil((h - lw) / cell_size - 1e-9)) for lw, h in zip(lo, hi))
    phase = np.random.default_rng(seed).random(shape) < fraction

    def at(mid: np.ndarray) -> np.ndarray:
        idx = np.floor((mid - lo) / cell_size).astype(int)
        idx = np.clip(idx, 0, np.array(shape) - 1)
        return phase[tuple(idx.T)]

    return at


def random_checkerboard(
    mesh: dolfinx.mesh.Mesh,
    *,
    cell_size: float,
    values: tuple[float, float],
    seed: int | Sequence[int],
    fraction: float = 0.5,
) -> dolfinx.fem.Function:
    r"""Random two-phase checkerboard as a DG0 Function.

    The box is divided into squares (cubes) of side ``cell_size`` (:math:`\ell`), counted
    from the lower corner; each square independently takes ``values[1]`` with probability
    ``fraction``, else ``values[0]``. The phases are drawn with
    ``numpy.random.default_rng(seed)`` for the *global* grid of squares on every rank, so the
    field does not depend on the number of ranks. Mesh lines should contain the square
    boundaries.
    """
    at = _checkerboard_phase(mesh, cell_size, seed, fraction)
    return cellwise_constant(mesh, lambda mid: np.where(at(mid), values[1], values[0]),
                             name="checkerboard")


def _ball_volume(radius: float, dim: int) -> float:
    return math.pi ** (dim / 2) * radius**dim / math.gamma(dim / 2 + 1)


@dataclass(frozen=True)
class DiscPacking:
    r"""Non-overlapping discs (2D; balls in 3D) of one radius in a box window.

    Attributes:
        centres: ``(n, d)`` disc centres, in the order they were accepted.
        radius: Disc radius :math:`R`.
        lower: Lower corner of the window.
        upper: Upper corner of the window.
        periodic: ``True``: the discs live on the torus of the window (a disc crossing a
            face re-enters through the opposite one; centre distances are minimum-image);
            ``False``: every disc lies entirely inside the window.
        gap: Minimum surface-to-surface distance; centres are at least :math:`2R + gap`
            apart.
        target_fraction: The requested area (volume) fraction.
        attempts: Random candidates drawn (accepted or not).

    """

    centres: np.ndarray
    radius: float
    lower: np.ndarray
    upper: np.ndarray
    periodic: bool
    gap: float
    target_fraction: float
    attempts: int

    @property
    def fraction(self) -> float:
        r"""Exact area (volume) fraction of the discs, :math:`n\pi R^2/|W|`."""
        vol = float(np.prod(self.upper - self.lower))
        return len(self.centres) * _ball_volume(self.radius, len(self.lower)) / vol

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each of ``points`` (``(m, d)``) lies inside a disc (strictly).

        Periodic packings are extended periodically outside the window; for non-periodic
        ones every point outside the window is matrix.
        """
        pts = np.asarray(points, dtype=float).reshape(-1, len(self.lower))
        inside = np.zeros(len(pts), dtype=bool)
        if len(self.centres) == 0 or len(pts) == 0:
            return inside
        if self.periodic:
            period = self.upper - self.lower

            def wrap(x):
                y = np.mod(x - self.lower, period)
                return np.where(y >= period, 0.0, y)  # mod may round up to the period

            tree = cKDTree(wrap(self.centres), boxsize=period)
            dist, _ = tree.query(wrap(pts), k=1)
        else:
            dist, _ = cKDTree(self.centres).query(pts, k=1)
        return dist < self.radius


def random_sequential_addition(
    lower: Sequence[float],
    upper: Sequence[float],
    *,
    radius: float,
    fraction: float,
    seed: int | Sequence[int],
    periodic: bool = True,
    gap: float = 0.0,
    max_attempts: int | None = None,
    comm: MPI.Comm | None = None,
) -> DiscPacking:
    r"""Seeded random sequential addition (RSA) of non-overlapping discs in a box window.

    The number of discs is :math:`n = \mathrm{round}(f|W|/(\pi R^2))` (balls:
    :math:`\tfrac43\pi R^3` in 3D), so the realised fraction :math:`n\pi R^2/|W|` is the
    closest attainable to ``fraction``, within :math:`\pi R^2/(2|W|)`. Candidate centres are
    drawn uniformly with ``numpy.random.default_rng(seed)`` -- in the whole window if
    ``periodic``, in the window shrunk by :math:`R` otherwise -- and accepted when their
    (minimum-image, if ``periodic``) distance to every accepted centre is at least
    :math:`2R + gap`, until :math:`n` discs are placed.

    If :math:`n` discs cannot be placed within ``max_attempts`` candidates (RSA jams when
    the discs of radius :math:`R + gap/2` cover about 0.547 of the window in 2D, 0.38 in
    3D, and earlier in small windows) a
    :class:`ValueError` reporting the fraction reached is raised -- the fraction is never
    silently lowered, which would bias the statistics of a size study.

    Args:
        lower: Lower corner of the window.
        upper: Upper corner of the window.
        radius: Disc radius :math:`R`.
        fraction: Target area fraction :math:`f \in [0, 1)`.
        seed: Seed of ``numpy.random.default_rng``.
        periodic: Periodic wrapping across the window faces (see :class:`DiscPacking`).
        gap: Minimum surface-to-surface distance between discs.
        max_attempts: Candidate budget (default :math:`1000 n + 10^4`).
        comm: If given, the packing is drawn on rank 0 and broadcast, so that it is
            bit-identical on every rank of ``comm`` (and errors are raised on every rank).

    Returns:
        The :class:`DiscPacking`.

    """
    lo = np.asarray(lower, dtype=float).ravel()
    hi = np.asarray(upper, dtype=float).ravel()
    if lo.shape != hi.shape or not np.all(hi > lo):
        raise ValueError(f"need lower < upper, got {lo} and {hi}")
    if not radius > 0 or not gap >= 0:
        raise ValueError(f"need radius > 0 and gap >= 0, got {radius} and {gap}")
    if not 0 <= fraction < 1:
        raise ValueError(f"the inclusion fraction must be in [0, 1), got {fraction}")
    dmin = 2.0 * radius + gap
    size = hi - lo
    if periodic and np.any(size < dmin):
        raise ValueError(f"periodic window {size} narrower than 2 radius + gap = {dmin}: a disc "
                         "would overlap its own periodic image")
    if not periodic and np.any(size < 2.0 * radius):
        raise ValueError(f"window {size} narrower than the disc diameter {2.0 * radius}")

    def draw() -> DiscPacking | str:
        try:
            return _rsa(lo, hi, radius, fraction, seed, periodic, gap, max_attempts)
        except ValueError as err:
            return str(err)

    result = draw() if comm is None or comm.rank == 0 else None
    if comm is not None and comm.size > 1:
        result = comm.bcast(result, root=0)
    if isinstance(result, str):
        raise ValueError(result)
    return result


def _rsa(lo: np.ndarray, hi: np.ndarray, radius: float, fraction: float,
         seed: int | Sequence[int], periodic: bool, gap: float,
         max_attempts: int | None) -> DiscPacking:
    d = len(lo)
    size = hi - lo
    vol = float(np.prod(size))
    ball = _ball_volume(radius, d)
    n_target = int(round(fraction * vol / ball))
    budget = 1000 * n_target + 10_000 if max_attempts is None else int(max_attempts)
    dmin = 2.0 * radius + gap
    origin = lo if periodic else lo + radius  # candidate centres: origin + span * U[0, 1)^d
    span = size if periodic else size - 2.0 * radius
    # buckets of side >= dmin: an overlapping centre lies in one of the 3^d neighbours
    nb = np.maximum(1, np.floor(size / dmin).astype(int))
    side = size / nb
    offsets = np.array(list(itertools.product((-1, 0, 1), repeat=d)))
    buckets: dict[tuple[int, ...], list[int]] = {}
    centres = np.empty((n_target, d))
    rng = np.random.default_rng(seed)
    n = attempts = 0
    while n < n_target and attempts < budget:
        for x in origin + span * rng.random((min(1024, budget - attempts), d)):
            attempts += 1
            b = np.minimum(np.floor((x - lo) / side).astype(int), nb - 1)
            keys = b + offsets
            if periodic:
                keys = np.mod(keys, nb)
            else:
                keys = keys[np.all((keys >= 0) & (keys < nb), axis=1)]
            near = {i for k in map(tuple, keys.tolist()) for i in buckets.get(k, ())}
            if near:
                diff = centres[sorted(near)] - x
                if periodic:
                    diff -= size * np.round(diff / size)
                if np.einsum("ij,ij->i", diff, diff).min() < dmin * dmin:
                    continue
            centres[n] = x
            buckets.setdefault(tuple(b.tolist()), []).append(n)
            n += 1
            if n == n_target:
                break
    if n < n_target:
        raise ValueError(
            f"random sequential addition placed {n} of {n_target} discs (area fraction "
            f"{n * ball / vol:.4f} < target {fraction}) in {attempts} attempts; RSA jams when the "
            "discs of radius R + gap/2 cover about 0.547 (2D) / 0.38 (3D): lower the fraction, "
            "the radius or the gap, or raise max_attempts")
    return DiscPacking(centres=centres, radius=float(radius), lower=lo, upper=hi,
                       periodic=bool(periodic), gap=float(gap), target_fraction=float(fraction),
                       attempts=attempts)


def random_inclusions(
    mesh: dolfinx.mesh.Mesh,
    *,
    radius: float,
    fraction: float,
    values: tuple[float, float],
    seed: int | Sequence[int],
    window: tuple[Sequence[float], Sequence[float]] | None = None,
    periodic: bool = True,
    gap: float = 0.0,
    max_attempts: int | None = None,
) -> dolfinx.fem.Function:
    r"""Random dispersion of non-overlapping discs as a DG0 Function.

    The discs (radius ``radius`` :math:`= r\ell`, area fraction ``fraction``) are placed by
    :func:`random_sequential_addition` in ``window`` (default: the bounding box of
    ``mesh``), drawn on rank 0 from ``numpy.random.default_rng(seed)`` and broadcast; each
    cell takes ``values[1]`` if its midpoint lies in a disc, else ``values[0]``. The field
    therefore depends only on the geometry, never on the number of ranks. With ``periodic``
    (default) discs cut by a window face re-enter through the opposite face, so the window
    is one period of a periodic composite and PBC are consistent with it; points of the mesh
    outside the window see the periodic extension. With ``periodic=False`` every disc lies
    inside the window and the outside is matrix.

    The midpoint rule staircases the discs; for uniformly random centres the expected DG0
    area of a disc equals :math:`\pi R^2`, so the DG0 phase fraction fluctuates around
    the disc fraction. :func:`random_sequential_addition` with the same arguments (and
    ``comm=mesh.comm``) returns the centres.

    Raises:
        ValueError: if the fraction cannot be reached (see
            :func:`random_sequential_addition`).

    """
    lo, hi = box_bounds(mesh) if window is None else window
    packing = random_sequential_addition(lo, hi, radius=radius, fraction=fraction, seed=seed,
                                         periodic=periodic, gap=gap,
                                         max_attempts=max_attempts, comm=mesh.comm)
    return cellwise_constant(
        mesh, lambda mid: np.where(packing.contains(mid), values[1], values[0]),
        name="inclusions")

@dataclass(frozen=True)
class RVEStudy:
    r"""Apparent conductivities of random windows, per boundary condition and window size.

    Attributes:
        window_sizes: :math:`L/\ell` of the windows.
        n_realisations: Realisations per window size.
        samples: ``bc -> array (n_sizes, n_realisations)`` of the scalar property
            :math:`Z` (default :math:`\mathrm{tr}A^{app}/d`).
        mean: ``bc -> array (n_sizes,)``, :math:`\bar Z`.
        std: ``bc -> array (n_sizes,)``, :math:`D(V)` (sample standard deviation, ddof=1).
        relative_error: ``bc -> array (n_sizes,)``,
            :math:`\varepsilon_{rel} = 2D(V)/(\bar Z\sqrt n)` (Kanit et al. 2003).
        rve_size: ``bc ->`` smallest :math:`L/\ell` with :math:`\varepsilon_{rel}\le`
            ``precision``, or ``None``.
        precision: The requested relative precision.
        hill_mandel_residual: ``bc ->`` largest Hill--Mandel residual seen.
        microstructure: ``"checkerboard"`` or ``"inclusions"``.
        volume_fraction: ``(n_sizes, n_realisations)`` area fraction of the phase
            ``values[1]`` of the discretised (DG0) field, i.e. as seen by the solver (use it
            for bounds such as Hashin--Shtrikman).
        tensors: ``bc -> array (n_sizes, n_realisations, d, d)``, the apparent tensors.
    """

    window_sizes: np.ndarray
    n_realisations: int
    samples: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    relative_error: dict[str, np.ndarray]
    rve_size: dict[str, float | None]
    precision: float
    hill_mandel_residual: dict[str, float]
    microstructure: str = "checkerboard"
    volume_fraction: np.ndarray | None = None
    tensors: dict[str, np.ndarray] | None = None


def rve_size_study(
    window_sizes: Sequence[int],
    *,
    n_realisations: int,
    values: tuple[float, float] = (1.0, 10.0),
    fraction: float | None = None,
    elements_per_cell: int = 4,
    precision: float = 0.01,
    bcs: Sequence[str] = ("kubc", "pbc", "subc"),
    seed: int = 0,
    degree: int = 1,
    comm: MPI.Comm = MPI.COMM_WORLD,
    quantity: Callable[[np.ndarray], float] | None = None,
    petsc_options: Mapping[str, Any] | None = None,
    microstructure: str = "checkerboard",
    inclusion_radius: float = 0.5,
    inclusion_gap: float = 0.0,
    periodic_inclusions: bool = True,
    max_attempts: int | None = None,
) -> RVEStudy:
    r"""SVE-to-RVE study on a random microstructure (conductivity), after Kanit et al. 2003.

    For each window :math:`[0, L]^2` with :math:`L/\ell` in ``window_sizes`` (:math:`\ell = 1`,
    ``elements_per_cell`` quadrilaterals per length :math:`\ell`) and each realisation
    :math:`r`, the microstructure is drawn with ``default_rng([seed, L/ℓ, r])`` and the
    apparent conductivity is computed for each ``bc``:

    * ``"checkerboard"`` (default): :func:`random_checkerboard`, squares of side :math:`\ell`,
      phase ``values[1]`` with probability ``fraction`` (default 0.5);
    * ``"inclusions"``: :func:`random_inclusions`, discs of conductivity ``values[1]`` and
      radius ``inclusion_radius`` :math:`\cdot\ell` (default :math:`\ell/2`: diameter
      :math:`\ell`) in a matrix ``values[0]``, area fraction ``fraction`` (default 0.3), by
      random sequential addition, periodically wrapped if ``periodic_inclusions``. The
      number of discs is :math:`\mathrm{round}(fL^2/(\pi r^2))`, so windows only a few
      discs wide have a quantised fraction (:math:`L = 2`, :math:`r = 1/2`, :math:`f = 0.3`:
      2 discs, 0.39); ``volume_fraction`` records the realised (DG0) fractions.

    Per size: mean :math:`\bar Z`, standard deviation :math:`D(V)`, relative precision
    :math:`\varepsilon_{rel} = 2D(V)/(\bar Z\sqrt n)`, and the smallest size whose
    :math:`\varepsilon_{rel}` meets ``precision``. One mesh and one set of compiled forms
    per size; realisations only update the coefficient.

    Args:
        window_sizes: Window sides :math:`L/\ell` (integers).
        n_realisations: Realisations :math:`n` per size (at least 2).
        values: Phase conductivities ``(a, b)`` (``b``: checker phase, or the discs).
        fraction: Probability (checkerboard, default 0.5) or target area fraction
            (inclusions, default 0.3) of phase ``b``.
        elements_per_cell: Elements per length :math:`\ell` (per checker square side).
        precision: Requested :math:`\varepsilon_{rel}`.
        bcs: Boundary conditions to compare.
        seed: Base seed.
        degree: Lagrange degree.
        comm: Communicator of every window mesh.
        quantity: Scalar property of the apparent tensor (default :math:`\mathrm{tr}/d`).
        petsc_options: PETSc options updating the MUMPS default.
        microstructure: ``"checkerboard"`` or ``"inclusions"``.
        inclusion_radius: Disc radius :math:`r` in units of :math:`\ell` (inclusions).
        inclusion_gap: Minimum disc surface distance in units of :math:`\ell` (inclusions).
        periodic_inclusions: Wrap discs across the window faces (inclusions).
        max_attempts: RSA candidate budget per realisation (inclusions; see
            :func:`random_sequential_addition`, which raises if the fraction is not reached).

    Returns:
        The :class:`RVEStudy`.
    """
    for bc in bcs:
        _check_bc(bc)
    if microstructure not in MICROSTRUCTURES:
        raise ValueError(f"unknown microstructure {microstructure!r}; use one of "
                         f"{MICROSTRUCTURES}")
    if n_realisations < 2:
        raise ValueError("rve_size_study needs at least 2 realisations for a variance")
    if min(values) <= 0:
        raise ValueError(f"phase conductivities must be positive, got {values}")
    inclusions = microstructure == "inclusions"
    if fraction is None:
        fraction = 0.3 if inclusions else 0.5
    quantity = quantity or (lambda A: float(np.trace(A)) / A.shape[0])
    sizes = np.sort(np.asarray(window_sizes, dtype=int))
    samples = {bc: np.zeros((len(sizes), n_realisations)) for bc in bcs}
    tensors = {bc: np.zeros((len(sizes), n_realisations, 2, 2)) for bc in bcs}
    phase_fraction = np.zeros((len(sizes), n_realisations))
    hm = {bc: 0.0 for bc in bcs}
    for s, size in enumerate(sizes):
        lo, hi = np.zeros(2), np.full(2, float(size))
        mesh = dolfinx.mesh.create_rectangle(
            comm, [lo, hi], [int(size) * elements_per_cell] * 2,
            dolfinx.mesh.CellType.quadrilateral)
        Q = dolfinx.fem.functionspace(mesh, ("DG", 0))
        coeff = dolfinx.fem.Function(Q, name=microstructure)
        win = _Window(mesh, False, lambda g, c=coeff: c * g, degree, None)
        phase = dolfinx.fem.Function(Q, name="phase")
        phase_form = dolfinx.fem.form(phase * ufl.dx(domain=mesh))
        for r in range(n_realisations):
            rseed = [seed, int(size), r]
            if inclusions:
                packing = random_sequential_addition(
                    lo, hi, radius=inclusion_radius, fraction=fraction, seed=rseed,
                    periodic=periodic_inclusions, gap=inclusion_gap,
                    max_attempts=max_attempts, comm=comm)
                inside = packing.contains
            else:
                inside = _checkerboard_phase(mesh, 1.0, rseed, fraction)
            phase.x.array[:] = cellwise_constant(mesh, inside).x.array
            coeff.x.array[:] = np.where(phase.x.array > 0.5, values[1], values[0])
            phase_fraction[s, r] = (comm.allreduce(dolfinx.fem.assemble_scalar(phase_form))
                                    / win.volume)
            for bc in bcs:
                res = win.apparent(bc, petsc_options, f"msfem_rve_study_{bc}_")
                samples[bc][s, r] = quantity(res.tensor)
                tensors[bc][s, r] = res.tensor
                hm[bc] = max(hm[bc], res.hill_mandel_residual)
    mean = {bc: samples[bc].mean(axis=1) for bc in bcs}
    std = {bc: samples[bc].std(axis=1, ddof=1) for bc in bcs}
    rel = {bc: 2.0 * std[bc] / (mean[bc] * np.sqrt(n_realisations)) for bc in bcs}
    rve = {}
    for bc in bcs:
        ok = np.flatnonzero(rel[bc] <= precision)
        rve[bc] = float(sizes[ok[0]]) if len(ok) else None
    return RVEStudy(window_sizes=sizes, n_realisations=n_realisations, samples=samples,
                    mean=mean, std=std, relative_error=rel, rve_size=rve, precision=precision,
                    hill_mandel_residual=hm, microstructure=microstructure,
                    volume_fraction=phase_fraction, tensors=tensors)
