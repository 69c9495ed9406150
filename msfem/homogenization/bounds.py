r"""Closed-form bounds and exact formulas for two-phase composites (oracles for the tests).

Throughout, phase 2 (the inclusions) has volume fraction :math:`f` in a matrix phase 1.

* Voigt (arithmetic) and Reuss (harmonic) bounds, valid for any geometry:

  .. math:: \sigma_V = f\sigma_2 + (1-f)\sigma_1, \qquad
     \sigma_R = \bigl(f/\sigma_2 + (1-f)/\sigma_1\bigr)^{-1}.

* Hashin--Shtrikman bounds for isotropic conductivity in dimension :math:`d`,

  .. math:: \sigma_{HS}(\sigma_1\text{ matrix}) = \sigma_1
     + \frac{f}{1/(\sigma_2-\sigma_1) + (1-f)/(d\sigma_1)},

  the lower bound with the less conducting phase as matrix, the upper with the phases (and
  fractions) swapped (Hashin & Shtrikman, J. Appl. Phys. 33, 1962).

* Hashin--Shtrikman bounds in 2D plane-strain elasticity (:math:`k=\lambda+\mu`),

  .. math:: k_L = k_1 + \frac{f}{1/(k_2-k_1) + (1-f)/(k_1+\mu_1)}, \qquad
     \mu_L = \mu_1 + \frac{f}{1/(\mu_2-\mu_1) + (1-f)(k_1+2\mu_1)/(2\mu_1(k_1+\mu_1))},

  with the phases swapped for the upper bounds (Hashin, J. Mech. Phys. Solids 13, 1965).

* Hill's equal-shear theorem: if :math:`\mu_1=\mu_2=\mu` the effective (plane-strain)
  bulk modulus is exact for *any* geometry (Hill, J. Mech. Phys. Solids 11, 1963),

  .. math:: \frac{1}{k^*+\mu} = \frac{f}{k_2+\mu} + \frac{1-f}{k_1+\mu}.

* Square array of discs (Perrins, McKenzie & McPhedran, Proc. R. Soc. A 369, 1979;
  truncated Rayleigh formula, accurate for :math:`f \lesssim 0.6`), :math:`s=\sigma_2/\sigma_1`,
  :math:`T = (1+s)/(1-s)`:

  .. math:: \frac{\sigma^*}{\sigma_1} = 1 - \frac{2f}{T + f - 0.305827 f^4 T/(T^2 - 1.402958
     f^8) - 0.013362 f^8/T}.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "hashin_shtrikman",
    "hashin_shtrikman_plane_strain",
    "hill_equal_shear",
    "perrins",
    "reuss",
    "voigt",
]


def voigt(sigma_1: float, sigma_2: float, f: float) -> float:
    r"""Voigt (arithmetic mean) upper bound :math:`f\sigma_2 + (1-f)\sigma_1`."""
    return f * sigma_2 + (1.0 - f) * sigma_1


def reuss(sigma_1: float, sigma_2: float, f: float) -> float:
    r"""Reuss (harmonic mean) lower bound :math:`(f/\sigma_2 + (1-f)/\sigma_1)^{-1}`."""
    return 1.0 / (f / sigma_2 + (1.0 - f) / sigma_1)


def _hs_conductivity(matrix: float, inclusion: float, f: float, dim: int) -> float:
    if inclusion == matrix:
        return matrix
    return matrix + f / (1.0 / (inclusion - matrix) + (1.0 - f) / (dim * matrix))


def hashin_shtrikman(sigma_1: float, sigma_2: float, f: float, dim: int = 2
                     ) -> tuple[float, float]:
    r"""Hashin--Shtrikman bounds ``(lower, upper)`` on an isotropic conductivity.

    Args:
        sigma_1: Matrix conductivity.
        sigma_2: Inclusion conductivity (fraction ``f``).
        f: Volume fraction of phase 2.
        dim: Space dimension (2 or 3).

    Returns:
        ``(lower, upper)``; e.g. ``(1, 10, 0.5, 2)`` gives ``(2.38462, 4.19355)``.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    a = _hs_conductivity(sigma_1, sigma_2, f, dim)
    b = _hs_conductivity(sigma_2, sigma_1, 1.0 - f, dim)
    return (min(a, b), max(a, b))


def _hs_bulk(k1, mu1, k2, f):
    if k2 == k1:
        return k1
    return k1 + f / (1.0 / (k2 - k1) + (1.0 - f) / (k1 + mu1))


def _hs_shear(k1, mu1, mu2, f):
    if mu2 == mu1:
        return mu1
    return mu1 + f / (1.0 / (mu2 - mu1) + (1.0 - f) * (k1 + 2 * mu1) / (2 * mu1 * (k1 + mu1)))


def hashin_shtrikman_plane_strain(
    k1: float, mu1: float, k2: float, mu2: float, f: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    r"""2D plane-strain Hashin--Shtrikman bounds on the bulk and shear moduli.

    For a well-ordered two-phase composite; the plane-strain bulk modulus is
    :math:`k=\lambda+\mu`.

    Args:
        k1: Matrix plane-strain bulk modulus :math:`\lambda_1+\mu_1`.
        mu1: Matrix shear modulus.
        k2: Inclusion bulk modulus.
        mu2: Inclusion shear modulus.
        f: Inclusion volume fraction.

    Returns:
        ``((k_lower, k_upper), (mu_lower, mu_upper))``.
    """
    if (k2 - k1) * (mu2 - mu1) < 0:
        raise ValueError("the HS formulas here need well-ordered phases ((k2-k1)(mu2-mu1) >= 0)")
    ka = _hs_bulk(k1, mu1, k2, f)
    kb = _hs_bulk(k2, mu2, k1, 1.0 - f)
    ma = _hs_shear(k1, mu1, mu2, f)
    mb = _hs_shear(k2, mu2, mu1, 1.0 - f)
    return (min(ka, kb), max(ka, kb)), (min(ma, mb), max(ma, mb))


def hill_equal_shear(k1: float, k2: float, mu: float, f: float) -> float:
    r"""Exact plane-strain bulk modulus :math:`k^*` when both phases have one shear modulus.

    With the common shear modulus :math:`\mu`:
    :math:`1/(k^*+\mu) = f/(k_2+\mu) + (1-f)/(k_1+\mu)`.

    E.g. ``hill_equal_shear(1, 10, 1, 0.3) = 1.650602``.
    """
    return 1.0 / (f / (k2 + mu) + (1.0 - f) / (k1 + mu)) - mu


def perrins(s: float | np.ndarray, f: float | np.ndarray) -> float | np.ndarray:
    r"""Perrins--McKenzie--McPhedran :math:`\sigma^*/\sigma_m` of a square array of discs.

    Args:
        s: Contrast :math:`\sigma_{disc}/\sigma_{matrix}` (not 1).
        f: Disc area fraction (:math:`\lesssim 0.6`).

    Returns:
        :math:`\sigma^*/\sigma_m`; ``perrins(10, 0.3) = 1.65204``,
        ``perrins(0.1, 0.2) = 0.71867``.
    """
    T = (1.0 + s) / (1.0 - s)
    return 1.0 - 2.0 * f / (T + f - 0.305827 * f**4 * T / (T**2 - 1.402958 * f**8)
                            - 0.013362 * f**8 / T)
