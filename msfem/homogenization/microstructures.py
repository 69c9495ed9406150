r"""Random microstructures of windows, seeded and independent of the parallel partition.

Both are DG0 fields evaluated at cell midpoints from a seeded *global* description (drawn
identically on every rank, or on rank 0 and broadcast), hence the same for any number of
ranks:

* :func:`random_checkerboard`: squares (cubes) of side :math:`\ell`, each phase 2 with
  probability :math:`f`, independently;
* :func:`random_inclusions`: non-overlapping discs (balls in 3D) of radius :math:`r\ell`
  placed by random sequential addition (:func:`random_sequential_addition`) up to the area
  fraction :math:`f`, by default wrapped periodically across the window boundary so that
  the PBC window is a genuinely periodic composite.

References:
    T. Kanit, S. Forest, I. Galliet, V. Mounoury, D. Jeulin, Int. J. Solids Struct. 40 (2003)
    3647--3679; S. Torquato, *Random Heterogeneous Materials*, Springer 2002 (random
    sequential addition).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import numpy as np
import numpy.typing as npt
from mpi4py import MPI
from scipy.spatial import cKDTree

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)
from msfem.homogenization.cell import cellwise_constant
from msfem.homogenization.periodic import box_bounds

__all__ = [
    "MICROSTRUCTURES",
    "DiscPacking",
    "ball_volume",
    "checkerboard_phase",
    "random_checkerboard",
    "random_inclusions",
    "random_sequential_addition",
]

#: The random microstructures of :func:`msfem.homogenization.rve.rve_size_study`.
MICROSTRUCTURES = ("checkerboard", "inclusions")


def checkerboard_phase(
    mesh: dolfinx.mesh.Mesh, cell_size: float, seed: int | Sequence[int], fraction: float
) -> Callable[[np.ndarray], np.ndarray]:
    r"""``midpoints -> bool`` (phase 2) of the seeded global checkerboard of ``mesh``'s box.

    The box is cut into squares (cubes) of side ``cell_size`` from its lower corner; each is
    phase 2 with probability ``fraction``, drawn by ``numpy.random.default_rng(seed)`` for
    the whole grid, so the phase of a point does not depend on the partition.
    """
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
    at = checkerboard_phase(mesh, cell_size, seed, fraction)
    return cellwise_constant(mesh, lambda mid: np.where(at(mid), values[1], values[0]),
                             name="checkerboard")


def ball_volume(radius: float, dim: int) -> float:
    r"""Volume :math:`\pi^{d/2}R^d/\Gamma(d/2 + 1)` of a ball (2D: the disc area)."""
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
        return len(self.centres) * ball_volume(self.radius, len(self.lower)) / vol

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
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
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

    if comm is None or comm.size == 1:
        result = draw()
    else:  # drawn on rank 0, broadcast to the others
        result = comm.bcast(draw() if comm.rank == 0 else None, root=0)
    if isinstance(result, str):
        raise ValueError(result)
    return result


def _rsa(lo: np.ndarray, hi: np.ndarray, radius: float, fraction: float,
         seed: int | Sequence[int], periodic: bool, gap: float,
         max_attempts: int | None) -> DiscPacking:
    d = len(lo)
    size = hi - lo
    vol = float(np.prod(size))
    ball = ball_volume(radius, d)
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
