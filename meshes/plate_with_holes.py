"""Unit square plate with four circular holes (radius 0.1), coarse triangles of size ~0.2."""

from msfem.gmsh_io import mesh_surfaces

H = 0.2


def build(gmsh):
    """Add the meshed perforated plate to the current gmsh model (2D, physical group 1)."""
    occ = gmsh.model.occ
    plate = occ.addRectangle(0, 0, 0, 1, 1)
    holes = [occ.addDisk(x, y, 0, 0.1, 0.1) for x in (0.3, 0.7) for y in (0.3, 0.7)]
    occ.cut([(2, plate)], [(2, h) for h in holes])
    return mesh_surfaces(gmsh, H)
