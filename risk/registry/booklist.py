"""The call list's step: score the client book with the current version, rank it, write the list.

A list is written when the current version differs from the newest list's (a deploy, an
approval, an activation or a rollback, noticed on the next run) or the book's content hash
changed, and only then (``refresh_call_list``). Deciding that costs a stat of the book's files
and a read of ``latest.json``: stdlib only, so fullprocess's cron fast path stays light. A
database book has no cheap sign of change: it is read (and hashed) on every run.

The book is scored in chunks of CHUNK_ROWS, explained in the same chunks, on the Dask cluster
when ``dask_scheduler_address`` is set and the book is as large as scoring sends there.
"""

from __future__ import annotations

import logging
import time

from risk.core.artefacts import utc_now, utc_stamp
from risk.core.settings import Config
from risk.data import book
from risk.registry import calllists, versions

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

    import numpy as np
    import pandas as pd

logger = logging.getLogger(__name__)

CHUNK_ROWS = 50_000  # rows scored and explained at a time: bounds the model's and the explainer's memory
TOP_REASONS = len(calllists.REASON_COLUMNS)


def why_a_list_is_due(config: Config, current: str) -> tuple[str | None, dict[str, Any] | None]:
    """(why a new list is due or None, the newest list's JSON or None): no list, another current
    version, another contact_budget or id_columns in the config, a changed book. Stdlib only for a file book:
    a database book is always "due to be read", and refresh_call_list compares its hash."""
    try:
        info = calllists.latest_list_info(config)
    except calllists.CallListError as exc:
        return f"{exc}: the list is written again", None
    if info is None:
        return "no call list yet", None
    if info.get("version") != current:
        return f"{current} is current and the newest list was made by {info.get('version')}", info
    # The list's own figures (the budget's, the id columns') are the config's of the day it was written.
    if info.get("contact_budget") != config["contact_budget"]:
        return (
            f"contact_budget is {config['contact_budget']} and the newest list was made for {info.get('contact_budget')}",
            info,
        )
    if info.get("id_columns") != config["id_columns"]:
        return f"id_columns are {config['id_columns']} and the newest list has {info.get('id_columns')}", info
    if book.is_database_book(config):
        return None, info
    if book.files_hash_if_changed(config, info) != info.get("book_hash"):
        return "the client book changed", info
    return None, info


def refresh_call_list(config: Config) -> dict[str, Any] | None:
    """Write a new call list when one is due; its audit fields, or None when none was due (no book,
    no current version, nothing changed). Raises book.BookError when the book cannot be used: the
    previous list stays."""
    if config["client_book"] is None:
        return None
    current = versions.current_version_or_none(config)
    if current is None:
        return None
    reason, info = why_a_list_is_due(config, current)
    if reason is None and not book.is_database_book(config):
        return None
    clock = time.perf_counter()
    deployed = versions.load_deployed_model(config)
    the_book = read_book_for(config, deployed)
    if reason is None:
        if info is not None and the_book.sha256 == info.get("book_hash"):
            return None
        reason = "the client book changed"
    previous = _previous_list(config, info)
    list_info, frame = make_call_list(config, deployed, the_book, previous)
    list_info.update(why=reason, previous=info.get("file") if info is not None and previous is not None else None)
    path = calllists.write_call_list(config, list_info, frame, utc_stamp())
    seconds = round(time.perf_counter() - clock, 3)
    logger.info("call list %s written (%d clients): %s", path.name, len(frame), reason)
    return {"file": path.name, "rows": len(frame), "reason": reason, "seconds": seconds}


def read_book_for(config: Config, deployed: versions.DeployedModel) -> book.Book:
    """The book read and checked for ``deployed``: typed by the master's kinds (the version's own
    where the master has none), its categories checked against those the model saw."""
    from risk.data import masterstore
    from risk.model import compiled

    try:
        kinds = masterstore.column_kinds(config)
    except FileNotFoundError:
        kinds = deployed.metadata.get("column_kinds") or {}
    return book.read_book(config, kinds, deployed.metadata["features"], compiled.known_categories(deployed.model))


def _previous_list(config: Config, info: dict[str, Any] | None) -> pd.DataFrame | None:
    """The newest list's ids and ranks (what the change column needs), or None: no list, one made
    with other id columns (no client can be matched), or one that cannot be read."""
    if info is None or info.get("id_columns") != config["id_columns"]:
        return None
    try:
        found = calllists.latest_call_list(config, columns=[*config["id_columns"], "rank"])
    except calllists.CallListError as exc:
        logger.warning("the previous call list cannot be read (every client is marked new): %s", exc)
        return None
    return found[1] if found is not None else None


# ----------------------------------------------------------------------------- making the list


def make_call_list(
    config: Config,
    deployed: versions.DeployedModel,
    the_book: book.Book,
    previous: pd.DataFrame | None,
    explain: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the list's JSON, the list) for ``the_book`` scored by ``deployed``, ranked riskiest first
    (``explain`` False: blank reasons, what the benchmark compares the reasons' cost against)."""
    import numpy as np

    from risk.core.bands import band_thresholds, risk_bands
    from risk.registry.predictions import served_threshold

    ids = config["id_columns"]
    frame = the_book.frame
    explainer, method = explainer_and_method(config, deployed) if explain else (None, "none: not asked for")
    risk, predicted, reasons = score_book(config, deployed, frame, explainer)
    listed = frame[ids].copy()
    listed["risk"] = risk
    listed["_row"] = np.arange(len(frame))  # where each client's reasons are, once sorted
    listed = calllists.ranked(listed, ids)
    order = listed.pop("_row").to_numpy()
    flagged = predicted[order].astype(bool)
    threshold = served_threshold(deployed)
    thresholds = band_thresholds(config, threshold)
    listed["band"] = risk_bands(listed["risk"].tolist(), flagged.tolist(), thresholds)
    listed["flagged"] = flagged
    for position, column in enumerate(calllists.REASON_COLUMNS):
        listed[column] = reasons[position][order]
    listed = calllists.with_changes(listed, previous, ids)[calllists.list_columns(ids)]
    info = {
        "version": deployed.version,
        "model": deployed.metadata.get("model"),
        "threshold": threshold,
        "bands": thresholds,
        "warnings": versions.version_warnings(deployed.metadata, deployed.scores),
        "id_columns": ids,
        "book": the_book.source,
        "book_hash": the_book.sha256,
        "book_files": the_book.files,
        "book_checks": the_book.checks,
        "method": method,
        "previous": None,
        "written_at": utc_now(),
        **calllists.budget_summary(listed["risk"].to_numpy(), flagged, config["contact_budget"]),
    }
    return info, listed


def score_book(
    config: Config, deployed: versions.DeployedModel, frame: pd.DataFrame, explainer: Any
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(risks, 0/1 decisions, three arrays of reasons) for every row of ``frame``, in chunks of
    CHUNK_ROWS: on the Dask cluster when one is configured and the book is large, else here.
    ``explainer`` None: the reasons are blank."""
    import numpy as np

    from risk.model import scoring
    from risk.registry.predictions import served_threshold

    starts = range(0, len(frame), CHUNK_ROWS)
    chunks = [frame.iloc[start : start + CHUNK_ROWS] for start in starts]
    features = deployed.metadata["features"]
    threshold = served_threshold(deployed)
    if config["dask_scheduler_address"] and len(frame) >= scoring.CLUSTER_MIN_ROWS:
        from risk.model import compute

        with compute.open_runner(config) as runner:
            model, shared_explainer = runner.share(deployed.model), runner.share(explainer)
            work = [(model, features, threshold, shared_explainer, chunk, deployed.version) for chunk in chunks]
            results = runner.map(score_chunk, work, name="calllist")
    else:
        results = [
            score_chunk(deployed.model, features, threshold, explainer, chunk, deployed.version) for chunk in chunks
        ]
    risk = np.concatenate([r for r, _, _ in results]) if results else np.zeros(0)
    predicted = np.concatenate([p for _, p, _ in results]) if results else np.zeros(0, dtype=int)
    reasons = [
        np.concatenate([chunk_reasons[i] for _, _, chunk_reasons in results]) if results else np.zeros(0, dtype=object)
        for i in range(TOP_REASONS)
    ]
    return risk, predicted, reasons


def score_chunk(
    model: Any, features: dict[str, list[str]], threshold: float, explainer: Any, chunk: pd.DataFrame, version: str
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One chunk's risks, decisions (risk at or above the threshold, as the API decides: one
    predict_proba, not a second one inside predict) and reasons; a task a Dask worker can run."""
    from risk.registry.predictions import model_risk

    risk = model_risk(model, features, chunk, version)
    return risk, (risk >= threshold).astype(int), reason_columns(explainer, chunk)


# ----------------------------------------------------------------------------- the reasons


def explainer_and_method(config: Config, deployed: versions.DeployedModel) -> tuple[Any, str]:
    """(the explainer of ``deployed``, how it finds reasons), or (None, why there are no reasons):
    a model the explainer cannot explain exactly still gets its list, with blank reasons."""
    from risk.model import explain
    from risk.registry.predictions import explainer_for

    try:
        return explainer_for(config, deployed), explain.METHOD
    except (explain.UnsupportedModel, ValueError, KeyError, OSError) as exc:  # OSError: an older version's master gone
        logger.warning("%s: the call list's reasons are left blank: %s", deployed.version, exc)
        return None, f"none: {deployed.version} cannot be explained ({exc})"


def reason_columns(explainer: Any, chunk: pd.DataFrame) -> list[np.ndarray]:
    """The one place reasons are made: three object arrays (reason_1..3), "" where a client has fewer."""
    import numpy as np

    columns = [np.full(len(chunk), "", dtype=object) for _ in range(TOP_REASONS)]
    if explainer is None:
        return columns
    for row, reasons in enumerate(explainer.reasons(chunk, top=TOP_REASONS)):
        for position, reason in enumerate(reasons[:TOP_REASONS]):
            columns[position][row] = reason
    return columns
