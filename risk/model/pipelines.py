"""The candidate models: their features, preprocessing and classifiers, and the blend of them.

Every candidate is one ``Pipeline``: median imputation (with missing-value indicators) and
scaling for numeric features, imputation and one-hot encoding (``handle_unknown="ignore"``)
for categorical ones, then the classifier. Each model has a small fixed set of
hyper-parameter settings (``SEARCH_SPACE``); training.py tries them. ``SoftVotingBlend`` (the
averaged probabilities of fitted pipelines) is saved inside model files under this module's
name (modelfiles.TRUSTED_TYPES).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from risk.core.settings import Config, ConfigError
from risk.core.tables import NUMERIC, TEXT

BLEND = "soft_voting_blend"  # the blend's candidate name

# A handful of settings per model; the first of each is the one kept when they tie.
SEARCH_SPACE: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": 1.0}, {"C": 0.1}],
    "hist_gradient_boosting": [
        {"learning_rate": 0.1, "max_leaf_nodes": 15, "l2_regularization": 1.0},
        {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 40},
    ],
    "random_forest": [
        {"min_samples_leaf": 2, "max_features": "sqrt"},
        {"min_samples_leaf": 8, "max_features": "sqrt"},
    ],
}
# How complex each candidate kind is (higher: more), for the one-standard-error rule of selection.py: the
# simplest candidate within one standard error of the best is chosen. The order is by the size of what the
# fitted model holds, with this module's settings. A logistic regression is one weight per encoded column.
# Boosting stops early and its trees have at most 15-31 leaves; the forest's 100 trees grow to leaves of 2-8
# rows on up to 2,000 rows each. On the sample data: boosting 45-65 trees, 1,000-1,400 leaves; the forest
# 11,000-31,000 leaves, and it serves slower (issue 20: 158-481 us a row against boosting's 103-277). The blend
# holds each of its members, so it is more complex than every one of them.
COMPLEXITY: dict[str, int] = {"logistic_regression": 1, "hist_gradient_boosting": 2, "random_forest": 3, BLEND: 4}
FOREST_TREES = 100
FOREST_ROWS_PER_TREE = 2000  # each tree sees at most this many rows: a forest costs about what boosting does
EARLY_STOPPING_MIN_ROWS = 2000  # below this a 10% validation split is too small to stop on
# Boosting's early-stopping rows: its own default, set from here so that fitting._validation_last draws the same share.
VALIDATION_FRACTION = 0.1


class TrainingError(ValueError):
    """The data cannot be trained on; the message says why."""


def feature_types(config: Config, kinds: dict[str, str]) -> dict[str, list[str]]:
    """Numeric and categorical feature columns: every column but target, ids and drops."""
    excluded = {config.target, *config.excluded_columns}
    if config["exclude_protected_from_features"]:
        excluded.update(config["protected_attributes"])  # the fairness checks still read them from the test data
    forced = set(config["categorical_columns"] or [])
    features = [c for c in kinds if c not in excluded]
    if not features:
        raise TrainingError("no feature columns left after removing target, id_columns and drop_columns")
    return {
        "numeric": [c for c in features if kinds[c] == NUMERIC and c not in forced],
        "categorical": [c for c in features if kinds[c] == TEXT or c in forced],
    }


def build_preprocess(features: dict[str, list[str]]) -> ColumnTransformer:
    """Median imputation (with missing-value indicators) and scaling for numeric features,
    imputation and one-hot encoding for categorical ones."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="ignore", max_categories=50, sparse_output=False)),
        ]
    )
    transformers = []
    if features["numeric"]:
        transformers.append(("numeric", numeric, features["numeric"]))
    if features["categorical"]:
        transformers.append(("categorical", categorical, features["categorical"]))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def build_pipeline(
    name: str, features: dict[str, list[str]], seed: int, params: dict[str, Any] | None = None, rows: int = 0
) -> Pipeline:
    """The preprocessing and classifier ``name`` with ``params`` (default: its first setting),
    sized for ``rows`` training rows."""
    if name not in SEARCH_SPACE:
        raise ConfigError(f"candidate_models: unknown model {name!r}")
    classifier = build_classifier(name, seed, SEARCH_SPACE[name][0] if params is None else params, rows)
    return Pipeline([("preprocess", build_preprocess(features)), ("classifier", classifier)])


def build_classifier(name: str, seed: int, params: dict[str, Any], rows: int) -> Any:
    """The classifier ``name`` with ``params``, sized for ``rows`` training rows."""
    if name == "logistic_regression":
        return LogisticRegression(max_iter=2000, **params)
    if name == "hist_gradient_boosting":
        # Early stopping on a 10% validation split: as many trees as help, no more.
        stop = rows >= EARLY_STOPPING_MIN_ROWS
        return HistGradientBoostingClassifier(
            max_iter=300,
            early_stopping=stop,
            validation_fraction=VALIDATION_FRACTION,
            n_iter_no_change=10,
            random_state=seed,
            **params,
        )
    if name == "random_forest":
        # Fewer trees on capped row samples: the forest's cross-validation took 35.8 s of 45.9 s.
        share = min(1.0, FOREST_ROWS_PER_TREE / rows) if rows else 1.0
        return RandomForestClassifier(
            n_estimators=FOREST_TREES, max_samples=share if share < 1.0 else None, n_jobs=1, random_state=seed, **params
        )
    raise ConfigError(f"candidate_models: unknown model {name!r}")


class SoftVotingBlend(ClassifierMixin, BaseEstimator):
    """The average of fitted pipelines' probabilities (soft voting)."""

    def __init__(self, estimators: list[tuple[str, Pipeline]]):
        self.estimators = estimators

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SoftVotingBlend:
        for _, estimator in self.estimators:
            estimator.fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean([estimator.predict_proba(X) for _, estimator in self.estimators], axis=0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
