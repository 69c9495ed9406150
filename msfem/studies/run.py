r"""Running a study: one reference per grid, every method on every case, a resumable CSV.

The loop is over the cases of the :class:`~msfem.studies.plan.Plan`; for each case

1. the reference :math:`u_{\text{ref}}` of its (coefficient, NM) grid is taken from the
   study's references (or the ``reference_cache`` directory) or computed
   (:func:`~msfem.studies.reference.compute_reference`) -- before the case's own meshes
   exist, so the peak memory is that of one fine solve -- and injected into the MsFEM
   fine space :math:`V_h` of the case;
2. every method gives a solution and its errors against :math:`u_{\text{ref}}`: the MsFEM
   variants through :meth:`msfem.CoarseSolution.errors` (broken norms, nodal errors at
   the coarse vertices), fine-space solutions (``fine``, ``homogenized``, ``corrector``)
   through :func:`msfem.norms.errors` and the same nodal errors; a method with
   ``basis_refinement = r`` on its own hierarchy with M r sub-cells per coarse cell,
   nodal errors only (:func:`_run_refined`);
3. ``results.csv`` is rewritten atomically with all rows known so far, in plan order.

A restarted study reads ``results.csv`` and skips the cases whose rows are all there, so
the final file equals that of an uninterrupted run (up to the timing columns).
``study.json`` records a fingerprint of the settings that change the numbers (resuming
into a directory computed with other settings is refused) and, per invocation, the wall
time and the peak resident memory (max over ranks), which the report shows.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dolfinx
import numpy as np
from mpi4py import MPI

from msfem import _runtime, norms
from msfem import config as cfg_mod
from msfem.coarse import solve as solve_coarse
from msfem.coefficients import UnresolvedScaleWarning
from msfem.config import ConfigError
from msfem.fine import solve_fine
from msfem.mesh import StructuredHierarchy
from msfem.methods.msfem import VARIANTS
from msfem.problem import Problem
from msfem.space import MultiscaleSpace
from msfem.studies.plan import METRICS, Case, Method, Plan, fmt, load_plan
from msfem.studies.reference import (
    Reference,
    box_corners,
    compute_reference,
    load_reference,
    reference_key,
    save_reference,
)
from msfem.transfer import LatticeNumbering

logger = _runtime.logger

#: Functions of :mod:`msfem.homogenization` used for the methods ``homogenized`` (u₀) and
#: ``corrector`` (u₁): ``fn(hierarchy, problem) -> dolfinx.fem.Function`` on
#: ``problem.function_space(hierarchy.fine)``.
HOMOGENIZATION_FUNCTIONS = {"homogenized": "homogenized_solution",
                            "corrector": "corrector_solution"}

#: Hook called on every rank after each computed case (e.g. progress bars, tests).
AfterCase = Callable[[Case], None]


def homogenization_function(kind: str) -> Callable[..., Any] | None:
    """Return the :mod:`msfem.homogenization` function of ``kind`` (None: not there yet)."""
    try:
        import msfem.homogenization as hom
    except ImportError:
        return None
    return getattr(hom, HOMOGENIZATION_FUNCTIONS[kind], None)


# ----------------------------------------------------------------------------- CSV
def csv_text(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    """results.csv content: header and rows (already formatted cells)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows (text cells) of a results.csv."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def parse_row(row: Mapping[str, str]) -> dict[str, Any]:
    """Typed values of a CSV row: ints, floats, strings; '' becomes None."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v == "":
            out[k] = None
        elif k in ("method", "variant", "oversampling"):
            out[k] = v
        else:
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
    return out


def _existing_rows(plan: Plan, out_dir: Path, comm: MPI.Comm) -> dict[tuple[str, ...], dict]:
    """Rows of a previous run in ``out_dir`` (rank 0 reads, all ranks get them).

    Raises ConfigError (on every rank) if they were computed with other settings.
    """
    error, rows = None, {}
    if comm.rank == 0:
        meta, path = out_dir / "study.json", out_dir / "results.csv"
        try:
            if meta.exists():
                stored = json.loads(meta.read_text()).get("fingerprint")
                if stored != plan.fingerprint():
                    error = (f"{out_dir} holds results of a study with other settings "
                             f"(fingerprint {stored} != {plan.fingerprint()}: [mesh], "
                             f"[coefficient], [problem], [solver], [msfem] or the "
                             f"reference differ); use another output directory or delete it")
            if path.exists() and error is None:
                header, old = read_csv(path)
                if header != plan.columns:
                    error = (f"{path} has columns {header}, this study writes {plan.columns}; "
                             f"use another output directory")
                else:
                    complete = [r for r in old if _complete(r, plan.columns)]
                    if not path.read_text().endswith("\n") and complete and \
                            old and complete[-1] is old[-1]:
                        complete.pop()  # a last line cut short may still parse
                    if len(complete) < len(old):
                        logger.warning("%s: %d incomplete row(s) ignored; their cases are "
                                       "computed again", path, len(old) - len(complete))
                    rows = {tuple(r[c] for c in plan.key_columns): r for r in complete}
        except (OSError, ValueError, KeyError) as err:
            error = f"cannot resume from {out_dir}: {err}"
    error, rows = comm.bcast((error, rows), root=0)
    if error:
        raise ConfigError(error)
    return rows


def _complete(row: Mapping[Any, Any], columns: Sequence[str]) -> bool:
    """Whether a CSV row has exactly the columns and numbers in every error column."""
    if None in row or any(row.get(c) is None for c in columns):
        return False  # too many or too few cells
    try:
        [float(row[m]) for m in METRICS if m in columns]
    except (TypeError, ValueError):
        return False
    return True


# ----------------------------------------------------------------------------- one case
class _Case:
    """The objects of one case: hierarchy, problem, fine space and injected reference."""

    def __init__(self, plan: Plan, case: Case, comm: MPI.Comm, refinement: int = 1):
        mesh = plan.config.get("mesh", {})
        self.hier = StructuredHierarchy(comm, case.N, case.M * refinement,
                                        mesh.get("cell", "quadrilateral"),
                                        mesh.get("lower"), mesh.get("upper"))
        dim = self.hier.dim
        coefficient = cfg_mod.build_coefficient(case.coefficient, dim)
        self.problem: Problem = cfg_mod.build_problem(plan.config.get("problem", {}),
                                                      coefficient, dim)
        self.V = self.problem.function_space(self.hier.fine)
        self._lattice: LatticeNumbering | None = None

    def nodal_errors(self, u: dolfinx.fem.Function, u_ref: dolfinx.fem.Function) -> dict:
        """Hou--Wu nodal errors of a fine-space function at the coarse vertices."""
        if self._lattice is None:
            self._lattice = LatticeNumbering(self.V, self.hier)
        h = self.hier
        Vc = dolfinx.fem.functionspace(h.coarse, ("Lagrange", 1, self.problem.shape))
        n = Vc.dofmap.index_map.size_local
        xc = Vc.tabulate_dof_coordinates()[:n, : h.dim]
        lattice = self._lattice
        return norms.nodal_errors(lattice.values_at(u, xc), lattice.values_at(u_ref, xc), h.H,
                                  h.comm)

    def fine_space_errors(self, u: dolfinx.fem.Function, u_ref: dolfinx.fem.Function) -> dict:
        """Global L2/H1/energy and nodal errors of a function on the MsFEM fine space."""
        w = dolfinx.fem.Function(self.V)
        w.x.array[:] = u.x.array  # same mesh and element: same dof layout
        out = norms.errors(w, u_ref, self.problem.discretise(self.V))
        out.update(self.nodal_errors(w, u_ref))
        return out


def _space(plan: Plan, c: _Case, method: Method, oversampling: Any,
           store_energy: bool = True) -> MultiscaleSpace:
    """The multiscale space of ``method`` on the hierarchy of ``c`` (not built)."""
    msfem_cfg = plan.config.get("msfem", {})
    return MultiscaleSpace(c.hier, c.problem, method.kind, oversampling,
                           boundary=method.boundary, parameters=dict(method.parameters),
                           petsc_options=msfem_cfg.get("local_solver"),
                           store_energy=store_energy and msfem_cfg.get("store_energy", True))


def _run_refined(plan: Plan, case: Case, method: Method, reference: Reference,
                 comm: MPI.Comm) -> list[tuple[str, dict, float, float]]:
    r"""Rows of a method whose basis lives on a sub-grid ``basis_refinement`` times finer.

    The coarse mesh and the reference are the case's; the basis is computed with
    :math:`M r` sub-cells per coarse cell (patch sizes in fine cells scaled by r,
    :meth:`~msfem.studies.plan.PatchSpec.oversampling`). The errors are the nodal ones,
    :math:`E_i = U(x_i) - u_{\text{ref}}(x_i)` at the coarse vertices, with
    :math:`U(x_i)` the coarse unknowns (the reconstruction's values for methods whose
    unknowns are not nodal values); the field errors are NaN (the reference is known on
    the case's sub-grid only).
    """
    r = method.basis_refinement
    c = _Case(plan, case, comm, refinement=r)
    msfem_cfg = plan.config.get("msfem", {})
    out = []
    for patch in method.patches:
        oversampling = patch.oversampling(case.M, r) if method.kind in VARIANTS else None
        space = _space(plan, c, method, oversampling, store_energy=False)  # no field errors
        space.build()
        sol = solve_coarse(space, petsc_options=msfem_cfg.get("coarse_solver"))
        nodal = space.coarse.vertex_values(sol.vector.getArray(readonly=True))
        errs = {k: math.nan for k in METRICS}
        if nodal is not None:
            xc, vals = nodal
            if space.method.reconstruction == "sum":  # unknowns are not nodal values (LOD)
                vals = LatticeNumbering(c.V, c.hier).values_at(sol.reconstruct(c.V), xc)
            ref = reference.at(xc).reshape(np.shape(vals))
            errs.update(norms.nodal_errors(vals, ref, [float(H) for H in c.hier.H], comm))
        out.append((patch.label, errs, space.timings["offline"],
                    sol.timings["coarse_assemble"] + sol.timings["coarse_solve"]))
        del sol, space
    del c
    gc.collect()
    return out


def _run_method(plan: Plan, c: _Case, method: Method, u_ref: dolfinx.fem.Function,
                comm: MPI.Comm) -> list[tuple[str, dict, float, float]]:
    """(oversampling label, errors, t_offline, t_online) for each oversampling of ``method``."""
    msfem_cfg = plan.config.get("msfem", {})
    out = []
    if method.kind == "fine":
        t0 = time.perf_counter()
        fine = solve_fine(c.hier.fine, c.problem,
                          petsc_options=plan.config.get("solver") or None)
        t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        return [("0", c.fine_space_errors(fine.u, u_ref), 0.0, t)]
    if not method.is_msfem:  # homogenization
        fn = homogenization_function(method.kind)
        assert fn is not None  # unavailable methods were dropped by run_study
        t0 = time.perf_counter()
        u = fn(c.hier, c.problem)
        t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        return [("0", c.fine_space_errors(u, u_ref), 0.0, t)]
    for patch in method.patches:
        oversampling = patch.oversampling(c.hier.M) if method.kind in VARIANTS else None
        space = _space(plan, c, method, oversampling)
        space.build()
        sol = solve_coarse(space, petsc_options=msfem_cfg.get("coarse_solver"))
        errs = sol.errors(u_ref)
        out.append((patch.label, errs, space.timings["offline"],
                    sol.timings["coarse_assemble"] + sol.timings["coarse_solve"]))
        del sol, space
    return out


def _case_rows(plan: Plan, case: Case, methods: list[Method], reference: Reference,
               comm: MPI.Comm) -> list[dict[str, str]]:
    """The rows of ``methods`` on ``case`` (the refined ones after the case's own objects)."""
    H, h = plan.length / case.N, plan.length / case.NM
    results = []
    same_grid = [m for m in methods if m.basis_refinement == 1]
    if same_grid:
        c = _Case(plan, case, comm)
        u_ref = reference.inject(c.V)
        for method in same_grid:
            results += [(method, *row) for row in _run_method(plan, c, method, u_ref, comm)]
        del c, u_ref
        gc.collect()
    for method in methods:
        if method.basis_refinement > 1:
            results += [(method, *row) for row in _run_refined(plan, case, method, reference,
                                                                comm)]
    order = {m.name: i for i, m in enumerate(methods)}
    results.sort(key=lambda res: order[res[0].name])  # stable: the patches keep their order
    rows = []
    for method, label, errs, t_off, t_on in results:
        values = {"method": method.name, "variant": method.kind, "oversampling": label,
                  "eps": case.eps, "N": case.N, "M": case.M, "H": H, "h": h,
                  "H_over_eps": H / case.eps if case.eps else None,
                  "t_offline": t_off, "t_online": t_on, "t_reference": reference.seconds,
                  "ranks": comm.size, **dict(case.params)}
        values.update({k: float(errs[k]) for k in METRICS})
        rows.append({col: fmt(values.get(col)) for col in plan.columns})
    return rows


def _reference_key(plan: Plan, case: Case) -> str:
    return reference_key(plan.config, case.coefficient, case.NM, plan.reference,
                         plan.reference_factor)


def _reference(plan: Plan, case: Case, comm: MPI.Comm) -> Reference:
    """The reference of ``case``: from the cache directory, or computed (and stored there)."""
    mesh = plan.config.get("mesh", {})
    cell = mesh.get("cell", "quadrilateral")
    cache = plan.config.get("study", {}).get("reference_cache")
    path = Path(cache) / f"{_reference_key(plan, case)}.npz" if cache else None
    problem = cfg_mod.build_problem(plan.config.get("problem", {}),
                                    cfg_mod.build_coefficient(case.coefficient,
                                                              cfg_mod.CELL_TYPES[cell][0]),
                                    cfg_mod.CELL_TYPES[cell][0])
    if path is not None:
        ref = load_reference(path, comm, case.NM, problem.degree,
                             box_corners(cell, mesh.get("lower"), mesh.get("upper")))
        if ref is not None:
            logger.info("  reference (%s) loaded from %s", plan.reference, path)
            return ref
    ref = compute_reference(comm, problem, case.NM, cell, kind=plan.reference,
                            factor=plan.reference_factor, lower=mesh.get("lower"),
                            upper=mesh.get("upper"),
                            petsc_options=plan.config.get("solver") or None)
    logger.info("  reference (%s, %d dofs) in %.1f s", plan.reference, ref.num_dofs,
                ref.seconds)
    if path is not None:
        save_reference(ref, path, comm)
    return ref


def peak_memory(comm: MPI.Comm) -> float:
    """Peak resident memory of this process (bytes), the maximum over the ranks of ``comm``."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return float(comm.allreduce(kib, op=MPI.MAX)) * 1024.0


# ----------------------------------------------------------------------------- the study
def run_study(config_path: str | Path, out_dir: str | Path, comm: MPI.Comm = MPI.COMM_WORLD,
              *, after_case: AfterCase | None = None, force: bool = False
              ) -> list[dict[str, Any]]:
    r"""Run (or resume) the study of a TOML configuration and write its results and report.

    Collective over ``comm``. The configuration is validated and the sweep expanded
    before anything is computed or written (a :class:`~msfem.config.ConfigError` names
    the offending key). Then, for each case not yet in ``out_dir/results.csv``: one
    reference per (coefficient, N·M) grid, every method, the errors, and an atomic
    rewrite of ``results.csv``. At the end ``out_dir/report.md`` with tables, fitted
    rates and figures (:func:`msfem.studies.report.write_report`).

    Args:
        config_path: the study configuration (see :mod:`msfem.studies`).
        out_dir: output directory (created; an existing one is resumed).
        comm: communicator of all solves (``MPI.COMM_SELF`` for a serial study per rank).
        after_case: called on every rank after each computed case has been written.
        force: run even if the memory estimate of the largest reference and case exceeds
            the available memory (:func:`msfem._runtime.check_memory`).

    Returns:
        The rows of results.csv with typed values, in plan order.

    """
    with _runtime.collective(comm):  # every rank agrees before computing or writing
        plan = load_plan(config_path)
        out_dir = _runtime.check_output_dir(out_dir)
    with _runtime.directory_lock(out_dir, comm):  # one study per output directory
        return _run_study(plan, out_dir, comm, after_case, force)


def _run_study(plan: Plan, out_dir: Path, comm: MPI.Comm, after_case: AfterCase | None,
               force: bool) -> list[dict[str, Any]]:
    """:func:`run_study` after validation, holding the output directory's lock."""
    from msfem.studies.report import write_report

    finest = max(case.NM for case in plan.cases)
    ref = finest * plan.reference_factor * (2 if plan.reference == "richardson" else 1)
    basis = max(case.NM * m.basis_refinement for case in plan.cases for m in plan.methods
                if m.runs_on(case))
    # the reference is computed before a case's objects exist (one fine solve at a time)
    _runtime.check_memory(max(cfg_mod.memory_need(plan.config, ref),
                              cfg_mod.memory_need(plan.config, basis)),
                          f"study {plan.name!r} (reference grid {ref}, finest sub-grid "
                          f"{basis} cells per direction)",
                          comm, force=force, hint="lower NM, reference_factor or "
                          "basis_refinement (or restrict a method to some N)")
    done = _existing_rows(plan, out_dir, comm)
    methods = []
    for m in plan.methods:
        if not m.is_msfem and m.kind != "fine" and homogenization_function(m.kind) is None:
            logger.info("method %r skipped: msfem.homogenization does not provide %s() yet",
                        m.name, HOMOGENIZATION_FUNCTIONS[m.kind])
            continue
        methods.append(m)
    kc = plan.key_columns
    todo = []  # (case, methods with missing rows)
    for case in plan.cases:
        keys = plan.case_keys(case)
        missing = {k[kc.index("method")] for k in keys if k not in done}
        if missing & {m.name for m in methods}:
            todo.append((case, [m for m in methods if m.name in missing]))

    runs = _previous_runs(out_dir, comm)
    meta = {"name": plan.name, "config": str(plan.path), "fingerprint": plan.fingerprint(),
            "cases": len(plan.cases), "methods": [m.name for m in plan.methods], "runs": runs}
    _runtime.atomic_write_json(out_dir / "study.json", meta, comm)
    if comm.rank == 0 and plan.path.resolve() != (out_dir / "config.toml").resolve():
        shutil.copyfile(plan.path, out_dir / ".config.toml.tmp")
        (out_dir / ".config.toml.tmp").replace(out_dir / "config.toml")
    logger.info("study %r: %d cases x %d methods, %d to compute, %d ranks -> %s", plan.name,
                len(plan.cases), len(methods), len(todo), comm.size, out_dir)

    rows = dict(done)
    planned = {k for case in plan.cases for k in plan.case_keys(case)}
    if set(done) - planned:
        logger.info("results.csv keeps %d rows of cases or methods no longer in the sweep",
                    len(set(done) - planned))
    references: dict[str, Reference] = {}  # every reference still needed by a later case
    t_start = time.perf_counter()
    with warnings.catch_warnings():
        if plan.allow_unresolved:
            warnings.simplefilter("ignore", UnresolvedScaleWarning)
        for k, (case, case_methods) in enumerate(todo):
            t0 = time.perf_counter()
            timer = dolfinx.common.Timer("~msfem: study case")
            key = _reference_key(plan, case)
            if key not in references:
                references[key] = _reference(plan, case, comm)
            reference = references[key]
            later = {_reference_key(plan, c) for c, _ in todo[k + 1:]}
            for old in set(references) - later:
                del references[old]
            for row in _case_rows(plan, case, case_methods, reference, comm):
                rows[tuple(row[col] for col in kc)] = row
            del reference
            gc.collect()
            timer.stop()
            _runtime.atomic_write_text(out_dir / "results.csv",
                                       csv_text(_ordered(plan, rows), plan.columns), comm)
            elapsed = time.perf_counter() - t_start
            eta = elapsed / (k + 1) * (len(todo) - k - 1)
            logger.info("case %d of %d (%s): %.1f s, ETA %.0f s", case.index + 1,
                        len(plan.cases), case.describe(), time.perf_counter() - t0, eta)
            if after_case is not None:
                after_case(case)
    references.clear()
    ordered = _ordered(plan, rows)
    _runtime.atomic_write_text(out_dir / "results.csv", csv_text(ordered, plan.columns), comm)
    typed = [parse_row(r) for r in ordered]
    if todo:  # this invocation computed something: record its time and memory
        runs.append({"seconds": round(time.perf_counter() - t_start, 1),
                     "peak_memory_gb": round(peak_memory(comm) / 1e9, 2),
                     "ranks": comm.size, "cases": len(todo)})
        meta["runs"] = runs
        _runtime.atomic_write_json(out_dir / "study.json", meta, comm)
    write_report(plan, typed, out_dir, comm, runs=runs)
    return typed


def _previous_runs(out_dir: Path, comm: MPI.Comm) -> list[dict[str, Any]]:
    """The ``runs`` recorded in ``out_dir/study.json`` by earlier invocations."""
    runs: list[dict[str, Any]] = []
    if comm.rank == 0 and (out_dir / "study.json").exists():
        try:
            runs = list(json.loads((out_dir / "study.json").read_text()).get("runs", []))
        except (OSError, ValueError):
            runs = []
    return comm.bcast(runs, root=0)


def _ordered(plan: Plan, rows: Mapping[tuple[str, ...], dict]) -> list[dict]:
    """Rows in plan order (case, method, oversampling); rows of other sweeps at the end."""
    out, seen = [], set()
    for case in plan.cases:
        for key in plan.case_keys(case):
            if key in rows:
                out.append(rows[key])
                seen.add(key)
    out.extend(rows[k] for k in sorted(set(rows) - seen))
    return out

