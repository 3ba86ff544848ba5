"""The deployed model compiled for serving: scikit-learn's probabilities without its per-call cost.

scikit-learn's generic ``predict_proba`` costs milliseconds per call whatever the batch size
(input validation, ColumnTransformer bookkeeping, one Cython call per tree), which caps an API
far below what the arithmetic needs. So the deployed pipeline is *compiled*: the fitted
imputer statistics, indicator columns, scaler means and scales and one-hot category maps are
applied with numpy, and the classifier is evaluated from its fitted arrays: logistic
regression's coefficients; gradient-boosted trees (at most 64 leaves each) as precomputed
leaf bitmasks, QuickScorer-style, so that any batch costs a few vectorised gathers per
feature; deeper trees (random forests) by walking all trees at once, level by level, and for
large batches by scikit-learn's own Cython walk on the compiled features.

Anything that cannot be compiled exactly falls back to ``model.predict_proba``. Every compiled
scorer is checked against scikit-learn on the version's reference sample before it serves; a
mismatch beyond ``TOLERANCE`` logs a warning and uses the fallback, so a wrong answer is never
served silently.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd
from scipy.special import expit

from requestinput import Batch, InputError, Schema, batch_from_frame, slice_batch

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9  # compiled vs scikit-learn, per probability, at the self-check
SMALL_BATCH_ROWS = 256  # above this, deep trees are walked by scikit-learn's Cython code (measured crossover)
SELF_CHECK_ROWS = 2000
LEVEL_STEP_OVERHEAD = 4000  # a level step's fixed numpy cost, in element operations (measured)


class UnsupportedModel(TypeError):
    """A fitted step this module cannot compile exactly; the caller falls back to scikit-learn."""


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

    preprocess: "Preprocessor"
    classify: Callable[[np.ndarray, bool], np.ndarray]
    kind: str
    small_batch_rows: int = SMALL_BATCH_ROWS

    def risk(self, batch: Batch) -> np.ndarray:
        return self.classify(self.preprocess.transform(batch), batch.rows <= self.small_batch_rows)


def known_categories(model: Any) -> dict[str, frozenset[str]]:
    """Per categorical column, the categories its fitted one-hot encoder saw (whatever path scores it)."""
    estimator = getattr(model, "estimator_", None)
    members = [member for _, member in getattr(estimator, "estimators", [])] or [estimator]  # a blend: its pipelines
    transformers = [getattr(member, "named_steps", {}).get("preprocess") for member in members]
    known: dict[str, frozenset[str]] = {}
    for _, step, columns in [entry for transformer in transformers for entry in getattr(transformer, "transformers_", [])]:
        steps = list(step.named_steps.values()) if hasattr(step, "named_steps") else [step]
        encoder = next((s for s in steps if type(s).__name__ == "OneHotEncoder"), None)
        if encoder is not None and isinstance(columns, (list, tuple)) and len(columns) == len(encoder.categories_):
            known.update({name: frozenset(str(c) for c in categories) for name, categories in zip(columns, encoder.categories_)})
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
    """The fastest exact scorer for ``model``; scikit-learn's own where compiling is unsupported or inexact."""
    fallback = SklearnScorer(model, schema)
    try:
        scorer: Scorer = compile_model(model, schema)
    except UnsupportedModel as exc:
        logger.info("serving with scikit-learn's predict_proba: %s", exc)
        return fallback
    batch = self_check_batch(schema, check_frame)
    expected = fallback.risk(batch)
    worst = max(
        float(np.max(np.abs(scorer.risk(batch) - expected))),
        float(np.max(np.abs(_small_batches(scorer, batch) - expected))),
    )
    if not worst <= TOLERANCE:
        logger.warning("compiled %s differs from scikit-learn by %.3g; serving with scikit-learn", scorer.kind, worst)
        return fallback
    return scorer


def _small_batches(scorer: Scorer, batch: Batch) -> np.ndarray:
    """Risk computed in small slices, so the self-check covers the compiled small-batch path too."""
    size = max(1, getattr(scorer, "small_batch_rows", batch.rows))
    parts = [scorer.risk(slice_batch(batch, start, start + size)) for start in range(0, batch.rows, size)]
    return np.concatenate(parts)


def self_check_batch(schema: Schema, frame: pd.DataFrame | None) -> Batch:
    """Reference rows plus two synthetic ones: every value missing, and an unseen category in every column."""
    width = len(schema.numeric)
    parts = [Batch(np.array([[math.nan] * width, [0.0] * width]).reshape(2, width), [[None, "\x00never-seen\x00"] for _ in schema.categorical])]
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
    text_columns = {name: str for name, kind in column_kinds.items() if kind != "numeric"}
    try:
        frame = pd.read_csv(path, dtype=text_columns, encoding="utf-8-sig", nrows=SELF_CHECK_ROWS)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("cannot read %s for the self-check: %s", path, exc)
        return None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


# ----------------------------------------------------------------------------- compiling


def compile_model(model: Any, schema: Schema) -> CompiledScorer:
    """Compile a FixedThresholdClassifier(Pipeline([preprocess, classifier])). Raises UnsupportedModel."""
    pipeline = getattr(model, "estimator_", None)
    steps = getattr(pipeline, "named_steps", None)
    if steps is None or list(steps) != ["preprocess", "classifier"]:
        raise UnsupportedModel("the model is not a fitted Pipeline of preprocess and classifier")
    if getattr(model, "response_method", "predict_proba") != "predict_proba":
        raise UnsupportedModel("the threshold is applied to another response than predict_proba")
    classifier = steps["classifier"]
    if list(getattr(classifier, "classes_", [])) != [0, 1]:
        raise UnsupportedModel("the classifier's classes are not [0, 1]")
    preprocess = Preprocessor.compile(steps["preprocess"], schema)
    name = type(classifier).__name__
    if name == "LogisticRegression":
        return CompiledScorer(preprocess, _logistic(classifier), "numpy:logistic_regression")
    if name == "HistGradientBoostingClassifier":
        return CompiledScorer(preprocess, _hist_gradient_boosting(classifier), "numpy:hist_gradient_boosting")
    if name == "RandomForestClassifier":
        return CompiledScorer(preprocess, _random_forest(classifier), "numpy:random_forest")
    raise UnsupportedModel(f"no compiled path for {name}")


class Preprocessor:
    """A fitted ColumnTransformer of numeric (impute, indicate, scale) and categorical (impute, one-hot) branches."""

    def __init__(self, numeric_steps: list[Callable[[np.ndarray], np.ndarray]], encoders: list["_OneHot"], order: list[str], width: int):
        self.numeric_steps = numeric_steps
        self.encoders = encoders
        self.order = order  # "numeric" / "categorical", in the ColumnTransformer's output order
        self.width = width

    @classmethod
    def compile(cls, transformer: Any, schema: Schema) -> "Preprocessor":
        if type(transformer).__name__ != "ColumnTransformer" or getattr(transformer, "sparse_output_", True):
            raise UnsupportedModel("preprocess is not a dense ColumnTransformer")
        numeric_steps: list[Callable[[np.ndarray], np.ndarray]] = []
        encoders: list[_OneHot] = []
        order = []
        for name, step, columns in transformer.transformers_:
            if isinstance(step, str) and step == "drop" or (isinstance(columns, (list, tuple)) and not len(columns)):
                continue
            inner = list(step.named_steps.values()) if hasattr(step, "named_steps") else [step]
            if list(columns) == list(schema.numeric) and schema.numeric:
                numeric_steps = [_numeric_step(s) for s in inner]
                order.append("numeric")
            elif list(columns) == list(schema.categorical) and schema.categorical:
                encoders = _categorical_steps(inner, len(schema.categorical))
                order.append("categorical")
            else:
                raise UnsupportedModel(f"transformer {name!r} reads columns other than the schema's numeric or categorical ones")
        width = int(sum(s.stop - s.start for s in transformer.output_indices_.values()))
        return cls(numeric_steps, encoders, order, width)

    def transform(self, batch: Batch) -> np.ndarray:
        blocks = []
        for part in self.order:
            if part == "numeric":
                block = batch.numeric
                for step in self.numeric_steps:
                    block = step(block)
                blocks.append(block)
            else:
                blocks.extend(encoder.encode(values) for encoder, values in zip(self.encoders, batch.categorical))
        matrix = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        if matrix.shape[1] != self.width:
            raise UnsupportedModel(f"compiled preprocessing made {matrix.shape[1]} columns, not {self.width}")
        return matrix


def _numeric_step(step: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = type(step).__name__
    if name == "SimpleImputer":
        return _compiled_imputer(step)
    if name == "StandardScaler":
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None

        def scale_step(block: np.ndarray) -> np.ndarray:
            # The same two operations, in the same order, as StandardScaler.transform.
            out = block - mean if mean is not None else block.copy()
            if scale is not None:
                out /= scale
            return out

        return scale_step
    raise UnsupportedModel(f"no compiled path for numeric step {name}")


def _compiled_imputer(imputer: Any) -> Callable[[np.ndarray], np.ndarray]:
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    missing = imputer.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)) or not np.all(np.isfinite(statistics)):
        raise UnsupportedModel("the numeric imputer drops columns or imputes another marker than NaN")
    indicator = getattr(imputer, "indicator_", None)
    indicated = None
    if imputer.add_indicator:
        if indicator is None or indicator.features != "missing-only" or indicator.error_on_new:
            raise UnsupportedModel("the missing-value indicator is not the imputer's missing-only one")
        indicated = np.asarray(indicator.features_, dtype=np.intp)

    def impute(block: np.ndarray) -> np.ndarray:
        mask = np.isnan(block)
        if indicated is None:
            return np.where(mask, statistics, block)
        out = np.empty((block.shape[0], block.shape[1] + len(indicated)))
        np.copyto(out[:, : block.shape[1]], np.where(mask, statistics, block))
        out[:, block.shape[1] :] = mask[:, indicated]
        return out

    return impute


class _OneHot:
    """One categorical column's fitted imputer and one-hot encoder as a dict lookup."""

    def __init__(self, columns: dict[str, int], fill: str | None, width: int):
        self.columns = columns  # category -> output column (infrequent ones share the last)
        self.fill = fill
        self.width = width

    def encode(self, values: list[str | None]) -> np.ndarray:
        out = np.zeros((len(values), self.width), dtype=np.float64)
        lookup = self.columns.get
        for row, value in enumerate(values):
            column = lookup(self.fill if value is None else value)
            if column is not None:
                out[row, column] = 1.0
        return out


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
    probe = np.array([[encoder.categories_[j][0] for j in range(len(encoder.categories_))] for _ in categories], dtype=object)
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
        return expit(matrix @ coef[0] + intercept)

    return classify


@dataclass(frozen=True)
class TreeEnsemble:
    """Every tree's nodes in flat arrays, numbered so that split nodes come first, grouped by feature.

    Leaves point at themselves, so a fixed number of steps (the deepest leaf's depth) reaches
    every leaf. Grouping split nodes by feature lets one ``np.repeat`` of a row stand for the
    feature value each node tests, instead of a gather over all nodes.
    """

    feature: np.ndarray  # per node (leaves: 0)
    threshold: np.ndarray  # per node (leaves: +inf); go left where x <= threshold
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray  # where a NaN goes
    value: np.ndarray  # per node; read at leaves
    roots: np.ndarray
    depth: int
    splits: int  # nodes [0, splits) are split nodes, the rest leaves
    feature_counts: np.ndarray  # split nodes per input column, in column order
    step: np.ndarray  # left - right, so that the chosen child is right + go_left * step
    following_template: np.ndarray  # the next node of each leaf (itself); split nodes filled per row

    @classmethod
    def pack(cls, trees: list[dict[str, np.ndarray]], width: int) -> "TreeEnsemble":
        """``trees``: per tree, node arrays feature, threshold, left and right (-1 at leaves), missing_left, value."""
        offsets = np.cumsum([0] + [len(t["value"]) for t in trees])
        join = lambda key: np.concatenate([np.asarray(t[key]) for t in trees])  # noqa: E731
        leaf = np.concatenate([np.asarray(t["left"]) < 0 for t in trees])
        left = np.concatenate([np.asarray(t["left"], dtype=np.intp) + o for t, o in zip(trees, offsets)])
        right = np.concatenate([np.asarray(t["right"], dtype=np.intp) + o for t, o in zip(trees, offsets)])
        feature = np.where(leaf, 0, join("feature")).astype(np.intp)
        if np.any(feature[~leaf] < 0) or np.any(feature[~leaf] >= width):
            raise UnsupportedModel("a split tests a column the preprocessing does not make")
        # New numbering: split nodes sorted by feature (stable), then leaves.
        order = np.concatenate([np.flatnonzero(~leaf)[np.argsort(feature[~leaf], kind="stable")], np.flatnonzero(leaf)])
        renumber = np.empty_like(order)
        renumber[order] = np.arange(len(order))
        own = np.arange(len(order), dtype=np.intp)
        splits = int((~leaf).sum())
        new_leaf = own >= splits
        new_left = np.where(new_leaf, own, renumber[np.where(leaf, 0, left)][order])
        new_right = np.where(new_leaf, own, renumber[np.where(leaf, 0, right)][order])
        return cls(
            feature=feature[order],
            threshold=np.where(new_leaf, np.inf, join("threshold")[order].astype(np.float64)),
            left=new_left,
            right=new_right,
            missing_left=join("missing_left")[order].astype(bool),
            value=join("value")[order].astype(np.float64),
            roots=renumber[offsets[:-1]].astype(np.intp),
            depth=max(int(t["depth"]) for t in trees),
            splits=splits,
            feature_counts=np.bincount(feature[~leaf], minlength=width),
            step=new_left - new_right,
            following_template=own.copy(),
        )

    def leaf_values(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, trees) leaf values, by whichever walk costs fewer numpy element operations."""
        rows = matrix.shape[0]
        every_node = rows * len(self.value)
        level_by_level = self.depth * max(rows * len(self.roots), LEVEL_STEP_OVERHEAD)
        if every_node <= level_by_level:
            return self._walk_decided(matrix)
        return self._walk_levels(matrix)

    def _walk_decided(self, matrix: np.ndarray) -> np.ndarray:
        """Decide every split for each row at once, then follow the decisions: cheap for few rows."""
        rows, splits = matrix.shape[0], self.splits
        if rows == 1:  # the common single-client request: plain 1-D arrays throughout
            x = np.repeat(matrix[0], self.feature_counts)  # the value each split node tests
            following = self.following_template.copy()  # leaves already point at themselves
            go_left = x <= self.threshold[:splits]
            if np.isnan(x).any():
                go_left = np.where(np.isnan(x), self.missing_left[:splits], go_left)
            np.add(self.right[:splits], go_left * self.step[:splits], out=following[:splits])
            node = self.roots
            for _ in range(self.depth):
                node = following[node]
            return self.value[node][None, :]
        x = np.repeat(matrix, self.feature_counts, axis=1)
        go_left = x <= self.threshold[:splits]
        if np.isnan(x).any():
            go_left = np.where(np.isnan(x), self.missing_left[:splits], go_left)
        chosen = self.right[:splits] + go_left * self.step[:splits]
        leaves = self.left[splits:]
        following = np.concatenate((chosen, np.broadcast_to(leaves, (rows, len(leaves)))), axis=1).ravel()
        base = (np.arange(rows, dtype=np.intp) * len(self.value))[:, None]
        node = np.broadcast_to(self.roots, (rows, len(self.roots)))
        for _ in range(self.depth):
            node = following[base + node]
        return self.value[node]

    def _walk_levels(self, matrix: np.ndarray) -> np.ndarray:
        """Walk all trees together, one level per step: cheap for deep trees and more rows."""
        rows, width = matrix.shape
        flat = np.ascontiguousarray(matrix).ravel()
        base = (np.arange(rows, dtype=np.intp) * width)[:, None]
        node = np.broadcast_to(self.roots, (rows, len(self.roots))).copy()
        has_nan = bool(np.isnan(matrix).any())
        for _ in range(self.depth):
            x = flat[base + self.feature[node]]
            go_left = x <= self.threshold[node]
            if has_nan:
                go_left = np.where(np.isnan(x), self.missing_left[node], go_left)
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node]


class BitvectorForest:
    """Trees with at most 64 leaves each, evaluated QuickScorer-style: no walk at all.

    Number each tree's leaves left to right. A split that is false for a row (x > threshold:
    the row goes right) rules out every leaf of its left subtree. Sorting all the splits on
    one feature by threshold, the false ones for a value x are a prefix (the thresholds below
    x), so the AND of their masks is precomputed per prefix. A row's exit leaf in each tree is
    then the lowest leaf left after AND-ing one precomputed row per feature: a handful of
    vectorised gathers however deep the trees, exact because each split's test is unchanged.
    """

    MAX_TABLE_BYTES = 64 * 1024 * 1024
    CHUNK_CELLS = 1 << 20  # rows x trees per block, to stay in cache

    def __init__(self, dtype: Any, features: list[tuple[int, np.ndarray, np.ndarray]], values: np.ndarray, trees: int, width: int):
        self.dtype = dtype
        self.all_leaves = np.array(np.iinfo(dtype).max, dtype=dtype)
        self.features = features  # (column, sorted thresholds, prefix ANDs of shape (splits + 1, trees))
        self.values = values.ravel()  # (trees, widest tree's leaves), flattened
        self.offsets = np.arange(trees, dtype=np.intp) * width

    @classmethod
    def build(cls, trees: list[dict[str, np.ndarray]]) -> "BitvectorForest | None":
        """None where a tree has more than 64 leaves or the tables would be too large."""
        layouts = [_leaf_layout(tree) for tree in trees]
        widest = max(len(leaves) for leaves, _ in layouts)
        if widest > 64:
            return None
        dtype = next(d for d in (np.uint16, np.uint32, np.uint64) if widest <= np.iinfo(d).bits)
        splits: dict[int, list[tuple[float, int, int]]] = {}
        for index, (tree, (_, removed)) in enumerate(zip(trees, layouts)):
            for node, mask in removed.items():
                splits.setdefault(int(tree["feature"][node]), []).append((float(tree["threshold"][node]), index, mask))
        cells = sum(len(v) + 1 for v in splits.values()) * len(trees)
        if cells * np.dtype(dtype).itemsize > cls.MAX_TABLE_BYTES:
            return None
        ones = int(np.iinfo(dtype).max)
        features = []
        for column, entries in sorted(splits.items()):
            entries.sort(key=lambda e: e[0])
            table = np.full((len(entries) + 1, len(trees)), ones, dtype=dtype)
            for row, (_, index, mask) in enumerate(entries, start=1):
                table[row, index] = ones & ~mask
            features.append((column, np.array([e[0] for e in entries]), np.bitwise_and.accumulate(table, axis=0)))
        values = np.zeros((len(trees), widest))
        for index, (leaves, _) in enumerate(layouts):
            values[index, : len(leaves)] = [float(trees[index]["value"][leaf]) for leaf in leaves]
        return cls(dtype, features, values, len(trees), widest)

    def leaf_values(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, trees) leaf values; ``matrix`` must hold no NaN (the caller walks those instead)."""
        chunk = max(1, self.CHUNK_CELLS // len(self.offsets))
        if matrix.shape[0] <= chunk:
            return self._block(matrix)
        return np.concatenate([self._block(matrix[start : start + chunk]) for start in range(0, matrix.shape[0], chunk)])

    def _block(self, matrix: np.ndarray) -> np.ndarray:
        alive = np.broadcast_to(self.all_leaves, (matrix.shape[0], len(self.offsets)))
        for column, thresholds, prefixes in self.features:
            alive = alive & prefixes[np.searchsorted(thresholds, matrix[:, column], side="left")]
        lowest = alive & (~alive + self.dtype(1))  # the lowest bit still set: the exit leaf
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1
        return self.values[self.offsets + leaf]


def _leaf_layout(tree: dict[str, np.ndarray]) -> tuple[list[int], dict[int, int]]:
    """A tree's leaves left to right, and per split node the bitmask of its left subtree's leaves."""
    left, right = tree["left"], tree["right"]
    leaves: list[int] = []
    removed: dict[int, int] = {}
    stack: list[tuple[int, bool]] = [(0, False)]
    first_leaf: dict[int, int] = {}
    while stack:  # iterative in-order walk: (node, left subtree done?)
        node, left_done = stack.pop()
        if left[node] < 0:
            leaves.append(node)
        elif not left_done:
            first_leaf[node] = len(leaves)
            stack.append((node, True))
            stack.append((int(left[node]), False))
        else:
            start, stop = first_leaf[node], len(leaves)
            removed[node] = ((1 << stop) - 1) ^ ((1 << start) - 1)
            stack.append((int(right[node]), False))
    return leaves, removed


def _hist_gradient_boosting(classifier: Any) -> Callable[[np.ndarray, bool], np.ndarray]:
    if classifier.n_trees_per_iteration_ != 1 or type(classifier._loss).__name__ != "HalfBinomialLoss":
        raise UnsupportedModel("gradient boosting is not binary log-loss")
    if getattr(classifier, "is_categorical_", None) is not None and np.any(classifier.is_categorical_):
        raise UnsupportedModel("gradient boosting uses native categorical splits")
    trees = []
    for (predictor,) in classifier._predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise UnsupportedModel("a tree has a categorical split")
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "feature": nodes["feature_idx"],
                "threshold": nodes["num_threshold"],
                "left": np.where(leaf, -1, nodes["left"].astype(np.int64)),
                "right": np.where(leaf, -1, nodes["right"].astype(np.int64)),
                "missing_left": nodes["missing_go_to_left"],
                "value": nodes["value"],
                "depth": int(nodes["depth"].max()),
            }
        )
    if not trees:
        raise UnsupportedModel("gradient boosting has no trees")
    ensemble = TreeEnsemble.pack(trees, classifier.n_features_in_)
    bitvectors = BitvectorForest.build(trees)
    baseline = float(np.asarray(classifier._baseline_prediction).ravel()[0])

    def classify(matrix: np.ndarray, small: bool) -> np.ndarray:
        if bitvectors is not None and not np.isnan(matrix).any():
            return expit(baseline + bitvectors.leaf_values(matrix).sum(axis=1))
        if not small:  # scikit-learn's Cython walk, on the compiled features: exact and faster for many rows
            return classifier.predict_proba(matrix)[:, 1]
        return expit(baseline + ensemble.leaf_values(matrix).sum(axis=1))

    return classify


def _random_forest(classifier: Any) -> Callable[[np.ndarray, bool], np.ndarray]:
    if classifier.n_outputs_ != 1 or int(classifier.n_classes_) != 2:
        raise UnsupportedModel("the random forest is not a binary single-output classifier")
    trees = []
    for estimator in classifier.estimators_:
        tree = estimator.tree_
        trees.append(
            {
                "feature": tree.feature,
                "threshold": tree.threshold,
                "left": tree.children_left,
                "right": tree.children_right,
                "missing_left": getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=np.uint8)),
                "value": tree.value[:, 0, 1],  # class fractions per leaf (scikit-learn >= 1.4)
                "depth": tree.max_depth,
            }
        )
    ensemble = TreeEnsemble.pack(trees, classifier.n_features_in_)
    count = len(trees)

    def classify(matrix: np.ndarray, small: bool) -> np.ndarray:
        if not small:
            return classifier.predict_proba(matrix)[:, 1]
        # Trees compare float32 features with float64 thresholds, as scikit-learn does.
        as_float32 = matrix.astype(np.float32).astype(np.float64)
        return ensemble.leaf_values(as_float32).sum(axis=1) / count

    return classify
