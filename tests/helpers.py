"""Small shared helpers for the tests."""

from pathlib import Path

import numpy as np
from mpi4py import MPI

#: Hou & Wu (1997) eq. 4.1 at toy size: 4 x 4 coarse cells of 8 x 8 fine cells, eps = 1/4
#: (resolved: 8 fine cells per eps).
TOY_CONFIG = """
[mesh]
N = 4
M = 8

[coefficient]
type = "hou-wu"
eps = 0.25
"""


def fitted_rate(h, err):
    """Slope of log(err) against log(h) (least squares)."""
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])


def write_text_config(directory: Path, text: str, name: str = "case.toml") -> Path:
    """Write a config file on rank 0 into a directory shared by all ranks."""
    path = directory / name
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(text)
    MPI.COMM_WORLD.barrier()
    return path
