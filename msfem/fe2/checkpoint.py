r"""FE² checkpoints: the state after a converged load step, written atomically.

A checkpoint directory holds ``state.json`` (step index, number of ranks, the run's
signature -- law, mesh, steps, micro cells -- and the history of the completed steps) and
one ``rank<r>.npz`` per rank (the owned macro dofs and their values, the owned macro
cells, the reduced fluctuation :math:`\hat w` of every macro point of those cells). It is
replaced as a whole through :func:`msfem._runtime.atomic_directory`, so a run that fails or
is killed keeps the checkpoint of its last good step. A restart needs the same number of
ranks (the macro partition and the owned points must match).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from msfem import _runtime

__all__ = ["Checkpoint", "read_checkpoint", "write_checkpoint"]


@dataclass
class Checkpoint:
    """The state of one rank after a converged load step.

    Attributes:
        step: the last converged load step (1-based).
        dofs: global indices of the owned macro dofs.
        values: the macro solution at ``dofs``.
        cells: lattice ids of the owned macro cells.
        history: reduced fluctuations, one row per macro point of the owned cells.
        state: the contents of ``state.json`` (signature, step history).
    """

    step: int
    dofs: np.ndarray
    values: np.ndarray
    cells: np.ndarray
    history: np.ndarray
    state: dict[str, Any]


def write_checkpoint(directory: str | Path, checkpoint: Checkpoint,
                     comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Replace ``directory`` by the checkpoint (collective, atomic)."""
    directory = Path(directory)
    with _runtime.atomic_directory(directory, comm) as tmp:
        with _runtime.collective(comm):
            np.savez(tmp / f"rank{comm.rank}.npz", step=checkpoint.step, dofs=checkpoint.dofs,
                     values=checkpoint.values, cells=checkpoint.cells,
                     history=checkpoint.history)
        state = dict(checkpoint.state, step=checkpoint.step, ranks=comm.size)
        _runtime.atomic_write_text(tmp / "state.json", json.dumps(state, indent=1) + "\n",
                                   comm)


def read_checkpoint(directory: str | Path, signature: dict[str, Any],
                    comm: MPI.Comm = MPI.COMM_WORLD) -> Checkpoint:
    """Read this rank's part of the checkpoint in ``directory`` (collective checks).

    Raises:
        ValueError: no checkpoint, written by another number of ranks, or by a run with
            another signature (law, mesh, steps, ...) -- on every rank.
    """
    directory = Path(directory)
    with _runtime.collective(comm):
        path = directory / "state.json"
        if not path.is_file():
            raise ValueError(f"no FE2 checkpoint in {str(directory)!r} (nothing to restart "
                             f"from); run without restart")
        state = json.loads(path.read_text())
        if state.get("ranks") != comm.size:
            raise ValueError(f"the FE2 checkpoint in {str(directory)!r} was written by "
                             f"{state.get('ranks')} ranks; restart it on "
                             f"{state.get('ranks')} ranks, not {comm.size}")
        saved = state.get("signature", {})
        changed = sorted(k for k in set(saved) | set(signature)
                         if saved.get(k) != signature.get(k))
        if changed:
            raise ValueError(f"the FE2 checkpoint in {str(directory)!r} belongs to another "
                             f"run: {', '.join(f'{k} = {saved.get(k)!r} there, '
                                               f'{signature.get(k)!r} here' for k in changed)}")
        with np.load(directory / f"rank{comm.rank}.npz") as data:
            part = {k: data[k] for k in data.files}
        if int(part["step"]) != int(state["step"]):
            raise ValueError(f"the FE2 checkpoint in {str(directory)!r} is inconsistent "
                             f"(rank {comm.rank} holds step {int(part['step'])}, state.json "
                             f"step {state['step']})")
    return Checkpoint(step=int(state["step"]), dofs=part["dofs"], values=part["values"],
                      cells=part["cells"], history=part["history"], state=state)
