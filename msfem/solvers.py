"""PETSc linear solvers configured by options dicts with a unique prefix.

Every solve in msfem goes through :func:`make_ksp` and :func:`solve`, so every solve
checks the KSP converged reason and raises :class:`SolverError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from petsc4py import PETSc

#: Default for the fine-scale reference: CG + GAMG (needs the near-null space).
FINE_OPTIONS: dict[str, Any] = {
    "ksp_type": "cg",
    "pc_type": "gamg",
    "ksp_rtol": 1e-12,
    "ksp_atol": 1e-30,
    "ksp_max_it": 2000,
}
#: Direct solve with MUMPS (works in serial and in parallel).
DIRECT_OPTIONS: dict[str, Any] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}
#: Local patch problems live on COMM_SELF: PETSc's own sparse LU is the fastest there.
LOCAL_OPTIONS: dict[str, Any] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "petsc",
    "pc_factor_mat_ordering_type": "nd",
}

_REASONS = {v: k for k, v in vars(PETSc.KSP.ConvergedReason).items() if not k.startswith("_")}


class SolverError(RuntimeError):
    """A PETSc solve did not converge."""


def make_ksp(
    A: PETSc.Mat, prefix: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> PETSc.KSP:
    """Create a KSP on ``A``'s communicator, configured from ``defaults`` updated by ``options``.

    The options are pushed into the PETSc options database under ``prefix`` (so command
    line ``-<prefix>ksp_monitor`` etc. also work) and removed again afterwards.
    """
    ksp = PETSc.KSP().create(A.getComm())
    ksp.setOperators(A)
    ksp.setOptionsPrefix(prefix)
    merged = dict(defaults)
    merged.update(options or {})
    if str(merged.get("pc_type")) not in ("lu", "cholesky"):  # factor options would dangle
        merged.pop("pc_factor_mat_solver_type", None)
        merged.pop("pc_factor_mat_ordering_type", None)
    opts = PETSc.Options()
    opts.prefixPush(prefix)
    try:
        for key, value in merged.items():
            opts.setValue(key, value)
        ksp.setFromOptions()
        ksp.getPC().setFromOptions()
    finally:
        opts.prefixPop()
        for key in merged:
            opts.delValue(prefix + key)
    return ksp


def check(ksp: PETSc.KSP, what: str) -> None:
    """Raise :class:`SolverError` if the last solve of ``ksp`` diverged."""
    reason: int = ksp.getConvergedReason()  # type: ignore[assignment]  # an int at runtime
    if reason < 0:
        raise SolverError(
            f"{what}: PETSc KSP diverged with reason {_REASONS.get(reason, reason)} after "
            f"{ksp.getIterationNumber()} iterations (residual {ksp.getResidualNorm():.3e}). "
            f"Raise -{ksp.getOptionsPrefix()}ksp_max_it, loosen ksp_rtol, or use a direct "
            f"solver ({DIRECT_OPTIONS})."
        )


def solve(ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec, what: str) -> int:
    """Solve ``A x = b`` with ``ksp``; return the iteration count, raise if it diverged."""
    try:
        ksp.solve(b, x)
    except PETSc.Error as err:  # e.g. zero pivot in a factorisation
        raise SolverError(f"{what}: PETSc failed ({err})") from err
    check(ksp, what)
    return ksp.getIterationNumber()
