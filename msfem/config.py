"""TOML configurations: a typed schema, validated before any computation, and builders.

A configuration has the sections ``[mesh]``, ``[coefficient]``, ``[problem]``,
``[solver]`` (PETSc options of the fine solve), ``[msfem]`` and ``[output]``; tools may
add their own sections (e.g. ``[study]``) by passing extra schema entries to
:func:`validate`. Unknown or ill-typed keys raise :class:`ConfigError` naming the key and
the accepted ones, so a typo never silently runs the default.

Example::

    [mesh]
    N = 16            # coarse cells per direction
    M = 16            # fine cells per coarse cell per direction (h = H/M)
    cell = "quadrilateral"

    [coefficient]
    type = "hou-wu"
    eps = 0.03125

    [problem]
    type = "diffusion"
    f = -1.0

    [msfem]
    variant = "oversampling"
    oversampling = { coarse_layers = 1 }

A perforated domain adds ``holes = { type = "periodic-discs", radius = 0.25 }`` to
``[problem]`` (discs of radius 0.25 ε on the period ε of the coefficient, or ``eps = ...``;
``center = 0`` puts them on the lattice εℤ²): the fine cells whose midpoint lies in a hole
are removed (u = 0 on them).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from msfem import coefficients as C
from msfem.mesh import CELL_TYPES, StructuredHierarchy
from msfem.problem import Dirichlet, Problem, diffusion, elasticity, reaction_diffusion

Number = (int, float)


class ConfigError(ValueError):
    """An invalid configuration (raised before any computation)."""


def is_kind(value: Any, kind: Any) -> bool:
    """Whether a TOML value is of a schema ``kind`` (a type, a tuple of names, or a tag).

    Tags: ``"number_or_list"``, ``"list"``, ``"int_or_table"``, ``"options"``. Booleans are
    not numbers. :func:`describe_kind` words the kind for messages.
    """
    if kind is float:
        return isinstance(value, Number) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number_or_list":
        return is_kind(value, float) or (isinstance(value, list)
                                         and all(is_kind(v, float) for v in value))
    if kind == "list":
        return isinstance(value, list)
    if kind == "int_or_table":
        return is_kind(value, int) or isinstance(value, dict)
    if kind == "options":
        return isinstance(value, dict)
    if isinstance(kind, tuple) and kind and isinstance(kind[0], str):  # enumeration
        return value in kind
    return isinstance(value, kind)


def describe_kind(kind: Any) -> str:
    """A schema ``kind`` (see :func:`is_kind`) in words, e.g. ``"an integer"``."""
    if isinstance(kind, tuple) and kind and isinstance(kind[0], str):
        return "one of " + ", ".join(repr(k) for k in kind)
    return {float: "a number", int: "an integer", str: "a string", bool: "true/false",
            "number_or_list": "a number or a list of numbers", "list": "a list",
            "int_or_table": "an integer (coarse layers) or a table {coarse_layers|ratio|"
                            "fine_layers = ...}",
            "options": "a table of PETSc options"}.get(kind, str(kind))


COEFFICIENT_TYPES: dict[str, dict[str, Any]] = {
    "constant": {"value": "number_or_list"},
    "hou-wu": {"eps": float, "P": float},
    "laminate": {"a1": float, "a2": float, "eps": float, "direction": int, "fraction": float},
    "checkerboard": {"a1": float, "a2": float, "eps": float},
    "inclusions": {"matrix": float, "inclusion": float, "eps": float, "radius": float},
    "random-checkerboard": {"a1": float, "a2": float, "cell": float, "seed": int, "p": float},
    "lognormal": {"mu": float, "sigma": float, "correlation_length": float, "seed": int,
                  "modes": int},
    "channels": {"contrast": float, "number": int, "width": float},
    "square-inclusions": {"contrast": float, "per_direction": int, "size": float},
}
#: ``[problem] holes = {type = ...}``: hole types and their keys (a perforated domain,
#: :attr:`msfem.problem.Problem.holes`); ``eps`` defaults to the coefficient's.
HOLE_KEYS: dict[str, dict[str, Any]] = {"periodic-discs": {"eps": float, "radius": float,
                                                           "center": float}}
REQUIRED_COEFFICIENT_KEYS = {
    "constant": ["value"], "hou-wu": ["eps"], "laminate": ["a1", "a2", "eps"],
    "checkerboard": ["a1", "a2", "eps"], "inclusions": ["matrix", "inclusion", "eps"],
    "random-checkerboard": ["a1", "a2", "cell", "seed"],
    "lognormal": ["mu", "sigma", "correlation_length", "seed"],
    "channels": ["contrast", "number", "width"],
    "square-inclusions": ["contrast", "per_direction", "size"],
}

SCHEMA: dict[str, dict[str, Any]] = {
    "mesh": {"N": int, "M": int, "cell": tuple(CELL_TYPES), "lower": "list", "upper": "list",
             "allow_unresolved": bool},
    "coefficient": {"type": tuple(COEFFICIENT_TYPES)},  # plus the type's own keys
    "problem": {"type": ("diffusion", "elasticity", "reaction-diffusion"), "f": "number_or_list",
                "nu": float, "reaction": float, "dirichlet": "number_or_list", "degree": int,
                "holes": "options"},
    "solver": {"petsc_options": "options"},
    # [msfem]: these keys, plus the method's own parameters from the registry
    # (msfem.methods); checked by method_of().
    "msfem": {"method": str, "variant": str, "plugins": "list", "coarse_solver": "options",
              "local_solver": "options", "assembly": ("element", "ptap"),
              "store_energy": bool},
    "output": {"format": ("vtx", "xdmf"), "png": bool, "fields": bool},
}


def validate(cfg: Mapping[str, Any], extra: Mapping[str, Mapping[str, Any]] | None = None,
             required: tuple[str, ...] = ("mesh", "coefficient")) -> dict[str, Any]:
    """Check every section and key of ``cfg`` against the schema; return it as a dict.

    Raises:
        ConfigError: naming the offending section/key and what is accepted.
    """
    schema: dict[str, Mapping[str, Any]] = dict(SCHEMA)
    schema.update(extra or {})
    for section in cfg:
        if section not in schema:
            raise ConfigError(f"unknown section [{section}]; accepted sections: "
                              f"{', '.join('[' + s + ']' for s in schema)}")
        if not isinstance(cfg[section], dict):
            raise ConfigError(f"[{section}] must be a table")
    for section in required:
        if section not in cfg:
            raise ConfigError(f"missing section [{section}]")
    for section, table in cfg.items():
        keys = dict(schema[section])
        if section == "msfem":
            name, params = method_of(table)
            keys.update({k: object for k in params})
            if isinstance(cfg.get("problem"), dict) and "holes" in cfg["problem"]:
                from msfem import methods

                why = methods.create(name, **params).holes_error()
                if why:
                    raise ConfigError(f"[problem] holes: {why}")
        if section == "coefficient":
            ctype = table.get("type")
            if ctype not in COEFFICIENT_TYPES:
                raise ConfigError(f"[coefficient] type = {ctype!r} is not "
                                  f"{describe_kind(tuple(COEFFICIENT_TYPES))}")
            keys.update(COEFFICIENT_TYPES[ctype])
            for k in REQUIRED_COEFFICIENT_KEYS[ctype]:
                if k not in table:
                    raise ConfigError(f"[coefficient] type {ctype!r} needs key {k!r}")
        if section == "solver":  # free-form PETSc options, scalar values only
            for k, v in table.items():
                if not isinstance(v, (str, int, float, bool)):
                    raise ConfigError(f"[solver] {k} must be a PETSc option value, got {v!r}")
            continue
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"unknown key {key!r} in [{section}]; accepted keys: "
                                  f"{', '.join(sorted(keys))}")
            if not is_kind(value, keys[key]):
                raise ConfigError(f"[{section}] {key} = {value!r} must be "
                                  f"{describe_kind(keys[key])}")
    _check_finite(cfg)
    mesh = cfg.get("mesh", {})
    for key in ("N", "M"):
        if key in mesh and mesh[key] < 1:
            raise ConfigError(f"[mesh] {key} = {mesh[key]} must be a positive integer")
    _check_domain(mesh)
    _check_coefficient(cfg.get("coefficient", {}), CELL_TYPES[mesh.get("cell",
                                                                       "quadrilateral")][0])
    _check_problem(cfg.get("problem", {}), CELL_TYPES[mesh.get("cell", "quadrilateral")][0])
    _check_solvers(cfg)
    check_resolution(cfg)
    return {k: dict(v) for k, v in cfg.items()}


def _check_finite(value: Any, where: str = "") -> None:
    """Refuse NaN and infinities anywhere in a configuration (naming the key)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            inner = f"[{key}]" if not where else \
                f"{where} {key}" if where.endswith("]") and " " not in where else \
                f"{where}.{key}"
            _check_finite(item, inner)
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _check_finite(item, f"{where}[{k}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r} must be a finite number")


def _check_domain(mesh: Mapping[str, Any]) -> None:
    """``lower``/``upper``: one finite number per direction, ``lower < upper``."""
    dim = CELL_TYPES[mesh.get("cell", "quadrilateral")][0]
    corners = {}
    for key, default in (("lower", 0.0), ("upper", 1.0)):
        value = mesh.get(key, [default] * dim)
        if not (isinstance(value, list) and len(value) == dim
                and all(is_kind(v, float) for v in value)):
            raise ConfigError(f"[mesh] {key} = {value!r} must be a list of {dim} numbers (one "
                              f"per direction of a {mesh.get('cell', 'quadrilateral')} mesh)")
        corners[key] = value
    if not all(b > a for a, b in zip(corners["lower"], corners["upper"])):
        raise ConfigError(f"[mesh] empty domain: lower = {corners['lower']} must be below "
                          f"upper = {corners['upper']} in every direction")


#: ``[coefficient]`` keys that are lengths (must be positive) or counts (at least 1).
_LENGTH_KEYS = ("eps", "cell", "correlation_length", "width", "size", "radius")
_COUNT_KEYS = ("number", "per_direction", "modes")


def _check_coefficient(table: Mapping[str, Any], dim: int) -> None:
    """Signs and ranges of the ``[coefficient]`` parameters.

    The positivity of the field itself is checked on the mesh, by the solvers.
    """
    for key in _LENGTH_KEYS:
        if key in table and not table[key] > 0:
            raise ConfigError(f"[coefficient] {key} = {table[key]!r} must be positive "
                              f"(a length)")
    for key in _COUNT_KEYS:
        if key in table and not table[key] >= 1:
            raise ConfigError(f"[coefficient] {key} = {table[key]!r} must be at least 1")
    for key in ("fraction", "p"):
        if key in table and not 0 <= table[key] <= 1:
            raise ConfigError(f"[coefficient] {key} = {table[key]!r} must lie in [0, 1]")
    if "direction" in table and not 0 <= table["direction"] < dim:
        raise ConfigError(f"[coefficient] direction = {table['direction']!r} must be 0 ... "
                          f"{dim - 1}")
    if table.get("type") == "constant":
        value = table.get("value")
        if isinstance(value, list) and len(value) not in (dim, dim * dim):
            raise ConfigError(f"[coefficient] value = {value!r} must be a number, or a list "
                              f"of {dim} (diagonal) numbers")


def _check_problem(table: Mapping[str, Any], dim: int) -> None:
    """Degree, load shape, Poisson ratio and reaction of ``[problem]``."""
    kind = table.get("type", "diffusion")
    degree = table.get("degree", 1)
    if not 1 <= degree <= 6:
        raise ConfigError(f"[problem] degree = {degree!r} must be a Lagrange degree 1 ... 6")
    for key in ("f", "dirichlet"):
        if key not in table:
            continue
        value = table[key]
        if kind == "elasticity":
            ok = key == "dirichlet" and not isinstance(value, list) or \
                isinstance(value, list) and len(value) == dim
            want = f"a list of {dim} numbers" + (" (or one number)" if key == "dirichlet"
                                                 else "")
        else:
            ok, want = not isinstance(value, list), "a number (the problem is scalar)"
        if not ok:
            raise ConfigError(f"[problem] {key} = {value!r} must be {want} for type {kind!r}")
    if "nu" in table and not -1 < table["nu"] < 0.5:
        raise ConfigError(f"[problem] nu = {table['nu']!r} must lie in (-1, 0.5) (Poisson "
                          f"ratio)")
    if "reaction" in table and not table["reaction"] >= 0:
        raise ConfigError(f"[problem] reaction = {table['reaction']!r} must be non-negative")
    if "holes" in table:
        _check_holes(table["holes"])


def _check_holes(holes: Mapping[str, Any]) -> None:
    """``[problem] holes``: a known type, its keys, positive lengths."""
    kind = holes.get("type")
    if kind not in HOLE_KEYS:
        raise ConfigError(f"[problem] holes type = {kind!r} must be "
                          f"{describe_kind(tuple(HOLE_KEYS))}")
    for key, value in holes.items():
        if key == "type":
            continue
        if key not in HOLE_KEYS[kind]:
            raise ConfigError(f"unknown key {key!r} in [problem] holes (type {kind!r}); "
                              f"accepted keys: type, {', '.join(HOLE_KEYS[kind])}")
        if not is_kind(value, HOLE_KEYS[kind][key]):
            raise ConfigError(f"[problem] holes {key} = {value!r} must be "
                              f"{describe_kind(HOLE_KEYS[kind][key])}")
    for key in ("eps", "radius"):
        if key in holes and not holes[key] > 0:
            raise ConfigError(f"[problem] holes {key} = {holes[key]!r} must be positive")
    if holes.get("radius", 0.25) >= 0.5:
        raise ConfigError(f"[problem] holes radius = {holes['radius']!r} must be below 0.5 "
                          f"(in units of eps: the holes must not touch)")


def _check_solvers(cfg: Mapping[str, Any]) -> None:
    """PETSc options of ``[solver]`` and ``[msfem] coarse_solver/local_solver``."""
    from msfem.solvers import check_options

    tables = [("[solver]", cfg.get("solver"))]
    msfem_table = cfg.get("msfem", {})
    tables += [(f"[msfem] {k}", msfem_table.get(k)) for k in ("coarse_solver", "local_solver")]
    for where, options in tables:
        if options:
            try:
                check_options(options, where)
            except ValueError as err:
                raise ConfigError(str(err)) from err


def check_resolution(cfg: Mapping[str, Any]) -> None:
    """Refuse a fine mesh that does not resolve the coefficient's fine scale (unless allowed).

    The scale is the one the coefficient field reports (:attr:`~msfem.coefficients.Field.eps`:
    ``eps``, a random checkerboard's ``cell``, a ``correlation_length``, a channel
    ``width``...) and the rule is :func:`msfem.coefficients.resolution_error`'s.
    ``[mesh] allow_unresolved = true`` lifts it.
    """
    mesh, coef = cfg.get("mesh", {}), cfg.get("coefficient", {})
    ctype = coef.get("type")
    if ctype not in COEFFICIENT_TYPES or "N" not in mesh or "M" not in mesh \
            or mesh.get("allow_unresolved", False):
        return
    try:
        scale = build_coefficient(coef, CELL_TYPES[mesh.get("cell", "quadrilateral")][0]).eps
    except (TypeError, ValueError, ArithmeticError) as err:
        raise ConfigError(f"[coefficient] type {ctype!r}: {err}") from err
    if scale is None:
        return
    lower = mesh.get("lower", [0.0] * 3)
    upper = mesh.get("upper", [1.0] * 3)
    extent = max(b - a for a, b in zip(lower, upper))
    error = C.resolution_error(scale, extent / (mesh["N"] * mesh["M"]), _scale_key(coef, scale))
    if error is not None:
        need = math.ceil(C.MIN_CELLS_PER_PERIOD * extent / (scale * mesh["N"]) - 1e-9)
        raise ConfigError(f"[coefficient] {error}: set [mesh] M >= {need}, or "
                          f"allow_unresolved = true to run anyway")


def _scale_key(coef: Mapping[str, Any], scale: float) -> str:
    """The key of ``[coefficient]`` that gives the field's fine scale (for messages)."""
    keys = [k for k in COEFFICIENT_TYPES[coef["type"]] if coef.get(k) == scale]
    return keys[0] if len(keys) == 1 else "eps"


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; :class:`ConfigError` naming the file if it cannot be read.

    Refused with a message: a missing path, a directory, an unreadable file, bytes that
    are not UTF-8 text, and text that is not TOML.
    """
    path = Path(path)
    name = f"configuration file {str(path)!r}"
    if not path.exists():
        raise ConfigError(f"{name} not found")
    if path.is_dir():
        raise ConfigError(f"{name} is a directory, not a TOML file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{name} cannot be read: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name} is not UTF-8 text (byte {err.start}): not a TOML "
                          f"configuration") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{name} is not valid TOML: {err}") from err


def load(path: str | Path, extra: Mapping[str, Mapping[str, Any]] | None = None,
         required: tuple[str, ...] = ("mesh", "coefficient")) -> dict[str, Any]:
    """Read and validate a TOML configuration file (:func:`read_toml`, :func:`validate`)."""
    path = Path(path)
    cfg = read_toml(path)
    plugins = cfg.get("msfem", {}).get("plugins", []) if isinstance(cfg.get("msfem"), dict) \
        else []
    if not isinstance(plugins, list):
        raise ConfigError("[msfem] plugins must be a list of module names or .py paths")
    load_plugins(plugins, path.parent)
    return validate(cfg, extra, required)


# ---------------------------------------------------------------------- methods
#: Keys of ``[msfem]`` that are not parameters of the method.
MSFEM_KEYS = ("method", "variant", "plugins", "coarse_solver", "local_solver", "assembly",
              "store_energy")
#: Where a user finds the methods and their parameters (ends every ``[msfem]`` method error).
METHODS_HINT = "'msfem methods' lists the methods and their parameters"


def load_plugins(paths: list[str], base: Path | None = None) -> None:
    """Import method plugins: module names or ``.py`` files (relative to ``base`` or cwd).

    A plugin registers its methods with :func:`msfem.methods.register` when imported.
    """
    import importlib
    import importlib.util
    import sys

    for item in paths:
        if not isinstance(item, str):
            raise ConfigError(f"[msfem] plugins: {item!r} must be a module name or a .py path")
        if not item.endswith(".py"):
            try:
                importlib.import_module(item)
            except ImportError as err:
                raise ConfigError(f"[msfem] plugins: cannot import {item!r}: {err}") from err
            continue
        candidates = [Path(item)] if Path(item).is_absolute() else \
            [p for p in ((base / item) if base else None, Path.cwd() / item) if p]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise ConfigError(f"[msfem] plugins: file {item!r} not found (looked in "
                              f"{', '.join(str(p.parent) for p in candidates)})")
        name = "msfem_plugin_" + path.stem
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"[msfem] plugins: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def method_of(table: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The method name and parameters of an ``[msfem]`` table, checked against the registry.

    ``method`` (or, without it, its alias ``variant``) names a registered method (default
    ``"linear"``); every other key that is not in :data:`MSFEM_KEYS` must be one of its
    parameters. Raises :class:`ConfigError` listing the valid names.
    """
    from msfem import methods

    key = "method" if "method" in table else "variant"  # 'variant' alone: an alias
    name = table.get(key, "linear")
    if name not in methods.available():
        raise ConfigError(f"[msfem] {key} = {name!r} is not a registered method, must be one "
                          f"of {', '.join(repr(m) for m in methods.available())} "
                          f"({METHODS_HINT})")
    params = {k: v for k, v in table.items() if k not in MSFEM_KEYS
              or (k == "variant" and key == "method")}
    try:
        methods.create(name, **params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[msfem] {err} ({METHODS_HINT})") from err
    return name, params


# ---------------------------------------------------------------------- size
def fine_dofs(cfg: Mapping[str, Any], cells_per_direction: int | None = None) -> int:
    """Unknowns of the fine space of a validated configuration (no mesh is built).

    ``(n p + 1)^d`` times the components, with ``n = N M`` fine cells per direction (or
    ``cells_per_direction``), ``p`` the ``[problem] degree`` and ``d`` the dimension.
    """
    mesh, problem = cfg.get("mesh", {}), cfg.get("problem", {})
    dim = CELL_TYPES[mesh.get("cell", "quadrilateral")][0]
    n = cells_per_direction if cells_per_direction is not None else mesh["N"] * mesh["M"]
    bs = dim if problem.get("type") == "elasticity" else 1
    return (n * problem.get("degree", 1) + 1) ** dim * bs


def memory_need(cfg: Mapping[str, Any], cells_per_direction: int | None = None) -> float:
    """Estimated peak bytes of a fine solve of ``cfg`` (:func:`msfem._runtime.memory_estimate`)."""
    from msfem._runtime import memory_estimate

    mesh, problem = cfg.get("mesh", {}), cfg.get("problem", {})
    dim = CELL_TYPES[mesh.get("cell", "quadrilateral")][0]
    bs = dim if problem.get("type") == "elasticity" else 1
    return memory_estimate(fine_dofs(cfg, cells_per_direction), dim=dim,
                           degree=problem.get("degree", 1), block_size=bs)


# ---------------------------------------------------------------------- builders
def build_hierarchy(mesh: Mapping[str, Any], comm) -> StructuredHierarchy:
    """A :class:`StructuredHierarchy` from a ``[mesh]`` table."""
    for key in ("N", "M"):
        if key not in mesh:
            raise ConfigError(f"[mesh] needs {key!r} (coarse cells per direction N, fine cells "
                              f"per coarse cell M)")
    return StructuredHierarchy(comm, mesh["N"], mesh["M"], mesh.get("cell", "quadrilateral"),
                               mesh.get("lower"), mesh.get("upper"))


def build_coefficient(table: Mapping[str, Any], dim: int = 2) -> C.Field:
    """A coefficient :class:`~msfem.coefficients.Field` from a ``[coefficient]`` table."""
    t = dict(table)
    kind = t.pop("type")
    if kind == "constant":
        return C.ConstantField(t["value"])
    if kind == "hou-wu":
        return C.HouWu(**t)
    if kind == "laminate":
        return C.Laminate(**t)
    if kind == "checkerboard":
        return C.Checkerboard(**t, dim=dim)
    if kind == "inclusions":
        return C.Inclusions(**t, dim=dim)
    if kind == "random-checkerboard":
        n = int(round(1.0 / t["cell"]))
        return C.RandomCheckerboard(ncells=(n,) * dim, **t)
    if kind == "lognormal":
        return C.LogNormal(**t, dim=dim)
    if kind == "channels":
        return C.channels(t["contrast"], t["number"], t["width"])
    if kind == "square-inclusions":
        return C.square_inclusions(t["contrast"], t["per_direction"], t["size"])
    raise ConfigError(f"unknown coefficient type {kind!r}")  # pragma: no cover


def build_holes(table: Mapping[str, Any] | None, coefficient: C.Field,
                dim: int) -> C.Field | None:
    """The hole indicator of ``[problem] holes`` (``eps`` defaults to the coefficient's)."""
    if table is None:
        return None
    t = dict(table)
    t.pop("type")
    eps = t.pop("eps", coefficient.eps)
    if eps is None:
        raise ConfigError("[problem] holes needs eps (the coefficient has no period)")
    return C.PeriodicDiscs(eps=eps, dim=dim, **t)


def build_problem(table: Mapping[str, Any], coefficient: C.Field, dim: int) -> Problem:
    """A :class:`~msfem.problem.Problem` from a ``[problem]`` table and a coefficient."""
    kind = table.get("type", "diffusion")
    bc = (Dirichlet(table.get("dirichlet", 0.0)),)
    degree = table.get("degree", 1)
    holes = build_holes(table.get("holes"), coefficient, dim)
    if kind == "diffusion":
        return diffusion(coefficient, f=table.get("f", 1.0), dirichlet=bc, degree=degree,
                         holes=holes)
    if kind == "reaction-diffusion":
        return reaction_diffusion(coefficient, table.get("reaction", 1.0), f=table.get("f", 1.0),
                                  dirichlet=bc, degree=degree, holes=holes)
    if holes is not None:
        raise ConfigError("[problem] holes: perforated domains are supported for scalar "
                          "problems (diffusion, reaction-diffusion), not elasticity")
    f = table.get("f", [0.0] * (dim - 1) + [-1.0])
    if not isinstance(f, list) or len(f) != dim:
        raise ConfigError(f"[problem] f for elasticity must be a list of {dim} numbers, got {f!r}")
    return elasticity(coefficient, nu=table.get("nu", 0.3), f=f, dim=dim, dirichlet=bc,
                      degree=degree)
