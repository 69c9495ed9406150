r"""``msfem homogenize`` and ``msfem rve``: effective tensors and RVE studies from a TOML file.

**homogenize.** A ``[cell]`` section describes a two-phase (or Hou--Wu) unit cell
:math:`Y = [0, 1]^2` and the physics; optional ``[solver]`` holds PETSc options of the
cell solves (prefix ``msfem_cell_diffusion_`` / ``msfem_cell_elasticity_``)::

    [cell]
    physics = "conductivity"     # or "elasticity" (2D plane strain)
    microstructure = "disc"      # laminate | checkerboard | inclusion | disc | hou-wu
    a1 = 1.0                     # matrix (phase 1); elasticity: k1, mu1 (k = lambda + mu)
    a2 = 10.0                    # phase 2;          elasticity: k2, mu2
    fraction = 0.3               # volume fraction f of phase 2
    n = 20                       # cells per direction (disc: gmsh size 1/n)
    degree = 2                   # Lagrange degree of the correctors

Microstructures (phase 2 of fraction :math:`f`): ``laminate`` -- layers
:math:`y_{direction} < f`; ``checkerboard`` -- the squares :math:`(y_1<\frac12) =
(y_2<\frac12)`, :math:`f = \frac12`; ``inclusion`` -- a centred square of side
:math:`\sqrt f`; ``disc`` -- a centred disc of area :math:`f` fitted by a periodic gmsh mesh
(:func:`~msfem.homogenization.disc_cell`); ``hou-wu`` -- the smooth coefficient of Hou & Wu
(1997), eq. (4.1), at :math:`\varepsilon = 1` (conductivity only, parameter ``P``). On the
structured meshes the phases are sampled at cell midpoints (DG0), so the fraction
actually computed, :math:`f_h = \langle\chi_2\rangle`, is reported next to the requested
one and every bound and reference formula uses :math:`f_h`.

The cell problems (:func:`~msfem.homogenization.effective_tensor`,
:func:`~msfem.homogenization.effective_elasticity`) give :math:`A^*` by the energy and the
flux formula and their relative difference. The bounds and exact formulas of
:mod:`~msfem.homogenization.bounds` that apply are reported with the relative amount by
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

**rve.** A ``[rve]`` section drives :func:`~msfem.homogenization.rve_size_study` on a
random checkerboard (Kanit et al. 2003); ``rve.csv``, ``rve.json``, ``rve.png`` and
``rve.pdf`` are written into ``--out`` all at once (:func:`msfem._runtime.atomic_directory`).

Both commands validate the whole configuration (unknown or ill-typed keys, non-positive
phase values, impossible fractions) with :class:`~msfem.config.ConfigError` before any
computation; both are collective and print/write from rank 0 only.

References:
    REFERENCES.md §5; Z. Hashin, S. Shtrikman, J. Appl. Phys. 33 (1962) 3125;
    A. M. Dykhne, Sov. Phys. JETP 32 (1971) 63; W. T. Perrins, D. R. McKenzie,
    R. C. McPhedran, Proc. R. Soc. A 369 (1979) 207; R. Hill, J. Mech. Phys. Solids 11
    (1963) 357; T. Kanit et al., Int. J. Solids Struct. 40 (2003) 3647.

"""

from __future__ import annotations

import json
import math
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import numpy as np
import ufl
from mpi4py import MPI

from msfem import _runtime  # (msfem/__init__ has loaded MPI/PETSc in the right order)
from msfem.config import ConfigError, validate
from msfem.homogenization import bounds
from msfem.homogenization.cell import (
    EffectiveTensor,
    cellwise_constant,
    effective_elasticity,
    effective_tensor,
    tagged_constant,
)
from msfem.homogenization.periodic import disc_cell
from msfem.homogenization.rve import BOUNDARY_CONDITIONS, RVEStudy, rve_size_study
from msfem.io import json_safe

__all__ = [
    "CELL_SCHEMA",
    "MICROSTRUCTURES",
    "ROUNDOFF",
    "RVE_SCHEMA",
    "CellSpec",
    "RVESpec",
    "homogenize",
    "read_cell_config",
    "read_rve_config",
    "rve",
]

logger = _runtime.logger

#: Keys of ``[cell]`` and their types (see :func:`msfem.config.validate`).
CELL_SCHEMA: dict[str, Any] = {
    "physics": ("conductivity", "elasticity"),
    "microstructure": ("laminate", "checkerboard", "inclusion", "disc", "hou-wu"),
    "n": int, "degree": int, "cell_type": ("quadrilateral", "triangle"),
    "a1": float, "a2": float, "k1": float, "mu1": float, "k2": float, "mu2": float,
    "fraction": float, "direction": int, "P": float, "order": int,
}
#: Geometry keys accepted by each microstructure (besides physics, microstructure, degree).
MICROSTRUCTURES: dict[str, tuple[str, ...]] = {
    "laminate": ("n", "cell_type", "fraction", "direction"),
    "checkerboard": ("n", "cell_type"),
    "inclusion": ("n", "cell_type", "fraction"),
    "disc": ("n", "fraction", "order"),
    "hou-wu": ("n", "cell_type", "P"),
}
_PHASE_KEYS = {"conductivity": ("a1", "a2"), "elasticity": ("k1", "mu1", "k2", "mu2")}
#: Keys of ``[rve]`` and their types.
RVE_SCHEMA: dict[str, Any] = {
    "window_sizes": "list", "realisations": int, "a1": float, "a2": float, "fraction": float,
    "elements_per_cell": int, "precision": float, "bcs": "list", "seed": int, "degree": int,
}
_SQUARE_SYMMETRIC = ("checkerboard", "inclusion", "disc")
#: Relative bound violations below this are round-off (laminates attain Voigt and Reuss).
ROUNDOFF = 1e-10
_BC_LABELS = {"kubc": "KUBC", "pbc": "PBC", "subc": "SUBC", "mixed": "mixed"}


# ---------------------------------------------------------------------- configuration
def _read(path: Path, sections: Mapping[str, Mapping[str, Any]], required: str
          ) -> dict[str, Any]:
    """Read a TOML file; refuse sections other than ``sections`` and ``[solver]``; validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {str(path)!r} not found")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    accepted = [*sections, "solver"]
    for name in cfg:
        if name not in accepted:
            raise ConfigError(f"unknown section [{name}]; accepted sections: "
                              f"{', '.join('[' + s + ']' for s in accepted)}")
    return validate(cfg, extra=sections, required=(required,))


def _positive(section: str, table: Mapping[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if key in table and not table[key] > 0:
            raise ConfigError(f"[{section}] {key} = {table[key]!r} must be positive")


@dataclass(frozen=True)
class CellSpec:
    """A validated ``[cell]`` table.

    Attributes:
        physics: ``"conductivity"`` or ``"elasticity"``.
        microstructure: One of :data:`MICROSTRUCTURES`.
        n: Cells per direction (structured meshes) or ``1/mesh_size`` (disc).
        degree: Lagrange degree of the correctors.
        cell_type: ``"quadrilateral"`` or ``"triangle"`` (structured meshes).
        phase1: Matrix values: ``(a1,)`` or ``(k1, mu1)``.
        phase2: Phase-2 values: ``(a2,)`` or ``(k2, mu2)`` (empty for Hou--Wu).
        fraction: Requested volume fraction of phase 2 (``None`` for Hou--Wu).
        direction: Laminate axis :math:`y_{direction}` along which the phases alternate.
        P: Hou--Wu amplitude (:math:`|P| < 2`).
        order: Geometric order of the disc mesh.

    """

    physics: str
    microstructure: str
    n: int
    degree: int
    cell_type: str
    phase1: tuple[float, ...]
    phase2: tuple[float, ...]
    fraction: float | None
    direction: int
    P: float
    order: int


def _cell_spec(table: Mapping[str, Any]) -> CellSpec:
    """Check the combination and the values of a type-checked ``[cell]`` table."""
    physics = table.get("physics", "conductivity")
    micro = table.get("microstructure")
    if micro is None:
        raise ConfigError("[cell] needs key 'microstructure' (one of "
                          f"{', '.join(repr(m) for m in MICROSTRUCTURES)})")
    if micro == "hou-wu" and physics != "conductivity":
        raise ConfigError("[cell] microstructure 'hou-wu' is a conductivity; use physics = "
                          "'conductivity'")
    phase_keys = () if micro == "hou-wu" else _PHASE_KEYS[physics]
    accepted = ("physics", "microstructure", "degree", *MICROSTRUCTURES[micro], *phase_keys)
    for key in table:
        if key not in accepted:
            raise ConfigError(f"[cell] key {key!r} does not apply to microstructure {micro!r} "
                              f"with physics {physics!r}; accepted keys: "
                              f"{', '.join(sorted(accepted))}")
    for key in phase_keys:
        if key not in table:
            raise ConfigError(f"[cell] microstructure {micro!r} ({physics}) needs key {key!r}")
    _positive("cell", table, phase_keys)
    n, degree = table.get("n", 32), table.get("degree", 1)
    if n < 1 or (micro == "disc" and n < 2):
        raise ConfigError(f"[cell] n = {n} must be a positive integer (disc: at least 2)")
    if micro == "checkerboard" and n % 2:
        raise ConfigError(f"[cell] n = {n} must be even for the checkerboard (interfaces at "
                          f"y = 1/2 on mesh lines)")
    if not 1 <= degree <= 4:
        raise ConfigError(f"[cell] degree = {degree} must be 1, 2, 3 or 4")
    fraction = None if micro == "hou-wu" else 0.5
    if "fraction" in table:
        fraction = float(table["fraction"])
        top, what = (math.pi / 4, "pi/4 (the disc must fit in the cell)") if micro == "disc" \
            else (1.0, "1")
        if not 0.0 < fraction < top:
            raise ConfigError(f"[cell] fraction = {fraction!r} must lie strictly between 0 "
                              f"and {what}")
    direction = table.get("direction", 0)
    if direction not in (0, 1):
        raise ConfigError(f"[cell] direction = {direction} must be 0 or 1")
    P = float(table.get("P", 1.8))
    if not abs(P) < 2:
        raise ConfigError(f"[cell] P = {P!r} must satisfy |P| < 2 (positive coefficient)")
    order = table.get("order", 2)
    if order not in (1, 2):
        raise ConfigError(f"[cell] order = {order} must be 1 or 2")
    values = [float(table[k]) for k in phase_keys]
    half = len(values) // 2
    return CellSpec(physics=physics, microstructure=micro, n=int(n), degree=int(degree),
                    cell_type=table.get("cell_type", "quadrilateral"),
                    phase1=tuple(values[:half]), phase2=tuple(values[half:]),
                    fraction=fraction, direction=int(direction), P=P, order=int(order))


def read_cell_config(path: str | Path) -> tuple[dict[str, Any], CellSpec]:
    """Read and validate a ``msfem homogenize`` configuration (no computation).

    Returns:
        ``(config, spec)``: the validated TOML as a dict, and its :class:`CellSpec`.

    Raises:
        ConfigError: naming the offending section/key and what is accepted.

    """
    cfg = _read(Path(path), {"cell": CELL_SCHEMA}, "cell")
    return cfg, _cell_spec(cfg["cell"])


@dataclass(frozen=True)
class RVESpec:
    """A validated ``[rve]`` table (see :func:`~msfem.homogenization.rve_size_study`)."""

    window_sizes: tuple[int, ...]
    realisations: int
    values: tuple[float, float]
    fraction: float
    elements_per_cell: int
    precision: float
    bcs: tuple[str, ...]
    seed: int
    degree: int


def read_rve_config(path: str | Path) -> tuple[dict[str, Any], RVESpec]:
    """Read and validate a ``msfem rve`` configuration (no computation).

    Returns:
        ``(config, spec)``.

    Raises:
        ConfigError: naming the offending section/key and what is accepted.

    """
    cfg = _read(Path(path), {"rve": RVE_SCHEMA}, "rve")
    t = cfg["rve"]
    for key in ("window_sizes", "realisations"):
        if key not in t:
            raise ConfigError(f"[rve] needs key {key!r}")
    sizes = t["window_sizes"]
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                            for s in sizes):
        raise ConfigError(f"[rve] window_sizes = {sizes!r} must be a non-empty list of "
                          f"positive integers (L/l)")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"[rve] window_sizes = {sizes!r} has repeated sizes")
    if t["realisations"] < 2:
        raise ConfigError(f"[rve] realisations = {t['realisations']} must be at least 2 "
                          f"(a variance is needed)")
    _positive("rve", t, ("a1", "a2", "precision", "elements_per_cell", "degree"))
    fraction = float(t.get("fraction", 0.5))
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"[rve] fraction = {fraction!r} must lie strictly between 0 and 1")
    bcs = t.get("bcs", ["kubc", "pbc", "subc"])
    if not bcs or not all(isinstance(b, str) and b in BOUNDARY_CONDITIONS for b in bcs):
        raise ConfigError(f"[rve] bcs = {bcs!r} must be a non-empty list of "
                          f"{', '.join(repr(b) for b in BOUNDARY_CONDITIONS)}")
    if t.get("seed", 0) < 0:
        raise ConfigError(f"[rve] seed = {t['seed']} must be non-negative")
    spec = RVESpec(window_sizes=tuple(sorted(sizes)), realisations=int(t["realisations"]),
                   values=(float(t.get("a1", 1.0)), float(t.get("a2", 10.0))),
                   fraction=fraction, elements_per_cell=int(t.get("elements_per_cell", 4)),
                   precision=float(t.get("precision", 0.05)), bcs=tuple(dict.fromkeys(bcs)),
                   seed=int(t.get("seed", 0)), degree=int(t.get("degree", 1)))
    return cfg, spec


# ------------------------------------------------------------------------------ cells
def build_cell(spec: CellSpec, comm: MPI.Comm = MPI.COMM_WORLD
               ) -> tuple[dolfinx.mesh.Mesh, dolfinx.fem.Function | None]:
    r"""Build the cell mesh and the DG0 indicator :math:`\chi_2` of phase 2.

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


def hou_wu_cell(P: float) -> Callable[[Any], Any]:
    r"""Hou--Wu (1997) eq. (4.1) on the unit cell, :math:`y \mapsto a(y)` as UFL.

    .. math:: a(y) = \frac{2 + P\sin 2\pi y_1}{2 + P\cos 2\pi y_2}
       + \frac{2 + \sin 2\pi y_2}{2 + P\sin 2\pi y_1}.
    """
    def a(y):
        s1, c2, s2 = (ufl.sin(2 * ufl.pi * y[0]), ufl.cos(2 * ufl.pi * y[1]),
                      ufl.sin(2 * ufl.pi * y[1]))
        return (2 + P * s1) / (2 + P * c2) + (2 + s2) / (2 + P * s1)
    return a


def _mean(mesh: dolfinx.mesh.Mesh, expr: Any, quadrature_degree: int | None = None) -> float:
    md = {} if quadrature_degree is None else {"quadrature_degree": quadrature_degree}
    dx = ufl.dx(domain=mesh, metadata=md)
    comm = mesh.comm
    total = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * dx)))
    volume = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * dx)))
    return float(total / volume)


def _two_phase(chi: dolfinx.fem.Function, v1: float, v2: float, name: str
               ) -> dolfinx.fem.Function:
    r"""DG0 field :math:`v_1 + (v_2 - v_1)\chi_2`."""
    out = dolfinx.fem.Function(chi.function_space, name=name)
    out.x.array[:] = v1 + (v2 - v1) * chi.x.array
    return out


# --------------------------------------------------------------------- bounds/checks
def _iso(k: float, mu: float) -> np.ndarray:
    """Mandel matrix of the 2D plane-strain isotropic stiffness with bulk k and shear mu."""
    J = np.zeros((3, 3))
    J[:2, :2] = 0.5
    return 2 * k * J + 2 * mu * (np.eye(3) - J)


def _moduli(C: np.ndarray) -> dict[str, float]:
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
    if micro in _SQUARE_SYMMETRIC:
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
    moduli = _moduli(C)
    voigt = {"bulk": bounds.voigt(k1, k2, f), "shear": bounds.voigt(m1, m2, f)}
    reuss = {"bulk": bounds.reuss(k1, k2, f), "shear": bounds.reuss(m1, m2, f)}
    b["voigt"], b["reuss"] = voigt, reuss
    scale = float(np.linalg.eigvalsh(C).max())
    viol["voigt"] = _violation(-np.linalg.eigvalsh(_iso(**_ks(voigt)) - C).min() / scale)
    viol["reuss"] = _violation(-np.linalg.eigvalsh(C - _iso(**_ks(reuss))).min() / scale)
    if spec.microstructure in _SQUARE_SYMMETRIC:
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


# ------------------------------------------------------------------------ reporting
def _plain(value: Any) -> Any:
    """JSON types for ``value`` (NumPy to lists/floats, non-finite floats to ``None``)."""
    return json_safe(value, nonfinite_to_none=True)


def _g(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_g(v, digits)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_g(v, digits) for v in value) + "]"
    return f"{value:.{digits}g}"


_BOUND_LABELS = {"voigt": "Voigt (arithmetic)", "reuss": "Reuss (harmonic)",
                 "hashin_shtrikman": "Hashin-Shtrikman"}
_REFERENCE_LABELS = {"laminate": "laminate (exact)", "dykhne": "Dykhne sqrt(a1 a2)",
                     "perrins": "Perrins et al. 1979", "hill_equal_shear": "Hill equal shear"}


def format_table(summary: Mapping[str, Any]) -> str:
    """Format the readable report of :func:`homogenize` (printed without ``--json``)."""
    s = summary
    mesh = s["mesh"]
    frac = s["volume_fraction"]
    lines = [f"msfem homogenize {s['config_file']}",
             f"  {s['physics']}, {s['microstructure']}: {mesh['description']}, "
             f"P{mesh['degree']} ({mesh['num_dofs']} dofs), {s['ranks']} rank(s), "
             f"{s['runtime_s']:.3g} s"]
    if frac["requested"] is not None:
        lines.append(f"  phases {_g(s['phases'])}; fraction of phase 2: "
                     f"{_g(frac['requested'])} (on the mesh {_g(frac['mesh'])})")
    notation = s["notation"]
    for label, key in (("effective tensor (energy)", "effective_tensor"),
                       ("flux tensor", "flux_tensor")):
        rows = np.asarray(s[key])
        lines.append(f"\n  {label}, {notation}:")
        lines += ["    [" + "  ".join(f"{v:12.6g}" for v in row) + " ]" for row in rows]
    lines.append(f"  energy-flux defect {s['energy_flux_defect']:.3g}")
    if "effective_scalar" in s:
        lines.append(f"  tr(A*)/2 = {s['effective_scalar']:.6g}, eigenvalues "
                     f"{_g(s['eigenvalues'])}")
    if "moduli" in s:
        lines.append(f"  moduli: {_g(s['moduli'])}")
    lines.append(f"\n  {'bound':<26}{'value':<40}violation")
    for key, value in s["bounds"].items():
        viols = [v for k, v in s["bound_violations"].items() if k.startswith(key)]
        status = ("inside" if max(viols) == 0 else f"outside by {max(viols):.2e}") if viols \
            else "(not checked)"
        lines.append(f"  {_BOUND_LABELS.get(key, key):<26}{_g(value):<40}{status}")
    if s["reference"]:
        lines.append(f"\n  {'reference':<26}{'value':<40}rel. difference")
        for key, r in s["reference"].items():
            value = r["value"]
            if isinstance(value, (list, np.ndarray)):
                value = np.diag(np.asarray(value)).tolist()
            lines.append(f"  {_REFERENCE_LABELS.get(key, key):<26}{_g(value):<40}"
                         f"{r['relative_error']:.2e}")
    for note in s["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


# -------------------------------------------------------------------------- commands
def homogenize(config_path: Path, as_json: bool = False,
               comm: MPI.Comm = MPI.COMM_WORLD) -> dict[str, Any]:
    """``msfem homogenize CONFIG [--json]``: effective tensor, bounds and references.

    Collective. Prints one JSON object (``as_json``) or a readable table on rank 0's
    stdout; the log goes to stderr.

    Returns:
        The summary (the JSON object): ``effective_tensor`` (energy formula),
        ``flux_tensor``, ``energy_flux_defect``, ``bounds``, ``bound_violations``
        (relative, 0 inside), ``reference`` (exact formulas with the relative difference),
        ``volume_fraction`` (requested, mesh), ``mesh``, ``runtime_s``, ``config``.

    Raises:
        ConfigError: invalid configuration (before any computation).
        HomogenizationSolverError: a cell solve failed.

    """
    t0 = time.perf_counter()
    cfg, spec = read_cell_config(config_path)
    options = cfg.get("solver")
    logger.info("homogenize: %s %s cell, n = %d, P%d", spec.physics, spec.microstructure,
                spec.n, spec.degree)
    mesh, chi = build_cell(spec, comm)
    fraction = None if chi is None else _mean(mesh, chi)
    if fraction is not None and spec.fraction is not None \
            and abs(fraction - spec.fraction) > 1e-6:
        logger.warning("homogenize: phase 2 fills %.6g of the mesh instead of fraction = %.6g"
                       " (interfaces off the mesh lines); the bounds use %.6g",
                       fraction, spec.fraction, fraction)
    if spec.physics == "conductivity":
        if chi is None:
            a = hou_wu_cell(spec.P)
            a_expr = a(ufl.SpatialCoordinate(mesh))
            means = (_mean(mesh, a_expr, 8), 1.0 / _mean(mesh, 1.0 / a_expr, 8))
        else:
            a, means = _two_phase(chi, spec.phase1[0], spec.phase2[0], "a"), None
        res = effective_tensor(mesh, a, degree=spec.degree, petsc_options=options)
        checks = conductivity_checks(spec, res, fraction, means)
        notation = "Cartesian"
        phases = {"a1": spec.phase1[0], "a2": spec.phase2[0]} if chi is not None else {}
    else:
        assert chi is not None and fraction is not None  # Hou--Wu is refused by the config
        (k1, m1), (k2, m2) = spec.phase1, spec.phase2
        lam = _two_phase(chi, k1 - m1, k2 - m2, "lambda")
        mu = _two_phase(chi, m1, m2, "mu")
        res = effective_elasticity(mesh, lam, mu, degree=spec.degree, petsc_options=options)
        checks = elasticity_checks(spec, res, fraction)
        notation = "Mandel (11, 22, sqrt2 12), plane strain"
        phases = {"k1": k1, "mu1": m1, "k2": k2, "mu2": m2}
    V = res.correctors[0].function_space
    tdim = mesh.topology.dim
    num_cells = mesh.topology.index_map(tdim).size_global
    description = (f"gmsh disc cell, size 1/{spec.n}, {num_cells} cells, geometry order "
                   f"{spec.order}" if spec.microstructure == "disc" else
                   f"{spec.n} x {spec.n} {spec.cell_type} mesh")
    summary = {
        "command": "homogenize",
        "config_file": str(config_path),
        "physics": spec.physics,
        "microstructure": spec.microstructure,
        "phases": phases,
        "volume_fraction": {"requested": spec.fraction, "mesh": fraction},
        "mesh": {"description": description, "num_cells": num_cells, "degree": spec.degree,
                 "num_dofs": V.dofmap.index_map.size_global * V.dofmap.index_map_bs},
        "ranks": comm.size,
        "notation": notation,
        "effective_tensor": res.tensor,
        "flux_tensor": res.flux_tensor,
        "energy_flux_defect": res.energy_flux_defect,
        **checks,
        "runtime_s": comm.allreduce(time.perf_counter() - t0, op=MPI.MAX),
        "config": cfg,
    }
    summary = _plain(summary)
    if comm.rank == 0:
        text = json.dumps(summary, allow_nan=False) if as_json else format_table(summary)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return summary


def _check_out(out_dir: Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    return out


def _fit_rve_size(study: RVEStudy, bc: str) -> dict[str, float | None] | None:
    r"""Extrapolate the RVE size from the fitted variance law (Kanit et al. 2003).

    Fits :math:`D^2(V) = K V^{-\alpha}` over the window sizes and solves
    :math:`2D(V)/(\bar Z\sqrt n) = \varepsilon` (with :math:`\bar Z` of the largest
    window) for the window side :math:`L = \sqrt V`.
    """
    sizes = study.window_sizes.astype(float)
    std, mean = study.std[bc], study.mean[bc]
    ok = std > 0
    if ok.sum() < 2:
        return None
    slope, intercept = np.polyfit(np.log(sizes[ok] ** 2), np.log(std[ok] ** 2), 1)
    alpha = -float(slope)
    if alpha <= 0:
        return {"alpha": alpha, "window": None}
    z = float(mean[-1])
    target = (study.precision * z * math.sqrt(study.n_realisations) / 2.0) ** 2
    volume = math.exp((intercept - math.log(target)) / alpha)
    return {"alpha": alpha, "window": math.sqrt(volume)}


def _rve_summary(spec: RVESpec, study: RVEStudy, cfg: Mapping[str, Any],
                 config_path: Path) -> dict[str, Any]:
    a, b = spec.values
    f = spec.fraction
    lo, hi = bounds.hashin_shtrikman(a, b, f, dim=2)
    refs = {"voigt": bounds.voigt(a, b, f), "reuss": bounds.reuss(a, b, f),
            "hashin_shtrikman": [lo, hi]}
    if f == 0.5:
        refs["effective_dykhne"] = math.sqrt(a * b)
    per_bc = {bc: {"mean": study.mean[bc], "std": study.std[bc],
                   "eps_rel": study.relative_error[bc], "rve_size": study.rve_size[bc],
                   "rve_size_fit": _fit_rve_size(study, bc),
                   "hill_mandel_residual": study.hill_mandel_residual[bc]}
              for bc in spec.bcs}
    order = [bc for bc in ("kubc", "pbc", "subc") if bc in spec.bcs]
    ordered = [bool(all(study.mean[u][s] >= study.mean[v][s] - 1e-10 * abs(study.mean[u][s])
                        for u, v in zip(order, order[1:])))
               for s in range(len(study.window_sizes))]
    return {
        "command": "rve",
        "config_file": str(config_path),
        "quantity": "tr(A_app)/2 (apparent conductivity)",
        "window_sizes": study.window_sizes,
        "realisations": study.n_realisations,
        "precision": study.precision,
        "rve_size": {bc: study.rve_size[bc] for bc in spec.bcs},
        "bcs": per_bc,
        "ordering_kubc_ge_pbc_ge_subc": ordered,
        "reference": refs,
        "config": cfg,
    }


def _rve_csv(spec: RVESpec, study: RVEStudy) -> str:
    lines = ["window,bc,mean,std,eps_rel,n"]
    for s, size in enumerate(study.window_sizes):
        for bc in spec.bcs:
            lines.append(f"{int(size)},{bc},{study.mean[bc][s]:.12g},{study.std[bc][s]:.12g},"
                         f"{study.relative_error[bc][s]:.12g},{study.n_realisations}")
    return "\n".join(lines) + "\n"


def _rve_figure(spec: RVESpec, study: RVEStudy, summary: Mapping[str, Any], out: Path) -> None:
    """Apparent conductivity (mean ± std) and ε_rel against L/ℓ; PNG and PDF in ``out``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    sizes = study.window_sizes.astype(float)
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax, ax_err = fig.subplots(1, 2)
    shift = {bc: 1.0 + 0.025 * (i - (len(spec.bcs) - 1) / 2) for i, bc in enumerate(spec.bcs)}
    for i, bc in enumerate(spec.bcs):
        label = _BC_LABELS.get(bc, bc)
        ax.errorbar(sizes * shift[bc], study.mean[bc], yerr=study.std[bc], marker="o", ms=4,
                    capsize=3, color=f"C{i}", label=f"{label} (mean ± std)")
        ax_err.loglog(sizes, study.relative_error[bc], marker="o", ms=4, color=f"C{i}",
                      label=label)
    ref = summary["reference"]
    lo, hi = ref["hashin_shtrikman"]
    ax.axhspan(lo, hi, color="0.85", alpha=0.5, lw=0, label="Hashin-Shtrikman bounds")
    ax.axhline(ref["voigt"], color="0.4", ls=":", lw=1, label="Voigt")
    ax.axhline(ref["reuss"], color="0.4", ls="-.", lw=1, label="Reuss")
    if "effective_dykhne" in ref:
        ax.axhline(ref["effective_dykhne"], color="k", lw=1.2,
                   label=r"effective $\sqrt{ab}$ (Dykhne)")
    ax_err.axhline(study.precision, color="k", ls="--", lw=1,
                   label=rf"precision {study.precision:g}")
    for axis in (ax, ax_err):
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{int(s)}" for s in sizes])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(r"window size $L/\ell$")
        axis.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.set_ylabel(r"apparent conductivity $\mathrm{tr}\,A^{app}/2$")
    ax_err.set_ylabel(r"$\varepsilon_{rel} = 2D(V)/(\bar Z\sqrt{n})$")
    ax.legend(fontsize=7)
    ax_err.legend(fontsize=7)
    a, b = spec.values
    fig.suptitle(f"random checkerboard a = ({a:g}, {b:g}), fraction {spec.fraction:g}, "
                 f"{study.n_realisations} realisations", fontsize=10)
    fig.savefig(out / "rve.png", dpi=150)  # out is the temporary directory: no torn files
    fig.savefig(out / "rve.pdf")


def rve(config_path: Path, out_dir: Path, comm: MPI.Comm = MPI.COMM_WORLD) -> dict[str, Any]:
    """``msfem rve CONFIG --out DIR``: SVE-to-RVE study on a random checkerboard.

    Collective. Writes ``rve.csv`` (window, bc, mean, std, eps_rel, n), ``rve.json``
    (summary, RVE sizes per boundary condition, bounds) and ``rve.png``/``rve.pdf`` into
    ``out_dir``, all at once; a failed run leaves ``out_dir`` as it was.

    Returns:
        The summary written to ``rve.json``.

    Raises:
        ConfigError: invalid configuration (before any computation).
        ValueError: ``out_dir`` exists and is not a directory.

    """
    t0 = time.perf_counter()
    cfg, spec = read_rve_config(config_path)
    out = _check_out(out_dir)
    logger.info("rve: windows L/l = %s, %d realisations, bcs %s", list(spec.window_sizes),
                spec.realisations, ", ".join(spec.bcs))
    study = rve_size_study(spec.window_sizes, n_realisations=spec.realisations,
                           values=spec.values, fraction=spec.fraction,
                           elements_per_cell=spec.elements_per_cell, precision=spec.precision,
                           bcs=spec.bcs, seed=spec.seed, degree=spec.degree, comm=comm,
                           petsc_options=cfg.get("solver"))
    summary = _rve_summary(spec, study, cfg, Path(config_path))
    summary["ranks"] = comm.size
    summary["runtime_s"] = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    summary = _plain(summary)
    with _runtime.atomic_directory(out, comm) as tmp:
        _runtime.atomic_write_text(tmp / "rve.csv", _rve_csv(spec, study), comm)
        _runtime.atomic_write_json(tmp / "rve.json", summary, comm)
        error = None
        if comm.rank == 0:
            try:
                _rve_figure(spec, study, summary, tmp)
            except Exception as err:  # raise on every rank, not only on rank 0
                error = f"{type(err).__name__}: {err}"
        error = comm.bcast(error, root=0)
        if error:
            raise RuntimeError(f"drawing the RVE figure failed: {error}")
    for bc in spec.bcs:
        logger.info("rve: %s means %s, RVE size (eps_rel <= %g) %s", bc,
                    np.array2string(study.mean[bc], precision=5), spec.precision,
                    study.rve_size[bc])
    logger.info("rve: results written to %s", out)
    return summary
