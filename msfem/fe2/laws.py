r"""Micro laws of FE²: a stored energy density :math:`W(g; y)` on the unit cell, in UFL.

A law is the energy density of the *total* micro gradient :math:`g` at the point
:math:`y \in Y = (0, 1)^d`:

* diffusion: :math:`g = G + \nabla_y w` (a vector), the flux :math:`q = \partial W/\partial g`;
* mechanics: :math:`F = I + H + \nabla_y w` (a matrix, :math:`H` the macro displacement
  gradient), the first Piola--Kirchhoff stress :math:`P = \partial W/\partial F`.

The flux is ``ufl.diff`` of :math:`W` on a ``ufl.variable``, the micro Jacobian
``ufl.derivative`` of the residual, so a law is only its energy. Registered laws:

=======================  ==================================================================
``linear-diffusion``     :math:`W = \tfrac12 a(y)|g|^2` (:math:`q = a g`)
``nonlinear-diffusion``  :math:`W = a(y)(\tfrac12|g|^2 + \tfrac14\beta|g|^4)`,
                         :math:`q = a(1 + \beta|g|^2)g` (strictly monotone, p-Laplacian type)
``neo-hooke``            compressible Neo-Hookean, plane strain in 2D:
                         :math:`W = \tfrac12\mu(I_1 - 3 - 2\ln J) + \tfrac12\lambda(\ln J)^2`,
                         :math:`I_1 = \mathrm{tr}(F^TF) + 3 - d`, :math:`J = \det F`
=======================  ==================================================================

The coefficients are two-phase fields on Y: phase 2 (area fraction ``fraction``) is a
layer :math:`y_{direction} < f` (``laminate``), the squares
:math:`(y_1 < \tfrac12) = (y_2 < \tfrac12)` (``checkerboard``, f = 1/2) or the centred
disc of area f (``disc``), sampled at the micro cell midpoints
(:func:`msfem.homogenization.cell.cellwise_constant`); ``homogeneous`` is phase 1
everywhere. A new law is a subclass of :class:`Law` registered with :func:`register_law`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import dolfinx
import numpy as np
import pydantic
import ufl

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first)
from msfem.homogenization.cell import cellwise_constant

__all__ = [
    "LAWS",
    "Law",
    "LawParameters",
    "LinearDiffusion",
    "NeoHooke",
    "NonlinearDiffusion",
    "available_laws",
    "create_law",
    "register_law",
]


class LawParameters(pydantic.BaseModel):
    """Parameters every law has: the two-phase microstructure of Y.

    Attributes:
        microstructure: ``"laminate"``, ``"checkerboard"``, ``"disc"`` or ``"homogeneous"``.
        fraction: area (volume) fraction of phase 2 (the checkerboard has 1/2).
        direction: normal of the laminate's layers (axis index).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    microstructure: Literal["laminate", "checkerboard", "disc", "homogeneous"] = "laminate"
    fraction: float = pydantic.Field(0.5, gt=0.0, lt=1.0)
    direction: int = pydantic.Field(0, ge=0, le=2)

    @pydantic.model_validator(mode="after")
    def _disc_fits(self) -> LawParameters:
        if self.microstructure == "disc" and self.fraction >= math.pi / 6:
            raise ValueError(f"a disc of area fraction {self.fraction} does not fit in the "
                             f"unit cell (the ball in 3D needs fraction < pi/6 = 0.5236)")
        return self

    def phase_2(self, y: np.ndarray) -> np.ndarray:
        """Whether the points ``y`` (n, d) of Y lie in phase 2."""
        d = y.shape[1]
        f = self.fraction
        if self.microstructure == "laminate":
            if self.direction >= d:
                raise ValueError(f"laminate direction {self.direction} on a {d}D cell")
            return y[:, self.direction] < f
        if self.microstructure == "checkerboard":
            return (y[:, 0] < 0.5) == (y[:, 1] < 0.5)
        if self.microstructure == "disc":
            radius = math.sqrt(f / math.pi) if d == 2 else (3 * f / (4 * math.pi)) ** (1 / 3)
            return ((y - 0.5) ** 2).sum(axis=1) < radius ** 2
        return np.zeros(len(y), dtype=bool)


class Law(abc.ABC):
    """A micro law: a stored energy density of the total micro gradient (module docstring).

    Args:
        params: the law's :attr:`Parameters`, or keyword arguments to build them.
    """

    #: Registry name.
    name: ClassVar[str] = "law"
    #: Typed parameters (pydantic, unknown keys refused).
    Parameters: ClassVar[type[LawParameters]] = LawParameters
    #: ``"diffusion"`` (scalar fluctuation, vector gradient) or ``"mechanics"`` (vector
    #: fluctuation, matrix gradient).
    kind: ClassVar[Literal["diffusion", "mechanics"]] = "diffusion"
    #: W is quadratic in g: the micro Jacobian does not depend on the state.
    linear: ClassVar[bool] = False
    #: What a non-finite micro residual usually means for this law.
    failure_hint: ClassVar[str] = ""

    def __init__(self, params: LawParameters | None = None, **kwargs: Any):
        self.params = params if params is not None else self.Parameters(**kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def describe(self) -> dict[str, Any]:
        """Name and parameters (JSON-ready)."""
        return {"law": self.name, **self.params.model_dump()}

    # ---------------------------------------------------------------- shapes
    def value_shape(self, dim: int) -> tuple[int, ...]:
        """Value shape of the fluctuation w (and of the macro unknown)."""
        return () if self.kind == "diffusion" else (dim,)

    def gradient_shape(self, dim: int) -> tuple[int, ...]:
        """Shape of the macro gradient G (diffusion) or H (mechanics)."""
        return (dim,) if self.kind == "diffusion" else (dim, dim)

    def total_gradient(self, G: Any, grad_w: Any) -> Any:
        r""":math:`g = G + \nabla w` (diffusion) or :math:`F = I + H + \nabla w` (mechanics)."""
        if self.kind == "diffusion":
            return G + grad_w
        return ufl.Identity(grad_w.ufl_shape[0]) + G + grad_w

    # ---------------------------------------------------------------- coefficients
    def phase_indicator(self, mesh: dolfinx.mesh.Mesh) -> dolfinx.fem.Function:
        """DG0 indicator of phase 2 on the unit-cell mesh (sampled at cell midpoints)."""
        return cellwise_constant(mesh, lambda y: self.params.phase_2(y).astype(float),
                                 name="chi_2")

    @staticmethod
    def two_phase(chi: Any, value_1: float, value_2: float) -> Any:
        r""":math:`v_1 + (v_2 - v_1)\chi_2`."""
        return value_1 + (value_2 - value_1) * chi

    @abc.abstractmethod
    def energy(self, g: Any, chi: Any) -> Any:
        """The stored energy density W(g; y) (UFL), ``chi`` the phase-2 indicator."""

    # ---------------------------------------------------------------- tangent check
    def tangent_defect(self, C: np.ndarray, dim: int) -> str | None:
        r"""Why the macro tangent C is not admissible (``None`` when it is).

        Diffusion: the symmetric part of :math:`C = \partial Q/\partial G` must be positive
        definite (a monotone law gives that). Mechanics: the Legendre--Hadamard condition
        :math:`(a\otimes n):C:(a\otimes n) > 0` for all unit a, n (strong ellipticity of
        the homogenized tangent; checked on 180 directions n in 2D, 400 in 3D).
        """
        if self.kind == "diffusion":
            low = float(np.linalg.eigvalsh((C + C.T) / 2).min())
            scale = float(np.abs(C).max())
            if not low > 1e-12 * scale:
                return f"the smallest eigenvalue of its symmetric part is {low:.3e}"
            return None
        C4 = C.reshape(dim, dim, dim, dim)
        if dim == 2:
            t = np.linspace(0, np.pi, 180, endpoint=False)
            normals = np.column_stack([np.cos(t), np.sin(t)])
        else:
            normals = np.random.default_rng(0).normal(size=(400, 3))
            normals /= np.linalg.norm(normals, axis=1)[:, None]
        acoustic = np.einsum("ijkl,nj,nl->nik", C4, normals, normals)
        low = float(np.linalg.eigvalsh((acoustic + acoustic.transpose(0, 2, 1)) / 2).min())
        scale = float(np.abs(C).max())
        if not low > 1e-12 * scale:
            return (f"it is not strongly elliptic (smallest acoustic-tensor eigenvalue "
                    f"{low:.3e})")
        return None


#: The registry of micro laws: name -> class.
LAWS: dict[str, type[Law]] = {}


def register_law(name: str) -> Callable[[type[Law]], type[Law]]:
    """Class decorator: register a :class:`Law` under ``name``."""
    def wrap(cls: type[Law]) -> type[Law]:
        cls.name = name
        LAWS[name] = cls
        return cls
    return wrap


def available_laws() -> list[str]:
    """Names of the registered laws."""
    return list(LAWS)


def _one_line(err: pydantic.ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "parameters"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def create_law(name: str, parameters: Mapping[str, Any] | None = None) -> Law:
    """The law ``name`` with its parameters validated.

    Raises:
        ValueError: an unknown law (listing the valid ones) or invalid parameters (naming
            them and the valid keys).
    """
    if name not in LAWS:
        raise ValueError(f"unknown micro law {name!r}; valid laws: "
                         f"{', '.join(available_laws())}")
    cls = LAWS[name]
    try:
        params = cls.Parameters(**dict(parameters or {}))
    except pydantic.ValidationError as err:
        raise ValueError(f"micro law {name!r}: {_one_line(err)} (parameters: "
                         f"{', '.join(cls.Parameters.model_fields)})") from None
    return cls(params)


# --------------------------------------------------------------------------- laws
class DiffusionParameters(LawParameters):
    """Two-phase conductivity.

    Attributes:
        a1: conductivity of phase 1.
        a2: conductivity of phase 2.
    """

    a1: float = pydantic.Field(1.0, gt=0.0)
    a2: float = pydantic.Field(10.0, gt=0.0)


@register_law("linear-diffusion")
class LinearDiffusion(Law):
    r""":math:`W = \tfrac12 a(y)|g|^2`, flux :math:`q = a(y) g`."""

    Parameters = DiffusionParameters
    params: DiffusionParameters
    linear = True

    def energy(self, g: Any, chi: Any) -> Any:
        """:math:`a|g|^2/2`."""
        a = self.two_phase(chi, self.params.a1, self.params.a2)
        return 0.5 * a * ufl.inner(g, g)


class NonlinearDiffusionParameters(DiffusionParameters):
    """Two-phase conductivity and the strength of the quartic term.

    Attributes:
        beta: coefficient of the quartic term (β ≥ 0 keeps the law strictly monotone).
    """

    beta: float = pydantic.Field(1.0, ge=0.0)


@register_law("nonlinear-diffusion")
class NonlinearDiffusion(Law):
    r""":math:`W = a(y)(\tfrac12|g|^2 + \tfrac14\beta|g|^4)`, :math:`q = a(1+\beta|g|^2)g`."""

    Parameters = NonlinearDiffusionParameters
    params: NonlinearDiffusionParameters

    def energy(self, g: Any, chi: Any) -> Any:
        r""":math:`a(|g|^2/2 + \beta|g|^4/4)`."""
        a = self.two_phase(chi, self.params.a1, self.params.a2)
        s = ufl.inner(g, g)
        return a * (0.5 * s + 0.25 * self.params.beta * s * s)


class NeoHookeParameters(LawParameters):
    """Lamé parameters of the two phases.

    Attributes:
        mu1: shear modulus of phase 1.
        mu2: shear modulus of phase 2.
        lambda1: first Lamé parameter of phase 1.
        lambda2: first Lamé parameter of phase 2.
    """

    mu1: float = pydantic.Field(1.0, gt=0.0)
    mu2: float = pydantic.Field(10.0, gt=0.0)
    lambda1: float = pydantic.Field(1.0, gt=0.0)
    lambda2: float = pydantic.Field(10.0, gt=0.0)


@register_law("neo-hooke")
class NeoHooke(Law):
    r"""Compressible Neo-Hooke: :math:`W = \tfrac12\mu(I_1-3-2\ln J) + \tfrac12\lambda(\ln J)^2`.

    :math:`I_1 = \mathrm{tr}(F^TF) + 3 - d` (plane strain in 2D: the out-of-plane stretch
    is 1), :math:`J = \det F`; :math:`P(I) = 0` and the tangent at :math:`F = I` is
    Hooke's law with the Lamé parameters :math:`\lambda, \mu`.
    """

    Parameters = NeoHookeParameters
    params: NeoHookeParameters
    kind = "mechanics"
    failure_hint = "det F <= 0 somewhere in the cell? reduce the load step"

    def energy(self, g: Any, chi: Any) -> Any:
        r""":math:`\tfrac12\mu(I_1 - 3 - 2\ln J) + \tfrac12\lambda(\ln J)^2`."""
        p = self.params
        mu = self.two_phase(chi, p.mu1, p.mu2)
        lam = self.two_phase(chi, p.lambda1, p.lambda2)
        d = g.ufl_shape[0]
        i1 = ufl.tr(g.T * g) + 3 - d
        log_j = ufl.ln(ufl.det(g))
        return 0.5 * mu * (i1 - 3 - 2 * log_j) + 0.5 * lam * log_j ** 2
