"""The ``msfem`` command line: one TOML configuration in, one result directory out.

Commands::

    msfem fine  CONFIG.toml --out DIR [--timings]   # fine reference solve
    msfem solve CONFIG.toml --out DIR [--timings]   # MsFEM + fine reference + errors
    msfem study CONFIG.toml --out DIR               # msfem.studies.run_study
    msfem homogenize CONFIG.toml [--json]           # msfem.homogenization.cli.homogenize
    msfem rve   CONFIG.toml --out DIR               # msfem.homogenization.cli.rve
    msfem fe2   CONFIG.toml --out DIR [--restart]   # msfem.fe2.run.run (FE², checkpoints)
    msfem surrogate build CONFIG.toml --out DB.h5   # msfem.surrogate.run.build
    msfem surrogate solve CONFIG.toml --db DB.h5 --out DIR   # ... .solve
    msfem methods [--json] [--plugin P]             # registered methods and their parameters
    msfem --version

Run in parallel with ``mpiexec -n 4 msfem solve ...``. The configuration is validated by
:func:`msfem.config.load` before anything is computed. A result directory ``DIR`` holds
``metrics.json`` (numbers, timings and the configuration echoed), the fields (VTX ``.bp``
or XDMF, ``[output] format``) and a PNG (``[output] png``); it is written through
:func:`msfem._runtime.atomic_directory`, so a failed run leaves ``DIR`` as it was.

Every command reads and validates its configuration and checks ``--out`` (creatable,
writable, not a file) on every rank and agrees collectively before computing
(:func:`msfem._runtime.collective`). Invalid input (:class:`~msfem.config.ConfigError`,
``ValueError``, unreadable files, unusable PETSc options) and diverged solves
(:class:`~msfem.SolverError`) print ``msfem: error: <message>`` on rank 0 and exit with
status 2 on every rank; an error that only some ranks reach is printed with its rank and
aborts the job; SIGINT/SIGTERM abort every rank (status 130/143)
(:func:`msfem._runtime.run_command`). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import re
import textwrap
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

import msfem
from msfem import _runtime, io, norms, plot
from msfem import config as msfem_config

logger = _runtime.logger

#: Exit status of every reported error (as argparse uses for usage errors).
EXIT_ERROR = _runtime.EXIT_ERROR


class CommandUnavailable(ImportError):
    """A sub-command whose implementing module is not installed."""


# ------------------------------------------------------------------------- helpers
def _read_inputs(args: argparse.Namespace, comm: MPI.Comm) -> tuple[dict[str, Any], Path]:
    """The validated configuration and ``--out``, agreed on every rank before computing."""
    with _runtime.collective(comm):
        cfg = msfem_config.load(args.config)
        out = _runtime.check_output_dir(args.out)
    return cfg, out


def _check_size(cfg: Mapping[str, Any], args: argparse.Namespace, comm: MPI.Comm,
                command: str) -> None:
    """Refuse a run that cannot fit in the job's memory (before any allocation)."""
    dofs = msfem_config.fine_dofs(cfg)
    need = msfem_config.memory_need(cfg)
    if command == "solve":  # + the basis and element data (about as much again, at most)
        need *= 1.5
    _runtime.check_memory(need, f"'msfem {command}' with {dofs:.3g} fine dofs", comm,
                          force=args.force, hint="lower [mesh] N or M")


def _setup(cfg: Mapping[str, Any], comm: MPI.Comm):
    """Hierarchy and problem of a validated configuration."""
    hier = msfem_config.build_hierarchy(cfg["mesh"], comm)
    coefficient = msfem_config.build_coefficient(cfg["coefficient"], dim=hier.dim)
    problem = msfem_config.build_problem(cfg.get("problem", {}), coefficient, hier.dim)
    return hier, problem


def _reference(hier, problem, cfg: Mapping[str, Any]):
    """Solve the fine reference with the ``[solver]`` options and log its statistics."""
    fine = msfem.solve_fine(hier.fine, problem, petsc_options=cfg.get("solver"))
    logger.info("fine reference: %d dofs, %d iterations, assemble %.3g s, solve %.3g s",
                fine.num_dofs, fine.iterations, fine.t_assemble, fine.t_solve)
    return fine


def _max(comm: MPI.Comm, value: float) -> float:
    return float(comm.allreduce(float(value), op=MPI.MAX))


def _write_results(out: Path, metrics: Mapping[str, Any], fields: Sequence, picture: Sequence,
                   titles: Sequence[str], png_name: str, output: Mapping[str, Any],
                   comm: MPI.Comm, *, title: str | None = None,
                   basis: tuple[Any, Any] | None = None) -> None:
    """Write metrics, fields and the PNGs into ``out`` all at once (or not at all).

    Two fields (u_fine, u_ms) are drawn side by side with their error under ``title``;
    ``basis`` = (:class:`msfem.plot.BasisFunction`, coarse mesh) adds basis_function.png.
    """
    with _runtime.atomic_directory(out, comm) as tmp:
        io.write_metrics(tmp / "metrics.json", metrics, comm)
        if output.get("fields", True):
            io.write_fields(tmp, fields, format=output.get("format", "vtx"))
        if output.get("png", True):
            if len(picture) == 2:
                plot.plot_error_field(tmp / png_name, picture, titles, title=title)
            elif not plot.plot_fields(tmp / png_name, picture, titles):
                logger.warning("pyvista is not installed: skipped %s", png_name)
            if basis is not None:
                plot.plot_basis_function(tmp / "basis_function.png", basis[0], title=title,
                                         coarse_mesh=basis[1])
    logger.info("results written to %s", out)


# ------------------------------------------------------------------------- commands
def run_fine(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """``msfem fine``: the fine reference :math:`a(u_h, v) = L(v)`, its norms and fields."""
    cfg, out = _read_inputs(args, comm)
    _check_size(cfg, args, comm, "fine")
    hier, problem = _setup(cfg, comm)
    fine = _reference(hier, problem, cfg)
    metrics = {
        "command": "fine",
        "msfem_version": msfem.__version__,
        "ranks": comm.size,
        "num_dofs": fine.num_dofs,
        "iterations": fine.iterations,
        "t_assemble": _max(comm, fine.t_assemble),
        "t_solve": _max(comm, fine.t_solve),
        "l2_norm": norms.l2_norm(fine.u),
        "h1_seminorm": norms.h1_seminorm(fine.u),
        "config_file": str(args.config),
        "config": cfg,
    }
    _write_results(out, metrics, [fine.u], [fine.u], ["u_fine"], "u_fine.png",
                   cfg.get("output", {}), comm)


def run_solve(args: argparse.Namespace, comm: MPI.Comm) -> None:
    r"""``msfem solve``: MsFEM solution :math:`u_{ms}` and its errors against :math:`u_h`."""
    cfg, out = _read_inputs(args, comm)
    _check_size(cfg, args, comm, "solve")
    hier, problem = _setup(cfg, comm)
    table = cfg.get("msfem", {})
    method, parameters = msfem_config.method_of(table)
    # the reference first: it also refuses non-positive coefficients before the offline phase
    fine = _reference(hier, problem, cfg)
    space = msfem.MultiscaleSpace(hier, problem, method, parameters=parameters,
                                  petsc_options=table.get("local_solver"),
                                  store_energy=table.get("store_energy", True))
    logger.info("offline: method %r, %d fine layers of oversampling", space.name,
                space.layers)
    space.build(progress=True)
    solution = msfem.solve_coarse(space, petsc_options=table.get("coarse_solver"),
                                  assembly=table.get("assembly"))
    u_ms = solution.reconstruct(fine.u.function_space)
    errors = solution.errors(fine.u)
    t = solution.timings
    metrics = {
        "command": "solve",
        "msfem_version": msfem.__version__,
        "ranks": comm.size,
        "variant": space.name,
        "oversampling_fine_layers": space.layers,
        "method_parameters": space.method.describe(),
        "method_report": space.method.report(comm),
        "num_coarse_dofs": space.coarse.size_global,
        "num_fine_dofs": fine.num_dofs,
        **errors,
        "t_offline": space.timings["offline"],
        "t_online": t["coarse_assemble"] + t["coarse_solve"] + _max(comm, t["reconstruct"]),
        "t_reference": _max(comm, fine.t_assemble + fine.t_solve),
        "fine_iterations": fine.iterations,
        "config_file": str(args.config),
        "config": cfg,
    }
    logger.info("errors: l2_rel %.3e, h1_rel %.3e, energy_rel %.3e, nodal_linf %.3e",
                errors["l2_rel"], errors["h1_rel"], errors["energy_rel"], errors["nodal_linf"])
    coarse_fields = [solution.U] if space.coarse_space is not None else []
    eps = next((f.eps for f in problem.coefficients.values() if getattr(f, "eps", None)), None)
    title = f"{space.name}, H = {float(np.max(hier.H)):.4g}" + \
        (f", ε = {eps:.4g}" if eps else "")
    png = cfg.get("output", {}).get("png", True)
    basis = (plot.basis_function(space), hier.coarse) if png and hier.dim == 2 and \
        space.coarse_space is not None else None  # (collective)
    _write_results(out, metrics, [u_ms, fine.u, *coarse_fields], [fine.u, u_ms],
                   ["u_fine", "u_ms"], "u_fine_vs_u_ms.png", cfg.get("output", {}), comm,
                   title=title, basis=basis)


def _optional(module: str, name: str, command: str) -> Callable[..., Any]:
    """``module.name``, imported on demand; a clear error if the module is not there."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        parts = module.split(".")
        missing = {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
        if err.name not in missing:
            raise  # the module exists but one of *its* imports failed: show that
        raise CommandUnavailable(f"'msfem {command}' is not available: module {module} is "
                                 f"not part of this installation") from err
    return getattr(mod, name)


def run_study(args: argparse.Namespace, comm: MPI.Comm) -> Any:
    """``msfem study``: delegate to :func:`msfem.studies.run_study`."""
    force = {"force": True} if args.force else {}
    return _optional("msfem.studies", "run_study", "study")(Path(args.config), Path(args.out),
                                                            **force)


def run_homogenize(args: argparse.Namespace, comm: MPI.Comm) -> Any:
    """``msfem homogenize``: delegate to :func:`msfem.homogenization.cli.homogenize`."""
    homogenize = _optional("msfem.homogenization.cli", "homogenize", "homogenize")
    force = {"force": True} if args.force else {}
    return homogenize(Path(args.config), args.json, **force)


def run_rve(args: argparse.Namespace, comm: MPI.Comm) -> Any:
    """``msfem rve``: delegate to :func:`msfem.homogenization.cli.rve`."""
    force = {"force": True} if args.force else {}
    return _optional("msfem.homogenization.cli", "rve", "rve")(Path(args.config),
                                                                Path(args.out), **force)


def run_fe2(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """``msfem fe2``: delegate to :func:`msfem.fe2.run.run`."""
    _optional("msfem.fe2.run", "run", "fe2")(Path(args.config), Path(args.out),
                                             restart=args.restart, comm=comm)


def run_surrogate(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """``msfem surrogate build|solve``: delegate to :mod:`msfem.surrogate.run`."""
    if args.action == "build":
        _optional("msfem.surrogate.run", "build", "surrogate")(Path(args.config),
                                                              Path(args.out), comm=comm)
    else:
        _optional("msfem.surrogate.run", "solve", "surrogate")(
            Path(args.config), Path(args.db), Path(args.out), comm=comm)


# ------------------------------------------------------------------------- methods
def _plain(text: str) -> str:
    """Docstring text without reST markup (roles, double back-quotes), on one line."""
    text = re.sub(r":[a-z:]+:`~[\w.]*?\.?(\w+)`", r"\1", text)  # :class:`~a.b.C` -> C
    text = re.sub(r":[a-z:]+:`([^`]+)`", r"\1", text)
    text = text.replace("``", "")
    return " ".join(text.split())


def _attribute_docs(cls: type) -> dict[str, str]:
    """Parameter descriptions from the docstrings of a model ``cls`` and its bases.

    The ``Attributes:`` sections (Google style); a model of one parameter without one may
    describe it in its docstring's first paragraph.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        if "Attributes:" not in lines:
            continue
        current = None
        for line in lines[lines.index("Attributes:") + 1:]:
            if line and not line.startswith(" "):  # the next section
                break
            entry = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line)
            if entry:
                current = entry.group(1)
                docs[current] = entry.group(2)
            elif current and line.strip():
                docs[current] += " " + line.strip()
    fields = list(getattr(cls, "model_fields", {}))
    docs = {k: v for k, v in docs.items() if k in fields}  # not pydantic's own attributes
    own = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    if not docs and len(fields) == 1 and own:
        docs[fields[0]] = own.split("\n\n")[0]
    return {k: _plain(v) for k, v in docs.items()}


def _type_name(annotation: Any) -> str:
    """A parameter type as a user reads it: ``'a' | 'b' | None``, ``int``, ``list[float]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(map(_type_name, args))}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it as is, else its ``str``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def method_catalogue() -> list[dict[str, Any]]:
    """Every registered method: name, summary, preset and the parameters a user may set.

    Read from the registry (:func:`msfem.methods.available`, :func:`~msfem.methods.entry`)
    and each method's pydantic ``Parameters`` model: for every parameter that the preset
    does not fix (:func:`~msfem.methods.parameter_names`) its type, default (``None`` and
    ``required = True`` when it has none) and description (the field's ``description``,
    else the model's ``Attributes:`` docstring section).
    """
    from msfem import methods

    catalogue = []
    for name in methods.available():
        e = methods.entry(name)
        model = e.cls.Parameters
        docs = _attribute_docs(model)
        params = []
        for key in methods.parameter_names(name):
            field = model.model_fields[key]
            required = field.is_required()
            default = None if required else field.get_default(call_default_factory=True)
            params.append({"name": key, "type": _type_name(field.annotation),
                           "default": _jsonable(default), "required": required,
                           "description": _plain(field.description or docs.get(key, ""))})
        catalogue.append({"name": name, "summary": _plain(e.summary),
                          "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
                          "preset": {k: _jsonable(v) for k, v in e.preset.items()},
                          "parameters": params})
    return catalogue


def format_catalogue(catalogue: Sequence[Mapping[str, Any]], width: int = 92) -> str:
    """The text of ``msfem methods``: one block per method, one entry per parameter."""
    lines = []
    for m in catalogue:
        lines.append(f"{m['name']}: {m['summary']}" if m["summary"] else m["name"])
        if m["preset"]:
            fixed = ", ".join(f"{k} = {v!r}" for k, v in m["preset"].items())
            lines.append(f"    preset: {fixed}")
        if not m["parameters"]:
            lines.append("    (no parameters)")
        for p in m["parameters"]:
            default = "required" if p["required"] else f"default {p['default']!r}"
            lines.append(f"    {p['name']}: {p['type']} ({default})")
            if p["description"]:
                lines.extend(textwrap.wrap(p["description"], width, initial_indent=" " * 8,
                                           subsequent_indent=" " * 8))
        lines.append("")
    lines.append("Use a method in a configuration with [msfem] method = NAME and one key per "
                 "parameter,\nor in a study with [study] methods = [...]; load plugins with "
                 "[msfem] plugins = [...]\n(here: msfem methods --plugin FILE.py).")
    return "\n".join(lines)


def run_methods(args: argparse.Namespace, comm: MPI.Comm) -> None:
    """``msfem methods``: the registered methods and their parameters (``--json``: as JSON)."""
    msfem_config.load_plugins(args.plugin or [])
    catalogue = method_catalogue()
    if comm.rank == 0:
        text = json.dumps(catalogue, indent=2) if args.json else format_catalogue(catalogue)
        print(text, flush=True)


# ------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that prints (usage, errors, --version) on rank 0 only."""

    def _print_message(self, message: str, file: Any = None) -> None:
        if MPI.COMM_WORLD.rank == 0:
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``msfem`` (sub-commands and their options)."""
    parser = _Parser(prog="msfem", description="Multiscale finite element methods on FEniCSx.",
                     epilog="'msfem methods' lists every registered method (the [msfem] method "
                            "key) with its parameters.")
    parser.add_argument("--version", action="version", version=f"msfem {msfem.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks instead of one-line error messages")
    # the same flags after the sub-command; SUPPRESS keeps the top-level value otherwise
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line error messages")
    common.add_argument("--timings", action="store_true", default=argparse.SUPPRESS,
                        help="print dolfinx's timing table (max over ranks) at the end")
    common.add_argument("--force", action="store_true", default=argparse.SUPPRESS,
                        help="run even if the memory estimate exceeds the available memory")
    parser.set_defaults(timings=False, force=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str, out: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.add_argument("config", metavar="CONFIG.toml", help="TOML configuration")
        if out:
            p.add_argument("--out", required=True, metavar="DIR",
                           help="result directory (replaced atomically on success)")
        p.set_defaults(handler=handler)
        return p

    command("fine", run_fine, "solve the fine-scale reference problem")
    command("solve", run_solve, "solve with MsFEM and compare with the fine reference")
    command("study", run_study, "run a parameter study (msfem.studies)")
    hom = command("homogenize", run_homogenize, "effective coefficients by homogenization",
                  out=False)
    hom.add_argument("--json", action="store_true", help="print the result as JSON")
    command("rve", run_rve, "representative volume element study")
    fe2 = command("fe2", run_fe2, "FE2: micro problems at the macro Gauss points, Newton "
                                  "with load steps and checkpoints")
    fe2.add_argument("--restart", action="store_true",
                     help="continue from the last checkpoint in DIR/checkpoint")
    help = "hierarchical coupling: an offline RVE database and a learned law"
    sur = sub.add_parser("surrogate", help=help, description=help)
    actions = sur.add_subparsers(dest="action", required=True, metavar="ACTION")
    help = "build (or resume, or extend) the RVE database of CONFIG"
    bld = actions.add_parser("build", parents=[common], help=help, description=help)
    bld.add_argument("config", metavar="CONFIG.toml", help="TOML configuration")
    bld.add_argument("--out", required=True, metavar="DB.h5", help="the database file")
    help = "fit the law to a database and solve the macro problem with it"
    sol = actions.add_parser("solve", parents=[common], help=help, description=help)
    sol.add_argument("config", metavar="CONFIG.toml", help="TOML configuration")
    sol.add_argument("--db", required=True, metavar="DB.h5", help="the database file")
    sol.add_argument("--out", required=True, metavar="DIR",
                     help="result directory (replaced atomically on success)")
    sur.set_defaults(handler=run_surrogate)
    help = "list the registered methods and their parameters ([msfem] method = NAME)"
    met = sub.add_parser("methods", help=help, description=help)
    met.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show tracebacks instead of one-line error messages")
    met.add_argument("--json", action="store_true", help="print the list as JSON")
    met.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE.py",
                     help="import a method plugin first (repeatable), as [msfem] plugins")
    met.set_defaults(handler=run_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``msfem`` command line; return the exit status (0 ok, 2 error).

    Collective: every rank of ``MPI.COMM_WORLD`` runs it and returns the same status, or
    -- when only some ranks fail, or on SIGINT/SIGTERM -- the job is aborted
    (:func:`msfem._runtime.run_command`).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version, usage errors
        if exit.code is None:
            return 0
        return exit.code if isinstance(exit.code, int) else EXIT_ERROR
    comm = MPI.COMM_WORLD
    _runtime.configure_logging(logging.DEBUG if args.debug else logging.INFO)
    with warnings.catch_warnings():
        if comm.rank > 0:  # one copy of every warning, like the log
            warnings.simplefilter("ignore")
        status = _runtime.run_command(lambda: args.handler(args, comm), comm, prog="msfem",
                                      debug=args.debug)
    if args.timings and status == 0:
        from dolfinx.common import Reduction, list_timings

        list_timings(comm, Reduction.max)
    return status
