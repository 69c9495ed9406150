r"""The learned constitutive law: an affine trend plus a Gaussian process, with its tangent.

Representation (what is fitted, and why):

* **diffusion** -- input the macro gradient :math:`x = G \in \mathbb R^d`, output the
  flux :math:`y = Q`.
* **mechanics** -- input the Green--Lagrange strain :math:`E = \tfrac12(F^TF - I)`,
  output the second Piola--Kirchhoff stress :math:`S = F^{-1}P`, both symmetric and
  written in Mandel notation (:math:`(E_{11}, E_{22}, \sqrt2E_{12})` in 2D). The law
  :math:`P = F\,S(E)` is then *objective* (:math:`E` and :math:`S` do not change under a
  rotation :math:`F \to RF`) and the stress symmetric (:math:`S = S^T`, :math:`PF^T =
  FSF^T`) by construction, not by training.

The output is :math:`y(x) = y_0 + D\,x + r(x)`: an affine least-squares trend with a
symmetrised slope :math:`D = D^T`, plus a Gaussian process :math:`r` (scikit-learn's
:class:`~sklearn.gaussian_process.GaussianProcessRegressor`, kernel
:math:`c\,\exp(-\tfrac12\sum_i (x_i - x'_i)^2/\ell_i^2)` + white noise, inputs scaled to
the sampled box, outputs to unit variance) fitted to the residuals. For a *linear* micro
law the data are affine to round-off: the trend is the homogenized tensor
(:math:`A^*` or :math:`\mathbb C^*`) and no process is fitted.

Tangent: the derivative of the posterior mean is analytic,

.. math::
    \frac{\partial \bar r_o}{\partial x_i}(x) = -\sum_j \alpha_{jo}\, k(x, x_j)\,
    \frac{x_i - x_{j,i}}{\ell_i^2},

so :math:`\partial y/\partial x = D + \partial\bar r/\partial x` (no finite differences);
the homogenized tangent of a hyperelastic micro law is a Hessian, hence symmetric, and the
fitted one is symmetrised (its skew part is of the size of the fit error). Mechanics
adds the chain rule :math:`\partial P_{iJ}/\partial F_{kL} = \delta_{ik}S_{LJ} +
F_{iM}\,\partial S_{MJ}/\partial E_{PQ}\,\partial E_{PQ}/\partial F_{kL}`.

Uncertainty: the posterior standard deviation of :math:`r`, relative to the largest
output in the database, :math:`u(x) = \max_o \sigma_o(x) / \max_s|y_s|`; a gradient
outside the sampled box has :math:`u = \infty` (the process would extrapolate).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from msfem.surrogate.database import RVEDatabase

__all__ = ["SurrogateLaw", "mandel_pairs"]


def mandel_pairs(d: int) -> list[tuple[int, int]]:
    """The (i, j) of the Mandel components of a symmetric d x d tensor: diagonal first."""
    return [(i, i) for i in range(d)] + [(i, j) for i in range(d) for j in range(i + 1, d)]


def _mandel_basis(d: int) -> np.ndarray:
    """Basis tensors B_a (p, d, d): T = sum_a t_a B_a, t_a = B_a : T (orthonormal)."""
    pairs = mandel_pairs(d)
    B = np.zeros((len(pairs), d, d))
    for a, (i, j) in enumerate(pairs):
        if i == j:
            B[a, i, i] = 1.0
        else:
            B[a, i, j] = B[a, j, i] = 1.0 / np.sqrt(2.0)
    return B


@dataclass
class _Mechanics:
    """Maps between the displacement gradient H (flattened) and the (E, S) Mandel pair."""

    d: int

    def __post_init__(self) -> None:
        self.B = _mandel_basis(self.d)

    def F(self, G: np.ndarray) -> np.ndarray:
        return np.eye(self.d) + G.reshape(-1, self.d, self.d)

    def features(self, G: np.ndarray) -> np.ndarray:
        F = self.F(G)
        E = 0.5 * (np.einsum("nki,nkj->nij", F, F) - np.eye(self.d))
        return np.einsum("aij,nij->na", self.B, E)

    def targets(self, G: np.ndarray, Q: np.ndarray) -> np.ndarray:
        F = self.F(G)
        S = np.linalg.solve(F, Q.reshape(-1, self.d, self.d))
        S = 0.5 * (S + S.transpose(0, 2, 1))
        return np.einsum("aij,nij->na", self.B, S)

    def _de_dF(self, F: np.ndarray) -> np.ndarray:
        """de_a/dF_kL = B_a : dE/dF_kL = (F B_a)_kL, shape (n, p, d, d)."""
        return np.einsum("nkp,apl->nakl", F, self.B)

    def tangent_targets(self, G: np.ndarray, Q: np.ndarray, C: np.ndarray) -> np.ndarray:
        """ds/de (n, p, p) from P and dP/dF: dS/dF = F^-1 (dP/dF - I x S), then de/dF^+."""
        d, n = self.d, len(G)
        F = self.F(G)
        S = np.linalg.solve(F, Q.reshape(n, d, d))
        A = C.reshape(n, d, d, d, d) - np.einsum("ik,nlj->nijkl", np.eye(d), S)
        dS = np.einsum("nmi,nijkl->nmjkl", np.linalg.inv(F), A)
        ds = np.einsum("aij,nijkl->nakl", self.B, dS).reshape(n, len(self.B), d * d)
        de = self._de_dF(F).reshape(n, len(self.B), d * d)
        return np.einsum("nak,nbk,nbc->nac", ds, de,
                         np.linalg.inv(np.einsum("nak,nbk->nab", de, de)))

    def response(self, G: np.ndarray, y: np.ndarray,
                 dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P = F S and dP/dF (n, d², d²) from s = y(e) and ds/de = dy."""
        d, B = self.d, self.B
        F = self.F(G)
        S = np.einsum("na,aij->nij", y, B)
        de = self._de_dF(F)
        dS = np.einsum("aij,nab,nbkl->nijkl", B, dy, de)  # dS_ij/dF_kl
        P = np.einsum("nim,nmj->nij", F, S)
        dP = np.einsum("ik,nlj->nijkl", np.eye(d), S) + np.einsum("nim,nmjkl->nijkl", F, dS)
        n = len(G)
        return P.reshape(n, d * d), dP.reshape(n, d * d, d * d)


@dataclass
class _Diffusion:
    """Identity maps: x = G, y = Q."""

    def features(self, G: np.ndarray) -> np.ndarray:
        return G

    def targets(self, G: np.ndarray, Q: np.ndarray) -> np.ndarray:
        return Q

    def tangent_targets(self, G: np.ndarray, Q: np.ndarray, C: np.ndarray) -> np.ndarray:
        return C

    def response(self, G: np.ndarray, y: np.ndarray,
                 dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return y, dy


def _exponents(p: int, degree: int) -> np.ndarray:
    """Exponents (K, p) of the monomials of total degree 1..degree in p variables."""
    out = [a for a in itertools.product(range(degree + 1), repeat=p) if 1 <= sum(a) <= degree]
    return np.array(sorted(out, key=lambda a: (sum(a), a[::-1])), dtype=int).reshape(-1, p)


def _monomial_derivatives(z: np.ndarray, exps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (n, K, p) and Hessian (n, K, p, p) of every monomial z^alpha at z (n, p)."""
    n, p = z.shape
    top = int(exps.max(initial=0))
    powers = z[:, :, None] ** np.arange(top + 1)  # (n, p, e): z_i^e

    def term(alpha: np.ndarray) -> np.ndarray:  # prod_i z_i^alpha_i, zero for alpha_i < 0
        if np.any(alpha < 0):
            return np.zeros(n)
        return np.prod(powers[:, np.arange(p), alpha], axis=1)

    eye = np.eye(p, dtype=int)
    grad = np.zeros((n, len(exps), p))
    hess = np.zeros((n, len(exps), p, p))
    for k, a in enumerate(exps):
        for i in range(p):
            grad[:, k, i] = a[i] * term(a - eye[i])
            for j in range(p):
                factor = a[i] * (a[j] - (i == j))
                if factor:
                    hess[:, k, i, j] = factor * term(a - eye[i] - eye[j])
    return grad, hess


class SurrogateLaw:
    """A constitutive law fitted to an :class:`~msfem.surrogate.RVEDatabase` (module docstring).

    Build it with :meth:`fit`; evaluate with :meth:`evaluate`.

    Args:
        kind: ``"diffusion"`` or ``"mechanics"``.
        dim: space dimension.
        box: the sampled box of G (lower, upper).
        degree: degree of the polynomial potential of the trend (2: a linear law).
        restarts: restarts of the process's hyperparameter optimiser.
        seed: its random state.

    Attributes:
        samples: database rows it was fitted to.
    """

    def __init__(self, kind: str, dim: int, box: tuple[np.ndarray, np.ndarray],
                 degree: int = 4, restarts: int = 2, seed: int = 0):
        if degree < 2:
            raise ValueError(f"degree = {degree}: the potential of the trend needs degree >= 2")
        self.kind, self.dim, self.box = kind, dim, box
        self.degree, self.restarts, self.seed = degree, restarts, seed
        self.map: Any = _Mechanics(dim) if kind == "mechanics" else _Diffusion()
        self.samples = 0
        self.gp: Any = None

    @classmethod
    def fit(cls, database: RVEDatabase, degree: int = 4, restarts: int = 2,
            seed: int = 0) -> SurrogateLaw:
        """Fit the trend and the process to every finished row of ``database``."""
        lo, hi = database.box  # the design box, grown to every sample (active learning)
        box = (np.minimum(lo, database.G.min(axis=0)), np.maximum(hi, database.G.max(axis=0)))
        model = cls(database.law.kind, int(database.fingerprint["dim"]), box, degree=degree,
                    restarts=restarts, seed=seed)
        model._fit(database.G, database.Q, database.C)
        return model

    def _fit(self, G: np.ndarray, Q: np.ndarray, C: np.ndarray) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        x = self.map.features(G)
        y = self.map.targets(G, Q)
        dy = self.map.tangent_targets(G, Q, C)
        n, p = x.shape
        self.samples = n
        lo, hi = x.min(axis=0), x.max(axis=0)  # inputs scaled to [-1, 1]
        self.x_mid = (lo + hi) / 2
        self.x_half = np.where(hi > lo, (hi - lo) / 2, 1.0)
        z = (x - self.x_mid) / self.x_half
        # trend: a potential phi(z), grad phi = y x_half, hess phi = dy x_half x_half^T
        self.exps = _exponents(p, self.degree)
        gb, hb = _monomial_derivatives(z, self.exps)
        y_z = y * self.x_half
        dy_z = dy * self.x_half[:, None] * self.x_half[None, :]
        A = np.concatenate([gb.transpose(0, 2, 1).reshape(n * p, -1),
                            hb.transpose(0, 2, 3, 1).reshape(n * p * p, -1)])
        b = np.concatenate([y_z.ravel(), dy_z.ravel()])
        self.coef = np.linalg.lstsq(A, b, rcond=None)[0]
        r = y - self._trend(z)[0]
        self.y_ref = float(np.abs(y).max()) or 1.0
        self.gp = None
        if float(np.abs(r).max()) <= 1e-10 * self.y_ref:  # the trend is exact
            return
        self.r_mean, self.r_std = r.mean(axis=0), r.std(axis=0)
        self.r_std[self.r_std == 0] = 1.0
        kernel = ConstantKernel(1.0, (1e-4, 1e4)) * RBF(np.ones(p), (1e-2, 1e3)) + \
            WhiteKernel(1e-10, (1e-14, 1e-6))
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False,
                                      n_restarts_optimizer=self.restarts,
                                      random_state=self.seed)
        with warnings.catch_warnings():  # bounds reached: a fit, not an error
            warnings.simplefilter("ignore")
            gp.fit(z, (r - self.r_mean) / self.r_std)
        self.gp = gp
        k = gp.kernel_
        self._c = float(k.k1.k1.constant_value)
        self._ell = np.atleast_1d(np.asarray(k.k1.k2.length_scale, dtype=float))

    def _trend(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The trend y and its dy/dx (the potential's gradient and Hessian) at scaled z."""
        gb, hb = _monomial_derivatives(z, self.exps)
        y = np.einsum("nki,k->ni", gb, self.coef) / self.x_half
        dy = np.einsum("nkij,k->nij", hb, self.coef) / np.outer(self.x_half, self.x_half)
        return y, dy

    def evaluate(self, G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Q (n, m), C = dQ/dG (n, m, m) and the relative uncertainty u (n,) at G (n, m)."""
        G = np.atleast_2d(np.asarray(G, dtype=float))
        x = self.map.features(G)
        z = (x - self.x_mid) / self.x_half
        y, dy = self._trend(z)
        u = np.zeros(len(x))
        if self.gp is not None:
            mean, std = self.gp.predict(z, return_std=True)
            mean = mean.reshape(len(z), -1)
            std = np.asarray(std).reshape(len(z), -1)
            y = y + self.r_mean + mean * self.r_std
            diff = z[:, None, :] - self.gp.X_train_[None, :, :]  # (n, s, p)
            k = self._c * np.exp(-0.5 * np.sum((diff / self._ell) ** 2, axis=2))  # (n, s)
            alpha = self.gp.alpha_.reshape(len(self.gp.X_train_), -1)  # (s, o)
            dz = -np.einsum("ns,nsp,so->nop", k, diff / self._ell ** 2, alpha)
            dy = dy + dz * self.r_std[None, :, None] / self.x_half[None, None, :]
            u = (std * self.r_std).max(axis=1) / self.y_ref
        dy = 0.5 * (dy + dy.transpose(0, 2, 1))
        Q, C = self.map.response(G, y, dy)
        lo, hi = self.box
        tol = 1e-9 * float(np.max(hi - lo))
        outside = np.any((G < lo - tol) | (G > hi + tol), axis=1)
        u = np.where(outside, np.inf, u)
        return Q, C, u
