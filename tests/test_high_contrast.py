"""Why Petrov--Galerkin MsFEM degrades with the contrast: its inf-sup constant falls.

The oversampled trial functions φ_j and the Q1 test functions N_i make a coarse operator
a(φ_j, N_i) whose inf-sup constant β (in the broken energy norms of trial and test space,
:func:`msfem.coarse.inf_sup`) is 1 for a constant coefficient and falls as the channels'
contrast grows; the Galerkin method keeps β = 1 by construction. Quasi-optimality costs
1/β, so PG's error grows with the contrast: the method, not a bug.
"""

import pytest
from mpi4py import MPI

import msfem
from msfem.coarse import inf_sup

pytestmark = pytest.mark.filterwarnings("ignore::msfem.UnresolvedScaleWarning")


@pytest.fixture(scope="module")
def constants():
    h = msfem.StructuredHierarchy(MPI.COMM_WORLD, 8, 8, "quadrilateral")
    out = {}
    for contrast in (1.0, 1e2, 1e4):
        problem = msfem.diffusion(msfem.coefficients.channels(contrast, 4, 1 / 16), -1.0)
        for method in ("oversampling", "petrov-galerkin"):
            out[method, contrast] = inf_sup(msfem.MultiscaleSpace(h, problem, method).build())
    return out


def test_galerkin_methods_have_unit_inf_sup_constant(constants):
    for contrast in (1.0, 1e2, 1e4):
        beta, gamma = constants["oversampling", contrast]
        assert beta == pytest.approx(1.0, abs=1e-8) and gamma == pytest.approx(1.0, abs=1e-8)


def test_petrov_galerkin_inf_sup_constant_falls_with_the_contrast(constants):
    beta = {c: constants["petrov-galerkin", c][0] for c in (1.0, 1e2, 1e4)}
    assert beta[1.0] == pytest.approx(1.0, abs=1e-8)  # a = 1: φ_i = N_i, PG = Galerkin
    assert beta[1e4] < 0.5 * beta[1e2] < 0.5 * beta[1.0]
    for c in (1e2, 1e4):  # the continuity constant stays ~ 1: only β moves
        assert 0.9 < constants["petrov-galerkin", c][1] <= 1.0 + 1e-8


def test_inf_sup_refuses_summed_reconstructions(comm):
    h = msfem.StructuredHierarchy(comm, 4, 4, "quadrilateral")
    space = msfem.MultiscaleSpace(h, msfem.diffusion(1.0, 1.0), "lod").build()
    with pytest.raises(ValueError, match="reconstruction 'sum'"):
        inf_sup(space)
