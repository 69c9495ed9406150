r"""The surrogate at the macro points, with active learning: the FE² macro Newton, one law swapped.

:class:`SurrogateMicro` is a :class:`msfem.fe2.macro.MicroModel`: ``FE2(..., micro=
SurrogateMicro(...))`` runs the same macro Newton, load steps, checkpoints and
Hill--Mandel bookkeeping as FE², with the constitutive call :math:`G \mapsto (Q, C)` of
:class:`~msfem.surrogate.SurrogateLaw` instead of an RVE solve.

Before every macro iteration (:meth:`SurrogateMicro.update`, collective) the law is
evaluated at all owned points at once. Where the relative uncertainty exceeds
``tolerance`` (or G leaves the sampled box):

* ``active=True``: the uncertain gradients of all ranks are gathered, ordered (so the
  result does not depend on the partition), thinned to at most ``max_new`` well-separated
  ones, solved with the RVE of the database's fingerprint (round-robin over the ranks),
  appended to the database (source 1) and the law is refitted on rank 0 and broadcast;
  repeated up to ``max_rounds`` times;
* otherwise (or when the rounds are spent): a :class:`SurrogateWarning` on rank 0 says
  how many points extrapolate and by how much -- never silently (once, and again only
  when the uncertainty has doubled; :attr:`SurrogateMicro.max_uncertainty` keeps the
  largest).
"""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
from mpi4py import MPI

from msfem import _runtime
from msfem.fe2.rve import RVE, MicroResult
from msfem.surrogate.database import RVEDatabase
from msfem.surrogate.model import SurrogateLaw

__all__ = ["SurrogateMicro", "SurrogateWarning"]

logger = _runtime.logger


class SurrogateWarning(UserWarning):
    """The surrogate is asked where it is uncertain (outside the data) and does not refine."""


class SurrogateMicro:
    """The learned law as the macro points' constitutive model (module docstring).

    Args:
        law: the fitted :class:`~msfem.surrogate.SurrogateLaw`.
        database: its database (needed for active learning).
        tolerance: largest accepted relative uncertainty.
        active: refine where the uncertainty is above ``tolerance``.
        max_new: RVE solves per refinement round (all ranks).
        max_rounds: refinement rounds per macro iteration.
        comm: the macro communicator.
    """

    size = 0  # no history: the law is a function of G

    def __init__(self, law: SurrogateLaw, database: RVEDatabase | None = None, *,
                 tolerance: float = 1e-2, active: bool = False, max_new: int = 8,
                 max_rounds: int = 4, comm: MPI.Comm = MPI.COMM_WORLD):
        if active and database is None:
            raise ValueError("active learning needs the database (to add RVE solutions)")
        self.law, self.database = law, database
        self.tolerance, self.active = float(tolerance), bool(active)
        self.max_new, self.max_rounds = int(max_new), int(max_rounds)
        self.comm = comm
        self.solves = 0  # RVE solves of active learning, this rank
        self.t_newton = 0.0  # seconds in them (and in refits)
        self.t_evaluate = 0.0  # seconds evaluating the law
        self.max_uncertainty = 0.0  # over every evaluation so far
        self.added = 0  # samples added by active learning (all ranks)
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._rve: RVE | None = None
        self._warned = 0.0  # the largest uncertainty warned about

    # ------------------------------------------------------------------ MicroModel
    def update(self, gradients: np.ndarray, what: str) -> None:
        """Evaluate at all owned points; refine or warn where uncertain (collective)."""
        for round_ in range(self.max_rounds + 1):
            t0 = time.perf_counter()
            Q, C, u = self.law.evaluate(gradients) if len(gradients) else \
                (np.zeros((0, 0)), np.zeros((0, 0, 0)), np.zeros(0))
            self.t_evaluate += time.perf_counter() - t0
            worst = float(self.comm.allreduce(float(u.max(initial=0.0)), op=MPI.MAX))
            uncertain = gradients[u > self.tolerance]
            if worst <= self.tolerance or not self.active or round_ == self.max_rounds or \
                    not self._refine(uncertain, what):
                break
        self._cache = {G.tobytes(): (q, c) for G, q, c in zip(gradients, Q, C)}
        self.max_uncertainty = max(self.max_uncertainty, worst)
        if worst > self.tolerance:
            n = int(self.comm.allreduce(int(np.sum(u > self.tolerance))))
            if self.comm.rank == 0 and worst > 2 * self._warned:  # once, again if it doubles
                self._warned = worst
                where = "lie outside the sampled box" if not np.isfinite(worst) else \
                    f"have relative uncertainty above {self.tolerance:g} (max {worst:.2e})"
                fix = "raise max_rounds / max_new" if self.active else \
                    "enable active learning"
                warnings.warn(SurrogateWarning(
                    f"surrogate: {what}: {n} macro point(s) {where}; the law extrapolates "
                    f"there -- {fix} or widen the sampled box (further warnings only if the "
                    f"uncertainty doubles)"), stacklevel=2)

    def solve(self, G: np.ndarray, w_hat: np.ndarray | None = None,
              what: str = "macro point") -> MicroResult:
        """Q and C at G (from the batch of :meth:`update` when G was in it)."""
        G = np.asarray(G, dtype=float).ravel()
        hit = self._cache.get(G.tobytes())
        if hit is None:
            Q, C, _ = self.law.evaluate(G[None])
            hit = (Q[0], C[0])
        return MicroResult(Q=hit[0], C=hit[1], w=np.zeros(0), residuals=[0.0])

    # ------------------------------------------------------------------ active learning
    def _refine(self, uncertain: np.ndarray, what: str) -> bool:
        """One round: RVE solves at well-separated uncertain points, append, refit."""
        comm, db = self.comm, self.database
        assert db is not None
        everything = np.vstack([g for g in comm.allgather(uncertain) if len(g)] or
                               [np.zeros((0, db.G.shape[1]))])
        if not len(everything):
            return False
        chosen = _separated(everything, self.max_new, db.box)
        mine = chosen[comm.rank::comm.size]
        rve = self.rve
        t0 = time.perf_counter()
        results = []
        with _runtime.collective(comm):
            for k, G in zip(range(comm.rank, len(chosen), comm.size), mine):
                res = rve.solve(G, what=f"active-learning sample {k} ({what})")
                results.append((k, res.Q, res.C, len(res.residuals) - 1))
        self.solves += len(results)
        flat = sorted((x for part in comm.allgather(results) for x in part),
                      key=lambda x: x[0])
        Q = np.array([x[1] for x in flat])
        C = np.array([x[2] for x in flat])
        db.append(chosen, Q, C, comm, iterations=[x[3] for x in flat])
        blob = None
        with _runtime.collective(comm):
            if comm.rank == 0:
                law = self.law
                blob = pickle.dumps(SurrogateLaw.fit(db, law.degree, law.restarts, law.seed))
        self.law = pickle.loads(comm.bcast(blob, root=0))
        self.added += len(chosen)
        self.t_newton += time.perf_counter() - t0
        logger.info("surrogate: %s: %d RVE solves added by active learning (database: %d "
                    "samples)", what, len(chosen), len(db.G))
        return True

    @property
    def rve(self) -> RVE:
        """The RVE of the database's fingerprint (created on first use, this rank)."""
        if self._rve is None:
            assert self.database is not None
            fp = self.database.fingerprint
            mi = fp["micro"]
            self._rve = RVE(self.database.law, int(fp["dim"]), fp["cell"], mi["micro_cells"],
                            quadrature_degree=mi["quadrature_degree"], rtol=mi["rtol"],
                            atol=mi["atol"], max_iterations=mi["max_iterations"])
        return self._rve


def _separated(points: np.ndarray, k: int, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """At most ``k`` of ``points``, greedily far apart (deterministic; order-independent)."""
    lo, hi = box
    scale = np.where(hi > lo, hi - lo, 1.0)
    z, first = np.unique(np.round(points / scale, 12), axis=0, return_index=True)  # sorted
    pts = points[first]
    chosen = [int(np.argmax(np.linalg.norm(z - z.mean(axis=0), axis=1)))]
    dist = np.linalg.norm(z - z[chosen[0]], axis=1)
    while len(chosen) < min(k, len(z)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(z - z[nxt], axis=1))
    return pts[chosen]

