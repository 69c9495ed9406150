"""A catalogue of bad inputs: each is refused with one line naming the key, value or file.

Every CLI case runs ``msfem.cli.main`` in-process (serial, and under ``mpiexec -n 2`` where
every rank must agree on the error) and asserts: status 2, exactly one ``msfem: error:``
line as the last line of stderr containing the expected fragments, no traceback, nothing
written to ``--out`` (nor a ``.partial`` sibling), and an answer within seconds -- every
case fails in validation, before any computation. The Python API cases assert the
documented exception type and message. A few cases run as real subprocesses (the
``msfem`` entry point, exit status and stderr as a user sees them).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TOY_CONFIG, write_text_config
from mpi4py import MPI

import msfem
from msfem.cli import main
from msfem.config import ConfigError

COMM = MPI.COMM_WORLD
pytestmark = pytest.mark.usefixtures("restore_msfem_logging")

#: 4 x 4 coarse cells of 8 x 8 fine cells, Hou-Wu at eps = 1/4: resolved.
BASE = TOY_CONFIG
ELASTIC = BASE + '\n[problem]\ntype = "elasticity"\n'
CELL = """
[cell]
physics = "conductivity"
microstructure = "inclusion"
a1 = 1.0
a2 = 10.0
fraction = 0.25
n = 8
"""
RVE = """
[rve]
window_sizes = [2, 4]
realisations = 2
"""
STUDY = """
[mesh]
cell = "quadrilateral"

[coefficient]
type = "hou-wu"
eps = 0.25

[study]
N = [2]
NM = 32
methods = ["fine", "linear"]
"""


def sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def coefficient(body: str) -> str:
    return sub(BASE, 'type = "hou-wu"\neps = 0.25', body)


# (command, configuration text, fragments of the message)
CASES = {
    # [coefficient]: signs, finiteness, ranges
    "eps-zero": ("fine", sub(BASE, "eps = 0.25", "eps = 0"),
                 ["[coefficient] eps = 0", "positive"]),
    "eps-negative": ("fine", sub(BASE, "eps = 0.25", "eps = -0.125"),
                     ["eps = -0.125 must be positive"]),
    "eps-inf": ("fine", sub(BASE, "eps = 0.25", "eps = inf"),
                ["[coefficient] eps = inf", "finite"]),
    "eps-nan": ("fine", sub(BASE, "eps = 0.25", "eps = nan"),
                ["[coefficient] eps = nan", "finite"]),
    "P-inf": ("fine", BASE + "P = inf\n", ["[coefficient] P = inf", "finite"]),
    "eps-string": ("fine", sub(BASE, "eps = 0.25", 'eps = "small"'),
                   ["[coefficient] eps = 'small' must be a number"]),
    "type-typo": ("fine", sub(BASE, '"hou-wu"', '"houwu"'), ["[coefficient] type = 'houwu'"]),
    "eps-missing": ("fine", sub(BASE, "eps = 0.25", ""), ["'hou-wu' needs key 'eps'"]),
    "cell-zero": ("fine", coefficient('type = "random-checkerboard"\na1 = 1.0\na2 = 2.0\n'
                                      'cell = 0.0\nseed = 1'),
                  ["[coefficient] cell = 0.0 must be positive"]),
    "fraction-above-1": ("fine", coefficient('type = "laminate"\na1 = 1.0\na2 = 2.0\n'
                                             'eps = 0.25\nfraction = 1.5'),
                         ["[coefficient] fraction = 1.5"]),
    "direction-out-of-range": ("fine", coefficient('type = "laminate"\na1 = 1.0\na2 = 2.0\n'
                                                   'eps = 0.25\ndirection = 2'),
                               ["[coefficient] direction = 2"]),
    "channels-none": ("fine", coefficient('type = "channels"\ncontrast = 10.0\nnumber = 0\n'
                                          'width = 0.125'), ["[coefficient] number = 0"]),
    "correlation-negative": ("fine", coefficient('type = "lognormal"\nmu = 0.0\nsigma = 1.0\n'
                                                 'correlation_length = -1.0\nseed = 1'),
                             ["correlation_length = -1.0 must be positive"]),
    "constant-wrong-length": ("fine", coefficient('type = "constant"\nvalue = [1.0, 2.0, 3.0]'),
                              ["[coefficient] value = [1.0, 2.0, 3.0]"]),
    # [mesh]
    "lower-string": ("fine", sub(BASE, "M = 8", 'M = 8\nlower = "a"'),
                     ["[mesh] lower = 'a' must be a list"]),
    "upper-short": ("fine", sub(BASE, "M = 8", "M = 8\nupper = [1]"),
                    ["[mesh] upper = [1] must be a list of 2 numbers"]),
    "empty-domain": ("fine", sub(BASE, "M = 8", "M = 8\nlower = [2, 2]"),
                     ["[mesh] empty domain", "lower = [2, 2]"]),
    "nan-corner": ("fine", sub(BASE, "M = 8", "M = 8\nlower = [nan, 0.0]"),
                   ["[mesh] lower[0] = nan", "finite"]),
    "inf-corner": ("fine", sub(BASE, "M = 8", "M = 8\nupper = [inf, 1.0]"),
                   ["[mesh] upper[0] = inf", "finite"]),
    "N-negative": ("fine", sub(BASE, "N = 4", "N = -3"), ["[mesh] N = -3 must be a positive"]),
    "M-string": ("fine", sub(BASE, "M = 8", 'M = "8"'), ["[mesh] M = '8' must be an integer"]),
    "cell-type": ("fine", sub(BASE, "M = 8", 'M = 8\ncell = "hexagon"'),
                  ["[mesh] cell = 'hexagon'"]),
    "missing-section": ("fine", "[mesh]\nN = 4\nM = 8\n", ["missing section [coefficient]"]),
    # [problem]
    "degree-zero": ("fine", BASE + "\n[problem]\ndegree = 0\n", ["[problem] degree = 0"]),
    "degree-fraction": ("fine", BASE + "\n[problem]\ndegree = 1.5\n",
                        ["[problem] degree = 1.5 must be an integer"]),
    "f-nan": ("fine", BASE + "\n[problem]\nf = nan\n", ["[problem] f = nan", "finite"]),
    "f-vector-for-diffusion": ("fine", BASE + "\n[problem]\nf = [1, 2]\n",
                               ["[problem] f = [1, 2] must be a number"]),
    "f-string": ("fine", BASE + '\n[problem]\nf = "x"\n', ["[problem] f = 'x' must be a number"]),
    "f-elasticity-length": ("fine", ELASTIC + "f = [1.0, 2.0, 3.0]\n",
                            ["[problem] f = [1.0, 2.0, 3.0] must be a list of 2 numbers"]),
    "nu-half": ("fine", ELASTIC + "nu = 0.5\n", ["[problem] nu = 0.5"]),
    "reaction-negative": ("fine", BASE + '\n[problem]\ntype = "reaction-diffusion"\n'
                                         'reaction = -1.0\n', ["[problem] reaction = -1.0"]),
    "dirichlet-inf": ("fine", BASE + "\n[problem]\ndirichlet = -inf\n",
                      ["[problem] dirichlet = -inf", "finite"]),
    # PETSc options, checked against this build
    "pc-hypre": ("fine", BASE + '\n[solver]\npc_type = "hypre"\n',
                 ["[solver] pc_type = 'hypre'", "available: "]),
    "ksp-typo": ("fine", BASE + '\n[solver]\nksp_type = "cgg"\n', ["[solver] ksp_type = 'cgg'"]),
    "umfpack": ("fine", BASE + '\n[solver]\npc_type = "lu"\npc_factor_mat_solver_type = '
                               '"umfpack"\n', ["'umfpack' is not installed", "mumps"]),
    "rtol-nan": ("fine", BASE + "\n[solver]\nksp_rtol = nan\n", ["[solver] ksp_rtol = nan"]),
    "coarse-hypre": ("solve", BASE + '\n[msfem]\ncoarse_solver = { pc_type = "hypre" }\n',
                     ["[msfem] coarse_solver pc_type = 'hypre'"]),
    "local-package": ("solve", BASE + '\n[msfem]\nlocal_solver = { pc_factor_mat_solver_type = '
                                      '"pastix" }\n', ["[msfem] local_solver", "'pastix'"]),
    "method-typo": ("solve", BASE + '\n[msfem]\nmethod = "linaer"\n',
                    ["[msfem] method = 'linaer' is not a registered method"]),
    "output-format": ("fine", BASE + '\n[output]\nformat = "vtk"\n', ["[output] format = 'vtk'"]),
    # study, homogenize, rve
    "study-eps-nan": ("study", STUDY + "eps = nan\n", ["[study] eps = nan", "finite"]),
    "study-method": ("study", sub(STUDY, '"linear"]', '"lineer"]'), ["lineer"]),
    "study-pc-hypre": ("study", STUDY + '\n[solver]\npc_type = "hypre"\n',
                       ["[solver] pc_type = 'hypre'"]),
    "cell-negative-phase": ("homogenize", sub(CELL, "a2 = 10.0", "a2 = -1.0"),
                            ["[cell] a2 = -1.0 must be positive"]),
    "cell-fraction-nan": ("homogenize", sub(CELL, "fraction = 0.25", "fraction = nan"),
                          ["[cell] fraction = nan", "finite"]),
    "cell-degree-zero": ("homogenize", CELL + "degree = 0\n", ["[cell] degree = 0"]),
    "cell-pc-hypre": ("homogenize", CELL + '\n[solver]\npc_type = "hypre"\n',
                      ["[solver] pc_type = 'hypre'"]),
    "rve-window-zero": ("rve", sub(RVE, "[2, 4]", "[0, 4]"), ["[rve] window_sizes = [0, 4]"]),
    "rve-precision-inf": ("rve", RVE + "precision = inf\n", ["[rve] precision = inf", "finite"]),
}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def refused(capsys, argv: list[str], fragments: list[str], out: Path | None) -> str:
    """Run main; assert the refusal as described in the module docstring; return stderr."""
    t0 = time.perf_counter()
    status = main(argv)
    elapsed = time.perf_counter() - t0
    captured = capsys.readouterr()
    err = captured.err
    assert status == 2, (status, err)
    assert elapsed < 30
    if out is not None:
        assert not out.exists()
        assert leftovers(out) == []
    if COMM.rank == 0:
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith("msfem: error: "), err
        assert err.count("msfem: error") == 1 and "Traceback" not in err, err
        for fragment in fragments:
            assert fragment in lines[-1], (fragment, lines[-1])
    else:  # one message, from rank 0
        assert "msfem: error" not in err
    return err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_configuration_is_refused(shared_tmp, capsys, case):
    command, text, fragments = CASES[case]
    cfg = write_text_config(shared_tmp, text)
    out = shared_tmp / "out"
    argv = [command, str(cfg)] + (["--json"] if command == "homogenize" else ["--out", str(out)])
    refused(capsys, argv, fragments, out)


# ----------------------------------------------------------------------------- files
def _not_utf8(path: Path) -> Path:
    path.write_bytes(b"\xff\xfe\x00garbage\x81\x82")
    return path


def _not_toml(path: Path) -> Path:
    path.write_text("[mesh\nN = 4\n")
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


FILES = {
    "missing": (lambda p: p, ["nowhere.toml", "not found"]),
    "directory": (_directory, ["nowhere.toml", "is a directory"]),
    "not-utf8": (_not_utf8, ["nowhere.toml", "is not UTF-8"]),
    "not-toml": (_not_toml, ["nowhere.toml", "is not valid TOML"]),
}


@pytest.mark.parametrize("command", ["fine", "study", "homogenize"])
@pytest.mark.parametrize("kind", sorted(FILES))
def test_bad_configuration_file_is_named(shared_tmp, capsys, kind, command):
    make, fragments = FILES[kind]
    path = shared_tmp / "nowhere.toml"
    if COMM.rank == 0:
        make(path)
    COMM.barrier()
    out = shared_tmp / "out"
    argv = [command, str(path)] + (["--json"] if command == "homogenize" else ["--out", str(out)])
    refused(capsys, argv, fragments, out)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_unreadable_configuration_file(shared_tmp, capsys):
    # /proc/self/mem exists but reading it from offset 0 fails (EIO), even for root
    out = shared_tmp / "out"
    refused(capsys, ["fine", "/proc/self/mem", "--out", str(out)],
            ["'/proc/self/mem' cannot be read"], out)


# ----------------------------------------------------------------------------- --out
def _file(root: Path) -> Path:
    if COMM.rank == 0:
        (root / "afile").write_text("not a directory\n")
    COMM.barrier()
    return root / "afile"


OUTS = {
    "is-a-file": (lambda root: _file(root), ["afile' exists and is not a directory"]),
    "under-a-file": (lambda root: _file(root) / "sub", ["afile' is not a directory"]),
    "proc": (lambda root: Path("/proc/msfem-no-such-dir"), ["not writable"]),
}


@pytest.mark.parametrize("command", ["fine", "study", "rve"])
@pytest.mark.parametrize("kind", sorted(OUTS))
def test_unusable_out_is_refused_before_computing(shared_tmp, capsys, kind, command):
    make, fragments = OUTS[kind]
    out = make(shared_tmp)
    text = {"fine": BASE, "study": STUDY, "rve": RVE}[command]
    cfg = write_text_config(shared_tmp, text)
    before = out.read_text() if out.is_file() else None
    err = refused(capsys, [command, str(cfg), "--out", str(out)], [str(out), *fragments], None)
    if before is not None:
        assert out.read_text() == before  # the file is untouched
    if COMM.rank == 0:
        assert "fine reference" not in err and "offline" not in err  # nothing computed


# ----------------------------------------------------------------------------- Python API
def _hierarchy(**kw):
    return msfem.StructuredHierarchy(MPI.COMM_SELF, N=2, M=2, **kw)


def _fine_with(options):
    h = _hierarchy()
    msfem.solve_fine(h.fine, msfem.diffusion(1.0, f=1.0), petsc_options=options)


API = {
    "HouWu-negative-eps": (lambda: msfem.HouWu(eps=-1 / 8), ValueError,
                           "HouWu: eps = -0.125 must be positive"),
    "HouWu-zero-eps": (lambda: msfem.HouWu(eps=0.0), ValueError, "eps = 0.0 must be positive"),
    "HouWu-inf-eps": (lambda: msfem.HouWu(eps=float("inf")), ValueError, "must be finite"),
    "HouWu-nan-P": (lambda: msfem.HouWu(eps=0.25, P=float("nan")), ValueError, "P = nan"),
    "Laminate-nan": (lambda: msfem.Laminate(a1=float("nan"), a2=2.0, eps=0.25), ValueError,
                     "Laminate: a1 = nan must be finite"),
    "nan-corner": (lambda: _hierarchy(lower=[float("nan"), 0.0]), ValueError,
                   "lower = [nan, 0.0] must be 2 finite numbers"),
    "short-corner": (lambda: _hierarchy(upper=[1.0]), ValueError, "upper = [1.0] must be 2"),
    "empty-domain": (lambda: _hierarchy(lower=[2.0, 2.0]), ValueError, "empty domain"),
    "f-nan": (lambda: msfem.diffusion(1.0, f=float("nan")), ValueError,
              "source f = nan must be finite"),
    "f-shape": (lambda: msfem.diffusion(1.0, f=[1.0, 2.0]), ValueError,
                "source f = [1.0, 2.0] must be a number"),
    "degree-zero": (lambda: msfem.diffusion(1.0, degree=0), ValueError, "degree = 0"),
    "pc-hypre": (lambda: _fine_with({"pc_type": "hypre"}), ValueError, "pc_type = 'hypre'"),
    "ksp-typo": (lambda: _fine_with({"ksp_type": "cgg"}), ValueError, "ksp_type = 'cgg'"),
    "config-directory": (lambda: msfem.config.load(Path(__file__).parent), ConfigError,
                         "is a directory"),
}


@pytest.mark.parametrize("case", sorted(API))
def test_python_api_raises_documented_errors(case):
    make, kind, fragment = API[case]
    with pytest.raises(kind) as info:
        make()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- subprocesses
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.serial_only
@pytest.mark.parametrize("case", ["eps-zero", "lower-string", "f-nan", "pc-hypre"])
def test_entry_point_exit_status_and_message(tmp_path, case):
    command, text, fragments = CASES[case]
    cfg = tmp_path / "case.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "msfem", command, str(cfg), "--out", str(out)],
                          capture_output=True, text=True, timeout=30, env=ENV)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("msfem: error: ") and "Traceback" not in proc.stderr
    assert all(f in last for f in fragments), last
    assert not out.exists() and leftovers(out) == []
