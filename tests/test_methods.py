"""The method layer: regression pins of the five MsFEM variants, a method added from outside
(through the Python API, ``msfem solve`` and ``msfem study``), rectangular far-coupling
element blocks, the config generated from the registry, and the package's import graph."""

import ast
import csv
import json
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import TOY_CONFIG, write_text_config

import msfem
from msfem import methods
from msfem.cli import main
from msfem.coarse import assemble_coarse
from msfem.coarse_space import LagrangeCoarseSpace
from msfem.config import ConfigError, validate
from msfem.solvers import DIRECT_OPTIONS

PLUGIN = Path(__file__).parent / "plugins" / "bubble_msfem.py"
PACKAGE = Path(msfem.__file__).parent

# Numbers of the first release (commit 14a5025, before the method layer): norm of U,
# energy_rel, l2_rel, nodal_linf on Hou-Wu eps = 1/4, N = 4, M = 8, quadrature degree 4.
PINNED = {
    ("quadrilateral", "standard"): (0.03808279907252079, 0.5085539604834235,
                                    0.2457577372876459, 0.0028249804460504513),
    ("quadrilateral", "linear"): (0.04409059403640568, 0.3763707899933403,
                                  0.1362778945489143, 0.0008264693295609703),
    ("quadrilateral", "oscillatory"): (0.045965039899994745, 0.32417796929393516,
                                       0.10757663814450372, 0.001076841713466269),
    ("quadrilateral", "oversampling"): (0.04674526821789035, 0.3014982939579371,
                                        0.09543083010598025, 0.001208775448444662),
    ("quadrilateral", "petrov-galerkin"): (0.04679102986109216, 0.29972444658962905,
                                           0.09455760139630619, 0.0011631686384307657),
    ("triangle", "linear"): (0.03751485271083801, 0.5160627145043846, 0.2559923977352503,
                             0.002856015426395738),
    ("triangle", "petrov-galerkin"): (0.0413675525268429, 0.4437856456001357,
                                      0.1863454640492013, 0.0011051207778597569),
}


def load_plugin():
    from msfem.config import load_plugins

    load_plugins([str(PLUGIN)])


@pytest.mark.parametrize("cell", ["quadrilateral", "triangle"])
def test_variants_reproduce_first_release(comm, cell):
    hier = msfem.StructuredHierarchy(comm, 4, 8, cell)
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=-1.0, quadrature_degree=4)
    fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    for (c, variant), pinned in PINNED.items():
        if c != cell:
            continue
        os = 1 if variant in ("oversampling", "petrov-galerkin") else 0
        sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, variant, os).build())
        e = sol.errors(fine)
        n = sol.U.function_space.dofmap.index_map.size_local
        norm = np.sqrt(comm.allreduce(float((sol.U.x.array[:n] ** 2).sum())))
        got = (norm, e["energy_rel"], e["l2_rel"], e["nodal_linf"])
        np.testing.assert_allclose(got, pinned, rtol=1e-10, err_msg=variant)


def test_generic_msfem_equals_its_presets(comm):
    hier = msfem.StructuredHierarchy(comm, 4, 8)
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=1.0)
    a = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "oversampling", 1).build())
    b = msfem.solve_coarse(msfem.MultiscaleSpace(
        hier, problem, methods.create("msfem", variant="oversampling", oversampling=1)).build())
    assert np.abs(a.U.x.array - b.U.x.array).max() < 1e-14
    with pytest.raises(ValueError, match="fixes variant"):
        methods.create("linear", variant="oscillatory")


# ------------------------------------------------------------------ a method from outside
def test_plugin_method_is_exact_in_1d_and_improves_linear_in_2d(comm):
    """MsFEM + a multiscale bubble (tests/plugins/bubble_msfem.py): with a load constant on
    the coarse cells the fine solution lies in the space in 1D (exact at every fine dof);
    in 2D the Galerkin space contains the linear MsFEM space, so the energy error drops."""
    from test_fine import one_d_problem

    load_plugin()
    problem = one_d_problem(1 / 8)
    hier = msfem.StructuredHierarchy(comm, 4, 32, "interval")
    fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "bubble-msfem").build())
    e = sol.errors(fine)
    assert e["energy_rel"] < 1e-9 and e["l2_rel"] < 1e-9 and e["nodal_linf"] < 1e-12
    assert sol.U.index_map.size_global == 5 + 4  # vertex dofs + one bubble per cell

    hier = msfem.StructuredHierarchy(comm, 4, 8, "quadrilateral")
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=1.0, quadrature_degree=4)
    fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    lin = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "linear").build())
    bub = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "bubble-msfem").build())
    e_lin, e_bub = lin.errors(fine), bub.errors(fine)
    assert e_bub["energy_rel"] < 0.8 * e_lin["energy_rel"]
    # the reconstruction is a fine Function: its energy error agrees with the broken one
    u = bub.reconstruct(fine.function_space)
    disc = problem.discretise(fine.function_space)
    assert msfem.norms.errors(u, fine, disc)["energy_rel"] == pytest.approx(
        e_bub["energy_rel"], rel=1e-8)


PLUGIN_CONFIG = TOY_CONFIG + f"""
[msfem]
method = "bubble-msfem"
scale = 2.0
plugins = ["{PLUGIN}"]
"""


@pytest.mark.usefixtures("restore_msfem_logging")
def test_plugin_method_through_cli_and_study(shared_tmp):
    cfg = write_text_config(shared_tmp, PLUGIN_CONFIG, "solve.toml")
    assert main(["solve", str(cfg), "--out", str(shared_tmp / "solve")]) == 0
    metrics = json.loads((shared_tmp / "solve" / "metrics.json").read_text())
    assert metrics["variant"] == "bubble-msfem"
    assert 0 < metrics["energy_rel"] < 0.5
    study = PLUGIN_CONFIG.replace('method = "bubble-msfem"\nscale = 2.0\n', "") + """
[study]
eps = 0.25
N = [4]
M = 8
methods = ["linear", {name = "bubble", method = "bubble-msfem", scale = 3.0}]
figures = false
reference_factor = 1
"""
    cfg = write_text_config(shared_tmp, study, "study.toml")
    assert main(["study", str(cfg), "--out", str(shared_tmp / "study")]) == 0
    with open(shared_tmp / "study" / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["bubble"]["energy_rel"]) < float(rows["linear"]["energy_rel"])
    assert float(rows["bubble"]["energy_rel"]) == pytest.approx(metrics["energy_rel"], rel=1e-8)


# ------------------------------------------------------------------ assembly
def test_coarse_assembly_accepts_far_couplings(comm):
    """Element blocks coupling a vertex with the vertex two coarse cells to its right (as
    LOD's Petrov-Galerkin stiffness does) are assembled without a preallocated pattern."""
    hier = msfem.StructuredHierarchy(comm, 6, 2, "quadrilateral")
    problem = msfem.diffusion(1.0)
    cs = LagrangeCoarseSpace(hier, problem)
    local, cells = hier.owned_coarse_cells
    elements = []
    for cell in cells:
        lo = hier.coarse_vertices(int(cell)).min(axis=0)
        if lo[0] + 3 * hier.H[0] > 1 + 1e-12:
            continue
        rows = cs.vertex_dofs(lo[None, :])
        cols = cs.vertex_dofs(np.array([lo, lo + [2 * hier.H[0], 0], lo + [3 * hier.H[0], 0]]))
        elements.append(methods.ElementData(int(cell), rows, cols, np.array([[1.0, 2.0, 3.0]]),
                                            np.array([1.0])))
    space = types.SimpleNamespace(coarse=cs, hierarchy=hier, elements=elements)
    A, b = assemble_coarse(space)
    assert A.getSize() == (49, 49)
    # every element adds 1 + 2 + 3; 4 of the 6 cells of a row reach 3 cells to the right
    ones = A.createVecRight()
    ones.set(1.0)
    y = A.createVecLeft()
    A.mult(ones, y)
    assert y.sum() == pytest.approx(6.0 * 4 * 6)
    assert b.sum() == pytest.approx(4 * 6)
    x0 = cs.vertex_dofs(np.array([[0.0, 0.0], [2 / 6, 0.0]]))
    value = A.getValues([x0[0]], [x0[1]]) if A.getOwnershipRange()[0] <= x0[0] < \
        A.getOwnershipRange()[1] else None
    value = comm.allgather(None if value is None else float(value[0, 0]))
    assert [v for v in value if v is not None] == [2.0]
    A.destroy()
    b.destroy()


# ------------------------------------------------------------------ registry and config
def test_config_accepts_registered_methods_and_refuses_others():
    base = {"mesh": {"N": 4, "M": 8}, "coefficient": {"type": "hou-wu", "eps": 0.25}}
    for name in methods.available():
        validate({**base, "msfem": {"method": name}})
    validate({**base, "msfem": {"variant": "standard"}})
    validate({**base, "msfem": {"variant": "oversampling",
                                "oversampling": {"sampling_region": 16}}})
    validate({**base, "msfem": {"method": "msfem", "variant": "petrov-galerkin",
                                "oversampling": 2, "boundary": "oscillatory"}})
    validate({**base, "msfem": {"method": "lod", "layers": 3, "test": "galerkin"}})
    with pytest.raises(ConfigError,
                       match="must be one of 'msfem', 'standard', 'linear'.*'gmsfem'.*'lod'"):
        validate({**base, "msfem": {"method": "no-such-method"}})
    with pytest.raises(ConfigError, match="layers"):
        validate({**base, "msfem": {"method": "lod", "layers": -1}})
    with pytest.raises(ConfigError, match="test"):
        validate({**base, "msfem": {"method": "lod", "test": "ritz"}})
    with pytest.raises(ConfigError, match="no parameter 'layers'; valid parameters: "
                                          "oversampling, boundary, edge_coefficient"):
        validate({**base, "msfem": {"method": "oversampling", "layers": 1}})
    with pytest.raises(ConfigError, match="boundary"):
        validate({**base, "msfem": {"method": "oversampling", "boundary": "quadratic"}})
    with pytest.raises(ConfigError, match="exactly one of"):
        validate({**base, "msfem": {"variant": "oversampling", "oversampling": {"x": 1}}})


def test_unknown_plugin_file_is_a_config_error(shared_tmp):
    cfg = write_text_config(shared_tmp, PLUGIN_CONFIG.replace(str(PLUGIN), "nowhere.py"),
                            "bad.toml")
    with pytest.raises(ConfigError, match="nowhere.py' not found"):
        msfem.config.load(cfg)


def _imports(path: Path) -> set[str]:
    """msfem modules imported by a file, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("msfem"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("msfem"))
    return out


def test_no_import_cycles_inside_the_package():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # importing a package's submodule runs the package's __init__: packages re-export
    # their own submodules, so edges into a package's own subtree are not cycles
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if n.startswith(m + ".") or m.startswith(n + "."):
                continue
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_branching_on_problem_names():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                    isinstance(side, ast.Attribute) and side.attr == "name"
                    and "problem" in ast.unparse(side.value)
                    for side in [node.left, *node.comparators]):
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr" and \
                    "problem" in ast.unparse(node.args[0]) and len(node.args) > 1 and \
                    ast.unparse(node.args[1]) == "'name'":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_registry_lists_parameters_and_refuses_bad_values():
    assert {"standard", "linear", "oscillatory", "oversampling", "petrov-galerkin"} <= set(
        methods.available())
    assert methods.parameter_names("oversampling") == ["oversampling", "boundary",
                                                        "edge_coefficient", "coarse_quadrature",
                                                        "local_solver"]
    with pytest.raises(ValueError, match="oversampling"):
        methods.create("oversampling", oversampling=-1)
    with pytest.raises(TypeError, match="not a subclass"):
        methods.register("bad", object)


class _NoFineBasis(msfem.methods.MsFEM):
    """The standard coarse FEM returned as element data without a fine basis (like FE-HMM)."""

    def local(self, cell, engine):
        e = super().local(cell, engine)
        return methods.ElementData(e.cell, e.rows, e.cols, e.A, e.b)


def test_method_without_fine_basis(comm):
    hier = msfem.StructuredHierarchy(comm, 4, 4)
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 2), f=1.0)
    ref = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "standard").build())
    sol = msfem.solve_coarse(msfem.MultiscaleSpace(
        hier, problem, _NoFineBasis(variant="standard")).build())
    assert np.abs(sol.U.x.array - ref.U.x.array).max() < 1e-14
    # without a fine basis the reconstruction is the macro function u_H on the fine mesh:
    # for "standard" (Q1 nodal functions) the same function
    u, u_ref = sol.reconstruct(), ref.reconstruct()
    assert np.abs(u.x.array - u_ref.x.array).max() < 1e-13
    fine = msfem.solve_fine(hier.fine, problem).u
    assert sol.errors(fine)["l2_rel"] == pytest.approx(ref.errors(fine)["l2_rel"], rel=1e-10)


def test_unstructured_rank_without_coarse_cells(comm):
    """One coarse triangle: under mpirun every rank but one owns no coarse cell (no hang)."""
    import basix.ufl
    import dolfinx
    import ufl

    cells = np.array([[0, 1, 2]], dtype=np.int64) if comm.rank == 0 else \
        np.zeros((0, 3), dtype=np.int64)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) if comm.rank == 0 else np.zeros((0, 2))
    domain = ufl.Mesh(basix.ufl.element("Lagrange", "triangle", 1, shape=(2,)))
    coarse = dolfinx.mesh.create_mesh(comm, cells, domain, x)
    hier = msfem.RefinedHierarchy(coarse, 3)
    problem = msfem.diffusion(2.0, f=1.0)
    sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, "linear").build())
    fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    e = sol.errors(fine)
    # all three vertices carry Dirichlet data: U = 0 and the error is the whole solution
    assert e["l2_rel"] == pytest.approx(1.0, abs=1e-12)


def test_default_quadrature_degree_matches_ufl_estimate(comm):
    """msfem's quadrature degree 2p + 2 against UFL's estimate (10 for Hou-Wu): the MsFEM
    energy error changes by less than 1e-3 relative when h = eps/8."""
    from msfem.problem import default_quadrature_degree

    assert default_quadrature_degree(1) == 4 and default_quadrature_degree(2) == 6
    hier = msfem.StructuredHierarchy(comm, 8, 16)
    errs = {}
    for q in (None, "ufl"):
        problem = msfem.diffusion(msfem.HouWu(eps=1 / 16), f=-1.0, quadrature_degree=q)
        fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
        for v, os in (("linear", 0), ("oversampling", 1)):
            sol = msfem.solve_coarse(msfem.MultiscaleSpace(hier, problem, v, os).build())
            errs[q, v] = sol.errors(fine)["energy_rel"]
    for v in ("linear", "oversampling"):
        assert errs[None, v] == pytest.approx(errs["ufl", v], rel=1e-3)
    with pytest.raises(ValueError, match="quadrature_degree"):
        msfem.diffusion(1.0, quadrature_degree="high")


@pytest.mark.parametrize("variant,os", [("linear", 0), ("oversampling", 1)])
def test_energy_matrices_on_demand(comm, variant, os):
    """store_energy=False drops the elements' fine matrices; errors() assembles them again."""
    hier = msfem.StructuredHierarchy(comm, 4, 8)
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=-1.0, quadrature_degree=4)
    fine = msfem.solve_fine(hier.fine, problem, petsc_options=DIRECT_OPTIONS).u
    errs = []
    for store in (True, False):
        space = msfem.MultiscaleSpace(hier, problem, variant, os, store_energy=store).build()
        assert all((e.energy is None) != store for e in space.elements)
        errs.append(msfem.solve_coarse(space).errors(fine))
    for key in ("energy_rel", "energy", "l2_rel", "nodal_linf"):
        assert errs[1][key] == pytest.approx(errs[0][key], rel=1e-12)


@pytest.mark.parametrize("cell", ["quadrilateral", "triangle"])
def test_batched_local_problems_equal_cell_by_cell(comm, cell):
    """S = K variants batch the local problems of cells of one shape (one block-diagonal
    factorisation): the same element data as one cell at a time."""
    hier = msfem.StructuredHierarchy(comm, 4, 8, cell)
    problem = msfem.diffusion(msfem.HouWu(eps=1 / 4), f=-1.0, quadrature_degree=4)
    variants = ["linear", "petrov-galerkin"] + (["oscillatory"] if cell == "quadrilateral"
                                                 else [])
    for variant in variants:
        spaces = [msfem.MultiscaleSpace(hier, problem, variant, 0, batch_size=b).build()
                  for b in (1, 5)]
        for e1, e5 in zip(*(sorted(s.elements, key=lambda e: e.cell) for s in spaces)):
            assert e1.cell == e5.cell
            np.testing.assert_allclose(e5.A, e1.A, rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(e5.b, e1.b, rtol=1e-11, atol=1e-15)
            np.testing.assert_allclose(e5.trial, e1.trial, rtol=1e-11, atol=1e-13)
    with pytest.raises(ValueError, match="batch_size"):
        msfem.MultiscaleSpace(hier, problem, "linear", batch_size=0)
