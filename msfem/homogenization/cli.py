r"""``msfem homogenize`` and ``msfem rve``: effective tensors and RVE studies from a TOML file.

**homogenize.** The ``[cell]`` section (:mod:`~msfem.homogenization.schema`) describes a
two-phase (or Hou--Wu) unit cell :math:`Y = [0, 1]^2` and the physics
(:mod:`~msfem.homogenization.unit_cell`). The cell problems
(:func:`~msfem.homogenization.effective_tensor`,
:func:`~msfem.homogenization.effective_elasticity`) give :math:`A^*` by the energy and the
flux formula and their relative difference; the bounds and exact formulas that apply are
reported with the relative amount by which :math:`A^*` violates them
(:mod:`~msfem.homogenization.verification`).

**rve.** The ``[rve]`` section drives :func:`~msfem.homogenization.rve_size_study` on a
random checkerboard (Kanit et al. 2003); ``rve.csv``, ``rve.json``, ``rve.png`` and
``rve.pdf`` (:mod:`~msfem.homogenization.report`) are written into ``--out`` all at once
(:func:`msfem._runtime.atomic_directory`).

Both commands validate the whole configuration with :class:`~msfem.config.ConfigError`
before any computation; both are collective and print/write from rank 0 only.

References:
    REFERENCES.md §5; T. Kanit et al., Int. J. Solids Struct. 40 (2003) 3647.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from msfem import _runtime  # (msfem/__init__ has loaded MPI/PETSc in the right order)
from msfem._runtime import memory_estimate
from msfem.homogenization.cell import effective_elasticity, effective_tensor
from msfem.homogenization.report import format_table, plain, rve_csv, rve_figure, rve_summary
from msfem.homogenization.rve import rve_size_study
from msfem.homogenization.schema import (
    CELL_SCHEMA,
    MICROSTRUCTURES,
    RVE_SCHEMA,
    CellSpec,
    RVESpec,
    read_cell_config,
    read_rve_config,
)
from msfem.homogenization.unit_cell import build_cell, cell_mean, conductivity, lame_fields
from msfem.homogenization.verification import ROUNDOFF, conductivity_checks, elasticity_checks

__all__ = [
    "CELL_SCHEMA",
    "MICROSTRUCTURES",
    "ROUNDOFF",
    "RVE_SCHEMA",
    "CellSpec",
    "RVESpec",
    "homogenize",
    "read_cell_config",
    "read_rve_config",
    "rve",
]

logger = _runtime.logger


def homogenize(config_path: Path, as_json: bool = False,
               comm: MPI.Comm = MPI.COMM_WORLD, *, force: bool = False) -> dict[str, Any]:
    """``msfem homogenize CONFIG [--json]``: effective tensor, bounds and references.

    Collective. Prints one JSON object (``as_json``) or a readable table on rank 0's
    stdout; the log goes to stderr.

    Returns:
        The summary (the JSON object): ``effective_tensor`` (energy formula),
        ``flux_tensor``, ``energy_flux_defect``, ``bounds``, ``bound_violations``
        (relative, 0 inside), ``reference`` (exact formulas with the relative difference),
        ``volume_fraction`` (requested, mesh), ``mesh``, ``runtime_s``, ``config``.

    Raises:
        ConfigError: invalid configuration (before any computation).
        HomogenizationSolverError: a cell solve failed.

    """
    t0 = time.perf_counter()
    with _runtime.collective(comm):  # every rank agrees before computing
        cfg, spec = read_cell_config(config_path)
    bs = 2 if spec.physics == "elasticity" else 1
    dofs = (spec.n * spec.degree + 1) ** 2 * bs * (2 if spec.microstructure == "disc" else 1)
    _runtime.check_memory(memory_estimate(dofs, degree=spec.degree, block_size=bs),
                          f"'msfem homogenize' with {dofs:.3g} dofs", comm, force=force,
                          hint="lower [cell] n or degree")
    options = cfg.get("solver")
    logger.info("homogenize: %s %s cell, n = %d, P%d", spec.physics, spec.microstructure,
                spec.n, spec.degree)
    mesh, chi = build_cell(spec, comm)
    fraction = None if chi is None else cell_mean(mesh, chi)
    if fraction is not None and spec.fraction is not None \
            and abs(fraction - spec.fraction) > 1e-6:
        logger.warning("homogenize: phase 2 fills %.6g of the mesh instead of fraction = %.6g"
                       " (interfaces off the mesh lines); the bounds use %.6g",
                       fraction, spec.fraction, fraction)
    if spec.physics == "conductivity":
        a, means = conductivity(spec, mesh, chi)
        res = effective_tensor(mesh, a, degree=spec.degree, petsc_options=options)
        checks = conductivity_checks(spec, res, fraction, means)
        notation = "Cartesian"
        phases = {"a1": spec.phase1[0], "a2": spec.phase2[0]} if chi is not None else {}
    else:
        assert chi is not None and fraction is not None  # Hou--Wu is refused by the config
        (k1, m1), (k2, m2) = spec.phase1, spec.phase2
        lam, mu = lame_fields(spec, chi)
        res = effective_elasticity(mesh, lam, mu, degree=spec.degree, petsc_options=options)
        checks = elasticity_checks(spec, res, fraction)
        notation = "Mandel (11, 22, sqrt2 12), plane strain"
        phases = {"k1": k1, "mu1": m1, "k2": k2, "mu2": m2}
    V = res.correctors[0].function_space
    tdim = mesh.topology.dim
    num_cells = mesh.topology.index_map(tdim).size_global
    description = (f"gmsh disc cell, size 1/{spec.n}, {num_cells} cells, geometry order "
                   f"{spec.order}" if spec.microstructure == "disc" else
                   f"{spec.n} x {spec.n} {spec.cell_type} mesh")
    summary = {
        "command": "homogenize",
        "config_file": str(config_path),
        "physics": spec.physics,
        "microstructure": spec.microstructure,
        "phases": phases,
        "volume_fraction": {"requested": spec.fraction, "mesh": fraction},
        "mesh": {"description": description, "num_cells": num_cells, "degree": spec.degree,
                 "num_dofs": V.dofmap.index_map.size_global * V.dofmap.index_map_bs},
        "ranks": comm.size,
        "notation": notation,
        "effective_tensor": res.tensor,
        "flux_tensor": res.flux_tensor,
        "energy_flux_defect": res.energy_flux_defect,
        **checks,
        "runtime_s": comm.allreduce(time.perf_counter() - t0, op=MPI.MAX),
        "config": cfg,
    }
    summary = plain(summary)
    if comm.rank == 0:
        text = json.dumps(summary, allow_nan=False) if as_json else format_table(summary)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return summary


def rve(config_path: Path, out_dir: Path, comm: MPI.Comm = MPI.COMM_WORLD, *,
        force: bool = False) -> dict[str, Any]:
    """``msfem rve CONFIG --out DIR``: SVE-to-RVE study on a random checkerboard.

    Collective. Writes ``rve.csv`` (window, bc, mean, std, eps_rel, n), ``rve.json``
    (summary, RVE sizes per boundary condition, bounds) and ``rve.png``/``rve.pdf`` into
    ``out_dir``, all at once; a failed run leaves ``out_dir`` as it was.

    Returns:
        The summary written to ``rve.json``.

    Raises:
        ConfigError: invalid configuration (before any computation).
        OSError: ``out_dir`` cannot be created or written (before any computation).

    """
    t0 = time.perf_counter()
    with _runtime.collective(comm):  # every rank agrees before computing or writing
        cfg, spec = read_rve_config(config_path)
        out = _runtime.check_output_dir(out_dir)
    n = max(spec.window_sizes) * spec.elements_per_cell
    dofs = (n * spec.degree + 1) ** 2
    _runtime.check_memory(memory_estimate(dofs, degree=spec.degree),
                          f"'msfem rve' with windows of {dofs:.3g} dofs", comm, force=force,
                          hint="lower [rve] window_sizes or elements_per_cell")
    logger.info("rve: windows L/l = %s, %d realisations, bcs %s", list(spec.window_sizes),
                spec.realisations, ", ".join(spec.bcs))
    study = rve_size_study(spec.window_sizes, n_realisations=spec.realisations,
                           values=spec.values, fraction=spec.fraction,
                           elements_per_cell=spec.elements_per_cell, precision=spec.precision,
                           bcs=spec.bcs, seed=spec.seed, degree=spec.degree, comm=comm,
                           petsc_options=cfg.get("solver"))
    summary = rve_summary(spec, study, cfg, Path(config_path))
    summary["ranks"] = comm.size
    summary["runtime_s"] = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    summary = plain(summary)
    with _runtime.atomic_directory(out, comm) as tmp:
        _runtime.atomic_write_text(tmp / "rve.csv", rve_csv(spec, study), comm)
        _runtime.atomic_write_json(tmp / "rve.json", summary, comm)
        error = None
        if comm.rank == 0:
            try:
                rve_figure(spec, study, summary, tmp)
            except Exception as err:  # raise on every rank, not only on rank 0
                error = f"{type(err).__name__}: {err}"
        error = comm.bcast(error, root=0)
        if error:
            raise RuntimeError(f"drawing the RVE figure failed: {error}")
    for bc in spec.bcs:
        logger.info("rve: %s means %s, RVE size (eps_rel <= %g) %s", bc,
                    np.array2string(study.mean[bc], precision=5), spec.precision,
                    study.rve_size[bc])
    logger.info("rve: results written to %s", out)
    return summary
