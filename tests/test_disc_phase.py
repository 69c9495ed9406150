"""The disc cell tags the disc as phase 2 at every area fraction, also above 1/2.

Before the fix ``disc_cell`` took the smaller of the two surfaces as the disc, so at
f = 0.6 the "disc" phase covered 0.4 of the cell. Oracle: the Perrins--McKenzie--McPhedran
formula for a square array of discs (REFERENCES.md §5). Runs in serial and under
``mpiexec -n 2``.
"""

import json
import math

import pytest
import ufl
from helpers import write_text_config
from mpi4py import MPI

from msfem.cli import main
from msfem.homogenization.periodic import disc_cell
from msfem.homogenization.unit_cell import cell_mean, tagged_constant

COMM = MPI.COMM_WORLD
pytestmark = pytest.mark.usefixtures("restore_msfem_logging")


def perrins(f: float, s: float) -> float:
    """k*/k_m of a square array of discs of fraction f and contrast s (REFERENCES.md §5)."""
    T = (1 + s) / (1 - s)
    return 1 - 2 * f / (T + f - 0.305827 * f**4 * T / (T**2 - 1.402958 * f**8)
                        - 0.013362 * f**8 / T)


def test_perrins_formula_reproduces_the_published_values():
    assert perrins(0.3, 10.0) == pytest.approx(1.65204, abs=1e-5)
    assert perrins(0.2, 0.1) == pytest.approx(0.71867, abs=1e-5)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.75])
def test_the_tagged_disc_has_the_requested_area(fraction):
    mesh, tags = disc_cell(COMM, fraction, mesh_size=1 / 8)
    chi = tagged_constant(mesh, tags, {1: 0.0, 2: 1.0}, name="chi_2")
    assert cell_mean(mesh, chi) == pytest.approx(fraction, abs=1e-5)
    # and it is the disc of radius r = sqrt(f/pi) centred at (1/2, 1/2):
    # its second moment is pi r^4 / 4 = f^2 / (4 pi), the matrix's 1/12 minus that
    x = ufl.SpatialCoordinate(mesh)
    assert cell_mean(mesh, chi * (x[0] - 0.5) ** 2) == pytest.approx(
        fraction**2 / (4 * math.pi), abs=1e-5)


def test_disc_array_at_fraction_0_6_matches_perrins(shared_tmp, capsys):
    path = write_text_config(shared_tmp, """
[cell]
physics = "conductivity"
microstructure = "disc"
a1 = 1.0
a2 = 10.0
fraction = 0.6
n = 8
degree = 2
""")
    assert main(["homogenize", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    data = COMM.bcast(json.loads(out) if COMM.rank == 0 else None, root=0)
    assert data["volume_fraction"]["mesh"] == pytest.approx(0.6, abs=1e-5)
    k = data["effective_tensor"]
    assert k[0][0] == pytest.approx(k[1][1], rel=1e-5)  # square symmetry
    assert k[0][0] == pytest.approx(perrins(0.6, 10.0), rel=1e-3)
    assert k[0][0] == pytest.approx(3.03704, rel=1e-3)
