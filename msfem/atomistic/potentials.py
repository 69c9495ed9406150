r"""Pair potentials :math:`\phi(r)` with their first two derivatives, in NumPy and UFL.

A pair potential enters every model of this subpackage the same way: the atomistic energy
:math:`E(x) = \sum_{(i,j)} \phi(|x_j - x_i|)` and the Cauchy--Born energy density
:math:`W(F) = \frac{1}{2\Omega_0}\sum_{r} \phi(|F r|)` (:mod:`~msfem.atomistic.cauchy_born`).

* :class:`LennardJones`: :math:`\phi(r) = 4\epsilon[(\sigma/r)^{12} - (\sigma/r)^6]\,S(r^2)`
  with the smooth switch (C¹ at the cutoff) between :math:`r_o` and :math:`r_c`

  .. math::
     S(s) = \frac{(s_c - s)^2 (s_c + 2s - 3 s_o)}{(s_c - s_o)^3},\qquad
     s = r^2,\ s_o = r_o^2,\ s_c = r_c^2,

  equal to 1 below :math:`r_o` and 0 above :math:`r_c` (the form of ASE's
  ``LennardJones(smooth=True)``, so the two agree to rounding).
* :class:`Harmonic`: :math:`\phi(r) = \tfrac12 k (r - r_0)^2` for the bonds present in the
  reference configuration (:math:`|X_j - X_i| < r_c`); with a cutoff between the first and
  second shell it is the nearest-neighbour spring chain / network.

:func:`equilibrium_spacing` finds the stress-free lattice constant :math:`a` of a lattice,
:math:`\sum_{r} \phi'(a|\hat r|)\,|\hat r| = 0`, and refuses a potential without one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import brentq

if TYPE_CHECKING:
    from msfem.atomistic.lattice import Lattice


class PairPotential(ABC):
    r"""A pair potential :math:`\phi(r)` of the distance, zero beyond :attr:`cutoff`."""

    cutoff: float

    @abstractmethod
    def energy(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\phi(r)` (vectorised)."""

    @abstractmethod
    def first(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\phi'(r)`."""

    @abstractmethod
    def second(self, r: np.ndarray) -> np.ndarray:
        r"""Return :math:`\phi''(r)`."""

    @abstractmethod
    def ufl(self, r: Any) -> Any:
        r"""Return :math:`\phi(r)` as a UFL expression of the UFL scalar ``r``."""

    @property
    def name(self) -> str:
        """Short name for reports."""
        return type(self).__name__


@dataclass(frozen=True)
class LennardJones(PairPotential):
    """Lennard-Jones with the C¹ switch between ``switch_on`` and ``cutoff``.

    Args:
        epsilon: Well depth.
        sigma: Zero-crossing distance.
        cutoff: :math:`r_c`; the potential is exactly zero beyond it.
        switch_on: :math:`r_o < r_c`, where the switch starts (ASE's ``ro``); defaults to
            ``0.66 * cutoff`` as in ASE.
    """

    epsilon: float = 1.0
    sigma: float = 1.0
    cutoff: float = 2.5
    switch_on: float | None = None

    def __post_init__(self) -> None:
        if self.switch_on is None:
            object.__setattr__(self, "switch_on", 0.66 * self.cutoff)
        ro = float(self.switch_on)  # type: ignore[arg-type]
        if not (0 < ro < self.cutoff) or self.sigma <= 0 or self.epsilon <= 0:
            raise ValueError(f"LennardJones: need epsilon, sigma > 0 and 0 < switch_on < cutoff, "
                             f"got {self}; choose switch_on between 0 and {self.cutoff}")

    def _lj(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q6 = (self.sigma / r) ** 6
        e = 4 * self.epsilon * (q6 * q6 - q6)
        d1 = 4 * self.epsilon * (-12 * q6 * q6 + 6 * q6) / r
        d2 = 4 * self.epsilon * (156 * q6 * q6 - 42 * q6) / r**2
        return e, d1, d2

    def _switch(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """S, dS/dr, d²S/dr² (as functions of r)."""
        s, so, sc = r * r, float(self.switch_on) ** 2, self.cutoff**2  # type: ignore[arg-type]
        den = (sc - so) ** 3
        inside = (s > so) & (s < sc)
        S = np.where(s <= so, 1.0, np.where(inside, (sc - s) ** 2 * (sc + 2 * s - 3 * so) / den, 0))
        dS = np.where(inside, -6 * (sc - s) * (s - so) / den, 0.0)   # dS/ds
        d2S = np.where(inside, -6 * (sc + so - 2 * s) / den, 0.0)    # d²S/ds²
        return S, 2 * r * dS, 2 * dS + 4 * s * d2S

    def energy(self, r: np.ndarray) -> np.ndarray:  # noqa: D102
        r = np.asarray(r, dtype=float)
        return self._lj(r)[0] * self._switch(r)[0]

    def first(self, r: np.ndarray) -> np.ndarray:  # noqa: D102
        r = np.asarray(r, dtype=float)
        e, d1, _ = self._lj(r)
        S, dS, _ = self._switch(r)
        return d1 * S + e * dS

    def second(self, r: np.ndarray) -> np.ndarray:  # noqa: D102
        r = np.asarray(r, dtype=float)
        e, d1, d2 = self._lj(r)
        S, dS, d2S = self._switch(r)
        return d2 * S + 2 * d1 * dS + e * d2S

    def ufl(self, r: Any) -> Any:  # noqa: D102
        import ufl

        q6 = (self.sigma / r) ** 6
        lj = 4 * self.epsilon * (q6 * q6 - q6)
        s, so, sc = r * r, float(self.switch_on) ** 2, self.cutoff**2  # type: ignore[arg-type]
        switch = (sc - s) ** 2 * (sc + 2 * s - 3 * so) / (sc - so) ** 3
        return ufl.conditional(ufl.le(s, so), lj, ufl.conditional(ufl.lt(s, sc), lj * switch, 0))


@dataclass(frozen=True)
class Harmonic(PairPotential):
    r"""Harmonic spring :math:`\phi(r) = \frac12 k (r - r_0)^2` between reference neighbours.

    The cutoff selects the bonds in the reference configuration (no switch: the bond list is
    fixed, so the cutoff never cuts a spring during a solve).

    Args:
        stiffness: :math:`k > 0`.
        rest_length: :math:`r_0 > 0`.
        cutoff: Bonds are the reference pairs closer than this.
    """

    stiffness: float = 1.0
    rest_length: float = 1.0
    cutoff: float = 1.5

    def __post_init__(self) -> None:
        if self.stiffness <= 0 or self.rest_length <= 0 or self.cutoff <= 0:
            raise ValueError(f"Harmonic: stiffness, rest_length and cutoff must be > 0, got {self}")

    def energy(self, r: np.ndarray) -> np.ndarray:  # noqa: D102
        return 0.5 * self.stiffness * (np.asarray(r, dtype=float) - self.rest_length) ** 2

    def first(self, r: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.stiffness * (np.asarray(r, dtype=float) - self.rest_length)

    def second(self, r: np.ndarray) -> np.ndarray:  # noqa: D102
        return np.full_like(np.asarray(r, dtype=float), self.stiffness)

    def ufl(self, r: Any) -> Any:  # noqa: D102
        return 0.5 * self.stiffness * (r - self.rest_length) ** 2


def equilibrium_spacing(potential: PairPotential, lattice: Lattice,
                        bracket: tuple[float, float] | None = None) -> float:
    r"""Stress-free lattice constant :math:`a` of ``lattice`` (unit spacing) under ``potential``.

    Solves :math:`g(a) = \sum_{\hat r} \phi'(a|\hat r|)\,|\hat r| = 0`, the vanishing of the
    Cauchy--Born pressure :math:`\partial W(aI)/\partial a`, over the neighbour vectors
    :math:`\hat r` of the unit lattice with :math:`a|\hat r| <` cutoff (a homogeneous
    dilation is then stress free; the deviatoric stress vanishes by lattice symmetry).

    Args:
        potential: The pair potential.
        lattice: The lattice; its own ``spacing`` is ignored.
        bracket: Interval searched for :math:`a`; default ``(0.3, 0.999) * cutoff``.

    Returns:
        The lattice constant :math:`a`.

    Raises:
        ValueError: If :math:`g` does not change sign on the bracket (no equilibrium spacing).
    """
    lo, hi = bracket if bracket is not None else (0.3 * potential.cutoff, 0.999 * potential.cutoff)
    unit = lattice.with_spacing(1.0)

    def pressure(a: float) -> float:
        r = np.linalg.norm(unit.neighbour_vectors(potential.cutoff / a), axis=1)
        return float(np.sum(potential.first(a * r) * r))

    g_lo, g_hi = pressure(lo), pressure(hi)
    if not (np.isfinite(g_lo) and np.isfinite(g_hi)) or g_lo * g_hi > 0:
        raise ValueError(
            f"{potential.name} has no equilibrium spacing on a {lattice.name} lattice in "
            f"[{lo:.4g}, {hi:.4g}] (the Cauchy-Born pressure has one sign there: "
            f"{g_lo:.3g}, {g_hi:.3g}); change the potential's parameters or pass a bracket")
    return float(brentq(pressure, lo, hi, xtol=1e-15, rtol=1e-15))
