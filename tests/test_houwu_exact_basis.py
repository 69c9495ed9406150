"""Hou & Wu (1997) Table II: exact-basis columns and the lean, reusable study reference.

With msfem's Galerkin coarse matrix on the paper's sub-grid (M = 16) MFEM-O is worse than
the fine LFEM on that sub-grid; with its basis on a sub-grid refined r times
(``basis_refinement``, same coarse mesh and reference) it falls below it, as does the
paper's oversampling -- the error of the method itself.
"""

import math

import numpy as np
import pytest
from helpers import HOUWU_TABLE_II_N16, write_text_config
from mpi4py import MPI

import msfem
from msfem.config import ConfigError
from msfem.mesh import Oversampling
from msfem.studies import load_plan, run_study
from msfem.studies import run as study_run
from msfem.studies.plan import PatchSpec
from msfem.studies.reference import compute_reference, load_reference, save_reference

MUMPS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}

#: the paper's oversampling (one 256 x 256 sampling region: the domain at N = 16) on h_s/2
OVERSAMPLING = ('{ name = "MFEM-os-exact", method = "oversampling", boundary = "oscillatory", '
                'oversampling = [{ sampling_region = 256 }], basis_refinement = 2 }')

TABLE_II_N16 = HOUWU_TABLE_II_N16 + """
[study]
name = "Hou-Wu Table II, N = 16, exact-basis columns"
H_over_eps = 1.5625
N = [16]
M = 16
methods = [
    { name = "MFEM-O", method = "oscillatory" },
    { name = "MFEM-O-exact", method = "oscillatory", basis_refinement = 2 },
    OVERSAMPLING,
    { name = "LFEM", method = "fine" },
]
reference = "richardson"
reference_factor = 1
reference_cache = "CACHE"
metrics = ["nodal_l2"]
figures = false
""".replace("OVERSAMPLING", OVERSAMPLING)


@pytest.mark.usefixtures("restore_msfem_logging")
def test_exact_basis_falls_below_the_sub_grid_fem(shared_tmp, monkeypatch):
    cache = shared_tmp / "cache"
    config = write_text_config(shared_tmp, TABLE_II_N16.replace("CACHE", str(cache)),
                               "exact.toml")
    rows = run_study(config, shared_tmp / "out")
    got = {r["method"]: r for r in rows}
    lfem = got["LFEM"]["nodal_l2"]
    assert lfem == pytest.approx(1.347e-4, rel=2e-3)  # the paper's 1.34e-4
    # Galerkin on the paper's sub-grid inherits its error: above the fine LFEM
    assert got["MFEM-O"]["nodal_l2"] == pytest.approx(1.868e-4, rel=2e-3)
    # the same method with its basis on h_s/2: the method's own error, below the LFEM
    assert got["MFEM-O-exact"]["nodal_l2"] == pytest.approx(8.653e-5, rel=2e-3)
    assert got["MFEM-os-exact"]["nodal_l2"] == pytest.approx(4.592e-5, rel=2e-3)
    assert got["MFEM-os-exact"]["nodal_l2"] < 0.4 * lfem
    assert got["MFEM-O-exact"]["M"] == 16  # the case is the study's, not the refined grid
    assert math.isnan(got["MFEM-O-exact"]["l2_rel"])  # nodal errors only
    if MPI.COMM_WORLD.rank == 0:
        report = (shared_tmp / "out" / "report.md").read_text()
        assert "sub-grid 2× finer" in report and "peak resident memory" in report

    # a second study on the same grid loads the stored reference instead of solving
    calls = []
    monkeypatch.setattr(study_run, "compute_reference",
                        lambda *a, **k: calls.append(1) or compute_reference(*a, **k))
    again = run_study(config, shared_tmp / "again")
    assert calls == []
    # the same numbers up to round-off (NumPy's SIMD reductions may round differently for
    # the same data at another memory alignment: one 2-rank run differed by 4e-16)
    assert [r["nodal_l2"] for r in again] == pytest.approx([r["nodal_l2"] for r in rows],
                                                           rel=1e-12)


def test_patch_sizes_in_fine_cells_scale_with_the_basis_refinement():
    assert PatchSpec("sampling_region", 128).oversampling(16, 4) == \
        Oversampling(sampling_region=512)
    assert PatchSpec("patch_fine_cells", 48).oversampling(16, 2) == Oversampling(fine_layers=32)
    assert PatchSpec("fine_layers", 3).oversampling(16, 4) == Oversampling(fine_layers=12)
    assert PatchSpec("coarse_layers", 1).oversampling(16, 4) == Oversampling(coarse_layers=1)


@pytest.mark.parametrize("entry, match", [
    ('{ method = "oscillatory", basis_refinement = 0 }', "basis_refinement = 0 must be"),
    ('{ method = "oscillatory", basis_refinement = 1.5 }', "basis_refinement = 1.5 must be"),
    ('{ method = "oscillatory", basis_refinement = true }', "basis_refinement = True must"),
    ('{ method = "fine", basis_refinement = 2 }', "has no multiscale basis"),
    ('{ method = "linear", N = [0] }', "N = \\[0\\] must be a positive integer"),
    ('{ method = "linear", N = [64] }', "matches no case"),
])
def test_bad_exact_basis_entries_are_refused_before_computing(shared_tmp, entry, match):
    text = TABLE_II_N16.replace('reference_cache = "CACHE"\n', "")
    start, end = text.index("methods = ["), text.index("reference =")
    text = text[:start] + f"methods = [{entry}]\n" + text[end:]
    config = write_text_config(shared_tmp, text, "bad.toml")
    with pytest.raises(ConfigError, match=match):
        load_plan(config)


def test_method_restricted_to_some_N_runs_only_there(shared_tmp):
    text = TABLE_II_N16.replace("N = [16]", "N = [16, 32]")
    methods = '[{ method = "linear" }, { name = "exact", method = "linear", N = [16] }]'
    start, end = text.index("methods = ["), text.index("reference =")
    config = write_text_config(shared_tmp, text[:start] + f"methods = {methods}\n" + text[end:],
                               "subset.toml")
    plan = load_plan(config)
    keys = [k[0] for case in plan.cases for k in plan.case_keys(case)]
    assert keys == ["linear", "exact", "linear"]


def test_richardson_reference_is_the_extrapolation_of_two_fine_solves(comm, tmp_path):
    """The lean reference: values on the sub-grid lattice, (4 u_{h/2} - u_h) / 3."""
    problem = msfem.diffusion(msfem.HouWu(eps=1.0), f=1.0)
    kw = {"petsc_options": MUMPS}
    plain = compute_reference(comm, problem, 8, "quadrilateral", factor=1, **kw)
    half = compute_reference(comm, problem, 8, "quadrilateral", factor=2, **kw)
    rich = compute_reference(comm, problem, 8, "quadrilateral", kind="richardson", factor=1,
                             **kw)
    assert rich.values.shape == (81, 1)
    assert np.allclose(rich.values, (4 * half.values - plain.values) / 3, rtol=0, atol=1e-13)
    assert rich.num_dofs == 9**2 + 17**2  # the solves on h = 1/8 and 1/16
    assert np.allclose(rich.at(np.array([[0.5, 0.5]])), rich.values[4 + 9 * 4])

    path = MPI.COMM_WORLD.bcast(tmp_path, root=0) / "ref.npz"
    save_reference(rich, path, comm)
    bounds = (np.zeros(2), np.ones(2))
    loaded = load_reference(path, comm, 8, 1, bounds)
    assert loaded is not None and np.array_equal(loaded.values, rich.values)
    assert loaded.kind == "richardson" and loaded.seconds == rich.seconds
    assert load_reference(path, comm, 16, 1, bounds) is None  # another grid: not taken
