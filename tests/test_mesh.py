"""Mesh hierarchies: nested fine->coarse maps, patches, gmsh coarse meshes."""

import dolfinx
import numpy as np
import pytest
from mpi4py import MPI

import msfem
from msfem.mesh import Oversampling


def _inside(points, verts, simplex, tol=1e-12):
    """Are all ``points`` (n, d) inside the cell with vertices ``verts``?"""
    if simplex:
        T = (verts[1:] - verts[0]).T
        lam = np.linalg.solve(T, (points - verts[0]).T)
        bary = np.vstack([1 - lam.sum(axis=0), lam])
        return bool(np.all(bary > -tol))
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    return bool(np.all((points >= lo - tol) & (points <= hi + tol)))


@pytest.mark.parametrize("cell,N,M", [("interval", 4, 5), ("triangle", 3, 4),
                                      ("quadrilateral", 3, 4), ("tetrahedron", 2, 3),
                                      ("hexahedron", 2, 2)])
def test_fine_to_coarse_map(comm, cell, N, M):
    """Every vertex of every fine cell lies in the coarse cell the map names, and every
    coarse cell holds exactly M^d fine cells."""
    hier = msfem.StructuredHierarchy(comm, N, M, cell)
    dim = hier.dim
    fine = hier.fine
    n_owned = fine.topology.index_map(dim).size_local
    geom = fine.geometry.x[:, :dim]
    dofmap = fine.geometry.dofmaps[0] if hasattr(fine.geometry, "dofmaps") else fine.geometry.dofmap
    simplex = cell in ("triangle", "tetrahedron")
    f2c = hier.fine_to_coarse[:n_owned]
    for c in range(n_owned):
        assert _inside(geom[dofmap[c]], hier.coarse_vertices(f2c[c]), simplex)
    counts = comm.allreduce(np.bincount(f2c, minlength=hier.num_coarse_cells), op=MPI.SUM)
    assert np.all(counts == M**dim)
    # owned coarse cells: each lattice id owned by exactly one rank, covering all
    _, lattice = hier.owned_coarse_cells
    all_ids = np.sort(np.concatenate(comm.allgather(lattice)))
    assert np.array_equal(all_ids, np.arange(hier.num_coarse_cells))
    # the coarse mesh's own cells agree with the lattice description
    local, lattice = hier.owned_coarse_cells
    cgeom = hier.coarse.geometry.x[:, :dim]
    cdofmap = hier.coarse.geometry.dofmaps[0] if hasattr(hier.coarse.geometry, "dofmaps") \
        else hier.coarse.geometry.dofmap
    for c, lid in zip(local, lattice):
        mine = np.sort(cgeom[cdofmap[c]], axis=0)
        assert np.allclose(mine, np.sort(hier.coarse_vertices(lid), axis=0))


def test_fine_dofs_of_coarse_cell(comm):
    hier = msfem.StructuredHierarchy(comm, 2, 4, "quadrilateral")
    V = dolfinx.fem.functionspace(hier.fine, ("Lagrange", 1))
    total = 0
    for cell in range(hier.num_coarse_cells):
        dofs = hier.fine_dofs(V, cell)
        owned = dofs[dofs < V.dofmap.index_map.size_local]
        total += comm.allreduce(len(owned), op=MPI.SUM)
    # 4 cells of 5x5 nodes, shared edges counted twice, the centre 4 times
    assert total == 4 * 25


def test_patches_and_oversampling_conventions(comm):
    hier = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    assert Oversampling(coarse_layers=1).layers(8) == 8
    assert Oversampling(ratio=2.0).layers(8) == 4
    assert Oversampling(fine_layers=3).layers(8) == 3
    interior = hier.locate_coarse(np.array([[0.3], [0.3], [0.0]]))[0]
    p = hier.patch(interior, 8)
    assert p.shape == (24, 24) and p.offset == (8, 8)
    assert len(hier.patch_coarse_cells(p)) == 9
    corner = hier.locate_coarse(np.array([[0.1], [0.1], [0.0]]))[0]
    p = hier.patch(corner, 8)
    assert p.shape == (16, 16) and p.clipped == ((True, False), (True, False))
    assert len(hier.patch_coarse_cells(p)) == 4
    with pytest.raises(ValueError, match="only one"):
        Oversampling(coarse_layers=1, ratio=2)


@pytest.mark.parametrize("M", [0, 1.5, -2, True])
def test_bad_M_refused(comm, M):
    with pytest.raises(ValueError, match="positive integer"):
        msfem.StructuredHierarchy(comm, 4, M)


@pytest.mark.parametrize("script,levels", [("meshes/lshape.py", 2),
                                           ("meshes/plate_with_holes.py", 1)])
def test_refined_gmsh_hierarchy(comm, script, levels):
    import os

    path = os.path.join(os.path.dirname(__file__), "..", script)
    hier = msfem.RefinedHierarchy.from_gmsh(path, levels, comm)
    tdim = hier.dim
    nc = hier.coarse.topology.index_map(tdim).size_global
    nf = hier.fine.topology.index_map(tdim).size_global
    assert nf == nc * 4**levels
    # every fine midpoint lies in its parent coarse cell (straight-sided: exact)
    n_owned = hier.fine.topology.index_map(tdim).size_local
    mid = dolfinx.mesh.compute_midpoints(hier.fine, tdim, np.arange(n_owned, dtype=np.int32))
    cgeom = hier.coarse.geometry.x
    cdofmap = hier.coarse.geometry.dofmaps[0]
    for c in range(n_owned):
        verts = cgeom[cdofmap[hier.fine_to_coarse[c]]][:, :2]
        assert _inside(mid[c:c + 1, :2], verts, True)
    assert len(hier.patch_coarse_cells(0, 1)) > 1


def test_missing_gmsh_file(comm):
    with pytest.raises(FileNotFoundError, match="nope.msh"):
        msfem.RefinedHierarchy.from_gmsh("meshes/nope.msh", 1, comm)
