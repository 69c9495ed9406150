"""The literate demos (``demos/*.py``) as tests, and the pictures they draw.

Every demo runs in its fast setting (``MSFEM_DEMO_FAST=1``) in-process with ``runpy``:
in the serial pass on one rank, in the MPI pass of the suite on every rank at once (the
demos are collective), with its figures written by rank 0 into a directory shared by the
ranks. A demo checks its own numbers with ``assert``; here we also check that it wrote
its figures.
"""

import gc
import runpy
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import msfem
import msfem.plot

DEMOS = sorted((Path(__file__).resolve().parents[1] / "demos").glob("demo_*.py"))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _release_meshes():
    """Free each demo's objects at once: their COMM_SELF meshes hold MPI communicators."""
    yield
    gc.collect()


def _pngs(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.png"))


def _is_png(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG and path.stat().st_size > 1000


def test_there_are_demos():
    assert len(DEMOS) >= 5, DEMOS


@pytest.mark.parametrize("demo", DEMOS, ids=lambda p: p.stem)
def test_demo_is_literate(demo):
    """Jupytext percent format: a Markdown title cell first; a fast setting; a checked number."""
    text = demo.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# %% [markdown]" and lines[1].startswith("# # "), lines[:2]
    assert "MSFEM_DEMO_FAST" in text and "MSFEM_DEMO_OUT" in text
    assert "\nassert " in text


@pytest.mark.parametrize("demo", DEMOS, ids=lambda p: p.stem)
def test_demo_runs(demo, shared_tmp, monkeypatch):
    monkeypatch.setenv("MSFEM_DEMO_FAST", "1")
    monkeypatch.setenv("MSFEM_DEMO_OUT", str(shared_tmp))
    runpy.run_path(str(demo), run_name="__main__")  # its asserts are the test
    MPI.COMM_WORLD.barrier()
    pictures = _pngs(shared_tmp)
    assert pictures, f"{demo.name} wrote no figure"
    assert all(_is_png(p) for p in pictures), pictures
    assert not list(shared_tmp.rglob(".*.tmp.png"))  # atomic writes leave no temporaries


# ------------------------------------------------------------------- msfem.plot pictures
@pytest.fixture(scope="module")
def houwu_linear():
    hierarchy = msfem.StructuredHierarchy(MPI.COMM_WORLD, 4, 8, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=-1.0)
    space = msfem.MultiscaleSpace(hierarchy, problem, "linear").build()
    return hierarchy, problem, space


def test_basis_function_is_nodal_and_sums_to_one(houwu_linear):
    """φ_i(x_k) = δ_ik: the basis function of the centre vertex is 1 there, 0 at the others,
    and N_i is the coarse hat."""
    hierarchy, _, space = houwu_linear
    basis = msfem.plot.basis_function(space)
    assert np.allclose(basis.vertex, [0.5, 0.5]) and np.allclose(basis.spacing, [0.25, 0.25])
    V = basis.phi.function_space
    x = V.tabulate_dof_coordinates()[:, :2]
    coarse = np.all(np.isclose(np.mod(x / 0.25 + 0.5, 1.0), 0.5), axis=1)  # coarse vertices
    at_xi = np.all(np.isclose(x, [0.5, 0.5]), axis=1)
    for f in (basis.phi, basis.hat):
        assert np.allclose(f.x.array[at_xi], 1.0, atol=1e-12)
        assert np.allclose(f.x.array[coarse & ~at_xi], 0.0, atol=1e-12)
    hat = np.prod(np.maximum(0.0, 1 - np.abs(x - 0.5) / 0.25), axis=1)  # the Q1 hat
    assert np.allclose(basis.hat.x.array, hat, atol=1e-12)
    other = msfem.plot.basis_function(space, vertex=(0.3, 0.7))  # the nearest vertex
    assert np.allclose(other.vertex, [0.25, 0.75])


def test_pictures_are_written_by_rank_0(houwu_linear, shared_tmp):
    hierarchy, problem, space = houwu_linear
    reference = msfem.solve_fine(hierarchy.fine, problem)
    u_ms = msfem.solve_coarse(space).reconstruct()
    assert msfem.plot.plot_error_field(shared_tmp / "error.png", [reference.u, u_ms],
                                       title="linear, H = 1/4, ε = 1/4")
    basis = msfem.plot.basis_function(space)
    assert msfem.plot.plot_basis_function(shared_tmp / "basis.png", basis,
                                          coarse_mesh=hierarchy.coarse)
    MPI.COMM_WORLD.barrier()
    assert _is_png(shared_tmp / "error.png") and _is_png(shared_tmp / "basis.png")


def test_pictures_in_1d_and_of_vector_fields(shared_tmp):
    comm = MPI.COMM_WORLD
    line = msfem.StructuredHierarchy(comm, 4, 16, "interval")
    problem = msfem.diffusion(msfem.Periodic(lambda y, ns: 2 + ns.sin(2 * ns.pi * y[0]), 1 / 4))
    space = msfem.MultiscaleSpace(line, problem, "linear").build()
    u = msfem.solve_coarse(space).reconstruct()
    reference = msfem.solve_fine(line.fine, problem)
    msfem.plot.plot_error_field(shared_tmp / "line_error.png", [reference.u, u])
    msfem.plot.plot_basis_function(shared_tmp / "line_basis.png", msfem.plot.basis_function(space))
    plate = msfem.StructuredHierarchy(comm, 2, 8, "triangle")
    solid = msfem.elasticity(msfem.HouWu(eps=1 / 2), nu=0.3)
    space = msfem.MultiscaleSpace(plate, solid, "linear").build()
    u = msfem.solve_coarse(space).reconstruct()
    reference = msfem.solve_fine(plate.fine, solid)
    msfem.plot.plot_error_field(shared_tmp / "vector_error.png", [reference.u, u])
    msfem.plot.plot_error_field(shared_tmp / "vector_error_y.png", [reference.u, u], component=1)
    basis = msfem.plot.basis_function(space, component=1)
    msfem.plot.plot_basis_function(shared_tmp / "vector_basis.png", basis)
    comm.barrier()
    for name in ("line_error", "line_basis", "vector_error", "vector_error_y", "vector_basis"):
        assert _is_png(shared_tmp / f"{name}.png"), name


def test_bad_picture_requests_are_refused(houwu_linear, shared_tmp):
    hierarchy, problem, space = houwu_linear
    u = msfem.solve_fine(hierarchy.fine, problem).u
    with pytest.raises(ValueError, match="two functions|u_ref, u"):
        msfem.plot.plot_error_field(shared_tmp / "x.png", [u])
    coarse_u = msfem.solve_coarse(space).U
    with pytest.raises(ValueError, match="same mesh"):
        msfem.plot.plot_error_field(shared_tmp / "x.png", [u, coarse_u])
    with pytest.raises(ValueError, match="component"):
        msfem.plot.basis_function(space, component=1)
    unbuilt = msfem.MultiscaleSpace(hierarchy, problem, "linear")
    with pytest.raises(ValueError, match="built"):
        msfem.plot.basis_function(unbuilt)
    cube = msfem.StructuredHierarchy(MPI.COMM_WORLD, 1, 2, "hexahedron")
    v = msfem.solve_fine(cube.fine, msfem.diffusion(1.0)).u
    with pytest.raises(ValueError, match="3D"):
        msfem.plot.plot_error_field(shared_tmp / "x.png", [v, v])
