"""The cron entry: ingest new data, check the deployed model for drift, retrain and redeploy.

1. Take the run lock; if another run holds it, log that and exit 0, unless it has held the
   lock longer than ``max_run_minutes``: then fail (exit 1, one line naming the holder's pid
   and start time), as every run it locks out does. Remove temporary files that killed runs
   left behind.
2. Finish what an earlier run left undone for the current version: a deploy killed half-way,
   its diagnostics, its reports, its audit line (written then, marked ``recovered``).
3. Nothing new or changed in the input folder, nothing undone and nothing left undecided:
   check the set-up if the config changed since the last check passed, log one line and exit 0. This path runs every few minutes, so only stdlib-light modules
   are imported before it is decided.
4. Check the set-up (test data, column names) before any work: a mistake is one line with the fix.
5. Ingest. 6. Score the deployed model on the rows not yet judged (those just ingested);
   model drift means that score is below the deployed one (by more than
   ``drift_tolerance``); no deployed model, or one that fails verification, counts as drift;
   fewer than ``drift_min_rows`` rows wait for more. 7. No drift: record the decision and
   stop. 8. Drift: retrain on the whole master dataset; score it (the challenger) and the
   deployed model (the champion) on the same test data, with a paired bootstrap interval of
   the difference; deploy unless it is not better by more than ``promotion_margin``
   (``block_worse_deployments``) or is no better than chance while a model is deployed, then
   diagnose and report. With ``require_approval`` the new version waits, pending, for
   ``deployment.py --approve``; it covers its rows meanwhile, so they are not judged again.
   Each labelled batch ingested is back-tested against the predictions made before it arrived, and
   each drift judgement's figures are kept in the version's realised history
   (risk/monitoring/outcomes.py; ``<reports>/outcomes.pdf`` follows): evidence for people, which
   changes neither the decision nor training.
9. Every run appends one JSON line to ``<logs>/audit.jsonl``. Exit non-zero only on failure.
   Under cron (stderr not a terminal) nothing is printed unless the run fails: then one line.

Rows stay "not yet judged" until a decision is recorded: ``drift_checkpoint.json`` holds the
master's size at the last decision, and each version's manifest the master size it was
trained on, so rows a deployed version covers are never judged (nor deployed for) again. The
checkpoint also names the last version whose deployment was finished (reports and audit line
written): when ``current`` or the newest version differs, the run looks for undone work.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from risk.core import artefacts, logbook
from risk.core.artefacts import DIAGNOSTICS_FILES, QUARANTINE_FOLDER, REPORT_FILES
from risk.core.files import remove_stale_temporaries
from risk.core.jsonfiles import append_json_line, read_json, read_json_object
from risk.core.locks import LockBusy
from risk.core.settings import LOWER_IS_BETTER, Config, ConfigError, metric_gain
from risk.data import book, dbpull, ledger, preflight
from risk.monitoring import outcomes, predlog
from risk.registry import booklist, calllists, deploy, versions

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Callable
    from typing import Any

logger = logging.getLogger(__name__)


def why_ingested_rows_await_a_decision(config: Config) -> str | None:
    """Why data already ingested still needs a decision, or None. Stdlib only."""
    size = ledger.master_bytes(config)
    if not size:
        return None
    try:
        current = versions.current_version(config)
    except versions.BrokenCurrentLink as exc:
        return str(exc)
    if current is None and not versions.pending_versions(config):
        return "data is ingested but no model is deployed"
    # A version awaiting approval covers the rows it was trained on, as a current one does.
    if size > logbook.read_checkpoint(config)[1] and size > versions.covered_master_bytes(config):
        return "rows ingested by an earlier run were never judged (a failed or interrupted run)"
    return None


# --- what killed runs leave -----------------------------------------------------------------------


def remove_leftovers(config: Config) -> list[Path]:
    """Temporary files and half-built versions of killed runs; called under the run lock."""
    folders = [
        config.output_folder,
        config.output_folder / QUARANTINE_FOLDER,
        config.model_folder,
        config.deployment_folder,
        versions.versions_folder(config),
        config.reports_folder,
        config.log_folder,
        calllists.call_list_folder(config),
    ]
    folders += _subfolders(config.reports_folder)
    removed = remove_stale_temporaries(folders)
    incomplete = [
        *versions.versions_folder(config).glob(f"{deploy.INCOMING_PREFIX}*"),
        *config.deployment_folder.glob(".current-*"),
    ]
    if incomplete:
        deploy.remove_incomplete(config)
        removed += incomplete
    if removed:
        logger.info(
            "removed %d temporary file(s) left by killed runs: %s", len(removed), ", ".join(p.name for p in removed[:5])
        )
    return removed


def remove_expired_predictions(config: Config) -> list[Path]:
    """The prediction log's days past ``prediction_log_days`` (a directory listing when none are)."""
    return predlog.remove_old_days(config, datetime.now(UTC))


def _subfolders(folder: Path) -> list[Path]:
    import os

    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def why_a_deployment_may_be_unfinished(config: Config) -> str | None:
    """Why the current version may have work left undone by an earlier run, or None. Cheap:
    the checkpoint names the last version finished and the newest version it saw."""
    state = logbook.read_checkpoint_state(config)
    names = versions.version_names(config)
    newest = names[-1] if names else None
    current = versions.current_version_or_none(config)
    if newest != state.get("newest_version"):
        return f"{newest} is new since the last finished deployment"
    if current != state.get("completed_version") and current is not None:
        return f"{current} became current since the last finished deployment"
    return None


def current_and_pending_versions(config: Config, current: str | None) -> list[str]:
    """The current version and those awaiting approval: each gets its reports and audit line."""
    return [v for v in [current, *versions.pending_versions(config)] if v is not None]


def finish_what_interrupted_runs_left_undone(config: Config, started_at: str | None) -> dict[str, Any]:
    """Complete a killed deploy, then the current version's diagnostics, reports and audit line."""
    done: dict[str, Any] = {}
    completed = deploy.complete_interrupted_deploy(config)
    if completed:
        done["deployment_completed"] = completed
    current = versions.current_version_or_none(config)
    all_done = True
    for version in dict.fromkeys(current_and_pending_versions(config, current)):
        try:
            manifest = versions.read_manifest(versions.versions_folder(config) / version)
        except (versions.DeploymentError, OSError) as exc:
            manifest = None  # the drift check redeploys: a version that fails verification
            logger.error("%s cannot be finished: %s", version, exc)
        if manifest is not None:
            missing = after_deployment_steps_not_done(config, version)
            decision = manifest.get("decision")
            recovered = None
            if isinstance(decision, dict) and not _has_audit_line(config, version):
                recovered = recovered_audit_record(manifest, decision, started_at)
            steps = run_after_deployment(config, version, recovered, only=missing) if missing else {}
            if recovered is not None:
                recovered["after_deployment"] = {name: steps.get(name, "ok") for name in ("diagnostics", "reporting")}
                recovered["status"] = (
                    "ok" if all(v == "ok" for v in recovered["after_deployment"].values()) else "failed"
                )
                append_json_line(logbook.audit_path(config), recovered)
                steps["audit_line"] = "ok (written, marked recovered)"
            if steps:
                done[version] = steps
                logger.warning("finished what an earlier run left undone for %s: %s", version, steps)
            all_done = all_done and all(v.startswith("ok") for v in steps.values())
    if all_done:
        names = versions.version_names(config)
        judged, seen = logbook.read_checkpoint(config)
        covered = versions.covered_master_bytes(config)
        logbook.write_checkpoint(
            config,
            max(judged, covered),
            max(seen, covered),
            completed_version=current,
            newest_version=names[-1] if names else None,
        )
    return done


def after_deployment_steps_not_done(config: Config, version: str) -> list[str]:
    """The steps of run_after_deployment ("diagnostics", "reporting") whose files ``version`` lacks."""
    folder = config.reports_folder / version
    missing = []
    if not all((folder / name).is_file() for name in DIAGNOSTICS_FILES):
        missing.append("diagnostics")
    if not all((folder / name).is_file() for name in REPORT_FILES) or _reported_approval_is_stale(config, version):
        missing.append("reporting")
    return missing


def _reported_approval_is_stale(config: Config, version: str) -> bool:
    """Whether the version's report states another approval than the history records: an
    approval whose process was killed before (or while) it rewrote the reports."""
    reported = read_json_object(config.reports_folder / version / artefacts.REPORT_JSON).get("approval")
    if not isinstance(reported, dict):
        return False  # a report from before approvals were recorded in it: nothing to compare
    return reported.get("state") != versions.approval_states(config).get(version, {}).get("state")


def _has_audit_line(config: Config, version: str) -> bool:
    """Whether the audit log records a run that deployed ``version``."""
    return any(r.get("version_deployed") == version for r in logbook.read_audit(config))


def recovered_audit_record(
    manifest: dict[str, Any], decision: dict[str, Any], started_at: str | None
) -> dict[str, Any]:
    """The audit line of a run killed after it deployed, from what the version's manifest kept."""
    return {
        **decision,
        "decision": "pending_approval" if decision.get("decision") == "pending_approval" else "redeployed",
        "version_deployed": manifest.get("version"),
        "recovered": True,
        "recovered_by_run_started_at": started_at,
        "note": "the run that deployed this version was interrupted (killed or out of disk) before it "
        "finished; a later run completed its work and wrote this line",
    }


# --- one run ----------------------------------------------------------------------------------------


def run_pipeline(config: Config, started_at: str | None = None) -> dict[str, Any]:
    """One pass of the process, under the caller's lock. Returns the audit record's fields."""
    removed = remove_leftovers(config)
    expired = remove_expired_predictions(config)
    switched = deploy.complete_interrupted_switch(config)  # a killed approval, rollback or activation
    unfinished = why_a_deployment_may_be_unfinished(config)
    still_written: list[str] = []
    pending = ledger.pending_files(config, still_written)
    # New rows from database_sources, as snapshot files; a missing test folder fails the run
    # before a pull it could not use (the rest of the set-up is checked below, with their columns).
    pulled = dbpull.pull_new_rows(config, before_pulling=lambda: preflight.check_test_data(config))
    pending += pulled.snapshots
    undecided = why_ingested_rows_await_a_decision(config)
    record: dict[str, Any] = {**pulled.audit()}
    if removed:
        record["temporary_files_removed"] = len(removed)
    if expired:
        record["prediction_log_days_removed"] = len(expired)
    if switched:
        record["completed_interrupted_switch"] = switched
    if still_written:
        record["files_waiting"] = sorted(still_written)
    if outcomes.backtest_due(config):  # a run killed before back-testing what it ingested (one stat)
        finish_back_test(config, record)
    if not pending and not undecided and not unfinished:
        preflight.check_setup_if_config_changed(config)  # an edited config is checked now, not when data comes
        finish_outcomes_report(config, record)
        return {**record, "decision": "no_new_data", "reason": nothing_new(config, pulled, still_written)}
    preflight.check_setup(config)  # a set-up mistake fails now, not after minutes of training
    if unfinished:
        finished = finish_what_interrupted_runs_left_undone(config, started_at)
        if finished:
            record["completed_earlier_work"] = finished
        undecided = why_ingested_rows_await_a_decision(config)  # the finished deployment may cover the rows
        if not pending and not undecided:
            finish_outcomes_report(config, record)
            reason = nothing_new(config, pulled, still_written)
            return {
                **record,
                "decision": "no_new_data",
                "reason": f"finished earlier work; {reason}" if finished else reason,
            }
    from risk.data import ingest  # pandas: imported only now that there is work (the cron fast path stays light)

    record.update(metric=config["metric"], started_at=started_at)
    if undecided:
        logger.info("resuming: %s", undecided)
        record["resumed"] = undecided
    if pending:
        outcomes.mark_backtest_due(config)
        ingested = ingest.ingest_new_files(config, pending)
        record.update(ingested.summary(), ingestion_seconds=round(ingested.seconds, 4))
        record["step_seconds"] = {"ingestion": round(ingested.seconds, 3)}
        record["files_waiting"] = sorted({*record.get("files_waiting", []), *still_written})
        record.pop("seconds")
        back_test_new_batches(config, ingested, record)
        outcomes.clear_backtest_due(config)
    decided, (judged, seen) = decide_on_new_rows(config, record)
    realised = decided.pop("realised", None)
    step_seconds = {**record.get("step_seconds", {}), **decided.pop("step_seconds", {})}
    record.update(decided)
    if step_seconds:
        record["step_seconds"] = step_seconds
    # Recorded only once the decision is made: a failure above leaves the rows undecided.
    logbook.write_checkpoint(config, judged=judged, seen=seen)
    if realised is not None:
        keep_realised_figures(config, realised, record)
    if realised is not None or record.get("outcomes"):
        refresh_outcomes_report(config, record)
    else:
        finish_outcomes_report(config, record)
    if record.get("version_deployed"):
        record["after_deployment"] = run_after_deployment(config, record["version_deployed"], record)
        refreshed = refresh_superseded_reports(config, record["version_deployed"])
        if refreshed:
            record["superseded_reports_refreshed"] = refreshed
    return record


def back_test_new_batches(config: Config, ingested: Any, record: dict[str, Any]) -> None:
    """Join each labelled batch just ingested with the predictions made before it arrived
    (outcomes.py), into ``record["outcomes"]``. Evidence for people: a failure is logged and
    recorded, and changes neither the decision nor the run's status."""
    with_rows = [entry for entry in ingested.files_ingested if entry.get("rows_added")]
    if not with_rows:
        return
    batches = list(zip(ingested.new_batches, with_rows))
    lines = _record_backtests(config, lambda: batches, record, "of the new batches")
    if lines:
        record["outcomes"] = {
            "batches_back_tested": len(lines),
            "rows_matched": sum(line.get("rows_matched", 0) for line in lines),
            "rows_unmatched": sum(line.get("rows_unmatched", 0) for line in lines),
        }


def finish_back_test(config: Config, record: dict[str, Any]) -> None:
    """Back-test the batches a killed run ingested and did not (outcomes.batches_left_untested)."""
    lines = _record_backtests(
        config, lambda: outcomes.batches_left_untested(config), record, "left by an interrupted run"
    )
    if lines is None:
        return
    outcomes.clear_backtest_due(config)
    if lines:
        record["outcomes_completed"] = {"batches_back_tested": len(lines)}


def _record_backtests(config: Config, batches: Callable[[], list], record: dict[str, Any], which: str) -> list | None:
    """outcomes.record_backtests of ``batches()``, or None with the failure in ``record["outcomes"]``:
    the back-test is evidence for people and must never cost the run its decision."""
    try:
        return outcomes.record_backtests(config, batches())
    except Exception as exc:
        logger.exception("the back-test %s failed", which)
        record["outcomes"] = {"failed": f"{type(exc).__name__}: {exc}"}
        return None


def keep_realised_figures(config: Config, realised: dict[str, Any], record: dict[str, Any]) -> None:
    """Append the decision's realised figures to the deployed version's history (outcomes.py)."""
    realised = {**realised, "at": artefacts.utc_now()}
    if realised["roc_auc"] is None:
        realised["note"] = f"the {realised['rows']} row(s) judged hold one class only: no ROC AUC"
    realised["batch"]["files"] = record.get("files_ingested", [])
    try:
        outcomes.record_realised(config, realised)
    except OSError as exc:
        logger.error("the realised figures of %s were not kept: %s", realised["version"], exc)
        record["outcomes_realised"] = {"failed": str(exc)}


def finish_outcomes_report(config: Config, record: dict[str, Any]) -> None:
    """The outcomes report a killed run left unwritten after its records changed (one stat when none)."""
    if outcomes.report_due(config):
        refresh_outcomes_report(config, record)


def refresh_outcomes_report(config: Config, record: dict[str, Any]) -> None:
    """``<reports>/outcomes.pdf`` again when its figures changed; a failure fails the run (cron mails
    it) without touching the decision."""
    from risk.report import outcomesreport  # matplotlib: only a run with new labelled rows gets here

    try:
        written = outcomesreport.refresh_outcomes_report(config)
    except Exception as exc:  # a report's failure must not hide the decision
        logger.exception("the outcomes report was not written")
        record["outcomes_report"] = f"failed: {type(exc).__name__}: {exc}"
        return
    if written is not None:
        record["outcomes_report"] = "ok"


def nothing_new(config: Config, pulled: dbpull.Pulled, still_written: list[str]) -> str:
    """What a run with nothing to do checked and found unchanged: the input folder's files and each
    database source that answered (one that failed is named by the failure, not here)."""
    said = f"no new or changed files in {config.input_folder}"
    if still_written:
        said = f"{said} ready to read ({len(still_written)} still being written wait for a later run)"
    failed = {failure["source"] for failure in pulled.failures}
    answered = [repr(source["name"]) for source in config["database_sources"] if source["name"] not in failed]
    if answered:
        said += f"; no new rows in database source{'s' if len(answered) > 1 else ''} {', '.join(answered)}"
    return said


def decide_on_new_rows(config: Config, record: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, int]]:
    """The decision on the rows not yet judged: (its audit fields, the checkpoint to record then).

    The checkpoint is (judged, seen) as logbook.write_checkpoint takes them: a decision judges
    every row of the master; rows kept waiting for more are seen but stay unjudged.
    ``record``: the run's audit fields so far, kept in the manifest of a version it deploys.
    """
    from risk.data import masterstore  # pandas: lazy, as every heavy import here (the cron fast path)

    master_end = ledger.master_bytes(config)
    judged = versions.judged_offset(config)
    decided_all = (max(master_end, judged), max(master_end, judged))
    deployed, problem = load_current_deployment(config)
    if problem and master_end:
        decided: dict[str, Any] = {"reason": problem, "decision": "no_drift"}
        decided.update(retrain_and_deploy(config, problem, None, record={**record, **decided}, kept=None))
        return decided, decided_all
    new_rows = masterstore.load_master_since(config, judged) if deployed is not None else None
    if new_rows is None or new_rows.empty:
        return {
            "decision": "no_new_rows",
            "reason": "the new files added no rows (set aside or duplicates)",
        }, decided_all
    if len(new_rows) < config["drift_min_rows"]:
        waiting = {
            "decision": "waiting_for_rows",
            "rows_waiting": len(new_rows),
            "reason": f"{len(new_rows)} new row(s) since the last decision; drift is judged on {config['drift_min_rows']} or more",
        }
        return waiting, (judged, master_end)
    drift, reason, scores = check_model_drift(config, deployed, new_rows)
    realised = {**scores.pop("realised"), "batch": {"master_bytes": [judged, master_end]}}
    decided = {**scores, "rows_judged": len(new_rows), "reason": reason, "decision": "no_drift"}
    if drift:
        decided.update(
            retrain_and_deploy(
                config, reason, scores.get("deployed_score"), record={**record, **decided}, kept=deployed.version
            )
        )
    decided["realised"] = realised  # run_pipeline records it (this function writes nothing)
    return decided, decided_all


def refresh_superseded_reports(config: Config, version: str) -> dict[str, str]:
    """Rewrite the reports of the pending versions ``version`` superseded, so their sign-off says so."""
    from risk.report import reports  # pandas and matplotlib: only a run that deploys gets here

    return {
        older: reports.refresh_reports(config, older)
        for older in versions.superseded_by(config, version)
        if (config.reports_folder / older / REPORT_FILES[-1]).is_file()
    }


def load_current_deployment(config: Config) -> tuple[Any, str | None]:
    """(the verified current version, None) or (None, why there is none usable)."""
    try:
        version = versions.current_version(config)
    except versions.BrokenCurrentLink as exc:
        logger.error("%s", exc)
        return None, f"the current deployment failed verification: {exc}"
    if version is None:
        waiting = versions.pending_versions(config)
        if waiting:
            return None, f"no approved model yet ({', '.join(waiting)} awaiting approval)"
        return None, "no deployed model yet"
    try:
        return versions.load_deployed_model(config), None
    except versions.LOAD_ERRORS as exc:  # a version that cannot be loaded is unusable: redeploy
        logger.error("the current deployment cannot be used: %s", exc)
        return None, f"the current deployment failed verification: {exc}"


def check_model_drift(config: Config, deployed: Any, new_rows: Any) -> tuple[bool, str, dict[str, Any]]:
    """Compare the deployed model's score on the new rows with its deployed score."""
    from risk.model import scoring  # scikit-learn: lazy for the cron fast path

    metric = config["metric"]
    measured = scoring.score_frame(deployed.model, new_rows, deployed.metadata, config)
    new_score = measured[metric]
    deployed_score = deployed.scores[metric]
    scores = {"deployed_version": deployed.version, "deployed_score": deployed_score, "new_score": new_score}
    # Kept in the version's realised history by the run (outcomes.py), not in the audit line.
    scores["realised"] = {
        "version": deployed.version,
        "metric": metric,
        "score": new_score,
        "deployed_score": deployed_score,
        "roc_auc": measured.get("roc_auc"),
        "rows": measured["rows"],
        "positives": measured["positives"],
    }
    classes = len(set(scoring.binary_target(new_rows[config.target], config.positive_label)))
    if classes < 2 or new_score is None or deployed_score is None:
        # With one class F1 is 0 whatever the model does: that says nothing about drift.
        return False, f"drift not judged: the {len(new_rows)} new row(s) hold one class only", scores
    worse, not_worse = (">", "<=") if metric in LOWER_IS_BETTER else ("<", ">=")
    if metric_gain(metric, new_score, deployed_score) < -config["drift_tolerance"]:
        return True, f"model drift: {metric} {new_score:.4f} on new rows {worse} deployed {deployed_score:.4f}", scores
    return False, f"no drift: {metric} {new_score:.4f} on new rows {not_worse} deployed {deployed_score:.4f}", scores


def retrain_and_deploy(
    config: Config,
    reason: str,
    deployed_test_score: float | None = None,
    record: dict[str, Any] | None = None,
    kept: str | None = None,
) -> dict[str, Any]:
    """Train on the whole master and score it on the test data, then decide whether to deploy it."""
    from risk.model import compute, scoring, training  # scikit-learn: lazy for the cron fast path

    clock = time.perf_counter()
    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)
    del model  # saved: scoring and deployment read it back
    compute.release_freed_memory()  # training's freed heap does not stay under the next steps' peaks
    trained = time.perf_counter()
    scoring.score_model(config)
    scored = time.perf_counter()
    decided = decide_deployment(config, reason, deployed_test_score, record=record, kept=kept)
    seconds = {"training": trained - clock, "scoring": scored - trained, "deployment": time.perf_counter() - scored}
    decided["step_seconds"] = {step: round(value, 3) for step, value in seconds.items()}
    return decided


def decide_deployment(
    config: Config,
    reason: str,
    deployed_test_score: float | None = None,
    record: dict[str, Any] | None = None,
    kept: str | None = None,
) -> dict[str, Any]:
    """Deploy the model trained and scored in the model folder (the challenger), or keep ``kept``
    (the usable deployed version, the champion; None if there is none) and say why.

    Both are scored on the same test data (promotion.compare: the scores, the challenger's gain
    with a paired bootstrap interval, on the configured metric and ROC AUC). The challenger
    replaces the champion only if its gain exceeds ``promotion_margin``, unless
    ``block_worse_deployments`` is false; a model no better than chance never replaces one.
    ``deployed_test_score``: the champion's stored test score, compared with when the champion
    cannot be scored again. With ``require_approval`` the new version waits, pending.
    """
    outcome, warnings, one_class = _challenger_outcome(config)
    uninformative = outcome.get("uninformative", False)
    keep_note = "the new model is in models/; deploy it by hand with deployment.py if that is intended"
    if uninformative and kept:
        logger.warning("retrained model not deployed: no better than chance; keeping %s", kept)
        return {
            **outcome,
            "decision": "retrained_not_deployed",
            "reason": f"{reason}; but the retrained model is no better than chance ({_no_better_than_chance_warning(warnings)}): kept {kept} ({keep_note})",
        }
    comparison = champion_and_challenger(config, kept) if kept else None
    passes, gate = promotion_gate(config, comparison, outcome["test_score"], deployed_test_score)
    if comparison is not None:
        outcome["champion_challenger"] = comparison
    if not passes and config["block_worse_deployments"] and kept:
        if comparison is not None:
            comparison["decision"] = f"keep the champion {kept}"
        logger.warning("retrained model not deployed: %s", gate)
        hint = f" -- {one_class}" if one_class else ""
        return {
            **outcome,
            "decision": "retrained_not_deployed",
            "reason": f"{reason}; but {gate}{hint}: kept {kept} ({keep_note})",
        }
    if comparison is not None:
        comparison["decision"] = "promote the challenger" + (
            "" if passes else " although it does not pass the gate (block_worse_deployments is false)"
        )
    if kept and not passes:
        reason = f"{reason}; deployed although {gate} (block_worse_deployments is false)"
    if uninformative:
        reason = f"{reason}; deployed although it is no better than chance ({_no_better_than_chance_warning(warnings)}), as nothing usable was deployed to keep"
    return _deploy_challenger(config, reason, outcome, record)


def _challenger_outcome(config: Config) -> tuple[dict[str, Any], list[str], str | None]:
    """What the audit line states of the model just trained and scored in the model folder:
    (its fields, every warning about it, the sentence when the test data holds one class)."""
    metadata = _read_model_json(config, artefacts.METADATA_FILE)
    scores = _read_model_json(config, artefacts.SCORES_FILE)
    outcome: dict[str, Any] = {
        "model": metadata.get("model"),
        "training_seconds": metadata.get("training_seconds"),
        "test_score": scores.get(config["metric"]),
    }
    one_class = one_class_test_data(config, scores)
    warnings = versions.version_warnings(metadata, scores) + ([one_class] if one_class else [])
    if warnings:
        outcome["warnings"] = list(dict.fromkeys(warnings))
    if metadata.get("uninformative", False):
        outcome["uninformative"] = True
    return outcome, warnings, one_class


def _deploy_challenger(
    config: Config, reason: str, outcome: dict[str, Any], record: dict[str, Any] | None
) -> dict[str, Any]:
    """Deploy the model in the model folder, pending approval with ``require_approval``; its audit fields."""
    pending = bool(config["require_approval"])
    decided = "pending_approval" if pending else "redeployed"
    first = not versions.version_names(config)
    if pending:
        outcome["pending_approval"] = True
    decision = {**(record or {}), **outcome, "decision": decided, "reason": reason}
    version = deploy.deploy_model(
        config, reason=reason, decision=decision, master_bytes=ledger.master_bytes(config) or None, pending=pending
    )
    if pending:
        reason = f"{reason}; {version} awaits approval (python deployment.py --approve {version} --by NAME)"
    return {
        **outcome,
        "decision": decided,
        "reason": reason,
        "version_deployed": version,
        **({"first_version": True} if first else {}),
    }


def champion_and_challenger(config: Config, champion_version: str) -> dict[str, Any] | None:
    """The champion and the model just trained, on the same test data; None if the champion cannot be scored."""
    from risk.model import scoring  # scikit-learn: lazy for the cron fast path
    from risk.registry import promotion

    try:
        champion = versions.load_deployed_model(config, champion_version)
        challenger, challenger_metadata = scoring.load_trained_model(config)
        return promotion.compare(config, champion, challenger, challenger_metadata, champion_version)
    except Exception as exc:  # the stored test score is the fallback: a comparison must not stop the run
        logger.error("champion %s and the challenger could not be compared on the test data: %s", champion_version, exc)
        return None


def promotion_gate(
    config: Config, comparison: dict[str, Any] | None, test_score: float | None, deployed_test_score: float | None
) -> tuple[bool, str]:
    """(whether the challenger beats the champion by more than ``promotion_margin``, a sentence why not)."""
    metric, margin = config["metric"], float(config["promotion_margin"])
    if comparison is not None:
        found = comparison[metric]
        new, old, gain = found["challenger_score"], found["champion_score"], found["gain"]
        low, high = found["interval"]
        interval = (
            f", {found['confidence']:.0%} CI {low:+.4f} to {high:+.4f}" if low is not None and high is not None else ""
        )
        who = f"{comparison['champion']}'s"
    else:
        new, old = test_score, deployed_test_score
        gain = metric_gain(metric, new, old) if new is not None and old is not None else None
        interval, who = "", "the deployed model's"
    if old is None:
        return True, "nothing to compare with"
    if gain is None or new is None:
        return False, f"the retrained model's {metric} on the test data is undefined (the champion's is {old:.4f})"
    sentence = (
        f"the retrained model scores {metric} {new:.4f} on the test data against {who} {old:.4f} "
        f"(gain {gain:+.4f}{interval}; promotion_margin {margin:+g})"
    )
    return gain > margin, sentence


def _read_model_json(config: Config, name: str) -> dict[str, Any]:
    """A JSON file training or scoring just wrote in the model folder; raises JSON_READ_ERRORS."""
    return read_json(config.model_folder / name)


def _no_better_than_chance_warning(warnings: list[str]) -> str:
    return next((w for w in warnings if "no better than chance" in w), "no better than chance")


def one_class_test_data(config: Config, scores: dict[str, Any]) -> str | None:
    """A sentence when the test data holds one class, which makes its scores meaningless."""
    rows, positives = scores.get("rows"), scores.get("positives")
    if not isinstance(rows, int) or not isinstance(positives, int) or 0 < positives < rows:
        return None
    which = "every" if positives else "no"
    return (
        f"the test data holds one class only ({which} one of its {rows} rows has {config.target} = "
        f"{config.positive_label!r}), so a {config['metric']} on it says nothing about a model; add rows of both classes to {config.test_data_folder}"
    )


def run_after_deployment(
    config: Config, version: str, run_record: dict[str, Any] | None, only: list[str] | None = None
) -> dict[str, str]:
    """Diagnostics and reporting for ``version``: {step: "ok" | "failed: reason"}.

    The deployment already stands when these run, so a failure here is recorded (and makes
    the run exit non-zero) without undoing the decision; the next run tries again.
    """
    from risk.monitoring import diagnostics  # pandas and matplotlib: lazy for the cron fast path
    from risk.report import reports

    steps = (
        ("diagnostics", lambda: diagnostics.save_diagnostics(config, version)),
        ("reporting", lambda: reports.write_reports(config, version, run_record=run_record)),
    )
    done = {}
    for name, step in steps:
        if only is not None and name not in only:
            continue
        try:
            clock = time.perf_counter()
            step()
            done[name] = "ok"
            if run_record is not None:  # the audit line's step times (the record of this run)
                run_record.setdefault("step_seconds", {})[name] = round(time.perf_counter() - clock, 3)
        except Exception as exc:  # any failure of a report must not hide the deployment
            logger.exception("%s failed for %s", name, version)
            done[name] = f"failed: {type(exc).__name__}: {exc}"
    return done


# --- the command ------------------------------------------------------------------------------------


def run_and_record(config: Config, started: str, clock: float) -> dict[str, Any]:
    """One run under the lock: its audit line, then (all done) the deployment marked finished."""
    try:
        record = {"status": "ok", **run_pipeline(config, started)}
        refresh_call_list(config, record)
        if [k for k, v in record.get("after_deployment", {}).items() if v != "ok"]:
            record["status"] = "failed"
        if outcome_failures(record):
            record["status"] = "failed"
        if record.get("database_failures"):
            record["status"] = "failed"
            # The failure leads: the line cron mails must not open with "no new or changed files".
            failed = "; ".join(f"{f['source']}: {f['reason']}" for f in record["database_failures"])
            record["reason"] = f"database source(s) failed: {failed}; {record.get('reason', '')}".rstrip("; ")
        if any(
            not str(v).startswith("ok")
            for steps in record.get("completed_earlier_work", {}).values()
            if isinstance(steps, dict)
            for v in steps.values()
        ):
            record["status"] = "failed"
    except ConfigError as exc:  # a set-up mistake: the message says it all
        logger.error("fullprocess failed: %s", exc)
        record = {"status": "failed", "decision": "failed", "reason": str(exc)}
    except Exception as exc:  # the cron entry must record any failure before it exits
        logger.exception("fullprocess failed")
        record = {"status": "failed", "decision": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    record.update(started_at=started, duration_seconds=round(time.perf_counter() - clock, 4))
    append_json_line(logbook.audit_path(config), record)
    version = record.get("version_deployed")
    if version and record["status"] == "ok":
        names = versions.version_names(config)
        judged, seen = logbook.read_checkpoint(config)
        # A version awaiting approval is finished but not current: the current one stays the completed one.
        completed = versions.current_version_or_none(config) if record.get("pending_approval") else version
        logbook.write_checkpoint(
            config, judged, seen, completed_version=completed, newest_version=names[-1] if names else None
        )
    return record


def refresh_call_list(config: Config, record: dict[str, Any]) -> None:
    """A new call list when the current version or the client book changed (booklist.py), into
    ``record``; a book that cannot be used fails the run in one line and keeps the previous list."""
    try:
        written = booklist.refresh_call_list(config)
    except Exception as exc:  # the run's decision stands: the list's failure is recorded beside it
        problem = str(exc) if isinstance(exc, book.BookError) else f"{type(exc).__name__}: {exc}"
        logger.error(
            "call list not written (the previous one stays): %s", problem, exc_info=not isinstance(exc, book.BookError)
        )
        record["call_list"] = {"failed": problem}
        record["status"] = "failed"
        record["reason"] = f"call list not written: {problem}; {record.get('reason', '')}".rstrip("; ")
        return
    if written:
        record["call_list"] = written


def verify_audit(config: Config) -> int:
    """Print whether each chained log holds: 0 when both do, 1 naming the file and line that breaks."""
    from risk.core.jsonfiles import verify_json_line_chain

    failed = False
    for path in (logbook.audit_path(config), logbook.history_path(config)):
        line, message = verify_json_line_chain(path)
        print(("BROKEN: " if line else "") + message)
        failed = failed or line is not None
    return 1 if failed else 0


def run_locked(config: Config, started: str, clock: float) -> dict[str, Any]:
    """One cron run under the run lock, and its record; a locked-out run and one that cannot take
    the lock or write the audit log are recorded too, where the audit log can be written."""
    try:
        with ledger.pipeline_lock(config):
            return run_and_record(config, started, clock)
    except LockBusy as exc:
        # Within max_run_minutes a locked-out run is routine (runs overlap); past it the holder
        # is probably hung, and every run it locks out fails so that cron mails someone.
        status = "failed" if exc.overdue else "ok"
        record = {"status": status, "decision": "locked_out", "reason": str(exc), "started_at": started}
        record["lock_holder"] = exc.holder()
        if exc.overdue:
            logger.error("%s", exc)
    except Exception as exc:  # the lock or the audit log itself cannot be written
        logger.exception("fullprocess failed")
        reason = f"{type(exc).__name__}: {exc}"
        record = {"status": "failed", "decision": "failed", "reason": reason, "started_at": started}
    _append_audit_if_possible(config, record)
    return record


def _append_audit_if_possible(config: Config, record: dict[str, Any]) -> None:
    try:
        append_json_line(logbook.audit_path(config), record)
    except OSError as exc:
        logger.error("cannot append to %s: %s", logbook.audit_path(config), exc)


def run_summary(record: dict[str, Any]) -> str:
    """The run's console line: the decision and why ("deployed v1 (first version)" for a first deployment,
    whose reason, that nothing was deployed yet, goes without saying)."""
    version, reason = record.get("version_deployed"), str(record.get("reason", ""))
    if version and record.get("first_version"):
        _, _, rest = reason.partition("; ")  # the first clause is why a model was trained: none deployed yet
        return f"deployed {version} (first version)" + (f"; {rest}" if rest else "")
    return f"{record['decision']}: {reason}"


def outcome_failures(record: dict[str, Any]) -> dict[str, str]:
    """The outcome steps that failed in this run (the back-test, the realised history, the report):
    they fail the run, so that cron mails it, and change nothing else."""
    failed = {}
    for key, name in (
        ("outcomes", "the back-test"),
        ("outcomes_realised", "keeping the realised figures"),
        ("outcomes_report", "the outcomes report"),
    ):
        value = record.get(key)
        if isinstance(value, dict) and "failed" in value:
            failed[name] = f"failed: {value['failed']}"
        elif isinstance(value, str) and value.startswith("failed"):
            failed[name] = value
    return failed


def failure_summary(record: dict[str, Any]) -> str:
    """What failed: the reason, unless the run decided well and a step after deploying failed
    (then the reason is why it deployed, not what went wrong)."""
    failed = {k: v for k, v in record.get("after_deployment", {}).items() if v != "ok"}
    failed.update(outcome_failures(record))
    if not failed:
        return str(record.get("reason", ""))
    steps = "; ".join(f"{name} {outcome}" for name, outcome in failed.items())
    if not record.get("version_deployed"):
        return f"{record.get('reason', '')}, then {steps}"
    return f"deployed {record.get('version_deployed')} ({record.get('reason', '')}), then {steps}"
