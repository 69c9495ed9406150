"""Runtime set-up shared by every module: MPI ordering, rank-0 logging, timers, atomic files.

``import msfem`` imports :mod:`dolfinx_solver` first when it is installed (the
``dolfinx-solver-real`` wheel needs it to load MPI before PETSc); nothing else in msfem
cares how dolfinx was installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

try:  # wheels route: loads MPI/PETSc in the right order
    import dolfinx_solver  # noqa: F401
except ImportError:  # conda-forge / spack route
    pass

from mpi4py import MPI

logger = logging.getLogger("msfem")


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return MPI.COMM_WORLD.rank == 0


def configure_logging(level: int = logging.INFO) -> None:
    """Send msfem log records of rank 0 to stderr (called by the CLI, not at import)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[msfem] %(message)s"))
    handler.addFilter(_RankZeroFilter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def atomic_write_text(path: str | Path, text: str, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``text`` to ``path`` on rank 0 through a temporary file and a rename.

    A run killed half-way therefore never leaves a truncated file behind.
    """
    if comm.rank == 0:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    comm.barrier()


def atomic_write_json(path: str | Path, data: Any, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``data`` as indented JSON atomically on rank 0 (see :func:`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", comm)


@contextlib.contextmanager
def atomic_directory(path: str | Path, comm: MPI.Comm = MPI.COMM_WORLD) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only on success.

    Collective. Writers (also collective dolfinx writers such as VTX) put their files in
    the yielded directory; if the block raises, the partial output is deleted and
    ``path`` keeps its previous content.
    """
    import shutil

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    if comm.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    comm.barrier()
    try:
        yield tmp
    except BaseException:
        comm.barrier()
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    comm.barrier()
    if comm.rank == 0:
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    comm.barrier()
