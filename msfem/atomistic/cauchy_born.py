r"""The Cauchy--Born continuum of a pair-potential lattice.

Under a homogeneous deformation :math:`x = FX` every bond vector :math:`r` of the lattice
becomes :math:`Fr`, so the energy per reference volume is (Ericksen; Tadmor, Ortiz &
Phillips, Phil. Mag. A 73 (1996) 1529)

.. math::
   W(F) = \frac{1}{2\Omega_0}\sum_{r \in \mathcal N} \phi(|F r|),\qquad
   P(F) = \frac{\partial W}{\partial F}
        = \frac{1}{2\Omega_0}\sum_r \phi'(|Fr|)\,\frac{Fr\otimes r}{|Fr|},

.. math::
   \mathbb C_{iJkL}(F) = \frac{\partial^2 W}{\partial F_{iJ}\partial F_{kL}}
   = \frac{1}{2\Omega_0}\sum_r \Bigl[\phi''\,n_i n_k + \frac{\phi'}{|Fr|}(\delta_{ik}
     - n_i n_k)\Bigr] r_J r_L,\quad n = \frac{Fr}{|Fr|},

with :math:`\mathcal N` the neighbour vectors within the cutoff and :math:`\Omega_0` the
volume per atom. :func:`bond_density` evaluates these sums (with arbitrary per-vector
weights, as the coupling methods need) in NumPy, :func:`strain_energy_ufl` writes
:math:`W` in UFL, :func:`elastic_constants` differentiates it twice with UFL and evaluates
:math:`\mathbb C(I)` with a compiled :class:`dolfinx.fem.Expression`, and
:func:`lattice_elastic_constants` obtains the same tensor from the atomistic sparse Hessian
(the bulk part of :math:`\partial^2 E(FX)/\partial F^2`, see there). The hyperelastic FE
problem :math:`\min_u \int_\Omega W(I + \nabla u)\,dx` is :class:`CauchyBornProblem`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from msfem.atomistic.lattice import Lattice
from msfem.atomistic.model import PairModel
from msfem.atomistic.potentials import PairPotential


def bond_density(F: np.ndarray, vectors: np.ndarray, potential: PairPotential,
                 weights: np.ndarray, order: int = 2
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    r"""Weighted bond sums :math:`\sum_r w_{e,r}\phi(|F_e r|)` and their F-derivatives.

    Args:
        F: Deformation gradients, shape (m, d, d).
        vectors: Reference bond vectors r, shape (n_r, d).
        potential: The pair potential.
        weights: :math:`w_{e,r}`, shape (m, n_r).
        order: Derivatives wanted (0, 1 or 2); the others are returned as ``None``.

    Returns:
        ``(E, P, C)`` of shapes (m,), (m, d, d), (m, d, d, d, d): the sums, their first and
        second derivatives with respect to :math:`F_e` (formulas in the module docstring).
    """
    Fr = np.einsum("eij,rj->eri", F, vectors)
    rho = np.linalg.norm(Fr, axis=2)
    n = Fr / rho[..., None]
    E = np.sum(weights * potential.energy(rho), axis=1)
    if order == 0:
        return E, None, None
    d1 = potential.first(rho)
    P = np.einsum("er,eri,rJ->eiJ", weights * d1, n, vectors)
    if order == 1:
        return E, P, None
    d2 = potential.second(rho)
    d = F.shape[1]
    eye = np.eye(d)
    B = ((weights * d2)[..., None, None] * n[..., :, None] * n[..., None, :]
         + (weights * d1 / rho)[..., None, None] * (eye - n[..., :, None] * n[..., None, :]))
    C = np.einsum("erik,rJ,rL->eiJkL", B, vectors, vectors)
    return E, P, C


def strain_energy_density(F: np.ndarray, lattice: Lattice, potential: PairPotential) -> float:
    r""":math:`W(F) = \frac{1}{2\Omega_0}\sum_r \phi(|Fr|)` in NumPy (F of shape (d, d))."""
    R = lattice.neighbour_vectors(potential.cutoff)
    w = np.full((1, len(R)), 0.5 / lattice.atomic_volume)
    return float(bond_density(np.asarray(F, dtype=float)[None], R, potential, w, 0)[0][0])


def strain_energy_ufl(F: Any, lattice: Lattice, potential: PairPotential) -> Any:
    r""":math:`W(F) = \frac{1}{2\Omega_0}\sum_r \phi(|Fr|)` as a UFL expression of F."""
    import ufl

    R = lattice.neighbour_vectors(potential.cutoff)
    terms = []
    for r in R:
        Fr = F * ufl.as_vector([float(c) for c in r])
        terms.append(potential.ufl(ufl.sqrt(ufl.dot(Fr, Fr))))
    return sum(terms[1:], terms[0]) / (2 * lattice.atomic_volume)


def elastic_constants(lattice: Lattice, potential: PairPotential,
                      F: np.ndarray | None = None) -> np.ndarray:
    r""":math:`\mathbb C_{iJkL} = \partial^2 W/\partial F_{iJ}\partial F_{kL}` at F (default I).

    The second derivative is taken symbolically by UFL (``ufl.diff`` of
    :func:`strain_energy_ufl` with respect to a ``ufl.variable``) and evaluated by a
    compiled :class:`dolfinx.fem.Expression` on a one-cell mesh on ``COMM_SELF``.

    Returns:
        Array of shape (d, d, d, d).
    """
    import dolfinx.fem
    import dolfinx.mesh
    import ufl
    from mpi4py import MPI

    d = lattice.dim
    mesh = (dolfinx.mesh.create_unit_interval(MPI.COMM_SELF, 1) if d == 1
            else dolfinx.mesh.create_unit_square(MPI.COMM_SELF, 1, 1))
    F0 = dolfinx.fem.Constant(mesh, np.eye(d) if F is None else np.asarray(F, dtype=float))
    # a fixed label: ufl.variable() numbers labels globally, which would change the
    # expression's signature (and recompile it) from call to call
    Fv = ufl.classes.Variable(F0, ufl.classes.Label(0))
    C = ufl.diff(ufl.diff(strain_energy_ufl(Fv, lattice, potential), Fv), Fv)
    point = np.full((1, mesh.topology.dim), 1.0 / 3.0)
    expr = dolfinx.fem.Expression(C, point, comm=MPI.COMM_SELF)
    return np.asarray(expr.eval(mesh, np.array([0], dtype=np.int32))).reshape((d,) * 4)


def homogeneous_hessian(model: PairModel, F: np.ndarray | None = None) -> np.ndarray:
    r""":math:`\partial^2 E(FX)/\partial F_{iJ}\partial F_{kL} = \sum_{ab} X_{aJ} H_{ai,bk} X_{bL}`.

    The contraction of the model's sparse Hessian H at x = FX with the affine
    displacement fields :math:`u_a = e_i X_{aJ}`. Shape (d, d, d, d).
    """
    X = model.positions
    n, d = X.shape
    x = X @ (np.eye(d) if F is None else np.asarray(F, dtype=float)).T
    H = model.hessian(x)
    U = np.zeros((n * d, d * d))
    for i, J in itertools.product(range(d), range(d)):
        U[i::d, i * d + J] = X[:, J]
    return np.asarray(U.T @ (H @ U)).reshape((d,) * 4)


def lattice_elastic_constants(lattice: Lattice, potential: PairPotential,
                              size: int | None = None) -> np.ndarray:
    r"""Elastic constants of the lattice from the atomistic Hessian, per reference volume.

    For a block of :math:`n_1 \times \dots \times n_d` unit cells (lattice coordinates),
    the number of bonds with vector :math:`r` is :math:`\prod_k (n_k - |r_k|)`, so
    :math:`D(n) = \partial^2 E(FX)/\partial F^2` (:func:`homogeneous_hessian`) is
    multilinear in :math:`n` and its mixed difference
    :math:`\sum_{s\in\{0,1\}^d}(-1)^{d-|s|} D(n + s)` is exactly the bulk value per atom,
    free of surface terms. Dividing by :math:`\Omega_0` gives :math:`\mathbb C`.

    Args:
        lattice: The lattice.
        potential: The pair potential.
        size: Block size :math:`n` (default: twice the interaction range, in cells).

    Returns:
        Array of shape (d, d, d, d).
    """
    d = lattice.dim
    reach = int(np.ceil(potential.cutoff / lattice.spacing)) + 1
    n0 = size if size is not None else 2 * reach + 1
    total = np.zeros((d,) * 4)
    for s in itertools.product((0, 1), repeat=d):
        counts = [n0 + k for k in s]
        grid = np.stack(np.meshgrid(*[np.arange(c) for c in counts], indexing="ij"), -1)
        X = lattice.spacing * grid.reshape(-1, d) @ lattice.basis
        sign = (-1) ** (d - sum(s))
        total += sign * homogeneous_hessian(PairModel(X, potential))
    return total / lattice.atomic_volume


#: SNES Newton with backtracking line search and a direct LU solve (MUMPS).
NEWTON_OPTIONS: dict[str, Any] = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "bt",
    "snes_rtol": 1e-12,
    "snes_atol": 1e-12,
    "snes_stol": 0.0,
    "snes_max_it": 30,
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}


class CauchyBornProblem:
    r"""Hyperelastic Cauchy--Born problem :math:`\min_u \int_\Omega W(I + \nabla u)\,dx`.

    Euler--Lagrange equations :math:`\int_\Omega P(I + \nabla u) : \nabla v\,dx = 0` for
    all :math:`v` vanishing on :math:`\partial\Omega`, with :math:`u = t\,(F - I)X` on
    :math:`\partial\Omega`; the load factor t goes from 1/steps to 1 (load stepping), each
    step solved by :class:`dolfinx.fem.petsc.NonlinearProblem` (SNES Newton) from the
    previous one, with the converged reason checked.

    Args:
        mesh: A dolfinx mesh (any communicator).
        lattice: The lattice (its spacing sets :math:`\Omega_0` and the bond vectors).
        potential: The pair potential.
        degree: Lagrange degree of the displacement.
        petsc_options: SNES/KSP options, on top of :data:`NEWTON_OPTIONS`.
        petsc_options_prefix: Unique options prefix.
    """

    def __init__(self, mesh: Any, lattice: Lattice, potential: PairPotential, *,
                 degree: int = 1, petsc_options: Mapping[str, Any] | None = None,
                 petsc_options_prefix: str = "msfem_cauchy_born_") -> None:
        import dolfinx.fem
        import dolfinx.fem.petsc
        import dolfinx.mesh
        import ufl

        d = mesh.geometry.dim
        if d != lattice.dim:
            raise ValueError(f"CauchyBornProblem: mesh of dimension {d} for a {lattice.dim}D "
                             f"{lattice.name} lattice; use a mesh of dimension {lattice.dim}")
        self.mesh = mesh
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree, (d,)))
        self.u = dolfinx.fem.Function(self.V, name="u")
        self.u_boundary = dolfinx.fem.Function(self.V)
        v = ufl.TestFunction(self.V)
        F = ufl.Identity(d) + ufl.grad(self.u)
        self.energy_form = strain_energy_ufl(F, lattice, potential) * ufl.dx
        residual = ufl.derivative(self.energy_form, self.u, v)
        mesh.topology.create_connectivity(mesh.topology.dim - 1, mesh.topology.dim)
        facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        dofs = dolfinx.fem.locate_dofs_topological(self.V, mesh.topology.dim - 1, facets)
        self.bc = dolfinx.fem.dirichletbc(self.u_boundary, dofs)
        self.problem = dolfinx.fem.petsc.NonlinearProblem(
            residual, self.u, bcs=[self.bc], petsc_options_prefix=petsc_options_prefix,
            petsc_options={**NEWTON_OPTIONS, **(petsc_options or {})})
        self._energy = dolfinx.fem.form(self.energy_form)

    def energy(self) -> float:
        r""":math:`\int_\Omega W(I + \nabla u)\,dx` of the current u (collective)."""
        import dolfinx.fem

        local = dolfinx.fem.assemble_scalar(self._energy)
        return float(self.mesh.comm.allreduce(local))

    def solve(self, F: np.ndarray, steps: int = 1) -> Any:
        """Apply :math:`u = (F - I)X` on the boundary in ``steps`` load steps and solve.

        Returns:
            The displacement :class:`dolfinx.fem.Function`.

        Raises:
            msfem.solvers.SolverError: If SNES does not converge at some step (the message
                names the step and the reason).
        """
        from petsc4py import PETSc

        from msfem.solvers import SolverError

        G = np.asarray(F, dtype=float) - np.eye(self.mesh.geometry.dim)
        reasons = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items()
                   if not k.startswith("_")}
        for k in range(1, steps + 1):
            t = k / steps
            self.u_boundary.interpolate(lambda x, t=t: t * (G @ x[:G.shape[0]]))
            self.problem.solve()
            reason: int = self.problem.solver.getConvergedReason()  # type: ignore[assignment]
            if reason <= 0:
                raise SolverError(f"Cauchy-Born Newton (SNES) did not converge at load step "
                                  f"{k}/{steps} ({reasons.get(reason, reason)}); use more "
                                  f"load steps or a smaller applied strain")
        return self.u
