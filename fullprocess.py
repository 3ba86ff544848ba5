"""The cron entry: ingest new data, check the deployed model for drift, retrain and redeploy.

1. Take the run lock; if another run holds it, log that and exit 0.
2. Nothing new or changed in the input folder, and nothing left undecided: log one line and
   exit 0. This path runs every few minutes, so only stdlib-light modules are imported
   before it is decided.
3. Ingest. 4. Score the deployed model on the rows not yet judged (those just ingested);
   model drift means that score is below the deployed one (by more than
   ``drift_tolerance``); no deployed model counts as drift; fewer than ``drift_min_rows``
   rows wait for more. 5. No drift: record the decision and stop. 6. Drift: retrain on the
   whole master dataset and score on the test data; deploy unless it does worse there than
   the deployed model (``block_worse_deployments``), then diagnose and report.
7. Every run appends one JSON line to ``<logs>/audit.jsonl``. Exit non-zero only on failure.

Rows stay "not yet judged" until a decision is recorded: ``drift_checkpoint.json`` holds the
master's size at the last decision. A run that failed or was killed after ingesting leaves
them undecided, and the next run judges them even if no new file has arrived.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import dbsource
import deployment
import ledger
from fsutil import LockBusy, append_json_line, atomic_write_json, configure_logging, read_json_lines, run_lock
from settings import Config, ConfigError, load_config, script_parser

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

logger = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
LOG_FILE = "fullprocess.log"
CHECKPOINT_FILE = "drift_checkpoint.json"


def audit_path(config: Config) -> Path:
    return config.log_folder / AUDIT_FILE


def read_audit(config: Config) -> list[dict[str, Any]]:
    """Every audit record, oldest first."""
    return read_json_lines(audit_path(config))


def read_checkpoint(config: Config) -> tuple[int, int]:
    """(judged, seen): the master's size at the last decision, and at the last run that
    looked at the rows after it (rows kept waiting for more are seen, not judged)."""
    try:
        checkpoint = json.loads((config.output_folder / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0, 0
    judged = int(checkpoint.get("master_bytes", 0))
    return judged, max(judged, int(checkpoint.get("seen_bytes", 0)))


def write_checkpoint(config: Config, judged: int, seen: int) -> None:
    atomic_write_json(config.output_folder / CHECKPOINT_FILE, {"master_bytes": judged, "seen_bytes": seen})


def undecided_work(config: Config) -> str | None:
    """Why data already ingested still needs a decision, or None. Stdlib only."""
    size = ledger.master_bytes(config)
    if not size:
        return None
    if deployment.current_version(config) is None:
        return "data is ingested but no model is deployed"
    if size > read_checkpoint(config)[1]:
        return "rows ingested by an earlier run were never judged (a failed or interrupted run)"
    return None


def run_pipeline(config: Config, started_at: str | None = None) -> dict[str, Any]:
    """One pass of the process, under the caller's lock. Returns the audit record's fields."""
    pending = ledger.pending_files(config)
    pulled = dbsource.pull_new_rows(config)  # new rows from database_sources, as snapshot files
    pending += pulled.snapshots
    undecided = undecided_work(config)
    if not pending and not undecided:
        return {"decision": "no_new_data", "reason": f"no new or changed files in {config.input_folder}", **pulled.audit()}
    # Heavy imports only now that there is work to do.
    import ingestion

    record: dict[str, Any] = {"metric": config["metric"], "started_at": started_at, **pulled.audit()}
    if undecided:
        logger.info("resuming: %s", undecided)
        record["resumed"] = undecided
    if pending:
        ingested = ingestion.ingest_new_files(config, pending)
        record.update(ingested.summary(), ingestion_seconds=round(ingested.seconds, 4))
        record.pop("seconds")
    master_end = ledger.master_bytes(config)
    judged = read_checkpoint(config)[0]
    new_rows = ingestion.load_master_since(config, judged)
    deployed = deployment.current_version(config) is not None
    if new_rows is None or (new_rows.empty and deployed):
        record.update(decision="no_new_rows", reason="the new files added no rows (set aside or duplicates)")
    elif deployed and len(new_rows) < config["drift_min_rows"]:
        record.update(
            decision="waiting_for_rows",
            rows_waiting=len(new_rows),
            reason=f"{len(new_rows)} new row(s) since the last decision; drift is judged on {config['drift_min_rows']} or more",
        )
        write_checkpoint(config, judged=judged, seen=master_end)
        return record
    else:
        drift, reason, scores = check_model_drift(config, new_rows)
        record.update(scores, rows_judged=len(new_rows), reason=reason, decision="no_drift")
        if drift:
            record.update(retrain_and_deploy(config, reason, scores.get("deployed_score")))
    # Recorded only once the decision is made: a failure above leaves the rows undecided.
    write_checkpoint(config, judged=master_end, seen=master_end)
    if record.get("version_deployed"):
        record["after_deployment"] = run_after_deployment(config, record)
    return record


def check_model_drift(config: Config, new_rows: Any) -> tuple[bool, str, dict[str, Any]]:
    """Compare the deployed model's score on the new rows with its deployed score."""
    import scoring

    metric = config["metric"]
    if deployment.current_version(config) is None:
        return True, "no deployed model yet", {}
    try:
        deployed = deployment.load_deployed_model(config)
    except (deployment.DeploymentError, OSError, ValueError) as exc:
        logger.error("the current deployment cannot be used: %s", exc)
        return True, f"the current deployment failed verification: {exc}", {}
    new_score = scoring.score_frame(deployed.model, new_rows, deployed.metadata, config)[metric]
    deployed_score = deployed.scores[metric]
    scores = {"deployed_version": deployed.version, "deployed_score": deployed_score, "new_score": new_score}
    classes = len(set(scoring.binary_target(new_rows[config.target], config.positive_label)))
    if classes < 2 or new_score is None or deployed_score is None:
        # With one class F1 is 0 whatever the model does: that says nothing about drift.
        return False, f"drift not judged: the {len(new_rows)} new row(s) hold one class only", scores
    if new_score < deployed_score - config["drift_tolerance"]:
        return True, f"model drift: {metric} {new_score:.4f} on new rows < deployed {deployed_score:.4f}", scores
    return False, f"no drift: {metric} {new_score:.4f} on new rows >= deployed {deployed_score:.4f}", scores


def retrain_and_deploy(config: Config, reason: str, deployed_test_score: float | None = None) -> dict[str, Any]:
    """Train on the whole master and score it on the test data; deploy it unless it does
    worse there than the deployed model (``block_worse_deployments``)."""
    import scoring
    import training

    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)
    scores = scoring.score_model(config)
    metric, test_score = config["metric"], scores[config["metric"]]
    outcome = {"model": metadata["model"], "training_seconds": metadata["training_seconds"], "test_score": test_score}
    worse = deployed_test_score is not None and test_score is not None and test_score < deployed_test_score
    if worse and config["block_worse_deployments"]:
        kept = deployment.current_version(config)
        logger.warning("retrained model not deployed: test %s %.4f < deployed %.4f", metric, test_score, deployed_test_score)
        return {
            **outcome,
            "decision": "retrained_not_deployed",
            "reason": f"{reason}; but the retrained model scores {metric} {test_score:.4f} on the test data, below "
            f"{kept}'s {deployed_test_score:.4f}: kept {kept} (the new model is in models/; "
            "deploy it by hand with deployment.py if that is intended)",
        }
    version = deployment.deploy_model(config, reason=reason)
    return {**outcome, "decision": "redeployed", "version_deployed": version}


def run_after_deployment(config: Config, run_record: dict[str, Any]) -> dict[str, str]:
    """Diagnostics and reporting for the version this run deployed: {step: "ok" | "failed: reason"}.

    The deployment already stands when these run, so a failure here is recorded (and makes
    the run exit non-zero) without undoing the decision.
    """
    import diagnostics
    import reporting

    version = run_record["version_deployed"]
    steps = (
        ("diagnostics", lambda: diagnostics.save_diagnostics(config, version)),
        ("reporting", lambda: reporting.write_reports(config, version, run_record=run_record)),
    )
    done = {}
    for name, step in steps:
        try:
            step()
            done[name] = "ok"
        except Exception as exc:  # any failure of a report must not hide the deployment
            logger.exception("%s failed for %s", name, version)
            done[name] = f"failed: {type(exc).__name__}: {exc}"
    return done


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), time.perf_counter()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        configure_logging(args.verbose)
        logger.error("%s", exc)
        return 1
    configure_logging(args.verbose, config.log_folder / LOG_FILE)
    status = 0
    try:
        with run_lock(ledger.lock_path(config)):
            record = {"status": "ok", **run_pipeline(config, started)}
        failed_steps = [k for k, v in record.get("after_deployment", {}).items() if v != "ok"]
        if failed_steps or record.get("database_failures"):
            record["status"] = "failed"
            status = 1
    except LockBusy as exc:
        record = {"status": "ok", "decision": "locked_out", "reason": str(exc)}
    except Exception as exc:  # the cron entry must record any failure before it exits
        logger.exception("fullprocess failed")
        record = {"status": "failed", "decision": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        status = 1
    record.update(
        started_at=started,
        duration_seconds=round(time.perf_counter() - clock, 4),
    )
    append_json_line(audit_path(config), record)
    logger.info("%s: %s", record["decision"], record.get("reason", ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
