r"""Coarse spaces: the layout of a method's coarse dofs over the MPI ranks.

A coarse space numbers the unknowns :math:`U` of the coarse system in PETSc's global
numbering (owned ranges per rank, from a dolfinx index map), gives the dofs of each owned
coarse cell and the Dirichlet dofs. :class:`LagrangeCoarseSpace` is the P1/Q1 space of
the coarse mesh -- one block of ``count × value size`` dofs per vertex (``count > 1``:
several functions per vertex, as in GMsFEM) -- backed by a dolfinx function space, so
the coarse solution is a dolfinx Function one can write to VTX/XDMF.

On a structured hierarchy the dofs of a vertex are found from its partition-independent
fine-lattice id through a PETSc ``AO``, for any vertex of the domain (not only the ranks'
own and ghost vertices): a method may couple coarse dofs several cells apart.
"""

from __future__ import annotations

from typing import Any

import dolfinx
import numpy as np
from petsc4py import PETSc

from msfem import _runtime  # noqa: F401
from msfem.mesh import StructuredHierarchy
from msfem.problem import Problem, dirichlet_values
from msfem.transfer import expand_blocks


class CoarseSpace:
    """Base of coarse spaces (see the module docstring).

    Attributes:
        function_space: a dolfinx space carrying the coarse unknowns (or ``None``).
        index_map: ownership of the dof blocks; ``bs`` dofs per block.
    """

    function_space: dolfinx.fem.FunctionSpace | None = None
    index_map: dolfinx.common.IndexMap
    bs: int

    @property
    def size_local(self) -> int:
        """Number of owned (unblocked) dofs."""
        return self.index_map.size_local * self.bs

    @property
    def size_global(self) -> int:
        """Number of (unblocked) dofs over all ranks."""
        return self.index_map.size_global * self.bs

    def to_global(self, local: np.ndarray) -> np.ndarray:
        """Local (owned or ghost, unblocked) dof indices to global ones."""
        local = np.asarray(local, dtype=np.int64)
        blocks = self.index_map.local_to_global(np.asarray(local // self.bs, dtype=np.int32))
        return blocks * self.bs + local % self.bs

    def create_vector(self, name: str = "U"):
        """A (ghosted) coarse vector: a dolfinx Function when there is a function space."""
        if self.function_space is not None:
            return dolfinx.fem.Function(self.function_space, name=name)
        return dolfinx.la.vector(self.index_map, self.bs)

    def dirichlet(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Owned global dofs on Γ_D and their values (none by default)."""
        return np.zeros(0, dtype=np.int64), np.zeros(0)

    def vertex_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Coordinates (n, d) and values (n, bs) at the owned coarse vertices.

        ``values`` is the local array of a coarse vector; ``None``: no nodal values.
        """
        return None


class LagrangeCoarseSpace(CoarseSpace):
    """P1/Q1 dofs on the coarse mesh: ``count`` blocks of the problem's value shape per vertex.

    Args:
        hierarchy: a structured or refined hierarchy.
        problem: gives the value shape (scalar, vector).
        count: functions per vertex and component (GMsFEM-like spaces; default 1).
        value_size: dofs per vertex, overriding ``count × block size`` (e.g. GMsFEM on a
            vector problem: ``count`` vector-valued functions per vertex).
    """

    function_space: dolfinx.fem.FunctionSpace  # always set (narrows the base's Optional)

    def __init__(self, hierarchy, problem: Problem, count: int = 1,
                 value_size: int | None = None):
        self.hierarchy, self.count = hierarchy, int(count)
        shape = problem.shape if count == 1 else (count * problem.block_size,)
        if value_size is not None:
            shape = (int(value_size),) if value_size > 1 else ()
        self.function_space = dolfinx.fem.functionspace(hierarchy.coarse, ("Lagrange", 1, shape))
        self.index_map = self.function_space.dofmap.index_map
        self.bs = self.function_space.dofmap.index_map_bs
        self.structured = isinstance(hierarchy, StructuredHierarchy)
        self._ao: PETSc.AO | None = None

    # ------------------------------------------------------------------ vertices
    @property
    def ao(self) -> PETSc.AO:
        """Fine-lattice id of a coarse vertex → its global dof block (structured only)."""
        if self._ao is None:
            h = self.hierarchy
            n = self.index_map.size_local
            x = self.function_space.tabulate_dof_coordinates()[:n, : h.dim]
            app = h.lattice_ids(x, 1).astype(PETSc.IntType)
            petsc = np.arange(*self.index_map.local_range, dtype=PETSc.IntType)
            self._ao = PETSc.AO().createMapping(app, petsc, comm=h.comm)  # type: ignore[arg-type]
        return self._ao

    def vertex_dofs(self, x: np.ndarray) -> np.ndarray:
        """Global dofs (n * bs,) of the coarse vertices at ``x`` (n, d), structured only."""
        ids = self.hierarchy.lattice_ids(np.asarray(x, dtype=float), 1)
        blocks = np.asarray(self.ao.app2petsc(ids.astype(PETSc.IntType)), dtype=np.int64)
        if len(blocks) and blocks.min() < 0:
            raise ValueError("points are not coarse vertices")
        return expand_blocks(blocks, self.bs)

    def cell_dofs(self, local_cells: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Global dofs (n_cells, n_vertices * bs) of coarse cells ``cells``.

        ``local_cells`` are their local indices; the order is that of
        ``hierarchy.coarse_vertices(cell)``, vertex-major, component-minor.
        """
        h = self.hierarchy
        if len(cells) == 0:
            return np.zeros((0, 0), dtype=np.int64)
        verts = np.array([h.coarse_vertices(int(c)) for c in cells])  # (n, nv, d)
        n, nv, d = verts.shape
        if self.structured:
            return self.vertex_dofs(verts.reshape(-1, d)).reshape(n, nv * self.bs)
        xc = self.function_space.tabulate_dof_coordinates()[:, :d]
        out = np.empty((n, nv * self.bs), dtype=np.int64)
        for k, (lc, v) in enumerate(zip(local_cells, verts)):
            cdofs = self.function_space.dofmap.cell_dofs(int(lc))
            dist = np.linalg.norm(xc[cdofs][None, :, :] - v[:, None, :], axis=2)
            out[k] = self.to_global(expand_blocks(cdofs[np.argmin(dist, axis=1)], self.bs))
        return out

    def vertex_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Coordinates and values (n, bs) at the owned coarse vertices (count = 1)."""
        if self.count != 1:
            return None
        n = self.index_map.size_local
        x = self.function_space.tabulate_dof_coordinates()[:n, : self.hierarchy.dim]
        return x, values[: n * self.bs].reshape(n, self.bs)

    # ------------------------------------------------------------------ boundary
    def dirichlet_vertices(self, problem: Problem) -> list[tuple[np.ndarray, np.ndarray, Any]]:
        """Owned vertex blocks on Γ_D: ``(blocks, coordinates (3, n), condition)`` per condition.

        A vertex on the boundary of several conditions is listed under the first only.
        """
        h, Vc = self.hierarchy, self.function_space
        tdim = h.dim
        n_owned = self.index_map.size_local
        xc = Vc.tabulate_dof_coordinates()
        out = []
        seen: set[int] = set()
        for bc in problem.dirichlet:
            marker = bc.marker or (lambda x: np.ones(x.shape[1], dtype=bool))
            facets = dolfinx.mesh.locate_entities_boundary(h.coarse, tdim - 1, marker)
            blocks = dolfinx.fem.locate_dofs_topological(Vc, tdim - 1, facets)
            blocks = np.array([b for b in blocks if b < n_owned and b not in seen],
                              dtype=np.int64)
            seen.update(blocks.tolist())
            if len(blocks):
                out.append((blocks, xc[blocks].T, bc))
        return out

    def dirichlet(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Owned global dofs on Γ_D and their values :math:`U_i = g(x_i)` (count = 1)."""
        if self.count != 1:
            return super().dirichlet(problem)
        rows, vals = [], []
        for blocks, x, bc in self.dirichlet_vertices(problem):
            g = dirichlet_values(bc, x, problem.shape)  # (bs, n)
            rows.append(self.to_global(expand_blocks(blocks, self.bs)))
            vals.append(g.T.ravel())
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(rows), np.concatenate(vals)


class EntityCoarseSpace(CoarseSpace):
    """Coarse dofs attached to mesh entities: ``counts[d]`` dofs on every entity of dim d.

    For example ``{0: 1, tdim: 1}`` -- one dof per vertex and one per cell (a bubble
    enrichment), ``{tdim - 1: 1}`` -- one per facet (Crouzeix--Raviart face means). The
    owned dofs of a rank are its owned vertices' dofs, then its facets', ...; ghosts are
    the dofs of the ghost entities of its cells. Scalar dofs (``bs = 1``).

    Args:
        hierarchy: structured or refined hierarchy (entities of its coarse mesh).
        counts: dofs per entity, by entity dimension.
    """

    def __init__(self, hierarchy, counts: dict[int, int]):
        mesh = hierarchy.coarse
        comm = mesh.comm
        self.hierarchy, self.bs = hierarchy, 1
        self.dims = sorted(int(d) for d, c in counts.items() if c > 0)
        self.counts = {d: int(counts[d]) for d in self.dims}
        tdim = mesh.topology.dim
        self.maps = {}
        for d in self.dims:
            mesh.topology.create_entities(d)
            mesh.topology.create_connectivity(tdim, d)
            mesh.topology.create_connectivity(d, tdim)
            self.maps[d] = mesh.topology.index_map(d)
        mesh.topology.create_connectivity(tdim - 1, tdim)
        mesh.topology.create_connectivity(tdim - 1, 0)
        # owned block of this rank: dims in order, each entity's dofs contiguous
        n_owned = sum(self.maps[d].size_local * self.counts[d] for d in self.dims)
        start = comm.exscan(n_owned) or 0
        self._offsets = {}
        off = 0
        for d in self.dims:
            self._offsets[d] = off
            off += self.maps[d].size_local * self.counts[d]
        table = comm.allgather((start, {d: (self.maps[d].local_range[0], self._offsets[d])
                                        for d in self.dims}))
        ghosts: list[int] = []
        owners: list[int] = []
        self._ghost_start: dict[int, int] = {}
        n_ghost = 0
        for d in self.dims:
            imap, c = self.maps[d], self.counts[d]
            self._ghost_start[d] = n_ghost
            gh = np.asarray(imap.ghosts, dtype=np.int64)
            own = np.asarray(imap.owners, dtype=np.int32)
            for g, r in zip(gh, own):
                r_start, ranges = table[r]
                first, offset = ranges[d]
                base = r_start + offset + (int(g) - first) * c
                ghosts.extend(range(base, base + c))
                owners.extend([int(r)] * c)
            n_ghost += len(gh) * c
        self.index_map = dolfinx.common.IndexMap(comm, n_owned, np.array(ghosts, dtype=np.int64),
                                                 np.array(owners, dtype=np.int32), 1)

    def entity_dofs(self, d: int, entities: np.ndarray) -> np.ndarray:
        """Local dof indices (n * counts[d],) of local entities of dimension ``d``."""
        imap, c = self.maps[d], self.counts[d]
        entities = np.asarray(entities, dtype=np.int64)
        owned = entities < imap.size_local
        n_owned_total = self.index_map.size_local
        base = np.where(owned, self._offsets[d] + entities * c,
                        n_owned_total + self._ghost_start[d] + (entities - imap.size_local) * c)
        return (base[:, None] + np.arange(c)).ravel()

    def cell_dofs(self, local_cells: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Global dofs of each cell.

        Vertex dofs in the order of ``hierarchy.coarse_vertices(cell)`` (when counts[0] >
        0), then the dofs of its other entities in dolfinx's local entity order, dimension
        by dimension.
        """
        h = self.hierarchy
        mesh = h.coarse
        tdim = mesh.topology.dim
        rows = []
        for lc, cell in zip(local_cells, cells):
            parts = []
            for d in self.dims:
                if d == tdim:
                    ents = np.array([lc])
                else:
                    ents = mesh.topology.connectivity(tdim, d).links(int(lc))
                if d == 0:
                    geo = dolfinx.mesh.entities_to_geometry(mesh, 0, ents.astype(np.int32))
                    x = mesh.geometry.x[geo[:, 0], : h.dim]
                    verts = h.coarse_vertices(int(cell))
                    ents = ents[np.argmin(np.linalg.norm(x[None] - verts[:, None], axis=2),
                                          axis=1)]
                parts.append(self.entity_dofs(d, ents))
            rows.append(self.to_global(np.concatenate(parts)))
        return np.array(rows, dtype=np.int64)

    def dirichlet(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Owned vertex dofs on Γ_D (counts[0] = 1) with :math:`U_i = g(x_i)`.

        Other entities carry no Dirichlet data here (a method may add its own).
        """
        if self.counts.get(0) != 1 or problem.block_size != 1:
            return super().dirichlet(problem)
        mesh = self.hierarchy.coarse
        tdim = mesh.topology.dim
        rows, vals = [], []
        for bc in problem.dirichlet:
            marker = bc.marker or (lambda x: np.ones(x.shape[1], dtype=bool))
            facets = dolfinx.mesh.locate_entities_boundary(mesh, tdim - 1, marker)
            verts = dolfinx.mesh.compute_incident_entities(mesh.topology, facets, tdim - 1, 0)
            verts = verts[verts < self.maps[0].size_local]
            if len(verts) == 0:
                continue
            geo = dolfinx.mesh.entities_to_geometry(mesh, 0, verts.astype(np.int32))
            x = mesh.geometry.x[geo[:, 0]].T
            rows.append(self.to_global(self.entity_dofs(0, verts)))
            vals.append(dirichlet_values(bc, x, problem.shape).ravel())
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rows_all, vals_all = np.concatenate(rows), np.concatenate(vals)
        _, first = np.unique(rows_all, return_index=True)
        return rows_all[first], vals_all[first]

    def vertex_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Coordinates (n, d) and values (n, 1) of the owned vertex dofs (counts[0] = 1)."""
        if self.counts.get(0) != 1:
            return None
        mesh = self.hierarchy.coarse
        verts = np.arange(self.maps[0].size_local, dtype=np.int32)
        geo = dolfinx.mesh.entities_to_geometry(mesh, 0, verts)
        x = mesh.geometry.x[geo[:, 0], : self.hierarchy.dim]
        return x, values[self.entity_dofs(0, verts)].reshape(-1, 1)
