"""Where the heavy work runs: in this process, in local worker processes, or on a Dask cluster.

Training's fits, the scoring of large test sets and batches, and the drift statistics are
independent tasks. A ``Runner`` runs a list of them and returns their results in order:

- ``local``: one after another in this process (small data: starting processes costs more
  than it saves);
- ``processes``: joblib's loky worker processes, one per usable core;
- ``dask``: the workers of the Dask cluster at ``dask_scheduler_address``.

Every task runs its numerical libraries single-threaded (``threadpoolctl``): on a busy host
OpenMP threads spin against each other and against other work, and one fit took 6-34 s
instead of 0.5-0.9 s. Parallelism comes from running tasks side by side instead.

An unreachable scheduler (or one without workers) fails at once with ``ComputeUnavailable``,
unless ``dask_fallback_local`` is true: then the work runs locally and the result says why.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from risk.core.settings import Config

logger = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0  # a scheduler that has not answered by then is treated as down


class ComputeUnavailable(RuntimeError):
    """The configured Dask scheduler cannot be used; the message says why and what to do."""


def single_threaded() -> Any:
    """A context in which BLAS and OpenMP use one thread."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    return threadpool_limits(limits=1)


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
    if "trim" not in _LIBC:
        try:
            _LIBC["trim"] = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _LIBC["trim"] = None
    return _LIBC["trim"]


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
    _starting: threading.Thread | None = field(default=None, repr=False)

    def start_in_background(self, warm: Callable[[], Any]) -> None:
        """Start the local worker processes now, each running ``warm`` (which imports the
        tasks' module), while this process goes on with its own work; ``map`` waits for them.
        Worker processes take about a second to start and import scikit-learn."""
        if self.backend != "processes" or self._starting is not None:
            return
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
        self, function: Callable[..., Any], arguments: list[tuple], costs: list[float] | None = None, name: str = "task"
    ) -> list[Any]:
        """``[function(*a) for a in arguments]``, run where this runner runs things.

        ``costs`` (estimated seconds) start the longest tasks first, so that the last task
        to finish is a short one.
        """
        order = sorted(range(len(arguments)), key=lambda i: -(costs[i] if costs else 0.0))
        self.submitted += len(arguments)
        self._wait_for_workers()
        if self.backend == "dask":
            return self._map_dask(function, arguments, costs, name)
        if self.backend == "processes":
            from joblib import Parallel, delayed

            # A constant n_jobs reuses loky's worker processes from one call to the next.
            results = Parallel(n_jobs=self.workers, backend="loky", pre_dispatch="all")(
                delayed(_single_threaded_call)(function, *arguments[i]) for i in order
            )
            ordered: list[Any] = [None] * len(arguments)
            for position, result in zip(order, results):
                ordered[position] = result
            return ordered
        return [_single_threaded_call(function, *a) for a in arguments]

    def _map_dask(
        self, function: Callable[..., Any], arguments: list[tuple], costs: list[float] | None, name: str
    ) -> list[Any]:
        run = uuid.uuid4().hex[:8]
        futures = [
            self.client.submit(
                _single_threaded_call,
                function,
                *a,
                key=f"risk-{name}-{run}-{i}",
                pure=False,
                priority=int((costs[i] if costs else 0.0) * 1000),
            )
            for i, a in enumerate(arguments)
        ]
        try:
            return self.client.gather(futures)
        except ModuleNotFoundError as exc:
            raise ComputeUnavailable(
                f"the Dask workers at {self.scheduler} cannot import the project's code ({exc}): start each "
                "`dask worker` with PYTHONPATH set to the project folder, on the same path as here"
            ) from exc
        finally:
            for future in futures:
                future.release()

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
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _single_threaded_call(function: Callable[..., Any], *arguments: Any) -> Any:
    with single_threaded():
        return function(*arguments)


def open_runner(config: Config, parallel: bool = True, workers: int | None = None) -> Runner:
    """The runner for this configuration: the Dask cluster when one is configured, else local.

    ``parallel`` false keeps local work in this process (the work is too small to pay for
    starting worker processes); ``workers`` overrides the number of local processes.
    """
    address = config["dask_scheduler_address"]
    if address:
        try:
            return dask_runner(address)
        except ComputeUnavailable as exc:
            if not config["dask_fallback_local"]:
                raise
            logger.warning("%s; running locally (dask_fallback_local is true)", exc)
            runner = local_runner(parallel, workers)
            runner.fallback_reason = str(exc)
            return runner
    return local_runner(parallel, workers)


def local_runner(parallel: bool = True, workers: int | None = None) -> Runner:
    count = workers if workers is not None else usable_cores()
    if parallel and count > 1:
        return Runner("processes", count)
    return Runner("local", 1)


def dask_runner(address: str) -> Runner:
    """A runner on the cluster at ``address``; ComputeUnavailable at once if it cannot be used."""
    client = connect(address)
    workers = len(client.scheduler_info().get("workers", {}))
    return Runner("dask", workers, client=client, scheduler=address)


def connect(address: str) -> Any:
    """A ``distributed.Client`` for ``address``, or ComputeUnavailable within about CONNECT_SECONDS."""
    hint = "start it (`dask scheduler`), fix dask_scheduler_address, or set it to null to run locally"
    try:
        from distributed import Client
    except ImportError as exc:
        raise ComputeUnavailable(
            "dask_scheduler_address is set but the 'distributed' package is not installed (pip install -r requirements.txt)"
        ) from exc
    _probe(address, hint)
    try:
        client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ComputeUnavailable(
            f"cannot reach the Dask scheduler at {address} within {CONNECT_SECONDS:g} s ({exc}); {hint}"
        ) from exc
    try:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ComputeUnavailable(
            f"the Dask scheduler at {address} has no workers (waited {CONNECT_SECONDS:g} s): start `dask worker {address}` "
            "on the machines that should do the work"
        ) from exc
    return client


def _probe(address: str, hint: str) -> None:
    """Fail in milliseconds on a refused TCP connection, instead of retrying until a timeout."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        return  # tls://, inproc:// and others: left to distributed's own connect
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_SECONDS) as probe:
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
            f"the service at {address} did not answer as a Dask scheduler within {CONNECT_SECONDS:g} s "
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
