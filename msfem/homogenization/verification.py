r"""Verification of a computed effective tensor against bounds and exact formulas.

The bounds and exact formulas of :mod:`~msfem.homogenization.bounds` that apply to a
:class:`~msfem.homogenization.schema.CellSpec` are reported with the relative amount by
which the computed tensor violates them (0 inside; below :data:`ROUNDOFF` = 1e-10
round-off counts as inside):

* Voigt/Reuss, any geometry: :math:`A_R \le A^* \le A_V` (as matrices);
* Hashin--Shtrikman, two-phase isotropic (conductivity on square-symmetric cells, whose
  second-order tensors are isotropic; in elasticity on the bulk modulus
  :math:`k = (C_{11}+C_{22}+2C_{12})/4` only, square-symmetric stiffnesses not being
  isotropic);
* exact values: laminates (:math:`\langle a\rangle` along, :math:`\langle a^{-1}
  \rangle^{-1}` across), Dykhne's :math:`\sqrt{a_1a_2}` for the checkerboard,
  Perrins--McKenzie--McPhedran for discs, Hill's equal-shear :math:`k^*` when
  :math:`\mu_1 = \mu_2`.

On the structured meshes the phases are sampled at cell midpoints (DG0), so the fraction
actually computed, :math:`f_h = \langle\chi_2\rangle`, is the one every bound and
reference formula uses.

References:
    REFERENCES.md §5; Z. Hashin, S. Shtrikman, J. Appl. Phys. 33 (1962) 3125;
    A. M. Dykhne, Sov. Phys. JETP 32 (1971) 63; W. T. Perrins, D. R. McKenzie,
    R. C. McPhedran, Proc. R. Soc. A 369 (1979) 207; R. Hill, J. Mech. Phys. Solids 11
    (1963) 357.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from msfem.homogenization import bounds
from msfem.homogenization.cell import EffectiveTensor
from msfem.homogenization.schema import CellSpec

__all__ = [
    "ROUNDOFF",
    "SQUARE_SYMMETRIC",
    "conductivity_checks",
    "elasticity_checks",
    "isotropic_stiffness",
    "plane_strain_moduli",
]

#: Microstructures whose cell is square-symmetric (isotropic second-order tensors).
SQUARE_SYMMETRIC = ("checkerboard", "inclusion", "disc")
#: Relative bound violations below this are round-off (laminates attain Voigt and Reuss).
ROUNDOFF = 1e-10


def isotropic_stiffness(k: float, mu: float) -> np.ndarray:
    r"""Mandel matrix :math:`2kJ + 2\mu(I - J)` of the 2D plane-strain isotropic stiffness.

    :math:`k` is the bulk and :math:`\mu` the shear modulus, :math:`J` the projector onto
    the hydrostatic strains (:math:`J_{ab} = 1/2` for :math:`a, b \in \{11, 22\}`).
    """
    J = np.zeros((3, 3))
    J[:2, :2] = 0.5
    return 2 * k * J + 2 * mu * (np.eye(3) - J)


def plane_strain_moduli(C: np.ndarray) -> dict[str, float]:
    r"""Return bulk and shear moduli of a 2D Mandel stiffness.

    Bulk :math:`(C_{11}+C_{22}+2C_{12})/4` (response to a hydrostatic strain), shears
    :math:`(C_{11}+C_{22}-2C_{12})/4` and :math:`C_{66}/2`; all equal the isotropic
    :math:`k, \mu, \mu` for an isotropic stiffness.
    """
    C = 0.5 * (C + C.T)
    return {"bulk": float((C[0, 0] + C[1, 1] + 2 * C[0, 1]) / 4),
            "shear_1": float((C[0, 0] + C[1, 1] - 2 * C[0, 1]) / 4),
            "shear_2": float(C[2, 2] / 2)}


def _rel_error(computed: Any, exact: Any) -> float:
    computed, exact = np.asarray(computed, float), np.asarray(exact, float)
    return float(np.abs(computed - exact).max() / np.abs(exact).max())


def _violation(excess: float) -> float:
    """Return a relative bound violation, with round-off (below :data:`ROUNDOFF`) as 0."""
    return float(excess) if excess > ROUNDOFF else 0.0


def _excess(value: float, lo: float, hi: float) -> float:
    """Relative amount by which ``value`` leaves ``[lo, hi]`` (0 inside)."""
    return _violation(max(0.0, lo - value, value - hi) / max(abs(lo), abs(hi)))


def conductivity_checks(spec: CellSpec, res: EffectiveTensor, fraction: float | None,
                        means: tuple[float, float] | None = None) -> dict[str, Any]:
    """Bounds, their violations and exact references for an effective conductivity.

    Args:
        spec: The cell.
        res: The computed effective tensor.
        fraction: Phase-2 fraction on the mesh, :math:`f_h` (``None`` for Hou--Wu).
        means: ``(arithmetic, harmonic)`` means of a continuous coefficient (Hou--Wu).

    """
    A = res.tensor
    eig = np.linalg.eigvalsh(0.5 * (A + A.T))
    scalar = float(np.trace(A) / A.shape[0])
    out: dict[str, Any] = {"bounds": {}, "bound_violations": {}, "reference": {}, "notes": [],
                           "effective_scalar": scalar, "eigenvalues": eig}
    b, viol, ref = out["bounds"], out["bound_violations"], out["reference"]
    if fraction is None:  # a continuous coefficient: Voigt/Reuss from its means
        if means is None:
            raise ValueError("conductivity_checks needs a fraction or the means")
        voigt, reuss = means
    else:
        (a1,), (a2,) = spec.phase1, spec.phase2
        voigt, reuss = bounds.voigt(a1, a2, fraction), bounds.reuss(a1, a2, fraction)
    b["voigt"], b["reuss"] = voigt, reuss
    viol["voigt"] = _violation((eig.max() - voigt) / voigt)
    viol["reuss"] = _violation((reuss - eig.min()) / reuss)
    micro = spec.microstructure
    if fraction is None:
        return out
    if micro in SQUARE_SYMMETRIC:
        lo, hi = bounds.hashin_shtrikman(a1, a2, fraction, dim=2)
        b["hashin_shtrikman"] = [lo, hi]
        viol["hashin_shtrikman"] = max(_excess(float(e), lo, hi) for e in eig)
    elif micro == "laminate":
        out["notes"].append("Hashin-Shtrikman bounds do not apply: a laminate is anisotropic "
                            "(it attains Voigt along and Reuss across the layers)")
    if micro == "laminate":
        layers = np.diag([voigt, voigt])
        layers[spec.direction, spec.direction] = reuss
        ref["laminate"] = {"formula": "arithmetic mean along, harmonic mean across the layers",
                           "value": layers, "computed": A,
                           "relative_error": _rel_error(A, layers)}
    elif micro == "checkerboard":
        dykhne = math.sqrt(a1 * a2)
        ref["dykhne"] = {"formula": "sqrt(a1 a2)", "value": dykhne, "computed": scalar,
                         "relative_error": _rel_error(scalar, dykhne)}
    elif micro == "disc" and a1 != a2:
        perrins = a1 * float(bounds.perrins(a2 / a1, fraction))
        ref["perrins"] = {"formula": "Perrins-McKenzie-McPhedran 1979, square array of discs",
                          "value": perrins, "computed": scalar,
                          "relative_error": _rel_error(scalar, perrins)}
    return out


def elasticity_checks(spec: CellSpec, res: EffectiveTensor, fraction: float) -> dict[str, Any]:
    """Bounds, their violations and exact references for an effective plane-strain stiffness."""
    C = 0.5 * (res.tensor + res.tensor.T)
    (k1, m1), (k2, m2) = spec.phase1, spec.phase2
    f = fraction
    out: dict[str, Any] = {"bounds": {}, "bound_violations": {}, "reference": {}, "notes": []}
    b, viol, ref = out["bounds"], out["bound_violations"], out["reference"]
    moduli = plane_strain_moduli(C)
    voigt = {"bulk": bounds.voigt(k1, k2, f), "shear": bounds.voigt(m1, m2, f)}
    reuss = {"bulk": bounds.reuss(k1, k2, f), "shear": bounds.reuss(m1, m2, f)}
    b["voigt"], b["reuss"] = voigt, reuss
    scale = float(np.linalg.eigvalsh(C).max())
    C_voigt, C_reuss = isotropic_stiffness(**_ks(voigt)), isotropic_stiffness(**_ks(reuss))
    viol["voigt"] = _violation(-np.linalg.eigvalsh(C_voigt - C).min() / scale)
    viol["reuss"] = _violation(-np.linalg.eigvalsh(C - C_reuss).min() / scale)
    if spec.microstructure in SQUARE_SYMMETRIC:
        try:
            (klo, khi), (mlo, mhi) = bounds.hashin_shtrikman_plane_strain(k1, m1, k2, m2, f)
        except ValueError as err:
            out["notes"].append(f"Hashin-Shtrikman bounds not reported: {err}")
        else:
            b["hashin_shtrikman"] = {"bulk": [klo, khi], "shear": [mlo, mhi]}
            viol["hashin_shtrikman_bulk"] = _excess(moduli["bulk"], klo, khi)
            out["notes"].append("a square-symmetric cell has two shear moduli and is not "
                                "isotropic: the Hashin-Shtrikman shear interval is reported, "
                                "only the bulk modulus is checked")
            if m1 == m2:
                out["notes"].append("with equal shear moduli the Hashin-Shtrikman bulk bounds "
                                    "pinch to Hill's exact value: their 'violation' is the "
                                    "discretisation error")
    else:
        out["notes"].append("Hashin-Shtrikman bounds are not reported: a laminate is "
                            "anisotropic")
    if m1 == m2:
        exact = bounds.hill_equal_shear(k1, k2, m1, f)
        ref["hill_equal_shear"] = {
            "formula": "1/(k* + mu) = f/(k2 + mu) + (1 - f)/(k1 + mu), any geometry",
            "value": {"bulk": exact, "shear": m1},
            "computed": {"bulk": moduli["bulk"], "shear": [moduli["shear_1"],
                                                           moduli["shear_2"]]},
            "relative_error": max(_rel_error(moduli["bulk"], exact),
                                  _rel_error([moduli["shear_1"], moduli["shear_2"]], m1))}
    out["moduli"] = moduli
    out["eigenvalues"] = np.linalg.eigvalsh(C)
    return out


def _ks(moduli: Mapping[str, float]) -> dict[str, float]:
    return {"k": moduli["bulk"], "mu": moduli["shear"]}
