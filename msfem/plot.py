r"""Pictures of fields: collective calls, rank 0 draws and writes the PNG.

Every rank contributes its owned cells (:func:`dolfinx.plot.vtk_mesh` of the function
space) and values; rank 0 stitches them together and writes the PNG. That gathers the
whole field on one process, which is fine for a picture and not meant for big meshes.

* :func:`plot_fields` renders any number of fields side by side off-screen with pyvista
  (an optional extra: ``msfem[viz]``; without it, it warns and writes nothing), in 1D, 2D
  or 3D.
* :func:`plot_error_field` draws a reference :math:`u_h`, an approximation :math:`u_{ms}`
  and the error :math:`u_h - u_{ms}` with matplotlib (axes, colour bars, the errors in
  the title); 1D and 2D.
* :func:`basis_function` computes the multiscale basis function :math:`\phi_i` of a
  coarse vertex (the method's reconstruction of the unit coarse vector :math:`e_i`) and
  the coarse hat :math:`N_i`; :func:`plot_basis_function` draws them side by side with a
  section through the vertex -- the picture that explains MsFEM.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dolfinx
import dolfinx.plot
import numpy as np
from mpi4py import MPI


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


# ------------------------------------------------------------------ matplotlib figures
# The figures below are drawn with matplotlib (a core dependency), so they have axes,
# colour bars and titles; 1D and 2D meshes only (3D fields: :func:`plot_fields`). Every
# rank contributes its cells and values, rank 0 draws and writes the file atomically.

#: Corners of the VTK cells of dolfinx.plot.vtk_mesh and their split into triangles
#: (VTK types: 5 triangle, 9 quadrilateral, 69/70 Lagrange triangle/quadrilateral).
_TRIANGLES = {5: [(0, 1, 2)], 9: [(0, 1, 2), (0, 2, 3)],
              69: [(0, 1, 2)], 70: [(0, 1, 2), (0, 2, 3)]}


def _scalar(u: dolfinx.fem.Function, component: int | None) -> np.ndarray:
    """Local point values of ``u``: a component, or the magnitude of a vector field."""
    bs = u.function_space.dofmap.index_map_bs
    values = u.x.array.real.reshape(-1, bs)
    if bs == 1:
        return values[:, 0]
    return values[:, component] if component is not None else np.linalg.norm(values, axis=1)


class _Grid:
    """The points and triangles of a 1D/2D Lagrange space from all ranks, on rank 0.

    :meth:`values` gathers a Function's point values in the same order; :meth:`raster`
    evaluates the piecewise-linear interpolant of such values on a pixel grid (an image is
    much faster to draw than one patch per triangle, and looks the same). The pixel ->
    triangle search is done once per grid and reused for every field on it.
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace):
        self.comm, self.dim = V.mesh.comm, V.mesh.topology.dim
        if self.dim not in (1, 2):
            raise ValueError(f"msfem.plot draws 1D and 2D fields with matplotlib; for a "
                             f"{self.dim}D field use plot_fields (pyvista)")
        cells, types, points = dolfinx.plot.vtk_mesh(V)  # type: ignore[arg-type]
        self.n_local = len(points)
        local = np.zeros((0, 3), dtype=np.int64)
        if self.dim == 2 and len(types):
            rows = cells.reshape(len(types), -1)[:, 1:]  # [n, v_0, ...]: one cell type
            split = _TRIANGLES.get(int(types[0]))
            if split is None:
                raise ValueError(f"cannot draw VTK cell type {int(types[0])}")
            local = np.concatenate([rows[:, list(t)] for t in split])
        parts = self.comm.gather((points, local), root=0)
        self.points: np.ndarray | None = None
        self.triangles: np.ndarray | None = None
        if parts is not None:
            offsets = np.cumsum([0] + [len(p[0]) for p in parts])
            self.points = np.concatenate([p[0] for p in parts])
            self.triangles = np.concatenate([t + o for (_, t), o in zip(parts, offsets)])
        self._weights: dict[tuple[float, ...], tuple[Any, ...]] = {}

    def values(self, u: dolfinx.fem.Function, component: int | None = None) -> np.ndarray | None:
        """Point values of ``u`` (a Function on this grid's space) on rank 0, else None."""
        parts = self.comm.gather(_scalar(u, component)[: self.n_local], root=0)
        return None if parts is None else np.concatenate(parts)

    def section(self, y: float, xs: np.ndarray, values: Sequence[np.ndarray]
                ) -> list[np.ndarray]:
        """The interpolants of ``values`` along the line (xs, y) (2D; NaN outside)."""
        assert self.points is not None and self.triangles is not None
        return _section(self.points, self.triangles, y, xs, values)

    def raster(self, values: np.ndarray, window: tuple[np.ndarray, np.ndarray] | None = None,
               pixels: int = 480) -> tuple[Any, list[float]]:
        """The interpolant of ``values`` on pixels over ``window``, and its extent.

        ``window`` = (lo, hi) defaults to the mesh's bounding box; pixels outside the mesh
        are masked.
        """
        assert self.points is not None and self.triangles is not None
        lo, hi = window if window is not None else (self.points[:, :2].min(axis=0),
                                                    self.points[:, :2].max(axis=0))
        key = (*map(float, lo), *map(float, hi))
        if key not in self._weights:
            size = np.maximum(hi - lo, np.finfo(float).tiny)
            n = np.maximum((pixels * size / size.max()).astype(int), 2)
            self._weights[key] = _pixel_weights(self.points[:, :2], self.triangles, lo, hi, n)
        shape, pixel, verts, weights = self._weights[key]
        image = np.ma.masked_all(shape)
        image.ravel()[pixel] = (values[verts] * weights).sum(axis=1)
        return image, [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]


def _section(points: np.ndarray, triangles: np.ndarray, y: float, xs: np.ndarray,
             values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The piecewise-linear interpolants of ``values`` at the points (xs, y) (NaN outside)."""
    p = points[triangles][:, :, :2]  # (m, 3, 2)
    crossing = np.flatnonzero((p[:, :, 1].min(axis=1) <= y) & (p[:, :, 1].max(axis=1) >= y))
    p, tri = p[crossing], triangles[crossing]
    T = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], axis=2)  # (m', 2, 2)
    Tinv = np.linalg.inv(T)
    rel = np.stack([xs, np.full_like(xs, y)], axis=1)[:, None, :] - p[None, :, 0]  # (k, m', 2)
    lam = np.einsum("mij,kmj->kmi", Tinv, rel)
    weights = np.concatenate([1 - lam.sum(axis=2, keepdims=True), lam], axis=2)  # (k, m', 3)
    inside = weights.min(axis=2) >= -1e-9
    found = inside.any(axis=1)
    first = inside.argmax(axis=1)
    w = weights[np.arange(len(xs)), first]  # (k, 3)
    verts = tri[first]
    out = []
    for v in values:
        curve = (v[verts] * w).sum(axis=1)
        curve[~found] = np.nan
        out.append(curve)
    return out


def _pixel_weights(points: np.ndarray, triangles: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   n: np.ndarray) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of an ``n[1]`` x ``n[0]`` grid over [lo, hi] inside the triangles.

    Returns the grid shape, the flat indices of the covered pixels, the vertices of a
    triangle containing each, and the barycentric coordinates of the pixel in it. Every
    triangle tests the pixels of its bounding box (vectorised: triangles are small).
    """
    step = (hi - lo) / (n - 1)
    p = points[triangles]  # (m, 3, 2)
    first = np.clip(np.ceil((p.min(axis=1) - lo) / step - 1e-9), 0, n - 1).astype(np.int64)
    last = np.clip(np.floor((p.max(axis=1) - lo) / step + 1e-9), 0, n - 1).astype(np.int64)
    width = np.maximum(last - first + 1, 0)
    count = width[:, 0] * width[:, 1]
    tri = np.repeat(np.arange(len(p)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    ix = first[tri, 0] + k % width[tri, 0]
    iy = first[tri, 1] + k // width[tri, 0]
    xy = lo + np.column_stack([ix, iy]) * step
    T = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]], axis=2)  # (m, 2, 2)
    lam = np.linalg.solve(T[tri], (xy - p[tri, 0])[:, :, None])[:, :, 0]
    weights = np.column_stack([1 - lam.sum(axis=1), lam])
    inside = weights.min(axis=1) >= -1e-9
    pixel = iy[inside] * n[0] + ix[inside]
    pixel, keep = np.unique(pixel, return_index=True)  # one triangle per pixel
    return ((int(n[1]), int(n[0])), pixel, triangles[tri[inside][keep]],
            weights[inside][keep])


def _coarse_edges(mesh: dolfinx.mesh.Mesh) -> np.ndarray | None:
    """The edges of the mesh's cells as point pairs (n, 2, 2), on rank 0 (collective)."""
    cells, types, points = dolfinx.plot.vtk_mesh(mesh)
    local = np.zeros((0, 2, 2))
    if len(types):
        rows = cells.reshape(len(types), -1)[:, 1:]
        n = rows.shape[1]
        local = np.concatenate([np.stack([points[rows[:, k], :2],
                                          points[rows[:, (k + 1) % n], :2]], axis=1)
                                for k in range(n)])
    parts = mesh.comm.gather(local, root=0)
    return None if parts is None else np.concatenate(parts)


def _on_rank0(comm: MPI.Comm, draw: Any) -> None:
    """Run ``draw()`` on rank 0; raise its error on every rank (collective)."""
    error = None
    if comm.rank == 0:
        try:
            draw()
        except Exception as err:  # noqa: BLE001  (reported on every rank below)
            error = f"{type(err).__name__}: {err}"
    error = comm.bcast(error, root=0)
    if error:
        raise RuntimeError(f"drawing failed on rank 0: {error}")


def _save(fig: Any, path: Path) -> None:
    """Write the figure atomically (a temporary file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _range(*values: np.ndarray) -> tuple[float, float]:
    lo = min(float(v.min()) for v in values if len(v))
    hi = max(float(v.max()) for v in values if len(v))
    return (lo, hi if hi > lo else lo + 1.0)


def _panel(fig: Any, ax: Any, grid: _Grid, values: np.ndarray, title: str,
           clim: tuple[float, float], cmap: str, label: str,
           window: tuple[np.ndarray, np.ndarray] | None = None, norm: Any = None) -> None:
    """One field on ``ax``: an image with a colour bar (2D) or a curve (1D); axes, title."""
    assert grid.points is not None
    if grid.dim == 1:
        order = np.argsort(grid.points[:, 0], kind="stable")
        ax.plot(grid.points[order, 0], values[order], lw=1.2)
        ax.set_ylim(*clim)
        ax.set_xlabel("x")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    else:
        image, extent = grid.raster(values, window)
        limits = {"vmin": clim[0], "vmax": clim[1]} if norm is None else {"norm": norm}
        art = ax.imshow(image, origin="lower", extent=extent, cmap=cmap,
                        interpolation="nearest", **limits)
        ticks = None if norm is None else [norm.vmin, 0.0, 0.5 * norm.vmax, norm.vmax]
        fig.colorbar(art, ax=ax, shrink=0.85, format="%.3g", label=label, ticks=ticks)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    ax.set_title(title, fontsize=10)


def plot_error_field(path_png: str | Path, functions: Sequence[dolfinx.fem.Function],
                     titles: Sequence[str] | None = None, *, title: str | None = None,
                     component: int | None = None) -> bool:
    r"""Draw :math:`u_{ref}`, :math:`u` and the error :math:`u_{ref} - u` side by side.

    A collective call: every rank sends its cells and values, rank 0 draws with matplotlib
    and writes the PNG (atomically). The first two panels share one colour range; the
    error panel is centred on zero. The figure title gives :math:`\max|u_{ref} - u|` and
    :math:`\|u_{ref} - u\|_{L^2} / \|u_{ref}\|_{L^2}`, after ``title`` if given (e.g. the
    method, H and ε).

    Args:
        path_png: output file.
        functions: ``(u_ref, u)``, dolfinx Lagrange Functions on one 1D or 2D mesh (``u``
            is interpolated into ``u_ref``'s space if their elements differ), e.g. the fine
            reference and :meth:`msfem.CoarseSolution.reconstruct`.
        titles: names of the two fields (default ``("u_fine", "u_ms")``).
        title: the first line of the figure title.
        component: for vector fields, the component drawn (default: the magnitudes of the
            fields and of the error vector).

    Returns:
        True (the PNG was written; the signature and result match :func:`plot_fields`).

    Raises:
        ValueError: not two functions or titles, not on one mesh, or a 3D mesh.
        RuntimeError: on every rank, if drawing failed on rank 0.
    """
    from msfem import norms

    if len(functions) != 2:
        raise ValueError(f"plot_error_field draws (u_ref, u): got {len(functions)} functions")
    u_ref, u = functions
    names = list(titles) if titles is not None else ["u_fine", "u_ms"]
    if len(names) != 2:
        raise ValueError(f"plot_error_field needs two titles, got {names}")
    V = u_ref.function_space
    if u.function_space.mesh is not V.mesh:
        raise ValueError("plot_error_field needs u_ref and u on the same mesh")
    grid = _Grid(V)
    error = dolfinx.fem.Function(V, name="error")
    if u.function_space.ufl_element() == V.ufl_element():  # same mesh + element: same dofs
        error.x.array[:] = u_ref.x.array - u.x.array
    else:
        error.interpolate(u)
        error.x.array[:] = u_ref.x.array - error.x.array
    err_max = V.mesh.comm.allreduce(float(np.abs(error.x.array).max(initial=0.0)), op=MPI.MAX)
    rel = norms.l2_norm(error) / max(norms.l2_norm(u_ref), np.finfo(float).tiny)
    vector = V.dofmap.index_map_bs > 1 and component is None
    values = [grid.values(f, component) for f in (u_ref, u, error)]
    labels = [f"|{n}|" if vector else n for n in names]
    second = f"({names[1]})" if any(c in names[1] for c in "+-−") else names[1]
    err_label = f"|{names[0]} − {second}|" if vector else f"{names[0]} − {second}"
    summary = f"max |error| = {err_max:.3g}, relative L2 error = {rel:.3g}"
    heading = f"{title}\n{summary}" if title else summary

    def draw() -> None:
        from matplotlib.figure import Figure

        v_ref, v_u, v_e = values
        assert v_ref is not None and v_u is not None and v_e is not None
        fig = Figure(figsize=(15, 4.6) if grid.dim == 2 else (15, 3.8))
        fig.subplots_adjust(left=0.04, right=0.96, bottom=0.12, top=0.8, wspace=0.32)
        axes = fig.subplots(1, 3)
        clim = _range(v_ref, v_u)
        m = float(np.abs(v_e).max(initial=0.0)) or 1.0
        _panel(fig, axes[0], grid, v_ref, labels[0], clim, "viridis", labels[0])
        _panel(fig, axes[1], grid, v_u, labels[1], clim, "viridis", labels[1])
        _panel(fig, axes[2], grid, v_e, f"error {err_label}", (0.0, m) if vector else (-m, m),
               "magma" if vector else "RdBu_r", err_label)
        fig.suptitle(heading, fontsize=11)
        _save(fig, Path(path_png))

    _on_rank0(V.mesh.comm, draw)
    return True


@dataclass(frozen=True)
class BasisFunction:
    r"""A multiscale basis function :math:`\phi_i` and the coarse nodal function :math:`N_i`.

    Attributes:
        phi: :math:`\phi_i` on the fine space (the method's reconstruction of the coarse
            vector :math:`e_i`).
        hat: the coarse P1/Q1 nodal function :math:`N_i` (the hat), interpolated into the
            same fine space.
        vertex: coordinates of the coarse vertex :math:`x_i`, shape (d,).
        spacing: per axis, the signed offset from :math:`x_i` to the nearest coarse vertex
            along that axis (positive if there is one on both sides), shape (d,).
        component: the vector component of the coarse dof (0 for scalar problems).
        method: the method's name.
    """

    phi: dolfinx.fem.Function
    hat: dolfinx.fem.Function
    vertex: np.ndarray
    spacing: np.ndarray
    component: int
    method: str


def basis_function(space: Any, vertex: Sequence[float] | None = None, *,
                   component: int = 0) -> BasisFunction:
    r"""The multiscale basis function of one coarse vertex and its coarse hat (collective).

    :math:`\phi_i` is the method's reconstruction of the coarse vector :math:`e_i` (1 at
    the dof of vertex :math:`x_i` and component ``component``, 0 elsewhere): for MsFEM the
    function with :math:`a_K(\phi_i, v) = 0` on every coarse cell K and
    :math:`\phi_i(x_k) = \delta_{ik}` (averaged across coarse cells for the
    non-conforming oversampled variants), for LOD :math:`(1 - Q_k)N_i`. :math:`N_i` is the
    coarse P1/Q1 nodal function of the same dof.

    Args:
        space: a built :class:`~msfem.MultiscaleSpace` whose coarse space is Lagrange (one
            dof per vertex and component).
        vertex: a point; the coarse vertex nearest to it is taken (default: the vertex
            nearest to the centre of the domain's bounding box; ties go to the smallest
            coordinates, so the choice does not depend on the partition).
        component: the component of a vector problem's dof.

    Raises:
        ValueError: on every rank, if the space is not built, its coarse space has no
            vertex dofs, or ``component`` is out of range.
    """
    from msfem.coarse import CoarseSolution, interpolate_coarse

    if not space.built:
        raise ValueError("basis_function needs a built MultiscaleSpace (call build())")
    Vc = space.coarse_space
    if Vc is None:
        raise ValueError(f"method {space.name!r} has no Lagrange coarse space: its coarse "
                         f"dofs are not vertex values")
    bs = Vc.dofmap.index_map_bs
    if not 0 <= component < bs:
        raise ValueError(f"component = {component} must lie in [0, {bs})")
    comm = Vc.mesh.comm
    dim = Vc.mesh.topology.dim
    x = Vc.tabulate_dof_coordinates()[:, :dim]
    n_owned = Vc.dofmap.index_map.size_local
    if vertex is None:
        gx = Vc.mesh.geometry.x[:, :dim]
        lo = gx.min(axis=0) if len(gx) else np.full(dim, np.inf)
        hi = gx.max(axis=0) if len(gx) else np.full(dim, -np.inf)
        comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
        comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
        target = 0.5 * (lo + hi)
    else:
        target = np.asarray(vertex, dtype=float).ravel()[:dim]
    dist = np.round(np.linalg.norm(x[:n_owned] - target, axis=1), 12)
    mine = [(float(d), *map(float, p)) for d, p in zip(dist, x[:n_owned])]
    xi = np.array(min(c for c in comm.allgather(min(mine) if mine else None) if c)[1:])
    spacing = _spacing(comm, x[:n_owned], xi)
    U = dolfinx.fem.Function(Vc, name="e_i")
    at = np.flatnonzero(np.linalg.norm(x - xi, axis=1) < 1e-10 * max(1.0, np.abs(xi).max()))
    U.x.array.reshape(-1, bs)[at, component] = 1.0  # owned and ghost copies alike
    phi = CoarseSolution(space, U).reconstruct()
    phi.name = "phi_i"
    hat = interpolate_coarse(U, phi.function_space, "N_i")
    return BasisFunction(phi, hat, xi, spacing, component, space.name)


def _spacing(comm: MPI.Comm, x: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Per axis, the signed offset from ``xi`` to the nearest point on the axis' line.

    Among the points ``x`` of all ranks that differ from ``xi`` in that coordinate only;
    positive on a tie, 0 if there is none.
    """
    tol = 1e-10 * max(1.0, float(np.abs(xi).max()))
    out = np.zeros(len(xi))
    for d in range(len(xi)):
        others = np.delete(np.arange(len(xi)), d)
        line = np.all(np.abs(x[:, others] - xi[others]) < tol, axis=1)
        offsets = x[line, d] - xi[d]
        offsets = offsets[np.abs(offsets) > tol]
        found = [o for part in comm.allgather(offsets.tolist()) for o in part]
        if found:
            out[d] = min(found, key=lambda o: (abs(o), -o))
    return out


def plot_basis_function(path_png: str | Path, basis: BasisFunction, *,
                        title: str | None = None,
                        coarse_mesh: dolfinx.mesh.Mesh | None = None) -> bool:
    r"""Draw a multiscale basis function, the coarse hat and a section through both.

    Panels (2D): :math:`\phi_i` and :math:`N_i` in one colour range around their supports
    (with the coarse mesh drawn over them when given), and both along a horizontal line
    halfway between :math:`x_i` and the next row of coarse vertices, where :math:`\phi_i`
    follows the oscillations of the coefficient and :math:`N_i` is linear. In 1D, one
    panel with the two curves. Collective; rank 0 writes the PNG.

    Args:
        path_png: output file.
        basis: from :func:`basis_function`.
        title: figure title (default: the method and the vertex).
        coarse_mesh: the coarse mesh, drawn as thin lines (e.g. ``hierarchy.coarse``).

    Returns:
        True (the PNG was written).
    """
    V = basis.phi.function_space
    grid = _Grid(V)
    comp = basis.component if V.dofmap.index_map_bs > 1 else None
    v_phi, v_hat = grid.values(basis.phi, comp), grid.values(basis.hat, comp)
    edges = _coarse_edges(coarse_mesh) if coarse_mesh is not None and grid.dim == 2 else None
    xi = basis.vertex
    suffix = f"[{basis.component}]" if comp is not None else ""
    where = ", ".join(f"{c:.4g}" for c in xi)
    heading = title or f"{basis.method}: basis function of the coarse vertex ({where})"

    def draw() -> None:
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        assert v_phi is not None and v_hat is not None and grid.points is not None
        pts = grid.points[:, :2]
        two_d = grid.dim == 2
        fig = Figure(figsize=(15, 4.6) if two_d else (8, 3.8))
        fig.subplots_adjust(left=0.04 if two_d else 0.1, right=0.97, bottom=0.12, top=0.82,
                            wspace=0.32)
        axes: Any = fig.subplots(1, 3, squeeze=False)[0] if two_d else [fig.subplots()]
        if two_d:
            # the window: where |phi_i| > 1e-3 max |phi_i| or N_i > 0, with a margin
            support = (np.abs(v_phi) > 1e-3 * np.abs(v_phi).max()) | (v_hat > 1e-12)
            lo, hi = pts[support].min(axis=0), pts[support].max(axis=0)
            margin = 0.25 * (hi - lo)
            window = (np.maximum(lo - margin, pts.min(axis=0)),
                      np.minimum(hi + margin, pts.max(axis=0)))
            clim, cmap, norm, lines = _range(v_phi, v_hat), "viridis", None, "w"
            if clim[0] < -1e-3 * clim[1]:  # negative lobes (LOD, oversampling): blue
                from matplotlib.colors import TwoSlopeNorm

                cmap, norm, lines = "RdBu_r", TwoSlopeNorm(0.0, clim[0], clim[1]), "0.4"
            for ax, v, name, what in ((axes[0], v_phi, f"φ_i{suffix}", basis.method),
                                      (axes[1], v_hat, f"N_i{suffix}", "coarse P1/Q1")):
                _panel(fig, ax, grid, v, f"{name} ({what})", clim, cmap, name, window, norm)
                if edges is not None:
                    ax.add_collection(LineCollection(list(edges), colors=lines, linewidths=0.5,
                                                     alpha=0.6))
                ax.plot(xi[0], xi[1], "r+", ms=10)
                ax.set_xlim(window[0][0], window[1][0])
                ax.set_ylim(window[0][1], window[1][1])
            # the section: halfway between x_i and the next row of coarse vertices
            y = xi[1] + 0.5 * basis.spacing[1]
            for ax in axes[:2]:
                ax.axhline(y, color=lines, lw=0.8, ls="--")
            xs = np.linspace(window[0][0], window[1][0], 800)
            curves = grid.section(y, xs, [v_phi, v_hat])
        else:
            order = np.argsort(pts[:, 0], kind="stable")
            xs, curves = pts[order, 0], [v_phi[order], v_hat[order]]
        section = axes[-1]
        for v, name, style in zip(curves, ("φ_i", "N_i"), ("-", "--")):
            section.plot(xs, v, style, lw=1.3, label=f"{name}{suffix}")
        section.axhline(0.0, color="0.6", lw=0.6)
        section.axvline(xi[0], color="r", lw=0.6, ls=":")
        if two_d:
            section.set_xlim(window[0][0], window[1][0])
        section.set_xlabel("x")
        section.set_ylabel("value")
        section.set_title(f"section y = {y:.4g}" if two_d else "basis functions", fontsize=10)
        section.legend(fontsize=9)
        section.grid(alpha=0.3)
        fig.suptitle(heading, fontsize=11)
        _save(fig, Path(path_png))

    _on_rank0(V.mesh.comm, draw)
    return True
