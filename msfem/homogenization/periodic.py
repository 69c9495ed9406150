r"""Periodic boundary conditions on a box cell as one algebraic map, without dolfinx_mpc.

A Lagrange space :math:`V_h` on a box :math:`Y = \prod_d [\ell_d, u_d]` whose boundary nodes
match across opposite faces has a periodic subspace

.. math:: V_{h,\#} = \{ v \in V_h : v(x + (u_d - \ell_d) e_d) = v(x) \text{ for } x_d = \ell_d \}.

Every node with some coordinate :math:`x_d = u_d` is a *slave*; its *master* is the node
obtained by replacing all those coordinates by :math:`\ell_d` (so the corners
:math:`(u_1, u_2)`, :math:`(\ell_1, u_2)`, :math:`(u_1, \ell_2)` all map to
:math:`(\ell_1, \ell_2)`). The prolongation :math:`P: \mathbb R^{M} \to \mathbb R^{N}` from
master values to all dofs (one entry 1 per row) is a distributed PETSc ``MPIAIJ`` matrix in
global numbering, so a periodic Galerkin problem is

.. math:: P^\top A P \, \hat u = P^\top b, \qquad u = P \hat u,

whatever the parallel distribution of masters and slaves (the map is built from gathered
coordinates of the boundary nodes only). Blocked (vector) spaces map component by
component.

**Null space.** A pure periodic problem determines :math:`u` up to the kernel of the
operator: constants for diffusion, translations for elasticity (infinitesimal rotations are
not periodic). We *pin* the master dof(s) at the corner :math:`\ell` (identity row and column
in :math:`P^\top A P`, zero right-hand side) and subtract the mean afterwards. This is exact
for a consistent right-hand side (:math:`P^\top b \perp \ker`), works with any direct or
iterative PETSc solver (MUMPS needs no null-pivot detection), and costs nothing. See
:meth:`PeriodicMap.pin` and :func:`subtract_mean`.

References:
    G. Allaire, *Shape optimization by the homogenization method*, Springer 2002, ch. 1
    (periodic cell problems); the algebraic master--slave elimination is the standard one
    of multi-point constraints, e.g. T. J. R. Hughes, *The Finite Element Method*, 2000,
    §1.14.
"""

from __future__ import annotations

from dataclasses import dataclass

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc
from scipy.spatial import cKDTree

from msfem import _runtime  # noqa: F401  (imports dolfinx_solver first when installed)

__all__ = ["PeriodicMap", "box_bounds", "periodic_map", "subtract_mean", "disc_cell"]

#: Relative (to the box diameter) tolerance for "on a face" and "same node".
RELATIVE_TOLERANCE = 1e-8


def box_bounds(mesh: dolfinx.mesh.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Return the global bounding box ``(lower, upper)`` (each of length gdim) of ``mesh``."""
    gdim = mesh.geometry.dim
    x = mesh.geometry.x[:, :gdim]
    lo = np.full(gdim, np.inf) if x.shape[0] == 0 else x.min(axis=0)
    hi = np.full(gdim, -np.inf) if x.shape[0] == 0 else x.max(axis=0)
    lo_g, hi_g = np.empty(gdim), np.empty(gdim)
    mesh.comm.Allreduce(np.ascontiguousarray(lo, dtype=float), lo_g, op=MPI.MIN)
    mesh.comm.Allreduce(np.ascontiguousarray(hi, dtype=float), hi_g, op=MPI.MAX)
    return lo_g, hi_g


def _gather(comm: MPI.Comm, a: np.ndarray, width: int) -> np.ndarray:
    parts = comm.allgather(np.ascontiguousarray(a))
    return np.concatenate(parts).reshape(-1, width) if parts else np.zeros((0, width))


def _format_points(points: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join("(" + ", ".join(f"{c:.6g}" for c in p) + ")" for p in points[:limit])
    more = f" and {len(points) - limit} more" if len(points) > limit else ""
    return shown + more


@dataclass(frozen=True)
class PeriodicMap:
    r"""Prolongation :math:`P` from periodic master dofs to all dofs of a Lagrange space.

    Attributes:
        V: The (scalar or blocked) Lagrange space on the box.
        P: ``MPIAIJ`` matrix, rows = global dofs of ``V`` (owned layout of ``V``), columns =
            global master dofs; exactly one unit entry per row.
        lower: Lower corner :math:`\ell` of the box.
        upper: Upper corner :math:`u` of the box.
        corner_dofs: Global reduced (master) indices of the dofs at the corner :math:`\ell`
            (``bs`` of them), identical on every rank; pinned by :meth:`pin`.
        num_masters: Global number of master nodes (reduced size is ``num_masters * bs``).
    """

    V: dolfinx.fem.FunctionSpace
    P: PETSc.Mat
    lower: np.ndarray
    upper: np.ndarray
    corner_dofs: np.ndarray
    num_masters: int

    def reduce_matrix(self, A: PETSc.Mat) -> PETSc.Mat:
        r"""Return :math:`P^\top A P` (a new matrix, same communicator)."""
        return A.PtAP(self.P)

    def create_reduced_vector(self) -> PETSc.Vec:
        """Return a zero vector in the reduced (master) layout."""
        v = self.P.createVecRight()
        v.set(0.0)
        return v

    def reduce_vector(self, b: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec:
        r"""Return :math:`P^\top b` (``b`` must be assembled: ghosts accumulated)."""
        out = self.create_reduced_vector() if out is None else out
        self.P.multTranspose(b, out)
        return out

    def expand(self, x_reduced: PETSc.Vec, u: dolfinx.fem.Function) -> None:
        r"""Set ``u`` to :math:`P \hat x` (owned and ghost values)."""
        self.P.mult(x_reduced, u.x.petsc_vec)
        u.x.scatter_forward()

    def pin(self, A_reduced: PETSc.Mat, b_reduced: PETSc.Vec | None = None) -> None:
        r"""Pin the corner dofs: identity rows/columns in :math:`P^\top A P`, zero load.

        This removes the kernel of a pure periodic operator (constants, or translations
        for elasticity) for a consistent right-hand side; see the module docstring.
        """
        r0, r1 = A_reduced.getOwnershipRange()
        rows = [int(i) for i in self.corner_dofs if r0 <= i < r1]
        if b_reduced is not None:
            x0 = b_reduced.duplicate()
            x0.set(0.0)
            A_reduced.zeroRowsColumns(rows, 1.0, x0, b_reduced)
            x0.destroy()
        else:
            A_reduced.zeroRowsColumns(rows, 1.0)

    def destroy(self) -> None:
        """Free the PETSc matrix."""
        self.P.destroy()


def periodic_map(V: dolfinx.fem.FunctionSpace) -> PeriodicMap:
    r"""Build the periodic master--slave map :math:`P` of a Lagrange space on a box.

    The box is the global bounding box of ``V.mesh``. Nodes of opposite faces must match
    (structured meshes from ``create_unit_square``/``create_rectangle``/``create_box`` of
    any cell type, or gmsh meshes made periodic with ``gmsh.model.mesh.setPeriodic``).

    Args:
        V: Lagrange space (scalar or blocked, any degree) on a box-shaped mesh.

    Returns:
        The :class:`PeriodicMap`.

    Raises:
        ValueError: On every rank, if the dof coordinates of some face have no partner on the
            opposite face; the message names offending coordinates.
    """
    mesh = V.mesh
    comm = mesh.comm
    gdim = mesh.geometry.dim
    lo, hi = box_bounds(mesh)
    tol = RELATIVE_TOLERANCE * float(np.linalg.norm(hi - lo))
    imap = V.dofmap.index_map
    bs = V.dofmap.index_map_bs
    n_own = imap.size_local
    x = V.tabulate_dof_coordinates()[:n_own, :gdim].astype(float)
    on_lo = np.abs(x - lo) < tol
    on_hi = np.abs(x - hi) < tol

    # 1. Validate: on each axis, lower-face and shifted upper-face nodes coincide.
    for d in range(gdim):
        low = _gather(comm, x[on_lo[:, d]], gdim)
        up = _gather(comm, x[on_hi[:, d]], gdim)
        up[:, d] = lo[d]
        bad = []
        for mine, other in ((low, up), (up, low)):
            if len(mine) == 0:
                continue
            if len(other) == 0:
                bad.append(mine)
                continue
            dist, _ = cKDTree(other).query(mine)
            bad.append(mine[dist > tol])
        bad_pts = np.concatenate(bad) if bad else np.zeros((0, gdim))
        if len(bad_pts):
            bad_pts = np.unique(np.round(bad_pts, 12), axis=0)
            raise ValueError(
                f"periodic_map: the nodes on the faces x[{d}] = {lo[d]:.6g} and "
                f"x[{d}] = {hi[d]:.6g} do not match; unmatched nodes (projected onto the "
                f"lower face): {_format_points(bad_pts)}. Use a structured mesh or a gmsh "
                f"mesh with setPeriodic."
            )

    # 2. Number the masters (nodes on no upper face) contiguously per rank.
    is_master = ~on_hi.any(axis=1)
    n_master_own = int(is_master.sum())
    m0 = comm.exscan(n_master_own) or 0
    num_masters = comm.allreduce(n_master_own)
    master_of = np.full(n_own, -1, dtype=np.int64)
    master_of[is_master] = m0 + np.arange(n_master_own, dtype=np.int64)

    # 3. Slaves look up the master at their image through the gathered lower-face masters.
    cand = is_master & on_lo.any(axis=1)
    cand_x = _gather(comm, x[cand], gdim)
    cand_id = np.concatenate(comm.allgather(master_of[cand]))
    tree = cKDTree(cand_x) if len(cand_x) else None
    slaves = np.flatnonzero(~is_master)
    error = None
    if len(slaves):
        image = x[slaves].copy()
        hi_mask = on_hi[slaves]
        image[hi_mask] = np.broadcast_to(lo, image.shape)[hi_mask]
        dist, idx = tree.query(image) if tree is not None else (np.full(len(slaves), np.inf),
                                                               np.zeros(len(slaves), int))
        missing = dist > tol
        if missing.any():
            error = (f"periodic_map: no master node for slave nodes "
                     f"{_format_points(x[slaves][missing])}")
        else:
            master_of[slaves] = cand_id[idx]
    errors = [e for e in comm.allgather(error) if e]
    if errors:
        raise ValueError(errors[0])
    if tree is None:
        raise ValueError("periodic_map: the mesh has no nodes on its lower faces")
    dist, idx = tree.query(lo)
    if dist > tol:
        raise ValueError(f"periodic_map: no node at the corner {_format_points(lo[None])}")
    corner = int(cand_id[idx])

    # 4. P in global numbering: row bs*g + c -> column bs*master + c.
    rows = n_own * bs
    indptr = np.arange(rows + 1, dtype=PETSc.IntType)
    cols = (bs * np.repeat(master_of, bs) + np.tile(np.arange(bs), n_own)).astype(PETSc.IntType)
    vals = np.ones(rows, dtype=PETSc.ScalarType)
    P = PETSc.Mat().createAIJ(
        size=((rows, imap.size_global * bs), (n_master_own * bs, num_masters * bs)),
        bsize=bs, csr=(indptr, cols, vals), comm=comm,  # type: ignore[arg-type]
    )
    P.assemble()
    corner_dofs = np.array([bs * corner + c for c in range(bs)], dtype=np.int64)
    return PeriodicMap(V=V, P=P, lower=lo, upper=hi, corner_dofs=corner_dofs,
                       num_masters=num_masters)


def subtract_mean(u: dolfinx.fem.Function) -> np.ndarray:
    r"""Subtract the cell average :math:`\langle u\rangle = |Y|^{-1}\int_Y u\,dy` (per component).

    Valid for Lagrange spaces (constants are reproduced by nodal values).

    Returns:
        The subtracted mean (shape ``(bs,)``).
    """
    V = u.function_space
    mesh = V.mesh
    bs = V.dofmap.index_map_bs
    comm = mesh.comm
    dx = ufl.dx(domain=mesh)
    vol = comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * dx)))
    comps = [u] if bs == 1 and len(u.ufl_shape) == 0 else [u[i] for i in range(bs)]
    means = np.array([
        comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(c * dx))) / vol
        for c in comps
    ])
    arr = u.x.array.reshape(-1, bs)
    arr -= means
    return means


def disc_cell(
    comm: MPI.Comm,
    volume_fraction: float,
    *,
    mesh_size: float = 0.05,
    interface_size: float | None = None,
    order: int = 2,
    rank: int = 0,
) -> tuple[dolfinx.mesh.Mesh, dolfinx.mesh.MeshTags]:
    r"""Periodic unit cell :math:`[0,1]^2` with a centred disc, meshed by gmsh with periodic faces.

    The disc of radius :math:`r = \sqrt{f/\pi}` is fitted by the mesh (geometry of degree
    ``order``); the right/top boundary meshes are copies of the left/bottom ones
    (``gmsh.model.mesh.setPeriodic``), so :func:`periodic_map` applies.

    Args:
        comm: Communicator of the mesh (the model is built on ``rank``).
        volume_fraction: Area fraction :math:`f` of the disc (:math:`f < \pi/4`).
        mesh_size: Target element size in the matrix.
        interface_size: Element size on the circle (default ``mesh_size / 2``).
        order: Geometric order of the mesh (1 or 2).
        rank: Rank on which gmsh runs.

    Returns:
        ``(mesh, cell_tags)`` with tag 1 for the matrix and 2 for the disc.
    """
    import gmsh  # optional dependency, imported only here

    r = float(np.sqrt(volume_fraction / np.pi))
    if not 0 < r < 0.5:
        raise ValueError(f"disc_cell: volume fraction {volume_fraction} needs 0 < f < pi/4")
    interface_size = mesh_size / 2 if interface_size is None else interface_size
    initialized_here = False
    if comm.rank == rank:
        if not gmsh.isInitialized():
            gmsh.initialize(interruptible=False)
            initialized_here = True
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("msfem_disc_cell")
        occ = gmsh.model.occ
        sq = occ.addRectangle(0, 0, 0, 1, 1)
        disc = occ.addDisk(0.5, 0.5, 0, r, r)
        out, children = occ.fragment([(2, sq)], [(2, disc)])
        occ.synchronize()
        surfaces = [s for d, s in out if d == 2]
        # the disc is what the disc object became (children[1]), whatever its area: for
        # f > 1/2 it is the larger of the two surfaces
        disc_s = next(s for d, s in children[1] if d == 2)
        matrix_s = [s for s in surfaces if s != disc_s]
        gmsh.model.addPhysicalGroup(2, matrix_s, 1)
        gmsh.model.addPhysicalGroup(2, [disc_s], 2)
        # periodic curves: right <- left, top <- bottom
        eps = 1e-7

        def curves_at(xmin, ymin, xmax, ymax):
            return [t for _, t in gmsh.model.getEntitiesInBoundingBox(
                xmin - eps, ymin - eps, -eps, xmax + eps, ymax + eps, eps, 1)]

        left, right = curves_at(0, 0, 0, 1), curves_at(1, 0, 1, 1)
        bottom, top = curves_at(0, 0, 1, 0), curves_at(0, 1, 1, 1)
        gmsh.model.mesh.setPeriodic(1, right, left, [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0,
                                                     0, 0, 0, 1])
        gmsh.model.mesh.setPeriodic(1, top, bottom, [1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0,
                                                     0, 0, 0, 1])
        circle = [t for _, t in gmsh.model.getBoundary([(2, disc_s)], oriented=False)]
        gmsh.model.mesh.field.add("Distance", 1)
        gmsh.model.mesh.field.setNumbers(1, "CurvesList", circle)
        gmsh.model.mesh.field.add("Threshold", 2)
        gmsh.model.mesh.field.setNumber(2, "InField", 1)
        gmsh.model.mesh.field.setNumber(2, "SizeMin", interface_size)
        gmsh.model.mesh.field.setNumber(2, "SizeMax", mesh_size)
        gmsh.model.mesh.field.setNumber(2, "DistMin", 0.0)
        gmsh.model.mesh.field.setNumber(2, "DistMax", 0.15)
        gmsh.model.mesh.field.setAsBackgroundMesh(2)
        gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
        gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
        gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
        gmsh.model.mesh.generate(2)
        gmsh.model.mesh.setOrder(order)
    import dolfinx.io.gmsh

    try:
        data = dolfinx.io.gmsh.model_to_mesh(gmsh.model if comm.rank == rank else None, comm,
                                             rank, gdim=2)
    finally:
        if comm.rank == rank:
            gmsh.model.remove()
            if initialized_here:
                gmsh.finalize()
    if data.cell_tags is None:  # the model has physical surfaces, so dolfinx tags the cells
        raise RuntimeError("disc_cell: gmsh returned no cell tags")
    return data.mesh, data.cell_tags
