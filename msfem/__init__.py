r"""msfem -- multiscale finite element methods on FEniCSx.

The workflow, one module per step:

1. **Hierarchy** (:mod:`msfem.mesh`): coarse mesh :math:`\mathcal T_H`, fine mesh
   :math:`\mathcal T_h` refining it, :math:`h = H/M`.
2. **Problem** (:mod:`msfem.problem`, :mod:`msfem.coefficients`): a bilinear form
   :math:`a(u, v)` with a multiscale coefficient :math:`a(x/\varepsilon)`, a load
   :math:`L(v)` and boundary data.
3. **Fine reference** (:mod:`msfem.fine`): :math:`a(u_h, v) = L(v)` on the fine mesh.
4. **Multiscale basis** (:mod:`msfem.methods`, :mod:`msfem.space`): per coarse cell K,
   a method's local problems, e.g. MsFEM's on a patch :math:`S \supseteq K`,

   .. math::
      a_S(\psi_j, v) = 0 \quad \forall v \in V_{h,0}(S), \qquad
      \psi_j = g_j \text{ on } \partial S,

   combined into :math:`\phi_i = \sum_j c_{ij}\psi_j|_K` with :math:`\phi_i(x_k) = \delta_{ik}`.
5. **Coarse system** (:mod:`msfem.coarse`):
   :math:`A_H[i, j] = \sum_K a_K(\phi_j, w_i)`, :math:`b_H[i] = \sum_K L_K(w_i)` with test
   functions :math:`w_i = \phi_i` (Galerkin) or the coarse nodal functions (Petrov--Galerkin),
   solved on the coarse MPI communicator.
6. **Reconstruction and errors** (:mod:`msfem.norms`):
   :math:`u_{ms} = \sum_i U_i \phi_i`, compared with the fine reference in (broken) L2, H1
   and energy norms and at the coarse vertices.

Under ``mpiexec`` an uncaught exception on any rank prints its traceback and
``msfem: rank R of N: uncaught ...`` and aborts the whole job
(:func:`msfem._runtime.install_excepthook`; ``MSFEM_ABORT_ON_ERROR=0`` turns it off).
"""

from msfem._runtime import configure_logging  # noqa: F401  (imports dolfinx_solver first)
from msfem._runtime import install_excepthook as _install_excepthook
from msfem.coarse import CoarseSolution, prolongation
from msfem.coarse import solve as solve_coarse
from msfem.coefficients import (
    Boxes,
    Checkerboard,
    ConstantField,
    Field,
    HouWu,
    Inclusions,
    Laminate,
    LocallyPeriodic,
    LogNormal,
    Periodic,
    RandomCheckerboard,
    UnresolvedScaleWarning,
    UserField,
    channels,
    square_inclusions,
)
from msfem.fine import FineSolution, solve_fine
from msfem.mesh import Oversampling, RefinedHierarchy, StructuredHierarchy
from msfem.methods import ElementData, Method, Parameters, register
from msfem.methods.msfem import VARIANTS
from msfem.problem import Dirichlet, Neumann, Problem, diffusion, elasticity, reaction_diffusion
from msfem.solvers import SolverError
from msfem.space import MultiscaleSpace

__version__ = "0.1.0"

_install_excepthook()  # a one-rank error aborts the job instead of hanging it

__all__ = [
    "CoarseSolution", "ElementData", "Method", "MultiscaleSpace", "Parameters", "VARIANTS",
    "prolongation", "register", "solve_coarse",
    "Boxes", "Checkerboard", "ConstantField", "Dirichlet", "Field", "FineSolution", "HouWu",
    "Inclusions", "Laminate", "LocallyPeriodic", "LogNormal", "Neumann", "Oversampling",
    "Periodic", "Problem",
    "RandomCheckerboard", "RefinedHierarchy", "SolverError", "StructuredHierarchy",
    "UnresolvedScaleWarning", "UserField", "channels", "diffusion", "elasticity",
    "reaction_diffusion", "solve_fine", "square_inclusions", "__version__",
]
