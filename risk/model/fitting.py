"""Where the fits find their data, and the fit that runs in a worker.

The preprocessing has no seed, so every candidate of a fold gets the same encoding
(``encode_fold``). Fits run single-threaded, side by side (a fit alone in its round has the idle
workers' cores too, ``_fit_threads``): in worker processes when the data is large enough (each
fold is encoded once, by a worker, into files that the workers memory-map, one copy for all of
them; see ``FoldFiles``), or on the Dask cluster at
``dask_scheduler_address``, whose workers read the master from the shared file system and
encode their folds themselves (see compute.py). The result does not depend on where they ran.

Workers find ``fit_task`` and ``write_fold_task`` by their module name (``risk.model.fitting``):
keep them at module level.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from risk.core.tables import read_typed_csv
from risk.model import compute
from risk.model.pipelines import (
    EARLY_STOPPING_MIN_ROWS,
    SEARCH_SPACE,
    VALIDATION_FRACTION,
    TrainingError,
    build_classifier,
    build_preprocess,
)
from risk.model.scoring import binary_target, feature_frame

# Relative cost of one fit, for starting the longest first (measured on 21,000 rows, single-threaded).
FIT_COST = {"logistic_regression": 0.2, "hist_gradient_boosting": 1.0, "random_forest": 1.2}
# Models that convert their rows to float32 before fitting: scikit-learn's forests (sklearn.tree's DTYPE).
# With worker processes their fold is written so too, and mapped instead of the float64 one: the values
# they would convert to, without their copy in the worker (on 21,000 rows 2.6 MiB less in the worker,
# and a file half the size; the same trees, tested).
FLOAT32_FITS = frozenset({"random_forest"})


@dataclass(frozen=True)
class EncodedFold:
    """One fold's training rows through the fitted preprocessing, ready for any classifier.

    The rows are ordered with the early-stopping validation rows last (``validation`` of
    them; 0 when the fold is too small to stop on or holds a single row of a class), so
    that gradient boosting takes both parts as views of one matrix instead of copying it."""

    preprocess: ColumnTransformer  # fitted on the fold's training rows
    encoded: np.ndarray
    labels: np.ndarray
    validation: int
    held_out: np.ndarray | Path | None  # the fold's test rows, encoded (or their file); None for the refit on all rows

    def held_out_rows(self) -> np.ndarray | None:
        """The test rows, mapped from their file only now: a fit does not need them, so while
        the fits of two folds run side by side neither maps its test rows (1.3 MiB each on 21,000 rows)."""
        return np.load(self.held_out, mmap_mode="r") if isinstance(self.held_out, Path) else self.held_out


def encode_fold(
    X: pd.DataFrame,
    y: np.ndarray,
    features: dict[str, list[str]],
    fold: int | None,
    seed: int,
    splits: int,
    sample_rows: int = 0,
) -> EncodedFold:
    """Fit the preprocessing on ``fold``'s training rows (all rows when None) and encode them.

    The folds are those of ``fold_indices`` (over the selection sample when there are more than
    ``sample_rows`` rows). Every candidate of a fold gets the same encoding (the preprocessing has
    no seed), so it is computed once per fold where worker processes share it; the result is the
    same either way."""
    fitted = _fit_fold(X, y, features, *_fold_rows(y, fold, seed, splits, sample_rows))
    return EncodedFold(fitted.preprocess, _stacked(fitted.blocks), fitted.labels, fitted.validation, fitted.held_out)


class FoldBlocks(NamedTuple):
    """A fold encoded as ``encode_fold`` encodes it, its training rows still in the column
    transformer's blocks (numeric float64, one-hot bytes): stacked, they are ``encode_fold``'s matrix."""

    preprocess: ColumnTransformer
    blocks: list[np.ndarray]
    labels: np.ndarray
    validation: int
    held_out: np.ndarray | None


def _fold_rows(
    y: np.ndarray, fold: int | None, seed: int, splits: int, sample_rows: int
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """``fold``'s training rows (every row when None) in the order they are fitted on, the count of
    its early-stopping validation rows (last), and its test rows (None for the refit)."""
    if fold is None:
        rows, test_rows = np.arange(len(y)), None
    else:
        rows, test_rows = fold_indices(y, splits, seed, sample_rows)[fold]
    return (*_validation_last(rows, y, seed), test_rows)


def _fit_fold(
    X: pd.DataFrame,
    y: np.ndarray,
    features: dict[str, list[str]],
    rows: np.ndarray,
    validation: int,
    test_rows: np.ndarray | None,
) -> FoldBlocks:
    """The preprocessing fitted on ``rows``, their encoding in blocks, and the test rows encoded."""
    preprocess = build_preprocess(features)
    blocks = _fit_transform_blocks(preprocess, X.iloc[rows], y[rows])
    held_out = None if test_rows is None else preprocess.transform(X.iloc[test_rows])
    return FoldBlocks(preprocess, blocks, y[rows], validation, held_out)


def _validation_last(rows: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """``rows`` reordered so that gradient boosting's early-stopping validation rows come last,
    and their count (0 where the fold is too small to stop on, and the order is kept).

    The split is the one ``HistGradientBoostingClassifier(random_state=seed)`` makes itself
    (scikit-learn 1.7: stratified, ``validation_fraction`` of the rows, from the first number
    its seed draws), so its models are the ones it fitted when it split the rows itself; a
    test holds this to scikit-learn's own split. Where a class has a single row the split
    cannot be stratified: the order is kept, and boosting does not stop early (_fit_classifier)."""
    if len(rows) < EARLY_STOPPING_MIN_ROWS or np.bincount(y[rows], minlength=2).min() < 2:
        return rows, 0
    split_seed = np.random.RandomState(seed).randint(np.iinfo(np.uint32).max, dtype="u8")
    fit_part, validation = train_test_split(
        np.arange(len(rows)), test_size=VALIDATION_FRACTION, stratify=y[rows], random_state=split_seed
    )
    return np.concatenate([rows[fit_part], rows[validation]]), len(validation)


def _fit_transform_blocks(preprocess: ColumnTransformer, X: pd.DataFrame, y: np.ndarray) -> list[np.ndarray]:
    """``preprocess.fit_transform(X, y)``, with median imputation computed column by column, the
    one-hot block built as bytes, and the blocks handed back unstacked (``_stacked`` stacks them).

    ``SimpleImputer(strategy="median")`` takes ``np.ma.median`` of the whole block at once,
    about 4x the block's memory on top of it; per column the statistics are equal (tested).
    The column transformer holds every block and their concatenation at once: a one-hot block
    of 0/1 bytes instead of float64 is an eighth of it (on 700,000 loans 171 MiB of the 472
    MiB peak), and the concatenation (as float64, the whole encoding again) is left to the
    caller, who writes the blocks to a file a few rows at a time or stacks them into one
    matrix. The scaler scales the imputer's fresh output in place (40 MiB less resident there).
    The fitted steps get their own settings back afterwards, so the model is the same object."""
    # Scalers that copy (build_preprocess's one, the only scaler) scale the imputer's fresh output in place.
    copying = {id(step) for step in _steps(preprocess) if isinstance(step, StandardScaler) and step.copy}
    uncounted = _encoders_without_infrequent(preprocess, X)
    for name in uncounted:
        _one_hot_encoder(_transformer(preprocess.transformers, name)).set_params(max_categories=None)
    for step in _steps(preprocess):
        if isinstance(step, SimpleImputer) and step.strategy == "median":
            step.set_params(strategy=_median_or_nan)
        if isinstance(step, OneHotEncoder) and step.dtype is np.float64:
            step.set_params(dtype=np.uint8)  # its output is 0 or 1 whatever the type
        if id(step) in copying:
            step.set_params(copy=False)
    try:
        with _blocks_unstacked(preprocess) as kept:
            encoded = preprocess.fit_transform(X, y)
    finally:  # the column transformer's fitted clones too (clones of a scaler set to scale in place)
        for step in _steps(preprocess):
            if isinstance(step, SimpleImputer) and step.strategy is _median_or_nan:
                step.set_params(strategy="median")
            if isinstance(step, OneHotEncoder) and step.dtype is np.uint8:
                step.set_params(dtype=np.float64)
            if isinstance(step, StandardScaler) and copying and not step.copy:
                step.set_params(copy=True)
        _restore_max_categories(preprocess, uncounted)
    return kept or [encoded]


@contextlib.contextmanager
def _blocks_unstacked(preprocess: ColumnTransformer) -> Iterator[list[np.ndarray]]:
    """Within it, ``preprocess.fit_transform`` leaves its transformers' outputs in the list yielded
    instead of stacking them (and returns an empty array).

    The column transformer stacks them in its ``_hstack`` (scikit-learn 1.7): shadowed here on
    this object alone, and removed again, so the fitted object is the one scikit-learn fits
    (tested). Where a later scikit-learn stacks elsewhere the list stays empty and the caller
    gets the stacked matrix as one block: the same values."""
    kept: list[np.ndarray] = []

    def keep(blocks: list[np.ndarray], n_samples: int) -> np.ndarray:
        kept.extend(blocks)
        return np.empty((n_samples, 0))

    preprocess._hstack = keep
    try:
        yield kept
    finally:
        del preprocess._hstack


def _stacked(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks side by side as one float64 matrix: ``np.hstack(blocks).astype(np.float64)``
    without the copy of the conversion (a one-hot block of bytes, or text features alone)."""
    if len(blocks) == 1 and blocks[0].dtype == np.float64:
        return blocks[0]
    stacked = np.empty((_row_count(blocks), sum(block.shape[1] for block in blocks)), dtype=np.float64)
    _fill_columns(stacked, blocks, 0)
    return stacked


def _row_count(blocks: list[np.ndarray]) -> int:
    return len(blocks[0]) if blocks else 0


def _fill_columns(target: np.ndarray, blocks: list[np.ndarray], start: int) -> None:
    """``target``'s rows are the blocks' rows from ``start`` on, side by side (converted to its type)."""
    column = 0
    for block in blocks:
        width = block.shape[1]
        target[:, column : column + width] = block[start : start + len(target)]
        column += width


def _encoders_without_infrequent(preprocess: ColumnTransformer, X: pd.DataFrame) -> dict[str, int]:
    """The transformers (name: max_categories) whose one-hot encoder caps its categories but whose
    columns hold fewer distinct values than the cap in ``X`` (missing counted as one).

    There no category can be infrequent whatever the counts, and scikit-learn's counting (a Python
    loop over every value: 2.7-4.1 s of 700,000 rows' 3 text columns on a busy machine) changes
    nothing: such an encoder is fitted without the cap, then given the state the cap leaves when
    nothing is infrequent (_restore_max_categories; the same fitted encoder, tested)."""
    found = {}
    for name, transformer, columns in preprocess.transformers:
        if not isinstance(transformer, Pipeline) or not isinstance(columns, list) or not columns:
            continue
        steps = [step for _, step in transformer.steps]
        encoder = steps[-1]
        if not (
            isinstance(encoder, OneHotEncoder)
            and all(isinstance(step, SimpleImputer) and step.strategy == "constant" for step in steps[:-1])
            and encoder.categories == "auto"
            and encoder.min_frequency is None
            and isinstance(encoder.max_categories, int)
        ):
            continue
        if all(X[column].nunique(dropna=False) < encoder.max_categories for column in columns):
            found[name] = encoder.max_categories
    return found


def _restore_max_categories(preprocess: ColumnTransformer, caps: dict[str, int]) -> None:
    """The cap back on the encoders fitted without it (_encoders_without_infrequent), with what
    scikit-learn's fit leaves where no category is infrequent."""
    for name, cap in caps.items():
        _one_hot_encoder(_transformer(preprocess.transformers, name)).set_params(max_categories=cap)
        fitted = getattr(preprocess, "transformers_", None)
        if fitted is None:  # the fit failed
            continue
        encoder = _one_hot_encoder(_transformer(fitted, name))
        if encoder.max_categories is None and hasattr(encoder, "categories_"):
            encoder.set_params(max_categories=cap)
            encoder._infrequent_enabled = True
            encoder._infrequent_indices = [None] * len(encoder.categories_)
            encoder._default_to_infrequent_mappings = [None] * len(encoder.categories_)


def _transformer(transformers: list[tuple], name: str) -> Any:
    return next(transformer for found, transformer, _ in transformers if found == name)


def _one_hot_encoder(pipeline: Pipeline) -> OneHotEncoder:
    return pipeline.steps[-1][1]


def _steps(estimator: Any) -> list[Any]:
    """Every estimator inside ``estimator`` (pipelines, column transformers, fitted or not)."""
    found, pending = [], [estimator]
    while pending:
        current = pending.pop()
        found.append(current)
        if isinstance(current, Pipeline):
            pending.extend(step for _, step in current.steps)
        elif isinstance(current, ColumnTransformer):
            pending.extend(step for _, step, _ in current.transformers)
            pending.extend(step for _, step, _ in getattr(current, "transformers_", []))
    return found


def _median_or_nan(values: np.ndarray) -> float:
    # An all-missing column: NaN, as strategy="median" gives (the column is then dropped), without numpy's warning.
    return float(np.median(values)) if values.size else math.nan


@dataclass(frozen=True)
class TrainingData:
    """Where a fit finds its encoded fold.

    With ``folds`` set (worker processes on this machine), the fit memory-maps the fold encoded
    once and written there (FoldFiles): one shared copy, not one per worker. With
    ``master`` set (a Dask worker), it reads the master CSV from the (shared) file system once,
    keeps it for its next fits, and encodes the fold itself; the file's size and modification
    time must match, so that every fit sees the same rows. Otherwise the frame travels with
    the task (or is this process's own) and the fit encodes its fold from it.
    """

    features: dict[str, list[str]]
    kinds: dict[str, str]
    target: str
    positive_label: Any
    master: str | None = None
    stamp: tuple[int, int] | None = None
    frame: pd.DataFrame | None = None
    folds: str | None = None
    sample_rows: int = 0  # the folds are over a seeded sample of at most this many rows (0: all rows)

    @property
    def key(self) -> tuple:
        return (self.master, self.stamp, id(self.frame) if self.frame is not None else None)

    def encoded(self, fold: int | None, seed: int, splits: int, float32: bool = False) -> EncodedFold:
        """The fold's encoded rows; from the fold files, as float32 where ``float32`` (FLOAT32_FITS)."""
        if self.folds is not None:
            return FoldFiles.read(Path(self.folds), fold, float32)
        X, y = self.load()
        return encode_fold(X, y, self.features, fold, seed, splits, self.sample_rows)

    def load(self) -> tuple[pd.DataFrame, np.ndarray]:
        cached = _DATA_CACHE.get("data")
        if cached is not None and cached[0] == self.key:
            return cached[1], cached[2]
        _DATA_CACHE.clear()  # one master at a time: a long-lived worker must not pile them up
        data = self.frame if self.frame is not None else self._read_master()
        # Text features as pandas categories: a code a row instead of a string a row (a sixth of the
        # frame's memory on the loan book), and a snapshot the folds' encoding memory-maps rather
        # than unpickles. The preprocessing sees the same values, so it fits the same (tested).
        X = feature_frame(data, self.features).astype(dict.fromkeys(self.features["categorical"], "category"))
        y = binary_target(data[self.target], self.positive_label)
        _DATA_CACHE["data"] = (self.key, X, y)
        return X, y

    def _read_master(self) -> pd.DataFrame:
        path = Path(self.master)
        if file_stamp(path) != self.stamp:
            raise TrainingError(
                f"the master {path} is not the file training started on (changed, or another file at that path)"
            )
        # The model's columns only: ids and dropped columns would only cost memory here.
        columns = self.features["numeric"] + self.features["categorical"] + [self.target]
        data = read_typed_csv(path, self.kinds, usecols=columns, categories=self.features["categorical"])
        if file_stamp(path) != self.stamp:
            raise TrainingError(f"the master {path} changed while it was read")
        return data


_DATA_CACHE: dict[str, Any] = {}  # this process's (or worker's) loaded master: key, features, labels


def clear_loaded_data() -> None:
    """Let go of the frame TrainingData.load keeps for the next fits."""
    _DATA_CACHE.clear()


def file_stamp(path: Path) -> tuple[int, int]:
    """The file's size and modification time (ns): the master a fit reads must be the one training started on."""
    status = path.stat()
    return status.st_size, status.st_mtime_ns


class FoldFiles:
    """The encoded folds that local worker processes memory-map, mostly written by the workers themselves.

    The frame waits in a snapshot (``training-frame.joblib``); each fold of a round is encoded by
    a task of its own (``write_fold_task``: the runner's workers, side by side, each mapping the
    snapshot while it encodes, or this process where that would take more memory: ``write``)
    before the round's fits start, and removed after. So this process
    holds neither the frame nor an encoding while the workers fit, and the scratch folder holds
    the snapshot and at most one round's folds (about 8 bytes per encoded cell each, 4 more where
    a forest fits on it, and 4 alone where only forests do: FLOAT32_FITS)."""

    def __init__(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        features: dict[str, list[str]],
        seed: int,
        splits: int,
        folder: Path,
        sample_rows: int = 0,
    ):
        self.snapshot = folder / "training-frame.joblib"
        write_scratch_file((X, y), self.snapshot)
        self.features, self.seed, self.splits, self.folder = features, seed, splits, folder
        self.sample_rows = sample_rows
        self.rows = len(y)
        sample = selection_rows(y, sample_rows, seed, splits)
        self.fold_rows = round((len(y) if sample is None else len(sample)) * (splits - 1) / splits)
        self.written: set[int | None] = set()

    def write(
        self,
        folds: set[int | None],
        narrow: set[int | None] = frozenset(),
        wide: set[int | None] | None = None,
        runner: compute.Runner | None = None,
    ) -> dict[int | None, str]:
        """Encode and write ``folds``, a task a fold on ``runner`` (default: in this process), and say
        where each was encoded: the training rows of those in ``narrow`` as float32, of those in ``wide``
        (default: all) as float64 (a round that fits only forests on a fold maps no float64 rows).

        The runner's workers encode side by side only folds whose rows at once are no more than the
        refit's (every row), whose encoding training goes through anyway: the refit's own, and a
        round's folds over the selection sample of a larger frame. A round's folds over every row
        (without the sample: each about 80% of the rows) are encoded one after another in this process,
        as two at once would raise training's peak (on 21,000 rows from 2.6x to 3.9-4.1x the frame)."""
        missing = sorted(folds - self.written, key=lambda f: -1 if f is None else f)
        if not missing:
            return {}
        # What the last round's results and the serving check freed goes back before the encoding's peak.
        compute.release_freed_memory()
        at_once = sum(
            self.rows if fold is None else self.fold_rows for fold in missing[: runner.workers if runner else 1]
        )
        if runner is None or at_once > self.rows:
            runner = compute.local_runner(parallel=False)
        tasks = [(self, fold, fold in narrow, wide is None or fold in wide) for fold in missing]
        costs = [float(len(missing) - position) for position in range(len(missing))]  # the refit's first, then by fold
        workers = runner.map(
            write_fold_task, tasks, costs, name="encode", done=lambda position: self.written.add(missing[position])
        )
        return dict(zip(missing, workers))

    def remove(self, folds: set[int | None] | None = None) -> None:
        """Remove the files of ``folds`` (default: every fold written)."""
        for fold in set(self.written if folds is None else folds & self.written):
            for path in self._paths(self.folder, fold):
                path.unlink(missing_ok=True)
            self.written.discard(fold)

    @staticmethod
    def read(folder: Path, fold: int | None, float32: bool = False) -> EncodedFold:
        paths = FoldFiles._paths(folder, fold)
        rows = paths.narrow if float32 else paths.encoded
        # Not memory-mapped: a refit sends its fitted preprocessing back in the pipeline.
        preprocess, validation = joblib.load(paths.fitted)
        held_out = None if fold is None else paths.held_out
        return EncodedFold(
            preprocess,
            np.load(rows, mmap_mode="r"),
            np.load(paths.labels, mmap_mode="r"),
            validation,
            held_out,
        )

    @staticmethod
    def _paths(folder: Path, fold: int | None) -> FoldPaths:
        name = "all" if fold is None else f"fold-{fold}"
        return FoldPaths(*(folder / f"{name}{suffix}" for suffix in FoldPaths.SUFFIXES))


def write_fold_task(files: FoldFiles, fold: int | None, narrow: bool, wide: bool) -> str:
    """Encode ``fold`` from the snapshot (memory-mapped) and write its files: its training rows as
    float64 where ``wide``, as float32 where ``narrow`` (FoldFiles.write runs one a fold, in the
    workers or in this process).

    The rows are written from the column transformer's blocks a few at a time (``write_rows``):
    their stacked matrix, float64 or float32, is never in memory, here or anywhere (the refit's, of
    every row, was the largest allocation of the process that ran the steps). Returns where it ran."""
    X, y = joblib.load(files.snapshot, mmap_mode="r")
    encoded = _fit_fold(X, y, files.features, *_fold_rows(y, fold, files.seed, files.splits, files.sample_rows))
    del X, y
    paths = files._paths(files.folder, fold)
    if wide:
        write_rows(encoded.blocks, paths.encoded, np.float64)
    if narrow:
        write_rows(encoded.blocks, paths.narrow, np.float32)
    write_scratch_file(encoded.labels, paths.labels)
    if encoded.held_out is not None:
        write_scratch_file(encoded.held_out, paths.held_out)
    write_scratch_file((encoded.preprocess, encoded.validation), paths.fitted)
    del encoded
    compute.release_freed_memory()  # what the encoding freed does not stay with the worker that fits next
    return worker_identity()


class FoldPaths(NamedTuple):
    """One fold's files: its arrays as .npy (memory-mapped by the fits; the training rows written a
    few rows at a time, as float32 too where a forest fits on them), its fitted preprocessing and
    the count of its validation rows."""

    encoded: Path
    labels: Path
    held_out: Path
    fitted: Path
    narrow: Path

    SUFFIXES = ("-encoded.npy", "-labels.npy", "-held-out.npy", "-preprocess.joblib", "-encoded-float32.npy")


def write_scratch_file(value: Any, path: Path) -> None:
    """``joblib.dump`` (an array: ``np.save``; rows converted to another type: ``write_rows``); a full
    or unwritable temp folder is a TrainingError naming it, not a traceback.

    ``np.save`` writes a contiguous array's memory to the file as it is, where joblib copies it
    to bytes first (16 MiB at a time): with the worker processes, the encoding of all rows
    for the refit, written while the fits' results were held, made training's peak."""
    with _scratch_errors(path):
        if isinstance(value, np.ndarray):
            np.save(path, value, allow_pickle=False)
        else:
            joblib.dump(value, path)


def write_rows(blocks: list[np.ndarray], path: Path, dtype: type) -> None:
    """The blocks side by side (``_stacked``), as ``dtype``, written to the .npy file ``path``
    without their stacked copy; a full temp folder fails as ``write_scratch_file`` does."""
    with _scratch_errors(path):
        _save_blocks(blocks, dtype, path)


@contextlib.contextmanager
def _scratch_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TrainingError(
            f"cannot write training's scratch file {path} ({exc.strerror or exc}): make room in {path.parent.parent} "
            "or point TMPDIR at a folder with room for a copy of the training data and its encoded folds"
        ) from exc


CONVERT_BLOCK_BYTES = 4 * 1024 * 1024  # converted rows in memory at a time, writing rows as another type


def _save_blocks(blocks: list[np.ndarray], dtype: type, path: Path) -> None:
    """``np.hstack(blocks).astype(dtype)`` (2-D blocks of the same rows) as a .npy file, a few rows
    at a time through one small buffer: whole, a forest's float32 copy of the refit's rows was half
    the largest allocation of the process that wrote it again on top of it, and the stacked float64
    rows the whole of it."""
    rows, width = _row_count(blocks), sum(block.shape[1] for block in blocks)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (rows, width)}
    rows_at_once = max(1, CONVERT_BLOCK_BYTES // max(1, np.dtype(dtype).itemsize * width))
    buffer = np.empty((min(rows_at_once, rows), width), dtype=dtype)
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for start in range(0, rows, rows_at_once):
            part = buffer[: min(rows_at_once, rows - start)]
            _fill_columns(part, blocks, start)
            part.tofile(file)


def fit_task(
    source: TrainingData,
    name: str,
    params: dict[str, Any],
    seed: int,
    splits: int,
    fold: int | None,
    keep_pipeline: bool = False,
) -> dict[str, Any]:
    """Fit one setting on one fold's training rows (or all rows when ``fold`` is None).

    Returns the fold's out-of-fold risk scores, or the fitted pipeline, with the seconds the
    fit took and where it ran; with ``keep_pipeline``, a fold's fitted pipeline too (training
    measures its serving cost).
    """
    started = time.perf_counter()
    data = source.encoded(fold, seed, splits, float32=name in FLOAT32_FITS)
    classifier = build_classifier(name, seed, params, len(data.labels))
    _fit_classifier(classifier, data)
    outcome: dict[str, Any] = {}
    if fold is None or keep_pipeline:
        outcome["pipeline"] = _handed_back(
            Pipeline([("preprocess", data.preprocess), ("classifier", classifier)]), source
        )
    if fold is not None:
        outcome["risk"] = np.asarray(classifier.predict_proba(data.held_out_rows())[:, 1])
    del data, classifier
    compute.release_freed_memory()  # what this fit freed does not stay with the worker
    return {**outcome, "seconds": time.perf_counter() - started, "worker": worker_identity()}


@dataclass(frozen=True)
class PipelineFile:
    """A fitted pipeline that a local worker process wrote into the scratch folder rather than
    sending it back; FitRounds.run loads it once the round's fits are over.

    Sent back, a forest's pipeline (3.5 MiB pickled on 21,000 rows) cost the worker its pickle,
    kept in its heap until its next fit, and this process its bytes received in pieces and joined
    (about three times its size), while the other worker fitted: with the worker processes,
    training's peak. Written, it streams to the file and back."""

    path: str

    def load(self) -> Pipeline:
        path = Path(self.path)
        try:
            return joblib.load(path)
        finally:
            path.unlink(missing_ok=True)


def _handed_back(pipeline: Pipeline, source: TrainingData) -> Pipeline | PipelineFile:
    """The pipeline itself, or (in a local worker process, which has the scratch folder) its file."""
    if source.folds is None:
        return pipeline
    path = Path(source.folds) / f"pipeline-{uuid.uuid4().hex}.joblib"
    write_scratch_file(pipeline, path)
    return PipelineFile(str(path))


def _fit_classifier(classifier: Any, data: EncodedFold) -> None:
    """Fit on the encoded rows; gradient boosting stops early on the validation rows at their end.

    Rows holding a single row of a class have no stratified validation split (scikit-learn
    raises drawing one): boosting is fitted on all of them, as on a fold too small to stop on."""
    with _fit_threads(classifier, len(data.labels)):
        if isinstance(classifier, HistGradientBoostingClassifier) and classifier.early_stopping is True:
            if data.validation:
                cut = len(data.labels) - data.validation
                classifier.fit(data.encoded[:cut], data.labels[:cut], X_val=data.encoded[cut:], y_val=data.labels[cut:])
                return
            classifier.set_params(early_stopping=False)
        classifier.fit(data.encoded, data.labels)


# Below this many rows a lone fit keeps one thread: on 21,000 rows a boosting refit on two workers' threads
# took 0.75-1.1 s against 0.47-0.66 s on one (its parallel loops too short to pay for the second thread);
# on 100,000 rows two threads took 0.63 s against 0.97 s, on 700,000 rows 14.1-16.2 s against 21.1-22.0 s.
THREADED_FIT_MIN_ROWS = 100_000


@contextlib.contextmanager
def _fit_threads(classifier: Any, rows: int) -> Iterator[None]:
    """The task's threads (compute.task_threads: more than one where its round leaves workers idle)
    for boosting's OpenMP loops and the forest's trees, whose fits are the same with any number of
    threads, from THREADED_FIT_MIN_ROWS rows; one below, and for the logistic regression, whose BLAS
    threads made its refit on 700,000 loans slower (2.8-3.9 s against 1.9-2.3 s) and its
    coefficients differ in the last bits."""
    if isinstance(classifier, LogisticRegression) or rows < THREADED_FIT_MIN_ROWS:
        with compute.single_threaded():
            yield
    elif isinstance(classifier, RandomForestClassifier):  # joblib threads, which threadpoolctl does not limit
        saved = classifier.n_jobs
        classifier.set_params(n_jobs=compute.task_threads())
        try:
            yield
        finally:  # the model keeps its own: it scores beside other work
            classifier.set_params(n_jobs=saved)
    else:
        yield


def worker_identity() -> str:
    """The Dask worker's address, or this process's id."""
    if "distributed" in sys.modules:  # only a Dask worker has it imported; importing it costs ~1 s
        try:
            return sys.modules["distributed"].get_worker().address
        except ValueError:
            pass
    return f"pid {os.getpid()}"


def fold_indices(y: np.ndarray, splits: int, seed: int, sample_rows: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified folds, as positions in ``y``; they depend on the labels, the seed and the
    cap only, so every worker agrees.

    With more than ``sample_rows`` rows (0: no cap) the folds cover only the selection sample
    (``selection_rows``): the candidates are chosen on it, and the chosen one is refitted on all rows."""
    sample = selection_rows(y, sample_rows, seed, splits)
    folds = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    if sample is None:
        return list(folds.split(np.zeros(len(y)), y))
    return [(sample[train], sample[test]) for train, test in folds.split(np.zeros(len(sample)), y[sample])]


def selection_rows(y: np.ndarray, sample_rows: int, seed: int, splits: int) -> np.ndarray | None:
    """The rows the candidates are chosen on: None (all of them) when there are at most
    ``sample_rows`` (or it is 0), else a seeded sample of about that many, stratified (each
    class in its share, and at least ``splits`` rows of each class where it has them), in
    their original order."""
    if not sample_rows or len(y) <= sample_rows:
        return None
    rng = np.random.RandomState(seed)
    chosen = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        share = max(min(len(rows), splits), round(sample_rows * len(rows) / len(y)))
        chosen.append(rng.choice(rows, size=share, replace=False))
    return np.sort(np.concatenate(chosen))


def warm_worker() -> int:
    """Nothing: imports this module (and scikit-learn) in a worker process."""
    return os.getpid()


def start_workers(workers: int | None = None) -> None:
    """Start the local worker processes training would use (benchmarks measure memory after this)."""
    with compute.local_runner(parallel=True, workers=workers) as runner:
        runner.map(warm_worker, [() for _ in range(runner.workers)])


FOLD_PRIORITY = 100.0  # above any fit's cost: the fits of one fold run side by side, sharing its file


@dataclass
class FitRounds:
    """Runs rounds of fits where the runner runs them, with the fold files they need."""

    runner: compute.Runner
    source: TrainingData
    files: FoldFiles | None  # written by the runner's workers, one task a fold, before each round
    seed: int
    splits: int
    kept_fold: int | None = None  # this fold's fitted pipelines come back too (training measures their serving cost)
    log: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def run(self, jobs: list[tuple[str, int, int | None]]) -> dict[tuple, dict[str, Any]]:
        folds = {fold for _, _, fold in jobs}
        rank = {fold: position for position, fold in enumerate(sorted(folds, key=lambda f: -1 if f is None else f))}
        arguments = [
            (
                self.source,
                name,
                SEARCH_SPACE[name][index],
                self.seed,
                self.splits,
                fold,
                fold is not None and fold == self.kept_fold,
            )
            for name, index, fold in jobs
        ]
        # Fold by fold, the longest fit of each first.
        costs = [
            FIT_COST[name] * (1.25 if fold is None else 1.0) + FOLD_PRIORITY * (len(folds) - rank[fold])
            for name, _, fold in jobs
        ]
        if self.files is not None:
            self.files.write(
                folds,
                narrow={fold for name, _, fold in jobs if name in FLOAT32_FITS},
                wide={fold for name, _, fold in jobs if name not in FLOAT32_FITS},
                runner=self.runner,
            )
        try:
            outcomes = self.runner.map(fit_task, arguments, costs, name="fit", done=self._fold_remover(jobs))
        finally:
            if self.files is not None:
                self.files.remove()  # no later round uses a fold of this one
        for outcome in outcomes:
            if isinstance(outcome.get("pipeline"), PipelineFile):
                outcome["pipeline"] = outcome["pipeline"].load()
        for (name, index, fold), outcome in zip(jobs, outcomes):
            self.log.append(
                {
                    "model": name,
                    "setting": index,
                    "fold": fold,
                    "seconds": round(outcome["seconds"], 4),
                    "worker": outcome["worker"],
                }
            )
        return dict(zip(jobs, outcomes))

    def _fold_remover(self, jobs: list[tuple[str, int, int | None]]) -> Callable[[int], None]:
        """What removes a fold's files once its last fit is over, while the round's later folds are
        fitted: with the temp folder in memory (tmpfs) they are RAM until then."""
        remaining = collections.Counter(fold for _, _, fold in jobs)

        def fit_done(position: int) -> None:
            fold = jobs[position][2]
            remaining[fold] -= 1
            if remaining[fold] == 0 and self.files is not None:
                self.files.remove({fold})

        return fit_done
