r"""The FE² macro problem: Newton with load stepping over micro problems at Gauss points.

Macro space :math:`V_H`: P1/Q1 on the coarse mesh of a
:class:`~msfem.mesh.StructuredHierarchy` (:class:`~msfem.coarse_space.LagrangeCoarseSpace`,
distributed). At the macro quadrature points :math:`x_{K,l}` (weights :math:`\omega_{K,l}`,
:func:`msfem.methods.fe_hmm.macro_quadrature`) the macro gradient
:math:`G_l(U) = B_l U_K` (:math:`B_l` from :func:`~msfem.methods.fe_hmm.shape_functions`;
for mechanics :math:`H_{ij} = \sum_a U_{a,i}\,\partial_j N_a`) drives one RVE problem
(:class:`~msfem.fe2.rve.RVE`), which returns the flux :math:`Q_l` and the consistent
tangent :math:`C_l`. The macro residual and tangent are

.. math::
    \mathcal R(U) = \sum_K \sum_l \omega_{K,l} B_l^T Q(G_l(U)) - \lambda_n F, \qquad
    \mathcal K(U) = \sum_K \sum_l \omega_{K,l} B_l^T C_l B_l,

:math:`F_a = \sum_l \omega_l f(x_l) N_a(x_l)` the body load, assembled with PETSc's COO
assembly on the distributed macro dofs. Load step n = 1..N scales the load and the
Dirichlet data by :math:`\lambda_n = n/N`; Newton solves
:math:`\mathcal K\,\delta U = -\mathcal R` with :math:`\delta U = \lambda_n g - U` on the
Dirichlet dofs (the data enter as an increment of the first iteration, then
:math:`\delta U = 0` there) until the residual on the free dofs satisfies
:math:`\|\mathcal R\| \le \mathrm{atol} + \mathrm{rtol}\max(\|F_{int}\|, \lambda_n\|F\|)`
(:math:`F_{int}` the full internal force, reactions included).

Feyel and Chaboche, Comput. Methods Appl. Mech. Engrg. 183 (2000); Kouznetsova,
Brekelmans and Baaijens, Comput. Mech. 27 (2001).

Each rank solves the micro problems of its own macro cells on ``COMM_SELF`` (one RVE,
forms compiled once, the factorisation's symbolic part reused); a micro failure on any
rank is raised on every rank (:func:`msfem._runtime.collective`). Every macro point keeps
its converged fluctuation as history (the warm start of the next iteration and step);
after each converged step the macro solution, the step and the histories are written to
the checkpoint (:mod:`msfem.fe2.checkpoint`), from which ``restart=True`` continues.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import dolfinx
import numpy as np
import pydantic
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from msfem import _runtime, solvers
from msfem.coarse_space import LagrangeCoarseSpace
from msfem.coefficients import Field
from msfem.fe2.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from msfem.fe2.laws import Law, create_law
from msfem.fe2.rve import RVE, MicroResult
from msfem.mesh import StructuredHierarchy
from msfem.methods.fe_hmm import field_values, macro_quadrature, shape_functions
from msfem.problem import Dirichlet, Problem
from msfem.transfer import CoarseGather

__all__ = ["FE2", "FE2Parameters", "FE2Result", "MicroModel", "TangentError"]

logger = _runtime.logger

PetscValue = str | int | float | bool


class TangentError(solvers.SolverError):
    """The homogenized tangent at a macro point is not positive (not elliptic)."""


class MicroModel(Protocol):
    """What the macro Newton asks at its points: an :class:`~msfem.fe2.rve.RVE` or a surrogate.

    Attributes:
        size: length of a point's history vector (the RVE's reduced fluctuation).
        solves: micro (RVE) problems solved so far on this rank.
        t_newton: seconds spent in them on this rank.
    """

    size: int
    solves: int
    t_newton: float

    def solve(self, G: np.ndarray, w_hat: np.ndarray | None = None,
              what: str = "micro problem") -> MicroResult:
        """Flux/stress Q, tangent C = dQ/dG (and the new history) at macro gradient G."""
        ...

    def update(self, gradients: np.ndarray, what: str) -> None:
        """Collective, once per macro iteration, with the owned points' gradients (m columns)."""
        ...


class FE2Parameters(pydantic.BaseModel):
    """Parameters of :class:`FE2` (unknown keys refused).

    Attributes:
        micro_cells: micro cells per direction of the unit cell (h = 1/micro_cells).
        steps: load steps (load and Dirichlet data scaled by n/steps).
        quadrature: macro rule: ``"gauss"`` (2^d points; boxes) or ``"centroid"``;
            default Gauss on boxes, centroid on simplices.
        micro_quadrature_degree: quadrature degree of the micro integrals.
        macro_rtol: relative tolerance of the macro Newton.
        macro_atol: absolute tolerance of the macro Newton.
        macro_max_iterations: macro Newton iterations per load step.
        micro_rtol: relative tolerance of the micro Newton.
        micro_atol: absolute tolerance of the micro Newton.
        micro_max_iterations: micro Newton iterations per micro solve.
        hill_mandel_tolerance: bound of the Hill--Mandel defect relative to |Q||G|.
        macro_solver: PETSc options of the macro solve (prefix ``msfem_fe2_macro_``;
            default MUMPS LU).
        micro_solver: PETSc options of the micro factorisations (prefix
            ``msfem_fe2_micro_``; default PETSc's LU).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    micro_cells: int = pydantic.Field(16, ge=2)
    steps: int = pydantic.Field(1, ge=1)
    quadrature: Literal["gauss", "centroid"] | None = None
    micro_quadrature_degree: int = pydantic.Field(2, ge=1)
    macro_rtol: float = pydantic.Field(1e-10, gt=0.0, lt=1.0)
    macro_atol: float = pydantic.Field(1e-13, ge=0.0)
    macro_max_iterations: int = pydantic.Field(20, ge=1)
    micro_rtol: float = pydantic.Field(1e-11, gt=0.0, lt=1.0)
    micro_atol: float = pydantic.Field(1e-13, ge=0.0)
    micro_max_iterations: int = pydantic.Field(30, ge=1)
    hill_mandel_tolerance: float = pydantic.Field(1e-10, gt=0.0)
    macro_solver: dict[str, PetscValue] = pydantic.Field(default_factory=dict)
    micro_solver: dict[str, PetscValue] = pydantic.Field(default_factory=dict)


@dataclass
class FE2Result:
    """The macro solution and the record of the run.

    Attributes:
        U: the macro solution (a dolfinx Function on the coarse P1/Q1 space).
        steps: one record per load step: ``load_factor``, ``residuals`` (free-dof macro
            residual norm per Newton iterate), ``micro_iterations`` (max per macro
            iteration), ``hill_mandel`` (max relative defect), ``timings`` (per macro
            iteration: ``micro``, ``tangent``, ``macro_solve`` seconds, max over ranks).
        hill_mandel_max: max relative Hill--Mandel defect over all points and steps.
        micro_solves: micro problems solved by this call (all ranks).
        restarted_from: the checkpoint step the run continued from (``None``: fresh).
    """

    U: dolfinx.fem.Function
    steps: list[dict[str, Any]] = field(default_factory=list)
    hill_mandel_max: float = 0.0
    micro_solves: int = 0
    restarted_from: int | None = None

    def timings(self) -> dict[str, float]:
        """Total seconds in micro solves, tangents and macro solves (max over ranks)."""
        out = {"micro": 0.0, "tangent": 0.0, "macro_solve": 0.0}
        for s in self.steps:
            for t in s["timings"]:
                for k in out:
                    out[k] += t[k]
        return out


class FE2:
    r"""FE²: the macro Newton of the module docstring over RVE problems at Gauss points.

    Args:
        hierarchy: a :class:`~msfem.mesh.StructuredHierarchy`; its coarse mesh is the
            macro mesh (the fine mesh is only used by a direct numerical simulation).
        law: a :class:`~msfem.fe2.laws.Law` or the name of a registered one.
        law_parameters: parameters of a law given by name.
        load: body load f (number, vector or :class:`~msfem.coefficients.Field`), scaled
            by the load factor.
        dirichlet: Dirichlet conditions (default u = 0 on all of ∂Ω), scaled by the load
            factor.
        params: :class:`FE2Parameters`, or keyword arguments to build them.
        micro: the constitutive model asked at the macro points (:class:`MicroModel`);
            default: this rank's :class:`~msfem.fe2.rve.RVE` of ``law`` (FE²). A
            surrogate (:class:`msfem.surrogate.SurrogateMicro`) turns the same macro
            Newton into hierarchical coupling.

    Example:
        >>> fe2 = FE2(h, "nonlinear-diffusion", law_parameters={"beta": 1.0},
        ...           load=1.0, steps=2)  # doctest: +SKIP
        >>> result = fe2.solve(checkpoint="run/checkpoint")  # doctest: +SKIP
    """

    def __init__(self, hierarchy: StructuredHierarchy, law: Law | str, *,
                 law_parameters: Mapping[str, Any] | None = None,
                 load: Field | float | Sequence[float] = 0.0,
                 dirichlet: Sequence[Dirichlet] = (Dirichlet(0.0),),
                 params: FE2Parameters | None = None, micro: MicroModel | None = None,
                 **kwargs: Any):
        if not isinstance(hierarchy, StructuredHierarchy):
            raise ValueError("FE2 needs a StructuredHierarchy (its coarse mesh is the macro "
                             "mesh)")
        self.law = create_law(law, law_parameters) if isinstance(law, str) else law
        self.params = params if params is not None else FE2Parameters(**kwargs)
        h = self.hierarchy = hierarchy
        d = self.dim = h.dim
        if self.law.kind == "mechanics" and d == 1:
            raise ValueError(f"micro law {self.law.name!r} needs a 2D or 3D domain")
        rule = self.params.quadrature or ("gauss" if h.cell_type in (
            "interval", "quadrilateral", "hexahedron") else "centroid")
        if rule == "gauss" and h.cell_type not in ("interval", "quadrilateral", "hexahedron"):
            raise ValueError(f"quadrature = 'gauss' is the tensor rule of boxes; use "
                             f"'centroid' on {h.cell_type} cells")
        self.rule = rule
        shape = self.law.value_shape(d)
        if shape and not isinstance(load, Field) and np.ndim(load) == 0 and load == 0:
            load = [0.0] * d  # no body force
        self.problem = Problem(
            bilinear=lambda u, v: ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
            source=load, shape=shape, dirichlet=tuple(dirichlet), name="fe2-macro")
        self.load = load
        self.space = LagrangeCoarseSpace(h, self.problem)
        self.bs = self.space.bs
        self.comm = h.comm
        self.local_cells, self.cells = h.owned_coarse_cells
        self.cell_dofs = self.space.cell_dofs(self.local_cells, self.cells)
        self._setup_points()
        self._rve: RVE | None = None
        self._micro = micro

    # ------------------------------------------------------------------ set-up
    def _setup_points(self) -> None:
        """Macro points of the owned cells: coordinates, weights, B matrices, loads."""
        h, d, bs = self.hierarchy, self.dim, self.bs
        m = d * bs  # entries of G (diffusion: d; mechanics: d x d)
        self.points: list[np.ndarray] = []
        self.B: list[list[np.ndarray]] = []
        self.weights: list[np.ndarray] = []
        loads = []
        for cell in self.cells:
            vertices = h.coarse_vertices(int(cell))
            nv = len(vertices)
            x, w = macro_quadrature(vertices, self.rule)
            f = field_values(self.load, x, bs)
            Bs = []
            b = np.zeros(nv * bs)
            for xl, wl, fl in zip(x, w, f):
                N, Gs = shape_functions(vertices, xl)
                B = np.zeros((m, nv * bs))
                for c in range(bs):
                    B[c * d:(c + 1) * d, c::bs] = Gs.T
                    b[c::bs] += wl * fl[c] * N
                Bs.append(B)
            self.points.append(x)
            self.weights.append(w)
            self.B.append(Bs)
            loads.append(b)
        self.n_points = sum(len(x) for x in self.points)
        # the external load vector F (at load factor 1)
        self.F = self._vector(loads)

    def _vector(self, blocks: Sequence[np.ndarray]) -> PETSc.Vec:
        vec = self._new_vector()
        for dofs, b in zip(self.cell_dofs, blocks):
            vec.setValues(dofs.astype(PETSc.IntType), b,  # type: ignore[arg-type]
                          addv=PETSc.InsertMode.ADD_VALUES)  # type: ignore[arg-type]
        vec.assemble()
        return vec

    def _new_vector(self) -> PETSc.Vec:
        vec = PETSc.Vec().createMPI((self.space.size_local, PETSc.DETERMINE),
                                    comm=self.comm)  # type: ignore[arg-type]
        vec.set(0.0)
        return vec

    @property
    def rve(self) -> RVE:
        """The micro problem of this rank (created on first use)."""
        if self._rve is None:
            p = self.params
            self._rve = RVE(self.law, self.dim, self.hierarchy.cell_type, p.micro_cells,
                            quadrature_degree=p.micro_quadrature_degree, rtol=p.micro_rtol,
                            atol=p.micro_atol, max_iterations=p.micro_max_iterations,
                            petsc_options=p.micro_solver or None)
        return self._rve

    @property
    def micro(self) -> MicroModel:
        """The constitutive model of the macro points (default: :attr:`rve`)."""
        return self._micro if self._micro is not None else self.rve

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be restarted by this run (JSON types)."""
        h, p = self.hierarchy, self.params
        sig = {"law": self.law.describe(), "N": list(h.N), "cell": h.cell_type,
               "lower": h.lower.tolist(), "upper": h.upper.tolist(), "steps": p.steps,
               "micro_cells": p.micro_cells, "quadrature": self.rule,
               "micro_quadrature_degree": p.micro_quadrature_degree}
        return json.loads(json.dumps(sig))

    # ------------------------------------------------------------------ one iterate
    def gradients(self, values: list[np.ndarray]) -> np.ndarray:
        """Macro gradients :math:`G_l = B_l U_K` at the owned points, shape (points, m)."""
        m = self.dim * self.bs
        out = [B @ uK for Bs, uK in zip(self.B, values) for B in Bs]
        return np.array(out).reshape(len(out), m)

    def _micro_loop(self, values: list[np.ndarray], gradients: np.ndarray,
                    history: np.ndarray, step: int,
                    iteration: int) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
        """Element tangents and internal forces of the owned cells (local work only).

        ``gradients``: :meth:`gradients` of ``values``, one row per point in loop order.
        """
        rve, p = self.micro, self.params
        blocks_K, blocks_R = [], []
        stats: dict[str, float] = {"micro_iterations": 0, "hill_mandel": 0.0}
        k = 0
        for cell, x, w, Bs, uK in zip(self.cells, self.points, self.weights, self.B, values):
            n = len(uK)
            K_e, R_e = np.zeros((n, n)), np.zeros(n)
            for ell, (xl, wl, B) in enumerate(zip(x, w, Bs)):
                G = gradients[k]
                what = (f"macro point {ell} at x = ({', '.join(f'{c:.4g}' for c in xl)}) of "
                        f"macro cell {int(cell)}, load step {step}/{p.steps} (macro "
                        f"iteration {iteration})")
                res = rve.solve(G, history[k], what)
                history[k] = res.w
                defect = self.law.tangent_defect(res.C, self.dim)
                if defect is not None:
                    raise TangentError(f"{what}: the homogenized tangent dQ/dG is not "
                                       f"positive: {defect}; micro law {self.law.name!r} is "
                                       f"not monotone/elliptic at this state")
                scale = float(np.linalg.norm(res.Q) * np.linalg.norm(G))
                relative = res.hill_mandel / scale if scale > 0 else res.hill_mandel
                if res.hill_mandel > p.hill_mandel_tolerance * scale + 1e-300:
                    raise solvers.SolverError(
                        f"{what}: Hill-Mandel defect |<q.g> - Q.G| = {res.hill_mandel:.3e} > "
                        f"{p.hill_mandel_tolerance:g} |Q||G| = "
                        f"{p.hill_mandel_tolerance * scale:.3e}; tighten micro_rtol")
                stats["hill_mandel"] = max(stats["hill_mandel"], relative)
                stats["micro_iterations"] = max(stats["micro_iterations"],
                                                len(res.residuals) - 1)
                K_e += wl * B.T @ res.C @ B
                R_e += wl * B.T @ res.Q
                k += 1
            blocks_K.append(K_e)
            blocks_R.append(R_e)
        return blocks_K, blocks_R, stats

    # ------------------------------------------------------------------ solve
    def solve(self, checkpoint: str | Path | None = None, restart: bool = False,
              stop_after: int | None = None) -> FE2Result:
        r"""Run the load steps (from the checkpoint with ``restart``); collective.

        Args:
            checkpoint: directory of the checkpoint written after every converged load
                step (``None``: no checkpoints).
            restart: continue from the checkpoint in ``checkpoint``.
            stop_after: stop after this load step (the run can be continued with
                ``restart``); default: all steps.

        Raises:
            MicroSolverError: a micro problem failed (naming the macro point, the load
                step and the reason); the checkpoint of the last good step is kept.
            TangentError: a homogenized tangent is not positive.
            SolverError: the macro Newton did not converge, or a linear solve failed.
            ValueError: a checkpoint that cannot be restarted here.
        """
        p, comm = self.params, self.comm
        if restart and checkpoint is None:
            raise ValueError("restart needs the checkpoint directory")
        U = self.space.create_vector("u_fe2")
        Uvec = U.x.petsc_vec
        r0, r1 = Uvec.getOwnershipRange()
        owned = np.arange(r0, r1, dtype=np.int64)
        width, solves = self.micro.size, self.micro.solves
        history = np.zeros((self.n_points, width))
        result = FE2Result(U=U)
        first = 1
        if restart:
            assert checkpoint is not None
            ck = read_checkpoint(checkpoint, self.signature(), comm)
            with _runtime.collective(comm):
                if not (np.array_equal(ck.dofs, owned) and np.array_equal(ck.cells, self.cells)
                        and ck.history.shape == history.shape):
                    raise ValueError(f"the FE2 checkpoint in {str(checkpoint)!r} does not "
                                     f"match this partition (rank {comm.rank})")
            Uvec.setArray(ck.values)
            U.x.scatter_forward()
            history[:] = ck.history
            result.steps = list(ck.state.get("history", []))
            result.restarted_from = first = ck.step
            first += 1
            logger.info("fe2: restarted from the checkpoint of load step %d", ck.step)
        rows, g_full = self.space.dirichlet(self.problem)
        rows_p = rows.astype(PETSc.IntType)
        fixed = (rows - r0).astype(np.int64)
        gather = CoarseGather(Uvec, list(self.cell_dofs))
        K = self._matrix()
        ksp = solvers.make_ksp(K, "msfem_fe2_macro_", p.macro_solver or None,
                               solvers.DIRECT_OPTIONS)
        Rvec, delta, b = self._new_vector(), self._new_vector(), self._new_vector()
        last = p.steps if stop_after is None else min(int(stop_after), p.steps)
        try:
            for step in range(first, last + 1):
                lam = step / p.steps
                record = self._step(step, lam, U, gather, history, K, ksp, Rvec, delta, b,
                                    rows_p, fixed, g_full)
                result.steps.append(record)
                if checkpoint is not None:
                    write_checkpoint(checkpoint, Checkpoint(
                        step=step, dofs=owned, values=Uvec.getArray(readonly=True).copy(),
                        cells=self.cells, history=history,
                        state={"signature": self.signature(), "history": result.steps}),
                        comm)
        finally:
            for obj in (ksp, K, Rvec, delta, b):
                obj.destroy()
        result.hill_mandel_max = max([s["hill_mandel"] for s in result.steps] or [0.0])
        result.micro_solves = int(comm.allreduce(self.micro.solves - solves))
        return result

    def _matrix(self) -> PETSc.Mat:
        n = self.space.size_local
        K = PETSc.Mat().create(comm=self.comm)  # type: ignore[arg-type]
        K.setSizes(((n, PETSc.DETERMINE), (n, PETSc.DETERMINE)))
        K.setType(PETSc.Mat.Type.AIJ)
        dofs = self.cell_dofs
        if len(dofs):
            rows = np.concatenate([np.repeat(e, len(e)) for e in dofs])
            cols = np.concatenate([np.tile(e, len(e)) for e in dofs])
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
        K.setPreallocationCOO(rows.astype(PETSc.IntType), cols.astype(PETSc.IntType))  # type: ignore[arg-type]
        K.setOption(PETSc.Mat.Option.KEEP_NONZERO_PATTERN, True)  # type: ignore[arg-type]
        return K

    def _step(self, step: int, lam: float, U: dolfinx.fem.Function, gather: CoarseGather,
              history: np.ndarray, K: PETSc.Mat, ksp: PETSc.KSP, Rvec: PETSc.Vec,
              delta: PETSc.Vec, b: PETSc.Vec, rows: np.ndarray, fixed: np.ndarray,
              g_full: np.ndarray) -> dict[str, Any]:
        """One load step: Newton from the previous state (collective)."""
        p, comm, rve = self.params, self.comm, self.micro
        Uvec = U.x.petsc_vec
        record: dict[str, Any] = {"step": step, "load_factor": lam, "residuals": [],
                                  "micro_iterations": [], "hill_mandel": 0.0, "timings": []}
        target = lam * g_full
        for iteration in range(p.macro_max_iterations + 1):
            t0 = time.perf_counter()
            tn = rve.t_newton
            values = gather(Uvec)
            gradients = self.gradients(values)
            rve.update(gradients, f"load step {step}/{p.steps}, macro iteration "
                                  f"{iteration}")  # collective
            with dolfinx.common.Timer("~msfem: fe2 micro problems"), _runtime.collective(comm):
                blocks_K, blocks_R, stats = self._micro_loop(values, gradients, history, step,
                                                             iteration)
            t1 = time.perf_counter()
            micro = rve.t_newton - tn
            K.setValuesCOO(np.concatenate([e.ravel() for e in blocks_K]) if blocks_K
                           else np.zeros(0), addv=PETSc.InsertMode.INSERT_VALUES)  # type: ignore[arg-type]
            K.assemble()
            Rvec.set(0.0)
            for dofs, r in zip(self.cell_dofs, blocks_R):
                Rvec.setValues(dofs.astype(PETSc.IntType), r,  # type: ignore[arg-type]
                               addv=PETSc.InsertMode.ADD_VALUES)  # type: ignore[arg-type]
            Rvec.assemble()
            internal = float(Rvec.norm())  # type: ignore[arg-type]
            Rvec.axpy(-lam, self.F)
            res = Rvec.getArray(readonly=True).copy()
            res[fixed] = 0.0
            norm = float(np.sqrt(comm.allreduce(float(res @ res))))
            gap = Uvec.getArray(readonly=True)[fixed] - target
            gap_norm = float(np.sqrt(comm.allreduce(float(gap @ gap))))
            scale = max(internal, lam * float(self.F.norm()))  # type: ignore[arg-type]
            t2 = time.perf_counter()
            tangent = (t1 - t0 - micro) + (t2 - t1)
            record["residuals"].append(norm)
            record["micro_iterations"].append(int(comm.allreduce(int(stats["micro_iterations"]),
                                                                 op=MPI.MAX)))
            record["hill_mandel"] = max(record["hill_mandel"], float(
                comm.allreduce(stats["hill_mandel"], op=MPI.MAX)))
            converged = gap_norm == 0.0 and norm <= p.macro_atol + p.macro_rtol * scale
            timing = {"micro": micro, "tangent": tangent, "macro_solve": 0.0}
            if converged:
                record["timings"].append(_max_timings(timing, comm))
                break
            if not np.isfinite(norm) or iteration == p.macro_max_iterations:
                raise solvers.SolverError(
                    f"FE2 macro Newton did not converge in load step {step}/{p.steps} within "
                    f"{p.macro_max_iterations} iterations (residuals "
                    f"{', '.join(f'{r:.2e}' for r in record['residuals'][-4:])}); use more "
                    f"load steps")
            # K delta = -R, delta = lam g - U on the Dirichlet dofs
            Rvec.copy(b)
            b.scale(-1.0)
            delta.set(0.0)
            delta.setValues(rows, target - Uvec.getArray(readonly=True)[fixed])  # type: ignore[arg-type]
            delta.assemble()
            K.zeroRowsColumns(rows, diag=1.0, x=delta, b=b)  # type: ignore[arg-type]
            ksp.setOperators(K)
            with dolfinx.common.Timer("~msfem: fe2 macro solve"):
                solvers.solve(ksp, b, delta, f"FE2 macro solve (load step {step}, "
                                             f"iteration {iteration})")
            Uvec.axpy(1.0, delta)
            # the Dirichlet values exactly (u + (g - u) may miss g by an ulp)
            Uvec.setValues(rows, target)
            Uvec.assemble()
            U.x.scatter_forward()
            timing["macro_solve"] = time.perf_counter() - t2
            record["timings"].append(_max_timings(timing, comm))
        logger.info("fe2: load step %d/%d converged in %d macro iterations (residual %.2e, "
                    "Hill-Mandel %.1e)", step, p.steps, len(record["residuals"]) - 1,
                    record["residuals"][-1], record["hill_mandel"])
        return record


def _max_timings(t: dict[str, float], comm: MPI.Comm) -> dict[str, float]:
    return {k: float(comm.allreduce(v, op=MPI.MAX)) for k, v in t.items()}
