r"""Atomistic-to-continuum coupling: lattices, Cauchy--Born, QC and blended handshakes.

The workflow, one module per step:

1. **Potential and lattice** (:mod:`~msfem.atomistic.potentials`,
   :mod:`~msfem.atomistic.lattice`): a pair potential :math:`\phi(r)` (Lennard-Jones with a
   smooth cutoff, harmonic springs) on a chain or triangular lattice at its stress-free
   spacing :math:`a`, :math:`\sum_r \phi'(a|\hat r|)|\hat r| = 0`.
2. **Atomistic model** (:mod:`~msfem.atomistic.model`): bonds from a
   :class:`scipy.spatial.cKDTree` neighbour list,
   :math:`E(x) = \sum_b w_b\,\phi(|x_j - x_i|)`, forces and the sparse Hessian;
   relaxation by Newton with a line search or FIRE (:mod:`~msfem.atomistic.relax`),
   with a checked converged reason.
3. **Cauchy--Born continuum** (:mod:`~msfem.atomistic.cauchy_born`):

   .. math:: W(F) = \frac{1}{2\Omega_0}\sum_{r}\phi(|Fr|),\qquad
      \mathbb C = \frac{\partial^2 W}{\partial F\,\partial F}\Big|_{F=I},

   in UFL (elastic constants, the hyperelastic FE problem in dolfinx) and NumPy.
4. **Coupling** (:mod:`~msfem.atomistic.mesh`, :mod:`~msfem.atomistic.coupling`): nodes
   on lattice sites, :math:`x = Py`, and per bond an exact weight :math:`\beta_b` and
   Cauchy--Born weights :math:`\omega_{e,r}`:

   .. math:: E(y) = \sum_b \beta_b\,\phi(|(Py)_j - (Py)_i|)
      + \sum_e\sum_r \omega_{e,r}\,\phi(|F_e r|),

   giving energy-based QC, ghost-force corrected QC, quasinonlocal QC and the blended
   (bridging-domain) handshake with Lagrange-multiplier ties.
5. **Problems and errors** (:mod:`~msfem.atomistic.problems`): a bond defect in a chain, a
   vacancy in a triangular crystal under uniform strain and a crack under its mode-I
   K-field, the full atomistic reference,
   and displacement and energy errors as the atomistic region grows
   (:mod:`~msfem.atomistic.study` writes ``docs/atomistic/report.md``).

All of it is NumPy/SciPy on one process except the dolfinx parts of step 3; under
``mpiexec`` every rank computes the same thing.
"""

from msfem.atomistic.cauchy_born import (
    CauchyBornProblem,
    elastic_constants,
    lattice_elastic_constants,
    strain_energy_density,
    strain_energy_ufl,
)
from msfem.atomistic.coupling import (
    METHODS,
    CoupledSolution,
    Coupling,
    blended,
    energy_based,
    ghost_force_corrected,
    ghost_force_iteration,
    patch_test_forces,
    quasinonlocal,
)
from msfem.atomistic.lattice import Lattice, chain, triangular
from msfem.atomistic.mesh import RepMesh, rep_mesh
from msfem.atomistic.model import PairModel, neighbour_bonds
from msfem.atomistic.potentials import Harmonic, LennardJones, PairPotential, equilibrium_spacing
from msfem.atomistic.problems import (
    DefectProblem,
    bond_defect_chain,
    crack,
    errors,
    k_field,
    vacancy,
)
from msfem.atomistic.relax import Relaxation, RelaxationError, fire, newton

__all__ = [
    "METHODS",
    "CauchyBornProblem",
    "CoupledSolution",
    "Coupling",
    "DefectProblem",
    "Harmonic",
    "Lattice",
    "LennardJones",
    "PairModel",
    "PairPotential",
    "Relaxation",
    "RelaxationError",
    "RepMesh",
    "blended",
    "bond_defect_chain",
    "chain",
    "crack",
    "elastic_constants",
    "energy_based",
    "equilibrium_spacing",
    "errors",
    "fire",
    "ghost_force_corrected",
    "ghost_force_iteration",
    "k_field",
    "lattice_elastic_constants",
    "neighbour_bonds",
    "newton",
    "patch_test_forces",
    "quasinonlocal",
    "rep_mesh",
    "strain_energy_density",
    "strain_energy_ufl",
    "triangular",
    "vacancy",
]
