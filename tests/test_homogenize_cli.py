"""``msfem homogenize`` and ``msfem rve`` in-process: oracles of REFERENCES.md §5, files, errors.

Runs in serial and under ``mpiexec -n 2 python -m mpi4py -m pytest``: every rank calls
``main`` with the same (rank 0's) files; stdout (the JSON object, the table) and the
error messages come from rank 0 only, so the other ranks must print nothing.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import write_text_config
from mpi4py import MPI

from msfem.cli import EXIT_ERROR, main
from msfem.homogenization import bounds

COMM = MPI.COMM_WORLD


pytestmark = pytest.mark.usefixtures("restore_msfem_logging")


write_config = write_text_config


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def homogenize_json(capsys, path: Path) -> dict:
    """Run ``homogenize --json``; rank 0 printed exactly one JSON line, the others nothing."""
    status, out, _ = run(capsys, "homogenize", path, "--json")
    assert status == 0
    data = None
    if COMM.rank == 0:
        assert out.count("\n") == 1 and out.endswith("\n")
        data = json.loads(out)
    else:
        assert out == ""
    return COMM.bcast(data, root=0)


def leftovers(out: Path) -> list[str]:
    """Partial/backup siblings that atomic_directory must never leave behind."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


# ------------------------------------------------------------------------ homogenize
@pytest.mark.parametrize("direction, cell_type", [(0, "triangle"), (1, "quadrilateral")])
def test_laminate_gives_arithmetic_along_and_harmonic_across(capsys, shared_tmp, direction,
                                                             cell_type):
    # layers y_direction < 1/4 of a2 = 10 in a1 = 1 on mesh lines: P1 is exact.
    path = write_config(shared_tmp, f"""
[cell]
physics = "conductivity"
microstructure = "laminate"
a1 = 1.0
a2 = 10.0
fraction = 0.25
direction = {direction}
n = 8
cell_type = "{cell_type}"
""")
    data = homogenize_json(capsys, path)
    A = np.array(data["effective_tensor"])
    arithmetic, harmonic = 0.25 * 10 + 0.75 * 1, 1 / (0.25 / 10 + 0.75 / 1)
    along = 1 - direction
    assert A[along, along] == pytest.approx(arithmetic, rel=1e-8)
    assert A[direction, direction] == pytest.approx(harmonic, rel=1e-8)
    assert abs(A[0, 1]) < 1e-8 and abs(A[1, 0]) < 1e-8
    assert np.allclose(data["flux_tensor"], A, atol=1e-8)
    assert data["energy_flux_defect"] < 1e-8
    assert data["volume_fraction"] == {"requested": 0.25, "mesh": pytest.approx(0.25)}
    assert data["bounds"]["voigt"] == pytest.approx(arithmetic, rel=1e-12)
    assert data["bounds"]["reuss"] == pytest.approx(harmonic, rel=1e-12)
    assert "hashin_shtrikman" not in data["bounds"]  # a laminate is not isotropic
    assert data["bound_violations"] == {"voigt": 0.0, "reuss": 0.0}
    assert data["reference"]["laminate"]["relative_error"] < 1e-8
    assert data["config"]["cell"]["direction"] == direction


def test_checkerboard_lies_between_the_hashin_shtrikman_bounds(capsys, shared_tmp):
    # Observed A* = 3.4442 I (n = 16, P1): inside HS [2.38462, 4.19355], 8.9% above Dykhne's
    # sqrt(10) = 3.16228 (a conforming FE energy converges from above, slowly: corner
    # singularities).
    path = write_config(shared_tmp, """
[cell]
microstructure = "checkerboard"
a1 = 1.0
a2 = 10.0
n = 16
""")
    data = homogenize_json(capsys, path)
    lo, hi = data["bounds"]["hashin_shtrikman"]
    assert (lo, hi) == pytest.approx((2.38462, 4.19355), abs=1e-5)
    A = np.array(data["effective_tensor"])
    assert lo < A[0, 0] < hi and lo < A[1, 1] < hi
    assert A[0, 0] == pytest.approx(A[1, 1], rel=1e-10)  # square symmetry: isotropic
    assert all(v == 0.0 for v in data["bound_violations"].values())
    dykhne = data["reference"]["dykhne"]
    assert dykhne["value"] == pytest.approx(math.sqrt(10.0))
    assert dykhne["computed"] >= dykhne["value"]
    assert dykhne["relative_error"] < 0.1


def test_disc_cell_matches_perrins(capsys, shared_tmp):
    # gmsh periodic disc cell (size 0.1, P2 geometry), P2 correctors, s = 10, f = 0.3.
    path = write_config(shared_tmp, """
[cell]
microstructure = "disc"
a1 = 1.0
a2 = 10.0
fraction = 0.3
n = 10
degree = 2
""")
    data = homogenize_json(capsys, path)
    assert data["volume_fraction"]["mesh"] == pytest.approx(0.3, abs=1e-4)
    perrins = data["reference"]["perrins"]
    assert perrins["value"] == pytest.approx(1.65204, abs=1e-4)
    assert perrins["relative_error"] < 1e-3
    assert data["bound_violations"]["hashin_shtrikman"] == 0.0


def test_equal_shear_laminate_elasticity_is_hill_exact(capsys, shared_tmp):
    # mu = 1 in both phases: k* = 1/(f/(k2+mu) + (1-f)/(k1+mu)) - mu for any geometry,
    # and C* is isotropic; P1 is exact for layers on mesh lines.
    path = write_config(shared_tmp, """
[cell]
physics = "elasticity"
microstructure = "laminate"
k1 = 1.0
mu1 = 1.0
k2 = 10.0
mu2 = 1.0
fraction = 0.25
n = 4
""")
    data = homogenize_json(capsys, path)
    k_star = bounds.hill_equal_shear(1.0, 10.0, 1.0, 0.25)
    assert data["moduli"]["bulk"] == pytest.approx(k_star, rel=1e-8)
    assert data["moduli"]["shear_1"] == pytest.approx(1.0, rel=1e-8)
    assert data["moduli"]["shear_2"] == pytest.approx(1.0, rel=1e-8)
    assert data["reference"]["hill_equal_shear"]["relative_error"] < 1e-8
    assert data["bound_violations"] == {"voigt": 0.0, "reuss": 0.0}
    assert np.array(data["effective_tensor"]).shape == (3, 3)


def test_table_output_of_a_hou_wu_cell(capsys, shared_tmp):
    path = write_config(shared_tmp, """
[cell]
microstructure = "hou-wu"
P = 1.8
n = 16
""")
    status, out, err = run(capsys, "homogenize", path)
    assert status == 0
    if COMM.rank == 0:
        for text in ("effective tensor (energy)", "flux tensor", "energy-flux defect",
                     "Voigt (arithmetic)", "Reuss (harmonic)", "inside"):
            assert text in out
        assert "[msfem] homogenize" in err  # the log goes to stderr
    else:
        assert out == ""


# ------------------------------------------------------------------------------- rve
def test_rve_writes_csv_json_figures_with_huet_ordering(capsys, shared_tmp):
    path = write_config(shared_tmp, """
[rve]
window_sizes = [3, 2]
realisations = 2
a1 = 1.0
a2 = 10.0
fraction = 0.5
elements_per_cell = 2
precision = 0.05
bcs = ["kubc", "pbc", "subc"]
seed = 3
""")
    out = shared_tmp / "rve"
    status, stdout, _ = run(capsys, "rve", path, "--out", out)
    assert status == 0
    assert stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["rve.csv", "rve.json", "rve.pdf",
                                                     "rve.png"]
    assert (out / "rve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "rve.pdf").read_bytes()[:5] == b"%PDF-"
    lines = (out / "rve.csv").read_text().splitlines()
    assert lines[0] == "window,bc,mean,std,eps_rel,n"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 6
    mean = {(int(r[0]), r[1]): float(r[2]) for r in rows}
    for size in (2, 3):
        assert mean[size, "kubc"] >= mean[size, "pbc"] >= mean[size, "subc"]
    summary = json.loads((out / "rve.json").read_text())
    assert summary["window_sizes"] == [2, 3]
    assert summary["ordering_kubc_ge_pbc_ge_subc"] == [True, True]
    assert set(summary["rve_size"]) == {"kubc", "pbc", "subc"}
    assert summary["reference"]["effective_dykhne"] == pytest.approx(math.sqrt(10.0))
    for bc in ("kubc", "pbc", "subc"):
        assert summary["bcs"][bc]["mean"] == pytest.approx([mean[2, bc], mean[3, bc]])
        assert summary["bcs"][bc]["hill_mandel_residual"] < 1e-10
    assert leftovers(out) == []


# ------------------------------------------------------------------------- bad input
LAMINATE = """
[cell]
microstructure = "laminate"
a1 = 1.0
a2 = 10.0
n = 4
"""


@pytest.mark.parametrize("text, message", [
    (LAMINATE + "colour = 1\n", "unknown key 'colour' in [cell]; accepted keys"),
    (LAMINATE + "P = 1.0\n", "key 'P' does not apply to microstructure 'laminate'"),
    (LAMINATE.replace("n = 4", 'n = "four"'), "[cell] n = 'four' must be an integer"),
    (LAMINATE.replace("a1 = 1.0", "a1 = -1.0"), "[cell] a1 = -1.0 must be positive"),
    (LAMINATE + "[mesh]\nN = 4\n", "unknown section [mesh]; accepted sections: [cell], "
                                   "[solver]"),
    (LAMINATE.replace('"laminate"', '"checkerboard"').replace("n = 4", "n = 5"),
     "must be even"),
    (LAMINATE.replace('"laminate"', '"disc"') + "fraction = 0.9\n", "fraction = 0.9"),
    ('[cell]\nmicrostructure = "hou-wu"\nphysics = "elasticity"\n', "conductivity"),
    ('[cell]\nphysics = "elasticity"\nmicrostructure = "inclusion"\nk1 = 1.0\nmu1 = 1.0\n'
     'k2 = 2.0\n', "needs key 'mu2'"),
])
def test_bad_homogenize_input_exits_2_naming_the_key(capsys, shared_tmp, text, message):
    path = write_config(shared_tmp, text)
    status, out, err = run(capsys, "homogenize", path, "--json")
    assert status == EXIT_ERROR
    assert out == ""
    if COMM.rank == 0:
        assert err.startswith("msfem: error: ")
        assert message in err


RVE = """
[rve]
window_sizes = [2]
realisations = 2
elements_per_cell = 2
"""


@pytest.mark.parametrize("text, message", [
    (RVE.replace("[rve]", "[rve]\na2 = -10.0"), "[rve] a2 = -10.0 must be positive"),
    (RVE + "windows = [2]\n", "unknown key 'windows' in [rve]"),
    (RVE.replace("realisations = 2", "realisations = 1"), "at least 2"),
    (RVE + 'bcs = ["kubc", "dirichlet"]\n', "bcs"),
    (RVE.replace("[2]", "[0, 2]"), "positive integers"),
])
def test_bad_rve_input_exits_2_and_leaves_no_directory(capsys, shared_tmp, text, message):
    path = write_config(shared_tmp, text)
    out = shared_tmp / "rve_bad"
    status, _, err = run(capsys, "rve", path, "--out", out)
    assert status == EXIT_ERROR
    if COMM.rank == 0:
        assert message in err
    assert not out.exists()
    assert leftovers(out) == []


def test_rve_out_that_is_a_file_is_refused_before_computing(capsys, shared_tmp):
    path = write_config(shared_tmp, RVE)
    out = write_config(shared_tmp, "not a directory", name="occupied")
    status, _, err = run(capsys, "rve", path, "--out", out)
    assert status == EXIT_ERROR
    if COMM.rank == 0:
        assert "is not a directory" in err
    assert out.read_text() == "not a directory"
