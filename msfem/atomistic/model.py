r"""The atomistic energy of a pair potential over a bond list, its forces and sparse Hessian.

For bonds :math:`b = (i, j)` with weights :math:`w_b` (1 in a plain crystal; a defect bond
scales its potential; a coupling method weights bonds, :mod:`~msfem.atomistic.coupling`)

.. math::
   E(x) = \sum_b w_b\,\phi(|d_b|),\quad d_b = x_j - x_i,\qquad
   f_i = -\frac{\partial E}{\partial x_i},\qquad
   \frac{\partial^2 \phi(|d|)}{\partial d\,\partial d} = \phi''\,n\otimes n
   + \frac{\phi'}{|d|}\,(I - n\otimes n),\ n = d/|d|.

The bond list is built once in the reference configuration :math:`X` with
:class:`scipy.spatial.cKDTree` (pairs closer than the cutoff plus a skin): a Lagrangian
neighbour list, valid while no pair moves by more than the skin (:meth:`PairModel.check_list`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from msfem.atomistic.potentials import PairPotential


def neighbour_bonds(X: np.ndarray, cutoff: float, *, overlap: float = 1e-6) -> np.ndarray:
    """Pairs (i, j), i < j, of reference positions closer than ``cutoff``, shape (nb, 2).

    Raises:
        ValueError: If two atoms are closer than ``overlap`` (duplicate or overlapping sites).
    """
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    tree = cKDTree(X)
    close = tree.query_pairs(overlap, output_type="ndarray")
    if len(close):
        i, j = close[0]
        raise ValueError(f"atoms {i} and {j} overlap (distance "
                         f"{np.linalg.norm(X[j] - X[i]):.3g} < {overlap:g}) at "
                         f"{np.round(X[i], 6).tolist()}; remove the duplicate site")
    bonds = tree.query_pairs(cutoff, output_type="ndarray")
    if len(bonds) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    bonds = np.sort(bonds, axis=1)
    return bonds[np.lexsort((bonds[:, 1], bonds[:, 0]))].astype(np.int64)


def bond_energy(x: np.ndarray, bonds: np.ndarray, potential: PairPotential,
                weights: np.ndarray | float = 1.0) -> float:
    r""":math:`\sum_b w_b \phi(|x_j - x_i|)`."""
    d = x[bonds[:, 1]] - x[bonds[:, 0]]
    return float(np.sum(weights * potential.energy(np.linalg.norm(d, axis=1))))


def bond_gradient(x: np.ndarray, bonds: np.ndarray, potential: PairPotential,
                  weights: np.ndarray | float = 1.0) -> np.ndarray:
    r""":math:`\partial E/\partial x` (= minus the forces), shape of ``x``."""
    d = x[bonds[:, 1]] - x[bonds[:, 0]]
    r = np.linalg.norm(d, axis=1)
    t = (weights * potential.first(r) / r)[:, None] * d      # dE/dd_b
    g = np.zeros_like(x)
    np.add.at(g, bonds[:, 1], t)
    np.add.at(g, bonds[:, 0], -t)
    return g


def bond_stiffness(d: np.ndarray, potential: PairPotential,
                   weights: np.ndarray | float = 1.0) -> np.ndarray:
    r"""Per bond :math:`w_b\,\partial^2\phi(|d|)/\partial d\,\partial d`, shape (nb, dim, dim)."""
    r = np.linalg.norm(d, axis=1)
    n = d / r[:, None]
    nn = n[:, :, None] * n[:, None, :]
    eye = np.eye(d.shape[1])[None]
    w = np.broadcast_to(np.asarray(weights, dtype=float), r.shape)
    return w[:, None, None] * (potential.second(r)[:, None, None] * nn
                               + (potential.first(r) / r)[:, None, None] * (eye - nn))


def bond_hessian(x: np.ndarray, bonds: np.ndarray, potential: PairPotential,
                 weights: np.ndarray | float = 1.0) -> sp.csr_matrix:
    """Sparse Hessian of :func:`bond_energy`, dofs ordered (atom, component)."""
    n, dim = x.shape
    K = bond_stiffness(x[bonds[:, 1]] - x[bonds[:, 0]], potential, weights)
    i, j = bonds[:, 0], bonds[:, 1]
    c = np.arange(dim)
    rows, cols, vals = [], [], []
    for a, b, s in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
        rows.append((dim * a[:, None, None] + c[None, :, None]) + 0 * c[None, None, :])
        cols.append((dim * b[:, None, None] + c[None, None, :]) + 0 * c[None, :, None])
        vals.append(s * K)
    return sp.coo_matrix((np.concatenate([v.ravel() for v in vals]),
                          (np.concatenate([r.ravel() for r in rows]),
                           np.concatenate([q.ravel() for q in cols]))),
                         shape=(n * dim, n * dim)).tocsr()


@dataclass
class PairModel:
    r"""Atoms at reference positions X interacting through one pair potential.

    Args:
        positions: Reference positions X, shape (N, d) (or (N,) for a chain).
        potential: The pair potential.
        skin: Extra neighbour-list radius; bonds are the reference pairs within
            ``cutoff + skin`` (the potential is zero beyond its cutoff).
        bond_scale: Optional ``{(i, j): s}``: the bond (i, j) interacts through
            :math:`s\,\phi` (a soft, s < 1, or stiff, s > 1, bond defect).
        cut: Optional ``cut(X_i, X_j) -> mask``: the reference pairs it marks are not
            bonded (a crack: the bonds across its faces).
    """

    positions: np.ndarray
    potential: PairPotential
    skin: float = 0.0
    bond_scale: dict[tuple[int, int], float] = field(default_factory=dict)
    cut: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    bonds: np.ndarray = field(init=False)
    weights: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        X = np.asarray(self.positions, dtype=float)
        self.positions = X.reshape(len(X), -1)
        self.bonds = neighbour_bonds(self.positions, self.potential.cutoff + self.skin)
        if self.cut is not None and len(self.bonds):
            X = self.positions
            self.bonds = self.bonds[~np.asarray(self.cut(X[self.bonds[:, 0]],
                                                         X[self.bonds[:, 1]]), dtype=bool)]
        self.weights = np.ones(len(self.bonds))
        index = {(int(i), int(j)): k for k, (i, j) in enumerate(self.bonds)}
        for (i, j), s in self.bond_scale.items():
            key = (min(i, j), max(i, j))
            if key not in index:
                raise ValueError(f"bond_scale: atoms {i} and {j} are not bonded (farther apart "
                                 f"than the cutoff {self.potential.cutoff:g})")
            self.weights[index[key]] = s

    @property
    def num_atoms(self) -> int:
        """Number of atoms N."""
        return int(self.positions.shape[0])

    @property
    def dim(self) -> int:
        """Space dimension d."""
        return int(self.positions.shape[1])

    def energy(self, x: np.ndarray) -> float:
        """Total energy E(x)."""
        return bond_energy(x, self.bonds, self.potential, self.weights)

    def forces(self, x: np.ndarray) -> np.ndarray:
        r"""Forces :math:`f = -\partial E/\partial x`, shape (N, d)."""
        return -bond_gradient(x, self.bonds, self.potential, self.weights)

    def hessian(self, x: np.ndarray) -> sp.csr_matrix:
        """Sparse Hessian, (N d) x (N d), dofs ordered (atom, component)."""
        return bond_hessian(x, self.bonds, self.potential, self.weights)

    def site_energies(self, x: np.ndarray) -> np.ndarray:
        r"""Site energies :math:`E_i = \frac12\sum_j w_{ij}\phi(|x_j - x_i|)`, summing to E."""
        r = np.linalg.norm(x[self.bonds[:, 1]] - x[self.bonds[:, 0]], axis=1)
        e = 0.5 * self.weights * self.potential.energy(r)
        out = np.zeros(self.num_atoms)
        np.add.at(out, self.bonds[:, 0], e)
        np.add.at(out, self.bonds[:, 1], e)
        return out

    def check_list(self, x: np.ndarray) -> None:
        """Refuse a configuration in which an unlisted pair may have come within the cutoff.

        Raises:
            ValueError: If some atom moved by more than half the skin from X while pairs
                beyond the list radius exist.
        """
        move = np.max(np.linalg.norm(x - self.positions, axis=1), initial=0.0)
        if move > 0.5 * self.skin and self.num_atoms > 1:
            tree = cKDTree(x)
            pairs = tree.query_pairs(self.potential.cutoff, output_type="ndarray")
            listed = {(int(i), int(j)) for i, j in self.bonds}
            pairs = np.sort(pairs, axis=1).reshape(-1, 2)
            if self.cut is not None and len(pairs):
                X = self.positions
                pairs = pairs[~np.asarray(self.cut(X[pairs[:, 0]], X[pairs[:, 1]]), dtype=bool)]
            extra = [p for p in pairs if (int(p[0]), int(p[1])) not in listed]
            if extra:
                raise ValueError(f"atoms {extra[0][0]} and {extra[0][1]} came within the cutoff "
                                 f"but are not in the reference bond list; increase skin "
                                 f"(now {self.skin:g}) or apply the load in smaller steps")
