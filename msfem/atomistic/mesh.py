r"""Meshes whose nodes are lattice sites (representative atoms), interpolation and bond weights.

A :class:`RepMesh` is a simplicial mesh (intervals in 1D, triangles in 2D) of the body
with every node on a lattice site. The atoms follow the nodes by linear interpolation,

.. math:: x_a = \sum_k N_k(X_a)\,y_k \quad (x = P y),

and the deformation gradient is constant on a cell e,
:math:`F_e = \sum_{k \in e} y_k \otimes \nabla N_k`.

Two ways of distributing a bond :math:`b = (i, j)` with vector :math:`r = X_j - X_i` over
the cells are used by :mod:`~msfem.atomistic.coupling`:

* **bond integral** (:meth:`RepMesh.bond_fractions`): the fraction
  :math:`\ell_{b,e} = |[X_i, X_j] \cap e| / |r|` of the segment in each cell, so that
  :math:`\int_0^1 \phi(|\nabla y(X_i + t r)\,r|)\,dt = \sum_e \ell_{b,e}\phi(|F_e r|)` exactly
  and :math:`\sum_e \ell_{b,e} F_e r = y(X_j) - y(X_i)`;
* **site share** (:meth:`RepMesh.site_shares`): the fraction :math:`\lambda_{i,e}` of the
  angle around site i that lies in cell e (classic energy-based QC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial import Delaunay, cKDTree

from msfem.atomistic.lattice import Lattice

_TOL = 1e-9


@dataclass
class RepMesh:
    """A simplicial mesh with nodes on lattice sites.

    Args:
        nodes: Reference node positions Y, shape (n, d).
        cells: Vertex indices, shape (m, d + 1).
    """

    nodes: np.ndarray
    cells: np.ndarray
    _grads: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nodes = np.asarray(self.nodes, dtype=float).reshape(len(self.nodes), -1)
        self.cells = np.asarray(self.cells, dtype=np.int64)
        V = self.nodes[self.cells]                                  # (m, d+1, d)
        self._origin = V[:, 0]
        # mu = (x - V_0) @ inv(E), E rows = V_k - V_0: well conditioned far from the origin
        self._inv_edges = np.linalg.inv(V[:, 1:] - V[:, :1])         # (m, d, d)
        grads = np.swapaxes(self._inv_edges, 1, 2)                  # grad N_k, k >= 1
        self._grads = np.concatenate([-grads.sum(axis=1, keepdims=True), grads], axis=1)
        centroid = V.mean(axis=1)
        self._centroid = centroid
        self._radius = float(np.max(np.linalg.norm(V - centroid[:, None], axis=2)))
        self._tree = cKDTree(centroid)

    @property
    def dim(self) -> int:
        """Space dimension d."""
        return int(self.nodes.shape[1])

    @property
    def gradients(self) -> np.ndarray:
        r""":math:`\nabla N_k` on each cell, shape (m, d + 1, d)."""
        return self._grads

    @property
    def volumes(self) -> np.ndarray:
        """Cell volumes |e|, shape (m,)."""
        V = self.nodes[self.cells]
        return np.abs(np.linalg.det(V[:, 1:] - V[:, :1])) / (1 if self.dim == 1 else 2)

    def to_dolfinx(self, comm: Any = None) -> Any:
        """The same mesh as a :class:`dolfinx.mesh.Mesh` (default on ``COMM_SELF``).

        dolfinx renumbers the nodes; match them by coordinates
        (``mesh.geometry.x``) where needed.
        """
        import basix.ufl
        import dolfinx.mesh
        import ufl
        from mpi4py import MPI

        comm = MPI.COMM_SELF if comm is None else comm
        cell = "interval" if self.dim == 1 else "triangle"
        domain = ufl.Mesh(basix.ufl.element("Lagrange", cell, 1, shape=(self.dim,)))
        cells = self.cells if comm.rank == 0 else np.zeros((0, self.dim + 1), np.int64)
        nodes = self.nodes if comm.rank == 0 else np.zeros((0, self.dim))
        return dolfinx.mesh.create_mesh(comm, cells, domain, nodes)

    def deformation_gradients(self, y: np.ndarray) -> np.ndarray:
        r""":math:`F_e = \sum_k y_k \otimes \nabla N_k`, shape (m, d, d)."""
        return np.einsum("eki,ekJ->eiJ", y[self.cells], self.gradients)

    def barycentric(self, points: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Barycentric coordinates of ``points[k]`` in ``cells[k]``, shape (K, d + 1)."""
        mu = np.einsum("kJ,kJi->ki", points - self._origin[cells], self._inv_edges[cells])
        return np.concatenate([1 - mu.sum(axis=1, keepdims=True), mu], axis=1)

    def _candidates(self, points: np.ndarray, extra: float | np.ndarray = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(point index, cell index) pairs with the cell within reach of the point."""
        radius = self._radius * (1 + 1e-9) + np.max(np.atleast_1d(extra)) + _TOL
        lists = self._tree.query_ball_point(points, radius)
        p = np.repeat(np.arange(len(points)), [len(c) for c in lists])
        c = np.fromiter((k for cl in lists for k in cl), dtype=np.int64, count=len(p))
        return p, c

    def locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A containing cell of each point and its barycentric coordinates.

        Raises:
            ValueError: If a point lies outside the mesh.
        """
        points = np.asarray(points, dtype=float).reshape(len(points), -1)
        p, c = self._candidates(points)
        lam = self.barycentric(points[p], c)
        inside = np.min(lam, axis=1) >= -_TOL
        p, c, lam = p[inside], c[inside], lam[inside]
        cell = np.full(len(points), -1)
        bary = np.zeros((len(points), self.dim + 1))
        cell[p[::-1]], bary[p[::-1]] = c[::-1], lam[::-1]      # first containing cell wins
        if np.any(cell < 0):
            k = int(np.flatnonzero(cell < 0)[0])
            raise ValueError(f"atom at {np.round(points[k], 6).tolist()} lies outside the "
                             f"mesh; extend the mesh to cover every atom")
        return cell, bary

    def interpolation(self, points: np.ndarray) -> sp.csr_matrix:
        """The matrix P with :math:`x = P y` (linear interpolation), shape (N, n)."""
        cell, bary = self.locate(points)
        rows = np.repeat(np.arange(len(points)), self.dim + 1)
        P = sp.csr_matrix((bary.ravel(), (rows, self.cells[cell].ravel())),
                          shape=(len(points), len(self.nodes)))
        P.data[np.abs(P.data) < _TOL] = 0.0
        P.eliminate_zeros()
        return P

    def bond_fractions(self, A: np.ndarray, B: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Fractions :math:`\ell_{b,e}` of the segments :math:`[A_b, B_b]` in the cells.

        Returns:
            ``(bond, cell, fraction)`` triplets; the fractions of each bond sum to 1.

        Raises:
            ValueError: If a segment leaves the mesh.
        """
        mid = 0.5 * (A + B)
        half = 0.5 * np.linalg.norm(B - A, axis=1)
        b, c = self._candidates(mid, extra=half)
        la, lb = self.barycentric(A[b], c), self.barycentric(B[b], c)
        # lambda(t) = la + t (lb - la) >= 0 for t in [t0, t1]
        t0, t1 = np.zeros(len(b)), np.ones(len(b))
        dl = lb - la
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -la / dl
        grow = dl > _TOL            # |dl| <= tol: parallel to that facet, no crossing
        shrink = dl < -_TOL
        t0 = np.maximum(t0, np.max(np.where(grow, t, -np.inf), axis=1))
        t1 = np.minimum(t1, np.min(np.where(shrink, t, np.inf), axis=1))
        flat_out = np.any((np.abs(dl) <= _TOL) & (la < -_TOL), axis=1)
        frac = np.where(flat_out, 0.0, np.clip(t1 - t0, 0.0, None))
        keep = frac > _TOL
        b, c, frac, t0 = b[keep], c[keep], frac[keep], t0[keep]
        # a piece on a facet shared by several cells is found once per cell: split it
        key = np.stack([b, np.round(t0 * 1e8), np.round(frac * 1e8)], axis=1)
        _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        frac = frac / counts[inverse.ravel()]
        total = np.bincount(b, frac, minlength=len(A))
        if np.any(np.abs(total - 1) > 1e-8):
            k = int(np.flatnonzero(np.abs(total - 1) > 1e-8)[0])
            raise ValueError(f"bond from {np.round(A[k], 6).tolist()} to "
                             f"{np.round(B[k], 6).tolist()} leaves the mesh; extend the mesh")
        return b, c, frac

    def site_shares(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Shares :math:`\lambda_{i,e}` of the angle around each site in each cell.

        A site inside a cell belongs to it; on a facet, half to each side; at a vertex, the
        cell's angle there over the total angle (in 1D: half to each side).

        Returns:
            ``(site, cell, share)`` triplets; the shares of each site sum to 1.
        """
        points = np.asarray(points, dtype=float).reshape(len(points), -1)
        p, c = self._candidates(points)
        lam = self.barycentric(points[p], c)
        inside = np.min(lam, axis=1) >= -_TOL
        p, c, lam = p[inside], c[inside], lam[inside]
        zeros = np.sum(np.abs(lam) <= _TOL, axis=1)
        share = np.where(zeros == 0, 2 * np.pi, np.pi)
        if self.dim == 2:
            vert = zeros == 2
            if np.any(vert):
                k = np.argmax(lam[vert], axis=1)
                V = self.nodes[self.cells[c[vert]]]
                e1 = V[np.arange(len(k)), (k + 1) % 3] - V[np.arange(len(k)), k]
                e2 = V[np.arange(len(k)), (k + 2) % 3] - V[np.arange(len(k)), k]
                cos = np.sum(e1 * e2, 1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
                share[vert] = np.arccos(np.clip(cos, -1, 1))
        total = np.bincount(p, share, minlength=len(points))
        if np.any(total == 0):
            out = int(np.flatnonzero(total == 0)[0])
            raise ValueError(f"site {np.round(points[out], 6).tolist()} lies outside the mesh")
        return p, c, share / total[p]


def rep_mesh(lattice: Lattice, nodes: np.ndarray) -> RepMesh:
    """The mesh of ``nodes`` (consecutive intervals in 1D, Delaunay triangles in 2D).

    Raises:
        ValueError: If a node is not a lattice site or two nodes coincide.
    """
    nodes = np.asarray(nodes, dtype=float).reshape(len(nodes), -1)
    lattice.indices(nodes, what="mesh node")
    if len(np.unique(np.round(nodes / lattice.spacing, 6), axis=0)) < len(nodes):
        raise ValueError("two mesh nodes coincide; give each representative atom once")
    if lattice.dim == 1:
        order = np.argsort(nodes[:, 0])
        return RepMesh(nodes, np.stack([order[:-1], order[1:]], axis=1))
    tri = Delaunay(nodes)
    cells = tri.simplices
    V = nodes[cells]
    e1, e2 = V[:, 1] - V[:, 0], V[:, 2] - V[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    return RepMesh(nodes, cells[area > 1e-12 * lattice.spacing**2])
