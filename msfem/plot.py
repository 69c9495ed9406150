"""Pictures of fields, rendered off-screen with pyvista (an optional extra: ``msfem[viz]``).

Every rank contributes its owned cells (:func:`dolfinx.plot.vtk_mesh` of the function
space) and values; rank 0 stitches them together and writes the PNG. That gathers the
whole field on one process, which is fine for a picture and not meant for big meshes.
Without pyvista, :func:`plot_fields` warns and writes nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dolfinx
import dolfinx.plot
import numpy as np


def _pyvista() -> Any | None:
    """Import pyvista for off-screen rendering; None (and a warning) if it is missing."""
    try:
        import pyvista
    except ImportError:
        warnings.warn("pyvista is not installed: no PNG written (pip install 'msfem[viz]')",
                      RuntimeWarning, stacklevel=3)
        return None
    pyvista.OFF_SCREEN = True
    return pyvista


def _gather_grid(u: dolfinx.fem.Function) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray] | None:
    """On rank 0: VTK (cells, cell types, points, point values) of ``u`` from all ranks.

    Vector fields are shown by their magnitude. Returns None on the other ranks.
    """
    V = u.function_space
    comm = V.mesh.comm
    cells, types, points = dolfinx.plot.vtk_mesh(V)  # type: ignore[arg-type]
    bs = V.dofmap.index_map_bs
    values = u.x.array.real.reshape(-1, bs)[: len(points)]
    values = values[:, 0] if bs == 1 else np.linalg.norm(values, axis=1)
    parts = comm.gather((cells, types, points, values), root=0)
    if comm.rank != 0:
        return None
    all_cells, offset = [], 0
    for c, t, x, _ in parts:
        if len(t):
            c = c.reshape(len(t), -1).copy()  # rows: [n, v_0, ..., v_{n-1}]
            c[:, 1:] += offset
            all_cells.append(c.ravel())
        offset += len(x)
    return (np.concatenate(all_cells) if all_cells else np.zeros(0, dtype=np.int32),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
            np.concatenate([p[3] for p in parts]))


def plot_fields(path_png: str | Path, functions: Sequence[dolfinx.fem.Function],
                titles: Sequence[str] | None = None, *, shared_range: bool = True,
                window_size: tuple[int, int] = (500, 450)) -> bool:
    """Render the functions side by side into one PNG (collective; rank 0 writes).

    Args:
        path_png: output file.
        functions: dolfinx Lagrange Functions (each may live on its own mesh).
        titles: one title per panel (default: the function names).
        shared_range: use one colour range for all panels, so that e.g. a multiscale
            solution and its fine reference are comparable at a glance.
        window_size: size of one panel in pixels.

    Returns:
        True if the PNG was written, False if pyvista is missing (a warning is issued).

    Raises:
        RuntimeError: on every rank, if rendering failed on rank 0.

    """
    titles = list(titles) if titles is not None else [u.name for u in functions]
    if len(titles) != len(functions):
        raise ValueError(f"{len(functions)} functions but {len(titles)} titles")
    comm = functions[0].function_space.mesh.comm
    pyvista = _pyvista() if comm.rank == 0 else None
    if not comm.bcast(pyvista is not None, root=0):
        return False
    grids = [_gather_grid(u) for u in functions]
    titles = [f"|{t}|" if u.function_space.dofmap.index_map_bs > 1 else t
              for u, t in zip(functions, titles)]  # vector fields: magnitude
    error = None
    if comm.rank == 0:
        try:
            _render(pyvista, Path(path_png), grids, titles, shared_range, window_size,
                    functions[0].function_space.mesh.topology.dim)
        except Exception as err:  # noqa: BLE001  (reported on every rank below)
            error = f"rendering {path_png} failed: {type(err).__name__}: {err}"
    error = comm.bcast(error, root=0)
    if error:
        raise RuntimeError(error)
    return True


def _render(pyvista, path: Path, grids, titles, shared_range, window_size, tdim) -> None:
    quiet = (pyvista.vtk_verbosity("off") if hasattr(pyvista, "vtk_verbosity")
             else contextlib.nullcontext())  # no "bad X server connection" noise
    with quiet:
        _draw(pyvista, path, grids, titles, shared_range, window_size, tdim)


def _draw(pyvista, path: Path, grids, titles, shared_range, window_size, tdim) -> None:
    plotter = pyvista.Plotter(off_screen=True, shape=(1, len(grids)),
                              window_size=(window_size[0] * len(grids), window_size[1]),
                              border=False)
    try:
        _panels(pyvista, plotter, grids, titles, shared_range, tdim)
        path.parent.mkdir(parents=True, exist_ok=True)
        plotter.screenshot(str(path))
    finally:
        plotter.close()


def _panels(pyvista, plotter, grids, titles, shared_range, tdim) -> None:
    clim = None
    if shared_range:
        lo = min(float(v.min()) for *_, v in grids if len(v))
        hi = max(float(v.max()) for *_, v in grids if len(v))
        clim = (lo, hi if hi > lo else lo + 1.0)
    for k, ((cells, types, points, values), title) in enumerate(zip(grids, titles)):
        plotter.subplot(0, k)
        grid = pyvista.UnstructuredGrid(cells, types, points)
        grid.point_data[title] = values
        plotter.add_mesh(grid, scalars=title, clim=clim, cmap="viridis", show_edges=False,
                         scalar_bar_args={"title": title, "vertical": False, "fmt": "%.3g",
                                          "n_labels": 3, "title_font_size": 14,
                                          "label_font_size": 12})
        plotter.add_text(title, font_size=10)
        if tdim < 3:
            plotter.view_xy()
