r"""The offline phase: a method's local problems over the owned coarse cells.

:class:`MultiscaleSpace` pairs a hierarchy, a problem and a method
(:mod:`msfem.methods`); :meth:`MultiscaleSpace.build` maps the method's pure per-cell
function ``local(cell, engine)`` over the coarse cells this rank owns,

.. math::
    \{E_K\}_{K \in \mathcal T_H^{\text{rank}}} = \mathrm{map}(K \mapsto
    \texttt{method.local}(K, \text{engine})),

with an injectable ``map`` (the built-in one by default; a batched or threaded map may
replace it), then builds the one transfer between the elements' fine dofs and the
distributed fine space (:class:`msfem.transfer.FineMap`). No communication happens in
the loop itself.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dolfinx
import numpy as np
from mpi4py import MPI

from msfem import _runtime  # noqa: F401
from msfem._runtime import collective
from msfem.mesh import Oversampling, RefinedHierarchy, StructuredHierarchy
from msfem.methods import Method, create
from msfem.methods.base import ElementData
from msfem.patches import PatchEngine
from msfem.problem import Problem
from msfem.transfer import FineMap, LatticeNumbering

#: Engines created in this process (a cycle collection every few engines).
_ENGINES = [0]


class MultiscaleSpace:
    r"""The multiscale space of a method: element data of every owned coarse cell.

    Args:
        hierarchy: a :class:`~msfem.mesh.StructuredHierarchy` or
            :class:`~msfem.mesh.RefinedHierarchy`.
        problem: the problem whose bilinear form defines the local problems.
        method: a registered method name (``"linear"``, ``"oscillatory"``,
            ``"oversampling"``, ``"petrov-galerkin"``, ``"standard"``, or any method added
            with :func:`msfem.methods.register`) or a :class:`~msfem.methods.Method`.
        oversampling: MsFEM patch size (an :class:`~msfem.mesh.Oversampling` or coarse
            layers); passed to the method as a parameter.
        boundary: MsFEM boundary data override (``"polynomial"``/``"oscillatory"``).
        edge_coefficient: coefficient of the oscillatory edge problems.
        petsc_options: options of the local factorisations (prefix ``msfem_local_``).
        parameters: further parameters of a registered method.
        batch_size: coarse cells handed to the method at once (methods may batch their
            work, :meth:`~msfem.methods.Method.local_batch`); ``map`` runs over batches.
        store_energy: keep each element's fine energy matrix (fast energy errors);
            ``False`` saves about three quarters of the offline memory of MsFEM elements and
            assembles them again when :meth:`~msfem.coarse.CoarseSolution.errors` needs them.

    The method is validated here, before any computation; :meth:`build` computes the
    element data of the coarse cells owned by this rank.
    """

    def __init__(self, hierarchy: StructuredHierarchy | RefinedHierarchy, problem: Problem,
                 method: str | Method = "linear", oversampling: Oversampling | int | None = None,
                 *, boundary: str | None = None, edge_coefficient: str | None = None,
                 petsc_options: Mapping[str, Any] | None = None,
                 parameters: Mapping[str, Any] | None = None, store_energy: bool = True,
                 batch_size: int = 128):
        if not isinstance(hierarchy, (StructuredHierarchy, RefinedHierarchy)):
            raise TypeError("MultiscaleSpace needs a StructuredHierarchy or a RefinedHierarchy")
        self.hierarchy, self.problem = hierarchy, problem
        given = {"oversampling": oversampling, "boundary": boundary,
                 "edge_coefficient": edge_coefficient, **dict(parameters or {})}
        given = {k: v for k, v in given.items() if v is not None}
        if isinstance(method, Method):
            if given:
                raise TypeError(f"parameters {sorted(given)} go into the Method instance")
            self.method = method
        else:
            self.method = create(method, **given)
        if problem.holes is not None and self.method.holes_error():
            raise ValueError(self.method.holes_error())
        self.method.validate(hierarchy, problem)
        self.petsc_options = dict(petsc_options or {})
        self.store_energy = bool(store_energy)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size = {batch_size!r} must be a positive integer")
        self.batch_size = batch_size
        self.unstructured = isinstance(hierarchy, RefinedHierarchy)
        self.bs = problem.block_size
        self.coarse = self.method.coarse_space(hierarchy, problem)
        self.elements: list[ElementData] = []
        self.timings: dict[str, float] = {}
        self.built = False
        self._engine: PatchEngine | None = None
        self._fine_map: FineMap | None = None

    # ------------------------------------------------------------------ descriptions
    @property
    def coarse_space(self) -> dolfinx.fem.FunctionSpace | None:
        """The dolfinx function space carrying the coarse unknowns.

        ``None`` when the coarse space has none, e.g. an
        :class:`~msfem.coarse_space.EntityCoarseSpace`.
        """
        return self.coarse.function_space

    @property
    def name(self) -> str:
        """The method's name (e.g. the MsFEM variant)."""
        return self.method.label

    @property
    def layers(self) -> int:
        """Fine layers of oversampling (methods without patches: 0)."""
        layers = getattr(self.method, "layers", None)
        return int(layers(self.hierarchy)) if callable(layers) else 0

    @property
    def conforming(self) -> bool:
        """True when the trial functions are conforming (``PᵀAP`` assembly allowed)."""
        return self.method.is_conforming(self.hierarchy)

    # ------------------------------------------------------------------ offline phase
    def engine(self) -> PatchEngine:
        """The per-rank engine of local problems (collective on first call)."""
        if self._engine is None:
            # spaces built before may hold COMM_SELF meshes in reference cycles (dolfinx's
            # Function.interpolate makes some); free them every few engines: MPICH has 2048
            # communicators, and a sweep of spaces in one process would run out of them (or
            # crash inside MUMPS) before the cycle collector runs. msfem's own patch meshes
            # are freed by reference counting; a collection costs 30-60 ms.
            _ENGINES[0] += 1
            if _ENGINES[0] % 16 == 0:
                gc.collect()
            self._engine = PatchEngine(self.hierarchy, self.problem, self.coarse,
                                       self.petsc_options)
            local, lattice = self.hierarchy.owned_coarse_cells
            self._engine.prepare(local, lattice)
        return self._engine

    def local_basis(self, cell: int) -> ElementData:
        """Element data of owned coarse cell ``cell``, computed afresh (no shared patches)."""
        engine = self.engine()
        engine.region_cache.clear()
        return self.method.local(int(cell), engine)

    def build(self, progress: bool = False,
              map: Callable[[Callable, Iterable], Iterable] = map) -> MultiscaleSpace:
        """Compute the element data of every coarse cell owned by this rank (collective).

        Args:
            progress: log progress on rank 0 (10 steps).
            map: the map over batches of owned cells (``map(f, batches)``); cells whose
                patches coincide come in a row, so a method may share their solutions.

        ``timings["offline"]`` is the wall time (max over ranks); ``timings["local_petsc"]``
        the part spent in PETSc factorising and solving the local problems (this rank).
        """
        from msfem._runtime import logger
        from msfem.fine import check_coefficients

        h = self.hierarchy
        # collective: refuse a <= 0, warn when the fine mesh does not resolve ε
        check_coefficients(self.problem, h.fine, self.method.fine_scale_on_hierarchy)
        t0 = time.perf_counter()
        engine = self.engine()
        engine.t_petsc = 0.0
        engine.region_cache.clear()
        _, cells = h.owned_coarse_cells
        cells = self.method.schedule(h, cells)
        self.method.prepare(engine, cells)
        n = len(cells)
        size = max(1, min(self.batch_size, -(-n // 10) if progress else self.batch_size))
        batches = [cells[k:k + size] for k in range(0, n, size)]
        done = [0]

        def one(batch):
            elements = self.method.local_batch(batch, engine)
            if not self.store_energy:
                for e in elements:
                    e.energy = None
            done[0] += len(batch)
            if progress:
                logger.info("  basis: %d/%d coarse cells on rank 0", done[0], n)
            return elements

        # a local problem that fails on one rank raises on every rank (one allgather),
        # instead of leaving the others waiting in the next collective call
        with dolfinx.common.Timer("~msfem: offline (local problems)"), collective(h.comm):
            self.elements = [e for chunk in map(one, batches) for e in chunk]
        engine.region_cache.clear()  # per-build data (e.g. K-matrices of halo cells)
        self._fine_map = None  # built on first use (reconstruction; collective there)
        self.timings["offline"] = h.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        self.timings["offline_rank"] = time.perf_counter() - t0
        self.timings["local_petsc"] = engine.t_petsc
        self.built = True
        return self

    def fine_map(self, V: dolfinx.fem.FunctionSpace | None = None) -> FineMap:
        """The (cached) :class:`~msfem.transfer.FineMap` of the distributed fine space ``V``.

        It maps between element data and ``V`` (default: the problem's space on the fine mesh).
        """
        cached = self._fine_map
        if V is None:
            V = cached.V if cached is not None else self.problem.function_space(self.hierarchy.fine)
        same = cached is not None and cached.V.mesh is V.mesh and \
            cached.V.ufl_element() == V.ufl_element()  # same mesh + element: same dof layout
        if not same:
            numbering = None
            if not self.unstructured:
                cached_numbering = self._engine._numbering if self._engine else None
                same_space = cached_numbering is not None and cached_numbering.V.mesh is \
                    V.mesh and cached_numbering.V.ufl_element() == V.ufl_element()
                numbering = cached_numbering if same_space else \
                    LatticeNumbering(V, self.hierarchy)
            empty = np.zeros(0, dtype=np.int64)  # methods without a fine basis on K
            self._fine_map = FineMap(V, [empty if e.fine_dofs is None else
                                         np.asarray(e.fine_dofs) for e in self.elements],
                                     numbering)
        assert self._fine_map is not None
        return self._fine_map

    def energy_matrix(self, e: ElementData):
        """The fine energy matrix of element ``e``: stored, or assembled again."""
        if e.energy is not None:
            return e.energy
        return self.method.energy_matrix(e.cell, self.engine())

    def has_fine_basis(self) -> bool:
        """Whether the elements carry fine-scale trial functions (collective)."""
        missing = any(e.trial is None for e in self.elements)
        return not self.hierarchy.comm.allreduce(missing, op=MPI.LOR)

    def check_fine_basis(self, what: str) -> None:
        """Raise (on every rank) if the method has no fine-scale basis on its elements."""
        if not self.has_fine_basis():
            raise ValueError(f"{what} needs the fine-scale basis of the elements, which method "
                             f"{self.name!r} does not provide")

    def metric_matrices(self, e: ElementData):
        """Mass and stiffness matrices of the fine sub-grid of element ``e``."""
        return e.metrics
