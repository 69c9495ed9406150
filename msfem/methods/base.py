r"""The method protocol, element data and the registry of methods.

Every multiscale method is the same loop: for each owned coarse cell K, solve local
problems and return :class:`ElementData` -- the element matrix and load coupling a set
of coarse *test* dofs (rows) with a set of coarse *trial* dofs (columns),

.. math::
    A_K[i, j] = a_K(\phi_{c_j}, w_{r_i}), \qquad b_K[i] = L_K(w_{r_i}),

and, where the method has them, the values of the trial functions :math:`\phi` and test
functions :math:`w` on the fine dofs of K (for the reconstruction
:math:`u_{ms}|_K = \sum_j U_{c_j}\phi_{c_j}` and the broken norms). The coarse system is
assembled from element data alone (:mod:`msfem.coarse`), so a method never touches the
assembler, and rows and columns may be any coarse dofs -- several per vertex, on faces, or
several coarse cells away.

A method is a class with

* ``Parameters`` -- a pydantic model of its typed parameters (the config schema, the
  study planner, the CLI and the docs read it from the registry),
* :meth:`Method.validate` -- refuse a hierarchy or problem it cannot handle, before any
  computation,
* :meth:`Method.coarse_space` -- the layout of its coarse dofs,
* :meth:`Method.local` -- a pure function of (cell, engine) returning :class:`ElementData`;
  the engine (:class:`msfem.patches.PatchEngine`) holds the per-rank caches (patch meshes,
  factorisations), never results of other cells.

Register it with :func:`register` (from any file) and it is available by name
everywhere: ``MultiscaleSpace(h, problem, method="my-method")``, ``[msfem] method`` in a
configuration, ``methods = [...]`` in a study.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pydantic
import scipy.sparse as sp

if TYPE_CHECKING:
    from msfem.coarse_space import CoarseSpace
    from msfem.patches import PatchEngine
    from msfem.problem import Problem


class Parameters(pydantic.BaseModel):
    """Base of every method's typed parameters: unknown keys are refused, values frozen."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True,
                                       arbitrary_types_allowed=True)


#: Module-level alias: inside :class:`Method` the name ``Parameters`` is the class attribute.
_Parameters = Parameters


@dataclass
class ElementData:
    r"""What one coarse cell contributes to the coarse system.

    Attributes:
        cell: partition-independent id of the coarse cell (lattice id, or local index on
            an unstructured hierarchy).
        rows: global coarse dofs of the test functions (PETSc numbering, int64).
        cols: global coarse dofs of the trial functions.
        A: element matrix, shape ``(len(rows), len(cols))``.
        b: element load, shape ``(len(rows),)``.
        fine_dofs: ids of K's fine dof blocks (lattice ids on structured hierarchies,
            global blocks on unstructured ones), in the order of the rows of ``trial``.
        trial: trial functions on K's fine dofs, shape ``(n_fine * bs, len(cols))``;
            ``None`` for methods without a fine basis on K (FE-HMM, FE²).
        test: test functions on K's fine dofs (``None``: Galerkin, the trial functions).
        energy: the fine matrix of :math:`a` on K (optional; energy norms).
        metrics: mass and :math:`H^1` stiffness matrices of K's fine dofs (shared between
            cells of the same shape; L2 and H1 norms).
        vertex_blocks: positions of K's vertices among its fine dof blocks.
    """

    cell: int
    rows: np.ndarray
    cols: np.ndarray
    A: np.ndarray
    b: np.ndarray
    fine_dofs: np.ndarray | None = None
    trial: np.ndarray | None = None
    test: np.ndarray | None = None
    energy: sp.csr_matrix | None = None
    metrics: tuple[sp.csr_matrix, sp.csr_matrix] | None = None
    vertex_blocks: np.ndarray | None = None

    @property
    def phi(self) -> np.ndarray | None:
        """The trial functions (the multiscale basis of K)."""
        return self.trial

    @property
    def coarse_dofs(self) -> np.ndarray:
        """The trial (column) coarse dofs."""
        return self.cols


class Method(abc.ABC):
    """A multiscale method: local problems per coarse cell → :class:`ElementData`.

    Args:
        params: the method's :attr:`Parameters`, or keyword arguments to build them.
    """

    #: Registry name of the method family.
    name: ClassVar[str] = "method"
    #: The method's typed parameters.
    Parameters: ClassVar[type[_Parameters]] = _Parameters
    #: The name it was created under (:func:`create`), e.g. an MsFEM variant.
    registry_name: str | None = None
    #: How the elements' trial functions make the fine solution: ``"broken"`` -- each
    #: element holds u on its own coarse cell (dofs shared by cells are averaged; broken
    #: norms per cell); ``"sum"`` -- the elements' pieces (e.g. LOD's patch correctors)
    #: add up to one conforming function (errors in the global fine-space norms).
    reconstruction: ClassVar[str] = "broken"
    #: Whether the local problems live on the hierarchy's fine mesh, which must then
    #: resolve the coefficients' scale ε (warned otherwise). ``False`` for methods with
    #: their own micro meshes (FE-HMM).
    fine_scale_on_hierarchy: ClassVar[bool] = True

    def __init__(self, params: _Parameters | None = None, **kwargs: Any):
        if params is not None and kwargs:
            raise TypeError("give either a Parameters instance or keyword arguments")
        self.params = params if params is not None else self.Parameters(**kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    # ------------------------------------------------------------------ properties
    def is_conforming(self, hierarchy: Any) -> bool:
        """True when the trial functions are globally conforming (``PᵀAP`` allowed)."""
        return False

    @property
    def galerkin(self) -> bool:
        """True when the test functions are the trial functions."""
        return True

    @property
    def coarse_assembly(self) -> str:
        """Default coarse assembly: ``"element"`` (element data) or ``"ptap"`` (PᵀA_hP)."""
        return "element"

    @property
    def label(self) -> str:
        """Short name for logs and outputs (the registered name it was created under)."""
        return self.registry_name or self.name

    def describe(self) -> dict[str, Any]:
        """Method name and parameters, JSON-ready (metrics files)."""
        return {"method": self.label, **self.params.model_dump(mode="json")}

    def report(self, comm: Any) -> dict[str, Any]:
        """What the offline phase found, JSON-ready (e.g. GMsFEM's eigenvalues); collective.

        Called after :meth:`MultiscaleSpace.build` on every rank; written to
        ``metrics.json`` as ``method_report``. Default: nothing.
        """
        return {}

    def holes_error(self) -> str | None:
        """Why this method cannot solve a perforated problem (``Problem.holes``); None: it can.

        Checked by :class:`~msfem.space.MultiscaleSpace` and the configuration before any
        computation. Default: refused (a method opts in by returning None).
        """
        return (f"method {self.label!r} does not handle perforated domains (holes); use "
                f"'linear', 'oversampling' or 'crouzeix-raviart', or remove the holes")

    # ------------------------------------------------------------------ the protocol
    def validate(self, hierarchy: Any, problem: Problem) -> None:  # noqa: B027
        """Refuse a hierarchy/problem this method cannot handle (before any computation)."""

    def coarse_space(self, hierarchy: Any, problem: Problem) -> CoarseSpace:
        """The coarse dofs: by default P1/Q1 Lagrange dofs, one block per vertex."""
        from msfem.coarse_space import LagrangeCoarseSpace

        return LagrangeCoarseSpace(hierarchy, problem)

    def schedule(self, hierarchy: Any, cells: np.ndarray) -> np.ndarray:
        """Order of the owned cells in the offline loop (e.g. cells sharing a patch in a row)."""
        return cells

    def prepare(self, engine: PatchEngine, cells: np.ndarray) -> None:  # noqa: B027
        """Per-rank set-up before the loop over the owned ``cells`` (e.g. one assembly)."""

    def energy_matrix(self, cell: int, engine: PatchEngine) -> sp.csr_matrix | None:
        """The fine matrix of :math:`a` on coarse cell ``cell``; ``None``: not available.

        Used for the energy norms of elements whose ``energy`` was not stored.
        """
        return None

    def local_batch(self, cells: np.ndarray, engine: PatchEngine) -> list[ElementData]:
        """Element data of several owned cells (default: :meth:`local` for each).

        A method may override it to batch the work of cells with the same patch shape;
        the result must equal ``[local(c) for c in cells]`` up to round-off.
        """
        return [self.local(int(c), engine) for c in cells]

    @abc.abstractmethod
    def local(self, cell: int, engine: PatchEngine) -> ElementData:
        """Solve the local problems of coarse cell ``cell``; return its element data."""


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Entry:
    """A registered method: its class and preset parameters (e.g. an MsFEM variant)."""

    name: str
    cls: type[Method]
    preset: Mapping[str, Any]
    summary: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, cls: type[Method] | None = None, *, preset: Mapping[str, Any] | None
             = None, summary: str = "") -> Callable[[type[Method]], type[Method]] | type[Method]:
    """Register a method class under ``name`` (usable as a class decorator).

    ``preset`` fixes some parameters (``register("linear", MsFEM, preset={"variant":
    "linear"})``); a user may still override the others.
    """
    def deco(c: type[Method]) -> type[Method]:
        if not (isinstance(c, type) and issubclass(c, Method)):
            raise TypeError(f"{c!r} is not a subclass of msfem.methods.Method")
        unknown = set(preset or {}) - set(c.Parameters.model_fields)
        if unknown:
            raise ValueError(f"preset of {name!r} sets unknown parameters {sorted(unknown)}")
        doc = summary or (c.__doc__ or "").strip().splitlines()[0] if c.__doc__ else summary
        _REGISTRY[name] = Entry(name, c, dict(preset or {}), doc)
        return c

    return deco(cls) if cls is not None else deco


def unregister(name: str) -> None:
    """Remove a method from the registry (tests, plugins)."""
    _REGISTRY.pop(name, None)


def available() -> list[str]:
    """Names of all registered methods."""
    return list(_REGISTRY)


def entry(name: str) -> Entry:
    """The registry entry of ``name`` (a clear error listing the valid names)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(available())}")
    return _REGISTRY[name]


def parameter_names(name: str) -> list[str]:
    """Parameters a user may set for method ``name`` (not fixed by its preset)."""
    e = entry(name)
    return [k for k in e.cls.Parameters.model_fields if k not in e.preset]


def create(name: str, **params: Any) -> Method:
    """An instance of registered method ``name`` with ``params`` (validated).

    Raises:
        ValueError: one line naming the offending parameter and the accepted ones.
    """
    e = entry(name)
    fixed = {k: v for k, v in params.items() if k in e.preset and v != e.preset[k]}
    if fixed:
        k = next(iter(fixed))
        raise ValueError(f"method {name!r} fixes {k} = {e.preset[k]!r}; got {fixed[k]!r}")
    unknown = [k for k in params if k not in e.cls.Parameters.model_fields]
    if unknown:
        raise ValueError(f"method {name!r} has no parameter {unknown[0]!r}; valid parameters: "
                         f"{', '.join(parameter_names(name)) or '(none)'}")
    values = {**e.preset, **{k: v for k, v in params.items() if v is not None}}
    try:
        p = e.cls.Parameters(**values)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"method {name!r}: {loc or 'parameters'} = "
                         f"{first.get('input')!r}: {first['msg']}") from None
    method = e.cls(p)
    method.registry_name = name
    return method
