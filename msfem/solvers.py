"""PETSc linear solvers configured by options dicts with a unique prefix.

Every solve in msfem goes through :func:`make_ksp` and :func:`solve`, so every solve
checks the KSP converged reason and raises :class:`SolverError` naming it.
"""

from __future__ import annotations

import contextlib
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


def _registered(kind: str, name: str) -> bool:
    """Whether ``name`` is a KSP (``kind="ksp"``) or PC type of this PETSc build."""
    obj = PETSc.KSP().create(PETSc.COMM_SELF) if kind == "ksp" else \
        PETSc.PC().create(PETSc.COMM_SELF)
    try:
        obj.setType(name)
    except PETSc.Error:
        return False
    finally:
        with contextlib.suppress(PETSc.Error):  # (pipelcg cannot destroy before set-up)
            obj.destroy()
    return True


def _solver_packages() -> dict[str, bool]:
    """Direct solver packages PETSc knows by name, and whether this build has each."""
    names = [v for k, v in vars(PETSc.Mat.SolverType).items() if not k.startswith("_")]
    return {str(n).lower(): str(n).lower() == "petsc"
            or bool(PETSc.Sys.hasExternalPackage(str(n).lower())) for n in names}


def check_options(options: Mapping[str, Any] | None, where: str) -> None:
    """Refuse PETSc options that this PETSc build cannot honour, before any solve.

    Checks ``ksp_type`` and ``pc_type`` against the registered types and
    ``pc_factor_mat_solver_type`` against the external packages PETSc was built with
    (e.g. ``pc_type = "hypre"`` on a build without hypre), and that every value is a
    string, number or boolean. ``where`` names the options in the message (e.g.
    ``"[solver]"``).

    Raises:
        ValueError: naming the option, its value and what is available.
    """
    for key, value in (options or {}).items():
        key = str(key).lstrip("-")
        if isinstance(value, float) and value != value or value in (float("inf"), -float("inf")):
            raise ValueError(f"{where} {key} = {value!r} must be finite")
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"{where} {key} = {value!r} must be a PETSc option value (a "
                             f"string, number or true/false)")
        if key in ("ksp_type", "pc_type"):
            kind = key[:-5]
            if not isinstance(value, str) or not _registered(kind, value):
                known = PETSc.KSP.Type if kind == "ksp" else PETSc.PC.Type
                names = sorted(v for k, v in vars(known).items() if not k.startswith("_")
                               and _registered(kind, v))
                raise ValueError(f"{where} {key} = {value!r} is not a {kind.upper()} type of "
                                 f"this PETSc build (misspelt, or its package is not "
                                 f"installed); available: {', '.join(names)}")
        if key == "pc_factor_mat_solver_type":
            packages = _solver_packages()
            if not isinstance(value, str) or not packages.get(value.lower(), False):
                have = sorted(k for k, ok in packages.items() if ok)
                what = "not installed in" if isinstance(value, str) and \
                    value.lower() in packages else "unknown to"
                raise ValueError(f"{where} {key} = {value!r} is {what} this PETSc build; "
                                 f"available: {', '.join(have)}")


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
    check_options(options, f"PETSc options ({prefix})")
    opts = PETSc.Options()
    opts.prefixPush(prefix)
    try:
        for key, value in merged.items():
            opts.setValue(key, value)
        ksp.setFromOptions()
        ksp.getPC().setFromOptions()
    except PETSc.Error as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:]
                       if line.strip() and not line.lstrip().startswith("[")), str(err))
        raise ValueError(f"PETSc options ({prefix}) {dict(options or {})} were refused by "
                         f"PETSc: {detail}") from err
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
