r"""Multiscale coefficient fields :math:`a(x)`, usable in UFL forms on any mesh.

A :class:`Field` can always be *evaluated* at points (NumPy) and, when it has a closed
form, be written *symbolically* in UFL. :func:`as_ufl` turns a field into a UFL
expression on a given mesh: the symbolic form when there is one (exact at every
quadrature point), otherwise a piecewise-constant (DG0) interpolant sampled at cell
midpoints -- exact for fields that are constant on the fine cells (checkerboards,
channels aligned with the fine grid).

Random fields are functions of the *global* coordinates and a seed only, so the same
field is produced for any number of MPI ranks and for any patch mesh.

Fields with a period :math:`\varepsilon` report it in :attr:`Field.eps`. The rule that a
fine mesh needs at least :data:`MIN_CELLS_PER_PERIOD` = 8 cells per fine scale lives here
only: :func:`resolution_error` says whether (and why) a scale is not resolved; the
configuration (:mod:`msfem.config`), the study planner and :func:`check_resolution` (a
warning in the fine solve) all call it.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dolfinx
import numpy as np
import ufl

from msfem import _runtime  # noqa: F401  (MPI ordering)

#: Fine cells per fine scale ε (period, cell size, correlation length...) that a fine mesh
#: needs to resolve a field: the only copy of the rule (see :func:`resolution_error`).
MIN_CELLS_PER_PERIOD = 8


class UnresolvedScaleWarning(UserWarning):
    """The fine mesh does not resolve the oscillation scale ε."""


class _Namespace:
    """Math namespace so one callable can build both NumPy and UFL expressions."""

    def __init__(self, lib: Any):
        self.sin, self.cos, self.exp, self.sqrt = lib.sin, lib.cos, lib.exp, lib.sqrt
        self.pi = np.pi
        self.lib = lib


NUMPY = _Namespace(np)
UFL = _Namespace(ufl)


class Field(abc.ABC):
    """A coefficient field :math:`a(x)`, scalar (``shape == ()``) or a (d, d) tensor.

    Subclasses implement :meth:`evaluate` and, when the field has a closed form,
    :meth:`symbolic`.
    """

    shape: tuple[int, ...] = ()
    #: Oscillation scale (period or correlation length), ``None`` when not multiscale.
    eps: float | None = None
    #: Parameters that are lengths: positive when given (checked by ``__post_init__``).
    _lengths = ("eps", "cell", "correlation_length", "scale", "radius")

    def __post_init__(self) -> None:
        """Refuse NaN/inf parameters and non-positive lengths (dataclass subclasses).

        Raises:
            ValueError: naming the field, the parameter and its value.
        """
        for name in getattr(self, "__dataclass_fields__", {}):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not np.isfinite(value):
                raise ValueError(f"{type(self).__name__}: {name} = {value!r} must be finite")
            if name in self._lengths and not value > 0:
                raise ValueError(f"{type(self).__name__}: {name} = {value!r} must be positive "
                                 f"(a length)")

    @abc.abstractmethod
    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Values at points ``x`` of shape (3, n); returns (n,) or (d, d, n)."""

    def symbolic(self, x: ufl.SpatialCoordinate) -> ufl.core.expr.Expr | None:
        """A UFL expression of the spatial coordinate ``x``, or None if there is none."""
        return None


def _vectorise(values: Any, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.broadcast_to(values, (n,)).copy() if values.ndim == 0 else values


@dataclass(frozen=True)
class ConstantField(Field):
    """A constant scalar or tensor coefficient (the no-microstructure limit), or vector load."""

    value: float | Sequence[float] | Sequence[Sequence[float]]

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """The shape of ``value``: () for a scalar, (d,) for a vector, (d, d) for a tensor."""
        return np.shape(self.value)

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """``value`` repeated at every point of ``x``."""
        v = np.asarray(self.value, dtype=float)
        return np.broadcast_to(v[..., None], v.shape + (x.shape[1],)).copy()

    def symbolic(self, x):
        """``value`` as a UFL constant, vector or matrix."""
        v = np.asarray(self.value, dtype=float)
        if v.ndim == 2:
            return ufl.as_matrix(v.tolist())
        return ufl.as_vector(v.tolist()) if v.ndim == 1 else float(v)


@dataclass(frozen=True)
class HouWu(Field):
    r"""Hou & Wu (1997), eq. (4.1), J. Comput. Phys. 134:169-189.

    .. math::
        a(x, y) = \frac{2 + P\sin(2\pi x/\varepsilon)}{2 + P\cos(2\pi y/\varepsilon)}
                + \frac{2 + \sin(2\pi y/\varepsilon)}{2 + P\sin(2\pi x/\varepsilon)}
    """

    eps: float
    P: float = 1.8

    def _formula(self, x, ns):
        k = 2 * np.pi / self.eps
        sx, cy, sy = ns.sin(k * x[0]), ns.cos(k * x[1]), ns.sin(k * x[1])
        return (2 + self.P * sx) / (2 + self.P * cy) + (2 + sy) / (2 + self.P * sx)

    def evaluate(self, x):
        """Values of eq. (4.1) at points ``x`` of shape (3, n)."""
        return self._formula(x, NUMPY)

    def symbolic(self, x):
        """Eq. (4.1) as a UFL expression of the spatial coordinate ``x``."""
        return self._formula(x, UFL)


class _TwoScale(Field):
    """A field given by one callable for NumPy and UFL: subclasses define ``_value``."""

    @abc.abstractmethod
    def _value(self, x, ns):
        """The field at ``x`` written with the math namespace ``ns`` (NumPy or UFL)."""

    def evaluate(self, x):
        value = self._value(x, NUMPY)
        if self.shape:
            return np.array([[_vectorise(v, x.shape[1]) for v in row] for row in value])
        return _vectorise(value, x.shape[1])

    def symbolic(self, x):
        value = self._value(x, UFL)
        return ufl.as_matrix(value) if self.shape else value


@dataclass(frozen=True)
class Periodic(_TwoScale):
    r"""A periodic field :math:`a(x/\varepsilon)` from a cell function :math:`a(y)`.

    ``cell_function(y, ns)`` gets the fast variable ``y = x/ε`` and a math namespace
    ``ns`` (``ns.sin``, ``ns.cos``, ``ns.exp``, ``ns.sqrt``, ``ns.pi``) that is NumPy
    for evaluation and UFL for forms, so one function serves both. Its period in ``y``
    must be 1. Return a scalar, or a nested (d, d) list for a tensor (set ``shape``).
    """

    cell_function: Callable[[Any, _Namespace], Any]
    eps: float
    shape: tuple[int, ...] = ()

    def _value(self, x, ns):
        return self.cell_function(x / self.eps, ns)


@dataclass(frozen=True)
class LocallyPeriodic(_TwoScale):
    r"""A locally periodic field :math:`a(x, x/\varepsilon)`: slow variable x, fast y.

    ``cell_function(x, y, ns)`` must be 1-periodic in ``y``; ``ns`` is the NumPy/UFL math
    namespace as for :class:`Periodic`. Homogenization solves one cell problem per coarse
    cell, at its centre (:func:`msfem.homogenization.macro.local_effective_tensors`).
    """

    cell_function: Callable[[Any, Any, _Namespace], Any]
    eps: float
    shape: tuple[int, ...] = ()

    def _value(self, x, ns):
        return self.cell_function(x, x / self.eps, ns)


@dataclass(frozen=True)
class Laminate(Field):
    r"""Layers of period ε normal to ``direction``: :math:`a = a_1` on a fraction ``f``.

    Effective value: arithmetic mean :math:`\langle a\rangle` along the layers,
    harmonic mean :math:`\langle a^{-1}\rangle^{-1}` across them.
    """

    a1: float
    a2: float
    eps: float
    direction: int = 0
    fraction: float = 0.5

    def evaluate(self, x):
        """``a1`` or ``a2`` at points ``x`` of shape (3, n), by layer."""
        t = np.mod(x[self.direction] / self.eps, 1.0)
        return np.where(t < self.fraction - 1e-12, self.a1, self.a2)


@dataclass(frozen=True)
class Checkerboard(Field):
    r"""Periodic checkerboard of squares of side ε/2 (in 2D :math:`a^* = \sqrt{a_1 a_2}`)."""

    a1: float
    a2: float
    eps: float
    dim: int = 2

    def evaluate(self, x):
        """``a1`` or ``a2`` at points ``x`` of shape (3, n), by square."""
        idx = np.floor(2 * x[: self.dim] / self.eps + 1e-12).astype(np.int64).sum(axis=0)
        return np.where(idx % 2 == 0, self.a1, self.a2)


@dataclass(frozen=True)
class Inclusions(Field):
    """Periodic circular (2D) / spherical (3D) inclusions of ``radius`` (in units of ε)."""

    matrix: float
    inclusion: float
    eps: float
    radius: float = 0.25
    dim: int = 2

    def evaluate(self, x):
        """``inclusion`` or ``matrix`` at points ``x`` of shape (3, n)."""
        y = np.mod(x[: self.dim] / self.eps, 1.0) - 0.5
        return np.where((y**2).sum(axis=0) < self.radius**2, self.inclusion, self.matrix)


@dataclass(frozen=True)
class PeriodicDiscs(Field):
    r"""Indicator of periodic holes: discs (2D) / balls (3D) of ``radius`` (units of ε).

    Value 1 in the holes :math:`\{x: |x - \varepsilon(k + c)| < r\varepsilon,\ k \in
    \mathbb Z^d\}`, 0 elsewhere; ``center`` c (units of ε, every axis) places them: 0.5 in
    the middle of the period cells, 0 on the lattice :math:`\varepsilon\mathbb Z^d` (then
    any coarse edge at a multiple of ε cuts holes through their middle). Given to a
    :class:`~msfem.problem.Problem` as ``holes`` (sampled at fine-cell midpoints).
    """

    eps: float
    radius: float = 0.25
    center: float = 0.5
    dim: int = 2

    def evaluate(self, x):
        """1.0 inside a hole, 0.0 outside, at points ``x`` of shape (3, n)."""
        y = np.mod(x[: self.dim] / self.eps - self.center + 0.5, 1.0) - 0.5
        return np.where((y**2).sum(axis=0) < self.radius**2, 1.0, 0.0)



def _cell_index(x: np.ndarray, origin: np.ndarray, size: float, dim: int) -> np.ndarray:
    return np.floor((x[:dim] - origin[:dim, None]) / size + 1e-12).astype(np.int64)


@dataclass(frozen=True)
class RandomCheckerboard(Field):
    """Random checkerboard: each square of side ``cell`` is ``a1`` with probability ``p``.

    The phases are drawn with ``numpy.random.default_rng(seed)`` on the global grid of
    ``ncells`` squares starting at ``origin``, so every rank and every patch sees the same
    field.
    """

    a1: float
    a2: float
    cell: float
    seed: int
    ncells: tuple[int, ...] = (64, 64)
    p: float = 0.5
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)

    @property
    def eps(self) -> float:  # type: ignore[override]
        """The scale: the side ``cell`` of the squares."""
        return self.cell

    def phases(self) -> np.ndarray:
        """The phase indicator (True = a1) on the global grid of squares."""
        return np.random.default_rng(self.seed).random(self.ncells) < self.p

    def evaluate(self, x):
        """``a1`` or ``a2`` at points ``x`` of shape (3, n), by square (clipped to the grid)."""
        dim = len(self.ncells)
        idx = _cell_index(x, np.asarray(self.origin + (0.0,) * 3), self.cell, dim)
        idx = np.clip(idx, 0, np.array(self.ncells)[:, None] - 1)
        return np.where(self.phases()[tuple(idx)], self.a1, self.a2)


@dataclass(frozen=True)
class LogNormal(Field):
    r"""Log-normal random field :math:`a = \exp(\mu + \sigma g(x))`.

    :math:`g` is a stationary Gaussian field with covariance
    :math:`\exp(-|r|^2/(2\ell^2))`, sampled by ``modes`` random Fourier features
    :math:`g = \sqrt{2/K}\sum_k \cos(w_k\cdot x + b_k)`, :math:`w_k\sim N(0, \ell^{-2})`,
    :math:`b_k\sim U(0, 2\pi)` drawn from ``seed`` -- a function of x only, hence the same
    on any number of ranks.
    """

    mu: float
    sigma: float
    correlation_length: float
    seed: int
    modes: int = 256
    dim: int = 2

    @property
    def eps(self) -> float:  # type: ignore[override]
        """The scale: the ``correlation_length``."""
        return self.correlation_length

    def evaluate(self, x):
        """Values of the field at points ``x`` of shape (3, n)."""
        rng = np.random.default_rng(self.seed)
        w = rng.normal(0.0, 1.0 / self.correlation_length, (self.modes, self.dim))
        b = rng.uniform(0.0, 2 * np.pi, self.modes)
        g = np.sqrt(2.0 / self.modes) * np.cos(w @ x[: self.dim] + b[:, None]).sum(axis=0)
        return np.exp(self.mu + self.sigma * g)


@dataclass(frozen=True)
class Boxes(Field):
    """Background value with axis-aligned boxes of another value (high-contrast media).

    ``boxes`` is a list of (lower corner, upper corner). See :func:`channels` and
    :func:`square_inclusions` for the GMsFEM-style configurations (contrast up to 1e6).
    """

    background: float
    value: float
    boxes: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = field(default=())
    scale: float | None = None

    @property
    def eps(self) -> float | None:  # type: ignore[override]
        """The scale given as ``scale`` (None if not multiscale)."""
        return self.scale

    def evaluate(self, x):
        """``value`` inside the boxes, ``background`` elsewhere, at points ``x`` of shape (3, n)."""
        inside = np.zeros(x.shape[1], dtype=bool)
        for lo, hi in self.boxes:
            d = len(lo)
            inside |= np.all(
                (x[:d] > np.array(lo)[:, None] - 1e-12) & (x[:d] < np.array(hi)[:, None] + 1e-12),
                axis=0,
            )
        return np.where(inside, self.value, self.background)


def channels(contrast: float, number: int, width: float, length: tuple[float, float] = (0.1, 0.9),
             background: float = 1.0) -> Boxes:
    """``number`` horizontal high-conductivity channels of ``width`` in the unit square."""
    ys = (np.arange(number) + 0.5) / number
    boxes = tuple(((length[0], y - width / 2), (length[1], y + width / 2)) for y in ys)
    return Boxes(background, background * contrast, boxes, scale=width)


def square_inclusions(contrast: float, per_direction: int, size: float,
                      background: float = 1.0) -> Boxes:
    """A regular array of square high-contrast inclusions of side ``size`` in the unit square."""
    c = (np.arange(per_direction) + 0.5) / per_direction
    boxes = tuple(((x - size / 2, y - size / 2), (x + size / 2, y + size / 2))
                  for x in c for y in c)
    return Boxes(background, background * contrast, boxes, scale=size)


@dataclass(frozen=True)
class UserField(Field):
    """A user's callable: ``numpy_function(x)`` with x of shape (3, n).

    Optionally ``ufl_function(x)`` with x the UFL spatial coordinate for an exact symbolic form.
    """

    numpy_function: Callable[[np.ndarray], np.ndarray]
    ufl_function: Callable[[Any], Any] | None = None
    shape: tuple[int, ...] = ()
    eps: float | None = None

    def evaluate(self, x):
        """``numpy_function(x)`` as a float array."""
        return np.asarray(self.numpy_function(x), dtype=float)

    def symbolic(self, x):
        """``ufl_function(x)``, or None without it."""
        return None if self.ufl_function is None else self.ufl_function(x)


class FieldOnMesh:
    """A field as a UFL expression on one mesh, with :meth:`refresh` after the mesh moved.

    Symbolic fields need no refresh; sampled ones re-interpolate their DG0 function.
    """

    def __init__(self, fld: Field, mesh: dolfinx.mesh.Mesh):
        self.field = fld
        expr = fld.symbolic(ufl.SpatialCoordinate(mesh))
        self.function: dolfinx.fem.Function | None = None
        self._cells: tuple[np.ndarray, np.ndarray] | None = None
        if expr is None:
            shape = tuple(fld.shape)
            V = dolfinx.fem.functionspace(mesh, ("DG", 0, shape) if shape else ("DG", 0))
            self.function = dolfinx.fem.Function(V)
            expr = self.function
            self.refresh()
        self.expr = expr

    def refresh(self) -> None:
        """Re-sample the field on the (possibly moved) mesh.

        DG0 interpolation is the value at each cell's midpoint (the mean of its vertices:
        the image of the reference midpoint for affine simplices and bilinear cells),
        written straight into the function's array.
        """
        if self.function is None:
            return
        V = self.function.function_space
        mesh = V.mesh
        bs = int(np.prod(self.field.shape, dtype=int))
        if mesh.geometry.cmaps[0].degree != 1:  # curved cells: dolfinx's interpolation
            self.function.interpolate(lambda x: self.field.evaluate(x).reshape(bs, -1))
            return
        if self._cells is None:
            tdim = mesh.topology.dim
            imap = mesh.topology.index_map(tdim)
            n = imap.size_local + imap.num_ghosts
            self._cells = (mesh.geometry.dofmaps[0][:n], V.dofmap.list[:n, 0])
        geometry, dof = self._cells
        x = np.zeros((3, len(dof)))
        x[: mesh.geometry.dim] = mesh.geometry.x[geometry, : mesh.geometry.dim].mean(axis=1).T
        values = np.asarray(self.field.evaluate(x), dtype=float).reshape(bs, -1)
        self.function.x.array.reshape(-1, bs)[dof] = values.T


def as_ufl(fld: Field | float | Sequence[float] | Sequence[Sequence[float]],
           mesh: dolfinx.mesh.Mesh) -> FieldOnMesh:
    """Return ``fld`` on ``mesh`` (numbers become :class:`ConstantField`)."""
    if not isinstance(fld, Field):
        fld = ConstantField(fld)
    return FieldOnMesh(fld, mesh)


def smallest_eigenvalue(values: Any) -> tuple[int, float]:
    r"""Where samples of a coefficient are least positive (definite), and how positive.

    The one test of positivity in msfem (:func:`check_positive` for fields,
    :func:`msfem.homogenization.cell.check_positive_definite` for UFL expressions and the
    fine solve's check of constant coefficients all call it). ``values`` are ``n`` scalars,
    shape (n,), or ``n`` square tensors, shape (n, d, d) (real parts are used). A scalar
    counts by its value; a tensor :math:`A` by the smallest eigenvalue of its symmetric part
    :math:`(A + A^T)/2`, which is the coercivity constant
    :math:`\min_{|\xi| = 1} \xi\cdot A\xi` -- for a nonsymmetric tensor the eigenvalues of
    :math:`A` itself say nothing (:math:`[[1, 0], [5, 1]]` has eigenvalues 1, 1, but
    :math:`\xi = (1, -1)` gives :math:`\xi\cdot A\xi = -3`).

    The samples are positive (definite) if and only if the value returned is ``> 0``. A
    non-finite sample (NaN or infinite entry) is returned first, with the value NaN, so
    ``not value > 0`` refuses it too.

    Returns:
        ``(index, value)``: the index of the worst sample and its smallest eigenvalue (its
        value for scalars); ``(-1, inf)`` when there are no samples.

    Raises:
        ValueError: for values of any other shape (e.g. vectors).
    """
    vals = np.real(np.asarray(values))
    if vals.ndim not in (1, 3) or (vals.ndim == 3 and vals.shape[1] != vals.shape[2]):
        raise ValueError(f"positivity is defined for scalars (n,) and square tensors "
                         f"(n, d, d), got values of shape {vals.shape}")
    if vals.shape[0] == 0:
        return -1, np.inf
    finite = np.isfinite(vals.reshape(vals.shape[0], -1)).all(axis=1)
    if not finite.all():
        return int(np.argmin(finite)), np.nan
    if vals.ndim == 3:
        vals = np.linalg.eigvalsh(0.5 * (vals + np.swapaxes(vals, 1, 2)))[:, 0]
    worst = int(np.argmin(vals))
    return worst, float(vals[worst])


def check_positive(fld: Field, points: np.ndarray, name: str = "coefficient") -> None:
    """Raise ValueError if ``fld`` is not (uniformly) positive definite at ``points`` (3, n).

    Positive definite as defined by :func:`smallest_eigenvalue` (a tensor by its symmetric
    part).
    """
    if points.shape[1] == 0:
        return
    values = fld.evaluate(points)
    try:
        worst, smallest = smallest_eigenvalue(np.moveaxis(values, -1, 0))
    except ValueError as err:
        raise ValueError(f"{name} {type(fld).__name__} of shape {values.shape[:-1]} cannot "
                         f"be positive definite: {err}") from err
    if not smallest > 0:
        x = np.round(points[:, worst], 6).tolist()
        raise ValueError(
            f"{name} {type(fld).__name__} is not positive definite: value {smallest:.4g} at "
            f"x = {x}. Diffusion coefficients must satisfy a(x) >= alpha > 0 everywhere; "
            f"change the field parameters."
        )


def resolution_error(scale: float | None, h: float, what: str = "eps") -> str | None:
    """Why a fine mesh of cell size ``h`` does not resolve the fine scale ``scale``, or None.

    A scale is resolved by at least :data:`MIN_CELLS_PER_PERIOD` fine cells,
    ``scale / h >= 8`` (to a relative 1e-12, so ``h = eps/8`` computed in floating point
    passes). ``what`` names the scale in the message (a configuration key such as
    ``"eps"`` or ``"cell"``); callers add where it comes from and what to change. ``None``
    when ``scale`` is None (a field without a fine scale).
    """
    if scale is None:
        return None
    ratio = scale / h
    if ratio >= MIN_CELLS_PER_PERIOD * (1 - 1e-12):
        return None
    return (f"{what} = {scale:.4g} is resolved by only {ratio:.2f} fine cells (h = {h:.4g}, "
            f"{what}/h = {ratio:.2f}); at least {MIN_CELLS_PER_PERIOD} are needed")


def check_resolution(fld: Field, h: float, *, stacklevel: int = 2) -> float | None:
    """Warn (:class:`UnresolvedScaleWarning`) if ``fld.eps`` is not resolved; return ``eps/h``.

    The rule is :func:`resolution_error`'s (``eps / h >= 8``).
    """
    eps = getattr(fld, "eps", None)
    if eps is None:
        return None
    ratio = eps / h
    error = resolution_error(eps, h)
    if error is not None:
        warnings.warn(
            UnresolvedScaleWarning(
                f"{type(fld).__name__}: {error} for a trustworthy fine solution -- refine the "
                f"fine mesh by a factor >= {MIN_CELLS_PER_PERIOD / ratio:.3g} (increase M, the "
                f"fine cells per coarse cell) or use a larger eps."
            ),
            stacklevel=stacklevel,
        )
    return ratio
