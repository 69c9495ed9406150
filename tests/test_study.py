"""Resonance-error studies (msfem.studies): signature, resume, MPI invariance, bad input.

Every test runs in serial and under ``mpirun -n 2`` (``python -m mpi4py -m pytest``).
The sweeps are reduced: eps = 1/8 on the fine grid h = eps/8 (NM = 64), so that the
O(H) error of the coarse space is still small enough at H = 2 eps to see the resonance
peak of REFERENCES.md §3 fall off on its right.
"""

import csv
import math
from pathlib import Path

import dolfinx
import numpy as np
import pytest
from mpi4py import MPI

import msfem
from msfem.config import ConfigError
from msfem.studies import load_plan, run_study
from msfem.studies import run as study_run
from msfem.studies.reference import compute_reference, reference_lattice
from msfem.transfer import LatticeNumbering

MUMPS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
TIMING = ("t_offline", "t_online", "t_reference", "ranks")


def _toml(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def write_config(path, study, coefficient=None, solver=None, extra=""):
    """A study configuration with the Hou-Wu coefficient (eps = 1/8 unless overridden)."""
    coefficient = coefficient or {"type": "hou-wu", "eps": 0.125}
    lines = ["[mesh]", 'cell = "quadrilateral"', "", "[coefficient]"]
    lines += [f"{k} = {_toml(v)}" for k, v in coefficient.items()]
    lines += ["", "[problem]", 'type = "diffusion"', "f = -1.0", ""]
    if solver:
        lines += ["[solver]"] + [f"{k} = {_toml(v)}" for k, v in solver.items()] + [""]
    lines += ["[study]"] + [f"{k} = {_toml(v)}" for k, v in study.items()]
    path = Path(path)
    if MPI.COMM_WORLD.rank == 0:
        path.write_text("\n".join(lines) + "\n" + extra)
    MPI.COMM_WORLD.barrier()
    return path


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def select(rows, **where):
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in where.items())]


SMALL = {"eps": 0.125, "NM": 64, "H_over_eps": [0.5, 1.0, 2.0],
         "methods": ["linear", "oversampling"], "oversampling": [1], "reference_factor": 2,
         "shared_reference": True}


def test_resonance_signature(shared_tmp):
    """Linear BC: nodal error peaks near H ~ eps and falls for H > eps; oversampling cuts it."""
    cfg = write_config(shared_tmp / "res.toml", dict(SMALL, H_over_eps=[0.25, 0.5, 1.0, 2.0],
                                                      methods=["linear", "oversampling",
                                                               "homogenized"]))
    rows = run_study(cfg, shared_tmp / "res")
    ratios = [0.25, 0.5, 1.0, 2.0]
    lin = [select(rows, method="linear", H_over_eps=r)[0] for r in ratios]
    ovs = [select(rows, method="oversampling", H_over_eps=r)[0] for r in ratios]
    e_lin = np.array([r["nodal_linf"] for r in lin])
    peak = int(np.argmax(e_lin))
    assert ratios[peak] in (0.5, 1.0), e_lin  # the peak sits near H = eps ...
    assert e_lin[0] < 0.9 * e_lin[peak] and e_lin[-1] < 0.7 * e_lin[peak], e_lin  # ... inside
    # oversampling lowers the peak: its largest nodal error for H <= eps is below half the
    # linear peak, and its energy error is lower at every H <= eps
    assert max(r["nodal_linf"] for r in ovs[:3]) < 0.5 * e_lin[peak]
    for o, li in zip(ovs[:3], lin[:3]):
        assert o["energy_rel"] < 0.75 * li["energy_rel"]
    # the homogenized u0 lives on the fine grid: its L2 error does not depend on H
    hom = [select(rows, method="homogenized", H_over_eps=r)[0]["l2_rel"] for r in ratios]
    assert max(hom) - min(hom) < 1e-10 * max(hom) and 0 < hom[0] < 0.2
    report = (shared_tmp / "res" / "report.md").read_text()
    assert "fig_resonance.png" in report and "error vs H at fixed ε" in report
    for name in ("fig_resonance.png", "fig_resonance.pdf", "results.csv"):
        assert (shared_tmp / "res" / name).stat().st_size > 0


class Killed(RuntimeError):
    pass


def test_resume_gives_identical_csv(shared_tmp):
    cfg = write_config(shared_tmp / "resume.toml", SMALL)
    full = read_rows_after(run_study, cfg, shared_tmp / "full")

    seen = []

    def kill_after_first(case):
        seen.append(case.index)
        raise Killed("simulated kill")

    with pytest.raises(Killed):
        run_study(cfg, shared_tmp / "killed", after_case=kill_after_first)
    partial = read_rows(shared_tmp / "killed" / "results.csv")
    assert len(partial) == 2 and not (shared_tmp / "killed" / "report.md").exists()

    resumed_cases = []
    run_study(cfg, shared_tmp / "killed", after_case=lambda c: resumed_cases.append(c.index))
    assert resumed_cases == [1, 2]  # case 0 was skipped
    resumed = read_rows(shared_tmp / "killed" / "results.csv")
    assert [r["method"] for r in resumed] == [r["method"] for r in full]
    for a, b in zip(full, resumed):
        assert a.keys() == b.keys()
        for k in a:
            if k in TIMING:
                continue
            try:
                assert math.isclose(float(a[k]), float(b[k]), rel_tol=1e-12, abs_tol=1e-15), k
            except ValueError:
                assert a[k] == b[k], k
    # the resumed case kept its first-run row verbatim
    assert resumed[:2] == partial


def read_rows_after(run, cfg, out):
    run(cfg, out)
    return read_rows(Path(out) / "results.csv")


def test_comm_self_and_world_agree(shared_tmp):
    """The same study on COMM_SELF (serial, one per rank) and on COMM_WORLD."""
    study = dict(SMALL, H_over_eps=[0.5, 1.0], methods=["fine", "linear", "petrov-galerkin"])
    cfg = write_config(shared_tmp / "mpi.toml", study, solver=MUMPS)
    rank = MPI.COMM_WORLD.rank
    serial = run_study(cfg, shared_tmp / f"self{rank}", comm=MPI.COMM_SELF)
    world = run_study(cfg, shared_tmp / "world", comm=MPI.COMM_WORLD)
    assert len(serial) == len(world) == 6
    for a, b in zip(serial, world):
        assert (a["method"], a["N"]) == (b["method"], b["N"])
        assert a["ranks"] == 1 and b["ranks"] == MPI.COMM_WORLD.size
        for k in ("nodal_linf", "nodal_l2", "l2_rel", "h1_rel", "energy_rel", "energy"):
            assert math.isclose(a[k], b[k], rel_tol=1e-10, abs_tol=1e-14), (a["method"], k)


BAD = [
    ({"epsilon": 0.125}, "epsilon"),  # unknown key
    ({"methods": [{"method": "linear", "layers": 1}]}, "layers"),  # unknown key in a method
    ({"coefficient": {"Q": [1.0, 2.0]}}, "'Q'"),  # unknown coefficient parameter
    ({"N": [8, 16], "M": 8, "H_over_eps": None, "NM": None}, "shared_reference"),  # N*M differs
    ({"methods": ["linear"], "oversampling": [1]}, "oversampling"),  # linear has none
    ({"methods": [{"method": "standard", "oversampling": 1}]}, "oversampling"),
    ({"NM": 32}, "unresolved"),  # h = 1/32 > eps/8
    ({"methods": ["linear", "MsFEM"]}, "MsFEM"),
]


@pytest.mark.parametrize("change, needle", BAD, ids=[b[1].strip("'") for b in BAD])
def test_bad_input_fails_before_computing(shared_tmp, change, needle):
    study = {k: v for k, v in {**SMALL, **change}.items() if v is not None}
    cfg = write_config(shared_tmp / "bad.toml", study)
    out = shared_tmp / "bad_out"
    with pytest.raises(ConfigError, match=needle):
        run_study(cfg, out)
    assert not out.exists()


def test_allow_unresolved(shared_tmp):
    cfg = write_config(shared_tmp / "unres.toml", dict(SMALL, NM=32, allow_unresolved=True))
    assert len(load_plan(cfg).cases) == 3


def test_published_comparison_and_homogenization_hook(shared_tmp, monkeypatch):
    """A synthetic [published] table is shown beside ours with the ratio; methods of
    msfem.homogenization are skipped until it provides them, then run through the hook."""
    published = ('\n[published]\nsource = "a synthetic table"\n'
                 '[[published.rows]]\nmethod = "linear"\nN = 8\nnodal_linf = 1.0e-3\n')
    study = {"eps": 0.125, "N": 8, "M": 8, "methods": ["linear", "homogenized"]}
    cfg = write_config(shared_tmp / "pub.toml", study, extra=published)
    monkeypatch.setattr(study_run, "homogenization_function", lambda kind: None)
    rows = run_study(cfg, shared_tmp / "pub")
    assert [r["method"] for r in rows] == ["linear"]
    report = (shared_tmp / "pub" / "report.md").read_text()
    assert "Comparison with a synthetic table" in report
    ratio = rows[0]["nodal_linf"] / 1.0e-3
    line = next(ln for ln in report.splitlines() if ln.startswith("| linear | 8 |"))
    assert f"{ratio:.3g}" in line and "0.001" in line

    # once the homogenization module provides u0, its rows appear (here: a stand-in)
    def fake(hierarchy, problem):
        return msfem.solve_fine(hierarchy.fine, problem).u

    monkeypatch.setattr(study_run, "homogenization_function", lambda kind: fake)
    rows = run_study(cfg, shared_tmp / "pub")
    assert [r["method"] for r in rows] == ["linear", "homogenized"]
    assert rows[1]["variant"] == "homogenized" and rows[1]["nodal_linf"] > 0

    bad = write_config(shared_tmp / "pub_bad.toml", study, extra=published.replace("8", "9"))
    with pytest.raises(ConfigError, match="matches no case"):
        load_plan(bad)


def test_injection_and_richardson(comm):
    """Injection is exact on lattice nodes; Richardson beats the plain fine solve."""
    problem = msfem.diffusion(1.0, f=1.0)
    fine = reference_lattice(comm, 32, "quadrilateral")
    coarse = reference_lattice(comm, 8, "quadrilateral")
    Vf = problem.function_space(fine.fine)
    Vc = problem.function_space(coarse.fine)
    u = dolfinx.fem.Function(Vf)
    u.interpolate(lambda x: x[0] ** 2 + 3 * x[0] * x[1])
    injected = LatticeNumbering(Vf, fine).inject(u, Vc)
    expected = dolfinx.fem.Function(Vc)
    expected.interpolate(lambda x: x[0] ** 2 + 3 * x[0] * x[1])
    assert np.allclose(injected.x.array, expected.x.array, atol=1e-14)

    truth = compute_reference(comm, problem, 128, "quadrilateral", factor=1,
                              petsc_options=MUMPS).inject(Vc)
    plain = compute_reference(comm, problem, 8, "quadrilateral", factor=1,
                              petsc_options=MUMPS).inject(Vc)
    rich = compute_reference(comm, problem, 8, "quadrilateral", kind="richardson", factor=1,
                             petsc_options=MUMPS).inject(Vc)
    n = Vc.dofmap.index_map.size_local
    err = [comm.allreduce(float(np.abs(v.x.array[:n] - truth.x.array[:n]).max()), op=MPI.MAX)
           for v in (plain, rich)]
    assert err[1] < 0.1 * err[0], err
