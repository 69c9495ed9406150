r"""The configuration of ``msfem homogenize`` (``[cell]``) and ``msfem rve`` (``[rve]``).

**[cell].** A two-phase (or Hou--Wu) unit cell :math:`Y = [0, 1]^2` and its physics; an
optional ``[solver]`` section holds PETSc options of the cell solves (prefix
``msfem_cell_diffusion_`` / ``msfem_cell_elasticity_``)::

    [cell]
    physics = "conductivity"     # or "elasticity" (2D plane strain)
    microstructure = "disc"      # laminate | checkerboard | inclusion | disc | hou-wu
    a1 = 1.0                     # matrix (phase 1); elasticity: k1, mu1 (k = lambda + mu)
    a2 = 10.0                    # phase 2;          elasticity: k2, mu2
    fraction = 0.3               # volume fraction f of phase 2
    n = 20                       # cells per direction (disc: gmsh size 1/n)
    degree = 2                   # Lagrange degree of the correctors

The microstructures (:data:`MICROSTRUCTURES`, built by
:func:`msfem.homogenization.unit_cell.build_cell`) are, for phase 2 of fraction
:math:`f`: ``laminate`` -- layers :math:`y_{direction} < f`; ``checkerboard`` -- the
squares :math:`(y_1<\frac12) = (y_2<\frac12)`, :math:`f = \frac12`; ``inclusion`` -- a
centred square of side :math:`\sqrt f`; ``disc`` -- a centred disc of area :math:`f`
fitted by a periodic gmsh mesh (:func:`~msfem.homogenization.disc_cell`); ``hou-wu`` --
the smooth coefficient :class:`msfem.coefficients.HouWu` of Hou & Wu (1997), eq. (4.1),
at :math:`\varepsilon = 1` (conductivity only, parameter ``P``, :math:`|P| < 2`).

**[rve].** The arguments of :func:`~msfem.homogenization.rve_size_study` on a random
checkerboard: window sizes :math:`L/\ell`, realisations, phase values, fraction, mesh
density, precision, boundary conditions
(:data:`~msfem.homogenization.apparent.BOUNDARY_CONDITIONS`), seed and degree.

Both readers validate the whole file (unknown or ill-typed keys, non-positive phase
values, impossible fractions) and raise :class:`~msfem.config.ConfigError` before any
computation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msfem.config import ConfigError, read_toml, validate
from msfem.homogenization.apparent import BOUNDARY_CONDITIONS

__all__ = [
    "CELL_SCHEMA",
    "MICROSTRUCTURES",
    "PHASE_KEYS",
    "RVE_SCHEMA",
    "CellSpec",
    "RVESpec",
    "read_cell_config",
    "read_rve_config",
]

#: Geometry keys accepted by each microstructure (besides physics, microstructure, degree).
MICROSTRUCTURES: dict[str, tuple[str, ...]] = {
    "laminate": ("n", "cell_type", "fraction", "direction"),
    "checkerboard": ("n", "cell_type"),
    "inclusion": ("n", "cell_type", "fraction"),
    "disc": ("n", "fraction", "order"),
    "hou-wu": ("n", "cell_type", "P"),
}
#: Phase keys of each physics: conductivities, or bulk and shear moduli (k = lambda + mu).
PHASE_KEYS: dict[str, tuple[str, ...]] = {"conductivity": ("a1", "a2"),
                                          "elasticity": ("k1", "mu1", "k2", "mu2")}
#: Keys of ``[cell]`` and their types (see :func:`msfem.config.validate`).
CELL_SCHEMA: dict[str, Any] = {
    "physics": tuple(PHASE_KEYS),
    "microstructure": tuple(MICROSTRUCTURES),
    "n": int, "degree": int, "cell_type": ("quadrilateral", "triangle"),
    "a1": float, "a2": float, "k1": float, "mu1": float, "k2": float, "mu2": float,
    "fraction": float, "direction": int, "P": float, "order": int,
}
#: Keys of ``[rve]`` and their types.
RVE_SCHEMA: dict[str, Any] = {
    "window_sizes": "list", "realisations": int, "a1": float, "a2": float, "fraction": float,
    "elements_per_cell": int, "precision": float, "bcs": "list", "seed": int, "degree": int,
}


def _read(path: Path, sections: Mapping[str, Mapping[str, Any]], required: str
          ) -> dict[str, Any]:
    """Read a TOML file; refuse sections other than ``sections`` and ``[solver]``; validate."""
    cfg = read_toml(path)
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
    phase_keys = () if micro == "hou-wu" else PHASE_KEYS[physics]
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
