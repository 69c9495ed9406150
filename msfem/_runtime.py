"""Runtime shared by every module: MPI ordering, rank-0 logging, atomic files, failing safely.

``import msfem`` imports :mod:`dolfinx_solver` first when it is installed (the
``dolfinx-solver-real`` wheel needs it to load MPI before PETSc); nothing else in msfem
cares how dolfinx was installed.

**Failing safely under MPI.** Once PETSc is loaded, a rank that ends with an uncaught
exception hangs in ``PetscFinalize`` while the other ranks wait for it in a collective
(even under ``python -m mpi4py``), so a one-rank error would hold the job until its wall
time. Three mechanisms prevent that:

* :func:`install_excepthook` (run by ``import msfem``): an uncaught exception on any rank
  of a parallel run prints its traceback and ``msfem: rank R of N: ...`` and calls
  ``MPI.COMM_WORLD.Abort``. ``MSFEM_ABORT_ON_ERROR=0`` in the environment turns it off;
  interactive sessions and serial runs are left alone.
* :func:`collective`: a block of *local* checks (reading a file, validating a
  configuration, probing an output directory) whose failure on any rank is raised on
  every rank, with the first failing rank's message -- so all ranks agree before
  computing or writing.
* :func:`run_command` (the command line): a collective error exits with status 2 on every
  rank; an error that the other ranks do not reach within :data:`ERROR_GRACE` seconds is
  printed with its rank and aborts the job; SIGINT/SIGTERM abort every rank at once
  (:func:`abort_on_signals`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator

try:  # wheels route: loads MPI/PETSc in the right order
    import dolfinx_solver  # noqa: F401
except ImportError:  # conda-forge / spack route
    pass

from mpi4py import MPI

logger = logging.getLogger("msfem")

#: Environment variables by which a user chooses the BLAS threads of every process.
THREAD_VARIABLES = ("MSFEM_BLAS_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "OMP_NUM_THREADS")


def limit_blas_threads() -> int | None:
    """One BLAS thread per process unless a :data:`THREAD_VARIABLES` variable says otherwise.

    msfem parallelises over MPI ranks; its dense algebra works on small blocks (condensed
    patch problems, element data) where BLAS threads gain little, and under ``mpirun`` every
    rank's OpenBLAS starts a thread per core: 2 ranks x 2 threads on 2 cores made the LOD
    tests 14x slower (92 s against 6.7 s). ``MSFEM_BLAS_THREADS=n`` sets n threads (run by
    ``import msfem``; returns the limit set, or None when the user's variables decide).
    """
    if any(os.environ.get(v) for v in THREAD_VARIABLES[1:]):
        return None
    threads = max(1, int(os.environ.get("MSFEM_BLAS_THREADS") or 1))
    for variable in THREAD_VARIABLES[1:]:  # BLAS libraries loaded later (scipy's) read it
        os.environ[variable] = str(threads)
    import threadpoolctl  # the ones loaded already (numpy's, when imported first)

    threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    return threads


limit_blas_threads()


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return MPI.COMM_WORLD.rank == 0


def configure_logging(level: int = logging.INFO) -> None:
    """Send msfem log records of rank 0 to stderr (called by the CLI, not at import)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[msfem] %(message)s"))
    handler.addFilter(_RankZeroFilter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


#: Set by :func:`abort_on_signals` as soon as SIGINT/SIGTERM arrives: from then on no
#: file is replaced, so what the job leaves behind is what it had when it was interrupted
#: (a rank may compute on for a moment before ``MPI_Abort`` reaches it).
_INTERRUPTED = threading.Event()


def atomic_write_text(path: str | Path, text: str, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``text`` to ``path`` on rank 0 through a temporary file and a rename.

    Collective. A run killed half-way therefore never leaves a truncated file behind, and
    a run being aborted by a signal replaces no file any more. A failure of rank 0 (disk
    full, permissions) is raised as :class:`OSError` naming the file on every rank.
    """
    with collective(comm):
        if comm.rank == 0:
            path = Path(path)
            tmp = None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
                if _INTERRUPTED.is_set():
                    os.unlink(tmp)
                    return
                os.replace(tmp, path)
            except OSError as err:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                raise OSError(f"cannot write {str(path)!r}: {err.strerror or err}") from err


def atomic_write_json(path: str | Path, data: Any, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``data`` as indented JSON atomically on rank 0 (see :func:`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", comm)


@contextlib.contextmanager
def atomic_directory(path: str | Path, comm: MPI.Comm = MPI.COMM_WORLD) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only on success.

    Collective. Writers (also collective dolfinx writers such as VTX) put their files in
    the yielded directory; if the block raises, the partial output is deleted and
    ``path`` keeps its previous content.
    """
    import shutil

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with collective(comm):  # a stale .partial of a killed run is removed here
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                tmp.mkdir(parents=True)
            except OSError as err:
                raise OSError(f"cannot create {str(tmp)!r} for --out {str(path)!r}: "
                              f"{err.strerror or err}") from err
    try:
        yield tmp
    except BaseException:
        # no collective here: the other ranks may not have raised (see run_command)
        if comm.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    with collective(comm):
        if comm.rank == 0:
            try:
                if path.exists():
                    old = path.with_name(f".{path.name}.old")
                    shutil.rmtree(old, ignore_errors=True)
                    os.replace(path, old)
                    os.replace(tmp, path)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, path)
            except OSError as err:
                shutil.rmtree(tmp, ignore_errors=True)
                raise OSError(f"cannot replace {str(path)!r}: {err.strerror or err}") from err


# ----------------------------------------------------------------------- failing safely
#: Environment variable: ``0`` turns off :func:`install_excepthook`'s abort.
ABORT_ENV = "MSFEM_ABORT_ON_ERROR"
#: Seconds :func:`run_command` waits for the other ranks to reach the same error before it
#: aborts the job (environment: ``MSFEM_ERROR_GRACE``).
ERROR_GRACE = 3.0
#: Exit status of a reported error (as argparse uses for usage errors).
EXIT_ERROR = 2


class RankError(RuntimeError):
    """An error of another rank whose exception could not be sent (not picklable)."""


def _parallel() -> bool:
    return MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.size > 1


def _abort_enabled() -> bool:
    return os.environ.get(ABORT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _where(comm: MPI.Comm = MPI.COMM_WORLD) -> str:
    return f"rank {comm.rank} of {comm.size}"


def abort(message: str, status: int = 1) -> None:
    """Print ``message`` to stderr (from this rank) and end every rank (``MPI_Abort``)."""
    print(message, file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    time.sleep(0.5)  # let mpiexec forward the output before it kills the job
    MPI.COMM_WORLD.Abort(status)


def _excepthook(kind: type[BaseException], value: BaseException,
                tb: TracebackType | None) -> None:
    """``sys.excepthook`` of ``import msfem``: print, then abort a parallel run."""
    _previous_excepthook(kind, value, tb)
    interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)
    if not _parallel() or interactive or not _abort_enabled():
        return
    status = 128 + signal.SIGINT if issubclass(kind, KeyboardInterrupt) else 1
    abort(f"msfem: {_where()}: uncaught {kind.__name__}: {value} -- aborting all ranks "
          f"({ABORT_ENV}=0 disables this)", status)


_previous_excepthook = sys.excepthook


def install_excepthook() -> bool:
    """Make an uncaught exception on any rank end the whole MPI job (run at ``import msfem``).

    The hook prints the traceback as usual, then ``msfem: rank R of N: uncaught ...`` and
    calls ``MPI.COMM_WORLD.Abort`` -- without it the job hangs: the failing rank waits in
    ``PetscFinalize`` and the others in their next collective. Serial and interactive
    runs are unchanged; ``MSFEM_ABORT_ON_ERROR=0`` leaves ``sys.excepthook`` alone. A hook
    someone else installed first (IPython, a debugger) is kept.

    Returns:
        Whether the hook is installed.
    """
    global _previous_excepthook
    if sys.excepthook is _excepthook:
        return True
    if not _abort_enabled() or sys.excepthook is not sys.__excepthook__:
        return False
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    return True


def mark_collective(err: BaseException, ranks: list[int] | None = None,
                    size: int | None = None) -> BaseException:
    """Record on ``err`` that every rank raises it (``ranks``: the ranks where it arose)."""
    err.msfem_collective = True  # type: ignore[attr-defined]
    err.msfem_ranks = ranks  # type: ignore[attr-defined]
    err.msfem_size = size  # type: ignore[attr-defined]
    return err


def is_collective(err: BaseException) -> bool:
    """Whether ``err`` is raised on every rank (see :func:`collective`)."""
    return bool(getattr(err, "msfem_collective", False))


def _portable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RankError(f"{type(err).__name__}: {err}")


@contextlib.contextmanager
def collective(comm: MPI.Comm = MPI.COMM_WORLD) -> Iterator[None]:
    """Run a block of local work on every rank; if it raises on any rank, raise on all.

    Collective (one ``allgather`` after the block). The block must not communicate. Every
    rank raises the exception of the first failing rank (its own one if that is this
    rank), marked by :func:`mark_collective`, so a check that fails on one rank only (a
    file that rank cannot read, a directory it cannot write) stops all ranks with the
    same message instead of leaving the others waiting.
    """
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # KeyboardInterrupt etc. propagate: they abort
        error = err
    if comm.size == 1:
        if error is not None:
            raise mark_collective(error, [0], 1)
        return
    errors = comm.allgather(None if error is None else _portable(error))
    failed = [r for r, e in enumerate(errors) if e is not None]
    if not failed:
        return
    first = failed[0]
    raised = error if error is not None and comm.rank == first else errors[first]
    assert raised is not None
    raise mark_collective(raised, failed, comm.size) from error


def error_message(err: BaseException) -> str:
    """One line for an error: its message, with the type for unexpected ones."""
    from msfem.solvers import SolverError  # (imports PETSc: not at module import)

    text = " ".join(str(err).split()) or type(err).__name__
    expected = (ValueError, OSError, SolverError, RankError, ImportError, MemoryError)
    return text if isinstance(err, expected) else f"{type(err).__name__}: {text}"


def _error_channel(comm: MPI.Comm) -> MPI.Comm:
    """A duplicate of ``comm`` used only to agree on errors (created once, collectively)."""
    key = comm.py2f() if comm != MPI.COMM_WORLD else -1
    channel = _CHANNELS.get(key)
    if channel is None:
        channel = _CHANNELS[key] = comm.Dup()
    return channel


_CHANNELS: dict[int, MPI.Comm] = {}


def _grace() -> float:
    try:
        return float(os.environ.get("MSFEM_ERROR_GRACE", ERROR_GRACE))
    except ValueError:
        return ERROR_GRACE


def report_error(err: BaseException, comm: MPI.Comm, prog: str, channel: MPI.Comm) -> int:
    """Print ``err`` once and return :data:`EXIT_ERROR` on every rank, or abort the job.

    A collective error (:func:`is_collective`) is printed by rank 0 (with the failing
    rank when not all ranks failed). Any other error waits up to :data:`ERROR_GRACE`
    seconds for the other ranks to fail too (a non-blocking barrier on ``channel``); if
    they do not, this rank prints the message with its rank and aborts the job.
    """
    message = error_message(err)
    if comm.size == 1:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    if is_collective(err):
        ranks, size = getattr(err, "msfem_ranks", None), getattr(err, "msfem_size", None)
        where = "" if not ranks or len(ranks) == size else \
            f" on rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} of {size}"
        if comm.rank == 0:
            print(f"{prog}: error{where}: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    request = channel.Ibarrier()
    deadline = time.monotonic() + _grace()
    while not request.Test():
        if time.monotonic() > deadline:
            abort(f"{prog}: error on {_where(comm)}: {message} -- the other ranks did not "
                  f"fail; aborting all ranks", EXIT_ERROR)
        time.sleep(0.005)
    messages = channel.gather(message, root=0)
    if comm.rank == 0:
        assert messages is not None
        for text in dict.fromkeys(messages):  # distinct messages, in rank order
            ranks = [r for r, m in enumerate(messages) if m == text]
            where = "" if len(ranks) == comm.size else \
                f" on ranks {', '.join(map(str, ranks))} of {comm.size}"
            print(f"{prog}: error{where}: {text}", file=sys.stderr, flush=True)
    return EXIT_ERROR


@contextlib.contextmanager
def abort_on_signals(comm: MPI.Comm = MPI.COMM_WORLD) -> Iterator[None]:
    """SIGINT/SIGTERM end every rank at once (parallel) or raise KeyboardInterrupt (serial).

    In parallel a rank blocked in an MPI wait never runs Python's signal handlers, and a
    rank that stops alone leaves the others spinning. Here the C-level handler wakes a
    thread (:func:`signal.set_wakeup_fd`) that prints ``interrupted by SIGINT`` and calls
    ``MPI_Abort(128 + signal)`` -- whichever rank gets there first ends the job. Files
    written atomically stay whole (a study keeps its completed rows). Previous handlers
    are restored on exit; outside the main thread nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}
    if comm.size == 1:
        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(signal.Signals(signum).name)

        for s in signals:
            signal.signal(s, interrupt)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    old_fd = signal.set_wakeup_fd(write_fd)
    for s in signals:
        signal.signal(s, lambda signum, frame: None)  # the watcher acts

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 1)
            except OSError:
                return
            if not data:
                return
            if data[0] in signals:
                _INTERRUPTED.set()
                name = signal.Signals(data[0]).name
                abort(f"msfem: {_where()}: interrupted by {name}; aborting all ranks",
                      128 + data[0])

    watcher = threading.Thread(target=watch, name="msfem-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(write_fd)
        watcher.join(timeout=1.0)
        os.close(read_fd)


def run_command(fn: Callable[[], Any], comm: MPI.Comm = MPI.COMM_WORLD, *, prog: str = "msfem",
                debug: bool = False) -> int:
    """Run a collective command; return its status (an int result) or report its error.

    Errors become one line on stderr and status :data:`EXIT_ERROR` on every rank
    (:func:`report_error`), or abort the job when only some ranks fail; ``debug``
    re-raises instead (then :func:`install_excepthook` aborts a parallel run).
    SIGINT/SIGTERM are handled by :func:`abort_on_signals` (status 130/143).
    """
    channel = _error_channel(comm)
    with abort_on_signals(comm):
        try:
            status = fn()
        except KeyboardInterrupt as err:  # serial, or raised by the program itself
            if comm.size > 1:
                abort(f"{prog}: {_where(comm)}: interrupted; aborting all ranks", 130)
            print(f"{prog}: interrupted ({err or 'SIGINT'})", file=sys.stderr, flush=True)
            return 143 if str(err) == "SIGTERM" else 130
        except Exception as err:
            if debug:
                raise
            return report_error(err, comm, prog, channel)
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def check_output_dir(out: str | Path, *, option: str = "--out") -> Path:
    """Refuse an output directory that cannot be created or written (local, no MPI).

    ``out`` may exist (a directory whose parent is writable, as it is replaced through a
    sibling) or not (its nearest existing ancestor must be a writable directory). The
    check creates and removes a probe directory, so it also catches read-only and
    special file systems (``/proc``) that permission bits do not show.

    Raises:
        OSError: naming ``out`` and the reason.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OSError(f"{option} {str(out)!r} exists and is not a directory")
    ancestor = out.parent if out.name else out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OSError(f"{option} {str(out)!r}: {str(ancestor)!r} is not a directory")
    for place in [ancestor] + ([out] if out.exists() else []):
        try:
            probe = tempfile.mkdtemp(prefix=".msfem-probe-", dir=place)
            os.rmdir(probe)
        except OSError as err:
            raise OSError(f"{option} {str(out)!r} is not writable: cannot create a directory "
                          f"in {str(place)!r} ({err.strerror or err})") from err
    return out


@contextlib.contextmanager
def directory_lock(out: Path, comm: MPI.Comm = MPI.COMM_WORLD) -> Iterator[None]:
    """Hold the lock of output directory ``out`` (collective): one writer at a time.

    The lock is the file ``.<name>.lock`` beside ``out``, created exclusively by rank 0 and
    holding its host and process id. A lock whose process is gone (same host) is stale --
    a study killed by Ctrl-C or ``kill -9`` -- and is taken over; a live one is refused on
    every rank with a message naming it. Removed when the block ends.
    """
    import socket

    lock = out.with_name(f".{out.name}.lock")
    me = f"{socket.gethostname()} {os.getpid()}"
    with collective(comm):
        if comm.rank == 0:
            lock.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(2):
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    host, _, pid = lock.read_text().strip().partition(" ")
                    alive = host != socket.gethostname() or _process_alive(int(pid or 0))
                    deadline = time.monotonic() + LOCK_WAIT  # a run that is just ending
                    while alive and host == socket.gethostname() and time.monotonic() < deadline:
                        time.sleep(0.1)
                        alive = _process_alive(int(pid or 0))
                    if alive:
                        raise OSError(
                            f"another run is writing to {str(out)!r} (process {pid} on {host}, "
                            f"lock {str(lock)!r}); wait for it, use another --out, or remove "
                            f"the lock file if no run is active") from None
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(me)
                break
    try:
        yield
    finally:
        if comm.rank == 0:
            with contextlib.suppress(OSError):
                if lock.read_text().strip() == me:
                    lock.unlink()


#: Seconds :func:`directory_lock` waits for the holder of a lock on this host to end (an
#: interrupted run whose ranks are still shutting down) before refusing.
LOCK_WAIT = 5.0


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie has ended)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


# ----------------------------------------------------------------------- size guard
#: Peak bytes per fine dof of a scalar P1/Q1 problem in 2D (9 matrix entries per row): the
#: matrix, GAMG's hierarchy, vectors, mesh and dofmap; measured here (serial, 66k-4.2M
#: dofs: 760-1060 B/dof above the interpreter's own memory).
BYTES_PER_DOF = 900.0
#: Environment variable: the memory (bytes, or with a unit, ``"16GB"``) the job may use,
#: when the machine's /proc/meminfo and cgroup limits do not tell (e.g. a batch system).
MEMORY_ENV = "MSFEM_MEMORY_AVAILABLE"


def memory_estimate(dofs: float, *, dim: int = 2, degree: int = 1, block_size: int = 1) -> float:
    """Peak bytes of a solve with ``dofs`` unknowns (excluding the interpreter itself).

    :data:`BYTES_PER_DOF`, scaled by the matrix entries per row, :math:`(2p + 1)^d` times
    the block size, relative to the 9 of P1/Q1 in 2D.
    """
    return float(dofs) * BYTES_PER_DOF * (2 * degree + 1) ** dim * block_size / 9.0


def _parse_bytes(text: str) -> float:
    units = {"": 1, "B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
    text = text.strip().upper().replace("IB", "B")
    number = text.rstrip("KMGTB")
    unit = text[len(number):]
    if unit not in units:
        raise ValueError(f"{MEMORY_ENV} = {text!r}: use bytes or a unit KB, MB, GB, TB")
    return float(number) * units[unit]


def _node_available() -> float:
    """Bytes this node can still give: MemAvailable, capped by a cgroup v2/v1 limit."""
    available = float("inf")
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = float(line.split()[1]) * 1024
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and float(limit) < 2**60:
                used = float(Path(usage_file).read_text().strip())
                available = min(available, float(limit) - used)
    return available


def _rss() -> float:
    """Resident bytes of this process now."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    return 0.0


def available_memory(comm: MPI.Comm = MPI.COMM_WORLD) -> float:
    """Bytes the job can still allocate, summed over its nodes (collective).

    :data:`MEMORY_ENV` overrides the machine's answer (the memory of the whole job).
    """
    if os.environ.get(MEMORY_ENV):
        return _parse_bytes(os.environ[MEMORY_ENV])
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mine = _node_available() if node.rank == 0 else 0.0
    finally:
        node.Free()
    return float(comm.allreduce(mine))


def _gb(n: float) -> str:
    return f"{n / 2**30:.3g} GB"


def check_memory(need: float, what: str, comm: MPI.Comm = MPI.COMM_WORLD, *,
                 force: bool = False, hint: str = "") -> float:
    """Refuse a run whose estimated peak memory exceeds what the job has (collective).

    ``need`` are the bytes of the data (e.g. :func:`memory_estimate`); the processes'
    own resident memory is added. Logs the estimate; with ``force`` only warns.

    Returns:
        The estimate in bytes (data + processes).

    Raises:
        MemoryError: before any allocation, with the estimate, what is available, what
            to change (``hint``) and ``--force``; on every rank.
    """
    total = float(need) + float(comm.allreduce(_rss()))
    available = available_memory(comm)
    logger.info("memory estimate: %s for %s; available: %s", _gb(total), what,
                _gb(available) if available < float("inf") else "unknown")
    if total > available:
        message = (f"{what} needs about {_gb(total)} of memory (estimate) but the job has "
                   f"{_gb(available)} available; {hint + '; ' if hint else ''}--force runs "
                   f"it anyway ({MEMORY_ENV} sets the memory of the job)")
        if not force:
            raise mark_collective(MemoryError(message), list(range(comm.size)), comm.size)
        logger.warning("%s", message)
    return total
