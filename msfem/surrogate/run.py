r"""The commands ``msfem surrogate build`` and ``msfem surrogate solve``.

The configuration is an ``msfem fe2`` configuration (:mod:`msfem.fe2.run`: ``[mesh]``,
``[fe2]`` with the micro law and the RVE, ``[problem]``, ``[output]``) plus a
``[surrogate]`` section, validated as a whole on every rank before anything is computed::

    [surrogate]
    samples = 32             # design rows (box centre + 31 Sobol' points)
    design = "sobol"         # or "latin-hypercube"
    lower = -1.0             # the box of macro gradients G (one number or m numbers)
    upper = 1.0
    tolerance = 1e-2         # relative uncertainty above which the law refines or warns
    active = true            # active learning: RVE solves where the law is uncertain

``build`` writes (or resumes, or extends) the HDF5 database; ``solve`` fits the law to it,
runs the FE² macro Newton with it (:class:`~msfem.surrogate.SurrogateMicro`) and writes
``DIR/metrics.json`` (the Newton history, the law's size and uncertainty, the samples
added by active learning, timings: fit, evaluation, RVE solves, macro) and the macro field.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pydantic
from mpi4py import MPI

from msfem import _runtime
from msfem.fe2.macro import FE2, FE2Result
from msfem.fe2.run import FE2Config, write_results
from msfem.fe2.run import load_config as fe2_load_config
from msfem.mesh import StructuredHierarchy
from msfem.surrogate.database import Design, RVEDatabase, build_database, micro_fingerprint
from msfem.surrogate.micro import SurrogateMicro
from msfem.surrogate.model import SurrogateLaw

__all__ = ["SurrogateConfig", "build", "load_config", "solve"]


class SurrogateSection(Design):
    """``[surrogate]``: the design of the database and the use of the law.

    Attributes:
        tolerance: largest accepted relative uncertainty of the law.
        active: refine the database by RVE solves where the uncertainty is larger.
        max_new: RVE solves per refinement round.
        max_rounds: refinement rounds per macro iteration.
        degree: degree of the polynomial potential of the law's trend.
    """

    tolerance: float = pydantic.Field(1e-2, gt=0.0)
    active: bool = True
    max_new: int = pydantic.Field(8, ge=1)
    max_rounds: int = pydantic.Field(4, ge=0)
    degree: int = pydantic.Field(4, ge=2, le=6)

    def design_only(self) -> Design:
        """The :class:`~msfem.surrogate.Design` part."""
        return Design(**self.model_dump(include=set(Design.model_fields)))


class SurrogateConfig(FE2Config):
    """A whole ``msfem surrogate`` configuration: ``msfem fe2``'s plus ``[surrogate]``."""

    surrogate: SurrogateSection = SurrogateSection()

    @pydantic.model_validator(mode="after")
    def _box(self) -> SurrogateConfig:
        m = int(np.prod(self.law().gradient_shape(self.mesh.dim)))
        self.surrogate.box(m)  # raises with the sizes
        return self

    def fingerprint(self) -> dict:
        """The database fingerprint this configuration needs."""
        p = self.fe2.solver_parameters()
        micro = {"micro_cells": p.micro_cells, "quadrature_degree": p.micro_quadrature_degree,
                 "rtol": p.micro_rtol, "atol": p.micro_atol,
                 "max_iterations": p.micro_max_iterations}
        return micro_fingerprint(self.law(), self.mesh.dim, self.mesh.cell, micro,
                                 self.surrogate.design_only())


def load_config(path: str | Path) -> SurrogateConfig:
    """Read and validate an ``msfem surrogate`` configuration.

    Raises:
        ConfigError: one line naming the section, the key and the problem.
    """
    return fe2_load_config(path, SurrogateConfig)


def build(config: str | Path, out: str | Path, *, comm: MPI.Comm = MPI.COMM_WORLD,
          stop_after: int | None = None) -> Path:
    """``msfem surrogate build``: the database of ``config`` at ``out`` (collective)."""
    with _runtime.collective(comm):
        cfg = load_config(config)
        out = Path(out)
        if out.exists() and out.is_dir():
            raise ValueError(f"--out {str(out)!r} is a directory: give the database file, "
                             f"e.g. {str(out / 'database.h5')!r}")
    t0 = time.perf_counter()
    path = build_database(out, cfg.law(), cfg.mesh.dim, cfg.surrogate.design_only(),
                          cell_type=cfg.mesh.cell, micro=cfg.fe2.solver_parameters(),
                          comm=comm, stop_after=stop_after)
    _runtime.logger.info("surrogate: database %s complete (%.1f s)", path,
                         time.perf_counter() - t0)
    return path


def solve(config: str | Path, database: str | Path, out: str | Path, *,
          comm: MPI.Comm = MPI.COMM_WORLD) -> FE2Result:
    """``msfem surrogate solve``: fit the law to ``database``, run the macro Newton, write ``out``.

    Collective. Returns the :class:`~msfem.fe2.FE2Result`.
    """
    with _runtime.collective(comm):
        cfg = load_config(config)
        out = _runtime.check_output_dir(out)
    db = RVEDatabase.read(database, comm, expect=cfg.fingerprint())
    s = cfg.surrogate
    t0 = time.perf_counter()
    law = SurrogateLaw.fit(db, degree=s.degree, seed=s.seed)
    t_fit = float(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    micro = SurrogateMicro(law, db, tolerance=s.tolerance, active=s.active,
                           max_new=s.max_new, max_rounds=s.max_rounds, comm=comm)
    m = cfg.mesh
    h = StructuredHierarchy(comm, m.N, m.M, m.cell, lower=m.lower, upper=m.upper)
    fe2 = FE2(h, cfg.law(), load=cfg.problem.load, dirichlet=cfg.dirichlet(h.lower, h.upper),
              params=cfg.fe2.solver_parameters(), micro=micro)
    t0 = time.perf_counter()
    result = fe2.solve(checkpoint=out / "checkpoint" if cfg.output.checkpoint else None)
    wall = float(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    U = result.U
    norm = math.sqrt(comm.allreduce(float(np.sum(U.x.array[: fe2.space.size_local] ** 2))))
    metrics = {
        "command": "surrogate solve",
        "ranks": comm.size,
        "law": fe2.law.describe(),
        "database": str(database),
        "samples": len(micro.database.G) if micro.database is not None else law.samples,
        "samples_added": micro.added,
        "max_uncertainty": micro.max_uncertainty,
        "tolerance": s.tolerance,
        "macro_dofs": fe2.space.size_global,
        "macro_points": int(comm.allreduce(fe2.n_points)),
        "rve_solves": result.micro_solves,
        "steps": result.steps,
        "u_l2_nodal": norm,
        "timings": {"fit": t_fit,
                    "evaluate": float(comm.allreduce(micro.t_evaluate, op=MPI.MAX)),
                    "active_learning": float(comm.allreduce(micro.t_newton, op=MPI.MAX)),
                    "macro_solve": result.timings()["macro_solve"], "wall": wall},
        "config_file": str(config),
        "config": cfg.model_dump(),
    }
    write_results(out, metrics, U, cfg.output, comm)
    _runtime.logger.info("surrogate: %d load steps, %d samples (%d added), results in %s",
                         len(result.steps), metrics["samples"], micro.added, out)
    return result


