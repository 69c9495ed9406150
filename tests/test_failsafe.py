"""Failing safely under MPI: one-rank errors, gmsh scripts that raise, Ctrl-C during a study.

The subprocess tests start their own ``mpiexec -n 2`` (so they run in the serial pass
only) and must end within 30 s: before the fixes each of them hung until killed. The
in-process tests of :func:`msfem._runtime.collective` run in both passes.
"""

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import TOY_CONFIG
from mpi4py import MPI

import msfem
from msfem import _runtime
from msfem.config import ConfigError
from msfem.studies import run_study

COMM = MPI.COMM_WORLD
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
    shutil.which("mpiexec")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "UCX_TLS": os.environ.get("UCX_TLS",
                                                                      "self,sm,tcp")}
TIMEOUT = 30.0



def mpi_subprocess(test):
    """A test that starts its own ``mpiexec -n 2``: serial pass only."""
    return pytest.mark.serial_only(pytest.mark.skipif(MPIEXEC is None,
                                                      reason="no mpiexec")(test))


def launch(script: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``mpiexec -n 2 python script args`` in its own process group."""
    return subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or ENV, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str, float]:
    """Wait for ``proc``; kill its whole process group and fail if it hangs."""
    t0 = time.perf_counter()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung for {timeout} s; stderr:\n{err}")
    elapsed = time.perf_counter() - t0
    _wait_for_group(proc.pid)
    return proc.returncode, out + err, elapsed


def _wait_for_group(pgid: int, timeout: float = 10.0) -> None:
    """Wait until every process of ``pgid`` is gone: the ranks can outlive ``mpiexec``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail(f"ranks of process group {pgid} still alive {timeout} s after mpiexec ended")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


TINY = TOY_CONFIG

#: Run the CLI with per-rank arguments: what a node-local file system can make ranks see.
PER_RANK_CLI = """
import sys
from mpi4py import MPI
from msfem.cli import main

rank = MPI.COMM_WORLD.rank
args = [a.split("|")[rank] if "|" in a else a for a in sys.argv[1:]]
sys.exit(main(args))
"""


# ----------------------------------------------------------------------------- user scripts
@mpi_subprocess
def test_uncaught_error_on_rank_1_aborts_the_job(tmp_path):
    script = write(tmp_path / "script.py", """
        import msfem
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.rank == 1:
            raise ValueError("boom on rank 1 only")
        comm.barrier()  # rank 0 waits here for ever without the hook
    """)
    status, output, _ = finish(launch(script))
    assert status != 0
    assert "ValueError: boom on rank 1 only" in output  # the traceback
    assert "msfem: rank 1 of 2: uncaught ValueError: boom on rank 1 only" in output


@pytest.mark.serial_only
def test_excepthook_is_installed_and_can_be_turned_off():
    code = "import sys, msfem; print(sys.excepthook is sys.__excepthook__)"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=ENV, timeout=TIMEOUT)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**ENV, _runtime.ABORT_ENV: "0"}, timeout=TIMEOUT)
    assert (on.stdout.strip(), off.stdout.strip()) == ("False", "True")


@pytest.mark.serial_only
@pytest.mark.parametrize("variables, threads", [({}, 1), ({"MSFEM_BLAS_THREADS": "2"}, 2),
                                                ({"OPENBLAS_NUM_THREADS": "2"}, 2)])
def test_blas_runs_one_thread_per_process_unless_the_user_says_otherwise(variables, threads):
    # numpy first: its BLAS is loaded before msfem; scipy's after (both must be limited)
    code = ("import numpy, msfem, scipy.linalg, threadpoolctl; print(max(i['num_threads'] "
            "for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'))")
    clean = {k: v for k, v in ENV.items() if k not in _runtime.THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**clean, **variables}, timeout=TIMEOUT)
    assert out.stdout.strip() == str(threads), out.stderr


@mpi_subprocess
def test_gmsh_script_that_raises_stops_every_rank(tmp_path):
    geometry = write(tmp_path / "broken_geometry.py", """
        def build(gmsh):
            raise RuntimeError("no such geometry")
    """)
    script = write(tmp_path / "script.py", f"""
        import msfem
        msfem.RefinedHierarchy.from_gmsh({str(geometry)!r}, 1)
    """)
    status, output, _ = finish(launch(script))
    assert status != 0
    assert "build() raised RuntimeError: no such geometry" in output
    assert "broken_geometry.py" in output


def test_gmsh_script_error_is_raised_on_every_rank(tmp_path_factory):
    root = COMM.bcast(tmp_path_factory.mktemp("gmsh") if COMM.rank == 0 else None, root=0)
    geometry = root / "broken_geometry.py"
    if COMM.rank == 0:
        write(geometry, "def build(gmsh):\n    raise RuntimeError('no such geometry')\n")
    COMM.barrier()
    with pytest.raises(ValueError, match=r"build\(\) raised RuntimeError: no such geometry"):
        msfem.RefinedHierarchy.from_gmsh(str(geometry), 1)


# ----------------------------------------------------------------------------- the CLI
@mpi_subprocess
def test_config_missing_on_rank_1_only(tmp_path):
    config = write(tmp_path / "case.toml", TINY)
    out = tmp_path / "out"
    cli = write(tmp_path / "cli.py", PER_RANK_CLI)
    status, output, _ = finish(launch(cli, "fine", f"{config}|{tmp_path / 'gone.toml'}",
                                      "--out", str(out)))
    assert status == 2, output
    assert "msfem: error on rank 1 of 2: configuration file" in output
    assert "gone.toml' not found" in output
    assert "Traceback" not in output and not out.exists()


@mpi_subprocess
def test_out_unwritable_on_rank_0_only(tmp_path):
    config = write(tmp_path / "case.toml", TINY)
    out = tmp_path / "out"
    cli = write(tmp_path / "cli.py", PER_RANK_CLI)
    status, output, _ = finish(launch(cli, "solve", str(config), "--out",
                                      f"/proc/msfem-out|{out}"))
    assert status == 2, output
    assert "msfem: error on rank 0 of 2: --out '/proc/msfem-out' is not writable" in output
    assert "offline" not in output  # refused before computing
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@mpi_subprocess
def test_error_during_computation_on_rank_1_only_aborts(tmp_path):
    # rank 1's fine solve fails while rank 0 goes on into the collective offline phase
    config = write(tmp_path / "case.toml", TINY)
    script = write(tmp_path / "cli.py", """
        import sys
        from mpi4py import MPI
        import msfem
        from msfem import cli

        if MPI.COMM_WORLD.rank == 1:
            def broken(*args, **kwargs):
                raise RuntimeError("disk quota exceeded on rank 1")
            msfem.solve_fine = broken
        sys.exit(cli.main(sys.argv[1:]))
    """)
    out = tmp_path / "out"
    status, output, elapsed = finish(launch(script, "solve", str(config), "--out", str(out)))
    assert status == 2, output
    assert "msfem: error on rank 1 of 2: RuntimeError: disk quota exceeded on rank 1" in output
    assert "aborting all ranks" in output
    assert not out.exists()


# ----------------------------------------------------------------------------- Ctrl-C
STUDY = """
[mesh]
cell = "quadrilateral"

[coefficient]
type = "hou-wu"
eps = 0.0625

[study]
eps = 0.0625
H_over_eps = [0.5, 1.0, 2.0, 4.0]
NM = 128
methods = ["fine", "linear"]
reference = "fine"
reference_factor = 2
figures = false
"""


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same_numbers(a: list[dict], b: list[dict]) -> bool:
    keys = ("nodal_linf", "nodal_l2", "l2_rel", "h1_rel", "energy_rel")
    return len(a) == len(b) and all(
        (ra["method"], ra["N"]) == (rb["method"], rb["N"])
        and all(math.isclose(float(ra[k]), float(rb[k]), rel_tol=1e-8) for k in keys)
        for ra, rb in zip(a, b))


@mpi_subprocess
def test_sigint_during_a_study_ends_every_rank_and_the_study_resumes(tmp_path):
    config = write(tmp_path / "study.toml", STUDY)
    out = tmp_path / "out"
    cli = write(tmp_path / "cli.py", PER_RANK_CLI)
    proc = launch(cli, "study", str(config), "--out", str(out))
    results = out / "results.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and len(rows(results)) >= 2:  # the first case is written
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # to mpiexec, which forwards it to the ranks
    t0 = time.monotonic()
    status, output, _ = finish(proc, timeout=TIMEOUT)
    assert time.monotonic() - t0 < 10
    assert status != 0, output
    assert "interrupted by SIGINT" in output
    partial = rows(results)
    assert 2 <= len(partial) < 8  # completed cases kept, not all of them
    # resume: only the missing cases are computed
    status, output, _ = finish(launch(cli, "study", str(config), "--out", str(out)),
                               timeout=120)
    assert status == 0, output
    assert f"{8 // 2 - len(partial) // 2} to compute" in output
    resumed = rows(results)
    # the same numbers as an uninterrupted run (in-process, one rank: to 1e-8)
    fresh = tmp_path / "fresh"
    run_study(config, fresh, MPI.COMM_SELF)
    assert same_numbers(resumed, rows(fresh / "results.csv"))


# ----------------------------------------------------------------------------- collective
def test_collective_raises_the_first_error_on_every_rank():
    failing = COMM.size - 1  # the last rank only
    with pytest.raises(ConfigError, match="bad on one rank") as info:
        with _runtime.collective(COMM):
            if COMM.rank == failing:
                raise ConfigError("bad on one rank")
    assert _runtime.is_collective(info.value)
    assert info.value.msfem_ranks == [failing]


def test_collective_sends_unpicklable_errors_as_text():
    class Local(Exception):  # a local class cannot be pickled
        pass

    with pytest.raises((Local, _runtime.RankError), match="not portable"):
        with _runtime.collective(COMM):
            if COMM.rank == 0:
                raise Local("not portable")


def test_collective_passes_when_every_rank_succeeds():
    with _runtime.collective(COMM):
        value = COMM.rank
    assert value == COMM.rank


# ----------------------------------------------------------------------------- leftovers
SMALL_STUDY = """
[mesh]
cell = "quadrilateral"

[coefficient]
type = "hou-wu"
eps = 0.25

[study]
N = [2, 4]
NM = 32
methods = ["fine", "linear"]
figures = false
"""


def shared_dir(factory, name: str) -> Path:
    return COMM.bcast(factory.mktemp(name) if COMM.rank == 0 else None, root=0)


@pytest.mark.usefixtures("restore_msfem_logging")
def test_truncated_rows_are_computed_again(tmp_path_factory):
    root = shared_dir(tmp_path_factory, "truncated")
    config = root / "study.toml"
    if COMM.rank == 0:
        write(config, SMALL_STUDY)
    COMM.barrier()
    out = root / "out"
    first = run_study(config, out)
    results = out / "results.csv"
    text = results.read_text()
    lines = text.splitlines(keepends=True)
    assert len(lines) == 5  # header + 2 cases x 2 methods
    COMM.barrier()
    if COMM.rank == 0:  # a row with missing cells, and a last line cut inside a number
        middle = lines[2].rsplit(",", 3)[0] + "\n"
        results.write_text(lines[0] + lines[1] + middle + lines[3] + lines[4][:-9])
    COMM.barrier()
    again = run_study(config, out)
    assert results.read_text().splitlines()[:1] == text.splitlines()[:1]
    assert same_numbers([{k: str(v) for k, v in r.items()} for r in again],
                        [{k: str(v) for k, v in r.items()} for r in first])
    assert len(rows(results)) == 4


@pytest.mark.usefixtures("restore_msfem_logging")
def test_a_study_directory_has_one_writer(tmp_path_factory):
    """A live lock is refused on every rank; a lock of a dead process is taken over."""
    import socket

    root = shared_dir(tmp_path_factory, "locked")
    config = root / "study.toml"
    lock = root / ".out.lock"
    if COMM.rank == 0:
        write(config, SMALL_STUDY)
        write(lock, f"{socket.gethostname()} {os.getppid()}")  # alive: the test runner's parent
    COMM.barrier()
    with pytest.raises(OSError, match="another run is writing to .*out"):
        run_study(config, root / "out")
    assert not (root / "out" / "results.csv").exists()
    COMM.barrier()
    if COMM.rank == 0:  # a study killed with kill -9: its process is gone
        write(lock, f"{socket.gethostname()} {2**22 + 4321}")
    COMM.barrier()
    assert len(run_study(config, root / "out")) == 4
    COMM.barrier()  # rank 0 removes the lock after the study
    assert not lock.exists()


@pytest.mark.usefixtures("restore_msfem_logging")
def test_stale_partial_directory_of_a_killed_run_is_replaced(tmp_path_factory, capsys):
    from msfem.cli import main

    root = shared_dir(tmp_path_factory, "stale")
    config = root / "case.toml"
    out = root / "out"
    if COMM.rank == 0:
        write(config, TINY + "\n[output]\nfields = false\npng = false\n")
        stale = root / ".out.partial"
        stale.mkdir()
        (stale / "metrics.json").write_text("{half written")
    COMM.barrier()
    assert main(["fine", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert '"command": "fine"' in (out / "metrics.json").read_text()
    assert sorted(p.name for p in root.glob(".out*")) == []


# ----------------------------------------------------------------------------- size guard
BIG = TINY.replace("N = 4", "N = 8192").replace("eps = 0.25", "eps = 0.001")


@pytest.mark.usefixtures("restore_msfem_logging")
def test_run_far_too_big_is_refused_before_allocating(tmp_path_factory, capsys):
    from msfem.cli import main

    root = shared_dir(tmp_path_factory, "big")
    config, out = root / "big.toml", root / "out"
    if COMM.rank == 0:
        write(config, BIG)
    COMM.barrier()
    t0 = time.perf_counter()
    assert main(["fine", str(config), "--out", str(out)]) == 2
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    if COMM.rank == 0:
        line = err.strip().splitlines()[-1]
        assert line.startswith("msfem: error: 'msfem fine' with 4.3e+09 fine dofs needs about")
        assert "lower [mesh] N or M" in line and "--force" in line
    assert not out.exists()


@pytest.mark.usefixtures("restore_msfem_logging")
def test_memory_of_the_job_can_be_set_and_force_overrides(tmp_path_factory, capsys,
                                                          monkeypatch):
    from msfem.cli import main

    root = shared_dir(tmp_path_factory, "force")
    config, out = root / "case.toml", root / "out"
    if COMM.rank == 0:
        write(config, TINY + "\n[output]\nfields = false\npng = false\n")
    COMM.barrier()
    monkeypatch.setenv(_runtime.MEMORY_ENV, "10MB")
    assert main(["fine", str(config), "--out", str(out)]) == 2
    assert "needs about" in capsys.readouterr().err or COMM.rank > 0
    assert not out.exists()
    assert main(["fine", str(config), "--out", str(out), "--force"]) == 0
    assert (out / "metrics.json").exists()


@pytest.mark.serial_only
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("N", [16, 24, 32])
def test_memory_estimate_is_within_a_factor_2_of_the_peak(tmp_path, N):
    config = write(tmp_path / "case.toml", TINY.replace("N = 4", f"N = {N}").replace(
        "M = 8", "M = 16").replace("eps = 0.25", f"eps = {8 / (16 * N)}")
        + "\n[output]\nfields = false\npng = false\n")
    # the peak of a run after a first one (JIT compilation, MPI buffers and lazy imports
    # are one-off costs of a process, outside the estimate): VmHWM reset by clear_refs
    script = write(tmp_path / "peak.py", """
        import sys
        from pathlib import Path
        from msfem.cli import main
        assert main(sys.argv[1:]) == 0
        Path("/proc/self/clear_refs").write_text("5")
        status = main(sys.argv[1:])
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
        print("peak", float(hwm.split()[1]) * 1024)
        sys.exit(status)
    """)
    proc = subprocess.run([sys.executable, str(script), "fine", str(config), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=ENV,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    peak = float(proc.stdout.split("peak")[-1])
    estimate = float(proc.stderr.split("memory estimate: ")[2].split(" GB")[0]) * 2**30
    print(f"N = {N}: estimate {estimate / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB")
    assert 0.5 < estimate / peak < 2.0


def test_local_problem_failing_on_one_rank_raises_on_every_rank(comm):
    """MultiscaleSpace.build(): an error in one rank's local problems reaches all ranks."""
    import msfem
    from msfem.methods.msfem import MsFEM

    class FailsOnLastRank(MsFEM):
        def local(self, cell, engine):
            if comm.rank == comm.size - 1:
                raise msfem.SolverError(f"local problem of cell {cell} failed")
            return super().local(cell, engine)

        def local_batch(self, cells, engine):
            return [self.local(int(c), engine) for c in cells]

    h = msfem.StructuredHierarchy(comm, 4, 4, "quadrilateral")
    space = msfem.MultiscaleSpace(h, msfem.diffusion(1.0, 1.0), FailsOnLastRank(variant="linear"))
    with pytest.raises(msfem.SolverError, match="local problem of cell"):
        space.build()
