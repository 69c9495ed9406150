r"""Running a study: one reference per grid, every method on every case, a resumable CSV.

The loop is over the cases of the :class:`~msfem.studies.plan.Plan`; for each case

1. the reference :math:`u_{\text{ref}}` of its (coefficient, NM) grid is taken from the
   cache or computed (:func:`~msfem.studies.reference.compute_reference`) and injected
   into the MsFEM fine space :math:`V_h` of the case;
2. every method gives a solution and its errors against :math:`u_{\text{ref}}`: the MsFEM
   variants through :meth:`msfem.CoarseSolution.errors` (broken norms, nodal errors at
   the coarse vertices), fine-space solutions (``fine``, ``homogenized``, ``corrector``)
   through :func:`msfem.norms.errors` and the same nodal errors;
3. ``results.csv`` is rewritten atomically with all rows known so far, in plan order.

A restarted study reads ``results.csv`` and skips the cases whose rows are all there, so
the final file equals that of an uninterrupted run (up to the timing columns).
``study.json`` records a fingerprint of the settings that change the numbers; resuming
into a directory computed with other settings is refused.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dolfinx
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
from msfem.studies.reference import Reference, compute_reference
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

    def __init__(self, plan: Plan, case: Case, comm: MPI.Comm):
        mesh = plan.config.get("mesh", {})
        self.hier = StructuredHierarchy(comm, case.N, case.M, mesh.get("cell", "quadrilateral"),
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
        space = MultiscaleSpace(c.hier, c.problem, method.kind, oversampling,
                                boundary=method.boundary, parameters=dict(method.parameters),
                                petsc_options=msfem_cfg.get("local_solver"),
                                store_energy=msfem_cfg.get("store_energy", True))
        space.build()
        sol = solve_coarse(space, petsc_options=msfem_cfg.get("coarse_solver"))
        errs = sol.errors(u_ref)
        out.append((patch.label, errs, space.timings["offline"],
                    sol.timings["coarse_assemble"] + sol.timings["coarse_solve"]))
        del sol, space
    return out


def _case_rows(plan: Plan, case: Case, c: _Case, methods: list[Method], reference: Reference,
               comm: MPI.Comm) -> list[dict[str, str]]:
    u_ref = reference.inject(c.V)
    H, h = plan.length / case.N, plan.length / case.NM
    rows = []
    for method in methods:
        for label, errs, t_off, t_on in _run_method(plan, c, method, u_ref, comm):
            values = {"method": method.name, "variant": method.kind, "oversampling": label,
                      "eps": case.eps, "N": case.N, "M": case.M, "H": H, "h": h,
                      "H_over_eps": H / case.eps if case.eps else None,
                      "t_offline": t_off, "t_online": t_on, "t_reference": reference.seconds,
                      "ranks": comm.size, **dict(case.params)}
            values.update({k: float(errs[k]) for k in METRICS})
            rows.append({col: fmt(values.get(col)) for col in plan.columns})
    return rows


def _reference_key(case: Case) -> str:
    return json.dumps([sorted(case.coefficient.items()), case.NM], default=str)


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
    _runtime.check_memory(cfg_mod.memory_need(plan.config, ref)
                          + cfg_mod.memory_need(plan.config, finest),
                          f"study {plan.name!r} (reference grid {ref} cells per direction)",
                          comm, force=force, hint="lower NM or reference_factor")
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

    _runtime.atomic_write_json(out_dir / "study.json", {
        "name": plan.name, "config": str(plan.path), "fingerprint": plan.fingerprint(),
        "cases": len(plan.cases), "methods": [m.name for m in plan.methods]}, comm)
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
    cache: tuple[str, Reference] | None = None
    t_start = time.perf_counter()
    with warnings.catch_warnings():
        if plan.allow_unresolved:
            warnings.simplefilter("ignore", UnresolvedScaleWarning)
        for k, (case, case_methods) in enumerate(todo):
            t0 = time.perf_counter()
            timer = dolfinx.common.Timer("~msfem: study case")
            c = _Case(plan, case, comm)
            key = _reference_key(case)
            if cache is None or cache[0] != key:
                cache = None  # free the previous reference first (meshes hold cycles)
                gc.collect()
                cache = (key, compute_reference(
                    comm, c.problem, case.NM, c.hier.cell_type, kind=plan.reference,
                    factor=plan.reference_factor, lower=c.hier.lower, upper=c.hier.upper,
                    petsc_options=plan.config.get("solver") or None))
                logger.info("  reference (%s, %d dofs) in %.1f s", plan.reference,
                            cache[1].num_dofs, cache[1].seconds)
            for row in _case_rows(plan, case, c, case_methods, cache[1], comm):
                rows[tuple(row[col] for col in kc)] = row
            del c
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
    cache = None
    ordered = _ordered(plan, rows)
    _runtime.atomic_write_text(out_dir / "results.csv", csv_text(ordered, plan.columns), comm)
    typed = [parse_row(r) for r in ordered]
    write_report(plan, typed, out_dir, comm)
    return typed


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

