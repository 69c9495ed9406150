"""Coarse meshes from gmsh: a ``.msh`` file or a geometry script in ``meshes/``.

A script defines ``build(gmsh) -> gdim`` that adds a meshed model with physical groups
to the current gmsh model. The mesh is created on rank 0 and distributed by dolfinx.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dolfinx
import dolfinx.io.gmsh
from mpi4py import MPI

from msfem import _runtime


def mesh_surfaces(gmsh, size: float) -> int:
    """Finish a 2D geometry script and return its geometric dimension (2).

    Tags all surfaces as physical group 1 and meshes with characteristic length ``size``.
    """
    gmsh.model.occ.synchronize()
    surfaces = [s[1] for s in gmsh.model.getEntities(2)]
    gmsh.model.addPhysicalGroup(2, surfaces, 1)
    gmsh.option.setNumber("Mesh.CharacteristicLengthMax", size)
    gmsh.model.mesh.generate(2)
    return 2


def read_coarse(path: str | Path, comm: MPI.Comm = MPI.COMM_WORLD) -> dolfinx.mesh.Mesh:
    """The coarse dolfinx mesh from ``path`` (``.msh`` or a ``.py`` geometry script)."""
    import gmsh

    path = Path(path)
    with _runtime.collective(comm):  # every rank sees the same file error
        if not path.exists():
            raise FileNotFoundError(f"gmsh file {str(path)!r} not found")
        if path.suffix not in (".msh", ".py"):
            raise ValueError(f"{path}: expected a .msh file or a .py geometry script")
    if path.suffix == ".msh":
        gdim = 2
        return dolfinx.io.gmsh.read_from_msh(str(path), comm, 0, gdim=gdim).mesh
    initialized = gmsh.isInitialized()
    if not initialized:
        gmsh.initialize(interruptible=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add(path.stem)
    gdim = 2
    try:
        # the script runs on rank 0 only; its failure is raised on every rank
        with _runtime.collective(comm):
            if comm.rank == 0:
                gdim = _run_script(path, gmsh)
        gdim = comm.bcast(gdim, root=0)
        mesh = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=gdim).mesh
    finally:
        gmsh.model.remove()
        if not initialized:
            gmsh.finalize()
    return mesh


def _run_script(path: Path, gmsh) -> int:
    """Import a geometry script and run its ``build(gmsh)``; return the geometric dimension.

    Raises:
        ValueError: the script cannot be imported, has no ``build``, or ``build`` raises
            (the message names the script and the original error).
    """
    spec = importlib.util.spec_from_file_location(f"msfem_mesh_{path.stem}", path)
    if spec is None or spec.loader is None:  # not for a .py file, but Optional in typeshed
        raise ValueError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ValueError(f"gmsh script {str(path)!r} failed on import: "
                         f"{type(err).__name__}: {err}") from err
    if not hasattr(module, "build"):
        raise ValueError(f"{path}: a geometry script must define build(gmsh) -> gdim")
    try:
        gdim = module.build(gmsh)
    except Exception as err:
        raise ValueError(f"gmsh script {str(path)!r}: build() raised "
                         f"{type(err).__name__}: {err}") from err
    if gdim not in (1, 2, 3):
        raise ValueError(f"gmsh script {str(path)!r}: build() returned {gdim!r}, not the "
                         f"geometric dimension 1, 2 or 3")
    return int(gdim)
