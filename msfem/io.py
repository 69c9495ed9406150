"""Results on disk: fields for ParaView (VTX or XDMF) and metrics as JSON.

Both writers are collective over the communicator of the data and never leave a
half-written file behind: JSON goes through :func:`msfem._runtime.atomic_write_json`, and
the command line wraps whole result directories in
:func:`msfem._runtime.atomic_directory`.

VTX (``.bp``, ADIOS2) keeps Lagrange functions of any degree; XDMF (``.xdmf`` + ``.h5``)
stores nodal values on the mesh geometry, so functions of higher degree are interpolated
to degree 1 first.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dolfinx
import dolfinx.io
import numpy as np
from mpi4py import MPI

from msfem import _runtime

FORMATS = ("vtx", "xdmf")


def _has_vtx() -> bool:
    return bool(dolfinx.common.has_adios2) and hasattr(dolfinx.io, "VTXWriter")


def _degree_one(u: dolfinx.fem.Function) -> dolfinx.fem.Function:
    """``u`` itself if it is nodal on the mesh geometry, else its degree-1 interpolant."""
    V = u.function_space
    if V.ufl_element().embedded_superdegree <= V.mesh.geometry.cmap.degree:
        return u
    shape = V.ufl_element().reference_value_shape
    W = dolfinx.fem.functionspace(V.mesh, ("Lagrange", V.mesh.geometry.cmap.degree, shape))
    w = dolfinx.fem.Function(W, name=u.name)
    w.interpolate(u)
    return w


def write_fields(directory: str | Path, functions: Sequence[dolfinx.fem.Function],
                 format: str = "vtx") -> list[Path]:
    """Write each Function to its own file ``directory/<function.name>.bp`` (or ``.xdmf``).

    Collective on the functions' mesh communicators. One file per function, because a
    VTX file holds functions of a single space and the fields of a multiscale run live
    on different meshes (coarse ``U``, fine ``u_ms`` and ``u_fine``).

    Args:
        directory: existing (or creatable) output directory.
        functions: dolfinx Functions with distinct names.
        format: ``"vtx"`` (ADIOS2 ``.bp``; falls back to XDMF with a warning when
            dolfinx was built without ADIOS2) or ``"xdmf"``.

    Returns:
        The paths written (a ``.bp`` is a directory; an ``.xdmf`` has an ``.h5`` sibling).

    Raises:
        ValueError: unknown format or duplicate function names.

    """
    if format not in FORMATS:
        raise ValueError(f"output format {format!r} is not one of {', '.join(FORMATS)}")
    names = [u.name for u in functions]
    if len(set(names)) != len(names):
        raise ValueError(f"write_fields needs distinct function names, got {names}")
    if format == "vtx" and not _has_vtx():
        warnings.warn("dolfinx was built without ADIOS2: writing XDMF instead of VTX",
                      RuntimeWarning, stacklevel=2)
        format = "xdmf"
    directory = Path(directory)
    comm = functions[0].function_space.mesh.comm if functions else MPI.COMM_WORLD
    if comm.rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    paths = []
    for u in functions:
        mesh_comm = u.function_space.mesh.comm
        if format == "vtx":
            path = directory / f"{u.name}.bp"
            with dolfinx.io.VTXWriter(mesh_comm, path, [u], engine="BP4") as writer:
                writer.write(0.0)
        else:
            path = directory / f"{u.name}.xdmf"
            with dolfinx.io.XDMFFile(mesh_comm, path, "w") as xdmf:
                xdmf.write_mesh(u.function_space.mesh)
                xdmf.write_function(_degree_one(u))
        paths.append(path)
    return paths


def json_safe(value: Any, nonfinite_to_none: bool = False) -> Any:
    """``value`` with NumPy scalars/arrays and Paths turned into JSON types.

    With ``nonfinite_to_none`` NaN and infinities become ``None`` (valid JSON).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, nonfinite_to_none) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, nonfinite_to_none) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), nonfinite_to_none)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if nonfinite_to_none and not math.isfinite(value):
            return None
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(path: str | Path, metrics: Mapping[str, Any],
                  comm: MPI.Comm = MPI.COMM_WORLD) -> Path:
    """Write ``metrics`` as indented JSON, atomically, from rank 0 (collective).

    NumPy scalars and arrays become floats/ints/lists (a non-finite float is written as
    ``NaN``/``Infinity``, which :func:`json.load` reads back).
    """
    _runtime.atomic_write_json(path, json_safe(metrics), comm)
    return Path(path)
