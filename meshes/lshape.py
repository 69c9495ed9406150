"""L-shaped domain (0,1)^2 minus [0.5,1]x[0.5,1], coarse triangles of size ~0.25.

Used by ``msfem.RefinedHierarchy.from_gmsh("meshes/lshape.py", levels)``.
"""

from msfem.gmsh_io import mesh_surfaces

H = 0.25


def build(gmsh):
    """Add the meshed L-shape to the current gmsh model (2D, physical group 1)."""
    occ = gmsh.model.occ
    square = occ.addRectangle(0, 0, 0, 1, 1)
    corner = occ.addRectangle(0.5, 0.5, 0, 0.5, 0.5)
    occ.cut([(2, square)], [(2, corner)])
    return mesh_surfaces(gmsh, H)
