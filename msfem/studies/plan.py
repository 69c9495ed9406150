r"""The plan of a study: the ``[study]`` schema, its validation, and the list of cases.

Everything here runs before any computation and is identical on every rank, so a bad
configuration raises :class:`~msfem.config.ConfigError` on all ranks at once, names the
offending key, and leaves no output behind.

**Sweeps.** A *case* is one coarse/fine grid and one coefficient: a point of the
Cartesian product of the ``[study]`` lists, in this order (outermost first)

    coefficient parameters ``[study.coefficient]`` → ``eps`` → ``H_over_eps`` → ``N`` →
    ``M`` or ``NM``.

Of ``eps``, ``H_over_eps`` and ``N`` at most two may be given; the third follows from
:math:`H = L/N = (H/\varepsilon)\,\varepsilon` (L the side of Ω), and must give an integer
N. ``NM`` (fine cells per direction) fixes the fine grid and sets :math:`M = NM/N`.
Missing values come from ``[mesh]`` and ``[coefficient]``.

**Methods.** Every case runs every method of ``methods`` (entries: a name, or a table
``{name, method, boundary, oversampling, basis_refinement, N}`` plus the method's own
parameters, e.g. ``coarse_quadrature``): ``"fine"`` (the fine FEM on the MsFEM
sub-grid, Hou--Wu's LFEM of Table II), the MsFEM variants of :data:`msfem.VARIANTS`, and
``"homogenized"``/``"corrector"`` (:math:`u_0`, :math:`u_1` from
:mod:`msfem.homogenization`, when it provides them). Oversampled variants run once per
entry of their ``oversampling`` list: an int (coarse layers) or a table with one of
``coarse_layers``, ``ratio``, ``fine_layers`` or ``patch_fine_cells`` -- Hou & Wu's
:math:`M_S`, a patch of :math:`M_S \times M_S` fine cells centred on K (i.e.
:math:`(M_S - M)/2` fine layers).

**Exact basis.** ``basis_refinement = r`` (a multiscale method's entry) computes that
method's basis on a sub-grid r times finer, :math:`h_s/r` (M r sub-cells per coarse cell;
fine-cell patch sizes scale with it, so every patch covers the same region), while the
coarse mesh, the case and the reference stay those of the study: as r grows the rows
show the error of the method itself, free of the sub-grid's discretisation error. Only
the nodal errors :math:`\|E\|_\infty, \|E\|_{l^2}` are computed for these rows (the
reference lives on the case's sub-grid; the field errors are NaN). ``N = [...]`` in an
entry runs it only on the cases with these N (e.g. where the refined grid fits in memory).

**Reference.** ``reference = "fine"``: the fine solve on a grid ``reference_factor`` times
finer than the MsFEM sub-grid; ``"richardson"``: Hou--Wu's extrapolation of the solves on
that grid and on the one twice finer. One reference per (coefficient, NM) grid, reused by
every case and method on it; ``reference_cache = "DIR"`` keeps it on disk for other
studies on the same grids (:mod:`msfem.studies.reference`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msfem import config as cfg_mod
from msfem import methods as registry
from msfem.coefficients import resolution_error
from msfem.config import COEFFICIENT_TYPES, ConfigError
from msfem.mesh import Oversampling
from msfem.methods.msfem import VARIANTS

#: Methods that are not MsFEM variants.
FINE_METHODS = ("fine",)
HOMOGENIZATION_METHODS = ("homogenized", "corrector")


def all_methods() -> tuple[str, ...]:
    """Every method a study may run: fine, the registered methods, homogenization."""
    return FINE_METHODS + tuple(registry.available()) + HOMOGENIZATION_METHODS


#: Error columns (relative and absolute, see :meth:`msfem.CoarseSolution.errors`).
METRICS = ("nodal_linf", "nodal_l2", "l2_rel", "h1_rel", "energy_rel", "l2", "h1", "energy")
TIMINGS = ("t_offline", "t_online", "t_reference")

#: Keys of ``[study]`` (checked by :func:`msfem.config.validate`; ``object`` = checked here).
STUDY_SCHEMA: dict[str, Any] = {
    "name": str,
    "description": str,
    "discussion": str,
    "eps": "number_or_list",
    "H_over_eps": "number_or_list",
    "N": "number_or_list",
    "M": "number_or_list",
    "NM": "number_or_list",
    "coefficient": "options",
    "variant": object,
    "methods": "list",
    "oversampling": object,
    "reference": ("fine", "richardson"),
    "reference_factor": int,
    "shared_reference": bool,
    "reference_cache": str,
    "allow_unresolved": bool,
    "metrics": "list",
    "figures": bool,
}
#: Keys of ``[published]``: numbers from a paper, shown beside ours in the report.
PUBLISHED_SCHEMA: dict[str, Any] = {"source": str, "note": str, "rows": "list"}
_METHOD_KEYS = ("name", "method", "boundary", "oversampling", "basis_refinement", "N")
_PATCH_KEYS = ("coarse_layers", "ratio", "fine_layers", "patch_fine_cells", "sampling_region")
_DEFAULT_METRICS = ("nodal_linf", "nodal_l2", "energy_rel")


def fmt(value: Any) -> str:
    """Canonical text of a CSV cell: exact round-trip for floats, '' for None."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


@dataclass(frozen=True)
class PatchSpec:
    """One oversampling setting: ``kind`` ∈ coarse_layers, ratio, fine_layers, patch_fine_cells."""

    kind: str
    value: float

    @property
    def label(self) -> str:
        """Text of the ``oversampling`` column (coarse layers as a bare integer)."""
        if self.kind == "coarse_layers":
            return str(int(self.value))
        return f"{self.kind}={fmt(self.value)}"

    def oversampling(self, M: int, refinement: int = 1) -> Oversampling:
        """Return the :class:`~msfem.mesh.Oversampling` for M fine cells per coarse cell.

        With ``refinement`` r the sub-grid is r times finer (M r cells per coarse cell) and
        sizes given in fine cells are multiplied by r: the patch covers the same region.
        """
        r = int(refinement)
        if self.kind == "patch_fine_cells":
            return Oversampling(fine_layers=(int(self.value) - M) * r // 2)
        if self.kind == "sampling_region":
            return Oversampling(sampling_region=int(self.value) * r)
        if self.kind == "fine_layers":
            return Oversampling(fine_layers=int(self.value) * r)
        if self.kind == "ratio":
            return Oversampling(ratio=float(self.value))
        return Oversampling(**{self.kind: int(self.value)})


NO_PATCH = PatchSpec("coarse_layers", 0)


@dataclass(frozen=True)
class Method:
    """A method run on every case: ``name`` (results label), ``kind`` (the method itself)."""

    name: str
    kind: str
    boundary: str | None = None
    patches: tuple[PatchSpec, ...] = (NO_PATCH,)
    parameters: tuple[tuple[str, Any], ...] = ()
    basis_refinement: int = 1
    only_N: tuple[int, ...] | None = None

    def runs_on(self, case: Case) -> bool:
        """Whether the method runs on ``case`` (its entry's ``N`` list, if any)."""
        return self.only_N is None or case.N in self.only_N

    @property
    def is_msfem(self) -> bool:
        """True for registered multiscale methods (as opposed to fine / homogenization)."""
        return self.kind in registry.available()


@dataclass(frozen=True)
class Case:
    """One grid and coefficient of the sweep."""

    index: int
    N: int
    M: int
    eps: float | None
    params: tuple[tuple[str, Any], ...]  # swept coefficient parameters (name, value)
    coefficient: Mapping[str, Any] = field(compare=False, hash=False)

    @property
    def NM(self) -> int:
        """Fine cells per direction of the MsFEM sub-grid."""
        return self.N * self.M

    def describe(self) -> str:
        """Short text for logs and error messages."""
        parts = [f"{k}={fmt(v)}" for k, v in self.params]
        if self.eps is not None:
            parts.append(f"eps={self.eps:.6g}")
        return ", ".join(parts + [f"N={self.N}", f"M={self.M}"])


@dataclass(frozen=True)
class Plan:
    """A validated study: configuration, cases, methods and reference settings."""

    path: Path
    config: Mapping[str, Any]
    name: str
    cases: tuple[Case, ...]
    methods: tuple[Method, ...]
    param_names: tuple[str, ...]
    reference: str
    reference_factor: int
    metrics: tuple[str, ...]
    figures: bool
    allow_unresolved: bool
    published: Mapping[str, Any] | None
    length: float

    @property
    def columns(self) -> list[str]:
        """Columns of results.csv."""
        return (["method", "variant", "oversampling", *self.param_names, "eps", "N", "M", "H",
                 "h", "H_over_eps", *METRICS, *TIMINGS, "ranks"])

    @property
    def key_columns(self) -> list[str]:
        """Columns identifying a row (resume key): method, oversampling and the case."""
        return ["method", "oversampling", *self.param_names, "eps", "N", "M"]

    def case_keys(self, case: Case) -> list[tuple[str, ...]]:
        """Keys of all rows of ``case`` (one per method and oversampling)."""
        keys = []
        for m in self.methods:
            if not m.runs_on(case):
                continue
            for p in m.patches:
                values = {"method": m.name, "oversampling": p.label, "eps": case.eps,
                          "N": case.N, "M": case.M, **dict(case.params)}
                keys.append(tuple(fmt(values[c]) for c in self.key_columns))
        return keys

    def fingerprint(self) -> str:
        """Hash of everything that changes the numbers of a row (not the sweep lists)."""
        cfg = {k: v for k, v in self.config.items() if k not in ("published", "output", "study")}
        study = dict(self.config.get("study", {}))
        cfg["study"] = {k: study.get(k) for k in ("reference", "reference_factor")}
        text = json.dumps(cfg, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- helpers
def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _positive_ints(study: Mapping[str, Any], key: str) -> list[int] | None:
    if key not in study:
        return None
    values = _as_list(study[key])
    if not values or any(not float(v).is_integer() or v < 1 for v in values):
        raise ConfigError(f"[study] {key} = {study[key]!r} must be a positive integer or a "
                          f"list of them")
    return [int(v) for v in values]


def _positive_floats(study: Mapping[str, Any], key: str) -> list[float] | None:
    if key not in study:
        return None
    values = _as_list(study[key])
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"[study] {key} = {study[key]!r} must be a positive number or a "
                          f"list of them")
    return [float(v) for v in values]


def _integer(value: float, what: str, key: str) -> int:
    n = int(round(value))
    if n < 1 or abs(value - n) > 1e-8 * max(1.0, abs(value)):
        raise ConfigError(f"[study] {key}: {what} = {value:.10g} is not a positive integer")
    return n


def _patch(value: Any, where: str) -> PatchSpec:
    if isinstance(value, bool) or not isinstance(value, (int, dict)):
        raise ConfigError(f"{where} = {value!r} must be an integer (coarse layers) or a table "
                          f"with one of {', '.join(_PATCH_KEYS)}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where} = {value} must be >= 0")
        return PatchSpec("coarse_layers", value)
    unknown = [k for k in value if k not in _PATCH_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; accepted keys: "
                          f"{', '.join(_PATCH_KEYS)}")
    if len(value) != 1:
        raise ConfigError(f"{where} = {value!r} must have exactly one of {', '.join(_PATCH_KEYS)}")
    (kind, v), = value.items()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (
            kind != "ratio" and not float(v).is_integer()):
        raise ConfigError(f"{where}: {kind} = {v!r} must be a non-negative "
                          f"{'number' if kind == 'ratio' else 'integer'}")
    if kind == "ratio" and v < 1:
        raise ConfigError(f"{where}: ratio = {v} must be >= 1")
    return PatchSpec(kind, float(v) if kind == "ratio" else int(v))


def _patches(value: Any, where: str) -> tuple[PatchSpec, ...]:
    values = _as_list(value)
    if not values:
        raise ConfigError(f"{where} must not be empty")
    specs = tuple(_patch(v, f"{where}[{i}]" if isinstance(value, list) else where)
                  for i, v in enumerate(values))
    if len(set(specs)) != len(specs):
        raise ConfigError(f"{where} = {value!r} lists the same oversampling twice")
    return specs


def _methods(study: Mapping[str, Any], msfem: Mapping[str, Any]) -> tuple[Method, ...]:
    """Parse the methods and their oversampling lists; any inconsistency is a ConfigError."""
    if "methods" in study and "variant" in study:
        raise ConfigError("[study] give either 'methods' or 'variant' (a list of MsFEM variants), "
                          "not both")
    if "methods" in study:
        entries, source = study["methods"], "[study] methods"
    elif "variant" in study:
        entries, source = _as_list(study["variant"]), "[study] variant"
    elif "variant" in msfem:
        entries, source = [msfem["variant"]], "[msfem] variant"
    else:
        raise ConfigError("[study] needs 'methods' (e.g. [\"linear\", \"oversampling\"]); "
                          f"available methods: {', '.join(all_methods())}")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source} must be a non-empty list of methods")
    default_boundary = msfem.get("boundary")
    if "oversampling" in study:
        default_patches, patch_source = _patches(study["oversampling"], "[study] oversampling"), \
            "[study] oversampling"
    elif "oversampling" in msfem:
        default_patches, patch_source = _patches(msfem["oversampling"], "[msfem] oversampling"), \
            "[msfem] oversampling"
    else:
        default_patches, patch_source = (PatchSpec("coarse_layers", 1),), None
    methods = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if isinstance(entry, str):
            entry = {"method": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} = {entry!r} must be a method name or a table with keys "
                              f"{', '.join(_METHOD_KEYS)}")
        kind = entry.get("method")
        if kind not in all_methods():
            raise ConfigError(f"{where}: method {kind!r} is not one of "
                              f"{', '.join(all_methods())} ({cfg_mod.METHODS_HINT})")
        own = [] if kind not in registry.available() else \
            [p for p in registry.parameter_names(kind) if p not in _METHOD_KEYS]
        for key in entry:
            if key not in _METHOD_KEYS and key not in own:
                raise ConfigError(f"unknown key {key!r} in {where}; accepted keys: "
                                  f"{', '.join((*_METHOD_KEYS, *own))}")
        parameters = tuple((k, entry[k]) for k in own if k in entry)
        if parameters:
            try:
                registry.create(kind, **dict(parameters))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where}: {err} ({cfg_mod.METHODS_HINT})") from err
        boundary = entry.get("boundary", default_boundary if kind in VARIANTS else None)
        if boundary is not None:
            if kind not in VARIANTS or kind in ("standard", "msfem"):
                raise ConfigError(f"{where}: boundary = {boundary!r} is given for method "
                                  f"{kind!r}, which has no local boundary problems")
            if boundary not in ("polynomial", "oscillatory"):
                raise ConfigError(f"{where}: boundary = {boundary!r} is not 'polynomial' or "
                                  f"'oscillatory'")
            if boundary == VARIANTS[kind].boundary:
                boundary = None
        oversampled = kind in VARIANTS and VARIANTS[kind].oversampled
        if "oversampling" in entry:
            if not oversampled:
                raise ConfigError(f"{where}: oversampling is given for method {kind!r}, which "
                                  f"has no oversampling (only 'oversampling' and "
                                  f"'petrov-galerkin' do)")
            patches = _patches(entry["oversampling"], f"{where}.oversampling")
        else:
            patches = default_patches if oversampled else (NO_PATCH,)
        refinement = entry.get("basis_refinement", 1)
        if isinstance(refinement, bool) or not isinstance(refinement, int) or refinement < 1:
            raise ConfigError(f"{where}: basis_refinement = {refinement!r} must be a positive "
                              f"integer (the sub-grid of the basis is that many times finer)")
        if refinement > 1 and kind not in registry.available():
            raise ConfigError(f"{where}: basis_refinement is given for method {kind!r}, which "
                              f"has no multiscale basis (methods: "
                              f"{', '.join(registry.available())})")
        only_N = None
        if "N" in entry:
            values = _as_list(entry["N"])
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):
                raise ConfigError(f"{where}: N = {entry['N']!r} must be a positive integer or "
                                  f"a list of them (the cases this method runs on)")
            only_N = tuple(values)
        name = entry.get("name") or (kind if boundary is None else f"{kind}-{boundary}") + (
            f"-r{refinement}" if refinement > 1 else "")
        if not isinstance(name, str) or not name or "," in name:
            raise ConfigError(f"{where}: name = {name!r} must be a non-empty string without ','")
        methods.append(Method(name, kind, boundary, patches, parameters, int(refinement), only_N))
    names = [m.name for m in methods]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"{source}: method name {n!r} appears twice; give the entries "
                              f"distinct 'name's")
    if patch_source and default_patches != (NO_PATCH,) and not any(
            m.kind in VARIANTS and VARIANTS[m.kind].oversampled for m in methods):
        raise ConfigError(f"{patch_source} is given, but none of the methods "
                          f"{', '.join(repr(m.kind) for m in methods)} has oversampling (only "
                          f"'oversampling' and 'petrov-galerkin' do); remove it")
    return tuple(methods)


def _coefficient_sweeps(study: Mapping[str, Any], coefficient: Mapping[str, Any]
                        ) -> list[tuple[str, list]]:
    ctype = coefficient["type"]
    accepted = COEFFICIENT_TYPES[ctype]
    sweeps = []
    for key, value in study.get("coefficient", {}).items():
        if key == "type":
            raise ConfigError("[study.coefficient] cannot sweep the coefficient type; write one "
                              "study per type")
        if key == "eps":
            raise ConfigError("[study.coefficient] eps: sweep eps with [study] eps")
        if key not in accepted:
            raise ConfigError(f"unknown key {key!r} in [study.coefficient] for coefficient type "
                              f"{ctype!r}; accepted keys: {', '.join(sorted(accepted))}")
        values = _as_list(value)
        if not values:
            raise ConfigError(f"[study.coefficient] {key} must not be empty")
        for v in values:
            if not cfg_mod.is_kind(v, accepted[key]):
                raise ConfigError(f"[study.coefficient] {key} = {v!r} must be "
                                  f"{cfg_mod.describe_kind(accepted[key])}")
        if len(set(map(fmt, values))) != len(values):
            raise ConfigError(f"[study.coefficient] {key} lists a value twice")
        sweeps.append((key, values))
    return sweeps


def _published(table: Mapping[str, Any] | None,
               param_names: Sequence[str]) -> Mapping[str, Any] | None:
    """Check the ``[published]`` rows: known keys, numbers, and a matching planned row."""
    if table is None:
        return None
    rows = table.get("rows")
    if not rows:
        raise ConfigError("[published] needs 'rows', a list of tables like "
                          "{ method = \"linear\", N = 32, nodal_linf = 1.2e-3 }")
    match_keys = ("method", "oversampling", "eps", "N", "M", "H_over_eps", *param_names)
    for i, row in enumerate(rows):
        where = f"[published] rows[{i}]"
        if not isinstance(row, dict):
            raise ConfigError(f"{where} must be a table")
        for key, value in row.items():
            if key not in match_keys and key not in METRICS:
                raise ConfigError(f"unknown key {key!r} in {where}; accepted keys: "
                                  f"{', '.join(match_keys + METRICS)}")
            if key in METRICS and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{where}: {key} = {value!r} must be a number")
        if "method" not in row or not any(k in METRICS for k in row):
            raise ConfigError(f"{where} needs 'method' and at least one of {', '.join(METRICS)}")
    return {"source": table.get("source", "published"), "note": table.get("note", ""),
            "rows": [dict(r) for r in rows]}


def published_matches(pub_row: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether our results row (typed values) matches the key fields of a published row."""
    for key, value in pub_row.items():
        if key in METRICS:
            continue
        ours = row.get(key)
        if isinstance(value, str) or isinstance(ours, str):
            if str(value) != str(ours):
                return False
        elif ours is None or not math.isclose(float(value), float(ours), rel_tol=1e-6):
            return False
    return True


# ----------------------------------------------------------------------------- the plan
def load_plan(path: str | Path) -> Plan:
    """Read, validate and expand a study configuration (no computation, no output).

    Raises:
        ConfigError: naming the offending key.

    """
    path = Path(path)
    config = cfg_mod.load(path, extra={"study": STUDY_SCHEMA, "published": PUBLISHED_SCHEMA},
                          required=("coefficient",))
    study = config.get("study", {})
    mesh = config.get("mesh", {})
    coefficient = config["coefficient"]
    problem = config.get("problem", {})
    msfem = config.get("msfem", {})
    cell = mesh.get("cell", "quadrilateral")
    methods = _methods(study, msfem)
    ctype = coefficient["type"]
    has_eps = "eps" in COEFFICIENT_TYPES[ctype]

    lower = np.asarray(mesh.get("lower", [0.0, 0.0, 0.0]), dtype=float)
    upper = np.asarray(mesh.get("upper", [1.0, 1.0, 1.0]), dtype=float)
    dim = cfg_mod.CELL_TYPES[cell][0]
    side = (upper - lower)[:dim]
    if len(side) < dim or np.any(side <= 0):
        raise ConfigError(f"[mesh] lower/upper = {mesh.get('lower')}/{mesh.get('upper')} do not "
                          f"describe a {dim}D box")
    if np.ptp(side) > 1e-12 * side.max():
        raise ConfigError("[mesh] studies need a square/cubic domain (the same N and M in every "
                          "direction)")
    length = float(side[0])

    eps_list = _positive_floats(study, "eps")
    ratio_list = _positive_floats(study, "H_over_eps")
    N_list = _positive_ints(study, "N")
    M_list = _positive_ints(study, "M")
    NM_list = _positive_ints(study, "NM")
    if (eps_list or ratio_list) and not has_eps:
        key = "eps" if eps_list else "H_over_eps"
        raise ConfigError(f"[study] {key}: coefficient type {ctype!r} has no parameter eps")
    if eps_list and ratio_list and N_list:
        raise ConfigError("[study] give at most two of eps, H_over_eps and N (the third follows "
                          "from H = 1/N = H_over_eps * eps)")
    if M_list and NM_list:
        raise ConfigError("[study] give either M (fine cells per coarse cell) or NM (fine cells "
                          "per direction), not both")
    if "oversampling" in msfem and not isinstance(msfem["oversampling"], (int, dict)):
        raise ConfigError("[msfem] oversampling must be an integer or a table")

    sweeps = _coefficient_sweeps(study, coefficient)
    param_names = tuple(k for k, _ in sweeps)
    allow_unresolved = bool(study.get("allow_unresolved", False))
    cases: list[Case] = []
    seen: set[tuple] = set()
    eps_values: list[float | None] = list(eps_list) if eps_list else [None]
    ratio_values: list[float | None] = list(ratio_list) if ratio_list else [None]
    N_values: list[int | None] = list(N_list) if N_list else [None]
    m_values: list[int | None] = list(M_list or NM_list or []) or [None]
    for combo in itertools.product(*[v for _, v in sweeps]):
        params = tuple(zip(param_names, combo))
        for eps, ratio, N, m in itertools.product(eps_values, ratio_values, N_values, m_values):
            case = _case(len(cases), eps, ratio, N, m, bool(NM_list), params, coefficient, mesh,
                         length, has_eps)
            case_key = (case.N, case.M, fmt(case.eps), params)
            if case_key in seen:
                raise ConfigError(f"[study] the sweep gives the case {case.describe()} twice")
            seen.add(case_key)
            cases.append(case)
    for case in cases:
        _check_case(case, [meth for meth in methods if meth.runs_on(case)], cell, length,
                    allow_unresolved, problem)
    for i, meth in enumerate(methods):
        if not any(meth.runs_on(c) for c in cases):
            raise ConfigError(f"[study] methods[{i}] ({meth.name!r}): N = "
                              f"{list(meth.only_N or ())} "
                              f"matches no case of the sweep (N = "
                              f"{sorted({c.N for c in cases})})")
    if study.get("shared_reference", False):
        nms = sorted({c.NM for c in cases})
        if len(nms) > 1:
            raise ConfigError(f"[study] shared_reference = true needs the same fine grid N*M for "
                              f"all cases, but the sweep gives N*M = {nms} (check N, M, NM and "
                              f"H_over_eps)")
    reference = study.get("reference", "fine")
    factor = study.get("reference_factor", 1 if reference == "richardson" else 2)
    if factor < 1:
        raise ConfigError(f"[study] reference_factor = {factor} must be >= 1")
    metrics = tuple(study.get("metrics", _DEFAULT_METRICS))
    for m in metrics:
        if m not in METRICS:
            raise ConfigError(f"[study] metrics: {m!r} is not one of {', '.join(METRICS)}")
    plan = Plan(path=path, config=config, name=study.get("name", path.stem), cases=tuple(cases),
                methods=methods, param_names=param_names, reference=reference,
                reference_factor=int(factor), metrics=metrics,
                figures=study.get("figures", True), allow_unresolved=allow_unresolved,
                published=None, length=length)
    published = _published(config.get("published"), param_names)
    if published:
        rows = [_planned_row(plan, c, m, p) for c in plan.cases for m in plan.methods
                if m.runs_on(c) for p in m.patches]
        for i, pub in enumerate(published["rows"]):
            if not any(published_matches(pub, r) for r in rows):
                keys = {k: v for k, v in pub.items() if k not in METRICS}
                raise ConfigError(f"[published] rows[{i}] {keys} matches no case of the sweep")
    return dataclasses.replace(plan, published=published)


def _planned_row(plan: Plan, case: Case, method: Method, patch: PatchSpec) -> dict[str, Any]:
    H = plan.length / case.N
    return {"method": method.name, "variant": method.kind, "oversampling": patch.label,
            "eps": case.eps, "N": case.N, "M": case.M,
            "H_over_eps": H / case.eps if case.eps else None, **dict(case.params)}


def _case(index: int, eps: float | None, ratio: float | None, N: int | None, m: int | None,
          m_is_NM: bool, params: tuple, coefficient: Mapping[str, Any], mesh: Mapping[str, Any],
          length: float, has_eps: bool) -> Case:
    if eps is None and has_eps and not (ratio is not None and N is not None):
        eps = float(coefficient["eps"])
    if N is None:
        if ratio is not None:
            if eps is None:
                raise ConfigError("[study] H_over_eps needs eps (in [study] or [coefficient])")
            N = _integer(length / (ratio * eps), f"N = 1/(H_over_eps*eps) for eps = {eps:.6g}, "
                         f"H_over_eps = {ratio:.6g}", "H_over_eps")
        elif "N" in mesh:
            N = int(mesh["N"])
        else:
            raise ConfigError("[study] needs N or H_over_eps (or [mesh] N)")
    elif eps is None and ratio is not None:
        eps = length / N / ratio
    if m is None:
        if "M" not in mesh:
            raise ConfigError("[study] needs M or NM (or [mesh] M)")
        M = int(mesh["M"])
    elif m_is_NM:
        if m % N:
            raise ConfigError(f"[study] NM = {m} is not a multiple of N = {N}")
        M = m // N
    else:
        M = m
    table = dict(coefficient)
    table.update(dict(params))
    if eps is not None:
        table["eps"] = eps
    cfg_mod.validate({"coefficient": table}, required=("coefficient",))
    return Case(index, int(N), int(M), eps, params, table)


def _check_case(case: Case, methods: Sequence[Method], cell: str, length: float,
                allow_unresolved: bool, problem: Mapping[str, Any]) -> None:
    """Resolution of ε, patch sizes and boundary data of one case (before any computation)."""
    dim = cfg_mod.CELL_TYPES[cell][0]
    h = length / case.NM
    try:
        fld = cfg_mod.build_coefficient(case.coefficient, dim)
        cfg_mod.build_problem(problem, fld, dim)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[coefficient]/[problem] for case {case.describe()}: {err}") from err
    unresolved = None if allow_unresolved else resolution_error(fld.eps, h)
    if unresolved is not None:
        raise ConfigError(
            f"[study] eps: case {case.describe()} is unresolved (fine h = 1/{case.NM}): "
            f"{unresolved}; increase M or NM, or set allow_unresolved = true")
    for m in methods:
        oscillatory = m.kind in VARIANTS and (m.boundary or VARIANTS[m.kind].boundary) \
            == "oscillatory"
        if oscillatory and dim == 3:
            raise ConfigError(f"[study] method {m.name!r}: oscillatory boundary data is defined "
                              f"in 1D and 2D only")
        for p in m.patches:
            if p.kind == "patch_fine_cells":
                if p.value < case.M or (p.value - case.M) % 2:
                    raise ConfigError(
                        f"[study] oversampling patch_fine_cells = {int(p.value)} of method "
                        f"{m.name!r} needs M_S >= M and M_S - M even (case {case.describe()})")
            if p.kind == "sampling_region" and (p.value < case.M or int(p.value) % case.M):
                raise ConfigError(
                    f"[study] oversampling sampling_region = {int(p.value)} of method "
                    f"{m.name!r} must be a multiple of M = {case.M} (case {case.describe()})")
            layers = p.oversampling(case.M).layers(case.M)
            if layers >= case.NM:
                raise ConfigError(
                    f"[study] oversampling {p.label} of method {m.name!r} gives {layers} fine "
                    f"layers, more than the domain ({case.NM} fine cells) for case "
                    f"{case.describe()}")
            if oscillatory and layers and cell in ("triangle", "tetrahedron"):
                raise ConfigError(f"[study] method {m.name!r}: oscillatory boundary data on "
                                  f"oversampling patches needs quadrilateral cells")
