r"""Generalized MsFEM (GMsFEM): Efendiev, Galvis & Hou, J. Comput. Phys. 251 (2013).

High-contrast media defeat one basis function per coarse vertex: a high-conductivity
channel that crosses a coarse neighbourhood carries a nearly constant value of u along
it, which no linear-boundary-condition function represents. GMsFEM enriches the space
with *local spectral* functions.

**Neighbourhoods.** For every coarse vertex :math:`x_i`, :math:`\omega_i` is the union of
the coarse cells around it (2^d cells, fewer on ∂Ω).

**Partition of unity.** :math:`\chi_i` is the ``linear`` MsFEM basis function of
:math:`x_i` (``partition = "multiscale"``, scalar problems: :math:`a_K(\chi_i, v) = 0` in
every coarse cell K, :math:`\chi_i` = the Q1 nodal function on ∂K), or the Q1 nodal
function itself (``partition = "bilinear"``, the default for vector problems); in both
cases :math:`\sum_i \chi_i = 1`.

**Spectral problem** (``snapshots = "all"``: the whole fine space of
:math:`\omega_i`, natural (Neumann) conditions on :math:`\partial\omega_i`):

.. math::
    a_{\omega_i}(\psi, v) = \lambda \int_{\omega_i} \tilde\kappa\, \psi\cdot v
    \quad \forall v \in V_h(\omega_i), \qquad
    \tilde\kappa = H^2 \sum_j \sum_{k<b} e_a(\chi_j \mathbf e_k),

with :math:`e_a(w)` the energy density of the user's form a (for diffusion
:math:`e_a(\chi) = \kappa|\nabla\chi|^2`, so :math:`\tilde\kappa = \kappa H^2\sum_j
|\nabla\chi_j|^2`, the weight of Efendiev, Galvis & Hou), averaged over every fine cell
(a piecewise-constant weight: it needs the user's form only through
:math:`a(w, w)`, so it works for any UFL form). SLEPc's Krylov--Schur with
shift-and-invert gives the smallest eigenpairs (:func:`msfem.local.eigensolve`). With
``snapshots = "harmonic"`` the same problem is solved in the snapshot space of the
a-harmonic extensions of every fine boundary node of :math:`\omega_i`,
:math:`R = [\psi^{snap}_1, \dots]`, as the dense problem :math:`R^TAR\,y = \lambda
R^T\tilde M R\,y` (:math:`\psi = Ry`).

**Basis.** :math:`\chi_i\psi^i_k` (nodal product on the fine grid), k = 1..L_i, the
eigenfunctions of the L_i smallest eigenvalues: ``eigenfunctions`` = L per neighbourhood,
or, with ``threshold`` = :math:`\lambda^*`, those with :math:`\lambda < \lambda^*` (at most
``eigenfunctions``, at least one). For scalar problems the first eigenfunction (λ = 0,
the constants) is taken exactly constant, so the first function of every vertex is
:math:`\chi_i` and **GMsFEM with one function per vertex is linear MsFEM** (with
``partition = "multiscale"``). The coarse dofs are L per vertex
(:class:`SpectralCoarseSpace`); a neighbourhood with fewer functions has its remaining
dofs pinned to zero. The space is conforming (:math:`\chi_i` vanishes outside
:math:`\omega_i`). Dirichlet data: the dof of :math:`\chi_i` takes :math:`g(x_i)` at a
vertex on Γ_D, its other dofs 0 (as ``linear`` MsFEM); vector problems: homogeneous data.

**How many eigenvalues are small** (Galvis & Efendiev, Multiscale Model. Simul. 8 (2010)):
let :math:`\omega_i` contain m disjoint high-conductivity channels (κ = η ≫ 1) in a
background κ = 1. Any ψ that is constant on each channel, with values :math:`c \in
\mathbb R^m`, and a-harmonic in the background has energy :math:`O(|\Delta c|^2)`
(independent of η) and weighted norm :math:`\int\tilde\kappa\psi^2 \approx \eta
\sum_k c_k^2|\text{channel}_k|` since :math:`\tilde\kappa \sim \kappa`; its Rayleigh
quotient is :math:`O(1/\eta)`. These functions span an m-dimensional space that contains
the constants, while any ψ orthogonal to it must vary inside the background at the cost
:math:`O(1)`. Hence with this weight: **λ_1 = 0 and λ_2 … λ_m = O(1/η), then a gap to
λ_{m+1} = O(1)** -- m small eigenvalues, the constant among them (the "constant plus one
per channel" count holds for the unweighted problem, where the background too is
counted); ``tests/test_gmsfem.py`` checks this count and gap at η = 1e4 and 1e6.

Local work per rank: the partition of unity of every coarse cell touching an owned cell's
neighbourhood, one eigensolve per vertex of an owned cell (vertices shared by ranks are
solved on each of them, identically), then per owned cell the products and the element
matrix :math:`A_K = \Phi^T A_K \Phi`. :attr:`GMsFEM.timings` splits the time into
partition, snapshots, eigensolve and basis; :meth:`GMsFEM.spectra` reports the
eigenvalues per neighbourhood.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import pydantic
import scipy.linalg
import scipy.sparse as sp
import ufl
from mpi4py import MPI

from msfem._runtime import collective
from msfem.coarse_space import LagrangeCoarseSpace
from msfem.local import eigensolve
from msfem.mesh import StructuredHierarchy
from msfem.methods.base import ElementData, Method, Parameters, register
from msfem.methods.msfem import MsFEM
from msfem.patches import PatchEngine, PatchMesh, nodal_functions, to_csr
from msfem.problem import Problem, dirichlet_values
from msfem.transfer import expand_blocks

#: Cell types with a Q1 partition of unity on a lattice of boxes.
CELL_TYPES = ("interval", "quadrilateral", "hexahedron")


class GMsFEMParameters(Parameters):
    r"""Parameters of :class:`GMsFEM`.

    Attributes:
        eigenfunctions: L, spectral functions per neighbourhood (the maximum with
            ``threshold``); the coarse space has L dofs per vertex.
        threshold: :math:`\lambda^*`: keep the eigenfunctions with
            :math:`\lambda < \lambda^*` (at least one); ``None``: always L.
        snapshots: ``"all"`` -- the spectral problem on the whole fine space of the
            neighbourhood; ``"harmonic"`` -- on the a-harmonic extensions of its boundary
            nodes (dense, for 1D/2D neighbourhoods).
        partition: ``"multiscale"`` (linear MsFEM functions, scalar problems) or
            ``"bilinear"`` (Q1 nodal functions); ``None``: multiscale for scalar problems,
            bilinear for vector ones.
        eigen_options: SLEPc/PETSc options of the eigensolver (prefix ``msfem_eigen_``).
    """

    eigenfunctions: int = pydantic.Field(2, ge=1)
    threshold: float | None = pydantic.Field(None, gt=0)
    snapshots: Literal["all", "harmonic"] = "all"
    partition: Literal["multiscale", "oscillatory", "bilinear"] | None = None
    eigen_options: dict[str, Any] | None = None


class SpectralCoarseSpace(LagrangeCoarseSpace):
    """L dofs per coarse vertex (one per spectral function), some of them pinned to zero.

    ``inactive``: owned global dofs of neighbourhoods that keep fewer than L functions.
    """

    def __init__(self, hierarchy, problem: Problem, count: int):
        super().__init__(hierarchy, problem, count=count, value_size=count)
        self.scalar = problem.block_size == 1
        self.inactive = np.zeros(0, dtype=np.int64)

    def dirichlet(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """Scalar problems: the χ_i dof of a vertex on Γ_D takes g(x_i); pinned dofs: 0.

        The other functions of a vertex on Γ_D vanish on Γ_D (their spectral problem has
        ψ = 0 there): they stay free.
        """
        L = self.count
        rows, vals = [self.inactive], [np.zeros(len(self.inactive))]
        for blocks, x, bc in self.dirichlet_vertices(problem) if self.scalar else []:
            rows.append(self.to_global(blocks * L))
            vals.append(dirichlet_values(bc, x, problem.shape).ravel())
        rows_all, vals_all = np.concatenate(rows), np.concatenate(vals)
        rows_u, first = np.unique(rows_all[::-1], return_index=True)  # boundary values win
        return rows_u, vals_all[::-1][first]

    def vertex_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Nodal values: only with one (constant) function per vertex, scalar problems."""
        return super().vertex_values(values) if self.scalar and self.count == 1 else None


class GMsFEM(Method):
    """Generalized MsFEM: spectral functions per coarse neighbourhood (module docstring)."""

    name = "gmsfem"
    Parameters = GMsFEMParameters
    params: GMsFEMParameters

    def __init__(self, params: GMsFEMParameters | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._spectra: dict[tuple[int, ...], tuple] = {}
        self._cells: dict[int, tuple] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ protocol
    def is_conforming(self, hierarchy) -> bool:
        """χ_i ψ_k is continuous and vanishes outside ω_i: a conforming space."""
        return True

    def partition(self, problem: Problem) -> str:
        """The partition of unity used for ``problem``."""
        if self.params.partition is not None:
            return self.params.partition
        return "multiscale" if problem.block_size == 1 else "bilinear"

    def validate(self, hierarchy, problem: Problem) -> None:
        """Structured Q1 hierarchies; multiscale partition and Dirichlet data: scalar only."""
        if not isinstance(hierarchy, StructuredHierarchy) or \
                hierarchy.cell_type not in CELL_TYPES:
            kind = getattr(hierarchy, "cell_type", type(hierarchy).__name__)
            raise ValueError(f"gmsfem needs a structured hierarchy of {', '.join(CELL_TYPES)} "
                             f"cells (coarse neighbourhoods of boxes); got {kind}")
        if problem.block_size > 1:
            if self.params.partition == "multiscale":
                raise ValueError("gmsfem: partition = 'multiscale' is a scalar MsFEM basis; use "
                                 "partition = 'bilinear' for vector problems")
            for bc in problem.dirichlet:
                if np.any(np.asarray(bc.value if not callable(bc.value) else 1.0) != 0):
                    raise ValueError("gmsfem on vector problems takes homogeneous Dirichlet "
                                     "data only (u = 0 on Γ_D); lift inhomogeneous data first")
        if self.params.snapshots == "harmonic" and hierarchy.dim == 3:
            raise ValueError("snapshots = 'harmonic' solves a dense problem on every "
                             "neighbourhood boundary node; use snapshots = 'all' in 3D")
        n_corner = (hierarchy.M + 1) ** hierarchy.dim * problem.block_size  # smallest ω
        if self.params.eigenfunctions > n_corner:
            raise ValueError(f"eigenfunctions = {self.params.eigenfunctions} is more than the "
                             f"{n_corner} fine dofs of a corner neighbourhood; lower it")

    def coarse_space(self, hierarchy, problem: Problem) -> SpectralCoarseSpace:
        """L dofs per vertex (:class:`SpectralCoarseSpace`)."""
        return SpectralCoarseSpace(hierarchy, problem, self.params.eigenfunctions)

    def prepare(self, engine: PatchEngine, cells: np.ndarray) -> None:
        """Partition of unity and spectral problems of every neighbourhood of ``cells``.

        Collective at its end: the pinned dofs of short neighbourhoods are all-gathered.
        """
        h = engine.hierarchy
        self._spectra, self._cells = {}, {}
        self.timings = {"partition": 0.0, "snapshots": 0.0, "eigensolve": 0.0, "basis": 0.0}
        L = self.params.eigenfunctions
        inactive = []
        with collective(h.comm):  # a failed eigensolve on one rank stops every rank
            for c in cells:
                for a, v in enumerate(self._vertex_keys(h, int(c))):
                    count = self._neighbourhood(engine, v)[2]
                    if count < L:
                        inactive.append(engine.cell_dofs[int(c)][a * L + count:(a + 1) * L])
        mine = np.unique(np.concatenate(inactive)) if inactive else np.zeros(0, np.int64)
        space = engine.coarse_space
        everyone = np.unique(np.concatenate(h.comm.allgather(mine)))
        lo, hi = space.index_map.local_range
        space.inactive = everyone[(everyone >= lo * space.bs) & (everyone < hi * space.bs)]

    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Element data of K: :math:`\Phi = [\chi_i\psi^i_k]`, :math:`A = \Phi^TA_K\Phi`."""
        t0 = time.perf_counter()
        h, bs, L = engine.hierarchy, engine.bs, self.params.eigenfunctions
        chi, A_K, ids = self._partition(engine, cell)
        K = engine.coarse_cell(cell)
        phi = np.zeros((len(ids) * bs, chi.shape[1] * L))
        for a, v in enumerate(self._vertex_keys(h, cell)):
            ids_w, X, count = self._neighbourhood(engine, v)
            pos = np.searchsorted(ids_w, ids)
            psi = X[expand_blocks(pos, bs)]
            phi[:, a * L:a * L + count] = np.repeat(chi[:, a], bs)[:, None] * psi[:, :count]
        dofs = engine.cell_dofs[int(cell)]
        out = ElementData(cell=int(cell), rows=dofs, cols=dofs, A=phi.T @ (A_K @ phi),
                          b=phi.T @ K.load(), fine_dofs=ids, trial=phi, energy=A_K,
                          metrics=K.metric_matrices())
        self.timings["basis"] = self.timings.get("basis", 0.0) + time.perf_counter() - t0
        return out

    def energy_matrix(self, cell: int, engine: PatchEngine) -> sp.csr_matrix:
        """The fine matrix of a on K, assembled again."""
        return to_csr(engine.coarse_cell(cell).assemble())

    # ------------------------------------------------------------------ reports
    def spectra(self, comm: MPI.Comm | None = None) -> dict[tuple[int, ...], np.ndarray]:
        """Eigenvalues per neighbourhood, keyed by the vertex's coarse lattice index.

        With ``comm``: gathered from every rank (collective); else this rank's.
        """
        mine = {v: s[3] for v, s in self._spectra.items()}
        if comm is None:
            return mine
        out: dict[tuple[int, ...], np.ndarray] = {}
        for part in comm.allgather(mine):
            out.update(part)
        return dict(sorted(out.items()))

    def report(self, comm: MPI.Comm) -> dict[str, Any]:
        """Eigenvalues and kept functions per neighbourhood (key: the vertex "i,j")."""
        spectra = self.spectra(comm)
        counts: dict[tuple[int, ...], int] = {}
        for part in comm.allgather(self.counts()):
            counts.update(part)
        key = lambda v: ",".join(str(i) for i in v)  # noqa: E731
        return {"eigenvalues": {key(v): lam.tolist() for v, lam in spectra.items()},
                "functions": {key(v): counts[v] for v in spectra},
                "timings": {k: comm.allreduce(t, op=MPI.MAX) for k, t in self.timings.items()}}

    def counts(self) -> dict[tuple[int, ...], int]:
        """Spectral functions kept per neighbourhood of this rank."""
        return {v: s[2] for v, s in self._spectra.items()}

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _vertex_keys(h, cell: int) -> list[tuple[int, ...]]:
        """Coarse lattice indices of K's vertices, in ``coarse_vertices`` order."""
        idx = np.rint((h.coarse_vertices(cell) - h.lower) / h.H).astype(np.int64)
        return [tuple(int(i) for i in row) for row in idx]

    def _partition(self, engine: PatchEngine, cell: int) -> tuple:
        r"""χ_j of K's vertices (scalar, K-mesh dof blocks × vertices), a_K (CSR), lattice ids.

        Also K's fine-cell weights :math:`H^2\sum_j\sum_k e_a(\chi_j e_k)` (cached).
        """
        if cell in self._cells:
            return self._cells[cell][:3]
        t0 = time.perf_counter()
        h, problem = engine.hierarchy, engine.problem
        K = engine.coarse_cell(cell)
        N = nodal_functions(h.cell_type, K.dof_coordinates(), h.coarse_vertices(cell), h.H, 1)
        kind = self.partition(problem)
        if kind == "bilinear":
            chi, A_K = N, to_csr(K.assemble())
        else:  # the linear or oscillatory MsFEM basis of K (K may be another rank's cell:
            # only its basis is used, not its coarse dofs)
            borrowed = cell not in engine.cell_dofs
            if borrowed:
                engine.cell_dofs[cell] = np.zeros(0, dtype=np.int64)
            try:
                e = MsFEM(variant="linear" if kind == "multiscale" else "oscillatory").local(
                    cell, engine)
            finally:
                if borrowed:
                    del engine.cell_dofs[cell]
            assert e.trial is not None and e.energy is not None
            chi, A_K = e.trial, e.energy
            K = engine.coarse_cell(cell)
        energies = _CellEnergy.of(K).energies(K, chi, engine.bs)
        weight = float(np.max(h.H)) ** 2 * energies / np.prod(h.h)
        self._cells[cell] = (chi, A_K, K.lattice_ids(), _fine_cell_ids(K, h), weight)
        self.timings["partition"] += time.perf_counter() - t0
        return self._cells[cell][:3]

    def _neighbourhood(self, engine: PatchEngine, v: tuple[int, ...]) -> tuple:
        """(sorted lattice ids of ω_v's blocks, its functions ψ_k (rows in that order), count)."""
        if v in self._spectra:
            return self._spectra[v][:3]
        h, problem, L = engine.hierarchy, engine.problem, self.params.eigenfunctions
        vv = np.array(v)
        lo_c, hi_c = np.maximum(vv - 1, 0), np.minimum(vv, np.array(h.N) - 1)
        cells = [int(np.ravel_multi_index(tuple(s), h.N, order="F"))
                 for s in np.ndindex(*(hi_c - lo_c + 1))
                 for s in [lo_c + np.array(s)]]
        for c in cells:
            self._partition(engine, c)
        shape = tuple(int(s) for s in (hi_c - lo_c + 1) * h.M)
        pm = engine.patch_mesh(shape)
        pm.move_to(h.lower + lo_c * h.H)
        where = f"neighbourhood of coarse vertex {v} (x = {h.lower + vv * h.H})"
        t0 = time.perf_counter()
        weights = _gather_weights(pm, h, [self._cells[c] for c in cells])
        B = _WeightedMass.of(pm).assemble(weights)
        A = pm.assemble()
        # a vertex on Γ_D: ψ = 0 on ∂ω ∩ Γ_D (then χ_i ψ_k satisfies the Dirichlet condition)
        fixed, on_gd = np.zeros(0, np.int32), False
        if any(i in (0, n_i) for i, n_i in zip(v, h.N)) and problem.dirichlet:
            bcs = pm.disc.dirichlet_bcs()
            fixed = np.unique(np.concatenate([bc.dof_indices()[0] for bc in bcs]))
            vertex = expand_blocks(pm.positions((h.lower + vv * h.H)[None, :]), engine.bs)
            on_gd = bool(np.isin(vertex, fixed).any())
        free = np.setdiff1d(np.arange(A.getSize()[0]), fixed) if on_gd else \
            np.arange(A.getSize()[0])
        scalar = problem.block_size == 1
        n = min(L - 1 if scalar and on_gd else L, len(free))
        lam, Y = np.zeros(0), np.zeros((len(free), 0))
        t1 = time.perf_counter()
        self.timings["snapshots"] += t1 - t0  # (all fine functions: the matrices)
        if n > 0 and self.params.snapshots == "all":
            A_f, B_f = (_sub(A, free), _sub(B, free)) if on_gd else (A, B)
            try:
                lam, Y = eigensolve(A_f, B_f, n, petsc_options=self.params.eigen_options)
            except Exception as err:
                raise type(err)(f"gmsfem: spectral problem on the {where}: {err}") from err
            finally:
                if on_gd:
                    A_f.destroy()
                    B_f.destroy()
            self.timings["eigensolve"] += time.perf_counter() - t1
        elif n > 0:
            A_csr, B_csr = to_csr(A), to_csr(B)
            G = np.eye(len(pm.boundary))[:, ~np.isin(pm.boundary, fixed)] if on_gd else \
                np.eye(len(pm.boundary))
            R, _ = engine.dirichlet(pm, G, f"snapshots of the {where}")
            t2 = time.perf_counter()
            self.timings["snapshots"] += t2 - t1
            A_s, B_s = R.T @ (A_csr @ R), R.T @ (B_csr @ R)
            lam, Z = scipy.linalg.eigh((A_s + A_s.T) / 2, (B_s + B_s.T) / 2,
                                       subset_by_index=[0, n - 1])
            Y = (R @ Z)[free]
            self.timings["eigensolve"] += time.perf_counter() - t2
        B.destroy()
        X = np.zeros((A.getSize()[0], n))
        X[free] = Y
        if n:
            X /= np.abs(X).max(axis=0)
            X *= np.sign(X[np.argmax(np.abs(X), axis=0), np.arange(n)])
        if scalar:  # the constants: the first function of the vertex is χ_i itself
            X = np.hstack([np.ones((len(X), 1)), X if on_gd else X[:, 1:]])
        kept = n if self.params.threshold is None else \
            int(np.sum(lam < self.params.threshold))
        count = max(1, min(L, kept + (1 if scalar and on_gd else 0)))
        ids = pm.lattice_ids()
        order = np.argsort(ids)
        X = X[expand_blocks(order, engine.bs)]
        self._spectra[v] = (ids[order], X, count, lam)
        return self._spectra[v][:3]


def _sub(A, rows: np.ndarray):
    """The square submatrix A[rows, rows] (PETSc, sequential)."""
    from petsc4py import PETSc

    index = PETSc.IS().createGeneral(rows.astype(PETSc.IntType),  # type: ignore[arg-type]
                                     comm=MPI.COMM_SELF)  # type: ignore[arg-type]
    try:
        return A.createSubMatrix(index, index)
    finally:
        index.destroy()


register("gmsfem", GMsFEM, summary="Generalized MsFEM: local spectral bases (Efendiev, Galvis "
                                    "& Hou 2013)")


# ---------------------------------------------------------------------------- fine cells
def _fine_cell_ids(pm: PatchMesh, h) -> np.ndarray:
    """Global fine-lattice ids of the cells of ``pm`` in its current position."""
    if ("cell index",) not in pm.cache:
        x = pm.x0[pm.mesh.geometry.dofmaps[0]].mean(axis=1)[:, : h.dim]
        pm.cache[("cell index",)] = np.floor(x / h.h).astype(np.int64)
    idx = pm.cache[("cell index",)] + np.rint((pm.origin - h.lower) / h.h).astype(np.int64)
    return np.ravel_multi_index(tuple(idx.T), tuple(np.array(h.N) * h.M), order="F")


def _gather_weights(pm: PatchMesh, h, cells: list[tuple]) -> np.ndarray:
    """The weight on the cells of ``pm`` from the coarse cells' weights (lattice ids)."""
    ids = np.concatenate([c[3] for c in cells])
    w = np.concatenate([c[4] for c in cells])
    order = np.argsort(ids)
    want = _fine_cell_ids(pm, h)
    pos = np.searchsorted(ids[order], want)
    if np.any(ids[order][np.minimum(pos, len(ids) - 1)] != want):
        raise RuntimeError("gmsfem: a neighbourhood cell has no partition-of-unity weight")
    return w[order][pos]


class _CellEnergy:
    r"""Fine-cell energies :math:`\int_c e_a(w)` of functions on a patch mesh (one form)."""

    def __init__(self, pm: PatchMesh):
        self.disc = pm.disc
        self.V0 = dolfinx.fem.functionspace(pm.mesh, ("DG", 0))
        self.w = dolfinx.fem.Function(pm.V)
        q = ufl.TestFunction(self.V0)
        # a(w, w): the user's form with msfem's quadrature degree (not ufl.replace, whose
        # reference cycles would keep the patch mesh alive until a garbage collection)
        energy = pm.disc.energy_ufl(self.w)
        form = sum(itg.integrand() * q * ufl.Measure(itg.integral_type(), domain=pm.mesh,
                                                     metadata=itg.metadata())
                   for itg in energy.integrals())
        self.form = dolfinx.fem.form(form)
        self.cell_dof = self.V0.dofmap.list[:, 0]

    @classmethod
    def of(cls, pm: PatchMesh) -> _CellEnergy:
        """The (cached) energy form of ``pm`` (rebuilt when its forms were recompiled)."""
        cached = pm.cache.get(("cell energy",))
        if cached is None or cached.disc is not pm.disc:
            cached = pm.cache[("cell energy",)] = cls(pm)
        return cached

    def energies(self, pm: PatchMesh, chi: np.ndarray, bs: int) -> np.ndarray:
        r""":math:`\sum_j\sum_{k<bs}\int_c e_a(\chi_j e_k)` per cell of ``pm``."""
        total = np.zeros(len(self.cell_dof))
        for j in range(chi.shape[1]):
            for k in range(bs):
                self.w.x.array[:] = 0.0
                self.w.x.array[k::bs] = chi[:, j]
                total += dolfinx.fem.assemble_vector(self.form).array[self.cell_dof]
        return total


class _WeightedMass:
    r"""The weighted mass matrix :math:`\int \tilde\kappa\, u\cdot v` on a patch mesh."""

    def __init__(self, pm: PatchMesh):
        self.V0 = dolfinx.fem.functionspace(pm.mesh, ("DG", 0))
        self.kappa = dolfinx.fem.Function(self.V0)
        u, v = ufl.TrialFunction(pm.V), ufl.TestFunction(pm.V)
        self.form = dolfinx.fem.form(self.kappa * ufl.inner(u, v) * ufl.dx)
        self.cell_dof = self.V0.dofmap.list[:, 0]

    @classmethod
    def of(cls, pm: PatchMesh) -> _WeightedMass:
        """The (cached) weighted mass form of ``pm``."""
        if ("weighted mass",) not in pm.cache:
            pm.cache[("weighted mass",)] = cls(pm)
        return pm.cache[("weighted mass",)]

    def assemble(self, weights: np.ndarray):
        """The PETSc matrix for cell weights ``weights`` (the caller destroys it)."""
        self.kappa.x.array[self.cell_dof] = weights
        B = dolfinx.fem.petsc.assemble_matrix(self.form)
        B.assemble()
        return B
