r"""Norms and errors, computed in parallel (every rank sums what it owns, then allreduce).

Global versions act on dolfinx Functions on a mesh:

.. math::
    \|u\|_{L^2}^2 = \int_\Omega |u|^2, \qquad |u|_{H^1}^2 = \int_\Omega |\nabla u|^2,
    \qquad \|u\|_a^2 = a(u, u).

*Broken* versions sum over coarse cells, :math:`\|e\|_{a,h}^2 = \sum_K a_K(e, e)` -- the
natural norms of nonconforming (oversampled) MsFEM, equal to the global ones for
conforming functions. Nodal errors at the coarse vertices :math:`x_i`:

.. math::
    \|E\|_\infty = \max_i |E(x_i)|, \qquad \|E\|_{l^2} = \Big(\sum_i |E(x_i)|^2 H^d\Big)^{1/2}

(absolute, as in Hou & Wu 1997).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dolfinx
import numpy as np
import ufl
from mpi4py import MPI

from msfem import _runtime  # noqa: F401


def _integral(expr, domain) -> float:
    value = dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * ufl.dx(domain=domain)))
    return float(domain.ufl_cargo().comm.allreduce(value, op=MPI.SUM))


def l2_norm(u) -> float:
    r""":math:`\|u\|_{L^2(\Omega)}` of a Function (or UFL expression with a mesh)."""
    domain = ufl.domain.extract_unique_domain(u)
    return float(np.sqrt(_integral(ufl.inner(u, u), domain)))


def h1_seminorm(u) -> float:
    r""":math:`|u|_{H^1(\Omega)} = \|\nabla u\|_{L^2}`."""
    domain = ufl.domain.extract_unique_domain(u)
    return float(np.sqrt(_integral(ufl.inner(ufl.grad(u), ufl.grad(u)), domain)))


def energy_norm(disc, u: dolfinx.fem.Function) -> float:
    r""":math:`\|u\|_a = a(u, u)^{1/2}` for a :class:`~msfem.problem.Discretisation`."""
    value = dolfinx.fem.assemble_scalar(disc.energy_form(u))
    return float(np.sqrt(u.function_space.mesh.comm.allreduce(value, op=MPI.SUM)))


def errors(u: dolfinx.fem.Function, u_ref, disc=None) -> dict[str, float]:
    """Absolute and relative L2, H1-seminorm (and energy, given ``disc``) errors of ``u``.

    ``u_ref`` is a Function on the same space or a UFL expression (e.g. an exact solution
    written with ``ufl.SpatialCoordinate``).
    """
    e = u - u_ref
    out = {"l2": l2_norm(e), "h1": h1_seminorm(e)}
    out["l2_rel"] = out["l2"] / l2_norm(u_ref)
    out["h1_rel"] = out["h1"] / h1_seminorm(u_ref)
    if disc is not None:
        diff = dolfinx.fem.Function(u.function_space)
        diff.x.array[:] = u.x.array - u_ref.x.array
        out["energy"] = energy_norm(disc, diff)
        out["energy_rel"] = out["energy"] / energy_norm(disc, u_ref)
    return out


def broken_errors(elements: Sequence, coarse_values: Sequence[np.ndarray],
                  u_ref_local: Sequence[np.ndarray], comm: MPI.Comm,
                  energy: Callable | None = None) -> dict[str, float]:
    r"""Broken errors of the multiscale solution :math:`\sum_i U_i\phi_i` per coarse cell.

    ``elements[k]`` is the :class:`~msfem.methods.ElementData` of the k-th owned coarse
    cell, ``coarse_values[k]`` the coarse solution at its trial dofs and ``u_ref_local[k]``
    the reference on its fine dofs. Returns absolute and relative errors in the broken L2,
    H1-seminorm and energy norms: :math:`\|e\|^2 = \sum_K e_K^T M_K e_K` with :math:`M_K`
    the mass, stiffness or energy matrix of the fine sub-grid of K. The energy matrix is
    the element's ``energy``, or ``energy(element)`` when it was not stored (recomputed on
    demand); without either the energy entries are NaN.
    """
    sums = np.zeros(6)
    for e, U, ref in zip(elements, coarse_values, u_ref_local):
        err = ref - e.trial @ U
        M, L = e.metrics
        E = e.energy if e.energy is not None or energy is None else energy(e)
        sums += [err @ (M @ err), ref @ (M @ ref), err @ (L @ err), ref @ (L @ ref),
                 err @ (E @ err) if E is not None else np.nan,
                 ref @ (E @ ref) if E is not None else np.nan]
    sums = comm.allreduce(sums, op=MPI.SUM)
    s = np.sqrt(np.maximum(sums, 0.0))
    return {"l2": float(s[0]), "l2_rel": float(s[0] / s[1]), "h1": float(s[2]),
            "h1_rel": float(s[2] / s[3]), "energy": float(s[4]), "energy_rel": float(s[4] / s[5])}


def nodal_errors(values: np.ndarray, reference: np.ndarray, H: Sequence[float],
                 comm: MPI.Comm) -> dict[str, float]:
    r"""Nodal errors at coarse vertices from the *owned* vertex values (n, bs).

    :math:`\|E\|_\infty = \max_i |E_i|`, :math:`\|E\|_{l^2} = (\sum_i |E_i|^2 H^d)^{1/2}`.
    """
    E = np.linalg.norm(np.atleast_2d((values - reference).reshape(len(values), -1)), axis=1) \
        if len(values) else np.zeros(0)
    linf = comm.allreduce(float(E.max()) if len(E) else 0.0, op=MPI.MAX)
    l2 = comm.allreduce(float((E**2).sum()), op=MPI.SUM)
    return {"nodal_linf": float(linf), "nodal_l2": float(np.sqrt(l2 * np.prod(H)))}
