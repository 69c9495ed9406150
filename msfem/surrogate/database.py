r"""The offline RVE database: micro responses over a design of macro gradients, in HDF5.

For every sample :math:`G_s` of a space-filling design over the box
:math:`[G^-, G^+] \subset \mathbb R^m` (m = d for diffusion, d² for mechanics, the
displacement gradient :math:`H = F - I` row by row) the periodic RVE problem of
:class:`msfem.fe2.RVE` is solved from a zero fluctuation, and its flux / first
Piola--Kirchhoff stress :math:`Q_s = \langle q\rangle` and consistent tangent
:math:`C_s = \partial Q/\partial G` are stored. Sample 0 is the centre of the box; the
others are a scrambled Sobol' sequence (nested: a longer design extends a shorter one) or
a Latin hypercube (scipy.stats.qmc), scaled to the box.

File layout (h5py, one file)::

    /G (n, m)  /Q (n, m)  /C (n, m, m)   float64
    /done (n,) uint8       1 once the row holds a converged RVE response
    /source (n,) uint8     0 design, 1 added by active learning
    /iterations (n,) int32 micro Newton iterations
    attrs: format = "msfem-rve-database", version, fingerprint (JSON), fingerprint_sha256

The *fingerprint* is everything the responses depend on -- the micro law and its
parameters, the space dimension and cell type, the RVE discretisation and tolerances, the
design box -- and a database is only ever extended or read by a run with the same one.

The build is collective: the missing rows are dealt round-robin over the ranks, each rank
solves its share on ``COMM_SELF``, and after every round rank 0 writes the finished rows
(values first, then their ``done`` flags) and flushes. A killed build therefore resumes
where it stopped; since every sample starts from a zero fluctuation its response does
not depend on the rank or the order, and the resumed file equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
from mpi4py import MPI
from scipy.stats import qmc

from msfem import _runtime
from msfem.fe2.laws import Law, create_law
from msfem.fe2.macro import FE2Parameters
from msfem.fe2.rve import RVE

__all__ = ["DatabaseError", "Design", "RVEDatabase", "build_database", "micro_fingerprint"]

FORMAT = "msfem-rve-database"
VERSION = 1
logger = _runtime.logger


class DatabaseError(ValueError):
    """A database that cannot be used: missing, corrupt, empty or built for another law."""


class Design(pydantic.BaseModel):
    """The sampled box of macro gradients and the design filling it.

    Attributes:
        samples: rows of the design (the box centre and ``samples - 1`` design points).
        design: ``"sobol"`` (scrambled, nested: more samples extend a database) or
            ``"latin-hypercube"``.
        lower: lower corner of the box of G (one number for every component, or m).
        upper: upper corner of the box of G.
        seed: seed of the scrambling / the hypercube.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    samples: int = pydantic.Field(32, ge=2)
    design: Literal["sobol", "latin-hypercube"] = "sobol"
    lower: float | list[float] = -1.0
    upper: float | list[float] = 1.0
    seed: int = pydantic.Field(0, ge=0)

    def box(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The corners (m,), checked: m numbers each, lower < upper."""
        lo, hi = (np.broadcast_to(np.asarray(v, dtype=float), (m,)).copy()
                  if np.size(v) in (1, m) else None for v in (self.lower, self.upper))
        if lo is None or hi is None:
            raise ValueError(f"the sampling box needs 1 or {m} numbers per corner (lower = "
                             f"{self.lower}, upper = {self.upper})")
        if not np.all(hi > lo):
            raise ValueError(f"empty sampling box: lower = {lo.tolist()} must be below upper "
                             f"= {hi.tolist()} in every component")
        return lo, hi

    def points(self, m: int, n: int | None = None) -> np.ndarray:
        """The first ``n`` (default ``samples``) design points, shape (n, m)."""
        n = self.samples if n is None else n
        lo, hi = self.box(m)
        if self.design == "sobol":
            with warnings.catch_warnings():  # balance needs powers of 2: not required here
                warnings.simplefilter("ignore", UserWarning)
                unit = qmc.Sobol(m, scramble=True, seed=self.seed).random(max(n - 1, 0))
        else:
            unit = qmc.LatinHypercube(m, seed=self.seed).random(max(n - 1, 0))
        return np.vstack([(lo + hi) / 2, lo + unit * (hi - lo)])[:n]


def micro_fingerprint(law: Law, dim: int, cell_type: str, micro: dict[str, Any],
                      design: Design) -> dict[str, Any]:
    """What the stored responses depend on (JSON types)."""
    lo, hi = design.box(_m(law, dim))
    return json.loads(json.dumps({
        "law": law.describe(), "dim": dim, "cell": cell_type, "micro": micro,
        "design": {"kind": design.design, "lower": lo.tolist(), "upper": hi.tolist(),
                   "seed": design.seed}}))


def _m(law: Law, dim: int) -> int:
    return int(np.prod(law.gradient_shape(dim)))


def _sha(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("the RVE database needs h5py: pip install h5py") from err
    return h5py


@dataclass
class RVEDatabase:
    """The finished rows of a database file (read on every rank).

    Attributes:
        path: the file.
        fingerprint: the law, RVE and design it was built for.
        G, Q, C: macro gradients (n, m), responses (n, m), tangents (n, m, m).
        source: 0 design, 1 active learning (n,).
    """

    path: Path
    fingerprint: dict[str, Any]
    G: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    source: np.ndarray

    @property
    def law(self) -> Law:
        """The micro law the database was built for."""
        desc = dict(self.fingerprint["law"])
        return create_law(desc.pop("law"), desc)

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled box of G."""
        d = self.fingerprint["design"]
        return np.array(d["lower"]), np.array(d["upper"])

    @classmethod
    def read(cls, path: str | Path, comm: MPI.Comm = MPI.COMM_WORLD,
             expect: dict[str, Any] | None = None) -> RVEDatabase:
        """Read the finished rows on rank 0 and broadcast them (collective).

        Raises:
            DatabaseError: no such file, not an msfem RVE database, no finished row, or
                (``expect``) a fingerprint that differs -- naming what differs.
        """
        path = Path(path)
        out: Any = None
        with _runtime.collective(comm):
            if comm.rank == 0:
                with _open(path, "r") as f:
                    fp = _check_format(f, path)
                    if expect is not None:
                        _check_fingerprint(fp, expect, path)
                    done = f["done"][:].astype(bool)
                    if not done.any():
                        raise DatabaseError(f"RVE database {str(path)!r} has no finished "
                                            f"sample: run 'msfem surrogate build' first")
                    out = (fp, f["G"][:][done], f["Q"][:][done], f["C"][:][done],
                           f["source"][:][done])
        fp, G, Q, C, source = comm.bcast(out, root=0)
        return cls(path=path, fingerprint=fp, G=G, Q=Q, C=C, source=source)

    def append(self, G: np.ndarray, Q: np.ndarray, C: np.ndarray,
               comm: MPI.Comm = MPI.COMM_WORLD, iterations: Sequence[int] | None = None,
               source: int = 1) -> None:
        """Add finished rows (the same on every rank) to the file and to this object."""
        n = len(G)
        if n == 0:
            return
        its = np.zeros(n, dtype=np.int32) if iterations is None else np.asarray(iterations)
        with _runtime.collective(comm):
            if comm.rank == 0:
                with _open(self.path, "r+") as f:
                    start = len(f["G"])
                    _resize(f, start + n)
                    _write_rows(f, np.arange(start, start + n), G, Q, C, its,
                                np.full(n, source, dtype=np.uint8))
        self.G, self.Q = np.vstack([self.G, G]), np.vstack([self.Q, Q])
        self.C = np.concatenate([self.C, C])
        self.source = np.concatenate([self.source, np.full(n, source, dtype=np.uint8)])


def _open(path: Path, mode: str):
    h5py = _h5py()
    if mode == "r" and not path.is_file():
        raise DatabaseError(f"no RVE database at {str(path)!r}: run 'msfem surrogate build' "
                            f"to create it")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise DatabaseError(f"{str(path)!r} is not a readable HDF5 file ({err}); delete it "
                            f"and build the database again") from None


def _check_format(f, path: Path) -> dict[str, Any]:
    try:
        ok = f.attrs.get("format") == FORMAT and all(k in f for k in ("G", "Q", "C", "done",
                                                                       "source"))
        fp = json.loads(f.attrs["fingerprint"]) if ok else None
    except (KeyError, ValueError, OSError):
        fp = None
    if not isinstance(fp, dict):
        raise DatabaseError(f"{str(path)!r} is not an msfem RVE database (or it is "
                            f"corrupt); delete it and build the database again")
    return fp


def _check_fingerprint(found: dict[str, Any], expect: dict[str, Any], path: Path) -> None:
    if _sha(found) == _sha(expect):
        return
    diffs = [k for k in sorted(set(found) | set(expect)) if found.get(k) != expect.get(k)]
    detail = "; ".join(f"{k}: database {json.dumps(found.get(k))}, config "
                       f"{json.dumps(expect.get(k))}" for k in diffs)
    raise DatabaseError(f"RVE database {str(path)!r} was built for another micro problem "
                        f"({detail}); build a new database for this configuration")


def _create(path: Path, m: int, fingerprint: dict[str, Any]):
    h5py = _h5py()
    path.parent.mkdir(parents=True, exist_ok=True)
    f = h5py.File(path, "w")
    for name, shape, dtype in (("G", (m,), "f8"), ("Q", (m,), "f8"), ("C", (m, m), "f8"),
                               ("done", (), "u1"), ("source", (), "u1"),
                               ("iterations", (), "i4")):
        f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                         chunks=(64, *shape))
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    f.attrs["fingerprint_sha256"] = _sha(fingerprint)
    return f


def _resize(f, n: int) -> None:
    for name in ("G", "Q", "C", "done", "source", "iterations"):
        f[name].resize(n, axis=0)


def _write_rows(f, rows: np.ndarray, G, Q, C, iterations, source) -> None:
    """Values first, the ``done`` flags last, then flush: a kill leaves rows unfinished."""
    order = np.argsort(rows)
    rows = rows[order]
    for name, values in (("G", G), ("Q", Q), ("C", C), ("iterations", iterations),
                         ("source", source)):
        f[name][rows] = np.asarray(values)[order]
    f["done"][rows] = 1
    f.flush()


def build_database(path: str | Path, law: Law | str, dim: int, design: Design, *,
                   cell_type: str = "quadrilateral", micro: FE2Parameters | None = None,
                   law_parameters: dict[str, Any] | None = None,
                   comm: MPI.Comm = MPI.COMM_WORLD, round_size: int = 8,
                   stop_after: int | None = None) -> Path:
    """Build (or resume, or extend) the database at ``path``; collective.

    Args:
        path: the HDF5 file (created; resumed when it holds the same fingerprint).
        law: the micro law (or its name, with ``law_parameters``).
        dim: space dimension of the macro problem.
        design: the sampled box and design (:class:`Design`).
        cell_type: the micro cell type.
        micro: the RVE's discretisation and tolerances (the ``micro_*`` fields of
            :class:`msfem.fe2.FE2Parameters`; default theirs).
        law_parameters: parameters of a law given by name.
        comm: the ranks sharing the samples.
        round_size: samples per rank between two writes.
        stop_after: compute at most this many of the missing samples (a deliberate
            interruption, for tests and for splitting a long build).

    Raises:
        DatabaseError: the file is not a database, or was built for another fingerprint,
            or another (non-nested) design.
        MicroSolverError: a sample's RVE problem failed (naming the sample and G).
    """
    path = Path(path)
    law = create_law(law, law_parameters) if isinstance(law, str) else law
    m = _m(law, dim)
    p = micro if micro is not None else FE2Parameters()
    micro_cells, quadrature_degree = p.micro_cells, p.micro_quadrature_degree
    rtol, atol, max_iterations = p.micro_rtol, p.micro_atol, p.micro_max_iterations
    micro_keys = {"micro_cells": micro_cells, "quadrature_degree": quadrature_degree,
                  "rtol": rtol, "atol": atol, "max_iterations": max_iterations}
    fingerprint = micro_fingerprint(law, dim, cell_type, micro_keys, design)
    todo: Any = None
    with _runtime.collective(comm):
        if comm.rank == 0:
            todo = _prepare_file(path, m, fingerprint, design)
    todo = comm.bcast(todo, root=0)[:stop_after]
    mine = todo[comm.rank::comm.size]
    rounds = -(-len(todo) // (comm.size * round_size))
    logger.info("surrogate: database %s: %d of %d design samples to compute on %d ranks",
                path, len(todo), design.samples, comm.size)
    rve = RVE(law, dim, cell_type, micro_cells, quadrature_degree=quadrature_degree,
              rtol=rtol, atol=atol, max_iterations=max_iterations) if mine else None
    t0 = time.perf_counter()
    try:
        for r in range(rounds):
            results = []
            with _runtime.collective(comm):
                for row, G in mine[r * round_size:(r + 1) * round_size]:
                    assert rve is not None
                    res = rve.solve(G, what=f"database sample {row} (G = "
                                            f"{np.array2string(G, precision=4)})")
                    results.append((row, G, res.Q, res.C, len(res.residuals) - 1))
            gathered = comm.gather(results, root=0)
            with _runtime.collective(comm):
                if comm.rank == 0:
                    flat = [x for part in gathered or [] for x in part]
                    if flat:
                        rows, Gs, Qs, Cs, its = (np.array([x[k] for x in flat])
                                                 for k in range(5))
                        with _open(path, "r+") as f:
                            _write_rows(f, rows, Gs, Qs, Cs, its,
                                        np.zeros(len(flat), dtype=np.uint8))
            logger.info("surrogate: database round %d/%d written (%.1f s)", r + 1, rounds,
                        time.perf_counter() - t0)
    finally:
        if rve is not None:
            rve.destroy()
    return path


def _prepare_file(path: Path, m: int, fingerprint: dict[str, Any],
                  design: Design) -> list[tuple[int, np.ndarray]]:
    """Rank 0: create or check the file, add the design's new rows; (row, G) to compute."""
    X = design.points(m)
    if path.exists():
        with _open(path, "r+") as f:
            _check_format(f, path)
            _check_fingerprint(json.loads(f.attrs["fingerprint"]), fingerprint, path)
            design_rows = np.flatnonzero(f["source"][:] == 0)  # in design order
            k = min(len(design_rows), len(X))
            if not np.array_equal(f["G"][:][design_rows[:k]], X[:k]):
                raise DatabaseError(f"RVE database {str(path)!r} holds another design "
                                    f"({design.design} designs of different sizes are not "
                                    f"nested); build a new database")
            if len(design_rows) < len(X):  # extend the design (after any active rows)
                n_old = len(f["G"])
                _resize(f, n_old + len(X) - len(design_rows))
                f["G"][n_old:] = X[len(design_rows):]
                f.flush()
            G, done, source = f["G"][:], f["done"][:].astype(bool), f["source"][:]
    else:
        with _create(path, m, fingerprint) as f:
            _resize(f, len(X))
            f["G"][:] = X
            f.flush()
        G, done, source = X, np.zeros(len(X), dtype=bool), np.zeros(len(X), dtype=np.uint8)
    return [(int(i), G[i]) for i in np.flatnonzero(~done & (source == 0))]
