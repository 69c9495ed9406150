import os
import tempfile

import pytest
from mpi4py import MPI

import msfem  # noqa: F401  (imports dolfinx_solver first)


def pytest_configure(config):
    """Under mpirun every rank gets its own pytest base temp directory (no races)."""
    comm = MPI.COMM_WORLD
    if comm.size > 1 and not config.option.basetemp:
        tag = comm.bcast(f"{os.getpid()}", root=0)
        config.option.basetemp = os.path.join(
            tempfile.gettempdir(), f"msfem-pytest-{tag}-rank{comm.rank}")


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size > 1:
        skip = pytest.mark.skip(reason="serial_only: runs in the serial pass of `make test`")
        for item in items:
            if "serial_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def comm():
    return MPI.COMM_WORLD


@pytest.fixture
def shared_tmp(tmp_path):
    """A temporary directory that is the same on every rank (rank 0's tmp_path)."""
    return MPI.COMM_WORLD.bcast(tmp_path, root=0)


@pytest.fixture(scope="module")
def restore_msfem_logging():
    """msfem.cli.main() configures the msfem logger; give later test modules it back."""
    import logging

    logger = logging.getLogger("msfem")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
