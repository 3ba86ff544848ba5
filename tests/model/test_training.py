"""risk.model.training: candidate pipelines, selection, metadata, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from risk.core.settings import Config
from risk.data import ingest, masterstore
from risk.model import compute, fitting, pipelines, scoring, selection, training
from tests.conftest import PROJECT_DIR, private_copy, still_running, write_config


@pytest.fixture(scope="module")
def ingested_template(project_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample project with its files ingested, once for the module."""
    config = private_copy(project_template, tmp_path_factory.mktemp("ingested"))
    ingest.ingest_new_files(config)
    return config.root


@pytest.fixture
def ingested(ingested_template: Path, tmp_path: Path) -> Config:
    """A private copy of the ingested sample project, safe to change."""
    return private_copy(ingested_template, tmp_path)


def test_features_exclude_target_ids_and_dropped_columns(ingested: Config) -> None:
    kinds = masterstore.column_kinds(ingested)
    assert pipelines.feature_types(ingested, kinds) == {
        "numeric": ["lastmonth_activity", "lastyear_activity", "number_of_employees"],
        "categorical": [],
    }
    dropping = write_config(
        ingested.root, drop_columns=["lastyear_activity"], categorical_columns=["number_of_employees"]
    )
    assert pipelines.feature_types(dropping, kinds) == {
        "numeric": ["lastmonth_activity"],
        "categorical": ["number_of_employees"],
    }


def test_best_candidate_is_chosen_by_cv_and_saved_with_metadata(ingested: Config) -> None:
    config = write_config(ingested.root, candidate_models=["logistic_regression", "hist_gradient_boosting"])

    model, metadata = training.train_model(config)
    training.save_model(config, model, metadata)

    candidates = metadata["candidates"]
    assert set(candidates) == {"logistic_regression", "hist_gradient_boosting", pipelines.BLEND}
    assert metadata["model"] == selection.pick_best(candidates)[0]
    assert candidates[metadata["model"]]["informative"] and not metadata["uninformative"]
    assert all(
        len(c["folds"]) == 3 and len(c["fold_seconds"]) == 3 and c["fit_seconds"] > 0 for c in candidates.values()
    )
    assert metadata["threshold"] == candidates[metadata["model"]]["threshold"]
    assert metadata["training_rows"] == 7500
    assert metadata["package_versions"]["scikit-learn"]
    assert [f["name"] for f in metadata["training_files"]] == sorted(p.name for p in config.input_folder.iterdir())
    saved = json.loads((config.model_folder / "trainedmodel.json").read_text())
    assert saved["model_sha256"] and saved["training_data_sha256"]
    # Each candidate's single-row serving cost, measured through the API's scorer, beside its scores.
    for name, saved_candidate in saved["candidates"].items():
        assert saved_candidate["serving_us_per_row"] > 0, name
        assert saved_candidate["serving_scorer"] in {
            "numpy:logistic_regression",
            "treelite:hist_gradient_boosting",
            "blend(numpy:logistic_regression, treelite:hist_gradient_boosting)",
        }, "compiled, as the API would serve it"
    assert "the last cross-validation fold" in saved["serving_measurement"]
    loaded, _ = scoring.load_trained_model(config)
    X = scoring.feature_frame(masterstore.load_master(config).head(50), metadata["features"])
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


# Differ from run to run (the serving cost is measured, the scorer kind is not: it stays).
TIMINGS = ("fold_seconds", "fit_seconds", "refit_seconds", "serving_us_per_row", "serving_build_seconds")


def without_timings(candidates: dict) -> dict:
    return {name: {k: v for k, v in c.items() if k not in TIMINGS} for name, c in candidates.items()}


def test_training_is_deterministic(ingested: Config) -> None:
    first_model, first = training.train_model(ingested)
    second_model, second = training.train_model(ingested)

    assert without_timings(first["candidates"]) == without_timings(second["candidates"])
    X = scoring.feature_frame(masterstore.load_master(ingested), first["features"])
    np.testing.assert_array_equal(first_model.predict_proba(X), second_model.predict_proba(X))


def test_decision_threshold_flags_more_of_the_minority_class_than_half(ingested: Config) -> None:
    model, metadata = training.train_model(ingested)
    assert 0.05 <= metadata["threshold"] < 0.5
    X = scoring.feature_frame(masterstore.load_master(ingested), metadata["features"])
    np.testing.assert_array_equal(model.predict(X), (model.predict_proba(X)[:, 1] >= metadata["threshold"]).astype(int))


def test_a_single_class_is_a_clear_error(tmp_path) -> None:
    config = write_config(tmp_path)
    config.input_folder.mkdir()
    rows = "".join(f"c{i},{i},{i * 12},{i + 1},0\n" for i in range(30))
    (config.input_folder / "a.csv").write_text(
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n" + rows
    )
    ingest.ingest_new_files(config)

    with pytest.raises(training.TrainingError, match="at least 3 rows of each class"):
        training.train_model(config)


COURSE_COLUMNS = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"


def course_sized_project(folder, labels, **overrides) -> Config:
    """26 training rows shaped like the course's data, with the given labels."""
    config = write_config(folder, candidate_models=list(pipelines.SEARCH_SPACE), cv_folds=5, **overrides)
    config.input_folder.mkdir()
    rng = np.random.default_rng(3)
    activity = rng.integers(0, 300, size=(26, 3))
    rows = "".join(f"c{i:02d},{a},{b},{c},{label}\n" for i, ((a, b, c), label) in enumerate(zip(activity, labels)))
    (config.input_folder / "a.csv").write_text(COURSE_COLUMNS + rows)
    ingest.ingest_new_files(config)
    return config


@pytest.mark.slow
def test_labels_independent_of_the_features_are_called_no_better_than_chance(tmp_path) -> None:
    labels = np.random.default_rng(8).permutation([1] * 8 + [0] * 18)  # drawn without looking at the features
    config = course_sized_project(tmp_path, labels)

    model, metadata = training.train_model(config)

    assert metadata["uninformative"] is True
    assert not any(c["informative"] for c in metadata["candidates"].values())
    assert all(c["oof_roc_auc"] < 0.5 + c["chance_margin"] for c in metadata["candidates"].values())
    assert any("no better than chance" in w for w in metadata["warnings"])
    assert all(isinstance(c["flag_everyone_score"], float) for c in metadata["candidates"].values())


@pytest.mark.slow
def test_labels_that_follow_the_features_are_informative(tmp_path) -> None:
    rng = np.random.default_rng(3)
    activity = rng.integers(0, 300, size=(26, 3))  # the same features course_sized_project writes
    labels = (activity[:, 0] < np.sort(activity[:, 0])[8]).astype(int)  # low recent activity: left
    config = course_sized_project(tmp_path, labels)

    _, metadata = training.train_model(config)

    assert metadata["uninformative"] is False
    assert metadata["candidates"][metadata["model"]]["informative"]
    assert not any("no better than chance" in w for w in metadata["warnings"])


@pytest.mark.slow
def test_a_threshold_flagging_nearly_everyone_is_a_warning(tmp_path) -> None:
    labels = np.random.default_rng(8).permutation([1] * 8 + [0] * 18)
    config = course_sized_project(tmp_path, labels)

    _, metadata = training.train_model(config)
    flagged = metadata["candidates"][metadata["model"]]["flagged_share"]
    assert flagged > 0.9 and metadata["flagged_share"] == flagged
    assert any("max_flagged_share" in w for w in metadata["warnings"])

    relaxed = write_config(
        config.root, candidate_models=list(pipelines.SEARCH_SPACE), cv_folds=5, max_flagged_share=1.0
    )
    _, metadata = training.train_model(relaxed)
    assert not any("max_flagged_share" in w for w in metadata["warnings"])


def test_every_setting_is_screened_and_the_blend_is_judged_on_the_same_folds(ingested: Config) -> None:
    names = ["logistic_regression", "hist_gradient_boosting"]
    config = write_config(ingested.root, candidate_models=names)

    model, metadata = training.train_model(config)

    for name in names:
        search = metadata["candidates"][name]["search"]
        assert [s["params"] for s in search] == pipelines.SEARCH_SPACE[name]
        assert sum(s["kept"] for s in search) == 1
        assert metadata["candidates"][name]["params"] == next(s["params"] for s in search if s["kept"])
        assert all(len(s["screen_folds"]) == training.SCREEN_FOLDS for s in search)
    settings = sum(len(pipelines.SEARCH_SPACE[n]) for n in names)
    refits = len(names) if metadata["model"] == pipelines.BLEND else 1
    assert metadata["fits"]["count"] == settings * 2 + len(names) * 1 + refits  # screen, last fold, refit
    blend = metadata["candidates"][pipelines.BLEND]
    assert blend["members"] == names and len(blend["folds"]) == 3
    # The blend's out-of-fold risk is the mean of its members': its ROC AUC is computed from it.
    assert 0.5 < blend["oof_roc_auc"] <= 1


def test_a_chosen_blend_averages_its_refitted_members(ingested: Config) -> None:
    names = ["logistic_regression", "hist_gradient_boosting"]
    config = write_config(ingested.root, candidate_models=names)
    _, metadata = training.train_model(config)
    candidates = metadata["candidates"]
    final = {
        name: pipelines.build_pipeline(name, metadata["features"], 42, candidates[name]["params"], 7500)
        for name in names
    }
    data = masterstore.load_master(config)
    X = scoring.feature_frame(data, metadata["features"])
    y = scoring.binary_target(data["exited"], 1)
    for pipeline in final.values():
        pipeline.fit(X, y)

    blend = training._final_model(pipelines.BLEND, candidates, final)

    expected = (final[names[0]].predict_proba(X)[:, 1] + final[names[1]].predict_proba(X)[:, 1]) / 2
    np.testing.assert_allclose(blend.predict_proba(X)[:, 1], expected)
    np.testing.assert_array_equal(blend.predict(X), (expected >= candidates[pipelines.BLEND]["threshold"]).astype(int))


def test_boosting_stops_early_on_enough_rows(ingested: Config) -> None:
    config = write_config(ingested.root, candidate_models=["hist_gradient_boosting"])
    model, metadata = training.train_model(config)
    classifier = model.estimator_.named_steps["classifier"]
    assert classifier.early_stopping is True
    assert classifier.n_iter_ < classifier.max_iter
    small = pipelines.build_pipeline("hist_gradient_boosting", metadata["features"], 42, rows=100)
    assert small.named_steps["classifier"].early_stopping is False


def test_the_forest_samples_a_bounded_number_of_rows_per_tree(ingested: Config) -> None:
    features = pipelines.feature_types(ingested, masterstore.column_kinds(ingested))
    forest = pipelines.build_pipeline("random_forest", features, 42, rows=50_000).named_steps["classifier"]
    assert forest.max_samples * 50_000 == pipelines.FOREST_ROWS_PER_TREE and forest.n_jobs == 1
    assert (
        pipelines.build_pipeline("random_forest", features, 42, rows=1000).named_steps["classifier"].max_samples is None
    )


@pytest.mark.slow
def test_fits_in_worker_processes_give_the_same_model(ingested: Config) -> None:
    config = write_config(ingested.root, candidate_models=["logistic_regression", "hist_gradient_boosting"])
    here_model, here = training.train_model(config, workers=1)
    apart_model, apart = training.train_model(config, workers=2)

    assert here["compute"]["backend"] == "local" and apart["compute"]["backend"] == "processes"
    assert len(apart["fits"]["by_worker"]) >= 1 and f"pid {__import__('os').getpid()}" not in apart["fits"]["by_worker"]
    workers = [int(worker.removeprefix("pid ")) for worker in apart["fits"]["by_worker"]]
    assert not still_running(workers, 30), "training lets its worker processes go as it ends"
    assert without_timings(here["candidates"]) == without_timings(apart["candidates"])
    X = scoring.feature_frame(masterstore.load_master(config), here["features"])
    np.testing.assert_allclose(here_model.predict_proba(X), apart_model.predict_proba(X), rtol=0, atol=1e-12)


def master_source(config: Config) -> tuple[fitting.TrainingData, pd.DataFrame, np.ndarray]:
    """Training data read from ``config``'s master file, as training.py gives it to worker processes, and its rows."""
    kinds = masterstore.column_kinds(config)
    master = masterstore.master_path(config)
    source = fitting.TrainingData(
        features=pipelines.feature_types(config, kinds),
        kinds=kinds,
        target="exited",
        positive_label=1,
        master=str(master),
        stamp=fitting.file_stamp(master),
    )
    X, y = source.load()
    return source, X, y


@pytest.mark.slow
def test_worker_processes_encode_each_fold_once_and_map_it(ingested: Config, tmp_path) -> None:
    """Each fold is encoded once, by a worker process (a task a fold, from the snapshot, two at once
    where their rows are fewer than the refit's), and the workers map that one copy instead of each
    encoding (and holding) their own; the encoding is the one a fit would make for itself in one
    process, the refit's of every row included."""
    from risk.model import compute

    source, X, y = master_source(ingested)
    features = source.features
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    here = f"pid {__import__('os').getpid()}"
    # Over a selection sample of 3,000 of the 7,500 rows: two folds' rows at once are fewer than the refit's.
    files = fitting.FoldFiles(X, y, features, 42, 5, scratch, sample_rows=3000)
    with compute.local_runner(workers=2) as runner:
        encoded_by = files.write({0, 1}, runner=runner) | files.write({None}, narrow={None}, runner=runner)
        assert set(encoded_by) == {0, 1, None} and here not in encoded_by.values()
        files.remove({0})
        assert sorted(p.name for p in scratch.iterdir()) == [
            "all-encoded-float32.npy",
            "all-encoded.npy",
            "all-labels.npy",
            "all-preprocess.joblib",
            "fold-1-encoded.npy",
            "fold-1-held-out.npy",
            "fold-1-labels.npy",
            "fold-1-preprocess.joblib",
            "training-frame.joblib",
        ]

        def mapped_fold(folder: str, fold: int | None) -> tuple:
            data = fitting.FoldFiles.read(Path(folder), fold)
            base = data.encoded
            while base is not None and not isinstance(base, np.memmap):
                base = base.base
            held_out = None if fold is None else np.asarray(data.held_out_rows())
            return base is not None, np.asarray(data.encoded), held_out, data.validation

        outcomes = runner.map(mapped_fold, [(str(scratch), 1), (str(scratch), 1), (str(scratch), None)])
        # Without the sample two folds at once would hold more rows than the refit: encoded here, one by one.
        unsampled = fitting.FoldFiles(X, y, features, 42, 5, tmp_path)
        assert set(unsampled.write({2, 3}, runner=runner).values()) == {here}
        assert_fold_files_hold(tmp_path, 3, fitting.encode_fold(X, y, features, 3, 42, 5))
    expected = fitting.encode_fold(X, y, features, 1, 42, 5, 3000)
    for is_mapped, encoded, held_out, validation in outcomes[:2]:
        assert is_mapped
        np.testing.assert_array_equal(encoded, expected.encoded)
        np.testing.assert_array_equal(held_out, expected.held_out)
        assert validation == expected.validation > 0
    assert_fold_files_hold(scratch, 1, expected)
    # The refit's rows, written a few at a time from the encoding's blocks: encode_fold's matrix in one process.
    everything = fitting.encode_fold(X, y, features, None, 42, 5)
    is_mapped, encoded, _, validation = outcomes[2]
    assert is_mapped and validation == everything.validation > 0
    np.testing.assert_array_equal(encoded, everything.encoded)
    assert_fold_files_hold(scratch, None, everything)
    np.testing.assert_array_equal(
        fitting.FoldFiles.read(scratch, None, float32=True).encoded, everything.encoded.astype(np.float32)
    )
    # ... and scikit-learn's own fit_transform of those rows, matrix and fitted preprocessing.
    rows, _ = fitting._validation_last(np.arange(len(y)), y, 42)
    plain = pipelines.build_preprocess(features)
    np.testing.assert_array_equal(plain.fit_transform(X.iloc[rows]), everything.encoded)
    assert _same_state(fitting.FoldFiles.read(scratch, None).preprocess, plain) == []
    files.remove()
    assert [p.name for p in scratch.iterdir()] == ["training-frame.joblib"], "a round's folds go once it is over"


def test_a_fold_file_a_worker_cannot_write_fails_with_the_scratch_folders_clear_error(
    ingested: Config, tmp_path
) -> None:
    """A worker that cannot write a fold's file (a full temp folder; here a folder in the file's place)
    fails the write with the TrainingError that names the file and TMPDIR, as this process's own writes
    do, not with a worker's traceback; the runner's next map still runs."""
    source, X, y = master_source(ingested)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = fitting.FoldFiles(X, y, source.features, 42, 5, scratch)
    (scratch / "all-encoded.npy").mkdir()
    with compute.local_runner(workers=2) as runner:
        with pytest.raises(
            pipelines.TrainingError, match="cannot write training's scratch file .*all-encoded.npy"
        ) as failed:
            files.write({None}, runner=runner)
        assert "TMPDIR" in str(failed.value) and None not in files.written
        assert runner.map(fitting.warm_worker, [(), ()]) != [__import__("os").getpid()] * 2


def assert_fold_files_hold(folder: Path, fold: int | None, expected: fitting.EncodedFold) -> None:
    """The fold's files hold ``expected``: its rows, labels, test rows and the same fitted preprocessing."""
    written = fitting.FoldFiles.read(folder, fold)
    np.testing.assert_array_equal(written.encoded, expected.encoded)
    np.testing.assert_array_equal(written.labels, expected.labels)
    if fold is not None:
        np.testing.assert_array_equal(written.held_out_rows(), expected.held_out)
    assert written.validation == expected.validation
    assert _same_state(written.preprocess, expected.preprocess) == []


def test_worker_processes_hand_fitted_pipelines_back_through_the_scratch_folder(ingested: Config, tmp_path) -> None:
    """A fitted pipeline comes back from a worker process as a file (not through loky's pipe, which
    cost the worker and this process several times its size), loaded, and removed, by the round."""
    from sklearn.pipeline import Pipeline

    from risk.model import compute

    source, X, y = master_source(ingested)
    features, kinds = source.features, source.kinds
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = fitting.FoldFiles(X, y, features, 42, 5, scratch)
    mapped = fitting.TrainingData(features, kinds, "exited", 1, folds=str(scratch))
    params = pipelines.SEARCH_SPACE["random_forest"][0]
    with compute.local_runner(workers=2) as runner:
        files.write({1}, narrow={1}, wide=set())  # a fold only a forest fits on, as FitRounds writes it
        [sent] = runner.map(fitting.fit_task, [(mapped, "random_forest", params, 42, 5, 1, True)])
        assert isinstance(sent["pipeline"], fitting.PipelineFile)
        assert Path(sent["pipeline"].path).parent == scratch
        files.remove()
        Path(sent["pipeline"].path).unlink()
        rounds = fitting.FitRounds(runner, mapped, files, 42, 5, kept_fold=1)
        outcomes = rounds.run([("random_forest", 0, 1), ("logistic_regression", 0, 1), ("random_forest", 0, 0)])
    assert [p.name for p in scratch.iterdir()] == ["training-frame.joblib"], "loaded, the files are removed"
    kept = outcomes[("random_forest", 0, 1)]["pipeline"]
    assert isinstance(kept, Pipeline)
    assert "pipeline" not in outcomes[("random_forest", 0, 0)], "only the kept fold's pipelines come back"
    here = fitting.fit_task(source, "random_forest", pipelines.SEARCH_SPACE["random_forest"][0], 42, 5, 1, True)
    test_rows = fitting.fold_indices(y, 5, 42)[1][1]
    np.testing.assert_array_equal(
        kept.predict_proba(X.iloc[test_rows]), here["pipeline"].predict_proba(X.iloc[test_rows])
    )
    fitting.clear_loaded_data()


def test_a_refit_given_two_threads_gives_the_model_one_thread_fits(ingested: Config, monkeypatch) -> None:
    """The refit of the chosen model is often the only task of its round, and has both workers' cores
    (from THREADED_FIT_MIN_ROWS rows; here from any, in this process, which sees the setting):
    boosting's OpenMP loops and the forest's trees (its n_jobs for that fit only) give the same model
    with two threads; the logistic regression, whose BLAS threads would change its last bits, fits
    with one."""
    from risk.model import compute

    monkeypatch.setattr(fitting, "THREADED_FIT_MIN_ROWS", 0)
    source, X, y = master_source(ingested)
    for name in pipelines.SEARCH_SPACE:
        params = pipelines.SEARCH_SPACE[name][0]
        two = compute._call_with_threads(2, fitting.fit_task, source, name, params, 42, 5, None)
        one = compute._call_with_threads(1, fitting.fit_task, source, name, params, 42, 5, None)
        np.testing.assert_array_equal(two["pipeline"].predict_proba(X), one["pipeline"].predict_proba(X))
        assert (
            two["pipeline"].named_steps["classifier"].get_params()
            == one["pipeline"].named_steps["classifier"].get_params()
        ), "the forest's n_jobs is its own again"
    fitting.clear_loaded_data()


def test_a_fit_below_the_threaded_size_keeps_one_thread_whatever_its_task_has() -> None:
    """Short parallel loops cost more to share than they save: below THREADED_FIT_MIN_ROWS rows a fit
    keeps one OpenMP thread although its task has two; from it, it takes them."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_info

    from risk.model import compute

    def openmp_threads(rows: int) -> set[int]:
        with fitting._fit_threads(HistGradientBoostingClassifier(), rows):
            return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"}

    small, large = fitting.THREADED_FIT_MIN_ROWS - 1, fitting.THREADED_FIT_MIN_ROWS
    assert compute._call_with_threads(2, openmp_threads, small) == {1}
    assert compute._call_with_threads(2, openmp_threads, large) == {min(2, compute.usable_cores())}


def test_a_forest_fits_on_its_folds_float32_file_the_trees_it_fits_on_the_float64_rows(
    ingested: Config, tmp_path
) -> None:
    """Forests convert their rows to float32 before fitting: from the fold files they map a float32
    copy of the fold instead (no conversion, so no copy in the worker) and grow the same trees."""
    source, X, y = master_source(ingested)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = fitting.FoldFiles(X, y, source.features, 42, 5, scratch)
    files.write({1, 2}, narrow={1})
    assert sorted(p.name for p in scratch.glob("*float32*")) == ["fold-1-encoded-float32.npy"]
    narrow = fitting.FoldFiles.read(scratch, 1, float32=True)
    wide = fitting.FoldFiles.read(scratch, 1)
    assert narrow.encoded.dtype == np.float32 and isinstance(narrow.encoded, np.memmap)
    np.testing.assert_array_equal(narrow.encoded, wide.encoded.astype(np.float32))

    mapped = fitting.TrainingData(source.features, source.kinds, "exited", 1, folds=str(scratch))
    for params in pipelines.SEARCH_SPACE["random_forest"]:
        from_file = fitting.fit_task(mapped, "random_forest", params, 42, 5, 1, True)
        here = fitting.fit_task(source, "random_forest", params, 42, 5, 1, True)
        np.testing.assert_array_equal(from_file["risk"], here["risk"])
        assert_same_trees(from_file["pipeline"].load(), here["pipeline"])
    files.remove()
    fitting.clear_loaded_data()


def test_a_round_that_fits_only_forests_writes_no_float64_rows(ingested: Config, tmp_path) -> None:
    """The refit of a chosen forest maps its float32 rows only: the float64 ones of every row would
    be written for nothing (with the temp folder in memory, RAM the size of the refit's encoding)."""
    source, X, y = master_source(ingested)
    (tmp_path / "scratch").mkdir()
    files = fitting.FoldFiles(X, y, source.features, 42, 5, tmp_path / "scratch")
    files.write({None, 1}, narrow={None, 1}, wide={1})
    assert not (files.folder / "all-encoded.npy").exists() and (files.folder / "all-encoded-float32.npy").exists()
    assert (files.folder / "fold-1-encoded.npy").exists()
    files.remove()
    # A round of forests alone, through FitRounds, maps what it wrote.
    mapped = fitting.TrainingData(source.features, source.kinds, "exited", 1, folds=str(files.folder))
    rounds = fitting.FitRounds(compute.local_runner(workers=1), mapped, files, 42, 5)
    [refit] = rounds.run([("random_forest", 0, None)]).values()
    here = fitting.fit_task(source, "random_forest", pipelines.SEARCH_SPACE["random_forest"][0], 42, 5, None)
    assert_same_trees(refit["pipeline"], here["pipeline"])
    assert [p.name for p in files.folder.iterdir()] == [files.snapshot.name]
    fitting.clear_loaded_data()


def assert_same_trees(pipeline: Any, same: Any) -> None:
    forests = [p.named_steps["classifier"] for p in (pipeline, same)]
    for tree, other in zip(*(forest.estimators_ for forest in forests), strict=True):
        for field in ("feature", "threshold", "value", "children_left"):
            np.testing.assert_array_equal(getattr(tree.tree_, field), getattr(other.tree_, field))


def test_a_folds_files_go_once_its_last_fit_of_the_round_is_done(ingested: Config, tmp_path) -> None:
    """FitRounds removes a fold's files as the runner reports its fits done (the others still run):
    only once every fit of that fold is, never while one of them may still map them."""
    source, X, y = master_source(ingested)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = fitting.FoldFiles(X, y, source.features, 42, 5, scratch)
    jobs = [
        ("random_forest", 0, 0),
        ("random_forest", 0, 1),
        ("logistic_regression", 0, 0),
        ("logistic_regression", 0, None),
    ]
    files.write({0, 1, None}, narrow={0, 1})
    rounds = fitting.FitRounds(compute.local_runner(workers=1), source, files, 42, 5)
    fit_done = rounds._fold_remover(jobs)

    def folds_on_disk() -> set:
        return {name.split("-encoded")[0] for name in (p.name for p in scratch.glob("*-encoded.npy"))}

    fit_done(0)  # one of fold 0's two fits
    assert folds_on_disk() == {"fold-0", "fold-1", "all"} and len(list(scratch.glob("fold-0-*"))) == 5
    fit_done(1)
    assert folds_on_disk() == {"fold-0", "all"} and not list(scratch.glob("fold-1-*"))
    fit_done(2)
    assert folds_on_disk() == {"all"} and not list(scratch.glob("fold-0-*"))
    fit_done(3)
    assert folds_on_disk() == set() and files.written == set()
    assert [p.name for p in scratch.iterdir()] == ["training-frame.joblib"]
    fitting.clear_loaded_data()


def test_a_fit_maps_its_folds_test_rows_only_to_score_them(ingested: Config, tmp_path) -> None:
    """While two fits run side by side neither needs its fold's test rows: they are mapped when asked for."""
    source, X, y = master_source(ingested)
    files = fitting.FoldFiles(X, y, source.features, 42, 5, tmp_path)
    files.write({1})
    expected = fitting.encode_fold(X, y, source.features, 1, 42, 5)

    def mapped_here() -> str:
        return Path("/proc/self/maps").read_text()

    fold = fitting.FoldFiles.read(tmp_path, 1)
    assert "fold-1-encoded.npy" in mapped_here() and "fold-1-held-out.npy" not in mapped_here()
    rows = fold.held_out_rows()
    assert "fold-1-held-out.npy" in mapped_here()
    np.testing.assert_array_equal(rows, expected.held_out)
    del fold, rows
    fitting.clear_loaded_data()


def test_a_folds_matrix_is_written_to_its_file_without_a_copy(tmp_path) -> None:
    """The fold files are written while this process holds the encoding and the fits' results: a
    copy of the matrix on the way to the file (joblib makes one) was training's peak with workers."""
    import tracemalloc

    encoded = np.random.default_rng(3).normal(size=(20_000, 40))
    path = tmp_path / "fold-0-encoded.npy"
    tracemalloc.start()
    try:
        fitting.write_scratch_file(encoded, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * encoded.nbytes
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), encoded)


def test_a_folds_rows_are_written_without_their_whole_matrix_in_float64_or_float32(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refit's rows, of every row, were the largest allocation of the process that encoded them:
    the column transformer's stacked matrix, and for a forest (FLOAT32_FITS) a float32 copy of it on
    top. They are written from the encoding's blocks a few rows at a time, neither whole in memory
    (the stacked matrix and its write peaked at 1.24x the matrix here)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    X = pd.DataFrame({f"n{i}": rng.normal(size=20_000) for i in range(5)})
    for i in range(3):  # 40 levels each: a matrix of 125 columns, the one-hot block its bulk
        X[f"c{i}"] = pd.Categorical(rng.choice([f"level {k}" for k in range(40)], size=len(X)))
    y = (rng.random(len(X)) > 0.7).astype(int)
    features = {"numeric": [f"n{i}" for i in range(5)], "categorical": [f"c{i}" for i in range(3)]}
    peaks = {}
    for narrow in (frozenset(), {None}):
        scratch = tmp_path / f"scratch-{len(narrow)}"
        scratch.mkdir()
        files = fitting.FoldFiles(X, y, features, 42, 5, scratch)
        tracemalloc.start()
        try:
            files.write({None}, narrow=narrow)
            peaks[bool(narrow)] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    encoded = np.load(scratch / "all-encoded.npy", mmap_mode="r")
    assert encoded.shape == (len(X), 125)
    np.testing.assert_array_equal(encoded, fitting.encode_fold(X, y, features, None, 42, 5).encoded)
    assert peaks[False] < 0.6 * encoded.nbytes, peaks
    assert peaks[True] - peaks[False] < 0.05 * encoded.nbytes, peaks
    np.testing.assert_array_equal(np.load(scratch / "all-encoded-float32.npy"), encoded.astype(np.float32))
    # Row counts that do not divide the rows, a matrix in Fortran order, and no rows at all: the same values.
    monkeypatch.setattr(fitting, "CONVERT_BLOCK_BYTES", 7 * 125 * 4)
    path = tmp_path / "converted.npy"
    for rows in (np.asfortranarray(encoded[:1000]), encoded[:0]):
        fitting.write_rows([rows], path, np.float32)
        written = np.load(path, mmap_mode="r")
        assert written.dtype == np.float32 and written.shape == rows.shape
        np.testing.assert_array_equal(written, rows.astype(np.float32))
    # Blocks of two types side by side, in either type: their stacked matrix.
    blocks = [np.asarray(encoded[:1000, :5]), (np.asarray(encoded[:1000, 5:]) > 0).astype(np.uint8)]
    stacked = np.hstack(blocks)
    for dtype in (np.float64, np.float32):
        fitting.write_rows(blocks, path, dtype)
        written = np.load(path, mmap_mode="r")
        assert written.dtype == dtype and written.shape == (1000, 125)
        np.testing.assert_array_equal(written, stacked.astype(dtype))


def test_a_fit_leaves_no_copy_of_its_rows_behind() -> None:
    import tracemalloc

    rng = np.random.default_rng(5)
    columns = [f"x{i}" for i in range(10)]
    frame = pd.DataFrame(rng.normal(size=(20_000, 10)), columns=columns)
    frame["exited"] = (frame["x0"] + rng.normal(size=20_000) > 1).astype(int)
    source = fitting.TrainingData(
        features={"numeric": columns, "categorical": []},
        kinds={c: "numeric" for c in frame.columns},
        target="exited",
        positive_label=1,
        frame=frame,
    )
    X, _ = source.load()  # cached: the fits below reuse it
    fitting.fit_task(source, "logistic_regression", {"C": 1.0}, 42, 5, 0)  # first-call caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for fold in range(1, 4):  # logistic regression: SciPy's optimiser leaves a cycle holding the fold's encoding
            fitting.fit_task(source, "logistic_regression", {"C": 1.0}, 42, 5, fold)
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        fitting.clear_loaded_data()
    assert left < 0.25 * X.memory_usage(deep=True).sum()


@pytest.mark.slow
def test_the_snapshot_of_a_killed_training_run_is_removed_by_the_next_run(
    ingested: Config, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed while its workers map the snapshot never removes its scratch folder (the size of the
    training frame, in the temp folder); the next training run does, and leaves a live run's alone."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    temp = tmp_path / "temp"
    temp.mkdir()
    code = f"from risk.core import settings; from risk.model import training; training.train_model(settings.load_config({str(ingested.path)!r}), workers=2)"
    project_dir = PROJECT_DIR
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=project_dir, env={**os.environ, "TMPDIR": str(temp)}, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("*/training-frame.joblib")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its worker processes
        process.wait()
    left = [path.parent for path in temp.glob("*/training-frame.joblib")]
    assert len(left) == 1, "the run was killed while its snapshot existed"
    live = temp / f"risk-training-{os.getppid()}-abcd1234"  # a run still going: not ours to remove
    live.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    training.train_model(ingested, workers=2)

    assert not left[0].exists() and live.is_dir()
    assert [path.name for path in temp.iterdir()] == [live.name], "and this run removed its own"


def test_boosting_gets_the_validation_rows_it_would_have_split_off_itself() -> None:
    """Fitting on views of one matrix (validation rows last) must give the model scikit-learn
    fits when it splits the rows itself: the same split, so the same trees. If scikit-learn
    changes how it draws that split, this fails, and _validation_last must follow."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 6))
    y = (X[:, 0] + 0.5 * rng.normal(size=3000) > 0.8).astype(int)
    rows = np.arange(3000)[::-1].copy()  # a fold's rows, in no particular order
    own = pipelines.build_classifier(
        "hist_gradient_boosting", 42, pipelines.SEARCH_SPACE["hist_gradient_boosting"][0], len(rows)
    )
    own.fit(X[rows], y[rows])

    ordered, validation = fitting._validation_last(rows, y, 42)
    fold = fitting.EncodedFold(
        preprocess=None, encoded=X[ordered], labels=y[ordered], validation=validation, held_out=None
    )
    views = pipelines.build_classifier(
        "hist_gradient_boosting", 42, pipelines.SEARCH_SPACE["hist_gradient_boosting"][0], len(rows)
    )
    fitting._fit_classifier(views, fold)

    assert validation == 300 and sorted(ordered) == sorted(rows)
    assert own.n_iter_ == views.n_iter_ < 300, "early stopping stopped at the same tree"
    np.testing.assert_array_equal(own.predict_proba(X), views.predict_proba(X))
    np.testing.assert_array_equal(own.validation_score_, views.validation_score_)


def test_median_imputation_fitted_column_by_column_equals_scikit_learns() -> None:
    rng = np.random.default_rng(11)
    for trial in range(30):
        n, m = int(rng.integers(1, 80)), int(rng.integers(1, 5))
        block = np.round(rng.normal(size=(n, m)) * 10.0 ** rng.integers(-3, 4), int(rng.integers(0, 3)))
        block[rng.random((n, m)) < rng.random()] = np.nan
        block[0, 0] = 1.0  # at least one column has a value
        frame = pd.DataFrame(block, columns=[f"x{i}" for i in range(m)])
        features = {"numeric": list(frame.columns), "categorical": []}
        expected = pipelines.build_preprocess(features)
        lean = pipelines.build_preprocess(features)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Skipping features without any observed values"
            want = expected.fit_transform(frame)
            got = fitting._stacked(fitting._fit_transform_blocks(lean, frame, np.zeros(n)))
        np.testing.assert_array_equal(got, want)
        fitted = lean.named_transformers_["numeric"].named_steps["impute"]
        assert fitted.strategy == "median", "the saved model says what it computed"
        np.testing.assert_array_equal(
            fitted.statistics_, expected.named_transformers_["numeric"].named_steps["impute"].statistics_
        )


@pytest.mark.parametrize("numeric", [True, False], ids=["numeric-and-text", "text-only"])
def test_the_one_hot_block_built_as_bytes_gives_scikit_learns_matrix_in_less_memory(numeric: bool) -> None:
    """The lean encoding builds the one-hot block as 0/1 bytes: the same float64 matrix as
    scikit-learn's fit_transform, the fitted encoder back to float64, and a lower peak."""
    import tracemalloc

    rng = np.random.default_rng(4)
    rows = 20_000
    frame = pd.DataFrame(
        {f"t{i}": pd.Categorical(rng.choice([f"c{j}" for j in range(30)] + [None], rows)) for i in range(3)}
    )
    if numeric:
        frame["x"] = np.where(rng.random(rows) < 0.2, np.nan, rng.normal(size=rows))
    features = {"numeric": ["x"] if numeric else [], "categorical": ["t0", "t1", "t2"]}

    def peak_of(encode) -> tuple[np.ndarray, int]:
        tracemalloc.start()
        try:
            return encode(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    expected = pipelines.build_preprocess(features)
    want, plain_peak = peak_of(lambda: expected.fit_transform(frame))
    lean = pipelines.build_preprocess(features)
    got, lean_peak = peak_of(lambda: fitting._stacked(fitting._fit_transform_blocks(lean, frame, np.zeros(rows))))

    assert got.dtype == want.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    encoder = lean.named_transformers_["categorical"].named_steps["encode"]
    assert encoder.dtype is np.float64 and lean.transformers[-1][1].named_steps["encode"].dtype is np.float64
    scalers = [step for step in fitting._steps(lean) if type(step).__name__ == "StandardScaler"]
    assert len(scalers) == (2 if numeric else 0) and all(scaler.copy is True for scaler in scalers)
    np.testing.assert_array_equal(lean.transform(frame.head(50)), expected.transform(frame.head(50)))
    one_hot_floats = want.shape[0] * (want.shape[1] - (2 if numeric else 0)) * 8
    if numeric:  # text only: the bytes are widened once at the end, so the peak is about the same
        assert lean_peak < plain_peak - one_hot_floats / 2, (lean_peak, plain_peak)


def test_a_fold_with_one_row_of_a_class_trains_models_that_do_not_stop_early(ingested: Config) -> None:
    """Only gradient boosting splits off validation rows; a fold whose training rows hold one
    row of a class cannot be split stratified, and must not stop a logistic regression."""
    config = write_config(ingested.root, candidate_models=["logistic_regression"], cv_folds=2)
    data = masterstore.load_master(config)
    data["exited"] = 0
    data.loc[data.index[:2], "exited"] = 1  # two positives: one in each fold's training rows

    model, metadata = training.train_model(config, data=data, workers=1)

    assert metadata["training_positives"] == 2 and metadata["model"] == "logistic_regression"


@pytest.mark.slow
def test_scratch_files_that_cannot_be_written_fail_training_with_a_clear_error(ingested: Config, tmp_path) -> None:
    """A full temp folder (here: a file size limit) fails the run in one logged line naming
    the folder and TMPDIR, as training.main reports its other errors, not with a traceback."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    more = masterstore.load_master(ingested)
    more["corporation"] = more["corporation"] + "-b"
    more.to_csv(ingested.input_folder / "2026-11_clients.csv", index=False)
    ingest.ingest_new_files(ingested)  # 15,000 rows: the fits run in worker processes, from files
    temp = tmp_path / "temp"
    temp.mkdir()

    def small_files() -> None:  # writing past 64 kB fails as on a full disk (EFBIG, not a signal)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, 65_536))

    project_dir = PROJECT_DIR
    done = subprocess.run(
        [sys.executable, "training.py", "--config", str(ingested.path)],
        cwd=project_dir,
        env={**os.environ, "TMPDIR": str(temp)},
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "TMPDIR" in done.stderr and str(temp) in done.stderr
    assert list(temp.iterdir()) == [], "and its scratch folder is gone"


def test_boosting_on_a_fold_with_one_row_of_a_class_fits_without_early_stopping(ingested: Config) -> None:
    """Such a fold has no stratified validation split to stop on (scikit-learn raises
    ValueError drawing it); it is fitted in full, as on small folds, and the run goes on."""
    config = write_config(ingested.root, candidate_models=["hist_gradient_boosting"], cv_folds=2)
    data = masterstore.load_master(config)
    data["exited"] = 0
    data.loc[data.index[:2], "exited"] = 1

    model, metadata = training.train_model(config, data=data, workers=1)

    assert (
        metadata["model"] == "hist_gradient_boosting"
        and len(metadata["candidates"]["hist_gradient_boosting"]["folds"]) == 2
    )
    assert model.estimator_.named_steps["classifier"].early_stopping is True, (
        "the refit on all rows (two of each class) still stops early"
    )


@pytest.mark.slow
def test_worker_processes_give_the_local_model_where_only_the_refit_stops_early(ingested: Config) -> None:
    """2,400 rows in 5 folds: each fold's 1,920 training rows are too few to stop on, all rows
    are not; with a categorical feature and missing values. The fold files the workers map must
    give what one process computes for itself."""
    config = write_config(
        ingested.root,
        candidate_models=["hist_gradient_boosting", "random_forest"],
        cv_folds=5,
        categorical_columns=["number_of_employees"],
    )
    data = masterstore.load_master(config).head(2400).copy()
    data.loc[data.index[::7], "lastmonth_activity"] = np.nan

    here_model, here = training.train_model(config, data=data, workers=1)
    apart_model, apart = training.train_model(config, data=data, workers=2)

    assert here["compute"]["backend"] == "local" and apart["compute"]["backend"] == "processes"
    assert (
        without_timings(here["candidates"]) == without_timings(apart["candidates"])
        and here["threshold"] == apart["threshold"]
    )
    X = scoring.feature_frame(data, here["features"])
    np.testing.assert_allclose(here_model.predict_proba(X), apart_model.predict_proba(X), rtol=0, atol=1e-9)


def test_text_features_load_as_categories_and_fit_the_same_preprocessing(tmp_path: Path) -> None:
    """Categories hold each distinct text once (a code a row), and the preprocessing fitted on
    them is the one fitted on the text itself, byte for byte: the same model either way."""
    import pickle

    rng = np.random.default_rng(4)
    rows = 3000
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=rows),
            "brand": rng.choice(["hero", "tata", "ford", "007"], rows),
            "job": np.where(rng.random(rows) < 0.1, None, rng.choice(["Salaried", "Self employed"], rows)),
            "exited": rng.integers(0, 2, rows),
        }
    )
    path = tmp_path / "master.csv"
    frame.to_csv(path, index=False)
    features = {"numeric": ["amount"], "categorical": ["brand", "job"]}
    kinds = {"amount": "numeric", "brand": "text", "job": "text", "exited": "numeric"}
    source = fitting.TrainingData(features, kinds, "exited", 1, master=str(path), stamp=fitting.file_stamp(path))
    try:
        X, y = source.load()
    finally:
        fitting.clear_loaded_data()
    assert [str(X[c].dtype) for c in features["categorical"]] == ["category", "category"]
    as_text = scoring.feature_frame(pd.read_csv(path, dtype={"brand": str, "job": str}), features)
    assert X["brand"].astype(object).tolist() == as_text["brand"].tolist()  # "007" stays "007"
    assert X.memory_usage(deep=True).sum() < 0.5 * as_text.memory_usage(deep=True).sum()
    fitted = fitting.encode_fold(X, y, features, 0, 42, 5)
    expected = fitting.encode_fold(as_text, y, features, 0, 42, 5)
    np.testing.assert_array_equal(fitted.encoded, expected.encoded)
    assert pickle.dumps(fitted.preprocess) == pickle.dumps(expected.preprocess)


def test_above_selection_sample_rows_the_choice_is_made_on_a_stratified_sample_and_refitted_on_all(
    ingested: Config,
) -> None:
    """7,500 rows and a cap of 2,000: the folds (the project's 3) cover a seeded, stratified sample of 2,000 rows,
    and the chosen model is fitted on all 7,500 (its imputer's medians are those of every row)."""
    config = write_config(ingested.root, candidate_models=["logistic_regression"], selection_sample_rows=2000)
    y = scoring.binary_target(masterstore.load_master(config)["exited"], 1)
    splits, seed = config["cv_folds"], config["random_seed"]
    folds = fitting.fold_indices(y, splits, seed, 2000)
    sample = np.sort(np.concatenate([test for _, test in folds]))
    assert len(sample) == 2000 and len(np.unique(sample)) == 2000
    assert abs(y[sample].mean() - y.mean()) < 1 / 2000, "stratified: the sample keeps the positive share"
    for train, test in folds:
        assert not set(train) & set(test) and set(train) | set(test) == set(sample)
    at_the_cap = fitting.fold_indices(y, splits, seed, len(y))
    np.testing.assert_array_equal(at_the_cap[0][1], fitting.fold_indices(y, splits, seed)[0][1])

    model, metadata = training.train_model(config, workers=1)

    assert metadata["selection_rows"] == 2000 and metadata["training_rows"] == 7500
    assert len(metadata["candidates"]["logistic_regression"]["folds"]) == splits
    X = scoring.feature_frame(masterstore.load_master(config), metadata["features"])
    imputer = model.estimator_.named_steps["preprocess"].named_transformers_["numeric"].named_steps["impute"]
    np.testing.assert_array_equal(imputer.statistics_, X[metadata["features"]["numeric"]].median().to_numpy())
    everything = write_config(ingested.root, candidate_models=["logistic_regression"], selection_sample_rows=0)
    _, unsampled = training.train_model(everything, workers=1)
    assert unsampled["selection_rows"] == 7500
    assert (
        unsampled["candidates"]["logistic_regression"]["folds"]
        != metadata["candidates"]["logistic_regression"]["folds"]
    )


@pytest.mark.slow
def test_the_selection_sample_is_the_same_in_worker_processes(ingested: Config) -> None:
    config = write_config(
        ingested.root, candidate_models=["logistic_regression", "hist_gradient_boosting"], selection_sample_rows=3000
    )
    here_model, here = training.train_model(config, workers=1)
    apart_model, apart = training.train_model(config, workers=2)

    assert here["selection_rows"] == apart["selection_rows"] == 3000
    assert without_timings(here["candidates"]) == without_timings(apart["candidates"])
    X = scoring.feature_frame(masterstore.load_master(config), here["features"])
    np.testing.assert_allclose(here_model.predict_proba(X), apart_model.predict_proba(X), rtol=0, atol=1e-12)


def _same_state(a: object, b: object, path: str = "preprocess") -> list[str]:
    """Where two fitted objects differ, attribute by attribute (arrays by value)."""
    import pickle

    if pickle.dumps(a) == pickle.dumps(b):
        return []
    if type(a) is not type(b):
        return [path]
    if hasattr(a, "__dict__"):
        keys = set(vars(a)) | set(vars(b))
        return [d for k in sorted(keys) for d in _same_state(vars(a).get(k), vars(b).get(k), f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same_state(x, y, f"{path}[{i}]")]
    if isinstance(a, dict) and a.keys() == b.keys():
        return [d for k in a for d in _same_state(a[k], b[k], f"{path}[{k!r}]")]
    return [path]


@pytest.mark.parametrize("levels", [3, 48, 49, 60], ids=lambda n: f"{n}-levels")
def test_one_hot_encoders_fitted_without_counting_are_scikit_learns(levels: int) -> None:
    """Below max_categories distinct values (missing counted) no category can be infrequent, so the
    lean encoding skips scikit-learn's count of every value: the fitted preprocessing is the one
    scikit-learn fits, attribute by attribute, and encodes alike; at the cap or above it counts."""
    rng = np.random.default_rng(levels)
    rows = 3_000
    frame = pd.DataFrame(
        {f"t{i}": pd.Categorical(rng.choice([f"c{j}" for j in range(levels)] + [None], rows)) for i in range(2)}
    )
    frame["t2"] = rng.choice(["a", "b", None], rows).astype(object)  # text, not categories
    frame["x"] = np.where(rng.random(rows) < 0.2, np.nan, rng.normal(size=rows))
    features = {"numeric": ["x"], "categorical": ["t0", "t1", "t2"]}
    expected = pipelines.build_preprocess(features)
    want = expected.fit_transform(frame)
    lean = pipelines.build_preprocess(features)
    skipped = fitting._encoders_without_infrequent(lean, frame)
    got = fitting._stacked(fitting._fit_transform_blocks(lean, frame, np.zeros(rows)))

    assert skipped == ({"categorical": 50} if levels < 49 else {}), "49 levels and missing make 50 values: counted"
    np.testing.assert_array_equal(got, want)
    fitted, plain = (p.named_transformers_["categorical"].named_steps["encode"] for p in (lean, expected))
    assert fitted.max_categories == 50 and lean.transformers[-1][1].named_steps["encode"].max_categories == 50
    assert _same_state(fitted, plain) == []
    # The other steps as the lean encoding always fitted them (median imputer, scaler in place): same values.
    np.testing.assert_array_equal(lean.transform(frame.head(200)), expected.transform(frame.head(200)))
    if levels >= 50:
        assert any(indices is not None for indices in fitted._infrequent_indices), "the cap grouped the rarest"
