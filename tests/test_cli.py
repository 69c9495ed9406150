"""The ``msfem`` command line, in-process: results on disk, and every bad input refused.

Runs in serial and under ``mpiexec -n 2 python -m mpi4py -m pytest``: every rank calls
``main`` with the same (rank 0's) directories; messages are printed by rank 0 only.
"""

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers import TOY_CONFIG, write_text_config
from mpi4py import MPI

import msfem
from msfem.cli import main
from msfem.config import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::msfem.UnresolvedScaleWarning")

COMM = MPI.COMM_WORLD

TINY = TOY_CONFIG + """
[msfem]
variant = "oversampling"
oversampling = { coarse_layers = 1 }
"""


def has_pyvista() -> bool:
    try:
        import pyvista  # noqa: F401
    except ImportError:
        return False
    return True


def shared_dir(factory) -> Path:
    return COMM.bcast(factory.mktemp("cli") if COMM.rank == 0 else None, root=0)


write_config = write_text_config


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def leftovers(out: Path) -> list[str]:
    """Partial/backup siblings that atomic_directory must never leave behind."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


pytestmark = pytest.mark.usefixtures("restore_msfem_logging")


# ----------------------------------------------------------------------------- results
@pytest.fixture(scope="module")
def fine_run(tmp_path_factory):
    root = shared_dir(tmp_path_factory)
    out = root / "fine"
    status = main(["fine", str(write_config(root, TINY)), "--out", str(out)])
    return status, out


@pytest.fixture(scope="module")
def solve_run(tmp_path_factory):
    root = shared_dir(tmp_path_factory)
    out = root / "solve"
    status = main(["solve", str(write_config(root, TINY)), "--out", str(out)])
    return status, out


def test_version(capsys):
    assert main(["--version"]) == 0
    if COMM.rank == 0:
        assert capsys.readouterr().out.strip() == f"msfem {msfem.__version__}" == "msfem 0.1.0"


@pytest.mark.serial_only
def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "msfem", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "msfem 0.1.0"


def test_fine_writes_metrics_fields_and_png(fine_run):
    status, out = fine_run
    assert status == 0
    m = read_metrics(out)
    assert m["command"] == "fine" and m["ranks"] == COMM.size
    assert m["num_dofs"] == 33 * 33 and m["iterations"] > 0
    for key in ("l2_norm", "h1_seminorm", "t_assemble", "t_solve"):
        assert math.isfinite(m[key]) and m[key] > 0, key
    assert m["config"]["coefficient"] == {"type": "hou-wu", "eps": 0.25}
    assert (out / "u_fine.bp").is_dir()
    if has_pyvista():
        assert (out / "u_fine.png").stat().st_size > 1000
    assert leftovers(out) == []


def test_solve_writes_errors_fields_and_png(solve_run):
    status, out = solve_run
    assert status == 0
    m = read_metrics(out)
    assert m["command"] == "solve" and m["variant"] == "oversampling"
    assert m["ranks"] == COMM.size
    assert m["num_coarse_dofs"] == 25 and m["num_fine_dofs"] == 33 * 33
    assert 0 < m["energy_rel"] < 1 and 0 < m["h1_rel"] < 1 and 0 < m["l2_rel"] < m["h1_rel"]
    assert 0 < m["nodal_l2"] <= m["nodal_linf"] and math.isfinite(m["nodal_linf"])
    for key in ("t_offline", "t_online", "t_reference"):
        assert math.isfinite(m[key]) and m[key] >= 0, key
    for name in ("u_msfem", "u_fine", "U_coarse"):
        assert (out / f"{name}.bp").is_dir(), name
    # the error field beside u_fine and u_ms, and one basis function beside the coarse hat
    # (matplotlib: always drawn); real PNG images
    import matplotlib.image

    for png in ("u_fine_vs_u_ms.png", "basis_function.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        height, width, _ = matplotlib.image.imread(out / png).shape
        assert height > 200 and width > 400, png


def test_xdmf_replaces_previous_results_and_prints_timings(tmp_path_factory, capfd):
    root = shared_dir(tmp_path_factory)
    out = root / "xdmf"
    if COMM.rank == 0:
        out.mkdir()
        (out / "stale.txt").write_text("from an earlier run")
    COMM.barrier()
    cfg = write_config(root, TINY + '\n[output]\nformat = "xdmf"\npng = false\n')
    assert main(["fine", str(cfg), "--out", str(out), "--timings"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "u_fine.h5", "u_fine.xdmf"]
    assert leftovers(out) == []
    if COMM.rank == 0:
        assert "~msfem: fine solve" in capfd.readouterr().out


# ----------------------------------------------------------------------------- bad input
BAD_CONFIGS = {
    "unknown-key": (TINY.replace("M = 8", "M = 8\nNN = 4"),
                    ["unknown key 'NN' in [mesh]",
                     "accepted keys: M, N, allow_unresolved, cell, lower, upper"]),
    "unknown-section": (TINY + "\n[meshh]\nN = 2\n", ["unknown section [meshh]"]),
    "M-zero": (TINY.replace("M = 8", "M = 0"), ["[mesh] M = 0 must be a positive integer"]),
    "unresolved-eps": (TINY.replace("eps = 0.25", "eps = 0.0625"),
                       ["resolved by only 2.00 fine cells", "M >= 32", "allow_unresolved"]),
    "M-fractional": (TINY.replace("M = 8", "M = 1.5"), ["[mesh] M = 1.5 must be an integer"]),
    "variant": (TINY.replace('"oversampling"\n', '"oversampled"\n'), ["variant", "one of"]),
    "negative-coefficient": (TINY.replace('type = "hou-wu"\neps = 0.25',
                                          'type = "laminate"\na1 = -1.0\na2 = 1.0\neps = 0.25'),
                             ["Laminate is not positive definite", "value -1"]),
}


def check_refused(status, capsys, out: Path, fragments) -> None:
    err = capsys.readouterr().err
    assert status == 2
    assert not out.exists()
    assert leftovers(out) == []
    if COMM.rank == 0:  # after the log lines, one line of error
        assert err.splitlines()[-1].startswith("msfem: error: "), err
        assert err.count("msfem: error:") == 1 and "Traceback" not in err
        for fragment in fragments:
            assert fragment in err, (fragment, err)


@pytest.mark.parametrize("command", ["fine", "solve"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_before_any_output(shared_tmp, capsys, command, case):
    text, fragments = BAD_CONFIGS[case]
    cfg = write_config(shared_tmp, text)
    out = shared_tmp / "out"
    check_refused(main([command, str(cfg), "--out", str(out)]), capsys, out, fragments)


def test_missing_config_file(shared_tmp, capsys):
    out = shared_tmp / "out"
    status = main(["fine", str(shared_tmp / "nowhere.toml"), "--out", str(out)])
    check_refused(status, capsys, out, ["nowhere.toml", "not found"])


def test_usage_error_exits_2(capsys):
    assert main(["fine"]) == 2
    assert main(["no-such-command"]) == 2
    if COMM.rank == 0:
        assert "usage: msfem" in capsys.readouterr().err


def test_debug_reraises(shared_tmp):
    cfg = write_config(shared_tmp, TINY.replace("M = 8", "M = 0"))
    out = str(shared_tmp / "out")
    with pytest.raises(ConfigError, match="positive integer"):
        main(["--debug", "fine", str(cfg), "--out", out])
    with pytest.raises(ConfigError, match="positive integer"):
        main(["fine", str(cfg), "--out", out, "--debug"])


DIVERGENT = {
    # CG + GAMG cannot reach 1e-14 in one iteration: the fine reference fails
    "fine": (TINY + "\n[solver]\nksp_max_it = 1\nksp_rtol = 1e-14\n", "fine solve"),
    # the coarse solve fails after the whole offline phase
    "solve": (TINY + '\ncoarse_solver = { ksp_type = "cg", pc_type = "none", ksp_max_it = 1, '
                     'ksp_rtol = 1e-14 }\n', "coarse solve"),
}


@pytest.mark.parametrize("command", sorted(DIVERGENT))
def test_divergence_keeps_previous_results(shared_tmp, capsys, command):
    text, what = DIVERGENT[command]
    cfg = write_config(shared_tmp, text)
    out = shared_tmp / "previous"
    if COMM.rank == 0:
        out.mkdir()
        (out / "metrics.json").write_text('{"old": true}')
    COMM.barrier()
    assert main([command, str(cfg), "--out", str(out)]) == 2
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert read_metrics(out) == {"old": True}
    assert leftovers(out) == []
    fresh = shared_tmp / "fresh"
    status = main([command, str(cfg), "--out", str(fresh)])
    check_refused(status, capsys, fresh, [what, "DIVERGED_MAX_IT"])


# ----------------------------------------------------------------------------- delegation
def test_delegated_commands(monkeypatch, shared_tmp):
    calls = []
    study = types.ModuleType("msfem.studies")
    study.run_study = lambda config, out: calls.append(("study", config, out))
    hom = types.ModuleType("msfem.homogenization.cli")
    hom.homogenize = lambda config, as_json: calls.append(("homogenize", config, as_json))
    hom.rve = lambda config, out: calls.append(("rve", config, out))
    monkeypatch.setitem(sys.modules, "msfem.studies", study)
    monkeypatch.setitem(sys.modules, "msfem.homogenization.cli", hom)
    cfg, out = shared_tmp / "c.toml", shared_tmp / "o"
    assert main(["study", str(cfg), "--out", str(out)]) == 0
    assert main(["homogenize", str(cfg), "--json"]) == 0
    assert main(["homogenize", str(cfg)]) == 0
    assert main(["rve", str(cfg), "--out", str(out)]) == 0
    assert calls == [("study", cfg, out), ("homogenize", cfg, True),
                     ("homogenize", cfg, False), ("rve", cfg, out)]


@pytest.mark.parametrize("command,module", [("study", "msfem.studies"),
                                            ("rve", "msfem.homogenization.cli")])
def test_missing_delegate_is_a_clear_error(monkeypatch, shared_tmp, capsys, command, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    out = shared_tmp / "o"
    status = main([command, str(shared_tmp / "c.toml"), "--out", str(out)])
    check_refused(status, capsys, out, [f"'msfem {command}' is not available", module])


# ----------------------------------------------------------------------------- methods
PLUGIN = Path(__file__).parent / "plugins" / "bubble_msfem.py"


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    if COMM.rank == 0:
        for name in msfem.methods.available():
            assert f"\n{name}: " in "\n" + out, name
        block = out.split("\noversampling: ")[1].split("\n\n")[0]
        assert "preset: variant = 'oversampling'" in block
        assert "    boundary: 'polynomial' | 'oscillatory' | None (default None)" in block
        assert "override the variant's boundary data" in block
        assert "\n    variant:" not in block  # fixed by the preset, not a parameter
        assert "msfem methods --plugin" in out
    else:
        assert out == ""


def test_methods_json_and_plugins(capsys):
    from msfem.config import load_plugins

    load_plugins([str(PLUGIN)])
    assert main(["methods", "--json"]) == 0
    out = capsys.readouterr().out
    if COMM.rank == 0:
        listed = {m["name"]: m for m in json.loads(out)}
        assert list(listed) == msfem.methods.available()
        over = listed["oversampling"]
        assert over["preset"] == {"variant": "oversampling"}
        assert [p["name"] for p in over["parameters"]] == msfem.methods.parameter_names(
            "oversampling")
        boundary = next(p for p in over["parameters"] if p["name"] == "boundary")
        assert boundary["default"] is None and not boundary["required"]
        assert "oscillatory" in boundary["type"] and boundary["description"]
        bubble = listed["bubble-msfem"]
        assert bubble["summary"].startswith("Linear MsFEM enriched with one multiscale bubble")
        assert bubble["parameters"] == [
            {"name": "scale", "type": "float", "default": 1.0, "required": False,
             "description": "Scale of the bubble function (any nonzero value gives the same "
                            "solution)."}]
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    if COMM.rank == 0:
        assert "bubble-msfem: " in out and "    scale: float (default 1.0)" in out


def test_methods_plugin_option_and_hints(shared_tmp, capsys):
    assert main(["methods", "--plugin", str(PLUGIN)]) == 0  # already imported: no-op
    capsys.readouterr()
    out = shared_tmp / "out"
    status = main(["methods", "--plugin", str(shared_tmp / "nowhere.py")])
    assert status == 2
    err = capsys.readouterr().err
    if COMM.rank == 0:
        assert "nowhere.py' not found" in err
    assert main(["--help"]) == 0
    if COMM.rank == 0:
        assert "'msfem methods' lists every registered method" in capsys.readouterr().out
    for text in (TINY.replace('variant = "oversampling"', 'method = "lod"'),
                 TINY.replace("coarse_layers = 1 }", "coarse_layers = 1 }\nlayers = 2")):
        cfg = write_config(shared_tmp, text)
        check_refused(main(["solve", str(cfg), "--out", str(out)]), capsys, out,
                      ["[msfem]", "'msfem methods' lists the methods and their parameters"])
