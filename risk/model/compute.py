"""Where the heavy work runs: in this process, in local worker processes, or on a Dask cluster.

Training's fits, the scoring of large test sets and batches, and the drift statistics are
independent tasks. A ``Runner`` runs a list of them and returns their results in order:

- ``local``: one after another in this process (small data: starting processes costs more
  than it saves);
- ``processes``: joblib's loky worker processes, one per usable core;
- ``dask``: the workers of the Dask cluster at ``dask_scheduler_address``.

Every task runs its numerical libraries single-threaded (``threadpoolctl``): on a busy host
OpenMP threads spin against each other and against other work, and one fit took 6-34 s
instead of 0.5-0.9 s. Parallelism comes from running tasks side by side instead, except where a
map has fewer tasks than local worker processes (training's refit of the chosen model is often one
task on two): each task then has the idle workers' cores too (``task_threads``), and the worker
processes' OpenMP threads spin only briefly before they sleep (``WORKER_ENVIRONMENT``).
Training's runner lets its worker processes go when training ends (``keep_workers``).

An unreachable scheduler (or one without workers) fails at once with ``ComputeUnavailable``,
unless ``dask_fallback_local`` is true: then the work runs locally and the result says why.
Every wait on the cluster has a deadline, since distributed waits for ever on its own: the
connection and handshake (``dask_timeout_seconds``), a scheduler that stops answering or a
cluster left without workers mid-run (the same), and the whole of one ``map``
(``max_run_minutes``). Past one the run fails, or falls back to this machine the same way.
With ``dask_fallback_local``, a scheduler found unusable is not asked again by the same process
for ``REMEMBER_UNUSABLE_SECONDS``: a cron run's later steps go on locally at once instead of
each waiting out the same deadline.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import gc
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from risk.core import artefacts
from risk.core.settings import Config

logger = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0  # a scheduler that has not answered by then is treated as down (the default)
CODE_PRIORITY = 10**9  # the project's code task goes before every task that needs it
POLL_SECONDS = 1.0  # how often a wait on the cluster looks at whether the cluster can still finish it
# How long a process remembers that a scheduler could not be used, under dask_fallback_local: a cron
# run's steps (training, scoring, drift, the call list) would each wait dask_timeout_seconds for the
# same silence; a process that runs longer (a cron run of many steps) asks again once this has passed.
# (The API opens no runner: it serves from its own process.)
REMEMBER_UNUSABLE_SECONDS = 600.0


# What fixes a cluster that cannot run our tasks: the project's code travels with them (shipping.py).
ENVIRONMENT_HINT = (
    "start `dask scheduler` and `dask worker` from an environment with this project's Python version and "
    "packages (pip install -r requirements.txt); they need no copy of the project and no PYTHONPATH"
)


class ComputeUnavailable(RuntimeError):
    """The configured Dask scheduler cannot be used; the message says why and what to do."""

    # Under dask_fallback_local the scheduler is not asked again for REMEMBER_UNUSABLE_SECONDS.
    remembered = True


class TaskKilledItsWorkers(ComputeUnavailable):
    """The workers running one task died while running it (out of memory, say): the cluster
    answered, and another step's tasks may well run there, so it is asked again at once."""

    remembered = False


def single_threaded() -> Any:
    """A context in which BLAS and OpenMP use one thread."""
    return threadpools().limit(limits=1)


def task_threads() -> int:
    """How many threads the running task may use: the cores of its map's local workers shared among
    its tasks, at least one (one outside a map, in this process and on the cluster). Its BLAS and
    OpenMP pools are limited to it already; this is for threads threadpoolctl does not limit (a
    forest's joblib ``n_jobs``)."""
    return _TASK_THREADS.get()


_TASK_THREADS: contextvars.ContextVar[int] = contextvars.ContextVar("task_threads", default=1)

# Set for the local worker processes before they start (they inherit this process's environment; an
# operator's own setting is kept). libgomp reads it as it loads: its waiting threads spin for about
# 300,000 turns by default, and with other work on the machine (load 3-4 on 2 cores) a 2-thread boosting
# fit on 200,000 loans took 32-36 s against 10 s with one thread. Sleeping at once (OMP_WAIT_POLICY=PASSIVE)
# fixed that but made short parallel loops slow on a quiet machine: a 2-thread fit on 21,000 rows took
# 0.82-0.85 s against 0.29-0.33 s with one thread, on 100,000 rows 2.4 s against 1.1 s. Spinning 10,000
# turns first keeps both: 0.17 s and 0.63 s quiet, and beside two busy loops 1.49 s (passive 1.52 s, the
# default 2.30 s, one thread 1.68 s). This process's own OpenMP is loaded already and keeps its setting:
# its tasks run with one thread.
WORKER_ENVIRONMENT = {"GOMP_SPINCOUNT": "10000"}


def threadpools() -> Any:
    """The process's OpenMP/BLAS pools (threadpoolctl's ``ThreadpoolController``), looked up again only
    when a module was imported since: a native library comes with an import, and the look-up (every
    loaded library inspected) cost ~4 ms, a dozen times a run and thousands of times a test run."""
    return _threadpools(len(sys.modules))


@functools.lru_cache(maxsize=1)
def _threadpools(modules_loaded: int) -> Any:
    from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn

    return ThreadpoolController()


def release_freed_memory() -> None:
    """Collect garbage and give the C heap's free pages back to the system.

    glibc keeps freed memory for reuse, so after a fit a worker process stays at its
    high-water mark, and the next fit (or the other worker) adds to it; Dask's workers trim
    their heap for the same reason. Elsewhere than glibc this only collects garbage."""
    # SciPy's optimiser (logistic regression) leaves a reference cycle holding a fit's encoded matrix.
    gc.collect(1)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim() -> Any:
    return _libc_function("malloc_trim")


def map_large_allocations() -> None:
    """From now on, this process's allocations of MMAP_THRESHOLD_BYTES or more are mapped
    and handed back to the system when freed (glibc's mallopt; elsewhere nothing).

    glibc raises its threshold to the size of each large block freed (up to 32 MiB), so a
    step's freed 1-32 MiB arrays stay resident under the next one's: encoding 700,000 loans
    for the refit peaked at 607 MiB resident by default, 499 MiB with this (and was no slower).
    Set in the process that runs the steps one after another (training.train_model), not in
    the fitting workers, whose solvers allocate such arrays at every iteration."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1024 * 1024


def _libc_function(name: str) -> Any:
    if name not in _LIBC:
        try:
            _LIBC[name] = getattr(ctypes.CDLL("libc.so.6"), name)
        except (OSError, AttributeError):  # not glibc
            _LIBC[name] = None
    return _LIBC[name]


_LIBC: dict[str, Any] = {}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Runner:
    """Runs independent tasks and returns their results in the order given."""

    backend: str  # "local", "processes" or "dask"
    workers: int
    client: Any = None
    scheduler: str | None = None
    fallback_reason: str | None = None
    submitted: int = field(default=0)
    # On the cluster: whether to finish locally when it fails mid-run, how long the scheduler may be
    # silent (or the cluster without workers), and how long one map may take in all.
    fallback_local: bool = False
    timeout: float = CONNECT_SECONDS
    max_wait: float = 120 * 60.0
    # Whether the local worker processes stay once this runner closes (for the next runner to reuse),
    # or are let go: the machine gets their memory back, and the process's exit does not wait for them.
    keep_workers: bool = True
    _uses_workers: bool = field(default=False, repr=False)
    _starting: threading.Thread | None = field(default=None, repr=False)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)
    _code_task: Any = field(default=None, repr=False)

    def start_in_background(self, warm: Callable[[], Any]) -> None:
        """Start the local worker processes now, each running ``warm`` (which imports the
        tasks' module), while this process goes on with its own work; ``map`` waits for them.
        Worker processes take about a second to start and import scikit-learn."""
        if self.backend != "processes" or self._starting is not None:
            return
        self._use_workers()
        self._starting = threading.Thread(target=self._warm_up, args=(warm,), name="start-workers", daemon=True)
        self._starting.start()

    def _warm_up(self, warm: Callable[[], Any]) -> None:
        from joblib import Parallel, delayed

        try:
            Parallel(n_jobs=self.workers, backend="loky")(delayed(warm)() for _ in range(self.workers))
        except Exception as exc:  # noqa: BLE001 - the real tasks will meet (and report) the same problem
            logger.debug("starting the worker processes ahead failed: %s", exc)

    def _wait_for_workers(self) -> None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None

    def map(
        self,
        function: Callable[..., Any],
        arguments: list[tuple],
        costs: list[float] | None = None,
        name: str = "task",
        done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """``[function(*a) for a in arguments]``, run where this runner runs things.

        ``costs`` (estimated seconds) start the longest tasks first, so that the last task
        to finish is a short one. ``done(i)`` is called once the result of ``arguments[i]`` is
        here, in the order the tasks started (on the cluster: once all are), so that the caller
        can let go of what the finished tasks needed while the others run.
        """
        done = done or (lambda position: None)
        order = sorted(range(len(arguments)), key=lambda i: -(costs[i] if costs else 0.0))
        self.submitted += len(arguments)
        self._wait_for_workers()
        if self.backend == "dask":
            try:
                results = self._map_dask(function, arguments, costs, name)
                for position in order:
                    done(position)
                return results
            except ComputeUnavailable as exc:
                if not self.fallback_local:
                    raise
                self._fall_back(exc)
                arguments = [tuple(self._local_value(a) for a in args) for args in arguments]
        threads = self.threads_per_task(len(arguments))
        if self.backend == "processes":
            from joblib import Parallel, delayed

            self._use_workers()
            # A constant n_jobs reuses loky's worker processes from one call to the next.
            results = Parallel(n_jobs=self.workers, backend="loky", pre_dispatch="all", return_as="generator")(
                delayed(_call_with_threads)(threads, function, *arguments[i]) for i in order
            )
        else:  # in this process, in the order given
            order = list(range(len(arguments)))
            results = (_call_with_threads(threads, function, *arguments[i]) for i in order)
        ordered: list[Any] = [None] * len(arguments)
        for position, result in zip(order, results):
            ordered[position] = result
            done(position)
        return ordered

    def threads_per_task(self, tasks: int) -> int:
        """The threads each of ``tasks`` tasks may use: one where there are at least as many tasks
        as workers, else the workers' share; always one in this process (one worker) and on the
        cluster, whose workers' threads run other tasks beside ours."""
        if self.backend == "dask":
            return 1
        return max(1, self.workers // max(1, tasks))

    def _use_workers(self) -> None:
        with _WORKERS_LOCK:
            if not self._uses_workers:
                self._uses_workers = True
                _RUNNERS_USING_WORKERS[0] += 1
                for name, value in WORKER_ENVIRONMENT.items():
                    os.environ.setdefault(name, value)

    def _stop_using_workers(self) -> None:
        """The worker processes go once no open runner uses them, unless this one keeps them."""
        with _WORKERS_LOCK:
            if not self._uses_workers:
                return
            self._uses_workers = False
            _RUNNERS_USING_WORKERS[0] -= 1
            if not self.keep_workers and _RUNNERS_USING_WORKERS[0] == 0:
                let_workers_go()

    def _map_dask(
        self, function: Callable[..., Any], arguments: list[tuple], costs: list[float] | None, name: str
    ) -> list[Any]:
        from distributed import Future

        from risk.model import shipping

        code = self._code()
        run = uuid.uuid4().hex[:8]
        futures = []
        for i, a in enumerate(arguments):
            payload, handles = shipping.pack(_single_threaded_call, function, a, Future)
            futures.append(
                self.client.submit(
                    shipping.Loader(),
                    code,
                    payload,
                    *handles,
                    key=f"risk-{name}-{run}-{i}",
                    pure=False,
                    priority=int((costs[i] if costs else 0.0) * 1000),
                )
            )
        try:
            deadline = time.monotonic() + self.max_wait
            self._wait_for(futures, name)
            return [self._result(future, deadline) for future in futures]
        except ImportError as exc:  # raised on a worker: codeloader's check, or a package it lacks
            raise ComputeUnavailable(
                f"the Dask workers at {self.scheduler} cannot run this project's tasks: {exc}; {ENVIRONMENT_HINT}"
            ) from exc
        finally:
            for future in futures:
                with contextlib.suppress(Exception):  # a client that lost its scheduler has nothing to release
                    future.release()

    def _code(self) -> Any:
        """The project's code on the cluster (shipping.py says why): a task's result rather than
        scattered data, so that the scheduler makes it again when the worker holding it dies."""
        if self._code_task is None:
            from risk.model import codeloader, shipping

            code = shipping.package_code()
            self._code_task = self.client.submit(
                bytes, code, key=f"risk-code-{codeloader.digest_of(code)}", priority=CODE_PRIORITY
            )
        return self._code_task

    def _wait_for(self, futures: list[Any], name: str) -> None:
        """Wait until every future is done; ComputeUnavailable when the cluster cannot finish them:
        the scheduler silent, no worker for ``timeout`` seconds, or ``max_wait`` seconds in all.

        distributed's own gather waits for ever: for a worker that was killed and never comes
        back (the tasks wait for a worker), or for a scheduler that stopped answering."""
        started = checked = time.monotonic()
        without_workers = None
        while True:
            if all(future.done() for future in futures):  # finished, failed or cancelled
                return
            time.sleep(0.02)
            if time.monotonic() - checked < POLL_SECONDS:
                continue
            now = checked = time.monotonic()
            if now - started > self.max_wait:
                raise ComputeUnavailable(
                    f"the {len(futures)} {name} task(s) on the Dask cluster at {self.scheduler} did not finish within "
                    f"{self.max_wait / 60:g} minutes (max_run_minutes); look at the cluster's dashboard, "
                    "or raise max_run_minutes if the work really takes this long"
                )
            if self._worker_count() > 0:
                without_workers = None
            elif without_workers is None:
                without_workers = now
            elif now - without_workers > self.timeout:
                raise ComputeUnavailable(
                    f"the Dask cluster at {self.scheduler} has had no workers for {self.timeout:g} s "
                    f"(dask_timeout_seconds) while {len(futures)} {name} task(s) waited: its workers died or were stopped; "
                    f"start `dask worker {self.scheduler}` again"
                )

    def _worker_count(self) -> int:
        """The scheduler's live workers; ComputeUnavailable if it does not answer within ``timeout``."""
        return live_workers(self.client, self.scheduler or "", self.timeout)

    def _result(self, future: Any, deadline: float) -> Any:
        """A finished future's result, fetched by ``deadline`` (a fitted model can be large: at least
        ``timeout``); a lost or killed one as ComputeUnavailable."""
        from distributed import KilledWorker

        if future.cancelled():
            raise ComputeUnavailable(
                f"the Dask scheduler at {self.scheduler} dropped the task {future.key} "
                "(the client lost its connection to the scheduler)"
            )
        try:
            return future.result(timeout=max(self.timeout, deadline - time.monotonic()))
        except KilledWorker as exc:
            raise TaskKilledItsWorkers(
                f"the Dask workers running {future.key} died while running it, more than once "
                f"(out of memory, or killed): {exc}"
            ) from exc
        except TimeoutError as exc:
            raise ComputeUnavailable(
                f"the Dask cluster at {self.scheduler} did not hand over the result of {future.key} "
                "within max_run_minutes"
            ) from exc
        except RuntimeError as exc:
            if "deserialization of the task graph" not in str(exc):  # distributed's words, the scheduler's failure
                raise
            raise ComputeUnavailable(
                f"the Dask scheduler at {self.scheduler} cannot read this project's tasks (it runs another Python "
                f"or another cloudpickle than this machine); {ENVIRONMENT_HINT}"
            ) from exc

    def share(self, value: Any) -> Any:
        """``value`` sent once to every worker (the handle to pass to ``map``), or ``value`` itself locally.

        Bounded by ``max_wait`` (a model can be large); a failure falls back as ``map`` does. A
        handle given to ``map`` after a fallback is swapped back for the value. On the cluster it
        travels as bytes, opened by a task once the project's code is there (shipping.py)."""
        if self.backend != "dask":
            return value
        from risk.model import shipping

        packed = shipping.pack_value(value)  # outside the try: a value that cannot be packed is not the cluster's fault
        try:  # distributed's scatter bounds only its wait for workers: the whole coroutine is bounded here
            [future] = self.client.sync(self.client._scatter, [packed], broadcast=True, callback_timeout=self.max_wait)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the workers is the cluster's
            failure = ComputeUnavailable(
                f"could not send data to the Dask workers at {self.scheduler} within {self.max_wait / 60:g} "
                f"minutes (max_run_minutes): {type(exc).__name__}: {exc}"
            )
            if not self.fallback_local:
                raise failure from exc
            self._fall_back(failure)
            return value
        self._shared[future.key] = value
        return future

    def _local_value(self, argument: Any) -> Any:
        key = getattr(argument, "key", None)
        return self._shared.get(key, argument) if isinstance(key, str) else argument

    def _fall_back(self, exc: ComputeUnavailable) -> None:
        """Go on on this machine, in this process, after the cluster failed mid-run (dask_fallback_local)."""
        logger.warning("%s; running the rest locally (dask_fallback_local is true)", exc)
        self.fallback_reason = str(exc)
        _remember_unusable(self.scheduler, exc)
        self._close_client()
        self.backend, self.workers = "local", 1

    def describe(self) -> dict[str, Any]:
        """What ran where, for the metadata."""
        return {
            "backend": self.backend,
            "workers": self.workers,
            "scheduler": self.scheduler,
            "fallback_reason": self.fallback_reason,
        }

    def close(self) -> None:
        self._wait_for_workers()
        self._stop_using_workers()
        self._close_client()

    def _close_client(self) -> None:
        client, self.client = self.client, None
        self._shared.clear()
        self._code_task = None
        if client is not None:
            _close_quietly(client, self.timeout)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _single_threaded_call(function: Callable[..., Any], *arguments: Any) -> Any:
    return _call_with_threads(1, function, *arguments)


def _call_with_threads(threads: int, function: Callable[..., Any], *arguments: Any) -> Any:
    token = _TASK_THREADS.set(threads)
    try:
        with threadpools().limit(limits=threads):
            return function(*arguments)
    finally:
        _TASK_THREADS.reset(token)


def let_workers_go() -> None:
    """Ask the local worker processes (loky's reusable executor, which joblib's ``Parallel`` shares
    across calls) to exit, without waiting for them; the next ``Parallel`` starts new ones.

    Kept, they held their memory until the process exited, and then loky's exit handler waited for
    them (0.44 s at the end of a fullprocess run). loky keeps its executor in a module variable:
    asking for it through ``get_reusable_executor`` would start one where there is none."""
    from joblib.externals.loky import reusable_executor

    with reusable_executor._executor_lock:
        executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=False)


# The open runners that use the local worker processes (one shared pool), and its lock.
_RUNNERS_USING_WORKERS = [0]
_WORKERS_LOCK = threading.Lock()


def open_runner(config: Config, parallel: bool = True, workers: int | None = None, keep_workers: bool = True) -> Runner:
    """The runner for this configuration: the Dask cluster when one is configured, else local.

    ``parallel`` false keeps local work in this process (the work is too small to pay for
    starting worker processes); ``workers`` overrides the number of local processes;
    ``keep_workers`` false lets them go when the runner closes (Runner.keep_workers).
    """
    address = config["dask_scheduler_address"]
    if address:
        remembered = _remembered_unusable(address) if config["dask_fallback_local"] else None
        if remembered is not None:
            logger.info("%s; running locally (dask_fallback_local is true)", remembered)
            return _fallback_runner(remembered, parallel, workers, keep_workers)
        try:
            runner = dask_runner(address, config["dask_timeout_seconds"])
        except ComputeUnavailable as exc:
            _remember_unusable(address, exc)
            if not config["dask_fallback_local"]:
                raise
            logger.warning("%s; running locally (dask_fallback_local is true)", exc)
            return _fallback_runner(str(exc), parallel, workers, keep_workers)
        runner.fallback_local = config["dask_fallback_local"]
        runner.max_wait = config["max_run_minutes"] * 60.0
        return runner
    return local_runner(parallel, workers, keep_workers)


def _fallback_runner(reason: str, parallel: bool, workers: int | None, keep_workers: bool) -> Runner:
    runner = local_runner(parallel, workers, keep_workers)
    runner.fallback_reason = reason
    return runner


def _remember_unusable(address: str | None, failure: ComputeUnavailable) -> None:
    if address and failure.remembered:
        _UNUSABLE[address] = (time.monotonic(), artefacts.utc_now(), str(failure))


def _remembered_unusable(address: str) -> str | None:
    """Why the scheduler at ``address`` could not be used, if this process found so within
    REMEMBER_UNUSABLE_SECONDS; None when it should be asked (again)."""
    found = _UNUSABLE.get(address)
    if found is None or time.monotonic() - found[0] > REMEMBER_UNUSABLE_SECONDS:
        return None
    _, clock, reason = found
    return f"{reason} (found at {clock}; not asked again for {REMEMBER_UNUSABLE_SECONDS / 60:g} minutes)"


# Scheduler address -> (monotonic time, wall-clock time, reason) of the last failure to use it.
_UNUSABLE: dict[str, tuple[float, str, str]] = {}


def local_runner(parallel: bool = True, workers: int | None = None, keep_workers: bool = True) -> Runner:
    count = workers if workers is not None else usable_cores()
    if parallel and count > 1:
        return Runner("processes", count, keep_workers=keep_workers)
    return Runner("local", 1)


def dask_runner(address: str, timeout: float = CONNECT_SECONDS) -> Runner:
    """A runner on the cluster at ``address``; ComputeUnavailable within about ``timeout`` if it cannot be used."""
    client = connect(address, timeout)
    try:
        workers = live_workers(client, address, timeout)
    except ComputeUnavailable:
        _close_quietly(client, timeout)
        raise
    return Runner("dask", workers, client=client, scheduler=address, timeout=timeout)


def live_workers(client: Any, address: str, timeout: float) -> int:
    """The scheduler's workers, asked within ``timeout``; ComputeUnavailable if it does not answer.

    distributed's own ``scheduler_info`` and ``wait_for_workers`` ask without a deadline."""
    try:
        identity = client.sync(client.scheduler.identity, callback_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - whatever stops the scheduler answering ends the wait
        raise ComputeUnavailable(
            f"the Dask scheduler at {address} stopped answering (nothing within {timeout:g} s, "
            f"dask_timeout_seconds: {type(exc).__name__}: {exc}); is it overloaded, stopped or gone?"
        ) from exc
    return len(identity.get("workers", {}))


def _close_quietly(client: Any, timeout: float) -> None:
    """Close a client within ``timeout``: for a silent scheduler distributed waits twice its
    timeout, then raises, and that must not hide why the run stopped."""
    try:
        client.close(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - the scheduler is gone or silent: nothing left to close
        logger.debug("closing the Dask client: %s", exc)


def connect(address: str, timeout: float = CONNECT_SECONDS) -> Any:
    """A ``distributed.Client`` for ``address``, or ComputeUnavailable within about ``timeout`` seconds."""
    hint = "start it (`dask scheduler`), fix dask_scheduler_address, or set it to null to run locally"
    try:
        import distributed  # noqa: F401 - only to tell a missing package from an unreachable scheduler
    except ImportError as exc:
        raise ComputeUnavailable(
            "dask_scheduler_address is set but the 'distributed' package is not installed (pip install -r requirements.txt)"
        ) from exc
    _probe(address, hint, timeout)
    try:
        client = _bounded_client_class()(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        # TimeoutError: no handshake in time (a peer that answered, then fell silent). ValueError and
        # TypeError: an address the config check let through; all of them are the cluster's failure.
        detail = "no complete Dask handshake" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise ComputeUnavailable(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({detail}); {hint}"
        ) from exc
    deadline = time.monotonic() + timeout
    try:
        while not live_workers(client, address, timeout):
            if time.monotonic() > deadline:
                raise ComputeUnavailable(
                    f"the Dask scheduler at {address} has no workers (waited {timeout:g} s): "
                    f"start `dask worker {address}` on the machines that should do the work"
                )
            time.sleep(0.1)
    except ComputeUnavailable:
        _close_quietly(client, timeout)
        raise
    return client


@functools.cache  # one class for the process: distributed is imported when a cluster is used
def _bounded_client_class() -> type:
    """``distributed.Client`` whose start gives up after its timeout.

    distributed bounds the TCP connection by the timeout, but then waits for the peer's
    handshake, and for the scheduler's first message, for ever: a listener that sends a
    plausible start of a handshake and then nothing hung a run past 50 s. And a client that
    failed to start is closed again by ``__del__``, which waited 10 s more."""
    import asyncio

    from distributed import Client

    class BoundedClient(Client):
        async def _start(self, timeout: Any = None, **kwargs: Any) -> Any:
            limit = self._timeout
            try:
                return await asyncio.wait_for(super()._start(timeout=limit, **kwargs), limit)
            except BaseException:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(self._close(fast=True), 1)
                raise

        def start(self, **kwargs: Any) -> None:
            try:
                super().start(**kwargs)
            except BaseException:
                self.status = "closed"  # nothing was opened for __del__ to close
                with contextlib.suppress(Exception):
                    self._loop_runner.stop()
                raise

    return BoundedClient


def _probe(address: str, hint: str, timeout: float = CONNECT_SECONDS) -> None:
    """Fail in milliseconds on a refused TCP connection, instead of retrying until a timeout."""
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        port = parts.port
    except ValueError as exc:  # the config check refuses these; a caller passing one directly learns why
        raise ComputeUnavailable(f"the Dask scheduler address {address!r} is not tcp://host:port ({exc})") from exc
    if parts.scheme != "tcp" or not parts.hostname or not port:
        raise ComputeUnavailable(f"the Dask scheduler address {address!r} is not tcp://host:port; {hint}")
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout) as probe:
            # A scheduler sends its handshake at once: a frame length (uint64, little-endian).
            # distributed's own connect waits for it without a timeout, and reads whatever
            # comes as that length (an HTTP reply asks it to allocate exabytes).
            start = _read_up_to(probe, 8)
    except OSError as exc:
        raise ComputeUnavailable(
            f"cannot reach the Dask scheduler at {address}: {exc.strerror or exc}; {hint}"
        ) from exc
    if len(start) < 8 or not 0 < int.from_bytes(start, "little") < 1 << 24:
        raise ComputeUnavailable(
            f"the service at {address} did not answer as a Dask scheduler within {timeout:g} s "
            f"(is it the scheduler's port?); {hint}"
        )


def _read_up_to(connection: socket.socket, count: int) -> bytes:
    """Up to ``count`` bytes, fewer if the peer closes or falls silent (socket timeout)."""
    data = b""
    try:
        while len(data) < count:
            chunk = connection.recv(count - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data
