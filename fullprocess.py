"""The cron entry: ingest new data, check the deployed model for drift, retrain and redeploy.

1. Take the run lock; if another run holds it, log that and exit 0.
2. Nothing new or changed in the input folder: log one line and exit 0. This path runs every
   few minutes, so only stdlib-light modules are imported before it is decided.
3. Ingest. 4. Score the deployed model on the newly ingested rows; model drift means that
   score is below the deployed one (by more than ``drift_tolerance``); no deployed model
   counts as drift. 5. No drift: record the decision and stop. 6. Drift: retrain on the
   whole master dataset, score on the test data, deploy, then diagnose and report.
7. Every run appends one JSON line to ``<logs>/audit.jsonl``. Exit non-zero only on failure.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import ledger
from fsutil import LockBusy, append_json_line, configure_logging, read_json_lines, run_lock
from settings import Config, ConfigError, load_config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

logger = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
LOG_FILE = "fullprocess.log"
LOCK_FILE = "pipeline.lock"  # the same file as ingestion.lock_path(), without importing pandas


def audit_path(config: Config) -> Path:
    return config.log_folder / AUDIT_FILE


def read_audit(config: Config) -> list[dict[str, Any]]:
    """Every audit record, oldest first."""
    return read_json_lines(audit_path(config))


def run_pipeline(config: Config) -> dict[str, Any]:
    """One pass of the process, under the caller's lock. Returns the audit record's fields."""
    pending = ledger.pending_files(config)
    if not pending:
        return {"decision": "no_new_data", "reason": f"no new or changed files in {config.input_folder}"}
    # Heavy imports only now that there is work to do.
    import ingestion

    ingested = ingestion.ingest_new_files(config, pending)
    record: dict[str, Any] = {**ingested.summary(), "metric": config["metric"]}
    record.pop("seconds")
    record["ingestion_seconds"] = round(ingested.seconds, 4)
    if not ingested.rows_added:
        return {**record, "decision": "no_new_rows", "reason": "the new files added no rows (set aside or duplicates)"}
    drift, reason, scores = check_model_drift(config, ingested.new_rows)
    record.update(scores, reason=reason)
    if not drift:
        return {**record, "decision": "no_drift"}
    record.update(retrain_and_deploy(config, reason))
    return {**record, "decision": "redeployed"}


def check_model_drift(config: Config, new_rows: Any) -> tuple[bool, str, dict[str, Any]]:
    """Compare the deployed model's score on the new rows with its deployed score."""
    import deployment
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
    if new_score is None or deployed_score is None:
        return False, f"{metric} is undefined on the new rows (one class only); drift not judged", scores
    if new_score < deployed_score - config["drift_tolerance"]:
        return True, f"model drift: {metric} {new_score:.4f} on new rows < deployed {deployed_score:.4f}", scores
    return False, f"no drift: {metric} {new_score:.4f} on new rows >= deployed {deployed_score:.4f}", scores


def retrain_and_deploy(config: Config, reason: str) -> dict[str, Any]:
    """Train on the whole master, score on the test data, deploy; then diagnose and report."""
    import deployment
    import scoring
    import training

    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)
    scores = scoring.score_model(config)
    version = deployment.deploy_model(config, reason=reason)
    return {
        "version_deployed": version,
        "model": metadata["model"],
        "training_seconds": metadata["training_seconds"],
        "test_score": scores[config["metric"]],
        **run_after_deployment(config, version),
    }


def run_after_deployment(config: Config, version: str) -> dict[str, Any]:
    """Diagnostics and reporting for a new version, where those steps are installed."""
    import importlib

    done = {}
    for module_name, function_name in (("diagnostics", "save_diagnostics"), ("reporting", "write_reports")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        getattr(module, function_name)(config, version)
        done[module_name] = "ok"
    return {"after_deployment": done}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="path to config.json (default: the one beside this script)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        configure_logging(args.verbose)
        logger.error("%s", exc)
        return 1
    configure_logging(args.verbose, config.log_folder / LOG_FILE)
    status = 0
    try:
        with run_lock(config.log_folder / LOCK_FILE):
            record = {"status": "ok", **run_pipeline(config)}
    except LockBusy as exc:
        record = {"status": "ok", "decision": "locked_out", "reason": str(exc)}
    except Exception as exc:  # the cron entry must record any failure before it exits
        logger.exception("fullprocess failed")
        record = {"status": "failed", "decision": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        status = 1
    record.update(
        started_at=started.isoformat(timespec="seconds"),
        duration_seconds=round(time.perf_counter() - clock, 4),
    )
    append_json_line(audit_path(config), record)
    logger.info("%s: %s", record["decision"], record.get("reason", ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
