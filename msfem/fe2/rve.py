r"""The FE² micro problem: a periodic RVE on the unit cell, driven by a macro gradient.

On a lattice mesh of :math:`Y = (0, 1)^d` (``MPI.COMM_SELF``, P1/Q1), given the macro
gradient :math:`G` (diffusion) or :math:`H` (mechanics), find the periodic fluctuation
:math:`w` (its value at the corner pinned to 0, which removes the constants/translations)
with

.. math::
    r(w)(v) = \int_Y q(g) \cdot \nabla v \, dy = 0 \quad \forall v \in V_\#, \qquad
    g = G + \nabla w \ \ (\text{or } F = I + H + \nabla w), \quad q = \partial W/\partial g.

In matrices, with the periodic reduction :math:`R` (``w = R\hat w``, from
:func:`msfem.homogenization.periodic.periodic_map`, corner column removed), the unreduced
residual vector :math:`r` and Jacobian :math:`J` of :math:`\int_Y q\cdot\nabla v`, Newton
solves

.. math:: (R^TJR)\,\delta\hat w = -R^T r

until :math:`\|R^Tr\| \le \mathrm{atol} + \mathrm{rtol}\,\|r\|`. With the affine functions
:math:`p_k = y_k` (mechanics :math:`p_{ij} = e_i y_j`) as the columns of :math:`P`, the macro
flux and the consistent tangent are (Kouznetsova, Brekelmans and Baaijens, Comput. Mech. 27,
2001 -- here by sensitivity solves with the converged factorisation)

.. math::
    Q = |Y|^{-1} P^T r = \langle q \rangle, \qquad
    \chi = -(R^TJR)^{-1}R^TJP, \qquad
    C = |Y|^{-1} (P + R\chi)^T J (P + R\chi) = \partial Q / \partial G .

Hill--Mandel: :math:`\langle q\cdot g\rangle - Q\cdot G = |Y|^{-1} r\cdot w` (from the
unreduced residual and the converged state), zero up to the micro tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import scipy.sparse as sp
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from msfem import solvers
from msfem.fe2.laws import Law
from msfem.homogenization.periodic import periodic_map
from msfem.local import DirichletSolver
from msfem.mesh import create_lattice_mesh
from msfem.patches import to_csr

__all__ = ["MicroResult", "MicroSolverError", "RVE"]


class MicroSolverError(solvers.SolverError):
    """A micro (RVE) Newton solve failed: names the macro point, the load step, the reason."""


@dataclass
class MicroResult:
    r"""One converged micro problem.

    Attributes:
        Q: macro flux / first Piola--Kirchhoff stress :math:`\langle q\rangle`, flattened
            (row-major for mechanics).
        C: consistent tangent :math:`\partial Q/\partial G`, shape (m, m).
        w: the converged reduced fluctuation :math:`\hat w` (the point's history).
        residuals: :math:`\|R^Tr\|` per Newton iterate.
        hill_mandel: :math:`|\langle q\cdot g\rangle - Q\cdot G|`.
        energy: :math:`\langle q\cdot g\rangle`.
    """

    Q: np.ndarray
    C: np.ndarray
    w: np.ndarray
    residuals: list[float] = field(default_factory=list)
    hill_mandel: float = 0.0
    energy: float = 0.0


class RVE:
    r"""The micro problem of one rank (see the module docstring), compiled once.

    Args:
        law: the micro law.
        dim: space dimension.
        cell_type: micro cell type (that of the macro mesh).
        cells: micro cells per direction (h = 1/cells).
        quadrature_degree: quadrature degree of the micro integrals.
        rtol, atol: micro Newton tolerance :math:`\|R^Tr\| \le atol + rtol\|r\|`.
        max_iterations: micro Newton iterations before failing.
        petsc_options: options of the micro factorisation (prefix ``msfem_fe2_micro_``;
            default PETSc's sequential LU).
    """

    def __init__(self, law: Law, dim: int, cell_type: str, cells: int, *,
                 quadrature_degree: int = 2, rtol: float = 1e-11, atol: float = 1e-13,
                 max_iterations: int = 30, petsc_options: Mapping[str, Any] | None = None):
        self.law, self.dim = law, dim
        self.rtol, self.atol, self.max_iterations = rtol, atol, max_iterations
        self.mesh, _ = create_lattice_mesh(MPI.COMM_SELF, cell_type, (cells,) * dim,
                                           (1.0 / cells,) * dim)
        shape = law.value_shape(dim)
        self.V = dolfinx.fem.functionspace(self.mesh, ("Lagrange", 1, shape))
        self.w_fun = dolfinx.fem.Function(self.V, name="w")
        gshape = law.gradient_shape(dim)
        self.G = dolfinx.fem.Constant(self.mesh, np.zeros(gshape, dtype=PETSc.ScalarType))
        chi = law.phase_indicator(self.mesh)
        g = ufl.variable(law.total_gradient(self.G, ufl.grad(self.w_fun)))
        W = law.energy(g, chi)
        q = ufl.diff(W, g)
        v, du = ufl.TestFunction(self.V), ufl.TrialFunction(self.V)
        dx = ufl.dx(domain=self.mesh, metadata={"quadrature_degree": quadrature_degree})
        residual = ufl.inner(q, ufl.grad(v)) * dx
        self.r_form = dolfinx.fem.form(residual)
        self.J_form = dolfinx.fem.form(ufl.derivative(residual, self.w_fun, du))
        self.J = dolfinx.fem.create_matrix(self.J_form, block_mode=dolfinx.la.BlockMode.expanded)
        self.J_scipy = self.J.to_scipy()  # shares the data of self.J
        self.volume = 1.0
        # affine functions p_k = y_k (diffusion), p_ij = e_i y_j (mechanics), at the dofs
        bs = self.V.dofmap.index_map_bs
        nb = self.V.dofmap.index_map.size_local + self.V.dofmap.index_map.num_ghosts
        y = self.V.tabulate_dof_coordinates()[:, :dim]
        self.m = int(np.prod(gshape))
        self.P = np.zeros((nb * bs, self.m))
        for c in range(bs):
            self.P[c::bs, c * dim:(c + 1) * dim] = y
        pmap = periodic_map(self.V)
        Pp = to_csr(pmap.P)
        free = np.setdiff1d(np.arange(Pp.shape[1]), pmap.corner_dofs)
        pmap.destroy()
        self.R = Pp[:, free].tocsr()
        self.RT = self.R.T.tocsr()
        self.size = self.R.shape[1]
        self.solver = DirichletSolver(symmetric=False, prefix="msfem_fe2_micro_",
                                      petsc_options=petsc_options)
        self._pattern = False
        self._mat: PETSc.Mat | None = None
        self._reduce: tuple[np.ndarray, tuple[int, int], np.ndarray, np.ndarray] | None = None
        self.r_full = np.zeros(nb * bs)
        #: Seconds in micro Newton (assembly, factorisation, solves) and in the tangent.
        self.t_newton = 0.0
        self.t_tangent = 0.0
        self.solves = 0

    # ------------------------------------------------------------------ assembly
    def _set_state(self, G: np.ndarray, w_hat: np.ndarray) -> None:
        self.G.value[...] = np.asarray(G, dtype=float).reshape(self.G.value.shape)
        self.w_fun.x.array[:] = self.R @ w_hat

    def _residual(self) -> np.ndarray:
        self.r_full[:] = 0.0
        dolfinx.fem.assemble_vector(self.r_full, self.r_form)
        return self.r_full

    def _jacobian(self, what: str) -> sp.csr_matrix:
        """Assemble J, factorise R^T J R (same sparsity from the second call on).

        R is a 0/1 selection (every row holds at most one 1), so R^T J R adds the entries
        of J into a fixed pattern: computed once, then one ``bincount`` per assembly
        (a sparse product would drop entries that vanish, e.g. at F = I, and change the
        pattern the factorisation reuses).
        """
        self.J.set_value(0.0)
        dolfinx.fem.assemble_matrix(self.J, self.J_form)
        J = self.J_scipy
        if self._reduce is None:
            self._reduce = self._reduction(J)
        target, shape, indptr, indices = self._reduce
        keep = target >= 0
        data = np.bincount(target[keep], weights=J.data[keep], minlength=len(indices))
        if self._mat is None:
            self._mat = PETSc.Mat().createAIJ(shape, csr=(indptr, indices, data),  # type: ignore[arg-type]
                                              comm=MPI.COMM_SELF)  # type: ignore[arg-type]
        else:
            self._mat.setValuesCSR(indptr, indices, data)  # type: ignore[arg-type]
            self._mat.assemble()
        mat = self._mat
        try:
            self.solver.set_operator(mat, same_pattern=self._pattern)
        except solvers.SolverError as err:
            raise MicroSolverError(f"{what}: the micro Jacobian R^T J R could not be "
                                   f"factorised ({err})") from err
        self._pattern = True
        return J

    def _reduction(self, J: sp.csr_matrix) -> tuple[np.ndarray, tuple[int, int], np.ndarray,
                                                     np.ndarray]:
        """Per entry of J its position in the CSR pattern of R^T J R (-1: dropped)."""
        R = self.R.tocsr()
        counts = np.diff(R.indptr)
        if counts.max(initial=0) > 1 or not np.allclose(R.data, 1.0):
            raise ValueError("the periodic reduction must be a 0/1 selection")
        rmap = np.full(R.shape[0], -1, dtype=np.int64)
        rows = np.repeat(np.arange(R.shape[0]), counts)
        rmap[rows] = R.indices
        Jrows = np.repeat(np.arange(J.shape[0]), np.diff(J.indptr))
        i, j = rmap[Jrows], rmap[J.indices]
        valid = (i >= 0) & (j >= 0)
        n = self.size
        key = i[valid] * n + j[valid]
        unique, inverse = np.unique(key, return_inverse=True)
        target = np.full(J.nnz, -1, dtype=np.int64)
        target[valid] = inverse
        pr, pc = np.divmod(unique, n)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(pr, minlength=n))])
        return (target, (n, n), indptr.astype(PETSc.IntType), pc.astype(PETSc.IntType))

    # ------------------------------------------------------------------ solve
    def solve(self, G: np.ndarray, w_hat: np.ndarray | None = None,
              what: str = "micro problem") -> MicroResult:
        r"""Newton for the fluctuation at macro gradient ``G``, then :math:`Q`, :math:`C`.

        Args:
            G: macro gradient, shape (d,) or (d, d) (or flattened).
            w_hat: initial reduced fluctuation (the point's history; default 0).
            what: names the macro point and load step in error messages.

        Raises:
            MicroSolverError: no convergence in ``max_iterations``, a non-finite residual,
                or a singular micro Jacobian -- naming ``what`` and the reason.
        """
        t0 = time.perf_counter()
        w_hat = np.zeros(self.size) if w_hat is None else np.array(w_hat, dtype=float)
        residuals: list[float] = []
        J: sp.csr_matrix | None = None
        for it in range(self.max_iterations + 1):
            self._set_state(G, w_hat)
            r = self._residual()
            r_red = self.RT @ r
            norm, scale = float(np.linalg.norm(r_red)), float(np.linalg.norm(r))
            residuals.append(norm)
            if not np.isfinite(norm):
                hint = f"; {self.law.failure_hint}" if self.law.failure_hint else ""
                raise MicroSolverError(f"{what}: micro Newton failed: the residual is not "
                                       f"finite after {it} iterations{hint}")
            tolerance = self.atol + self.rtol * scale
            converged = norm <= tolerance
            if converged and J is not None and self.law.linear:
                break  # J does not depend on the state: keep its factorisation
            if not converged and it == self.max_iterations:
                raise MicroSolverError(
                    f"{what}: micro Newton did not converge in {self.max_iterations} "
                    f"iterations (residual {norm:.3e} > tolerance {tolerance:.3e}; history "
                    f"{', '.join(f'{x:.2e}' for x in residuals[-4:])})")
            J = self._jacobian(what)
            if converged:
                break
            try:
                w_hat += self.solver.solve(-r_red)
            except solvers.SolverError as err:
                raise MicroSolverError(f"{what}: micro Newton step failed ({err})") from err
        assert J is not None
        t1 = time.perf_counter()
        # consistent tangent by sensitivity solves with the converged factorisation
        JP = J @ self.P
        try:
            chi = self.solver.solve(-(self.RT @ JP))
        except solvers.SolverError as err:
            raise MicroSolverError(f"{what}: tangent sensitivity solve failed ({err})") from err
        U = self.P + self.R @ chi
        C = U.T @ (J @ U) / self.volume
        Q = self.P.T @ r / self.volume
        w = self.R @ w_hat
        energy = float(r @ (self.P @ np.ravel(G) + w)) / self.volume
        hill_mandel = abs(float(r @ w)) / self.volume
        self.t_newton += t1 - t0
        self.t_tangent += time.perf_counter() - t1
        self.solves += 1
        return MicroResult(Q=Q, C=C, w=w_hat, residuals=residuals, hill_mandel=hill_mandel,
                           energy=energy)

    def update(self, gradients: np.ndarray, what: str) -> None:
        """Nothing to prepare before a macro iteration (the FE² micro model is exact)."""

    def destroy(self) -> None:
        """Free the factorisation."""
        self.solver.destroy()
        if self._mat is not None:
            self._mat.destroy()
