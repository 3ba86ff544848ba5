"""The deployed model compiled for serving: scikit-learn's probabilities without its per-call cost.

scikit-learn's generic ``predict_proba`` costs milliseconds per call whatever the batch size
(input validation, ColumnTransformer bookkeeping, one call per tree), which caps an API far
below what the arithmetic needs. So the deployed pipeline is *compiled*: the fitted imputer
statistics, indicator columns, scaler means and scales and one-hot category maps are applied
with numpy, a logistic regression is its coefficients, and tree ensembles (gradient boosting,
random forests) are imported into Treelite (``treelite.sklearn.import_model``) and evaluated by
its GTIL through its C API (``treelite_predict.TreelitePredictor``); large batches go to the
trees' own ``predict_proba`` on the compiled features, which is faster there. A soft-voting
blend is the mean of its compiled members, their shared preprocessing computed once.

Anything that cannot be compiled (whatever it raises: an unknown step, an attribute a newer
scikit-learn renamed) is served by ``model.predict_proba``, with a logged warning. Every
compiled scorer is checked against scikit-learn on the version's reference sample before it
serves; a mismatch beyond ``TOLERANCE`` logs a warning and uses the fallback, so a wrong
answer is never served silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from risk.core.tables import CATEGORICAL, CSV_ERRORS, FLOAT32_OVERFLOW, NUMERIC, read_typed_csv
from risk.model.batches import Batch, InputError, Schema, batch_from_frame, slice_batch
from risk.model.treelite_predict import TreelitePredictor

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9  # compiled vs scikit-learn, per probability, at the self-check
SMALL_BATCH_ROWS = 128  # above this, trees are evaluated by scikit-learn's own code (measured crossover)
SELF_CHECK_ROWS = 2000
SELF_CHECK_SINGLE_ROWS = 32  # of them, also scored one at a time (the synthetic ones included)
BLEND = "SoftVotingBlend"  # pipelines.py's blend: the mean of its pipelines' probabilities


class UnsupportedModel(TypeError):
    """A fitted step this module cannot compile exactly; the caller falls back to scikit-learn."""


class UnservableModel(ValueError):
    """The model's own predict_proba fails on its reference rows: the version cannot be served (a load error)."""


# ----------------------------------------------------------------------------- scorers


class Scorer(Protocol):
    kind: str

    def risk(self, batch: Batch) -> np.ndarray: ...


@dataclass
class SklearnScorer:
    """The always-correct path: the fitted model's own ``predict_proba``."""

    model: Any
    schema: Schema
    kind: str = "scikit-learn"

    def risk(self, batch: Batch) -> np.ndarray:
        return self.model.predict_proba(batch.frame(self.schema))[:, 1]


@dataclass
class CompiledScorer:
    """The compiled preprocessing followed by the compiled (or fitted) classifier."""

    preprocess: Preprocessor
    classify: Callable[[np.ndarray, bool], np.ndarray]
    kind: str
    small_batch_rows: int = SMALL_BATCH_ROWS

    def risk(self, batch: Batch) -> np.ndarray:
        return self.classify(self.preprocess.transform(batch), batch.rows <= self.small_batch_rows)


@dataclass
class BlendScorer:
    """A soft-voting blend: the mean of its compiled members' probabilities, as the blend averages them.

    Members whose preprocessing is the same (equal keys: fitted on the same rows) share one matrix.
    """

    members: list[CompiledScorer]
    kind: str
    small_batch_rows: int = SMALL_BATCH_ROWS

    def __post_init__(self) -> None:
        shared: dict[Any, int] = {}
        self._preprocessors: list[Preprocessor] = []
        self._uses: list[int] = []  # per member, its preprocessor's index in _preprocessors
        for member in self.members:
            if member.preprocess.key not in shared:
                shared[member.preprocess.key] = len(self._preprocessors)
                self._preprocessors.append(member.preprocess)
            self._uses.append(shared[member.preprocess.key])

    def risk(self, batch: Batch) -> np.ndarray:
        small = batch.rows <= self.small_batch_rows
        matrices = [preprocess.transform(batch) for preprocess in self._preprocessors]
        total = None
        for member, use in zip(self.members, self._uses):
            risk = member.classify(matrices[use], small)
            total = risk if total is None else total + risk
        return total / len(self.members)  # as np.mean over the members: their sum in order, then one division


def known_categories(model: Any) -> dict[str, frozenset[str]]:
    """Per categorical column, the categories its fitted one-hot encoder saw (whatever path scores it)."""
    estimator = getattr(model, "estimator_", None)
    members = [member for _, member in getattr(estimator, "estimators", [])] or [estimator]  # a blend: its pipelines
    transformers = [getattr(member, "named_steps", {}).get("preprocess") for member in members]
    known: dict[str, frozenset[str]] = {}
    for _, step, columns in [
        entry for transformer in transformers for entry in getattr(transformer, "transformers_", [])
    ]:
        steps = list(step.named_steps.values()) if hasattr(step, "named_steps") else [step]
        encoder = next((s for s in steps if type(s).__name__ == "OneHotEncoder"), None)
        if encoder is not None and isinstance(columns, (list, tuple)) and len(columns) == len(encoder.categories_):
            known.update(
                {name: frozenset(str(c) for c in categories) for name, categories in zip(columns, encoder.categories_)}
            )
    return known


def unseen_categories(known: dict[str, frozenset[str]], batch: Batch, schema: Schema) -> dict[str, int]:
    """Per categorical column, how many values the model never saw in training (scored as unknown)."""
    counts = {}
    for position, name in enumerate(schema.categorical):
        if name in known:
            unseen = sum(1 for value in batch.categorical[position] if value is not None and value not in known[name])
            if unseen:
                counts[name] = unseen
    return counts


def build_scorer(model: Any, schema: Schema, check_frame: pd.DataFrame | None = None) -> Scorer:
    """The fastest exact scorer for ``model``; scikit-learn's own where compiling fails or is inexact."""
    fallback = SklearnScorer(model, schema)
    try:
        scorer: Scorer = compile_model(model, schema)
    except Exception as exc:  # whatever compiling raises (a renamed attribute included), scikit-learn still serves
        logger.warning(
            "serving with scikit-learn's predict_proba: the model could not be compiled (%s: %s)",
            type(exc).__name__,
            exc,
        )
        return fallback
    batch = self_check_batch(schema, check_frame)
    try:
        expected = fallback.risk(batch)
    except Exception as exc:  # scikit-learn itself cannot score the reference rows: a version that cannot serve
        raise UnservableModel(f"the model cannot score its reference rows: {type(exc).__name__}: {exc}") from exc
    try:
        worst = max(
            float(np.max(np.abs(scorer.risk(batch) - expected))),
            float(np.max(np.abs(_small_batches(scorer, batch) - expected))),
            float(np.max(np.abs(_single_rows(scorer, batch) - expected[-SELF_CHECK_SINGLE_ROWS:]))),
        )
    except Exception as exc:  # the compiled scorer failed where scikit-learn did not: never serve it
        logger.warning(
            "compiled %s failed its self-check (%s: %s); serving with scikit-learn",
            scorer.kind,
            type(exc).__name__,
            exc,
        )
        return fallback
    if not worst <= TOLERANCE:
        logger.warning("compiled %s differs from scikit-learn by %.3g; serving with scikit-learn", scorer.kind, worst)
        return fallback
    return scorer


def _small_batches(scorer: Scorer, batch: Batch) -> np.ndarray:
    """Risk computed in small slices, so the self-check covers the compiled small-batch path too."""
    size = max(1, getattr(scorer, "small_batch_rows", batch.rows))
    parts = [scorer.risk(slice_batch(batch, start, start + size)) for start in range(0, batch.rows, size)]
    return np.concatenate(parts)


def _single_rows(scorer: Scorer, batch: Batch) -> np.ndarray:
    """The last rows (the synthetic ones among them) scored one at a time, as a single-row /prediction is."""
    start = max(0, batch.rows - SELF_CHECK_SINGLE_ROWS)
    return np.concatenate([scorer.risk(slice_batch(batch, row, row + 1)) for row in range(start, batch.rows)])


def self_check_batch(schema: Schema, frame: pd.DataFrame | None) -> Batch:
    """Reference rows plus two synthetic ones: every value missing, and an unseen category in every column."""
    width = len(schema.numeric)
    parts = [
        Batch(
            np.array([[math.nan] * width, [0.0] * width]).reshape(2, width),
            [[None, "\x00never-seen\x00"] for _ in schema.categorical],
        )
    ]
    if frame is not None and len(frame) and all(name in frame.columns for name in schema.features):
        try:
            parts.insert(0, batch_from_frame(frame.head(SELF_CHECK_ROWS), schema, 0))
        except InputError as exc:
            logger.warning("reference sample unusable for the self-check: %s", exc)
    numeric = np.concatenate([part.numeric for part in parts])
    categorical = [[value for part in parts for value in part.categorical[j]] for j in range(len(schema.categorical))]
    return Batch(numeric, categorical)


def load_check_frame(path: Path, column_kinds: dict[str, str]) -> pd.DataFrame | None:
    """The version's reference sample for the self-check (None where it is absent or empty)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        return read_typed_csv(path, column_kinds, nrows=SELF_CHECK_ROWS)
    except CSV_ERRORS as exc:
        logger.warning("cannot read %s for the self-check: %s", path, exc)
        return None


# ----------------------------------------------------------------------------- compiling


def compile_model(model: Any, schema: Schema) -> CompiledScorer | BlendScorer:
    """Compile a FixedThresholdClassifier of a Pipeline([preprocess, classifier]) or of a blend of them.

    Raises UnsupportedModel for what it does not know, and whatever Treelite or a changed
    scikit-learn raise; build_scorer falls back on any of them.
    """
    if getattr(model, "response_method", "predict_proba") != "predict_proba":
        raise UnsupportedModel("the threshold is applied to another response than predict_proba")
    estimator = getattr(model, "estimator_", None)
    if type(estimator).__name__ == BLEND:
        members = [compile_pipeline(pipeline, schema) for _, pipeline in estimator.estimators]
        if not members:
            raise UnsupportedModel("the blend has no members")
        return BlendScorer(members, "blend(" + ", ".join(member.kind for member in members) + ")")
    return compile_pipeline(estimator, schema)


def compile_pipeline(pipeline: Any, schema: Schema) -> CompiledScorer:
    """A fitted Pipeline of preprocess and a binary classifier, compiled. Raises UnsupportedModel."""
    steps = getattr(pipeline, "named_steps", None)
    if steps is None or list(steps) != ["preprocess", "classifier"]:
        raise UnsupportedModel("the model is not a fitted Pipeline of preprocess and classifier")
    classifier = steps["classifier"]
    if list(getattr(classifier, "classes_", [])) != [0, 1]:
        raise UnsupportedModel("the classifier's classes are not [0, 1]")
    preprocess = Preprocessor.compile(steps["preprocess"], schema)
    if isinstance(classifier, LogisticRegression):
        return CompiledScorer(preprocess, _logistic(classifier), "numpy:logistic_regression")
    if isinstance(classifier, HistGradientBoostingClassifier):
        return CompiledScorer(preprocess, _tree_ensemble(classifier), "treelite:hist_gradient_boosting")
    if isinstance(classifier, RandomForestClassifier):
        return CompiledScorer(preprocess, _tree_ensemble(classifier, float32_features=True), "treelite:random_forest")
    raise UnsupportedModel(f"no compiled path for {type(classifier).__name__}")


class Preprocessor:
    """A fitted ColumnTransformer of numeric (impute, indicate, scale) and categorical (impute, one-hot) branches.

    ``key`` holds every fitted value its output depends on: preprocessors with equal keys (a blend's
    members, fitted on the same rows) make the same matrix, so a blend computes it once.
    """

    def __init__(
        self,
        numeric_steps: list[_Imputer | _Scaler],
        encoders: list[_OneHot],
        blocks: list[tuple[str, int, int]],
        width: int,
    ):
        self.numeric_steps = numeric_steps
        self.encoders = encoders
        self.blocks = blocks  # (NUMERIC or CATEGORICAL, first column, end column), in the output's order
        self.width = width
        self.key = (tuple(blocks), tuple(s.key for s in numeric_steps), tuple(e.key for e in encoders), width)

    @classmethod
    def compile(cls, transformer: Any, schema: Schema) -> Preprocessor:
        if type(transformer).__name__ != "ColumnTransformer" or getattr(transformer, "sparse_output_", True):
            raise UnsupportedModel("preprocess is not a dense ColumnTransformer")
        numeric_steps: list[_Imputer | _Scaler] = []
        encoders: list[_OneHot] = []
        blocks = []
        for name, step, columns in transformer.transformers_:
            if isinstance(step, str) and step == "drop" or (isinstance(columns, (list, tuple)) and not len(columns)):
                continue
            inner = list(step.named_steps.values()) if hasattr(step, "named_steps") else [step]
            if list(columns) == list(schema.numeric) and schema.numeric:
                numeric_steps = [_numeric_step(s) for s in inner]
                part = NUMERIC
            elif list(columns) == list(schema.categorical) and schema.categorical:
                encoders = _categorical_steps(inner, len(schema.categorical))
                part = CATEGORICAL
            else:
                raise UnsupportedModel(
                    f"transformer {name!r} reads columns other than the schema's numeric or categorical ones"
                )
            where = transformer.output_indices_[name]
            blocks.append((part, int(where.start), int(where.stop)))
        width = int(sum(s.stop - s.start for s in transformer.output_indices_.values()))
        if sorted(column for _, start, stop in blocks for column in range(start, stop)) != list(range(width)):
            raise UnsupportedModel("the compiled blocks do not make every output column exactly once")
        if any(part == CATEGORICAL and stop - start != sum(e.width for e in encoders) for part, start, stop in blocks):
            raise UnsupportedModel("the one-hot columns do not fill the encoder's output block")
        return cls(numeric_steps, encoders, blocks, width)

    def transform(self, batch: Batch) -> np.ndarray:
        """The matrix the fitted ColumnTransformer makes of ``batch``: each block written in place."""
        matrix = np.zeros((batch.rows, self.width))
        for part, start, stop in self.blocks:
            if part == NUMERIC:
                block = batch.numeric
                for step in self.numeric_steps:
                    block = step(block)
                if block.shape[1] != stop - start:
                    raise UnsupportedModel(f"compiled numeric steps made {block.shape[1]} columns, not {stop - start}")
                matrix[:, start:stop] = block
            else:
                for encoder, values in zip(self.encoders, batch.categorical):
                    encoder.encode_into(values, matrix, start)
                    start += encoder.width
        return matrix


def _numeric_step(step: Any) -> _Imputer | _Scaler:
    name = type(step).__name__
    if name == "SimpleImputer":
        return _Imputer.compile(step)
    if name == "StandardScaler":
        return _Scaler(step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None)
    raise UnsupportedModel(f"no compiled path for numeric step {name}")


def _key(array: np.ndarray | None) -> bytes | None:
    return None if array is None else np.ascontiguousarray(array).tobytes()


class _Scaler:
    """A fitted StandardScaler: the same two operations, in the same order, as its transform."""

    def __init__(self, mean: np.ndarray | None, scale: np.ndarray | None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        self.key = ("scale", _key(self.mean), _key(self.scale))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = block - self.mean if self.mean is not None else block.copy()
        if self.scale is not None:
            out /= self.scale
        return out


class _Imputer:
    """A fitted numeric SimpleImputer (NaN replaced by its statistics), with its missing-only indicator columns."""

    def __init__(self, statistics: np.ndarray, indicated: np.ndarray | None):
        self.statistics = statistics
        self.indicated = indicated
        self.key = ("impute", _key(statistics), _key(indicated))

    @classmethod
    def compile(cls, imputer: Any) -> _Imputer:
        statistics = np.asarray(imputer.statistics_, dtype=np.float64)
        missing = imputer.missing_values
        if not (isinstance(missing, float) and math.isnan(missing)) or not np.all(np.isfinite(statistics)):
            raise UnsupportedModel("the numeric imputer drops columns or imputes another marker than NaN")
        indicator = getattr(imputer, "indicator_", None)
        if not imputer.add_indicator:
            return cls(statistics, None)
        if indicator is None or indicator.features != "missing-only" or indicator.error_on_new:
            raise UnsupportedModel("the missing-value indicator is not the imputer's missing-only one")
        return cls(statistics, np.asarray(indicator.features_, dtype=np.intp))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        mask = np.isnan(block)
        if self.indicated is None:
            return np.where(mask, self.statistics, block)
        out = np.empty((block.shape[0], block.shape[1] + len(self.indicated)))
        np.copyto(out[:, : block.shape[1]], np.where(mask, self.statistics, block))
        out[:, block.shape[1] :] = mask[:, self.indicated]
        return out


class _OneHot:
    """One categorical column's fitted imputer and one-hot encoder as a dict lookup."""

    def __init__(self, columns: dict[str, int], fill: str | None, width: int):
        self.columns = columns  # category -> output column (infrequent ones share the last)
        self.fill = fill
        self.width = width
        self.key = ("one-hot", tuple(sorted(columns.items())), fill, width)

    def encode_into(self, values: list[str | None], matrix: np.ndarray, start: int) -> None:
        """Set each row's category column (from ``start``) to 1 in ``matrix``, whose block holds zeros."""
        lookup = self.columns.get
        for row, value in enumerate(values):
            column = lookup(self.fill if value is None else value)
            if column is not None:
                matrix[row, start + column] = 1.0


def _categorical_steps(steps: list[Any], count: int) -> list[_OneHot]:
    names = [type(s).__name__ for s in steps]
    if names != ["SimpleImputer", "OneHotEncoder"]:
        raise UnsupportedModel(f"no compiled path for categorical steps {names}")
    imputer, encoder = steps
    if imputer.strategy != "constant" or imputer.add_indicator or not isinstance(imputer.fill_value, str):
        raise UnsupportedModel("the categorical imputer is not a constant string fill")
    if encoder.drop is not None or encoder.handle_unknown not in ("ignore", "infrequent_if_exist"):
        raise UnsupportedModel("the one-hot encoder drops categories or errors on unknown ones")
    if encoder.handle_unknown == "infrequent_if_exist" and getattr(encoder, "infrequent_categories_", None):
        raise UnsupportedModel("unknown categories map to the infrequent column")
    if len(encoder.categories_) != count:
        raise UnsupportedModel("the encoder's columns do not match the schema")
    compiled = []
    for position, categories in enumerate(encoder.categories_):
        if not all(isinstance(c, str) for c in categories):
            raise UnsupportedModel("a categorical column has non-text categories")
        compiled.append(_one_hot_map(encoder, position, list(categories), imputer.fill_value))
    return compiled


def _one_hot_map(encoder: Any, position: int, categories: list[str], fill: str) -> _OneHot:
    """Read each category's output column off the fitted encoder itself: exact, infrequent groups included."""
    probe = np.array(
        [[encoder.categories_[j][0] for j in range(len(encoder.categories_))] for _ in categories], dtype=object
    )
    probe[:, position] = categories
    encoded = np.asarray(encoder.transform(probe))
    offsets = np.cumsum([0] + [len(c) for c in _output_columns(encoder)])
    block = encoded[:, offsets[position] : offsets[position + 1]]
    if not np.all(block.sum(axis=1) == 1):
        raise UnsupportedModel("a known category did not encode to exactly one column")
    columns = {category: int(np.argmax(row)) for category, row in zip(categories, block)}
    return _OneHot(columns, fill, block.shape[1])


def _output_columns(encoder: Any) -> list[list[str]]:
    """The encoder's output feature names, grouped by input column."""
    names = list(encoder.get_feature_names_out([f"c{i}" for i in range(len(encoder.categories_))]))
    groups: list[list[str]] = [[] for _ in encoder.categories_]
    for name in names:
        groups[int(name.split("_", 1)[0][1:])].append(name)
    return groups


def _logistic(classifier: Any) -> Callable[[np.ndarray, bool], np.ndarray]:
    coef = np.asarray(classifier.coef_, dtype=np.float64)
    if coef.shape[0] != 1:
        raise UnsupportedModel("logistic regression is not binary")
    intercept = float(classifier.intercept_[0])

    def classify(matrix: np.ndarray, small: bool) -> np.ndarray:
        if np.isinf(matrix).any():  # a huge value scaled past float64: scikit-learn refuses it (the API answers 400)
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
        return expit(matrix @ coef[0] + intercept)

    return classify


def _tree_ensemble(classifier: Any, float32_features: bool = False) -> Callable[[np.ndarray, bool], np.ndarray]:
    """A fitted tree ensemble imported into Treelite: its GTIL for small batches, its own predict_proba for large.

    ``float32_features``: scikit-learn's decision trees compare float32 features (with float64
    thresholds), so the features are rounded to float32 first to send every row down the same branch.
    """
    predictor = TreelitePredictor(classifier)
    if predictor.features != classifier.n_features_in_:
        raise UnsupportedModel(f"Treelite reads {predictor.features} features, the trees {classifier.n_features_in_}")

    def classify(matrix: np.ndarray, small: bool) -> np.ndarray:
        if float32_features:
            if (np.abs(matrix) >= FLOAT32_OVERFLOW).any():  # refused as scikit-learn's own check refuses it (a 400)
                raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
            matrix = matrix.astype(np.float32)
        if not small:  # scikit-learn's own code, on the compiled features: exact and faster for many rows
            return classifier.predict_proba(matrix)[:, 1]
        return predictor.positive(matrix)

    return classify
