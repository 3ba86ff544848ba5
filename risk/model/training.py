"""Fit candidate scikit-learn pipelines on the master dataset, pick the best, save it.

Every setting of every model in SEARCH_SPACE (pipelines.py) is scored on the first two
cross-validation folds, the best of each model goes on to the remaining folds (successive
halving), and the soft-voting blend of those models (their averaged probabilities) is a
candidate of its own, judged on the same folds (selection.py: the tuned threshold, the
judgement against chance and against flagging everyone, the choice). The fits run where
compute.py says, from the data fitting.py lays out for them; the chosen model is refitted on
all rows. Above ``selection_sample_rows`` training rows the folds cover a seeded, stratified
sample of that many (fitting.fold_indices): the choice is made on it, the refit uses every row.

Saves ``trainedmodel.skops`` (see modelfiles.py) and ``trainedmodel.json`` (parameters, the fold scores, time and
judgement of every candidate and setting, features and their types, the training data's typical client
(the baseline of the reasons, explain.py), data hash, package versions, time taken, warnings).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline

from risk.core.artefacts import METADATA_FILE, MODEL_FILE, SKOPS_MODEL_FILE, utc_now
from risk.core.environment import installed_version
from risk.core.files import atomic_path, atomic_write_json, before_change, process_is_alive, sha256_file
from risk.core.jsonfiles import json_ready
from risk.core.settings import Config, metric_gain
from risk.core.tables import read_typed_csv
from risk.data import ledger, masterstore
from risk.model import compute, modelfiles
from risk.model.batches import Schema
from risk.model.explain import typical_client
from risk.model.fitting import (
    FitRounds,
    FoldFiles,
    TrainingData,
    clear_loaded_data,
    file_stamp,
    fold_indices,
    warm_worker,
)
from risk.model.pipelines import BLEND, SEARCH_SPACE, SoftVotingBlend, TrainingError, feature_types
from risk.model.scoring import binary_target
from risk.model.selection import THRESHOLD_GRID, pick_best, score_candidate, threshold_curve

logger = logging.getLogger(__name__)

REPORTED_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "threadpoolctl", "dask", "distributed")
SCRATCH_PREFIX = "risk-training-"  # + "<pid>-": a run's folder in the temp folder for the workers' snapshot
SCREEN_FOLDS = 2  # every setting is scored on this many folds before the losers are dropped
# What each candidate's serving_us_per_row is (ServingCheck); the report prints it under the candidate table.
SERVING_MEASUREMENT = (
    "median microseconds of one row scored in-process by the scorer the API builds (compiled, or scikit-learn's "
    "where compiling fails), on this machine at training time, by each candidate fitted on the last "
    "cross-validation fold (only the chosen one is refitted on all rows); the HTTP request is not counted"
)
PARALLEL_MIN_ROWS = 10_000  # below this, starting worker processes costs more than it saves


def train_model(
    config: Config, data: pd.DataFrame | None = None, workers: int | None = None
) -> tuple[FixedThresholdClassifier, dict[str, Any]]:
    """Fit every candidate, keep the best and refit it on all the data. Returns (model, metadata).

    ``workers`` sets the number of local worker processes (default: one per usable core when
    the data is large enough to pay for them); a configured Dask cluster takes precedence.
    """
    started = time.perf_counter()
    # What the caller freed (fullprocess: ingestion's 1M rows left 108 MiB in glibc's heap) goes back
    # to the system before training's own peak comes on top of it.
    compute.release_freed_memory()
    compute.map_large_allocations()
    kinds = masterstore.column_kinds(config)
    features = feature_types(config, kinds)
    master = masterstore.master_path(config)
    rows = _row_count(config, data)
    parallel = workers is not None and workers > 1 or (workers is None and rows >= PARALLEL_MIN_ROWS)
    remove_stale_scratch()
    with (
        # Nothing after training uses the worker processes: they go as it ends.
        compute.open_runner(config, parallel=parallel, workers=workers, keep_workers=False) as runner,
        tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", ignore_cleanup_errors=True) as scratch,
    ):
        runner.start_in_background(warm_worker)  # the workers start while this process reads and encodes
        source, y, files, typical = _training_data(config, data, master, kinds, features, runner, Path(scratch))
        _check_trainable(y, config)
        seed, splits, metric = config["random_seed"], config["cv_folds"], config["metric"]
        folds = fold_indices(y, splits, seed, config["selection_sample_rows"])
        serving = ServingCheck(
            Schema(tuple(features["numeric"]), tuple(features["categorical"]), ()), data, master, kinds
        )
        candidates, final, fits, chosen, selection = _cross_validate(
            FitRounds(runner, source, files, seed, splits, kept_fold=splits - 1), y, folds, config, serving
        )
        compute_used = runner.describe()
    clear_loaded_data()  # this process's copy of the frame is not needed any more
    model = _final_model(chosen, candidates, final)
    warnings = _warnings(chosen, candidates, config)
    if compute_used.get("fallback_reason"):  # the operator asked for a cluster: say it was not used
        warnings.append(
            f"trained on this machine, not on the Dask cluster at {config['dask_scheduler_address']}: "
            f"{compute_used['fallback_reason']} (dask_fallback_local is true)"
        )
    metadata = _metadata(config, chosen, model, candidates, features, kinds, len(y), y, time.perf_counter() - started)
    metadata.update(
        selection_rows=sum(len(test) for _, test in folds),  # the rows the candidates were chosen on
        uninformative=not any(c["informative"] for c in candidates.values()),
        warnings=warnings,
        selection=selection,
        max_flagged_share=config["max_flagged_share"],
        flagged_share=candidates[chosen]["flagged_share"],
        compute=compute_used,
        fits=fits,
        serving_measurement=SERVING_MEASUREMENT,
        typical_client=typical,  # the reasons' baseline (explain.py): each feature's median or most common value
    )
    for warning in warnings:
        logger.warning("%s", warning)
    logger.info(
        "chose %s (CV %s %.4f, out-of-fold ROC AUC %.3f) in %.1fs on %s",
        chosen,
        metric,
        candidates[chosen]["mean"],
        candidates[chosen]["oof_roc_auc"],
        metadata["training_seconds"],
        runner.backend,
    )
    return model, metadata


def _row_count(config: Config, data: pd.DataFrame | None) -> int:
    if data is not None:
        return len(data)
    state = masterstore.read_master_state(config) or {}
    return int(state.get("rows") or 0)


def _training_data(
    config: Config,
    data: pd.DataFrame | None,
    master: Path,
    kinds: dict[str, str],
    features: dict[str, list[str]],
    runner: compute.Runner,
    scratch: Path,
) -> tuple[TrainingData, np.ndarray, FoldFiles | None, dict[str, Any]]:
    """Where the fits find their data, the labels, (worker processes on this machine) the
    fold files written into ``scratch`` (by the workers, or this process: FoldFiles.write, from the
    snapshot this process writes there), and the training data's typical client."""
    common = {
        "features": features,
        "kinds": kinds,
        "target": config.target,
        "positive_label": config.positive_label,
        "sample_rows": config["selection_sample_rows"],
    }
    if data is not None:
        if config.target not in data.columns:
            raise TrainingError(f"target column {config.target!r} is not in the training data")
        source = TrainingData(**common, frame=data)
    else:
        if not master.exists():
            raise FileNotFoundError(f"no master dataset yet in {config.output_folder}: run ingestion first")
        source = TrainingData(**common, master=str(master), stamp=file_stamp(master))
    if runner.backend == "dask":
        # The workers read the master themselves; this process needs the labels and the typical client only.
        if data is not None:
            y = binary_target(data[config.target], config.positive_label)
            return source, y, None, typical_client(data, features)
        columns = features["numeric"] + features["categorical"] + [config.target]
        read = read_typed_csv(master, kinds, usecols=columns, categories=features["categorical"])
        y = binary_target(read[config.target], config.positive_label)
        return source, y, None, typical_client(read, features)
    X, y = source.load()  # read once, here: the fits (or the fold files) come from it
    typical = typical_client(X, features)
    if runner.backend == "processes":
        files = FoldFiles(
            X, y, features, config["random_seed"], config["cv_folds"], scratch, config["selection_sample_rows"]
        )
        clear_loaded_data()  # the snapshot has it now
        return dataclasses.replace(source, frame=None, master=None, folds=str(scratch)), y, files, typical
    return source, y, None, typical


def remove_stale_scratch(folder: Path | None = None) -> list[Path]:
    """Remove the scratch folders (and their snapshots) of training runs whose process is gone.

    A run killed while training never removes its own; its folder is named with its pid, so
    the next run can tell. A live run's folder (another project's, say) is left alone."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if (
            not pid.isdigit()
            or int(pid) == os.getpid()
            or process_is_alive(int(pid))
            or path.is_symlink()
            or not path.is_dir()
        ):
            continue
        shutil.rmtree(path, ignore_errors=True)  # another user's is not ours to remove, and stays
        if not path.exists():
            removed.append(path)
    if removed:
        logger.info(
            "removed %d training scratch folder(s) left by killed runs: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def _cross_validate(
    rounds: FitRounds, y: np.ndarray, folds: list, config: Config, serving: ServingCheck
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any], str, dict[str, Any]]:
    """Successive halving over the settings, the remaining folds of the kept ones, the serving
    cost of each candidate, the refit.

    Returns the candidates' judgements, the refitted pipelines, the fit counts and times, and
    the choice with how it was made.
    """
    splits, metric = config["cv_folds"], config["metric"]
    costs = config["cost_matrix"]
    names = list(config["candidate_models"])
    screen = list(range(min(SCREEN_FOLDS, splits)))
    rest = [fold for fold in range(splits) if fold not in screen]

    # Round 1: every setting of every model on the screening folds.
    jobs = [(name, index, fold) for name in names for index in range(len(SEARCH_SPACE[name])) for fold in screen]
    results = rounds.run(jobs)
    kept, searches = {}, {}
    for name in names:
        kept[name], searches[name] = _screen_settings(name, results, y, folds, screen, metric, costs)

    # Round 2: the kept settings on the remaining folds.
    results.update(rounds.run([(name, kept[name], fold) for name in names for fold in rest]))
    candidates, risks = _judge_kept_settings(names, kept, searches, results, y, folds, metric, costs)
    # Between the rounds, while no fit runs beside it: the pipelines fitted on the last fold (rounds.kept_fold).
    serving.measure(candidates, {name: results[(name, kept[name], rounds.kept_fold)].pop("pipeline") for name in names})
    if costs is not None:  # the expected cost at every threshold, out of fold: the report plots it
        _add_cost_curves(candidates, risks, y, folds, costs)
    _log_candidates(candidates, metric)

    # Round 3: refit on all rows what was chosen (a blend: each of its members).
    modelfiles.import_skops_in_background()  # save_model needs it next
    chosen, selection = pick_best(candidates, metric)
    needed = candidates[BLEND]["members"] if chosen == BLEND else [chosen]
    results.update(rounds.run([(name, kept[name], None) for name in needed]))
    final = {name: results[(name, kept[name], None)]["pipeline"] for name in needed}
    for name in needed:
        candidates[name]["refit_seconds"] = round(results[(name, kept[name], None)]["seconds"], 4)
    return candidates, final, _fit_summary(rounds.log), chosen, selection


@dataclasses.dataclass
class ServingCheck:
    """Measures each candidate's single-row serving cost as the API would serve it (servingcost.py).

    Only the chosen candidate is refitted on all rows, so every candidate is measured on its
    pipelines fitted on the last cross-validation fold: the same kind and settings as the refit,
    fitted on (folds - 1) / folds of the rows (boosting may stop at another number of trees)."""

    schema: Schema
    data: pd.DataFrame | None
    master: Path
    kinds: dict[str, str]

    def measure(self, candidates: dict[str, dict[str, Any]], fitted: dict[str, Pipeline]) -> None:
        from risk.model import servingcost  # Treelite: only where a model is measured

        started = time.perf_counter()
        if self.data is not None:
            check_frame = self.data.head(servingcost.CHECK_ROWS)
        else:
            check_frame = read_typed_csv(self.master, self.kinds, nrows=servingcost.CHECK_ROWS)
        for name, candidate in candidates.items():
            model = _final_model(name, candidates, fitted)
            candidate.update(servingcost.serving_cost(model, self.schema, check_frame))
        logger.info(
            "serving cost per row: %s (measured in %.2fs)",
            ", ".join(f"{name} {c['serving_us_per_row']} us" for name, c in candidates.items()),
            time.perf_counter() - started,
        )


def _screen_settings(
    name: str, results: dict[tuple, dict[str, Any]], y: np.ndarray, folds: list, screen: list[int], metric: str, costs
) -> tuple[int, list[dict[str, Any]]]:
    """The index of the setting of ``name`` kept after the screening folds, and every setting's screening scores."""
    scored = []
    for index, params in enumerate(SEARCH_SPACE[name]):
        risk = _oof_risk(len(y), {fold: results[(name, index, fold)]["risk"] for fold in screen}, folds)
        screening = score_candidate(metric, y, risk, [folds[f] for f in screen], cost_matrix=costs)
        scored.append(
            {
                "params": params,
                "screen_folds": screening["folds"],
                "screen_mean": screening["mean"],
                "screen_oof_roc_auc": screening["oof_roc_auc"],
            }
        )
    best = max(
        range(len(scored)),
        key=lambda i: (
            round(metric_gain(metric, scored[i]["screen_mean"], 0.0), 12),
            round(scored[i]["screen_oof_roc_auc"], 12),
            -i,
        ),
    )
    for index, entry in enumerate(scored):
        entry["kept"] = index == best
    return best, scored


def _judge_kept_settings(
    names: list[str],
    kept: dict[str, int],
    searches: dict[str, list[dict[str, Any]]],
    results: dict[tuple, dict[str, Any]],
    y: np.ndarray,
    folds: list,
    metric: str,
    costs: dict[str, float] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Every model's kept setting judged on all folds, and their blend when there are several;
    with the out-of-fold risk scores of each (the blend's under BLEND)."""
    splits = len(folds)
    candidates: dict[str, dict[str, Any]] = {}
    risks = {}
    for name in names:
        index = kept[name]
        risks[name] = _oof_risk(len(y), {fold: results[(name, index, fold)]["risk"] for fold in range(splits)}, folds)
        fold_seconds = [round(results[(name, index, fold)]["seconds"], 4) for fold in range(splits)]
        candidates[name] = {
            **score_candidate(metric, y, risks[name], folds, cost_matrix=costs),
            "params": SEARCH_SPACE[name][index],
            "fold_seconds": fold_seconds,
            "fit_seconds": round(sum(fold_seconds), 4),
            "search": searches[name],
        }
    if len(names) > 1:
        risks[BLEND] = np.mean([risks[name] for name in names], axis=0)
        candidates[BLEND] = {
            **score_candidate(metric, y, risks[BLEND], folds, cost_matrix=costs),
            "params": {"members": names, "voting": "soft"},
            "members": names,
            "fold_seconds": [round(sum(candidates[n]["fold_seconds"][f] for n in names), 4) for f in range(splits)],
            "fit_seconds": round(sum(candidates[n]["fit_seconds"] for n in names), 4),
            "search": [],
        }
    return candidates, risks


def _add_cost_curves(
    candidates: dict[str, dict[str, Any]], risks: dict[str, np.ndarray], y: np.ndarray, folds: list, costs
) -> None:
    """Each candidate's expected cost at every threshold of THRESHOLD_GRID, out of fold (the report plots it)."""
    rows = np.concatenate([test for _, test in folds])
    for name, candidate in candidates.items():
        curve = threshold_curve("cost", y[rows], risks[name][rows], costs)
        candidate["cost_curve"] = {
            "thresholds": THRESHOLD_GRID.tolist(),
            "cost": [round(float(v), 6) for v in curve],
        }


def _log_candidates(candidates: dict[str, dict[str, Any]], metric: str) -> None:
    for name, candidate in candidates.items():
        logger.info(
            "candidate %s: CV %s %.4f ± %.4f, out-of-fold ROC AUC %.3f, flag-everyone %.4f%s",
            name,
            metric,
            candidate["mean"],
            candidate["std"],
            candidate["oof_roc_auc"],
            candidate["flag_everyone_score"],
            "" if candidate["informative"] else " (uninformative)",
        )


def _fit_summary(log: list[dict[str, Any]]) -> dict[str, Any]:
    """How many fits ran, their seconds, how many each worker ran, and the log of every one."""
    workers: dict[str, int] = {}
    for entry in log:
        workers[entry["worker"]] = workers.get(entry["worker"], 0) + 1
    return {
        "count": len(log),
        "seconds": round(sum(entry["seconds"] for entry in log), 4),
        "by_worker": workers,
        "log": log,
    }


def _oof_risk(rows: int, by_fold: dict[int, np.ndarray], folds: list) -> np.ndarray:
    risk = np.full(rows, np.nan)
    for fold, values in by_fold.items():
        risk[folds[fold][1]] = values
    return risk


def _final_model(chosen: str, candidates: dict[str, Any], final: dict[str, Pipeline]) -> FixedThresholdClassifier:
    """The chosen pipeline (or blend), refitted on all rows, behind its tuned threshold."""
    if chosen == BLEND:
        estimator: Any = SoftVotingBlend([(name, final[name]) for name in candidates[BLEND]["members"]])
        estimator.classes_ = np.array([0, 1])
    else:
        estimator = final[chosen]
    model = FixedThresholdClassifier(
        estimator, threshold=candidates[chosen]["threshold"], response_method="predict_proba"
    )
    # The refit ran where the fits ran; set what FixedThresholdClassifier.fit would have
    # (a fitted clone) rather than fit the whole thing again here.
    model.estimator_ = estimator
    return model


def _warnings(chosen: str, candidates: dict[str, Any], config: Config) -> list[str]:
    """Plain sentences for operators about what the chosen model can and cannot do."""
    warnings = []
    metric = config["metric"]
    best = candidates[chosen]
    if not any(c["informative"] for c in candidates.values()):
        warnings.append(
            f"No candidate model tells the classes apart: every one is no better than chance (best out-of-fold "
            f"ROC AUC {max(c['oof_roc_auc'] for c in candidates.values()):.2f}, where 0.5 is chance) or than flagging "
            f"every client ({metric} {best['flag_everyone_score']:.4f} for flagging everyone, {best['mean']:.4f} for "
            f"{chosen}). Do not act on its predictions; more or better data is needed."
        )
    if best["flagged_share"] > config["max_flagged_share"]:
        warnings.append(
            f"The decision threshold {best['threshold']:.2f} flags {best['flagged_share']:.0%} of the training rows "
            f"(out of fold), more than max_flagged_share {config['max_flagged_share']:.0%}: the model calls nearly every "
            "client at risk."
        )
    return warnings


def _check_trainable(y: np.ndarray, config: Config) -> None:
    positives = int(y.sum())
    if positives < config["cv_folds"] or len(y) - positives < config["cv_folds"]:
        raise TrainingError(
            f"need at least {config['cv_folds']} rows of each class to cross-validate; "
            f"have {positives} with target {config.target}={config.positive_label!r} and {len(y) - positives} without"
        )


def _metadata(
    config: Config,
    best: str,
    model: FixedThresholdClassifier,
    candidates: dict[str, Any],
    features: dict[str, list[str]],
    kinds: dict[str, str],
    rows: int,
    y: np.ndarray,
    seconds: float,
) -> dict[str, Any]:
    master = masterstore.master_path(config)
    return {
        "trained_at": utc_now(),
        "model": best,
        "parameters": _parameters(model.estimator_),
        "threshold": model.threshold,
        "metric": config["metric"],
        "cv_folds": config["cv_folds"],
        "random_seed": config["random_seed"],
        "candidates": candidates,
        "features": features,
        "column_kinds": kinds,
        "target": config.target,
        "positive_label": config.positive_label,
        "id_columns": config["id_columns"],
        "drop_columns": config["drop_columns"],
        "training_rows": int(rows),
        "training_positives": int(y.sum()),
        "training_data_sha256": sha256_file(master) if master.exists() else None,
        "training_files": [
            {"name": e["name"], "sha256": e["sha256"], "rows_added": e["rows_added"]}
            for e in ledger.read_record(config)
            if e["status"] == ledger.STATUS_INGESTED
        ],
        "package_versions": {name: installed_version(name) for name in REPORTED_PACKAGES},
        "python_version": sys.version.split()[0],
        "training_seconds": round(seconds, 3),
    }


def _parameters(estimator: Any) -> dict[str, Any]:
    """The classifier's parameters; a blend's as ``member.parameter``."""
    if isinstance(estimator, SoftVotingBlend):
        return {
            f"{name}.{key}": _json_or_repr(value)
            for name, pipeline in estimator.estimators
            for key, value in sorted(pipeline.named_steps["classifier"].get_params().items())
        }
    return {k: _json_or_repr(v) for k, v in sorted(estimator.named_steps["classifier"].get_params().items())}


def _json_or_repr(value: Any) -> Any:
    """A parameter as the metadata records it: strict JSON where it is a plain value, else its
    repr (an estimator, a class, a dict of weights)."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return json_ready(value)
    return repr(value)


def save_model(config: Config, model: FixedThresholdClassifier, metadata: dict[str, Any]) -> None:
    """Write the model (a skops file) and its metadata to the model folder, each file atomically."""
    folder = config.model_folder
    data = modelfiles.model_bytes(model)
    with atomic_path(folder / SKOPS_MODEL_FILE) as tmp:
        tmp.write_bytes(data)
    metadata["model_sha256"] = sha256_file(folder / SKOPS_MODEL_FILE)
    atomic_write_json(folder / METADATA_FILE, metadata)
    stale = folder / MODEL_FILE  # an earlier version's pickle: the folder holds one model
    if stale.exists():
        before_change(stale)
        stale.unlink()
