"""Shared fixtures and helpers: a project laid out in tmp_path with its own config and sample data.

Tests run the real scripts on real files; nothing of the project's own is mocked.
Training is kept quick by a config with one fast candidate and three folds.
Every helper or fixture more than one test module uses lives here: test modules never import
each other.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from risk.core import artefacts, locks, logbook
from risk.core.files import atomic_write_json
from risk.core.settings import Config, load_config
from risk.model import compute
from risk.registry import deploy, versions

if TYPE_CHECKING:
    import pandas as pd

# pandas, numpy, the data modules and fullprocess are imported where they are used: under pytest-xdist
# the controlling process loads this file too, before it starts the test processes, and runs no test.

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_DIR.parent / "shared" / "data"

# package_check_seconds 0: the diagnostics fullprocess runs after deploying do not ask the package index.
FAST_SETTINGS = {"candidate_models": ["logistic_regression"], "cv_folds": 3, "package_check_seconds": 0}
# settle_seconds 0: files the tests write are complete at once, so ingestion need not watch them.
FAST_SETTINGS["settle_seconds"] = 0


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """Imported before any test's output is captured: distributed's log handler keeps the sys.stderr of
    its import, and one kept from a test's captured stream printed "Logging error" tracebacks after it.
    At collection, in each process that runs tests (not in pytest-xdist's controlling process)."""
    if not session.config.pluginmanager.has_plugin("dsession"):
        import distributed  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `start_first` (the longest, over a minute on a busy machine) are run first:
    one started last would keep one process busy long after the others ran out of work."""
    items.sort(key=lambda item: item.get_closest_marker("start_first") is None)  # stable: the rest keep their order


# --- what a test needs from the machine ---------------------------------------------------------


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """A test needs something this machine lacks (a program, a server): skip it here, but fail
    it under CI=true, where every test must run (.ci/run installs what they need)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


def import_or_fail_in_ci(module: str, reason: str) -> Any:
    """``pytest.importorskip`` that fails under CI=true: a pinned package must be there."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run this test: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


# --- files and configs ----------------------------------------------------------------------------

HEADER = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_config(folder: Path, **overrides) -> Config:
    """Write a config.json into ``folder`` (fast training by default) and load it."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "input_folder_path": "sourcedata",
        "output_folder_path": "ingesteddata",
        "test_data_path": "testdata",
        "output_model_path": "models",
        "prod_deployment_path": "production_deployment",
        "target": "exited",
        "positive_label": 1,
        "id_columns": ["corporation"],
        **FAST_SETTINGS,
        **overrides,
    }
    (folder / "config.json").write_text(json.dumps(values, indent=2), encoding="utf-8")
    return load_config(folder / "config.json")


def rewrite_config(config: Config, **overrides) -> Config:
    """The same project with some config keys changed (written to its config.json)."""
    values = json.loads(config.path.read_text(encoding="utf-8"))
    values.update(overrides)
    config.path.write_text(json.dumps(values, indent=2), encoding="utf-8")
    return load_config(config.path)


@contextlib.contextmanager
def growing(path: Path):
    """Append a row to ``path`` every 50 ms while the block runs, as scp writing in place does."""
    stop = threading.Event()

    def append_slowly() -> None:
        for number in range(10_000):
            if stop.wait(0.05):
                return
            with path.open("a") as handle:
                handle.write(f"g{number},1,2,3,{number % 2}\n")

    writer = threading.Thread(target=append_slowly, daemon=True)
    writer.start()
    try:
        yield path
    finally:
        stop.set()
        writer.join()


def master_rows(config: Config) -> pd.DataFrame:
    from risk.data import masterstore

    return masterstore.load_master(config)


def quarantine_reasons(config: Config) -> dict[str, str]:
    """{original file name: reason} from the quarantine folder's reason files."""
    reasons = {}
    for reason_file in (config.output_folder / artefacts.QUARANTINE_FOLDER).glob("*.reason.txt"):
        fields = dict(line.split(": ", 1) for line in reason_file.read_text().splitlines())
        reasons[fields["file"]] = fields["reason"]
    return reasons


# --- projects -------------------------------------------------------------------------------------


def add_shifted_month(config: Config, holdout: bool = False) -> None:
    """Drop the sample's shifted month into the input folder, as `make demo-drift` does; with
    ``holdout``, its labelled hold-out into the test folder too."""
    from risk.data import sample

    for batch in artefacts.csv_files(config.root / sample.SAMPLE_BATCH_FOLDER):
        shutil.copy(batch, config.input_folder / batch.name)
    if holdout:
        for path in artefacts.csv_files(config.root / sample.SAMPLE_HOLDOUT_FOLDER):
            shutil.copy(path, config.test_data_folder / path.name)


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project with the sample data written, built once: drawing the sample takes about a second."""
    from risk.data import sample

    folder = tmp_path_factory.mktemp("fresh") / "project"
    sample.write_sample_data(write_config(folder))
    return folder


@pytest.fixture
def project(project_template: Path, tmp_path: Path) -> Config:
    """A fresh project folder with the sample data written and nothing ingested yet (a private copy)."""
    return private_copy(project_template, tmp_path)


TEMPLATE_LOCK_SECONDS = 600  # a template's build by another test process takes seconds; a hung one fails the wait


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` loaded as a module (the folder is not a package), for the tests of its helpers."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_DIR / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def built_once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` run once for the whole run: under pytest-xdist the first test process to ask builds it
    in the run's shared temporary folder, under a lock, and the others wait for it (a fullprocess run costs
    seconds in each process). Read only: tests copy it (``private_copy``)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: the run's own temporary folder
        folder = tmp_path_factory.mktemp(name) / "project"
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{name}"  # the run's folder, above each worker's
    with open(f"{shared}.lock", "w") as lock:
        if not locks.flock_within(lock.fileno(), TEMPLATE_LOCK_SECONDS, 0.05):
            pytest.fail(f"{name}: another test process held {shared}.lock for {TEMPLATE_LOCK_SECONDS} s")
        if not (shared / "built").exists():  # the first to ask, or the one before it failed: build
            shutil.rmtree(shared, ignore_errors=True)
            build(shared / "project")
            (shared / "built").touch()
    return shared / "project"


def _deploy_sample(folder: Path) -> None:
    import fullprocess
    from risk.data import sample

    config = write_config(folder)
    sample.write_sample_data(config)
    assert fullprocess.main(["--config", str(config.path)]) == 0


@pytest.fixture(scope="session")
def deployed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project on which fullprocess has run once: ingested, trained, deployed as v1 (built once a run)."""
    return built_once_per_run(tmp_path_factory, "deployed", _deploy_sample)


def private_copy(template: Path, tmp_path: Path) -> Config:
    """A copy of a session- or module-wide project in this test's own folder, safe to change."""
    folder = tmp_path / "project"
    shutil.copytree(template, folder, symlinks=True)
    return load_config(folder / "config.json")


@pytest.fixture
def deployed_project(deployed_template: Path, tmp_path: Path) -> Config:
    """A private copy of the deployed project, safe to change."""
    return private_copy(deployed_template, tmp_path)


@pytest.fixture(scope="session")
def v2_template(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployed project after `make demo-drift`: the shifted sample month made v2 (built once a run)."""

    def drift_to_v2(folder: Path) -> None:
        import fullprocess

        shutil.copytree(deployed_template, folder, symlinks=True)
        config = load_config(folder / "config.json")
        add_shifted_month(config, holdout=True)
        assert fullprocess.main(["--config", str(config.path)]) == 0
        assert versions.current_version(config) == "v2", logbook.read_audit(config)[-1]

    return built_once_per_run(tmp_path_factory, "v2", drift_to_v2)


@pytest.fixture
def v2_project(v2_template: Path, tmp_path: Path) -> Config:
    """A private copy of the project after `make demo-drift` (v2 current)."""
    return private_copy(v2_template, tmp_path)


# The team's real public datasets (see ../shared/data/README.md): odd headers, NA values,
# text targets, CRLF line endings, identifier columns.
REAL_DATASETS = {
    "german_credit_kaggle.csv": {"target": "Risk", "positive_label": "bad", "id_columns": ["Unnamed: 0"]},
    "bank_churn_modelling.csv": {
        "target": "Exited",
        "positive_label": 1,
        "id_columns": ["RowNumber", "CustomerId", "Surname"],
    },
}


@pytest.fixture
def shared_data() -> Path:
    """The team's real public datasets; skipped where ../shared/data is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the real-dataset tests need the team's shared data")
    return SHARED_DATA


# --- the API's projects: a categorical feature, an uninformative version, diagnostics -----------

REGIONS = [f"region{i:02d}" for i in range(60)]  # more than the encoder's max_categories (50)
UNINFORMATIVE_WARNING = (
    "No candidate model is better than chance: every one is no better than chance at telling the classes apart."
)
SCORES_WARNING = "4 of 5 test rows (80%) also appear in the training data."


@pytest.fixture(autouse=True)
def single_threaded():
    """One OpenMP/BLAS thread in the test process, as in the gunicorn workers and each fit task:
    on a busy 2-core machine, OpenMP threads left spinning by one fit made the next tests' tree
    predictions tens of times slower (tests/model/test_modelfiles.py: 101 s, 36 s with one thread).
    The scripts a test starts as programs set their own limits, as in production."""
    with compute.single_threaded():
        yield


def still_running(pids: set[int] | list[int], seconds: float) -> list[int]:
    """The processes of ``pids`` still running after waiting up to ``seconds`` for them to exit."""
    import psutil

    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return [process.pid for process in alive]


def write_diagnostics(config: Config, version: str) -> Path:
    """A diagnostics document of the agreed shape, as diagnostics.py writes it."""
    path = config.reports_folder / version / "diagnostics.json"
    atomic_write_json(
        path,
        {
            "version": version,
            "generated_at": "2026-11-28T00:00:00+00:00",
            "summary_statistics": {"lastyear_activity": {"count": 9000, "mean": 120.5, "median": 80.0}},
            "missing_data": {"lastmonth_activity": {"missing": 270, "share": 0.03}},
            "execution_time": {"ingestion_seconds": 0.2, "training_seconds": 3.1},
            "outdated_packages": {"packages": []},
            "data_drift": {"drifted": False},
            "warnings": [],
        },
    )
    return path


def add_region(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A skewed categorical column (some regions rare, some values missing) that matters a little."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(REGIONS) + 1)
    region = rng.choice(REGIONS, size=len(frame), p=weights / weights.sum()).astype(object)
    region[rng.random(len(frame)) < 0.05] = None
    frame = frame.copy()
    frame.insert(1, "region", region)
    return frame


def deploy_categorical_project(folder: Path) -> Config:
    """A project whose data has a categorical feature, deployed by fullprocess."""
    import fullprocess
    from risk.data import sample

    config = write_config(folder)
    for seed, (relative, frame) in enumerate(sample.build_sample().items()):
        path = sample.destination(config, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(add_region(frame, seed).to_csv(index=False, float_format="%.0f"), encoding="utf-8")
    assert fullprocess.main(["--config", str(config.path)]) == 0
    return config


def deploy_uninformative_version(config: Config) -> str:
    """Deploy the trained model again, its metadata and scores written as training and scoring
    write them for a model no better than chance (real files: the deployment verifies them)."""
    metadata_path = config.model_folder / "trainedmodel.json"
    metadata = json.loads(metadata_path.read_text())
    metadata.update(uninformative=True, warnings=[UNINFORMATIVE_WARNING])
    metadata_path.write_text(json.dumps(metadata, indent=2))
    scores_path = config.model_folder / "scores.json"
    scores = json.loads(scores_path.read_text())
    scores.update(warnings=[SCORES_WARNING], test_rows_in_training=4, test_rows_in_training_share=0.8)
    scores_path.write_text(json.dumps(scores, indent=2))
    return deploy.deploy_model(config, reason="an uninformative retrain")


# --- the model report's pages ---------------------------------------------------------------------


def page_text(pdf: Path, page: int) -> str:
    """The text of one page of a PDF, by poppler's pdftotext (skipped where it is absent, failed under CI)."""
    if shutil.which("pdftotext") is None:
        skip_or_fail_in_ci("pdftotext is absent: apt-get install poppler-utils to read the report's pages in this test")
    done = subprocess.run(
        ["pdftotext", "-f", str(page), "-l", str(page), "-layout", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return " ".join(done.stdout.split())


def page_number(report: dict, title: str) -> int:
    return next(page["page"] for page in report["pages"] if page["title"] == title)


def listener_that_answers(answer: bytes | None) -> socket.socket:
    """A TCP listener on a free port that is no Dask scheduler: it sends ``answer`` (nothing when
    None) on each connection, then stays silent and never closes, as a hung peer, a half-sent
    handshake or a web server on the wrong port does. Closing it closes what it held open."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # the test closed the listener
                for connection in held:
                    connection.close()
                return
            held.append(connection)
            if answer is not None:
                connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server


# --- call lists, written by the list's own writer (risk.registry.calllists) ------------------------


def write_call_list(
    config: Config,
    ids: list[str],
    risks: list[float],
    *,
    version: str = "v1",
    stamp: str = "20261207T090000Z",
    budget: int = 100,
    warnings: list[str] | None = None,
    method: str = "exact contributions of the logistic regression, against the training data's typical client",
) -> pd.DataFrame:
    """A call list of these clients written by ``calllists.write_call_list``, ranked and compared
    with the list before it (if any) as the run does; each client has as many reasons (0-3) as its
    rank modulo 4, so that blanks are there to drop (none at all with a ``method`` saying "none: ...",
    as the run writes a version it cannot explain). Returns the list as written."""
    import numpy as np
    import pandas as pd

    from risk.registry import calllists

    ids_column = config["id_columns"]
    frame = calllists.ranked(pd.DataFrame({ids_column[0]: ids, "risk": risks}), ids_column)
    frame["band"] = np.where(frame["risk"] >= 0.65, "red", np.where(frame["risk"] >= 0.3, "amber", "green"))
    frame["flagged"] = frame["risk"] >= 0.3
    for n, column in enumerate(calllists.REASON_COLUMNS, start=1):
        frame[column] = [
            f"lastmonth_activity = {rank} (low for this book): +0.0{n}"
            if rank % 4 >= n and not method.startswith("none")
            else ""
            for rank in frame["rank"]
        ]
    found = calllists.latest_call_list(config)
    frame = calllists.with_changes(frame, found[1] if found else None, ids_column)
    frame = frame[calllists.list_columns(ids_column)]
    info = {
        "version": version,
        "model": "logistic_regression",
        "threshold": 0.3,
        "id_columns": ids_column,
        "warnings": warnings or [],
        "written_at": f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}+00:00",
        "method": method,
        "book_hash": "0" * 64,
        "book_checks": {},
        "previous": found[0]["file"] if found else None,
        **calllists.budget_summary(frame["risk"].to_numpy(), frame["flagged"].to_numpy(), budget),
    }
    calllists.write_call_list(config, info, frame, stamp)
    return frame
