r"""FE²: concurrent two-scale computation with a micro problem at every macro Gauss point.

Feyel and Chaboche, Comput. Methods Appl. Mech. Engrg. 183 (2000) 309--330; Kouznetsova,
Brekelmans and Baaijens, Comput. Mech. 27 (2001) 37--48. The workflow:

1. **Micro law** (:mod:`msfem.fe2.laws`): a stored energy density :math:`W(g; y)` on the
   unit cell :math:`Y = (0, 1)^d`; flux :math:`q = \partial W/\partial g` by ``ufl.diff``.
2. **RVE** (:mod:`msfem.fe2.rve`): for a macro gradient :math:`G`, the periodic
   fluctuation :math:`w` with :math:`\int_Y q(G + \nabla w)\cdot\nabla v = 0`, by Newton on
   the reduced system :math:`(R^TJR)\delta\hat w = -R^Tr`; the macro flux and the
   consistent tangent by sensitivity solves,

   .. math::
      Q = \langle q\rangle = |Y|^{-1}P^Tr, \qquad
      C = |Y|^{-1}(P + R\chi)^TJ(P + R\chi), \quad \chi = -(R^TJR)^{-1}R^TJP.

3. **Macro Newton** (:mod:`msfem.fe2.macro`): with :math:`G_l = B_lU`,

   .. math::
      \sum_K\sum_l\omega_l B_l^T Q(B_lU) = \lambda_n F, \qquad
      \mathcal K = \sum_K\sum_l\omega_l B_l^T C_l B_l,

   load steps :math:`\lambda_n = n/N`, Dirichlet data on the increments.
4. **Checkpoints** (:mod:`msfem.fe2.checkpoint`) after every converged step; restart.
5. **Command line** (:mod:`msfem.fe2.run`): ``msfem fe2 CONFIG.toml --out DIR [--restart]``.
"""

from msfem.fe2.laws import (
    LAWS,
    Law,
    LawParameters,
    available_laws,
    create_law,
    register_law,
)
from msfem.fe2.macro import FE2, FE2Parameters, FE2Result, TangentError
from msfem.fe2.rve import RVE, MicroResult, MicroSolverError

__all__ = [
    "FE2", "FE2Parameters", "FE2Result", "LAWS", "Law", "LawParameters", "MicroResult",
    "MicroSolverError", "RVE", "TangentError", "available_laws", "create_law", "register_law",
]
