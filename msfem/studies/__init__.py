r"""Resonance-error studies: reproducible sweeps of MsFEM errors from a TOML file.

A study runs every method of a list on every case of a sweep and measures its error
against one reference per grid:

1. **Plan** (:mod:`msfem.studies.plan`): the ``[study]`` table is validated together with
   the usual sections (:func:`msfem.config.load`) and expanded into cases -- points of the
   Cartesian product of ``eps``, ``H_over_eps``, ``N``, ``M``/``NM`` and coefficient
   parameters, with :math:`H = (H/\varepsilon)\,\varepsilon`. Impossible combinations
   (unknown keys, a shared reference grid with different :math:`NM`, oversampling for a
   variant without it, an unresolved :math:`h > \varepsilon/8`) fail here, before any
   computation or output.
2. **Reference** (:mod:`msfem.studies.reference`): a fine solve ``reference_factor``
   times finer than the MsFEM sub-grid, or Hou--Wu's Richardson extrapolation
   :math:`(4u_{h/2} - u_h)/3`, injected into the MsFEM fine space at the shared lattice
   nodes; computed once per (coefficient, :math:`NM`) grid, one fine solve alive at a
   time, and kept on disk for other studies with ``reference_cache``.
3. **Run** (:mod:`msfem.studies.run`): per case and method the errors
   :math:`\|E\|_\infty, \|E\|_{l^2}` at the coarse vertices and the relative (broken)
   :math:`L^2`, :math:`H^1` and energy errors (a method with ``basis_refinement = r``:
   its basis on a sub-grid r times finer, nodal errors only); ``results.csv`` is
   rewritten atomically after each case, and a restarted study skips the cases already
   there.
4. **Report** (:mod:`msfem.studies.report`): ``report.md`` with the table, observed rates
   (log--log fits of the error against H at fixed ε, against ε at fixed H/ε), figures
   (the resonance peak against :math:`H/\varepsilon`), published numbers with ratios,
   the ``discussion`` of the configuration, and the wall time and peak memory.

The resonance error of MsFEM with linear boundary conditions (Hou, Wu & Cai, Math. Comp.
68 (1999)) is :math:`\|u - u_H\|_{H^1} \le C(H + \varepsilon) + C(\varepsilon/H)^{1/2}`;
oversampling removes the boundary-layer term (Efendiev, Hou & Wu, SIAM J. Numer. Anal.
37 (2000)). Example configurations are in ``studies/`` (``studies/demo.toml``)::

    mpiexec -n 2 python -m msfem.studies studies/demo.toml --out results/demo
"""

from msfem.studies.plan import Plan, load_plan
from msfem.studies.report import write_report
from msfem.studies.run import run_study

__all__ = ["Plan", "load_plan", "main", "run_study", "write_report"]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m msfem.studies CONFIG [--out DIR] [--quiet]``."""
    import argparse
    import logging
    from pathlib import Path

    from mpi4py import MPI

    from msfem import _runtime

    parser = argparse.ArgumentParser(prog="msfem study", description="Run (or resume) an "
                                     "MsFEM resonance-error study from a TOML configuration.")
    parser.add_argument("config", help="study configuration (TOML), e.g. studies/demo.toml")
    parser.add_argument("--out", help="output directory (default: results/<config name>)")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    _runtime.configure_logging(logging.WARNING if args.quiet else logging.INFO)
    out = args.out or str(Path("results") / Path(args.config).stem)
    return _runtime.run_command(lambda: run_study(args.config, out), MPI.COMM_WORLD,
                                prog="msfem study")
