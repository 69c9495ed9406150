r"""Bravais lattices :math:`\mathcal L = \{a\,A n : n \in \mathbb Z^d\}` and their neighbour shells.

* :func:`chain`: :math:`A = (1)`, the 1D chain of spacing :math:`a`.
* :func:`triangular`: :math:`A = [a_1, a_2]`, :math:`a_1 = (1, 0)`,
  :math:`a_2 = (\tfrac12, \tfrac{\sqrt3}{2})`: the 2D close-packed (hexagonal) lattice,
  six nearest neighbours at :math:`a`, six next-nearest at :math:`\sqrt3 a`.

The volume per atom is :math:`\Omega_0 = a^d |\det A|`. A point is a lattice site when
:math:`A^{-1}X/a` is an integer vector (:meth:`Lattice.indices` refuses other points).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Lattice:
    """A Bravais lattice.

    Args:
        name: ``"chain"`` or ``"triangular"`` (for messages and reports).
        basis: Rows are the primitive vectors of the unit-spacing lattice, shape (d, d).
        spacing: Lattice constant :math:`a` (nearest-neighbour distance).
    """

    name: str
    basis: np.ndarray
    spacing: float = 1.0

    @property
    def dim(self) -> int:
        """Space dimension d."""
        return int(self.basis.shape[0])

    @property
    def atomic_volume(self) -> float:
        r""":math:`\Omega_0 = a^d |\det A|`."""
        return float(self.spacing**self.dim * abs(np.linalg.det(self.basis)))

    def with_spacing(self, spacing: float) -> Lattice:
        """The same lattice with lattice constant ``spacing``."""
        return replace(self, spacing=float(spacing))

    def neighbour_vectors(self, cutoff: float) -> np.ndarray:
        r"""All lattice vectors :math:`r \ne 0` with :math:`|r| <` ``cutoff``, shape (m, d).

        Both :math:`r` and :math:`-r` are listed; sorted by length, then lexicographically.
        """
        a = self.spacing
        n = int(np.ceil(cutoff / (a * min(np.linalg.svd(self.basis)[1])))) + 1
        grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * self.dim, indexing="ij"), -1)
        r = a * grid.reshape(-1, self.dim) @ self.basis
        length = np.linalg.norm(r, axis=1)
        keep = (length > 1e-12 * a) & (length < cutoff)
        r, length = r[keep], length[keep]
        order = np.lexsort((*r.T[::-1], np.round(length / a, 10)))
        return r[order]

    def sites(self, lower: np.ndarray | float, upper: np.ndarray | float) -> np.ndarray:
        """Lattice sites in the box ``lower <= X <= upper`` (with a 1e-9 a tolerance), (N, d).

        Sorted lexicographically by (last coordinate, ..., first coordinate).
        """
        lo = np.broadcast_to(np.asarray(lower, dtype=float), (self.dim,))
        hi = np.broadcast_to(np.asarray(upper, dtype=float), (self.dim,))
        corners = np.stack(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij"), -1)
        n = corners.reshape(-1, self.dim) @ np.linalg.inv(self.basis) / self.spacing
        ranges = [np.arange(np.floor(n[:, k].min()) - 1, np.ceil(n[:, k].max()) + 2)
                  for k in range(self.dim)]
        grid = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, self.dim)
        X = self.spacing * grid @ self.basis
        tol = 1e-9 * self.spacing
        X = X[np.all((X >= lo - tol) & (X <= hi + tol), axis=1)]
        return X[np.lexsort(X.T)]

    def indices(self, points: np.ndarray, what: str = "point") -> np.ndarray:
        """Integer lattice coordinates n with ``points = a * n @ basis``.

        Raises:
            ValueError: If a point is not a lattice site (distance > 1e-8 a to the nearest).
        """
        points = np.atleast_2d(np.asarray(points, dtype=float))
        n = points @ np.linalg.inv(self.basis) / self.spacing
        k = np.round(n)
        off = np.linalg.norm((n - k) @ self.basis, axis=1) * self.spacing
        bad = np.flatnonzero(off > 1e-8 * self.spacing)
        if bad.size:
            p = points[bad[0]]
            nearest = self.spacing * k[bad[0]] @ self.basis
            raise ValueError(f"{what} {np.round(p, 6).tolist()} is not on a site of the "
                             f"{self.name} lattice (a = {self.spacing:.6g}); move it to the "
                             f"site {np.round(nearest, 6).tolist()}")
        return k.astype(np.int64)


def chain(spacing: float = 1.0) -> Lattice:
    """The 1D chain of spacing ``spacing``."""
    return Lattice("chain", np.eye(1), float(spacing))


def triangular(spacing: float = 1.0) -> Lattice:
    """The 2D triangular (hexagonal close-packed) lattice of nearest-neighbour distance a."""
    return Lattice("triangular", np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]]), float(spacing))
