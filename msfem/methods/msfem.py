r"""MsFEM: multiscale basis functions from local Dirichlet problems on patches.

For a coarse cell K with vertices :math:`x_1, \dots, x_m` and a patch :math:`S \supseteq K`
(K itself, or K plus oversampling layers, clipped to Ω), the local problems are

.. math::
    a_S(\psi_j, v) = 0 \quad \forall v \in V_{h,0}(S), \qquad \psi_j = g_j \ \text{on}\ \partial S,

solved on the fine sub-grid of S (one factorisation per patch, all right-hand sides at
once). The basis of K is the combination

.. math::
    \phi_i = \sum_j c_{ij}\, \psi_j|_K, \qquad C = V^{-1},\ V_{kj} = \psi_j(x_k),

so that :math:`\phi_i(x_k) = \delta_{ik}`. The element data are
:math:`A_K[i, j] = a_K(\phi_j, w_i)`, :math:`b_K[i] = L_K(w_i)` with :math:`w_i = \phi_i`
(Galerkin) or :math:`w_i = N_i`, the coarse nodal functions (Petrov--Galerkin).

Parameters (:class:`MsFEMParameters`): the variant, the patch (``oversampling``), the
boundary data :math:`g_j` (``"polynomial"``: a basis of the coarse element's space, P1
:math:`\{1, \xi_1, \dots\}` or Q1 :math:`\{1, \xi_1, \xi_2, \xi_1\xi_2, \dots\}`, times unit
vectors for vector problems; ``"oscillatory"``: Hou--Wu's reduced 1D problems along the
edges of ∂S).

=================  ===========  ===========  ===============  ============================
variant            patch        boundary     test             reference
=================  ===========  ===========  ===============  ============================
standard           --           --           Galerkin         coarse P1/Q1 FEM (LFEM)
linear             K            polynomial   Galerkin         Hou & Wu (1997) MFEM-L
oscillatory        K            oscillatory  Galerkin         Hou & Wu (1997) MFEM-O
oversampling       S ⊋ K        polynomial   Galerkin         Hou & Wu (1997) §3.4; EHW (2000)
petrov-galerkin    S ⊋ K        polynomial   Petrov-Galerkin  Hou, Wu & Zhang (2004)
=================  ===========  ===========  ===============  ============================

Each variant is registered under its own name (presets of this one class).

Dirichlet data on ∂Ω (subtlety (a) of REFERENCES.md §2): a clipped patch gets the same
boundary data :math:`g_j` on ∂S ∩ ∂Ω as elsewhere, as in Hou & Wu's original method; the
coarse Dirichlet condition then holds at the coarse vertices, and between them the
oversampled basis need not vanish on ∂Ω. That trace error is part of the broken error.

Perforated domains (``problem.holes``): ``linear`` and ``oversampling`` pin every fine dof
of a removed fine cell to 0 in their local problems (:meth:`MsFEM._local_perforated`);
the other variants refuse holes.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal, NamedTuple

import numpy as np
import pydantic
import scipy.sparse as sp
from scipy.spatial import cKDTree

from msfem import solvers
from msfem.coefficients import ConstantField, Field
from msfem.condensation import CellCondensation, CellSchur, CellStore, SkeletonPattern
from msfem.local import solve_dirichlet
from msfem.mesh import Oversampling, Patch, StructuredHierarchy
from msfem.methods.base import ElementData, Method, Parameters, register
from msfem.patches import (
    PatchEngine,
    PatchMesh,
    Where,
    blocked,
    metric_forms,
    nodal_functions,
    polynomial_basis,
    to_csr,
)
from msfem.problem import hole_nodes
from msfem.transfer import expand_blocks

Variant = Literal["standard", "linear", "oscillatory", "oversampling", "petrov-galerkin"]


class VariantTraits(NamedTuple):
    """Boundary data, test space and whether a variant accepts oversampling."""

    boundary: str
    test: str
    oversampled: bool


VARIANTS: dict[str, VariantTraits] = {
    "standard": VariantTraits("none", "galerkin", False),
    "linear": VariantTraits("polynomial", "galerkin", False),
    "oscillatory": VariantTraits("oscillatory", "galerkin", False),
    "oversampling": VariantTraits("polynomial", "galerkin", True),
    "petrov-galerkin": VariantTraits("polynomial", "petrov-galerkin", True),
}


class MsFEMParameters(Parameters):
    r"""Parameters of :class:`MsFEM`.

    Attributes:
        variant: see the module table.
        oversampling: the patch: an :class:`~msfem.mesh.Oversampling`, an int (coarse
            layers) or a table with one of ``coarse_layers``, ``ratio``, ``fine_layers``,
            ``sampling_region``. Default: one coarse layer for the oversampled variants
            (structured hierarchies), none otherwise.
        boundary: override the variant's boundary data.
        edge_coefficient: coefficient driving the oscillatory edge problems (default:
            the first coefficient of the problem).
        coarse_quadrature: how the element stiffness and load are integrated.
            ``"galerkin"`` (default): on the fine grid, :math:`A_K = W^T A_h|_K \phi`,
            :math:`b_K = W^T b_h|_K` -- the Galerkin projection of the fine problem.
            ``"centred"``: Hou & Wu (1997) §4.1's "two-dimensional centred trapezoidal
            rule", one point per fine square τ of K (its centre :math:`x_\tau`, weight
            :math:`h^2`): :math:`A_K[i, j] = \sum_\tau h^2 a(x_\tau)
            \nabla\phi_j(x_\tau)\cdot\nabla w_i(x_\tau)`, :math:`b_K[i] = \sum_\tau h^2
            f(x_\tau) w_i(x_\tau)`, the gradients and values of the bilinear sub-grid
            functions at the centres. For the scalar diffusion operator on quadrilaterals
            with Q1 sub-grids only (what the paper defines); refused otherwise.
        local_solver: how the local problems on patches of whole coarse layers
            (quadrilateral/hexahedral hierarchies, polynomial data) are solved; the same
            basis to rounding. ``"condensed"`` (default): every coarse cell's interior
            is eliminated once per rank (:meth:`~msfem.condensation.CellCondensation.schur`)
            and each patch is solved on its coarse skeleton
            (:meth:`~msfem.condensation.SkeletonPattern.dirichlet`), then extended into K.
            ``"sparse"``: each patch matrix is factorised by PETSc (``petsc_options``).
    """

    variant: Variant = "linear"
    oversampling: Oversampling | None = None
    boundary: Literal["polynomial", "oscillatory"] | None = None
    edge_coefficient: str | None = None
    coarse_quadrature: Literal["galerkin", "centred"] = "galerkin"
    local_solver: Literal["condensed", "sparse"] = "condensed"

    @pydantic.field_validator("oversampling", mode="before")
    @classmethod
    def _oversampling(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer (coarse layers) or a table")
        if isinstance(value, (int, np.integer)):
            return Oversampling(coarse_layers=int(value))
        if isinstance(value, dict):
            allowed = ("coarse_layers", "ratio", "fine_layers", "sampling_region")
            if len(value) != 1 or set(value) - set(allowed):
                raise ValueError(f"must have exactly one of {', '.join(allowed)}")
            return Oversampling(**value)
        return value


class MsFEM(Method):
    """Multiscale FEM of Hou & Wu (1997) and its variants (see the module docstring)."""

    name = "msfem"
    Parameters = MsFEMParameters
    params: MsFEMParameters

    # ------------------------------------------------------------------ properties
    @property
    def boundary(self) -> str:
        """Boundary data of the local problems: none, polynomial or oscillatory."""
        default, _, _ = VARIANTS[self.params.variant]
        return "none" if default == "none" else (self.params.boundary or default)

    @property
    def test(self) -> str:
        """``"galerkin"`` or ``"petrov-galerkin"``."""
        return VARIANTS[self.params.variant][1]

    @property
    def oversampled(self) -> bool:
        """Whether the variant accepts oversampling."""
        return VARIANTS[self.params.variant][2]

    @property
    def galerkin(self) -> bool:
        """Galerkin unless the Petrov--Galerkin variant."""
        return self.test == "galerkin"

    def oversampling(self, hierarchy) -> Oversampling:
        """The patch setting (with the variant's default)."""
        if self.params.oversampling is not None:
            return self.params.oversampling
        return Oversampling(coarse_layers=1 if self.oversampled else 0)

    def layers(self, hierarchy) -> int:
        """Fine layers of oversampling (0: S = K); unstructured hierarchies: coarse layers."""
        os = self.oversampling(hierarchy)
        if not isinstance(hierarchy, StructuredHierarchy):
            return int(os.coarse_layers or 0)
        return os.layers(hierarchy.M)

    def is_conforming(self, hierarchy) -> bool:
        """True without oversampling (the basis is continuous across coarse cells)."""
        return self.layers(hierarchy) == 0

    @property
    def label(self) -> str:
        """The variant's name."""
        return self.params.variant

    # ------------------------------------------------------------------ protocol
    def holes_error(self) -> str | None:
        """Perforated domains: the ``linear`` and ``oversampling`` variants only."""
        if self.params.variant in ("linear", "oversampling") and self.boundary == "polynomial" \
                and self.params.coarse_quadrature == "galerkin":
            return None
        return (f"MsFEM variant {self.params.variant!r} does not handle perforated domains "
                f"(holes); use 'linear', 'oversampling' (polynomial boundary data, galerkin "
                f"quadrature) or 'crouzeix-raviart'")

    def validate(self, hierarchy, problem) -> None:
        """Check the variant against the hierarchy and the problem (before computing)."""
        if problem.holes is not None and not isinstance(hierarchy, StructuredHierarchy):
            raise ValueError("MsFEM with holes (perforated domains) needs a structured "
                             "hierarchy (removed fine cells are found on the lattice); use "
                             "[mesh] N and M")
        os = self.oversampling(hierarchy)
        if not isinstance(hierarchy, StructuredHierarchy):
            if os.ratio not in (None, 1) or os.fine_layers not in (None, 0) or \
                    os.sampling_region is not None:
                raise ValueError(
                    f"on an unstructured (gmsh) hierarchy the oversampling patch is given in "
                    f"coarse layers (vertex neighbours), e.g. oversampling = 1; got {os}")
            layers = self.layers(hierarchy)
            if layers > 0 and not self.oversampled:
                raise ValueError(
                    f"variant {self.params.variant!r} has no oversampling (got {os}); use "
                    f"variant 'oversampling' or 'petrov-galerkin', or set oversampling to 0")
        else:
            layers = os.layers(hierarchy.M)
            if layers > 0 and not self.oversampled:
                raise ValueError(
                    f"variant {self.params.variant!r} has no oversampling (got {os}); use "
                    f"variant 'oversampling' or 'petrov-galerkin', or set oversampling to 0")
            max_layers = max(n * hierarchy.M for n in hierarchy.N)
            if os.sampling_region is not None:
                if os.sampling_region % hierarchy.M:
                    raise ValueError(f"sampling_region = {os.sampling_region} must be a "
                                     f"multiple of M = {hierarchy.M}")
            elif layers >= max_layers:
                raise ValueError(
                    f"oversampling patch ({layers} fine layers) is larger than the domain "
                    f"({max_layers} fine cells per direction); choose fewer layers")
        if self.params.coarse_quadrature == "centred":
            if not isinstance(hierarchy, StructuredHierarchy) or \
                    hierarchy.cell_type != "quadrilateral" or problem.degree != 1 or \
                    problem.operator != "diffusion" or problem.block_size != 1:
                raise ValueError(
                    "coarse_quadrature = 'centred' is Hou & Wu's one-point rule for scalar "
                    "diffusion -div(a grad u) = f on quadrilateral Q1 sub-grids; use "
                    "coarse_quadrature = 'galerkin' for other problems or cells")
            if self.layers(hierarchy) > 0 and not self.galerkin:
                raise ValueError("coarse_quadrature = 'centred' with the Petrov-Galerkin "
                                 "variant is not defined; use 'oversampling'")
        if self.boundary == "oscillatory":
            if hierarchy.dim == 3:
                raise ValueError("oscillatory boundary data is defined by 1D edge problems; in "
                                 "3D the face data is not defined by Hou & Wu -- use 'linear' or "
                                 "'oversampling' for 3D hierarchies")
            if (getattr(hierarchy, "n_sub", 1) > 1 or not isinstance(
                    hierarchy, StructuredHierarchy)) and layers > 0:
                raise ValueError("oscillatory boundary data on a box-shaped oversampling patch "
                                 "gives 4 functions for a triangle's 3 vertices; use polynomial "
                                 "boundary data with triangles")
            names = list(problem.coefficients)
            if not names:
                raise ValueError("oscillatory boundary data needs a coefficient field")
            if self.params.edge_coefficient not in (None, *names):
                raise ValueError(f"edge_coefficient {self.params.edge_coefficient!r} is not one "
                                 f"of {names}")

    def schedule(self, hierarchy, cells: np.ndarray) -> np.ndarray:
        """Cells of one sampling region in a row (they share its local solutions)."""
        if self.oversampling(hierarchy).sampling_region is None or len(cells) == 0:
            return cells
        los = np.array([self.patch(hierarchy, int(c)).lo for c in cells])
        return cells[np.lexsort(los.T[::-1])]

    def prepare(self, engine: PatchEngine, cells: np.ndarray) -> None:
        """Oversampled patches: their blocks from one assembly of the fine operator."""
        h = engine.hierarchy
        if self.layers(h) == 0 or self.boundary == "none":
            return  # S = K: the K-mesh is assembled anyway (element matrix, energy norm)
        if engine.unstructured:
            engine.gather_patches(self.layers(h))
            return
        if self._summed(engine):  # patches are sums of K-matrices (no fine operator needed)
            if self.params.local_solver == "condensed" and len(cells):
                # every cell of the patches, condensed in one go on the first batch
                layers = self.layers(h) // h.M
                squares = np.array(np.unravel_index(cells, h.N, order="F")).T
                steps = itertools.product(range(-layers, layers + 1), repeat=h.dim)
                near = np.concatenate([squares + np.array(d) for d in steps])
                near = near[np.all((near >= 0) & (near < np.array(h.N)), axis=1)]
                engine.region_cache["msfem cells"] = np.unique(np.ravel_multi_index(
                    tuple(near.T), h.N, order="F"))
            return
        placements = {}
        for c in cells:
            patch = self.patch(h, int(c))
            placements[(patch.shape, patch.lo)] = (engine.patch_mesh(patch.shape), patch.lo)
        engine.extract_patches(list(placements.values()))

    def patch(self, hierarchy, cell: int) -> Patch:
        """The patch S of coarse cell ``cell`` (box around K, or its sampling region)."""
        os = self.oversampling(hierarchy)
        if os.sampling_region is not None:
            return hierarchy.sampling_region(cell, os.sampling_region)
        return hierarchy.patch(cell, self.layers(hierarchy))

    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Solve the local problems of coarse cell ``cell`` and return its element data."""
        if engine.unstructured:
            return self._local_unstructured(cell, engine)
        if engine.problem.holes is not None:
            return self._local_perforated(cell, engine)
        if self._summed(engine):
            return self._local_summed(cell, engine)
        h = engine.hierarchy
        bs = engine.bs
        patch = self.patch(h, cell)
        oversampled = self.layers(h) > 0
        # K's mesh, and the patch S: K itself, or a box of fine squares around it
        Kmesh = engine.coarse_cell(cell)
        S = engine.patch_mesh(patch.shape) if oversampled else Kmesh
        if oversampled:
            S.move_to(h.lower + np.array(patch.lo) * h.h)
        K_vertices = h.coarse_vertices(cell)
        what = Where(cell, K_vertices)
        if self.boundary == "none":
            A_K = Kmesh.assemble()
            return self._element(cell, engine, Kmesh, self._nodal(Kmesh, K_vertices, h, bs),
                                 to_csr(A_K), K_vertices)
        # local problems on S (a sampling region's solutions are shared by its cells)
        region = (patch.lo, patch.hi)
        cached = engine.region_cache.get("msfem")
        if cached is not None and cached[0] == (region, self.params):
            psi, A_csr = cached[1], None
        else:
            G = self._boundary_data(S, patch, K_vertices, h, bs, engine)
            psi, A_csr = engine.dirichlet(S, G, what, lo=patch.lo if oversampled else None)
            if self.oversampling(h).sampling_region is not None:
                engine.region_cache["msfem"] = ((region, self.params), psi)
        phi = self._restrict(psi, S, Kmesh, patch, K_vertices, engine, cell)
        if A_csr is None or oversampled:
            A_csr = to_csr(Kmesh.assemble())
        return self._element(cell, engine, Kmesh, phi, A_csr, K_vertices)

    def _restrict(self, psi: np.ndarray, S: PatchMesh, Kmesh: PatchMesh, patch: Patch,
                  K_vertices: np.ndarray, engine: PatchEngine, cell: int) -> np.ndarray:
        r"""Restrict the patch functions to K (K-mesh order), normalised: φ_i(x_k) = δ_ik."""
        if S is Kmesh:
            return self._normalise(psi, expand_blocks(Kmesh.positions(K_vertices), engine.bs),
                                   f"the local functions of coarse cell {cell}")
        return self._restrict_many(psi[None], S, Kmesh, patch, K_vertices, engine,
                                   np.array([cell]))[0]

    def _summed(self, engine: PatchEngine) -> bool:
        """Oversampled patches assembled from K-matrices (:meth:`PatchEngine.summed_patch_values`).

        Whole coarse layers around K on a quadrilateral/hexahedral lattice: the patch is a
        union of coarse cells, each assembled once per rank.
        """
        h = engine.hierarchy
        layers = self.layers(h)
        return not engine.unstructured and layers > 0 and layers % h.M == 0 and \
            h.n_sub == 1 and self.oversampling(h).sampling_region is None and \
            engine.problem.holes is None and self.boundary != "none" and \
            engine.cell_integrals_only()

    def _local_summed(self, cell: int, engine: PatchEngine) -> ElementData:
        """:meth:`local` for :meth:`_summed` patches: no assembly on the patch."""
        h = engine.hierarchy
        patch = self.patch(h, cell)
        S = engine.patch_mesh(patch.shape)
        lo = np.array(patch.lo) // h.M
        A_S = engine.summed_patch_values(S, lo, lo + np.array(patch.shape) // h.M)
        values, load = engine.cell_values([cell])[0]
        S.place(h.lower + np.array(patch.lo) * h.h)
        Kmesh = engine.patch_mesh((h.M,) * h.dim)
        Kmesh.place(h.lower + np.array(patch.cell_lo) * h.h)
        K_vertices = h.coarse_vertices(cell)
        G = self._boundary_data(S, patch, K_vertices, h, engine.bs, engine)
        psi = engine.dirichlet_values(S, A_S, G, Where(cell, K_vertices))
        phi = self._restrict(psi, S, Kmesh, patch, K_vertices, engine, cell)
        indices, indptr = Kmesh.block_pattern_arrays()
        A_K = sp.csr_matrix((values, indices, indptr), shape=Kmesh.matrix_shape)
        return self._element(cell, engine, Kmesh, phi, A_K, K_vertices, load)

    def local_batch(self, cells: np.ndarray, engine: PatchEngine) -> list[ElementData]:
        r"""Element data of several cells; S = K on a structured hierarchy is batched.

        For the conforming variants (``standard`` excepted) every coarse cell of one
        shape has the same fine sparsity: the matrices are assembled cell by cell, but the
        Dirichlet problems of all cells are one block-diagonal factorisation and solve
        (:meth:`PatchEngine.dirichlet_batch`) and the element matrices
        :math:`W_K^T A_K \phi_K` one sparse product. Equal to :meth:`local` per cell.
        """
        h = engine.hierarchy
        if self._summed(engine):
            return self._batch_summed(np.asarray(cells), engine)
        if engine.unstructured or self.layers(h) > 0 or self.boundary == "none" or \
                len(cells) < 2 or self.params.coarse_quadrature != "galerkin" or \
                engine.problem.holes is not None:
            return [self.local(int(c), engine) for c in cells]
        groups: dict[int, list[int]] = {}
        for c, sub in zip(np.asarray(cells).tolist(), (np.asarray(cells) % h.n_sub).tolist()):
            groups.setdefault(sub, []).append(c)
        out: dict[int, ElementData] = {}
        for group in groups.values():
            for e in self._batch(group, engine):
                out[e.cell] = e
        return [out[int(c)] for c in cells]

    def _batch(self, cells: list[int], engine: PatchEngine) -> list[ElementData]:
        """:meth:`local_batch` for cells of one Kuhn sub-simplex (or one box shape)."""
        h, bs = engine.hierarchy, engine.bs
        K = engine.coarse_cell(cells[0])  # the same mesh for every cell of the group
        squares = np.array(np.unravel_index(np.asarray(cells) // h.n_sub, h.N, order="F")).T
        origins = h.lower + squares * h.M * h.h  # as coarse_cell places K
        n = K.matrix_shape[0]
        D = np.empty((len(cells), len(K.block_pattern_arrays()[0])))
        loads = np.empty((len(cells), n))
        Gs = []
        polynomial = self.boundary == "polynomial"  # the same data for every cell
        for k, c in enumerate(cells):
            K.move_to(origins[k])
            D[k] = K.assemble_values()
            loads[k] = K.load()
            if k == 0 or not polynomial:
                Gs.append(self._boundary_data(K, h.patch(c, 0), h.coarse_vertices(c), h, bs,
                                              engine))
        G = np.vstack(Gs) if not polynomial else np.tile(Gs[0], (len(cells), 1))
        lattice = K.lattice_ids_at(origins)
        psi = engine.dirichlet_batch(K, D, G,
                                     f"the local problems of coarse cells {cells[0]}..."
                                     f"{cells[-1]} (shape {K.shape})")
        vertices = h.coarse_vertices(cells[-1])  # same position in K for every cell
        phi = self._normalise(psi, expand_blocks(K.positions(vertices), bs),
                              f"the local functions of coarse cells {cells[0]}...{cells[-1]}")
        indices, indptr = K.block_pattern_arrays()
        A_blk = engine.block_diagonal(K, len(cells), "all").csr(D)
        B, m = len(cells), phi.shape[2]
        A_phi = (A_blk @ phi.reshape(B * n, m)).reshape(B, n, m)
        W = phi if self.galerkin else np.broadcast_to(
            self._nodal(K, vertices, h, bs), phi.shape)
        A_e = np.einsum("bni,bnj->bij", W, A_phi)
        b_e = np.einsum("bni,bn->bi", W, loads)
        metrics = K.metric_matrices()
        out = []
        for k, c in enumerate(cells):
            dofs = engine.cell_dofs[c]
            out.append(ElementData(
                cell=c, rows=dofs, cols=dofs, A=A_e[k], b=b_e[k], fine_dofs=lattice[k],
                trial=phi[k], test=None if self.galerkin else W[k],
                energy=sp.csr_matrix((D[k], indices, indptr), shape=(n, n)),
                metrics=metrics))
        return out

    def energy_matrix(self, cell: int, engine: PatchEngine):
        """The fine matrix of :math:`a` on K, assembled again (spaces without stored ones)."""
        if engine.unstructured:
            A = engine.cell_mesh(cell).assemble()
            out = to_csr(A)
            A.destroy()
            return out
        return to_csr(engine.coarse_cell(cell).assemble())

    # ------------------------------------------------------------------ pieces
    def _nodal(self, Kmesh: PatchMesh, K_vertices: np.ndarray, h, bs: int) -> np.ndarray:
        """The coarse nodal functions N_i at the fine dofs of K (cached per offset)."""
        key = ("N", tuple(np.round((K_vertices.mean(axis=0) - Kmesh.origin) / h.h, 6)))
        if key not in Kmesh.cache:
            Kmesh.cache[key] = nodal_functions(h.cell_type, Kmesh.dof_coordinates(),
                                               K_vertices, h.H, bs)
        return Kmesh.cache[key]

    def _batch_summed(self, cells: np.ndarray, engine: PatchEngine) -> list[ElementData]:
        r""":meth:`local_batch` for :meth:`_summed` patches (polynomial data, Galerkin rule).

        Cells whose patches have one shape and one position of K in them share the
        summation, the boundary data and the restriction to K: their patch matrices are
        one sparse product, the factorisations one per patch (PETSc, numeric phase
        only), the normalisations one batched inverse and the element matrices
        :math:`W_K^T A_K \phi_K` one block-diagonal product. Equal to :meth:`local`.
        """
        h, bs = engine.hierarchy, engine.bs
        if self.boundary != "polynomial" or self.params.coarse_quadrature != "galerkin" or \
                len(cells) < 2:
            return [self._local_summed(int(c), engine) for c in cells]
        layers = self.layers(h) // h.M
        squares = np.array(np.unravel_index(cells, h.N, order="F")).T  # (n_sub = 1)
        lo = np.maximum(squares - layers, 0)
        hi = np.minimum(squares + layers + 1, np.array(h.N))
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(map(tuple, np.column_stack([hi - lo, squares - lo]))):
            groups.setdefault(key, []).append(i)
        Kmesh = engine.patch_mesh((h.M,) * h.dim)
        indices, indptr = Kmesh.block_pattern_arrays()
        n = Kmesh.matrix_shape[0]
        out: list[ElementData | None] = [None] * len(cells)
        for members in groups.values():
            idx = np.array(members)
            first = int(cells[idx[0]])
            patch = self.patch(h, first)
            S = engine.patch_mesh(patch.shape)
            condensed = self.params.local_solver == "condensed"
            # (these move the K-mesh)
            A_S = None if condensed else engine.summed_patches_values(S, lo[idx], hi[idx])
            schur = self._schur(engine, lo[idx], hi[idx]) if condensed else None
            cached = engine.cell_values(cells[idx])
            S.place(h.lower + np.array(patch.lo) * h.h)
            Kmesh.place(h.lower + np.array(patch.cell_lo) * h.h)
            vertices = h.coarse_vertices(first)
            G = self._boundary_data(S, patch, vertices, h, bs, engine)  # (the group's)
            shift = (squares[idx] - squares[idx[0]]) * h.H
            D = np.stack([v for v, _ in cached])
            if schur is None:
                assert A_S is not None
                psi = np.stack([engine.dirichlet_values(S, A_S[b], G, Where(
                    int(cells[i]), vertices + shift[b])) for b, i in enumerate(idx)])
                phi = self._restrict_many(psi, S, Kmesh, patch, vertices, engine, cells[idx])
            else:
                phi = self._condensed_basis(engine, S, Kmesh, patch, schur, D, G, vertices,
                                            cells[idx], shift)
            loads = np.stack([f for _, f in cached])
            B, m = len(idx), phi.shape[2]
            A_phi = (engine.block_diagonal(Kmesh, B, "all").csr(D)
                     @ phi.reshape(B * n, m)).reshape(B, n, m)
            W = phi if self.galerkin else np.broadcast_to(
                self._nodal(Kmesh, vertices, h, bs), phi.shape)
            A_e = np.einsum("bni,bnj->bij", W, A_phi)
            b_e = np.einsum("bni,bn->bi", W, loads)
            origins = h.lower + (squares[idx] * h.M) * h.h
            lattice = Kmesh.lattice_ids_at(origins)
            metrics = Kmesh.metric_matrices()
            for b, i in enumerate(idx):
                c = int(cells[i])
                dofs = engine.cell_dofs[c]
                out[i] = ElementData(
                    cell=c, rows=dofs, cols=dofs, A=A_e[b], b=b_e[b], fine_dofs=lattice[b],
                    trial=phi[b], test=None if self.galerkin else W[b],
                    energy=sp.csr_matrix((cached[b][0], indices, indptr), shape=(n, n)),
                    metrics=metrics)
        return [e for e in out if e is not None]

    def _schur(self, engine: PatchEngine, lo: np.ndarray, hi: np.ndarray
               ) -> tuple[CellSchur, np.ndarray]:
        """The condensed cells of the patches [lo, hi) (coarse squares) and their rows.

        Every coarse cell is condensed once per rank and build, on the first call all the
        rank's patches' cells at once (:meth:`prepare` lists them).
        """
        h = engine.hierarchy
        store = engine.region_cache.get("msfem schur")
        if store is None:
            K = engine.patch_mesh((h.M,) * h.dim)  # the mesh of every coarse cell
            key = ("msfem condensation", engine.problem.is_symmetric)
            if key not in K.cache:
                K.cache[key] = CellCondensation(
                    *K.block_pattern_arrays(), K.interior, K.boundary,
                    np.zeros((0, K.matrix_shape[0])), np.zeros((K.matrix_shape[0], 0)),
                    engine.problem.is_symmetric)
            geometry = K.cache[key]
            store = engine.region_cache["msfem schur"] = CellStore(
                int(np.prod(h.N)), lambda todo: geometry.schur(
                    np.stack([v for v, _ in engine.cell_values(todo)])),
                lambda c: str(Where(c, h.coarse_vertices(c))))
        cells = engine.box_cells(lo, hi)
        schur, rows = store.rows(cells.ravel(), engine.region_cache.pop("msfem cells", None))
        return schur, rows.reshape(cells.shape)

    def _condensed_basis(self, engine: PatchEngine, S: PatchMesh, Kmesh: PatchMesh,
                         patch: Patch, condensed: tuple[CellSchur, np.ndarray],
                         values: np.ndarray, G: np.ndarray, vertices: np.ndarray,
                         cells: np.ndarray, shift: np.ndarray) -> np.ndarray:
        r"""The normalised basis on K of patches that share S and K's position in it.

        ``values``: the fine-matrix values of the cells K (one per patch).

        Each patch is solved on its coarse skeleton (the cells' Schur complements summed,
        the data G on ∂S), then extended into K: :math:`\psi_I = -A_{II}^{-1}A_{IB}\psi_B`.
        """
        h = engine.hierarchy
        schur, rows = condensed
        geometry = schur.geometry
        shape = np.array(S.shape) // h.M
        key = ("msfem skeleton", id(geometry))
        if key not in S.cache:
            free = np.zeros(S.matrix_shape[0], dtype=bool)
            free[S.interior] = True
            S.cache[key] = SkeletonPattern(engine.cell_dofs_in(S, shape),
                                           np.zeros((int(np.prod(shape)), 0), dtype=np.int64),
                                           free, geometry)
        skeleton = S.cache[key]
        data = np.zeros((skeleton.n_U, G.shape[1]))
        data[S.boundary] = G
        G_cells = data[skeleton.cell_dofs[:, geometry.boundary]]  # 0 at skeleton unknowns
        at = int(np.ravel_multi_index(tuple(np.array(patch.offset) // h.M), tuple(shape),
                                      order="F"))
        factorisation = None if skeleton.dense else engine.solver(S)
        psi_B = np.empty((len(cells), geometry.n_B, G.shape[1]))
        for b, c in enumerate(cells):
            try:
                psi_B[b] = skeleton.dirichlet(schur.E[rows[b]], G_cells, factorisation)[at]
            except solvers.SolverError as err:
                raise solvers.SolverError(
                    f"local problem on {Where(int(c), vertices + shift[b])}: {err}. Check "
                    f"that the coefficient is positive there.") from err
        psi = schur.extend(rows[:, at], values, psi_B)
        return self._normalise(psi, expand_blocks(Kmesh.positions(vertices), engine.bs),
                               f"the local functions of coarse cells {cells[0]}...{cells[-1]}")

    def _restrict_many(self, psi: np.ndarray, S: PatchMesh, Kmesh: PatchMesh, patch: Patch,
                       K_vertices: np.ndarray, engine: PatchEngine, cells: np.ndarray
                       ) -> np.ndarray:
        """:meth:`_restrict` of patches that share S and K's position in it (B, n, m)."""
        bs = engine.bs
        key = ("K in S", patch.offset, id(Kmesh))  # (K-meshes of Kuhn simplices differ)
        if key not in S.cache:
            S_index = Kmesh.dof_index + np.array(patch.offset) * engine.problem.degree
            S.cache[key] = expand_blocks(S.lookup[np.ravel_multi_index(
                tuple(S_index.T), S.node_shape, order="F")], bs)
        return self._normalise(psi[:, S.cache[key]], expand_blocks(
            Kmesh.positions(K_vertices), bs), f"the oversampled functions of coarse cells "
            f"{cells[0]}...{cells[-1]} (reduce the oversampling)")

    @staticmethod
    def _normalise(psi: np.ndarray, at: np.ndarray, what: str) -> np.ndarray:
        r""":math:`\phi = \Psi\,\Psi(x_k)^{-1}`, so that :math:`\phi_i(x_k) = \delta_{ik}`.

        ``at``: the rows of the vertices x_k; batched over leading axes of ``psi``.
        """
        try:
            return psi @ np.linalg.inv(psi[..., at, :])
        except np.linalg.LinAlgError as err:
            raise solvers.SolverError(f"{what} are linearly dependent at the vertices") from err

    def _element(self, cell: int, engine: PatchEngine, Kmesh: PatchMesh, phi: np.ndarray,
                 A_K, K_vertices: np.ndarray, load: np.ndarray | None = None) -> ElementData:
        r"""Element matrix :math:`a_K(\phi_j, w_i)` and load :math:`L_K(w_i)`.

        ``load``: K's fine load vector, if already assembled.
        """
        h = engine.hierarchy
        W = self._nodal(Kmesh, K_vertices, h, engine.bs) if not self.galerkin else phi
        dofs = engine.cell_dofs[int(cell)]
        if self.params.coarse_quadrature == "centred":
            A_e, b_e = self._centred(engine, Kmesh, phi, W)
        else:
            A_e = W.T @ (A_K @ phi)
            b_e = W.T @ (Kmesh.load() if load is None else load)
        return ElementData(cell=int(cell), rows=dofs, cols=dofs, A=A_e, b=b_e,
                           fine_dofs=Kmesh.lattice_ids(), trial=phi,
                           test=None if self.galerkin else W, energy=A_K,
                           metrics=Kmesh.metric_matrices())

    @staticmethod
    def _centred(engine: PatchEngine, K: PatchMesh, phi: np.ndarray, W: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        r"""Element matrix and load by Hou & Wu's centred rule (one point per fine square).

        With the corner values :math:`v_{00}, v_{10}, v_{01}, v_{11}` of a bilinear
        function on a fine square of sides :math:`h_1, h_2`, its value at the centre is
        their mean and its gradient there
        :math:`((v_{10} - v_{00} + v_{11} - v_{01})/(2h_1),
        (v_{01} - v_{00} + v_{11} - v_{10})/(2h_2))`.
        """
        h = engine.hierarchy
        key = ("centred operators",)
        if key not in K.cache:
            n = K.node_shape
            sq = np.array(np.unravel_index(np.arange((n[0] - 1) * (n[1] - 1)),
                                           (n[0] - 1, n[1] - 1), order="F")).T
            corner = {c: K.lookup[np.ravel_multi_index(tuple((sq + c).T), n, order="F")]
                      for c in ((0, 0), (1, 0), (0, 1), (1, 1))}
            rows = np.repeat(np.arange(len(sq)), 4)
            cols = np.stack([corner[c] for c in ((0, 0), (1, 0), (0, 1), (1, 1))], axis=1)
            shape = (len(sq), K.matrix_shape[0])

            def op(w):
                return sp.csr_matrix((np.tile(w, len(sq)), (rows, cols.ravel())), shape=shape)

            hx, hy = h.h
            K.cache[key] = (op(np.full(4, 0.25)),
                            op(np.array([-1, 1, -1, 1]) / (2 * hx)),
                            op(np.array([-1, -1, 1, 1]) / (2 * hy)), (sq + 0.5) * h.h)
        mean, dx, dy, centres = K.cache[key]
        x = np.zeros((3, len(centres)))
        x[:2] = (centres + K.origin).T
        problem = engine.problem

        def values(v: Any) -> np.ndarray:
            return v.evaluate(x) if isinstance(v, Field) else np.full(x.shape[1], float(v))

        a = values(problem.coefficients[problem.positive_coefficients[0]])
        f = values(problem.source)
        weight = float(np.prod(h.h))
        gx, gy = dx @ phi, dy @ phi
        wx, wy = dx @ W, dy @ W
        if a.ndim == 1:
            A_e = wx.T @ (a[:, None] * gx) + wy.T @ (a[:, None] * gy)
        else:  # a tensor field: (2, 2, n) values
            A_e = (wx.T @ (a[0, 0][:, None] * gx + a[0, 1][:, None] * gy)
                   + wy.T @ (a[1, 0][:, None] * gx + a[1, 1][:, None] * gy))
        return weight * A_e, weight * ((mean @ W).T @ f)

    def _boundary_data(self, S: PatchMesh, patch: Patch, K_vertices: np.ndarray, h, bs: int,
                       engine: PatchEngine) -> np.ndarray:
        """Dirichlet data G (n_boundary_dofs, n_functions) on ∂S for the local problems."""
        x = S.dof_coordinates()[S.boundary_blocks]
        center = K_vertices.mean(axis=0)
        if self.boundary == "polynomial":  # depends on the position of K in S only
            key = ("G", tuple(np.round((center - S.origin) / h.h, 6)))
            if key not in S.cache:
                S.cache[key] = blocked(polynomial_basis(h.cell_type, (x - center) / h.H), bs)
            return S.cache[key]
        oversampled = self.layers(h) > 0
        if oversampled or h.n_sub == 1:  # box-shaped S: its 2^d corners
            lo = h.lower + np.array(patch.lo) * h.h
            hi = h.lower + np.array(patch.hi) * h.h
            corners = np.array([lo + (hi - lo) * np.array(c[::-1])
                                for c in itertools.product((0, 1), repeat=h.dim)])
        else:
            corners = K_vertices
        box = len(corners) == 2**h.dim and h.dim > 1
        return blocked(self._oscillatory_data(engine, x, corners, box), bs)

    def _oscillatory_data(self, engine: PatchEngine, x: np.ndarray, corners: np.ndarray,
                          box: bool) -> np.ndarray:
        r"""Hou--Wu oscillatory nodal data on the edges of the polygon ``corners``.

        On each edge e = [x_a, x_b] solve the reduced problem
        :math:`\frac{d}{ds}(a_e \frac{d\phi}{ds}) = 0`, :math:`\phi(x_a) = 1, \phi(x_b) = 0`
        with linear elements on the fine nodes of the edge (element stiffness
        :math:`\bar a_\tau/|\tau|`, :math:`\bar a_\tau` the 3-point Gauss mean of
        :math:`t\cdot a\, t` on the fine segment τ).
        """
        coefficients = engine.problem.coefficients
        fld = coefficients[self.params.edge_coefficient or next(iter(coefficients))]
        if not isinstance(fld, Field):
            fld = ConstantField(fld)
        n_c = len(corners)
        data = np.zeros((len(x), n_c))
        gauss = np.array([0.5 - np.sqrt(15) / 10, 0.5, 0.5 + np.sqrt(15) / 10])
        weights = np.array([5, 8, 5]) / 18
        for a, b in itertools.combinations(range(n_c), 2):
            xa, xb = corners[a], corners[b]
            if box and np.count_nonzero(np.abs(xb - xa) > 1e-12) != 1:
                continue  # box: edges are axis-parallel
            length = np.linalg.norm(xb - xa)
            t = (xb - xa) / length
            s = (x - xa) @ t
            dist = np.linalg.norm(x - xa - np.outer(s, t), axis=1)
            on = np.flatnonzero((dist < 1e-9 * length) & (s > -1e-9 * length)
                                & (s < length * (1 + 1e-9)))
            order = on[np.argsort(s[on])]
            sn = s[order]
            seg = np.diff(sn)
            pts = sn[:-1, None] + seg[:, None] * gauss[None, :]  # (n_seg, 3)
            P = xa[None, None, :] + pts[..., None] * t[None, None, :]
            P3 = np.zeros((3, P.shape[0] * 3))
            P3[: len(xa)] = P.reshape(-1, len(xa)).T
            vals = fld.evaluate(P3)
            if vals.ndim > 1:  # tensor: tangential component t·A·t
                d = len(t)
                vals = np.einsum("i,ijn,j->n", t, vals.reshape(d, d, -1), t)
            abar = (vals.reshape(-1, 3) * weights).sum(axis=1)
            resistance = seg / abar
            cum = np.concatenate([[0.0], np.cumsum(resistance)]) / resistance.sum()
            data[order, a] = 1.0 - cum
            data[order, b] = cum
        # at the corners themselves the value is exact (δ)
        for k, c in enumerate(corners):
            at = np.linalg.norm(x - c, axis=1) < 1e-9
            data[at] = 0.0
            data[at, k] = 1.0
        return data

    def _local_perforated(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Local problems of K in a perforated domain (``problem.holes``, linear/oversampling).

        Every fine dof on a removed fine cell of the patch S is pinned to 0
        (:func:`msfem.problem.hole_nodes`) together with ∂S:

        .. math::
            a_S(\psi_i, v) = 0 \ \forall v \in V_{h,0}(S \setminus \text{holes}), \qquad
            \psi_i = N_i \text{ on } \partial S \setminus \text{holes}, \qquad
            \psi_i = 0 \text{ on the holes},

        with :math:`N_i` K's coarse nodal functions (extended to S), and
        :math:`\phi_i = \psi_i|_K`. Without oversampling (S = K) this is the standard
        perforated MsFEM (:math:`\phi_i(x_k) = \delta_{ik}` at vertices outside the
        holes); with oversampling the vertex-value normalisation of Hou & Wu is left out --
        a vertex may lie in a hole, where every function vanishes -- so the data are K's
        nodal functions directly. A function that vanishes on all of K (its data all in
        holes) gets a positive diagonal entry, which pins its coarse unknown to 0.
        """
        h, bs = engine.hierarchy, engine.bs
        patch = self.patch(h, cell)
        oversampled = self.layers(h) > 0
        Kmesh = engine.coarse_cell(cell)
        K_vertices = h.coarse_vertices(cell)
        if oversampled:
            S = engine.patch_mesh(patch.shape)
            A_S = engine.patch_matrix(S, patch.lo)  # the caller destroys it
            S.move_to(h.lower + np.array(patch.lo) * h.h)
        else:
            S, A_S = Kmesh, Kmesh.assemble()
        x = S.dof_coordinates()
        assert engine.problem.holes is not None  # (local() calls this for perforated problems)
        fixed = np.repeat(hole_nodes(engine.problem.holes, x, h), bs)
        G = np.zeros((len(fixed), len(K_vertices) * bs))
        G[S.boundary] = nodal_functions(h.cell_type, x[S.boundary_blocks], K_vertices, h.H,
                                        bs)
        G[fixed] = 0.0
        fixed[S.boundary] = True
        try:
            psi = solve_dirichlet(A_S, np.flatnonzero(~fixed), np.flatnonzero(fixed),
                                  G[fixed], symmetric=engine.problem.is_symmetric,
                                  prefix="msfem_local_", petsc_options=engine.petsc_options)
        except solvers.SolverError as err:
            raise solvers.SolverError(f"local problem on {Where(cell, K_vertices)}: {err}") \
                from err
        if oversampled:
            A_S.destroy()
            S_index = Kmesh.dof_index + np.array(patch.offset) * engine.problem.degree
            S_blocks = S.lookup[np.ravel_multi_index(tuple(S_index.T), S.node_shape, order="F")]
            psi = psi[expand_blocks(S_blocks, bs)]
        A_csr = to_csr(Kmesh.assemble())
        e = self._element(cell, engine, Kmesh, psi, A_csr, K_vertices)
        zero = np.flatnonzero(np.abs(psi).max(axis=0) == 0)
        if len(zero):
            diag = np.abs(np.diag(e.A))
            e.A[zero, zero] = diag.max() if diag.max() > 0 else 1.0
        return e

    def _local_unstructured(self, cell: int, engine: PatchEngine) -> ElementData:
        r"""Local problems of a gmsh coarse cell K: on K, or on its patch of coarse layers.

        The patch S is K with ``oversampling`` layers of vertex-neighbour coarse cells (its
        fine cells gathered from their ranks by :meth:`PatchEngine.gather_patches`);
        :math:`\psi_j` solve the local problems on S with the polynomial data
        :math:`N_j` of K on ∂S, and :math:`\phi_i = \sum_j c_{ij}\psi_j|_K` with
        :math:`\phi_i(x_k) = \delta_{ik}`.
        """
        h = engine.hierarchy
        bs = engine.bs
        cm = engine.cell_mesh(cell)
        K_vertices = h.coarse_vertices(cell)
        what = Where(cell, K_vertices)
        xd = cm.dof_coordinates()
        vertex_blocks = cm.positions(K_vertices)
        N = nodal_functions(h.cell_type, xd, K_vertices, h.H, bs)
        A = cm.assemble()
        A_csr = to_csr(A)
        if self.boundary == "none":
            phi = N
        elif self.layers(h) > 0:
            S = engine.patch_cell_mesh(cell)
            xS = S.dof_coordinates()
            G = nodal_functions(h.cell_type, xS[S.boundary_blocks], K_vertices, h.H, bs)
            A_S = S.assemble()
            psi = engine.dirichlet_unstructured(S, A_S, to_csr(A_S), G, what)
            A_S.destroy()
            dist, at = cKDTree(xS).query(xd)  # K's dofs among S's
            if dist.max() > 1e-9 * float(h.H[0]):
                raise RuntimeError(f"{what}: K's fine dofs are not dofs of its patch")
            psi_K = psi[expand_blocks(at, bs)]
            try:
                phi = psi_K @ np.linalg.inv(psi_K[expand_blocks(vertex_blocks, bs)])
            except np.linalg.LinAlgError as err:
                raise solvers.SolverError(
                    f"the oversampled functions of {what} are linearly dependent at its "
                    f"vertices; reduce the oversampling") from err
        else:
            if self.boundary == "polynomial":
                G = N[cm.boundary]
            else:
                G = blocked(self._oscillatory_data(engine, xd[cm.boundary_blocks], K_vertices,
                                                   box=False), bs)
            psi = engine.dirichlet_unstructured(cm, A, A_csr, G, what)
            phi = psi @ np.linalg.inv(psi[expand_blocks(vertex_blocks, bs)])
        A.destroy()
        W = phi if self.galerkin else N
        dofs = engine.cell_dofs[int(cell)]
        return ElementData(cell=int(cell), rows=dofs, cols=dofs, A=W.T @ (A_csr @ phi),
                           b=W.T @ cm.load(), fine_dofs=cm.fine_blocks, trial=phi,
                           test=None if self.galerkin else W, energy=A_csr,
                           metrics=metric_forms(cm.V), vertex_blocks=vertex_blocks)


register("msfem", MsFEM, summary="MsFEM with the variant as a parameter")
for _variant in VARIANTS:
    register(_variant, MsFEM, preset={"variant": _variant},
             summary=f"MsFEM, {_variant} variant (see msfem.methods.msfem)")
