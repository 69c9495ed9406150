r"""Atomistic-to-continuum coupling: four ways to split the bonds between atoms and continuum.

Every method below works on one :class:`Coupling`: atoms :math:`X` (with a possible defect),
a :class:`~msfem.atomistic.mesh.RepMesh` whose nodes :math:`y` are representative atoms
(every atom of the atomistic region :math:`\mathcal A` is a node), the interpolation
:math:`x = Py`, and fixed (boundary) nodes. Each bond :math:`b = (i, j)` with vector
:math:`r_b = X_j - X_i` is counted with a weight :math:`\beta_b` exactly and with the rest by
the Cauchy--Born rule on the cells, so the energies all read

.. math::
   E(y) = \sum_b \beta_b\,s_b\,\phi(|x_j - x_i|)\big|_{x = Py}
        + \sum_e \sum_r \omega_{e,r}\,\phi(|F_e r|),

(:math:`s_b` a defect's bond scale) and differ only in :math:`\beta` and :math:`\omega`:

* :func:`energy_based` -- **QCE** (Tadmor, Ortiz & Phillips 1996): site energies;
  :math:`E = \sum_{i\in\mathcal A} E_i(Py) + \sum_{i\notin\mathcal A}\Omega_0
  \sum_e\lambda_{i,e}W(F_e)`, i.e. :math:`\beta_b = \frac12(1_{\mathcal A}(i) +
  1_{\mathcal A}(j))` and each half-bond at a continuum site i goes to the cells around
  :math:`X_i` with the angle shares :math:`\lambda_{i,e}`. Not consistent: at an interface
  the forces of a uniformly strained lattice do not vanish (*ghost forces*).
* :func:`ghost_force_corrected` -- **GFC** (Shenoy et al., J. Mech. Phys. Solids 47 (1999)
  611): the QCE forces minus the ghost forces, recomputed at the current state until
  self-consistent. Its fixed point is the force-based equilibrium solved here directly by
  Newton: :math:`f_k = -\partial E^{a}(Py)/\partial x_k` for :math:`k \in \mathcal A`
  (the full atomistic energy of the interpolated crystal) and
  :math:`f_k = -\partial E^{c}/\partial y_k` otherwise (:math:`E^c` the pure Cauchy--Born
  energy, every bond as a bond integral). No total energy; consistent (patch test).
* :func:`quasinonlocal` -- **QNL** (Shimokawa, Mortensen, Schiøtz & Jacobsen, Phys. Rev. B
  69 (2004) 214104), in its bond form (E, Lu & Yang, Phys. Rev. B 74 (2006) 214115): a bond
  is exact (:math:`\beta_b = 1`) when both atoms are nonlocal, otherwise it is the bond
  integral :math:`\int_0^1\phi(|\nabla y(X_i + t r)\,r|)dt` (weights
  :math:`\omega_{e,r} = \sum_b \ell_{b,e}`, :meth:`~msfem.atomistic.mesh.RepMesh.bond_fractions`).
  Consistent: at :math:`y = FY` each bond term's derivative is :math:`\phi'(|Fr|)\,n\cdot
  (v_j - v_i)` either way, and these telescope to zero.
* :func:`blended` -- **bridging domain / Arlequin** (Xiao & Belytschko, CMAME 193 (2004)
  1645; Ben Dhia 1998): atoms and continuum overlap where the blending function
  :math:`0 < \alpha < 1`; each bond counts :math:`\alpha_b = \alpha(\tfrac{X_i+X_j}{2})` of
  its exact energy and :math:`1 - \alpha_b` of its bond integral (a per-bond partition of
  unity: consistent); atoms with a bond of :math:`\alpha_b < 1` are tied to the continuum,
  :math:`x_t = (Py)_t`, by Lagrange multipliers (a KKT Newton solve).

With :math:`\mathcal A` = all atoms every method is the atomistic model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from msfem.atomistic.cauchy_born import bond_density
from msfem.atomistic.lattice import Lattice
from msfem.atomistic.mesh import RepMesh
from msfem.atomistic.model import PairModel, bond_energy, bond_gradient, bond_hessian
from msfem.atomistic.relax import Relaxation, RelaxationError, newton

METHODS = ("qce", "gfc", "qnl", "blended")


#: An imposed deformation: a matrix F (x = FX) or a map X -> x (e.g. a crack-tip K-field).
Deformation = np.ndarray | Callable[[np.ndarray], np.ndarray]


def deform(F: Deformation, X: np.ndarray) -> np.ndarray:
    """Positions x = FX, or F(X) for a callable F."""
    return np.asarray(F(X)) if callable(F) else X @ np.asarray(F, dtype=float).T


def _vector_dofs(P: sp.spmatrix, d: int) -> sp.csr_matrix:
    """P acting on (node, component)-ordered vectors."""
    return sp.kron(P, sp.identity(d), format="csr")


@dataclass
class Coupling:
    r"""Atoms, the representative-atom mesh and the atomistic region, checked once.

    Args:
        model: The atomistic model on all atoms (its bond scales are the defect).
        lattice: The lattice of the reference sites.
        mesh: Mesh with nodes at atoms.
        atomistic: Boolean mask over atoms: the nonlocal region :math:`\mathcal A`.
        fixed: Boolean mask over atoms held at their given positions (the boundary pad).

    Raises:
        ValueError: If a node is not an atom, an atom of :math:`\mathcal A` or a fixed atom
            is not a node, or a defect bond is not inside :math:`\mathcal A`.
    """

    model: PairModel
    lattice: Lattice
    mesh: RepMesh
    atomistic: np.ndarray
    fixed: np.ndarray
    node_atom: np.ndarray = field(init=False)
    P: sp.csr_matrix = field(init=False)
    vectors: np.ndarray = field(init=False)
    bond_vector: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        X = self.model.positions
        a = self.lattice.spacing
        self.atomistic = np.asarray(self.atomistic, dtype=bool)
        self.fixed = np.asarray(self.fixed, dtype=bool)
        dist, idx = cKDTree(X).query(self.mesh.nodes)
        if np.any(dist > 1e-8 * a):
            k = int(np.argmax(dist))
            raise ValueError(f"mesh node {np.round(self.mesh.nodes[k], 6).tolist()} is not an "
                             f"atom (a vacancy or off the crystal); put nodes on atoms only")
        self.node_atom = idx
        is_node = np.zeros(len(X), dtype=bool)
        is_node[idx] = True
        for mask, what in ((self.atomistic, "atomistic-region"), (self.fixed, "fixed")):
            missing = np.flatnonzero(mask & ~is_node)
            if missing.size:
                raise ValueError(f"{what} atom {int(missing[0])} at "
                                 f"{np.round(X[missing[0]], 6).tolist()} is not a mesh node; "
                                 f"make every {what} atom a node (fully resolved)")
        bonds, s = self.model.bonds, self.model.weights
        defect = (s != 1.0) & ~(self.atomistic[bonds[:, 0]] & self.atomistic[bonds[:, 1]])
        if np.any(defect):
            i, j = bonds[np.argmax(defect)]
            raise ValueError(f"defect bond ({i}, {j}) is not inside the atomistic region; "
                             f"enlarge the atomistic region to contain the defect")
        self.P = self.mesh.interpolation(X)
        self.vectors = self.lattice.neighbour_vectors(self.model.potential.cutoff
                                                      + self.model.skin)
        keys = {tuple(k): n for n, k in enumerate(self.lattice.indices(self.vectors))}
        r = X[bonds[:, 1]] - X[bonds[:, 0]]
        self.bond_vector = np.array([keys[tuple(k)] for k in
                                     self.lattice.indices(r, what="bond vector")], dtype=np.int64)

    @property
    def free_nodes(self) -> np.ndarray:
        """Nodes whose atom is not fixed."""
        return ~self.fixed[self.node_atom]

    def affine(self, F: Deformation) -> np.ndarray:
        """Node positions :math:`y = FY` (or F(Y) for a map), shape (n, d)."""
        return deform(F, self.mesh.nodes)

    def bond_integral_weights(self, weights: np.ndarray) -> np.ndarray:
        r"""Weights :math:`\omega_{e,r} = \sum_{b: r_b = r} c_b\,\ell_{b,e}`, shape (m, n_r)."""
        X, bonds = self.model.positions, self.model.bonds
        use = np.flatnonzero(weights != 0)
        omega = np.zeros((len(self.mesh.cells), len(self.vectors)))
        if use.size:
            b, c, frac = self.mesh.bond_fractions(X[bonds[use, 0]], X[bonds[use, 1]])
            np.add.at(omega, (c, self.bond_vector[use[b]]), weights[use[b]] * frac)
        return omega

    def site_share_weights(self, half_weights: np.ndarray) -> np.ndarray:
        r""":math:`\omega_{e,r}` from half-bonds at continuum sites split by angle shares.

        Args:
            half_weights: Shape (nb, 2): the weight of bond b's half at its end 0 and end 1.
        """
        X, bonds = self.model.positions, self.model.bonds
        site, cell, share = self.mesh.site_shares(X)
        start = np.searchsorted(site, np.arange(len(X) + 1))
        omega = np.zeros((len(self.mesh.cells), len(self.vectors)))
        for end in (0, 1):
            use = np.flatnonzero(half_weights[:, end] != 0)
            atoms = bonds[use, end]
            counts = start[atoms + 1] - start[atoms]
            rep = np.repeat(np.arange(len(use)), counts)
            pos = np.concatenate([np.arange(start[i], start[i + 1]) for i in atoms]) \
                if len(atoms) else np.zeros(0, dtype=np.int64)
            np.add.at(omega, (cell[pos], self.bond_vector[use[rep]]),
                      half_weights[use[rep], end] * share[pos])
        return omega


def _continuum(mesh: RepMesh, vectors: np.ndarray, potential: Any, omega: np.ndarray,
               y: np.ndarray, order: int) -> tuple[float, np.ndarray, sp.csr_matrix | None]:
    """Energy, gradient (n, d) and (order 2) Hessian of the Cauchy-Born bond sums."""
    n, d = y.shape
    cells = np.flatnonzero(np.any(omega != 0, axis=1))
    F = mesh.deformation_gradients(y)[cells]
    E, Pk, C = bond_density(F, vectors, potential, omega[cells], order)
    G = mesh.gradients[cells]
    conn = mesh.cells[cells]
    g = np.zeros((n, d))
    if Pk is not None:
        np.add.at(g, conn, np.einsum("eiJ,ekJ->eki", Pk, G))
    H = None
    if C is not None:
        K = np.einsum("eiJjL,ekJ,elL->ekilj", C, G, G)
        dof = d * conn[:, :, None] + np.arange(d)[None, None, :]        # (m, k, i)
        rows = np.broadcast_to(dof[:, :, :, None, None], K.shape)
        cols = np.broadcast_to(dof[:, None, None, :, :], K.shape)
        H = sp.csr_matrix((K.ravel(), (rows.ravel(), cols.ravel())), shape=(n * d, n * d))
    return float(E.sum()), g, H


@dataclass
class CoupledSolution:
    """A coupled equilibrium.

    Attributes:
        method: ``"qce"``, ``"gfc"``, ``"qnl"`` or ``"blended"``.
        x: Positions of all atoms (interpolated, or the atom dofs where the method has
            them), shape (N, d).
        y: Node positions, shape (n, d).
        energy: The method's energy (``nan`` for the force-based GFC).
        dofs: Number of unknowns (free node components, atom components, multipliers).
        relaxation: The solver's result (iterations, final force, converged reason).
    """

    method: str
    x: np.ndarray
    y: np.ndarray
    energy: float
    dofs: int
    relaxation: Relaxation


class EnergyScheme:
    r"""A coupled energy (QCE, QNL) with its gradient and Hessian.

    .. math:: E(y) = \sum_b \beta_b \phi(|(Py)_j - (Py)_i|)
       + \sum_{e,r} \omega_{e,r}\phi(|F_e r|)

    Args:
        coupling: The geometry.
        beta: Exact weight of each bond (times the defect scale), shape (nb,).
        omega: Cauchy--Born weights, shape (m, n_r).
        name: Method name.
    """

    def __init__(self, coupling: Coupling, beta: np.ndarray, omega: np.ndarray,
                 name: str) -> None:
        self.coupling, self.omega, self.name = coupling, omega, name
        bonds = coupling.model.bonds
        use = np.flatnonzero(beta != 0)
        atoms, local = np.unique(bonds[use], return_inverse=True)
        self.bonds = local.reshape(-1, 2)
        self.beta = beta[use]
        self.P = coupling.P[atoms]
        self.Pd = _vector_dofs(self.P, coupling.model.dim)

    def energy(self, y: np.ndarray) -> float:
        """E(y)."""
        c = self.coupling
        e = bond_energy(self.P @ y, self.bonds, c.model.potential, self.beta)
        return e + _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 0)[0]

    def gradient(self, y: np.ndarray) -> np.ndarray:
        r""":math:`\partial E/\partial y`, shape (n, d)."""
        c = self.coupling
        ga = self.P.T @ bond_gradient(self.P @ y, self.bonds, c.model.potential, self.beta)
        return ga + _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 1)[1]

    def hessian(self, y: np.ndarray) -> sp.csr_matrix:
        """Sparse Hessian in (node, component) ordering."""
        c = self.coupling
        Ha = bond_hessian(self.P @ y, self.bonds, c.model.potential, self.beta)
        Hc = _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 2)[2]
        return sp.csr_matrix(self.Pd.T @ Ha @ self.Pd + Hc)

    def residual(self, y: np.ndarray) -> np.ndarray:
        """Out-of-balance force on the free nodes (the gradient), shape (n, d)."""
        return self.gradient(y) * self.coupling.free_nodes[:, None]

    def solve(self, F: Deformation, **options: Any) -> CoupledSolution:
        """Minimise E over the free nodes, fixed nodes at :math:`FY`, from :math:`y = FY`."""
        return _solve_nodes(self, F, energy=True, **options)


class ForceScheme:
    r"""Force-based (ghost-force corrected) equilibrium.

    Atomistic forces on the nonlocal nodes, Cauchy--Born forces on the others (module
    docstring).
    """

    def __init__(self, coupling: Coupling) -> None:
        self.coupling, self.name = coupling, "gfc"
        model = coupling.model
        bonds = model.bonds
        A = coupling.atomistic
        use = np.flatnonzero(A[bonds[:, 0]] | A[bonds[:, 1]])
        atoms, local = np.unique(bonds[use], return_inverse=True)
        self.bonds, self.s = local.reshape(-1, 2), model.weights[use]
        self.P = coupling.P[atoms]
        self.Pd = _vector_dofs(self.P, model.dim)
        # rows of the local atoms that are nonlocal nodes
        node_is_a = A[coupling.node_atom]
        self.nodes_a = np.flatnonzero(node_is_a)
        pos = {int(a): k for k, a in enumerate(atoms)}
        self.rows_a = np.array([pos[int(coupling.node_atom[k])] for k in self.nodes_a],
                               dtype=np.int64)
        self.omega = coupling.bond_integral_weights(model.weights)

    def residual(self, y: np.ndarray) -> np.ndarray:
        """Minus the force on every free node, shape (n, d)."""
        c = self.coupling
        r = _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 1)[1]
        ga = bond_gradient(self.P @ y, self.bonds, c.model.potential, self.s)
        r[self.nodes_a] = ga[self.rows_a]
        return r * c.free_nodes[:, None]

    def jacobian(self, y: np.ndarray) -> sp.csr_matrix:
        r""":math:`\partial r/\partial y` (not symmetric)."""
        c = self.coupling
        d = c.model.dim
        Hc = _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 2)[2]
        Ha = bond_hessian(self.P @ y, self.bonds, c.model.potential, self.s) @ self.Pd
        rows_a = (d * self.rows_a[:, None] + np.arange(d)).ravel()
        dofs_a = (d * self.nodes_a[:, None] + np.arange(d)).ravel()
        n = len(y) * d
        keep = np.ones(n)
        keep[dofs_a] = 0.0
        Sa = sp.csr_matrix((np.ones(len(dofs_a)), (dofs_a, np.arange(len(dofs_a)))),
                           shape=(n, len(dofs_a)))
        assert Hc is not None
        return sp.csr_matrix(sp.diags(keep) @ Hc + Sa @ Ha[rows_a])

    def solve(self, F: Deformation, **options: Any) -> CoupledSolution:
        """Solve the force balance on the free nodes from :math:`y = FY` (Newton)."""
        return _solve_nodes(self, F, energy=False, **options)


def _free_nodes(coupling: Any, F: Deformation) -> tuple[np.ndarray, np.ndarray, Any]:
    """y0 = F Y, the free unknowns' positions in y0.ravel(), and u -> full positions."""
    y0 = coupling.affine(F)
    n, d = y0.shape
    free = np.repeat(coupling.free_nodes, d)

    def full(u: np.ndarray) -> np.ndarray:
        y = y0.ravel().copy()
        y[free] = u
        return y.reshape(n, d)

    return y0, free, full


def _solve_nodes(scheme: Any, F: Deformation, *, energy: bool, force_tol: float = 1e-10,
                 max_iterations: int = 50, check: bool = True) -> CoupledSolution:
    c = scheme.coupling
    y0, free, full = _free_nodes(c, F)

    if energy:
        result = newton(lambda u: scheme.gradient(full(u)).ravel()[free],
                        lambda u: scheme.hessian(full(u))[free][:, free], y0.ravel()[free],
                        energy=lambda u: scheme.energy(full(u)), force_tol=force_tol,
                        max_iterations=max_iterations, what=f"{scheme.name} coupled solve",
                        check=check)
    else:
        result = newton(lambda u: scheme.residual(full(u)).ravel()[free],
                        lambda u: scheme.jacobian(full(u))[free][:, free], y0.ravel()[free],
                        force_tol=force_tol, max_iterations=max_iterations,
                        what=f"{scheme.name} coupled solve", check=check)
    y = full(result.u)
    E = scheme.energy(y) if energy else float("nan")
    return CoupledSolution(scheme.name, c.P @ y, y, E, int(free.sum()), result)


class BlendedScheme:
    r"""Energy blending with Lagrange-multiplier tying (bridging domain), module docstring.

    Unknowns: the atoms :math:`x_D` of the atomistic domain D (ends of bonds with
    :math:`\alpha_b > 0`), the active nodes y, and one multiplier per tied atom and
    component. Newton on the KKT system

    .. math::
       \begin{pmatrix} H & B^\top \\ B & 0 \end{pmatrix}
       \begin{pmatrix} \delta z \\ \lambda \end{pmatrix}
       = -\begin{pmatrix} \nabla E(z) \\ Bz \end{pmatrix},\qquad
       z = (x_D, y),\ Bz = x_T - P_T y,

    with a backtracking line search on E (steps stay feasible: the constraints are linear).
    """

    def __init__(self, coupling: Coupling, alpha: Callable[[np.ndarray], np.ndarray]) -> None:
        self.coupling, self.name = coupling, "blended"
        model = coupling.model
        X, bonds, s = model.positions, model.bonds, model.weights
        a_b = np.clip(alpha(0.5 * (X[bonds[:, 0]] + X[bonds[:, 1]])), 0.0, 1.0)
        self.alpha_bond = a_b
        inside = a_b > 0
        self.domain = np.unique(bonds[inside])                    # atom dofs D
        partial = np.zeros(len(X), dtype=bool)
        partial[bonds[a_b < 1].ravel()] = True
        in_domain = np.zeros(len(X), dtype=bool)
        in_domain[self.domain] = True
        # a fixed atom needs no tie (it and its node are both held at FX)
        self.tied = np.flatnonzero(partial & in_domain & ~coupling.fixed)
        loc = np.full(len(X), -1)
        loc[self.domain] = np.arange(len(self.domain))
        self.bonds = loc[bonds[inside]]
        self.beta = (a_b * s)[inside]
        self.omega = coupling.bond_integral_weights((1 - a_b) * s)
        mesh = coupling.mesh
        active = np.zeros(len(mesh.nodes), dtype=bool)
        active[mesh.cells[np.any(self.omega != 0, axis=1)].ravel()] = True
        self.PT = coupling.P[self.tied]
        active[self.PT.indices] = True
        self.active = active
        self.T = sp.csr_matrix((np.ones(len(self.tied)), (np.arange(len(self.tied)),
                                                          loc[self.tied])),
                               shape=(len(self.tied), len(self.domain)))

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split z into x_D, shape (|D|, d), and y, shape (n, d)."""
        d = self.coupling.model.dim
        k = len(self.domain) * d
        return z[:k].reshape(-1, d), z[k:].reshape(-1, d)

    def energy(self, z: np.ndarray) -> float:
        r""":math:`\sum_b \alpha_b s_b\phi + \sum_{e,r}\omega_{e,r}\phi(|F_e r|)`."""
        c = self.coupling
        x, y = self.split(z)
        return (bond_energy(x, self.bonds, c.model.potential, self.beta)
                + _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 0)[0])

    def gradient(self, z: np.ndarray) -> np.ndarray:
        r""":math:`\nabla E(z)`, flat."""
        c = self.coupling
        x, y = self.split(z)
        gx = bond_gradient(x, self.bonds, c.model.potential, self.beta)
        gy = _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 1)[1]
        return np.concatenate([gx.ravel(), gy.ravel()])

    def hessian(self, z: np.ndarray) -> sp.csr_matrix:
        """Block-diagonal Hessian of E."""
        c = self.coupling
        x, y = self.split(z)
        Hx = bond_hessian(x, self.bonds, c.model.potential, self.beta)
        Hy = _continuum(c.mesh, c.vectors, c.model.potential, self.omega, y, 2)[2]
        return sp.csr_matrix(sp.block_diag([Hx, Hy]))

    def constraint(self) -> sp.csr_matrix:
        """B with Bz = x_T - P_T y, in component-interleaved ordering."""
        d = self.coupling.model.dim
        return sp.csr_matrix(sp.hstack([_vector_dofs(self.T, d), -_vector_dofs(self.PT, d)]))

    def free(self) -> np.ndarray:
        """Mask of the unknowns of z (atom dofs, active unfixed nodes)."""
        d = self.coupling.model.dim
        nodes = self.active & self.coupling.free_nodes
        atoms = ~self.coupling.fixed[self.domain]
        return np.concatenate([np.repeat(atoms, d), np.repeat(nodes, d)])

    def residual_of(self, z: np.ndarray) -> np.ndarray:
        r"""Reduced force: untied atoms :math:`g_x`, nodes :math:`g_y + P_T^\top g_{x_T}`."""
        d = self.coupling.model.dim
        gx, gy = self.split(self.gradient(z))
        tied_local = self.T.indices
        gT = gx[tied_local].copy()
        gx = gx * ~self.coupling.fixed[self.domain][:, None]
        gx[tied_local] = 0.0
        gy = gy + self.PT.T @ gT
        gy = gy * (self.active & self.coupling.free_nodes)[:, None]
        return np.concatenate([gx.ravel(), gy.ravel()]).reshape(-1, d)

    def initial(self, F: Deformation) -> np.ndarray:
        """The unknowns z at the homogeneous state :math:`x = FX`, :math:`y = FY`."""
        X = self.coupling.model.positions[self.domain]
        return np.concatenate([deform(F, X).ravel(), self.coupling.affine(F).ravel()])

    def solve(self, F: Deformation, *, force_tol: float = 1e-10, max_iterations: int = 50,
              check: bool = True) -> CoupledSolution:
        """Minimise E subject to the ties, from the homogeneous state (KKT Newton)."""
        c = self.coupling
        z = self.initial(F)
        free = self.free()
        B = self.constraint()[:, free]
        nc = B.shape[0]
        reason, k, rmax = "DIVERGED_MAX_IT", 0, np.inf
        for k in range(max_iterations + 1):
            rmax = float(np.max(np.abs(self.residual_of(z)), initial=0.0))
            if not np.isfinite(rmax):
                reason = "DIVERGED_NAN"
                break
            if rmax <= force_tol:
                reason = "CONVERGED_FORCE_TOL"
                break
            if k == max_iterations:
                break
            g = self.gradient(z)[free]
            H = self.hessian(z)[free][:, free]
            K = sp.bmat([[H, B.T], [B, None]], format="csc")
            step = spla.splu(K).solve(np.concatenate([-g, np.zeros(nc)]))[: len(g)]
            e0, slope, t = self.energy(z), float(g @ step), 1.0
            for _ in range(40):
                trial = z.copy()
                trial[free] += t * step
                e = self.energy(trial)
                if e <= e0 + 1e-4 * t * slope or abs(e - e0) <= 1e-12 * (abs(e0) + 1):
                    break
                t *= 0.5
            else:
                reason = "DIVERGED_LINE_SEARCH"
                break
            z = trial
        result = Relaxation(z[free], k, rmax, reason)
        if check and not result.converged:
            raise RelaxationError(f"blended coupled solve did not converge ({reason}) after {k} "
                                  f"iterations: max force {rmax:.3e} > force_tol {force_tol:.1e};"
                                  f" raise max_iterations or apply the load in smaller steps")
        xD, y = self.split(z)
        x = c.P @ y
        x[self.domain] = xD
        dofs = int(free.sum()) + nc
        return CoupledSolution("blended", x, y, self.energy(z), dofs, result)


def energy_based(coupling: Coupling) -> EnergyScheme:
    r"""Energy-based QC (QCE): exact site energies in :math:`\mathcal A`, Cauchy--Born outside."""
    bonds, s, A = coupling.model.bonds, coupling.model.weights, coupling.atomistic
    a0, a1 = A[bonds[:, 0]], A[bonds[:, 1]]
    beta = 0.5 * (a0.astype(float) + a1) * s
    half = 0.5 * np.stack([~a0, ~a1], axis=1) * s[:, None]
    return EnergyScheme(coupling, beta, coupling.site_share_weights(half), "qce")


def quasinonlocal(coupling: Coupling) -> EnergyScheme:
    """Quasinonlocal QC: exact bonds between nonlocal atoms, bond integrals for the rest."""
    bonds, s, A = coupling.model.bonds, coupling.model.weights, coupling.atomistic
    both = A[bonds[:, 0]] & A[bonds[:, 1]]
    return EnergyScheme(coupling, both * s, coupling.bond_integral_weights(~both * s), "qnl")


def ghost_force_corrected(coupling: Coupling) -> ForceScheme:
    """Ghost-force corrected QC (the force-based fixed point of Shenoy et al.'s correction)."""
    return ForceScheme(coupling)


def ghost_force_iteration(coupling: Coupling, F: Deformation, *, force_tol: float = 1e-10,
                          max_iterations: int = 100, check: bool = True) -> CoupledSolution:
    r"""Shenoy et al.'s (1999) ghost-force correction as published: dead loads, iterated.

    With :math:`r(y)` the force-based residual (:class:`ForceScheme`), the ghost forces
    are :math:`g(y) = \nabla E^{qce}(y) - r(y)`; each outer step minimises the QCE energy
    with the ghost forces of the previous state as dead loads,

    .. math:: y_{k+1} = \arg\min_y\ E^{qce}(y) - g(y_k)\cdot y,

    until :math:`\max|r(y_{k+1})| \le` ``force_tol``. The limit solves :math:`r(y) = 0`,
    the equations :func:`ghost_force_corrected` solves by Newton directly.

    Returns:
        The :class:`CoupledSolution` (``relaxation.iterations`` counts outer steps).
    """
    qce, qcf = energy_based(coupling), ForceScheme(coupling)
    y0, free, full = _free_nodes(coupling, F)

    u = y0.ravel()[free]
    reason, k, rmax = "DIVERGED_MAX_IT", 0, np.inf
    for k in range(max_iterations + 1):
        y = full(u)
        r = qcf.residual(y).ravel()[free]
        rmax = float(np.max(np.abs(r), initial=0.0))
        if rmax <= force_tol:
            reason = "CONVERGED_FORCE_TOL"
            break
        if k == max_iterations or not np.isfinite(rmax):
            reason = "DIVERGED_NAN" if not np.isfinite(rmax) else reason
            break
        ghost = qce.gradient(y).ravel()[free] - r

        def gradient(v: np.ndarray, g: np.ndarray = ghost) -> np.ndarray:
            return qce.gradient(full(v)).ravel()[free] - g

        def energy(v: np.ndarray, g: np.ndarray = ghost) -> float:
            return qce.energy(full(v)) - float(g @ v)

        inner = newton(gradient, lambda v: qce.hessian(full(v))[free][:, free], u,
                       energy=energy, force_tol=0.1 * force_tol,
                       what="ghost-force corrected inner solve")
        u = inner.u
    result = Relaxation(u, k, rmax, reason)
    if check and not result.converged:
        raise RelaxationError(f"ghost-force iteration did not converge ({reason}) after {k} "
                              f"outer steps: max force {rmax:.3e} > force_tol {force_tol:.1e}; "
                              f"raise max_iterations or use the Newton form "
                              f"(ghost_force_corrected)")
    y = full(u)
    return CoupledSolution("gfc", coupling.P @ y, y, float("nan"), int(free.sum()), result)


def blended(coupling: Coupling, alpha: Callable[[np.ndarray], np.ndarray]) -> BlendedScheme:
    """Blended (bridging-domain) coupling with blending function ``alpha(X)`` in [0, 1]."""
    return BlendedScheme(coupling, alpha)


def patch_test_forces(scheme: Any, F: Deformation) -> np.ndarray:
    r"""Out-of-balance forces on the unknowns at the homogeneous state :math:`y = FY`.

    Zero for a consistent scheme; the ghost forces of QCE. Shape (k, d).
    """
    if isinstance(scheme, BlendedScheme):
        return scheme.residual_of(scheme.initial(F))
    return scheme.residual(scheme.coupling.affine(F))
