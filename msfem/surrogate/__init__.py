r"""Hierarchical coupling: an offline RVE database and a learned constitutive law.

FE² (:mod:`msfem.fe2`) solves an RVE at every macro point and Newton iterate. Here the
micro responses are computed once, offline, over the macro gradients that matter, a law
is fitted to them, and the macro problem runs with it at the cost of a single-scale
Newton:

1. **Database** (:mod:`msfem.surrogate.database`): a space-filling design (Sobol' or
   Latin hypercube) over a box of macro gradients :math:`G`; the RVE problem of
   :class:`msfem.fe2.RVE` at each sample, in parallel over the ranks; flux/stress
   :math:`Q`, tangent :math:`C = \partial Q/\partial G` and the fingerprint of the micro
   problem in one HDF5 file, resumable and extensible.
2. **Law** (:mod:`msfem.surrogate.model`): an affine trend plus a Gaussian process
   (scikit-learn), analytic tangent, predicted uncertainty; flux of G for diffusion,
   :math:`S(E)` for mechanics (objective and symmetric by construction).
3. **Macro solve** (:mod:`msfem.surrogate.micro`): the FE² macro Newton with the law in
   place of the RVE (:class:`SurrogateMicro`), refining actively where the uncertainty
   exceeds a tolerance.
4. **Command line** (:mod:`msfem.surrogate.run`): ``msfem surrogate build CONFIG --out
   DB.h5`` and ``msfem surrogate solve CONFIG --db DB.h5 --out DIR``.
"""

from msfem.surrogate.database import DatabaseError, Design, RVEDatabase, build_database
from msfem.surrogate.micro import SurrogateMicro, SurrogateWarning
from msfem.surrogate.model import SurrogateLaw

__all__ = ["DatabaseError", "Design", "RVEDatabase", "SurrogateLaw", "SurrogateMicro",
           "SurrogateWarning", "build_database"]
