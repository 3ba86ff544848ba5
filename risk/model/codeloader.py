"""The first thing every task of ours runs on a Dask worker: it makes this project's code, sent
with the tasks, importable there, then runs the task.

A Dask user's cluster runs ``dask scheduler`` and ``dask worker`` from an environment with the
pinned packages (requirements.txt) and nothing of this project: no PYTHONPATH, no copy of the
project. So each run sends the sources of the ``risk`` package to the workers once (see
shipping.py), and each task is ``run_shipped`` sent as code (cloudpickle, by value): the
scheduler rebuilds it (it reads every task's function) without importing anything of ours, and
a worker runs it, which installs the sources as an in-memory importer before it unpickles the
task itself. A worker keeps one version of the code; a task of another version (another
project, or this one after an upgrade) replaces it.

This module travels as code: the standard library only, and nothing of ``risk`` at module level.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import pickle
import platform
import sys
import threading
import types
import zlib
from typing import Any

PACKAGE = "risk"
STATE = "risk-shipped-code"  # the worker's record of the code it installed, kept in sys.modules
DIGEST_BYTES = 64  # the code starts with its sha256, in hex


def run_shipped(code: bytes, payload: bytes, *shared: Any) -> Any:
    """Run the task in ``payload`` (shipping.pack) with the project's ``code`` (shipping.package_code)."""
    install(code)
    from risk.model import shipping  # from the code just installed (or the same code already here)

    return shipping.run_task(payload, shared)


def digest_of(code: bytes) -> str:
    return code[:DIGEST_BYTES].decode("ascii")


def install(code: bytes) -> None:
    """Make ``code``'s modules the ones ``import risk...`` finds in this process, once per version.

    ImportError naming what differs when this environment cannot run them (another Python,
    another version of a package the tasks use, a package missing)."""
    digest = digest_of(code)
    state = _state()
    with state.lock:
        if state.digest == digest:
            return
        if state.finder is None and _imported_from_files(digest):
            state.digest = digest
            return
        contents = pickle.loads(zlib.decompress(code[DIGEST_BYTES:]))
        check_environment(contents["python"], contents["packages"])
        _forget_loaded_code(state)
        state.finder = ShippedCode(digest, contents["sources"])
        sys.meta_path.insert(0, state.finder)
        state.digest = digest


def check_environment(python: str, packages: dict[str, str]) -> None:
    """ImportError naming each difference between this process's Python and packages and the client's."""
    differences = []
    if platform.python_version_tuple()[:2] != tuple(python.split(".")[:2]):
        differences.append(f"Python {platform.python_version()} (the project runs {python})")
    for name, wanted in packages.items():
        try:
            found = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            differences.append(f"no {name} (the project needs {wanted})")
            continue
        if found != wanted:
            differences.append(f"{name} {found} (the project needs {wanted})")
    if differences:
        raise ImportError(f"{_where()} has {', '.join(differences)}")


def _where() -> str:
    try:
        from distributed import get_worker

        return f"the worker {get_worker().address}"
    except (ImportError, ValueError):  # not in a Dask worker
        return "this process"


def _state() -> types.ModuleType:
    """This process's record of the installed code, shared by every task (each task rebuilds this code)."""
    fresh = types.ModuleType(STATE)
    fresh.lock, fresh.digest, fresh.finder = threading.Lock(), None, None
    return sys.modules.setdefault(STATE, fresh)  # atomic: two first tasks get the same record


def _imported_from_files(digest: str) -> bool:
    """Whether this process already imported the same code from its own files (a worker started
    beside the project, or in the client's own process): then that code stays, and its state."""
    if PACKAGE not in sys.modules:
        return False
    try:
        from risk.model import shipping

        return digest_of(shipping.package_code()) == digest
    except Exception:  # noqa: BLE001 - code that cannot even say its version is not the same code
        return False


def _forget_loaded_code(state: types.ModuleType) -> None:
    """Drop every loaded module of the package, and the importer of an older version."""
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    if state.finder in sys.meta_path:
        sys.meta_path.remove(state.finder)
    importlib.invalidate_caches()


class ShippedCode:
    """An importer (finder and loader) of the package's modules from sources held in memory."""

    def __init__(self, digest: str, sources: dict[str, tuple[bool, str, bytes]]):
        self.digest, self.sources = digest, sources

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in self.sources:
            return None
        is_package, filename, _ = self.sources[name]
        # The client's path as __file__ (settings.py derives a folder from it) and in tracebacks.
        return importlib.util.spec_from_file_location(
            name, filename, loader=self, submodule_search_locations=[] if is_package else None
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        _, filename, source = self.sources[module.__name__]
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)

    def get_source(self, name: str) -> str:
        """The source, for tracebacks where the file is not on this machine (linecache asks the loader)."""
        return self.sources[name][2].decode("utf-8")
