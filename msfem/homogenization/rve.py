r"""The SVE-to-RVE size study: apparent properties of random windows of growing size.

For windows :math:`[0, L]^d` of a random microstructure
(:mod:`msfem.homogenization.microstructures`) and each boundary condition of
:mod:`msfem.homogenization.apparent`, the scalar property :math:`Z` (default
:math:`\mathrm{tr}A^{app}/d`) is sampled over :math:`n` realisations per window size. Its
mean :math:`\bar Z`, its standard deviation :math:`D(V)` and the relative precision

.. math:: \varepsilon_{rel} = \frac{2D(V)}{\bar Z\sqrt n}

decide the RVE size: the smallest window with :math:`\varepsilon_{rel}` below the requested
precision (Kanit et al. 2003), or the extrapolation :func:`fit_rve_size` of the variance
law :math:`D^2(V) = KV^{-\alpha}`.

References:
    T. Kanit, S. Forest, I. Galliet, V. Mounoury, D. Jeulin, Int. J. Solids Struct. 40 (2003)
    3647--3679 (RVE size from the variance of apparent properties);
    C. Huet, J. Mech. Phys. Solids 38 (1990) 813--841.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import numpy as np
import ufl
from mpi4py import MPI

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)
from msfem.homogenization.apparent import WindowProblem, check_bc
from msfem.homogenization.cell import cellwise_constant
from msfem.homogenization.microstructures import (
    MICROSTRUCTURES,
    checkerboard_phase,
    random_sequential_addition,
)

__all__ = [
    "RVEStudy",
    "fit_rve_size",
    "rve_size_study",
]


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

    * ``"checkerboard"`` (default):
      :func:`~msfem.homogenization.microstructures.random_checkerboard`, squares of side
      :math:`\ell`, phase ``values[1]`` with probability ``fraction`` (default 0.5);
    * ``"inclusions"``: :func:`~msfem.homogenization.microstructures.random_inclusions`,
      discs of conductivity ``values[1]`` and radius ``inclusion_radius``
      :math:`\cdot\ell` (default :math:`\ell/2`: diameter
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
            :func:`~msfem.homogenization.microstructures.random_sequential_addition`,
            which raises if the fraction is not reached).

    Returns:
        The :class:`RVEStudy`.
    """
    for bc in bcs:
        check_bc(bc)
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
        win = WindowProblem(mesh, False, functools.partial(operator.mul, coeff), degree, None)
        phase = dolfinx.fem.Function(Q, name="phase")
        phase_form = dolfinx.fem.form(phase * ufl.dx(domain=mesh))
        for r in range(n_realisations):
            rseed = [seed, int(size), r]
            inside: Callable[[np.ndarray], np.ndarray]
            if inclusions:
                packing = random_sequential_addition(
                    lo, hi, radius=inclusion_radius, fraction=fraction, seed=rseed,
                    periodic=periodic_inclusions, gap=inclusion_gap,
                    max_attempts=max_attempts, comm=comm)
                inside = packing.contains
            else:
                inside = checkerboard_phase(mesh, 1.0, rseed, fraction)
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


def fit_rve_size(study: RVEStudy, bc: str) -> dict[str, float | None] | None:
    r"""Extrapolate the RVE size from the fitted variance law (Kanit et al. 2003).

    Fits :math:`D^2(V) = K V^{-\alpha}` over the window sizes and solves
    :math:`2D(V)/(\bar Z\sqrt n) = \varepsilon` (with :math:`\bar Z` of the largest
    window) for the window side :math:`L = \sqrt V`.

    Returns:
        ``{"alpha": alpha, "window": L}`` (``window`` is ``None`` if :math:`\alpha \le 0`:
        the variance does not decrease), or ``None`` with fewer than two positive variances.
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
