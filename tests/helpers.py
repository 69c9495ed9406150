"""Small shared helpers for the tests."""

from pathlib import Path

import numpy as np
from mpi4py import MPI

#: Hou & Wu (1997) eq. 4.1 at toy size: 4 x 4 coarse cells of 8 x 8 fine cells, eps = 1/4
#: (resolved: 8 fine cells per eps).
TOY_CONFIG = """
[mesh]
N = 4
M = 8

[coefficient]
type = "hou-wu"
eps = 0.25
"""


def fitted_rate(h, err):
    """Slope of log(err) against log(h) (least squares)."""
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])


#: The laminate of the FE² tests (a1 = 1, a2 = 10, layers normal to y1, fraction 1/2) and
#: its exact homogenized tensor A* = diag(harmonic mean, arithmetic mean).
A1, A2 = 1.0, 10.0
A_STAR = np.diag([1 / (0.5 / A1 + 0.5 / A2), 0.5 * (A1 + A2)])
NONLINEAR = {"a1": A1, "a2": A2, "beta": 1.0}


def write_text_config(directory: Path, text: str, name: str = "case.toml") -> Path:
    """Write a config file on rank 0 into a directory shared by all ranks."""
    path = directory / name
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(text)
    MPI.COMM_WORLD.barrier()
    return path


def homogenized_q1(V, A_star, f, prefix="test_hom_"):
    """The Q1 solution of -div(A* grad u) = f, u = 0 on the boundary, 2 x 2 Gauss rule.

    ``V`` is a Q1 space (e.g. a multiscale method's coarse space), ``A_star`` a constant
    matrix, ``f`` a UFL expression or a number.
    """
    import dolfinx
    import dolfinx.fem.petsc
    import ufl

    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    dx = ufl.dx(metadata={"quadrature_degree": 3})
    tdim = V.mesh.topology.dim
    V.mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(V.mesh.topology)
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, tdim - 1,
                                                                           facets), V)
    problem = dolfinx.fem.petsc.LinearProblem(
        ufl.inner(ufl.as_matrix(np.asarray(A_star).tolist()) * ufl.grad(u), ufl.grad(v)) * dx,
        f * v * dx, bcs=[bc], petsc_options_prefix=prefix,
        petsc_options={"ksp_type": "preonly", "pc_type": "lu",
                       "pc_factor_mat_solver_type": "mumps"})
    return problem.solve()


#: The mesh, coefficient and problem of Hou & Wu (1997) Table II at N = 16 (ε = 0.04,
#: P = 1.8, f = -1); study configs append their ``[study]`` table.
HOUWU_TABLE_II_N16 = """
[mesh]
cell = "quadrilateral"

[coefficient]
type = "hou-wu"
eps = 0.04
P = 1.8

[problem]
type = "diffusion"
f = -1.0
"""
