"""How a task of ours travels to a Dask cluster that has only the pinned packages.

The cluster's scheduler unpickles every task it is given (function and arguments), and its
workers import whatever a pickle names; neither has this project. So a task goes as:

- ``Loader()``: the function, ``codeloader.run_shipped`` sent as its code (cloudpickle, by value),
  which the scheduler can rebuild with the standard library alone;
- the project's code (``package_code``): the sources of the ``risk`` package, the Python and
  package versions they were written for, as one task's result that every task depends on
  (compute.Runner): sent once per worker, and made again by the scheduler if a worker holding it dies;
- the task itself (``pack``): its function and arguments pickled to bytes the scheduler does not
  open, which a worker unpickles once the code is installed (``run_task``);
- values shared by every task of a map (compute.Runner.share, a model) as bytes too, referred to
  by the task so that the scheduler still sends them to the worker.

Task functions must live in the ``risk`` package: a function is pickled by its module's name, and
a script's or a test's module is not on the workers (unless a test puts it there).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import pickle
import platform
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from risk.model import codeloader

# The packages whose versions a worker must share with this machine: the tasks' pickles (folds,
# fitted pipelines, frames) are only read back the same way by the same versions.
TASK_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "joblib", "threadpoolctl")


@functools.cache  # read once per process: the code does not change under a running process
def package_code() -> bytes:
    """The ``risk`` package's sources (with their paths here: a module's ``__file__`` on a worker)
    and the Python and package versions they run with, compressed, after their digest (codeloader.digest_of)."""
    root = Path(__file__).resolve().parents[1]  # the risk package (this module is shipped, not run, elsewhere)
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        sources[".".join(parts[:-1] if is_package else parts)] = (is_package, str(path), path.read_bytes())
    digest = hashlib.sha256(pickle.dumps(sources, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    contents = {
        "python": platform.python_version(),
        "packages": {name: importlib.metadata.version(name) for name in TASK_PACKAGES},
        "sources": sources,
    }
    return digest.encode("ascii") + zlib.compress(pickle.dumps(contents, protocol=pickle.HIGHEST_PROTOCOL))


class Loader:
    """The function of every task sent to the cluster: ``codeloader.run_shipped``, pickled as its code."""

    def __call__(self, *arguments: Any) -> Any:
        return codeloader.run_shipped(*arguments)

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return pickle.loads, (_loader_code(),)


@functools.cache
def _loader_code() -> bytes:
    import cloudpickle  # comes with distributed

    cloudpickle.register_pickle_by_value(codeloader)  # only codeloader's own functions go as code
    return cloudpickle.dumps(codeloader.run_shipped)


@dataclass(frozen=True)
class SharedSlot:
    """Where a task's argument is a shared value: the task's ``index``-th extra argument, under ``key``."""

    index: int
    key: str


def pack(
    call: Callable[..., Any], function: Callable[..., Any], arguments: tuple, shared: type
) -> tuple[bytes, list[Any]]:
    """``call(function, *arguments)`` as bytes, and the arguments that are handles of shared values
    (instances of ``shared``, distributed's Future), which stay outside for the scheduler to resolve."""
    handles: list[Any] = []
    packed = []
    for argument in arguments:
        if isinstance(argument, shared):
            packed.append(SharedSlot(len(handles), argument.key))
            handles.append(argument)
        else:
            packed.append(argument)
    return pickle.dumps((call, (function, *packed)), protocol=pickle.HIGHEST_PROTOCOL), handles


def pack_value(value: Any) -> bytes:
    """A shared value as bytes: the worker opens it once the code it needs is installed."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def run_task(payload: bytes, shared: tuple[bytes, ...]) -> Any:
    """On a worker: the task ``pack`` made, with its shared values opened."""
    call, arguments = pickle.loads(payload)
    values = [_shared_value(shared[a.index], a.key) if isinstance(a, SharedSlot) else a for a in arguments]
    return call(*values)


_OPENED: dict[str, Any] = {}  # this worker's last opened shared value: every chunk of a map uses the same model


def _shared_value(blob: bytes, key: str) -> Any:
    if key not in _OPENED:
        _OPENED.clear()  # one at a time: a long-lived worker must not pile up models
        _OPENED[key] = pickle.loads(blob)
    return _OPENED[key]
