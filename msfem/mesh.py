r"""Mesh hierarchies: a coarse mesh of size :math:`H` and a fine mesh that refines it.

Two kinds:

* :class:`StructuredHierarchy` -- intervals, rectangles and boxes split into
  :math:`N` coarse cells per direction, each made of :math:`M` fine cells per direction
  (:math:`h = H/M`). Simplices use the Kuhn split (the main diagonal of every square or
  cube), which is nested: every fine simplex lies in exactly one coarse simplex, so the
  fine→coarse map is known by construction (integer arithmetic on the lattice).
* :class:`RefinedHierarchy` -- an unstructured coarse mesh (e.g. from a gmsh script in
  ``meshes/``) refined ``k`` times with :func:`dolfinx.mesh.refine`, composing the
  parent-cell maps.

Naming convention (used everywhere in msfem): *coarse cell* K, *fine cell* τ ⊂ K,
*patch* S ⊇ K (oversampling domain), *lattice id* -- the global integer label of a
structured coarse cell, fine node or dof, independent of the MPI partition.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import basix.ufl
import dolfinx
import numpy as np
import ufl
from dolfinx.mesh import CellType
from mpi4py import MPI

from msfem import _runtime

CELL_TYPES = {
    "interval": (1, CellType.interval),
    "triangle": (2, CellType.triangle),
    "quadrilateral": (2, CellType.quadrilateral),
    "tetrahedron": (3, CellType.tetrahedron),
    "hexahedron": (3, CellType.hexahedron),
}


def _reference_split(cell_type: str) -> np.ndarray:
    """Vertex offsets (n_sub, n_vertices, d) of the cells of one lattice square/cube.

    Tensor-product cells: one cell, vertices in dolfinx (lexicographic) order.
    Simplices: the Kuhn split along the main diagonal, the same as dolfinx's
    ``create_rectangle(diagonal=right)`` and ``create_box(tetrahedron)``.
    """
    dim, _ = CELL_TYPES[cell_type]
    corners = np.array([c[::-1] for c in itertools.product((0, 1), repeat=dim)])
    if cell_type in ("interval", "quadrilateral", "hexahedron"):
        return corners[None, :, :]
    cells = []
    for perm in itertools.permutations(range(dim)):
        v = np.zeros(dim, dtype=int)
        chain = [v.copy()]
        for axis in perm:
            v[axis] = 1
            chain.append(v.copy())
        cells.append(chain)
    return np.array(cells)


def locate_sub(t: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Index of the sub-cell of ``split`` containing local coordinates ``t`` (d, n) in [0,1]^d."""
    if split.shape[0] == 1:
        return np.zeros(t.shape[1], dtype=np.int64)
    # Kuhn simplex: defined by the order of the coordinates (largest first)
    best = np.full(t.shape[1], -np.inf)
    sub = np.zeros(t.shape[1], dtype=np.int64)
    for s, verts in enumerate(split):
        order = [int(np.argmax(verts[i + 1] - verts[i])) for i in range(len(verts) - 1)]
        # min over consecutive differences t[order[i]] - t[order[i+1]] (>= 0 inside)
        margin = np.minimum(1 - t[order[0]], t[order[-1]])
        for a, b in zip(order[:-1], order[1:]):
            margin = np.minimum(margin, t[a] - t[b])
        better = margin > best
        best = np.where(better, margin, best)
        sub = np.where(better, s, sub)
    return sub


def create_lattice_mesh(
    comm: MPI.Comm, cell_type: str, shape: Sequence[int], spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[dolfinx.mesh.Mesh, np.ndarray]:
    """A structured mesh of ``shape`` lattice squares/cubes of size ``spacing``.

    Built from explicit cells with the same split as :func:`_reference_split`, so a
    patch mesh is an exact translate of the corresponding piece of the global fine mesh.
    ``keep(square_index (d, n), sub (n,)) -> bool mask`` selects cells (e.g. the fine
    simplices of one coarse simplex). Returns the mesh and, per mesh cell, the lattice
    index ``(square multi-index..., sub)`` it was made from (shape (n_cells, d+1)).
    """
    dim, ct = CELL_TYPES[cell_type]
    n_squares = tuple(int(n) for n in shape)
    x0 = np.zeros(dim) if origin is None else np.asarray(origin, dtype=float)[:dim]
    split = _reference_split(cell_type)
    squares = np.array(list(itertools.product(*[range(n) for n in n_squares[::-1]])))[:, ::-1]
    nsub = split.shape[0]
    sq = np.repeat(squares, nsub, axis=0)
    sub = np.tile(np.arange(nsub), len(squares))
    if keep is not None:
        mask = np.asarray(keep(sq.T, sub), dtype=bool)
        sq, sub = sq[mask], sub[mask]
    nodes_shape = tuple(n + 1 for n in n_squares)
    vert = sq[:, None, :] + split[sub]  # (n_cells, n_vertices, d)
    flat = np.ravel_multi_index(tuple(np.moveaxis(vert, -1, 0)), nodes_shape, order="F")
    used, cells = np.unique(flat, return_inverse=True)
    cells = cells.reshape(flat.shape)
    coords = np.array(np.unravel_index(used, nodes_shape, order="F")).T * np.asarray(spacing)[:dim]
    coords = coords + x0
    element = basix.ufl.element("Lagrange", ct.name, 1, shape=(dim,))
    if comm.rank != 0 and comm.size > 1:
        cells, coords = cells[:0], coords[:0]
    mesh = dolfinx.mesh.create_mesh(comm, cells.astype(np.int64), ufl.Mesh(element), coords)
    origin_index = mesh.topology.original_cell_index
    index = np.column_stack([sq, sub])[np.asarray(origin_index)]
    return mesh, index


@dataclass(frozen=True)
class Patch:
    """An oversampling patch S ⊇ K: a box of fine lattice squares ``[lo, hi)`` (per axis).

    ``cell_lo/cell_hi`` are the fine squares of the coarse cell K itself; ``clipped``
    tells, per axis and side, whether the requested patch was cut by ∂Ω.
    """

    coarse_cell: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    cell_lo: tuple[int, ...]
    cell_hi: tuple[int, ...]
    clipped: tuple[tuple[bool, bool], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of fine squares of the patch per axis."""
        return tuple(b - a for a, b in zip(self.lo, self.hi))

    @property
    def offset(self) -> tuple[int, ...]:
        """Position of K's first fine square inside the patch."""
        return tuple(c - a for c, a in zip(self.cell_lo, self.lo))


class StructuredHierarchy:
    """Coarse mesh with ``N`` cells per direction, fine mesh with ``N*M`` (h = H/M).

    Both meshes are distributed over ``comm`` by dolfinx. Coarse cells are identified
    across ranks by their *lattice id* ``ravel(square) * n_sub + sub`` where ``sub``
    numbers the simplices of the Kuhn split (0 for tensor-product cells).

    Args:
        comm: MPI communicator.
        N: coarse cells per direction (int or one per direction).
        M: fine cells per coarse cell per direction (a positive integer).
        cell_type: ``interval``, ``triangle``, ``quadrilateral``, ``tetrahedron`` or
            ``hexahedron``.
        lower, upper: corners of the box domain Ω.
    """

    def __init__(self, comm: MPI.Comm, N: int | Sequence[int], M: int,
                 cell_type: str = "quadrilateral", lower: Sequence[float] | None = None,
                 upper: Sequence[float] | None = None):
        if cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type {cell_type!r} is not one of {sorted(CELL_TYPES)}")
        dim, ct = CELL_TYPES[cell_type]
        if not (isinstance(M, (int, np.integer)) and not isinstance(M, bool) and M >= 1):
            raise ValueError(
                f"M (fine cells per coarse cell per direction) must be a positive integer, got "
                f"{M!r}: H = {1}/N must be a multiple of h = H/M."
            )
        Ns = tuple(N) if isinstance(N, Iterable) else (N,) * dim
        if len(Ns) != dim or any(not isinstance(n, (int, np.integer)) or n < 1 for n in Ns):
            raise ValueError(f"N must be {dim} positive integers for {cell_type}, got {Ns!r}")
        self.comm, self.dim, self.cell_type = comm, dim, cell_type
        self.N, self.M = tuple(int(n) for n in Ns), int(M)
        corners = []
        for name, value, default in (("lower", lower, 0.0), ("upper", upper, 1.0)):
            try:
                corner = np.full(dim, default) if value is None else \
                    np.asarray(value, dtype=float).ravel()[:dim]
            except (TypeError, ValueError):
                corner = np.array([])
            if corner.shape != (dim,) or not np.all(np.isfinite(corner)):
                raise ValueError(f"{name} = {value!r} must be {dim} finite numbers (a corner "
                                 f"of the box domain)")
            corners.append(corner)
        self.lower, self.upper = corners
        if not np.all(self.upper > self.lower):
            raise ValueError(f"empty domain: lower={self.lower}, upper={self.upper}")
        self.H = (self.upper - self.lower) / np.array(self.N)
        self.h = self.H / self.M
        self.split = _reference_split(cell_type)
        self.coarse = self._box(self.N)
        self.fine = self._box(tuple(n * self.M for n in self.N))

    def _box(self, n: tuple[int, ...]) -> dolfinx.mesh.Mesh:
        _, ct = CELL_TYPES[self.cell_type]
        if self.dim == 1:
            return dolfinx.mesh.create_interval(self.comm, n[0], [self.lower[0], self.upper[0]])
        pts = [self.lower.tolist(), self.upper.tolist()]
        if self.dim == 2:
            return dolfinx.mesh.create_rectangle(self.comm, pts, list(n), ct,
                                                 diagonal=dolfinx.mesh.DiagonalType.right)
        return dolfinx.mesh.create_box(self.comm, pts, list(n), ct)

    # ------------------------------------------------------------------ lattice queries
    @property
    def n_sub(self) -> int:
        """Cells per lattice square (1, or d! for the Kuhn split of simplices)."""
        return self.split.shape[0]

    @property
    def num_coarse_cells(self) -> int:
        """Global number of coarse cells."""
        return int(np.prod(self.N)) * self.n_sub

    def locate_coarse(self, x: np.ndarray) -> np.ndarray:
        """Lattice ids of the coarse cells containing points ``x`` (3, n) (interior points)."""
        t = (x[: self.dim] - self.lower[:, None]) / self.H[:, None]
        square = np.clip(np.floor(t).astype(np.int64), 0, np.array(self.N)[:, None] - 1)
        sub = locate_sub(t - square, self.split)
        return np.ravel_multi_index(tuple(square), self.N, order="F") * self.n_sub + sub

    def coarse_square(self, cell: int) -> tuple[tuple[int, ...], int]:
        """Square multi-index and sub-cell index of coarse lattice cell ``cell``."""
        sq, sub = divmod(int(cell), self.n_sub)
        return tuple(int(i) for i in np.unravel_index(sq, self.N, order="F")), sub

    def coarse_vertices(self, cell: int) -> np.ndarray:
        """Coordinates (n_vertices, d) of coarse lattice cell ``cell``."""
        sq, sub = self.coarse_square(cell)
        return self.lower + (np.array(sq) + self.split[sub]) * self.H

    @cached_property
    def owned_coarse_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(local indices, lattice ids) of the coarse cells owned by this rank."""
        n = self.coarse.topology.index_map(self.dim).size_local
        local = np.arange(n, dtype=np.int32)
        mid = dolfinx.mesh.compute_midpoints(self.coarse, self.dim, local).T
        return local, self.locate_coarse(mid)

    @cached_property
    def fine_to_coarse(self) -> np.ndarray:
        """Lattice id of the coarse cell of every local (owned and ghost) fine cell."""
        imap = self.fine.topology.index_map(self.dim)
        cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
        mid = dolfinx.mesh.compute_midpoints(self.fine, self.dim, cells).T
        return self.locate_coarse(mid)

    def fine_cells(self, cell: int) -> np.ndarray:
        """Local fine cells of coarse lattice cell ``cell`` present on this rank."""
        return np.flatnonzero(self.fine_to_coarse == cell).astype(np.int32)

    def fine_dofs(self, V: dolfinx.fem.FunctionSpace, cell: int) -> np.ndarray:
        """Local dofs (blocks) of ``V`` on the fine cells of coarse cell ``cell``."""
        cells = self.fine_cells(cell)
        if len(cells) == 0:
            return np.zeros(0, dtype=np.int32)
        return np.unique(V.dofmap.list[cells].ravel())

    def dof_lattice(self, V: dolfinx.fem.FunctionSpace) -> np.ndarray:
        """Global lattice id of every local dof block of a Lagrange space ``V``.

        Lagrange dofs of degree p on the fine mesh sit on the lattice of spacing h/p.
        """
        p = V.ufl_element().embedded_superdegree
        x = V.tabulate_dof_coordinates()[:, : self.dim]
        return self.lattice_ids(x, p)

    def lattice_ids(self, x: np.ndarray, degree: int = 1) -> np.ndarray:
        """Lattice ids of points ``x`` (n, d) on the fine node lattice of spacing h/degree."""
        t = (x - self.lower) / (self.h / degree)
        idx = np.rint(t).astype(np.int64)
        if len(t) and np.abs(t - idx).max() > 1e-6:
            raise ValueError("points are not on the fine lattice")
        n = np.array(self.N) * self.M * degree + 1
        return np.ravel_multi_index(tuple(idx.T), n, order="F")

    # ------------------------------------------------------------------ patches
    def patch(self, cell: int, fine_layers: int) -> Patch:
        """The box of fine squares around coarse cell ``cell``, clipped to Ω.

        The box is ``fine_layers`` wider than K on every side (``fine_layers = k*M`` gives k
        coarse layers).
        """
        sq, _ = self.coarse_square(cell)
        cell_lo = tuple(s * self.M for s in sq)
        cell_hi = tuple(c + self.M for c in cell_lo)
        n = [ni * self.M for ni in self.N]
        lo = tuple(max(c - fine_layers, 0) for c in cell_lo)
        hi = tuple(min(c + fine_layers, m) for c, m in zip(cell_hi, n))
        clipped = tuple((c - fine_layers < 0, c2 + fine_layers > m)
                        for c, c2, m in zip(cell_lo, cell_hi, n))
        return Patch(int(cell), lo, hi, cell_lo, cell_hi, clipped)

    def sampling_region(self, cell: int, size: int) -> Patch:
        """The sampling region of coarse cell ``cell`` (Hou & Wu 1997, Tables III-IV).

        The domain is tiled by fixed boxes of ``size`` fine cells per direction (a multiple of
        M; the last box of a row is clipped) and K's patch is the box that contains it.
        """
        if size % self.M:
            raise ValueError(f"sampling region size M_S = {size} must be a multiple of M = "
                             f"{self.M} so that every coarse cell lies in one region")
        sq, _ = self.coarse_square(cell)
        cell_lo = tuple(s * self.M for s in sq)
        cell_hi = tuple(c + self.M for c in cell_lo)
        n = [ni * self.M for ni in self.N]
        lo = tuple((c // size) * size for c in cell_lo)
        hi = tuple(min(a + size, m) for a, m in zip(lo, n))
        clipped = tuple((False, a + size > m) for a, m in zip(lo, n))
        return Patch(int(cell), lo, hi, cell_lo, cell_hi, clipped)

    def patch_coarse_cells(self, patch: Patch) -> np.ndarray:
        """Lattice ids of the coarse cells that intersect ``patch`` (whole or in part)."""
        lo = np.array(patch.lo) // self.M
        hi = -(-np.array(patch.hi) // self.M)
        squares = np.array(np.unravel_index(np.arange(int(np.prod(hi - lo))), hi - lo,
                                            order="F")) + lo[:, None]
        ids = np.ravel_multi_index(tuple(squares), self.N, order="F")
        return np.sort((ids[:, None] * self.n_sub + np.arange(self.n_sub)).ravel()).astype(
            np.int64)

    def patch_fine_dofs(self, V: dolfinx.fem.FunctionSpace, patch: Patch) -> np.ndarray:
        """Local dofs of ``V`` (on this rank) inside the patch box (closed)."""
        x = V.tabulate_dof_coordinates()[:, : self.dim]
        lo = self.lower + np.array(patch.lo) * self.h
        hi = self.lower + np.array(patch.hi) * self.h
        tol = 1e-10 * self.h.min()
        inside = np.all((x >= lo - tol) & (x <= hi + tol), axis=1)
        return np.flatnonzero(inside).astype(np.int32)


@dataclass(frozen=True)
class Oversampling:
    r"""Size of the oversampling patch S ⊇ K, in one of three equivalent conventions.

    Exactly one of: ``coarse_layers`` k (S = K plus k layers of coarse cells),
    ``ratio`` r (S homothetic to K with ratio r, i.e. (r-1)/2·H added on each side), or
    ``fine_layers`` ℓ. All are converted to fine layers (ℓ = kM, ℓ = round((r-1)M/2)).

    Alternatively ``sampling_region`` M_S: Hou & Wu's (1997) fixed sampling regions of
    M_S × M_S fine cells tiling Ω, each shared by all the coarse cells it contains.
    """

    coarse_layers: int | None = None
    ratio: float | None = None
    fine_layers: int | None = None
    sampling_region: int | None = None

    def __post_init__(self):
        given = [v is not None for v in (self.coarse_layers, self.ratio, self.fine_layers,
                                         self.sampling_region)]
        if sum(given) > 1:
            raise ValueError("give only one of coarse_layers, ratio, fine_layers, "
                             "sampling_region")
        if self.sampling_region is not None and (
                not isinstance(self.sampling_region, (int, np.integer))
                or self.sampling_region < 1):
            raise ValueError(f"sampling_region must be a positive integer (fine cells), got "
                             f"{self.sampling_region!r}")
        if self.ratio is not None and self.ratio < 1:
            raise ValueError(f"oversampling ratio must be >= 1, got {self.ratio}")
        for name in ("coarse_layers", "fine_layers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 0):
                raise ValueError(f"oversampling {name} must be a non-negative integer, got {v!r}")

    def layers(self, M: int) -> int:
        """Fine layers added on every side for ``M`` fine cells per coarse cell.

        For sampling regions: ``M_S - M``, the largest extension, > 0 iff oversampled.
        """
        if self.sampling_region is not None:
            return max(self.sampling_region - M, 0)
        if self.coarse_layers is not None:
            return self.coarse_layers * M
        if self.ratio is not None:
            return int(round((self.ratio - 1) * M / 2))
        return int(self.fine_layers or 0)


class RefinedHierarchy:
    """An unstructured coarse mesh refined ``levels`` times (parent map composed).

    dolfinx keeps refined cells on the rank of their parent, so the fine cells of every
    owned coarse cell are local.
    """

    def __init__(self, coarse: dolfinx.mesh.Mesh, levels: int):
        if not isinstance(levels, (int, np.integer)) or levels < 0:
            raise ValueError(f"levels must be a non-negative integer, got {levels!r}")
        self.coarse, self.comm, self.dim = coarse, coarse.comm, coarse.topology.dim
        self.coarse.topology.create_entities(1)
        fine = coarse
        parent = np.arange(coarse.topology.index_map(self.dim).size_local
                           + coarse.topology.index_map(self.dim).num_ghosts, dtype=np.int32)
        for _ in range(levels):
            fine.topology.create_entities(1)
            fine, p, _ = dolfinx.mesh.refine(fine)
            # dolfinx returns the parents of the owned refined cells in the order they were
            # created (global input index = rank offset + creation index), before the mesh
            # reordered them: index through original_cell_index. Ghost fine cells get -1.
            n_owned = fine.topology.index_map(self.dim).size_local
            offset = self.comm.exscan(len(p)) or 0
            order = np.asarray(fine.topology.original_cell_index, dtype=np.int64)[:n_owned]
            new_parent = np.full(n_owned + fine.topology.index_map(self.dim).num_ghosts, -1,
                                 dtype=np.int32)
            new_parent[:n_owned] = parent[np.asarray(p)[order - offset]]
            parent = new_parent
        self.fine, self.levels = fine, levels
        self.fine_to_coarse = parent

    @classmethod
    def from_gmsh(cls, path: str, levels: int, comm: MPI.Comm = MPI.COMM_WORLD) -> RefinedHierarchy:
        """Read a coarse mesh from a ``.msh`` file, or build it from a ``.py`` script.

        The script (in ``meshes/``) must define ``build(gmsh)`` adding a meshed model.
        """
        import os

        with _runtime.collective(comm):  # a file missing on one rank stops every rank
            if not os.path.exists(path):
                raise FileNotFoundError(f"gmsh file {path!r} not found (cwd: {os.getcwd()})")
        from msfem.gmsh_io import read_coarse

        return cls(read_coarse(path, comm), levels)

    @property
    def owned_coarse_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(local indices, ids) of the coarse cells owned by this rank (ids = local indices)."""
        local = np.arange(self.coarse.topology.index_map(self.dim).size_local, dtype=np.int32)
        return local, local

    @property
    def cell_type(self) -> str:
        """Name of the coarse (and fine) cell type, e.g. ``"triangle"``."""
        return self.coarse.topology.cell_type.name

    @cached_property
    def H(self) -> np.ndarray:
        """Largest coarse cell diameter (per axis, for scaling local coordinates)."""
        n = self.coarse.topology.index_map(self.dim).size_local
        local = float(self.coarse.h(self.dim, np.arange(n, dtype=np.int32)).max()) if n else 0.0
        return np.full(self.dim, self.comm.allreduce(local, op=MPI.MAX))

    def coarse_vertices(self, cell: int) -> np.ndarray:
        """Coordinates (n_vertices, d) of local coarse cell ``cell``."""
        nodes = self.coarse.geometry.dofmaps[0][cell]
        return self.coarse.geometry.x[nodes, : self.dim]

    def fine_cells(self, cell: int) -> np.ndarray:
        """Local fine cells of (local) coarse cell ``cell``."""
        return np.flatnonzero(self.fine_to_coarse == cell).astype(np.int32)

    def fine_dofs(self, V: dolfinx.fem.FunctionSpace, cell: int) -> np.ndarray:
        """Local dofs of ``V`` on the fine cells of (local) coarse cell ``cell``."""
        return np.unique(V.dofmap.list[self.fine_cells(cell)].ravel())

    def patch_coarse_cells(self, cell: int, layers: int) -> np.ndarray:
        """Local coarse cells within ``layers`` vertex-neighbour layers of ``cell``.

        Limited to the cells present on this rank, i.e. owned and ghost.
        """
        tdim = self.dim
        self.coarse.topology.create_connectivity(tdim, 0)
        self.coarse.topology.create_connectivity(0, tdim)
        c2v = self.coarse.topology.connectivity(tdim, 0)
        v2c = self.coarse.topology.connectivity(0, tdim)
        cells = {int(cell)}
        for _ in range(layers):
            verts = {int(v) for c in cells for v in c2v.links(c)}
            cells |= {int(c) for v in verts for c in v2c.links(v)}
        return np.array(sorted(cells), dtype=np.int32)
