"""L-shaped domain (0,1)^2 minus [0.5,1]x[0.5,1], coarse triangles of size ~0.25.

Used by ``msfem.RefinedHierarchy.from_gmsh("meshes/lshape.py", levels)``.
"""

H = 0.25


def build(gmsh):
    """Add the meshed L-shape to the current gmsh model (2D, physical group 1)."""
    occ = gmsh.model.occ
    square = occ.addRectangle(0, 0, 0, 1, 1)
    corner = occ.addRectangle(0.5, 0.5, 0, 0.5, 0.5)
    occ.cut([(2, square)], [(2, corner)])
    occ.synchronize()
    surfaces = [s[1] for s in gmsh.model.getEntities(2)]
    gmsh.model.addPhysicalGroup(2, surfaces, 1)
    gmsh.option.setNumber("Mesh.CharacteristicLengthMax", H)
    gmsh.model.mesh.generate(2)
    return 2
