r"""A method added from outside msfem, through its public API only: MsFEM + a bubble.

The coarse space has two kinds of dofs -- one per coarse vertex and one per coarse cell --
and the basis of K is the linear MsFEM basis :math:`\phi_i` (:math:`a_K(\phi_i, v) = 0`,
:math:`\phi_i = N_i` on ∂K) plus the multiscale bubble :math:`\beta_K`,

.. math:: a_K(\beta_K, v) = \int_K v \quad \forall v \in V_{h,0}(K), \qquad \beta_K = 0
   \text{ on } \partial K.

For a load constant on every coarse cell, the fine solution restricted to K lies in
span{φ_i, β_K}; in 1D the method is then exact at every fine node.
"""

import numpy as np

import msfem
from msfem.coarse_space import EntityCoarseSpace
from msfem.patches import nodal_functions


class BubbleParameters(msfem.Parameters):
    """Scale of the bubble function (any nonzero value gives the same solution)."""

    scale: float = 1.0


@msfem.register("bubble-msfem")
class BubbleMsFEM(msfem.Method):
    """Linear MsFEM enriched with one multiscale bubble per coarse cell."""

    name = "bubble-msfem"
    Parameters = BubbleParameters

    def validate(self, hierarchy, problem):
        if problem.block_size != 1 or not isinstance(hierarchy, msfem.StructuredHierarchy):
            raise ValueError("bubble-msfem: scalar problems on structured hierarchies only")

    def is_conforming(self, hierarchy):
        return True

    def coarse_space(self, hierarchy, problem):
        return EntityCoarseSpace(hierarchy, {0: 1, hierarchy.dim: 1})

    def local(self, cell, engine):
        h = engine.hierarchy
        K = engine.coarse_cell(cell)  # K's fine mesh (COMM_SELF), moved onto the cell
        vertices = h.coarse_vertices(cell)
        N = nodal_functions(h.cell_type, K.dof_coordinates(), vertices, h.H, 1)
        mass, _ = K.metric_matrices()
        # linear MsFEM functions (Dirichlet data N_i) and the bubble (load ∫_K v, zero data)
        psi, A = engine.dirichlet(K, N[K.boundary], f"coarse cell {cell}")
        load = (mass @ np.ones(mass.shape[0]))[K.interior][:, None]
        beta = np.zeros((mass.shape[0], 1))
        beta[K.interior] = engine.interior_solve(K, load, f"bubble of {cell}")
        phi = np.hstack([psi, self.params.scale * beta])
        dofs = engine.cell_dofs[cell]
        return msfem.ElementData(cell=cell, rows=dofs, cols=dofs, A=phi.T @ (A @ phi),
                                 b=phi.T @ K.load(), fine_dofs=K.lattice_ids(), trial=phi,
                                 energy=A, metrics=K.metric_matrices())
