r"""``msfem fe2 CONFIG.toml --out DIR [--restart]``: the configuration and the run.

The configuration is validated as a whole (pydantic models, unknown keys refused, the law
and its parameters checked against the registry) on every rank before anything is
computed. Example (``studies/fe2_nonlinear_diffusion.toml``)::

    [mesh]
    N = 4                      # macro cells per direction
    cell = "quadrilateral"

    [fe2]
    law = "nonlinear-diffusion"
    parameters = { a1 = 1.0, a2 = 10.0, beta = 1.0, microstructure = "laminate" }
    micro_cells = 16
    steps = 4

    [problem]
    load = 10.0                                    # body load f (scaled by n/steps)
    dirichlet = { value = 0.0, gradient = [0.0, 0.0] }   # g(x) = value + gradient . x

``DIR`` receives ``metrics.json`` (the Newton history of every load step, the
Hill--Mandel maximum, timings per macro iteration split into micro solves / tangent /
macro solve), ``fields/u_fe2.bp`` (or ``.xdmf``) and ``checkpoint/`` (replaced after every
converged load step; ``--restart`` continues from it). Each of them is written
atomically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
from mpi4py import MPI

from msfem import _runtime, io
from msfem.config import ConfigError, read_toml
from msfem.fe2.laws import Law, create_law
from msfem.fe2.macro import FE2, FE2Parameters, FE2Result
from msfem.mesh import CELL_TYPES, StructuredHierarchy
from msfem.problem import Dirichlet

__all__ = ["FE2Config", "load_config", "run"]

_FACES = {"left": (0, 0), "right": (0, 1), "bottom": (1, 0), "top": (1, 1), "back": (2, 0),
          "front": (2, 1)}


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class MeshSection(_Section):
    """``[mesh]``: the macro mesh (the coarse mesh of a structured hierarchy).

    Attributes:
        N: macro cells per direction.
        M: fine cells per macro cell (used by a direct numerical simulation only).
        cell: cell type.
        lower: lower corner of the domain.
        upper: upper corner of the domain.
    """

    N: int | list[int] = 4
    M: int = pydantic.Field(1, ge=1)
    cell: Literal["interval", "triangle", "quadrilateral", "tetrahedron",
                  "hexahedron"] = "quadrilateral"
    lower: list[float] | None = None
    upper: list[float] | None = None

    @property
    def dim(self) -> int:
        """Space dimension of the cell type."""
        return CELL_TYPES[self.cell][0]


class FE2Section(FE2Parameters):
    """``[fe2]``: the micro law, its parameters and :class:`~msfem.fe2.FE2Parameters`.

    Attributes:
        law: a registered micro law (:func:`msfem.fe2.available_laws`).
        parameters: the law's parameters.
    """

    law: str
    parameters: dict[str, Any] = pydantic.Field(default_factory=dict)

    def solver_parameters(self) -> FE2Parameters:
        """The :class:`FE2Parameters` part."""
        return FE2Parameters(**self.model_dump(exclude={"law", "parameters"}))


class DirichletSection(_Section):
    r"""Affine Dirichlet data :math:`g(x) = value + gradient\,x` on some faces.

    Attributes:
        value: g at x = 0 (a number, or one per component).
        gradient: ∇g (d numbers, or a d x d matrix for a vector unknown); default 0.
        faces: ``left``, ``right``, ``bottom``, ``top``, ``back``, ``front``; default all
            of ∂Ω.
    """

    value: float | list[float] = 0.0
    gradient: list[float] | list[list[float]] | None = None
    faces: list[Literal["left", "right", "bottom", "top", "back", "front"]] | None = None


class ProblemSection(_Section):
    """``[problem]``: the macro load and Dirichlet data (both scaled by n/steps).

    Attributes:
        load: body load f (a number, or one per component for mechanics).
        dirichlet: a number/list (constant g on all of ∂Ω), a table
            :class:`DirichletSection` or a list of them.
    """

    load: float | list[float] = 0.0
    dirichlet: float | list[float] | DirichletSection | list[DirichletSection] = 0.0


class OutputSection(_Section):
    """``[output]``.

    Attributes:
        format: ``"vtx"`` or ``"xdmf"``.
        fields: write the macro field.
        checkpoint: write a checkpoint after every converged load step.
    """

    format: Literal["vtx", "xdmf"] = "vtx"
    fields: bool = True
    checkpoint: bool = True


class FE2Config(_Section):
    """A whole ``msfem fe2`` configuration."""

    mesh: MeshSection
    fe2: FE2Section
    problem: ProblemSection = ProblemSection()
    output: OutputSection = OutputSection()

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> FE2Config:
        d = self.mesh.dim
        law = create_law(self.fe2.law, self.fe2.parameters)
        bs = int(np.prod(law.value_shape(d), dtype=int))
        if isinstance(self.mesh.N, list) and len(self.mesh.N) != d:
            raise ValueError(f"[mesh] N must be one number or {d} numbers")
        load = np.asarray(self.problem.load, dtype=float)
        if load.size != bs and not (load.ndim == 0 and load == 0):
            raise ValueError(f"[problem] load must be {'a number' if bs == 1 else f'{bs} numbers'}"
                             f" for micro law {law.name!r}")
        tables = self._tables()
        values = [t.value for t in tables] if tables is not None else [self.problem.dirichlet]
        for v in values:
            if np.size(np.asarray(v, dtype=float)) not in (1, bs):
                raise ValueError(f"[problem] dirichlet values must have {bs} component(s)")
        for t in tables or []:
            if t.gradient is not None and np.shape(t.gradient) != ((d,) if bs == 1 else (bs, d)):
                raise ValueError(f"[problem] dirichlet gradient must have shape "
                                 f"{(d,) if bs == 1 else (bs, d)}")
            if t.faces and any(_FACES[f][0] >= d for f in t.faces):
                raise ValueError(f"[problem] dirichlet faces {t.faces}: not faces of a "
                                 f"{d}D box")
        return self

    def law(self) -> Law:
        """The micro law."""
        return create_law(self.fe2.law, self.fe2.parameters)

    def _tables(self) -> list[DirichletSection] | None:
        """The Dirichlet tables (``None``: a constant on all of ∂Ω)."""
        specs = self.problem.dirichlet
        if isinstance(specs, DirichletSection):
            return [specs]
        if isinstance(specs, list) and specs and isinstance(specs[0], DirichletSection):
            return [t for t in specs if isinstance(t, DirichletSection)]
        return None

    def dirichlet(self, lower: np.ndarray, upper: np.ndarray) -> list[Dirichlet]:
        """The Dirichlet conditions as :class:`msfem.Dirichlet` (affine data)."""
        tables = self._tables()
        if tables is None:
            value: Any = self.problem.dirichlet
            return [Dirichlet(value)]
        return [Dirichlet(_affine(t.value, t.gradient), _faces(t.faces, lower, upper))
                for t in tables]


def _affine(value: float | list[float], gradient: Any) -> Any:
    if gradient is None:
        return value
    v = np.atleast_1d(np.asarray(value, dtype=float))
    A = np.atleast_2d(np.asarray(gradient, dtype=float))
    d = A.shape[1]

    def g(x: np.ndarray) -> np.ndarray:
        out = v[:, None] + A @ x[:d]
        return out[0] if out.shape[0] == 1 else out

    return g


def _faces(faces: Sequence[str] | None, lower: np.ndarray,
           upper: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    if not faces:
        return None
    tol = 1e-10 * float(np.max(upper - lower))

    def marker(x: np.ndarray) -> np.ndarray:
        on = np.zeros(x.shape[1], dtype=bool)
        for f in faces:
            axis, side = _FACES[f]
            on |= np.abs(x[axis] - (upper if side else lower)[axis]) < tol
        return on

    return marker


#: pydantic error types of a union branch that did not match the value's type at all.
_BRANCH_MISMATCH = {"float_type", "float_parsing", "int_type", "int_parsing", "list_type",
                    "model_type", "model_attributes_type", "dict_type", "string_type"}


def _message(err: pydantic.ValidationError, path: Path) -> str:
    """One line from a validation error (a union branch of the wrong type is left out)."""
    errors = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith(("function-", "list[",
                                                                   "DirichletSection"))]
        loc = [p for p in loc if p not in ("float", "int")]
        errors.append((loc, e))
    parts = []
    for loc, e in errors:
        same = [f for lc, f in errors if lc[:2] == loc[:2]]
        if e["type"] in _BRANCH_MISMATCH and any(f["type"] not in _BRANCH_MISMATCH
                                                 for f in same):
            continue
        where = f"[{loc[0]}] {'.'.join(loc[1:])}" if loc else ""
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{where}: {msg}" if where else msg)
    return f"{str(path)!r}: " + "; ".join(dict.fromkeys(parts))


def load_config(path: str | Path, model: type[FE2Config] = FE2Config) -> Any:
    """Read and validate an ``msfem fe2`` configuration (or one of an extension ``model``).

    Raises:
        ConfigError: one line naming the section, the key and the problem.
    """
    path = Path(path)
    raw = read_toml(path)
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as err:
        raise ConfigError(_message(err, path)) from None


def write_results(out: Path, metrics: dict[str, Any], U: Any, output: OutputSection,
                  comm: MPI.Comm) -> None:
    """``out/metrics.json`` and (``output.fields``) ``out/fields/``, each atomically."""
    io.write_metrics(out / "metrics.json", metrics, comm)
    if output.fields:
        with _runtime.atomic_directory(out / "fields", comm) as tmp:
            io.write_fields(tmp, [U], format=output.format)


def run(config: str | Path, out: str | Path, *, restart: bool = False,
        comm: MPI.Comm = MPI.COMM_WORLD) -> FE2Result:
    """Run ``msfem fe2``: validate, solve (or continue) the load steps, write ``out``.

    Collective. Returns the :class:`~msfem.fe2.FE2Result`.
    """
    with _runtime.collective(comm):
        cfg = load_config(config)
        out = _runtime.check_output_dir(out)
    m = cfg.mesh
    h = StructuredHierarchy(comm, m.N, m.M, m.cell, lower=m.lower, upper=m.upper)
    load: Any = cfg.problem.load
    fe2 = FE2(h, cfg.law(), load=load, dirichlet=cfg.dirichlet(h.lower, h.upper),
              params=cfg.fe2.solver_parameters())
    t0 = time.perf_counter()
    result = fe2.solve(checkpoint=out / "checkpoint" if cfg.output.checkpoint else None,
                       restart=restart)
    wall = float(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    U = result.U
    norm = math.sqrt(comm.allreduce(float(np.sum(
        U.x.array[: fe2.space.size_local] ** 2))))
    metrics = {
        "command": "fe2",
        "ranks": comm.size,
        "law": fe2.law.describe(),
        "parameters": cfg.fe2.solver_parameters().model_dump(),
        "macro_dofs": fe2.space.size_global,
        "macro_points": int(comm.allreduce(fe2.n_points)),
        "micro_dofs": fe2.rve.size,
        "micro_solves": result.micro_solves,
        "restarted_from": result.restarted_from,
        "steps": result.steps,
        "hill_mandel_max": result.hill_mandel_max,
        "u_l2_nodal": norm,
        "u_max": float(comm.allreduce(float(np.abs(U.x.array).max(initial=0.0)), op=MPI.MAX)),
        "timings": {**result.timings(), "wall": wall},
        "config_file": str(config),
        "config": cfg.model_dump(),
    }
    write_results(out, metrics, U, cfg.output, comm)
    _runtime.logger.info("fe2: %d load steps, Hill-Mandel max %.1e, results in %s",
                         len(result.steps), result.hill_mandel_max, out)
    return result
