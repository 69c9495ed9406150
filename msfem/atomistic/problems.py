r"""Model problems: a defect in a crystal under a uniform applied strain, atomistic and coupled.

A body of lattice sites with a boundary pad (the atoms within one cutoff of the body's
boundary) held at :math:`x = FX`; the others relax,

.. math:: \min_x E(x) \quad\text{subject to}\quad x_i = F X_i \ (i \in \text{pad}).

* :func:`bond_defect_chain`: a 1D chain (Lennard-Jones, nearest and next-nearest
  neighbours) whose central bond is soft (scale < 1) or stiff (scale > 1).
* :func:`vacancy`: a 2D triangular crystal with one vacancy at the centre.

:meth:`DefectProblem.reference` is the full atomistic solution on the same body;
:meth:`DefectProblem.coupled` builds a coupled model with an atomistic region of radius R
around the defect (every atom there a node, coarse nodes on a sub-lattice of spacing
``coarse * a`` elsewhere); :func:`errors` compares an atom configuration with the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msfem.atomistic.coupling import (
    Coupling,
    Deformation,
    blended,
    deform,
    energy_based,
    ghost_force_corrected,
    quasinonlocal,
)
from msfem.atomistic.lattice import Lattice, chain, triangular
from msfem.atomistic.mesh import RepMesh, rep_mesh
from msfem.atomistic.model import PairModel
from msfem.atomistic.potentials import LennardJones, PairPotential, equilibrium_spacing
from msfem.atomistic.relax import Relaxation, newton

#: The chain's potential: Lennard-Jones, switched off between 2.3 and 2.7 sigma, so that
#: nearest (a = 1.1196) and next-nearest (2a = 2.239) neighbours interact.
CHAIN_POTENTIAL = LennardJones(epsilon=1.0, sigma=1.0, cutoff=2.7, switch_on=2.3)
#: The triangular crystal's potential: nearest (a = 1.1159) and next-nearest
#: (sqrt(3) a = 1.933) neighbours; the third shell (2a = 2.232) is beyond the cutoff.
TRIANGULAR_POTENTIAL = LennardJones(epsilon=1.0, sigma=1.0, cutoff=2.1, switch_on=1.95)


@dataclass
class DefectProblem:
    """A defect in a crystal body with a fixed boundary pad under the applied strain F.

    Args:
        lattice: The lattice (at its equilibrium spacing).
        model: Atomistic model of the body (bond scales = bond defects).
        fixed: Mask of the pad atoms.
        F: Applied deformation gradient (or a map X -> x imposed on the pad).
        centre: Centre of the defect.
        name: For reports.
        layer: Width (in lattice constants) of the layer next to the pad that every coupled
            model treats atomistically: the pad imposes FX while the relaxed interior has
            a slightly different far-field strain, and the boundary layer between them is
            not representable by coarse elements.
        crack: ``(x_tip, y_plane)`` of a crack along :math:`y = y_{plane}`,
            :math:`x < x_{tip}`: the mesh gets a slit there (the two atom rows beside the
            plane are resolved and the cells across it removed).
    """

    lattice: Lattice
    model: PairModel
    fixed: np.ndarray
    F: Deformation
    centre: np.ndarray
    name: str
    layer: float = 0.0
    crack: tuple[float, float] | None = None
    _reference: tuple[np.ndarray, Relaxation] | None = field(default=None, repr=False)

    @property
    def X(self) -> np.ndarray:
        """Reference positions, (N, d)."""
        return self.model.positions

    def affine(self) -> np.ndarray:
        """The imposed deformation :math:`FX` (or F(X)) of every atom."""
        return deform(self.F, self.X)

    def distance(self) -> np.ndarray:
        """Distance of each atom to the defect centre."""
        return np.linalg.norm(self.X - self.centre, axis=1)

    def reference(self, force_tol: float = 1e-10) -> tuple[np.ndarray, Relaxation]:
        """Full atomistic equilibrium (cached): positions (N, d) and the relaxation."""
        if self._reference is None:
            x0 = self.affine()
            free = np.repeat(~self.fixed, self.model.dim)
            shape = x0.shape

            def full(u: np.ndarray) -> np.ndarray:
                x = x0.ravel().copy()
                x[free] = u
                return x.reshape(shape)

            m = self.model
            result = newton(lambda u: -m.forces(full(u)).ravel()[free],
                            lambda u: m.hessian(full(u))[free][:, free], x0.ravel()[free],
                            energy=lambda u: m.energy(full(u)), force_tol=force_tol,
                            what=f"{self.name}: atomistic reference")
            x = full(result.u)
            m.check_list(x)
            self._reference = (x, result)
        return self._reference

    def pad_distance(self) -> np.ndarray:
        """Distance of each atom to the nearest pad atom (inf without a pad)."""
        from scipy.spatial import cKDTree

        if not np.any(self.fixed):
            return np.full(len(self.X), np.inf)
        return cKDTree(self.X[self.fixed]).query(self.X)[0]

    def boundary_layer(self) -> np.ndarray:
        """Mask of the atoms within ``layer`` lattice constants of the pad or a crack face."""
        a = self.lattice.spacing
        near = self.pad_distance() <= self.layer * a + 1e-9
        if self.crack is not None:
            tip, plane = self.crack
            near |= (self.X[:, 0] < tip) & (np.abs(self.X[:, 1] - plane)
                                            <= self.layer * a + a / 2)
        return near

    def coupling(self, radius: float, *, coarse: int = 3, margin: float = 0.0) -> Coupling:
        r"""The geometry of a coupled model with atomistic region :math:`|X - c| \le R`.

        The boundary layer (:meth:`boundary_layer`) is nonlocal as well, so the coupling
        error measured is that of the region around the defect.

        Args:
            radius: R, in units of the lattice constant.
            coarse: Coarse nodes on the sub-lattice of spacing ``coarse * a`` outside.
            margin: The zone resolved by nodes at every atom reaches ``margin`` lattice
                constants beyond the atomistic region and the boundary layer.
        """
        a = self.lattice.spacing
        dist = self.distance() / a
        layer = self.pad_distance() / a
        atomistic = (dist <= radius + 1e-9) | self.boundary_layer()
        nodes = (atomistic | self.fixed | (dist <= radius + margin + 1e-9)
                 | (layer <= self.layer + margin + 1e-9))
        n = self.lattice.indices(self.X - self.centre_site(), what="atom")
        nodes |= np.all(n % coarse == 0, axis=1)
        if self.crack is not None:
            tip, plane = self.crack
            nodes |= (np.abs(self.X[:, 1] - plane) < a) & (self.X[:, 0] < tip + a)
        mesh = rep_mesh(self.lattice, self.X[nodes])
        if self.crack is not None:
            mesh = RepMesh(mesh.nodes, mesh.cells[~_cracked_cells(mesh, tip, plane)])
        return Coupling(self.model, self.lattice, mesh, atomistic, self.fixed)

    def centre_site(self) -> np.ndarray:
        """The lattice site nearest to the defect centre."""
        return self.X[np.argmin(self.distance())] if len(self.X) else self.centre

    def coupled(self, method: str, radius: float, *, coarse: int = 3, overlap: float = 2.0
                ) -> Any:
        r"""A coupled scheme (``"qce"``, ``"gfc"``, ``"qnl"``, ``"blended"``) of radius R.

        For ``"blended"``, :math:`\alpha = 1` for :math:`|X - c| \le R`, falling linearly
        to 0 at :math:`R +` ``overlap`` (both in units of a); the zone up to
        :math:`R +` overlap + cutoff is resolved.
        """
        a = self.lattice.spacing
        if method == "blended":
            cut = self.model.potential.cutoff / a
            geometry = self.coupling(radius, coarse=coarse, margin=overlap + cut)
            c = self.centre
            fixed = self.X[self.fixed]
            from scipy.spatial import cKDTree

            pad = cKDTree(fixed) if len(fixed) else None

            def alpha(P: np.ndarray) -> np.ndarray:
                inner = radius + overlap - np.linalg.norm(P - c, axis=1) / a
                if pad is not None:
                    inner = np.maximum(inner, self.layer + overlap - pad.query(P)[0] / a)
                return np.clip(inner / overlap, 0.0, 1.0)

            return blended(geometry, alpha)
        geometry = self.coupling(radius, coarse=coarse)
        build = {"qce": energy_based, "gfc": ghost_force_corrected, "qnl": quasinonlocal}
        if method not in build:
            raise ValueError(f"unknown coupling method {method!r}; choose one of "
                             f"qce, gfc, qnl, blended")
        return build[method](geometry)


def _crossing(A: np.ndarray, B: np.ndarray, plane: float) -> np.ndarray:
    """The x where the segments [A, B] cross y = plane (nan where they do not)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (plane - A[..., 1]) / (B[..., 1] - A[..., 1])
    x = A[..., 0] + t * (B[..., 0] - A[..., 0])
    return np.where((A[..., 1] - plane) * (B[..., 1] - plane) < 0, x, np.nan)


def _cracked_cells(mesh: RepMesh, tip: float, plane: float) -> np.ndarray:
    """Cells whose whole cut by the line y = plane lies at x <= tip (the slit)."""
    V = mesh.nodes[mesh.cells]
    edges = [_crossing(V[:, i], V[:, (i + 1) % 3], plane) for i in range(3)]
    right = np.nanmax(np.stack(edges, axis=1), axis=1, initial=-np.inf)
    return np.isfinite(right) & (right <= tip + 1e-9)


def _pad(X: np.ndarray, lower: np.ndarray, upper: np.ndarray, width: float) -> np.ndarray:
    return np.any((X < lower + width) | (X > upper - width), axis=1)


def bond_defect_chain(atoms: int = 121, *, scale: float = 0.5, strain: float = 0.02,
                      layer: float = 6.0, potential: PairPotential = CHAIN_POTENTIAL,
                      bracket: tuple[float, float] | None = None) -> DefectProblem:
    """A chain of ``atoms`` atoms whose central bond has its potential scaled by ``scale``.

    The pad is the atoms within one cutoff of either end; F = 1 + ``strain``; ``bracket``
    is passed to :func:`~msfem.atomistic.potentials.equilibrium_spacing`.
    """
    if atoms < 8 or atoms % 2:
        atoms += atoms % 2                       # an even count: the defect bond is central
    lat = chain(equilibrium_spacing(potential, chain(), bracket))
    a = lat.spacing
    mid = atoms // 2
    X = a * (np.arange(atoms, dtype=float) - mid)[:, None]
    model = PairModel(X, potential, bond_scale={(mid - 1, mid): scale})
    fixed = _pad(X, X.min(0), X.max(0), potential.cutoff)
    return DefectProblem(lat, model, fixed, np.array([[1.0 + strain]]), np.array([-a / 2]),
                         f"chain, bond scale {scale:g}", layer=layer)


def vacancy(half_width: float = 10.0, *, F: np.ndarray | None = None, layer: float = 2.0,
            potential: PairPotential = TRIANGULAR_POTENTIAL, empty: bool = True
            ) -> DefectProblem:
    r"""A triangular crystal in the box :math:`|X_k| \le` ``half_width`` a, minus the origin.

    Default :math:`F = I + [[0.02, 0.005], [0.005, -0.01]]`; ``empty=False`` keeps the
    origin's atom (the perfect crystal of the patch test).
    """
    lat = triangular(equilibrium_spacing(potential, triangular()))
    a = lat.spacing
    X = lat.sites(-half_width * a, half_width * a)
    if empty:
        X = X[np.linalg.norm(X, axis=1) > 1e-9 * a]
    model = PairModel(X, potential)
    fixed = _pad(X, X.min(0), X.max(0), potential.cutoff)
    F = np.eye(2) + np.array([[0.02, 0.005], [0.005, -0.01]]) if F is None else np.asarray(F)
    return DefectProblem(lat, model, fixed, F, np.zeros(2), "triangular crystal, vacancy",
                         layer=layer)


def errors(problem: DefectProblem, x: np.ndarray) -> dict[str, float]:
    r"""Errors of atom positions x against the atomistic reference :math:`x^*`.

    Returns:
        ``max`` :math:`\max_i|x_i - x^*_i|`, ``l2`` :math:`(\sum_i|x_i - x^*_i|^2)^{1/2}`, both
        also relative to the defect displacement :math:`x^* - FX` (``max_rel``, ``l2_rel``),
        and ``energy_rel`` :math:`(E(x) - E(x^*))/(E(FX) - E(x^*))`, the atomistic energy
        of x above the minimum relative to the relaxation energy.
    """
    ref, _ = problem.reference()
    e = np.linalg.norm(x - ref, axis=1)
    u = np.linalg.norm(ref - problem.affine(), axis=1)
    E = problem.model.energy
    e_ref = E(ref)
    return {"max": float(e.max()), "l2": float(np.sqrt(np.sum(e**2))),
            "max_rel": float(e.max() / u.max()),
            "l2_rel": float(np.sqrt(np.sum(e**2) / np.sum(u**2))),
            "energy_rel": float((E(x) - e_ref) / (E(problem.affine()) - e_ref))}


def k_field(K: float, mu: float, nu: float, tip: np.ndarray) -> Deformation:
    r"""The mode-I crack-tip field of isotropic plane elasticity as a map :math:`X \mapsto x`.

    .. math::
       u = \frac{K}{2\mu}\sqrt{\frac{r}{2\pi}}\,(\kappa - \cos\theta)
       \begin{pmatrix}\cos(\theta/2)\\ \sin(\theta/2)\end{pmatrix},\qquad
       \kappa = 3 - 4\nu,

    with :math:`(r, \theta)` polar coordinates about the tip, the crack along
    :math:`\theta = \pm\pi` (Anderson, *Fracture Mechanics*, Table 2.2; plane strain).
    """
    kappa = 3 - 4 * nu

    def field(X: np.ndarray) -> np.ndarray:
        d = X - tip
        r, theta = np.hypot(d[:, 0], d[:, 1]), np.arctan2(d[:, 1], d[:, 0])
        amp = K / (2 * mu) * np.sqrt(r / (2 * np.pi)) * (kappa - np.cos(theta))
        return X + amp[:, None] * np.stack([np.cos(theta / 2), np.sin(theta / 2)], axis=1)

    return field


def crack(half_width: float = 16.0, *, K: float = 1.0, layer: float = 2.0,
          potential: PairPotential = TRIANGULAR_POTENTIAL) -> DefectProblem:
    r"""A straight crack in a triangular crystal loaded by the mode-I K-field on the pad.

    The crack plane lies midway between the atom rows :math:`y = 0` and
    :math:`y = -\frac{\sqrt3}{2}a`; bonds crossing it at :math:`x < a/2` (the tip, midway
    between two crossing points of bonds) are cut, and so are the mesh cells whose cut by
    the plane lies at :math:`x \le a/2` (the slit). The
    pad follows :func:`k_field` with the crystal's Cauchy--Born constants
    (:math:`\mu = \mathbb C_{1212}`, :math:`\lambda = \mathbb C_{1122}`,
    :math:`\nu = \lambda / (2(\lambda + \mu))`) and stress intensity K (units of
    :math:`\epsilon\,\sigma^{-3/2}`).
    """
    from msfem.atomistic.cauchy_born import lattice_elastic_constants

    lat = triangular(equilibrium_spacing(potential, triangular()))
    a = lat.spacing
    X = lat.sites(-half_width * a, half_width * a)
    tip = np.array([0.5 * a, -np.sqrt(3) / 4 * a])

    def cut(Xi: np.ndarray, Xj: np.ndarray) -> np.ndarray:
        return _crossing(Xi, Xj, tip[1]) < tip[0]          # nan (no crossing) -> False

    model = PairModel(X, potential, cut=cut)
    C = lattice_elastic_constants(lat, potential)
    mu, lam = C[0, 1, 0, 1], C[0, 0, 1, 1]
    fixed = _pad(X, X.min(0), X.max(0), potential.cutoff)
    return DefectProblem(lat, model, fixed, k_field(K, mu, lam / (2 * (lam + mu)), tip), tip,
                         f"triangular crystal, mode-I crack, K = {K:g}", layer=layer,
                         crack=(float(tip[0]), float(tip[1])))
