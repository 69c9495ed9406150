r"""Relaxation: solve :math:`g(u) = \nabla E(u) = 0` (or a force balance without an energy).

:func:`newton` takes the Newton step :math:`(H + \mu I)\,p = -g`, with :math:`\mu = 0`
unless :math:`p` is not a descent direction (then :math:`\mu` grows tenfold from
:math:`10^{-8}\max|H_{ii}|`: a Levenberg--Marquardt safeguard, like a trust region), and a
backtracking (Armijo) line search on the energy, or on :math:`\frac12|g|^2` for a
non-conservative force balance (the ghost-force-corrected / force-based coupling).

:func:`fire` is the Fast Inertial Relaxation Engine (Bitzek, Koskinen, Gähler, Moseler,
Gumbsch, Phys. Rev. Lett. 97 (2006) 170201), derivative-free in the Hessian.

Both stop when :math:`\max_k |g_k| \le` ``force_tol`` and report a converged reason; with
``check=True`` (default) anything else raises :class:`RelaxationError` naming the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


class RelaxationError(RuntimeError):
    """A relaxation that did not reach its force tolerance."""


@dataclass(frozen=True)
class Relaxation:
    r"""Result of a relaxation.

    Attributes:
        u: The final iterate.
        iterations: Newton (or FIRE) iterations taken.
        max_force: :math:`\max_k |g_k(u)|`.
        reason: ``"CONVERGED_FORCE_TOL"`` or ``"DIVERGED_..."``.
    """

    u: np.ndarray
    iterations: int
    max_force: float
    reason: str

    @property
    def converged(self) -> bool:
        """Whether the force tolerance was reached."""
        return self.reason.startswith("CONVERGED")


def _finish(what: str, u: np.ndarray, k: int, gmax: float, reason: str, tol: float,
            check: bool) -> Relaxation:
    result = Relaxation(u, k, gmax, reason)
    if check and not result.converged:
        raise RelaxationError(
            f"{what} did not converge ({reason}) after {k} iterations: max force {gmax:.3e} > "
            f"force_tol {tol:.1e}; raise max_iterations, apply the load in smaller steps, or "
            f"loosen force_tol")
    return result


def newton(gradient: Callable[[np.ndarray], np.ndarray],
           jacobian: Callable[[np.ndarray], sp.spmatrix],
           u0: np.ndarray, *, energy: Callable[[np.ndarray], float] | None = None,
           force_tol: float = 1e-10, max_iterations: int = 50, what: str = "relaxation",
           check: bool = True) -> Relaxation:
    r"""Newton's method with a line search for :math:`g(u) = 0`.

    Args:
        gradient: :math:`g(u)` (the energy gradient, or minus the forces), flat.
        jacobian: :math:`\partial g/\partial u`, sparse (symmetric when ``energy`` is given).
        u0: Starting point (flat).
        energy: :math:`E(u)` with :math:`g = \nabla E`; ``None`` for a force balance.
        force_tol: Stop when :math:`\max|g| \le` ``force_tol``.
        max_iterations: Newton iterations allowed.
        what: Name used in the error message.
        check: Raise :class:`RelaxationError` if not converged.

    Returns:
        The :class:`Relaxation`.
    """
    u = np.array(u0, dtype=float)
    g = gradient(u)
    merit = (lambda v: energy(v)) if energy is not None else None
    for k in range(max_iterations + 1):
        gmax = float(np.max(np.abs(g), initial=0.0))
        if not np.isfinite(gmax):
            return _finish(what, u, k, gmax, "DIVERGED_NAN", force_tol, check)
        if gmax <= force_tol:
            return _finish(what, u, k, gmax, "CONVERGED_FORCE_TOL", force_tol, check)
        if k == max_iterations:
            break
        J = sp.csc_matrix(jacobian(u))
        scale = float(np.max(np.abs(J.diagonal()), initial=1.0))
        mu = 0.0
        while True:
            A = J + mu * sp.identity(J.shape[0], format="csc") if mu else J
            try:
                p = spla.splu(A).solve(-g)
            except RuntimeError:          # exactly singular: shift
                p = np.full_like(g, np.nan)
            descent = float(g @ p) < 0 if energy is not None else True
            if np.all(np.isfinite(p)) and descent:
                break
            mu = 1e-8 * scale if mu == 0 else 10 * mu
            if mu > 1e8 * scale:
                return _finish(what, u, k, gmax, "DIVERGED_LINEAR_SOLVE", force_tol, check)
        # backtracking on E (Armijo) or on |g|^2 / 2
        e0 = merit(u) if merit is not None else 0.5 * float(g @ g)
        slope = float(g @ p) if merit is not None else -float(g @ g)
        t, accepted = 1.0, False
        for _ in range(40):
            v = u + t * p
            gv = gradient(v)
            ev = merit(v) if merit is not None else 0.5 * float(gv @ gv)
            if np.isfinite(ev) and (ev <= e0 + 1e-4 * t * slope
                                    or (abs(ev - e0) <= 1e-12 * (abs(e0) + 1)
                                        and np.max(np.abs(gv)) < gmax)):
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return _finish(what, u, k, gmax, "DIVERGED_LINE_SEARCH", force_tol, check)
        u, g = v, gv
    return _finish(what, u, max_iterations, float(np.max(np.abs(g))), "DIVERGED_MAX_IT",
                   force_tol, check)


def fire(gradient: Callable[[np.ndarray], np.ndarray], u0: np.ndarray, *,
         force_tol: float = 1e-8, max_iterations: int = 100000, dt: float = 0.01,
         dt_max: float = 0.1, what: str = "FIRE relaxation", check: bool = True) -> Relaxation:
    r"""FIRE (Bitzek et al. 2006): damped MD with velocity mixing and adaptive time step.

    With :math:`f = -g`: Euler-Cromer steps :math:`v \leftarrow v + \Delta t f`,
    :math:`u \leftarrow u + \Delta t v`; while :math:`P = f\cdot v > 0` mix
    :math:`v \leftarrow (1-\alpha)v + \alpha |v| \hat f` and, after 5 such steps, grow
    :math:`\Delta t` by 1.1 (up to ``dt_max``) and shrink :math:`\alpha` by 0.99; when
    :math:`P \le 0` set :math:`v = 0`, halve :math:`\Delta t` and reset
    :math:`\alpha = 0.1`. Unit masses.

    Returns:
        The :class:`Relaxation` (``check`` as in :func:`newton`).
    """
    u = np.array(u0, dtype=float)
    v = np.zeros_like(u)
    alpha, n_pos = 0.1, 0
    f = -gradient(u)
    for k in range(max_iterations):
        fmax = float(np.max(np.abs(f), initial=0.0))
        if not np.isfinite(fmax):
            return _finish(what, u, k, fmax, "DIVERGED_NAN", force_tol, check)
        if fmax <= force_tol:
            return _finish(what, u, k, fmax, "CONVERGED_FORCE_TOL", force_tol, check)
        power = float(f @ v)
        if power > 0:
            fn = np.linalg.norm(f)
            v = (1 - alpha) * v + alpha * np.linalg.norm(v) * f / fn
            n_pos += 1
            if n_pos > 5:
                dt, alpha = min(1.1 * dt, dt_max), 0.99 * alpha
        else:
            v[:] = 0.0
            dt, alpha, n_pos = 0.5 * dt, 0.1, 0
        v = v + dt * f
        u = u + dt * v
        f = -gradient(u)
    return _finish(what, u, max_iterations, float(np.max(np.abs(f))), "DIVERGED_MAX_IT",
                   force_tol, check)
