"""Model files: skops (trusted types only) against the pickles it replaced, per candidate kind.

For a model of each candidate kind (and their soft-voting blend) fitted on the sample data's
7,500 training rows, as training builds it (inside FixedThresholdClassifier): the file's size
and the time modelfiles.read_model takes to load it (hash check included; median of
``--repeat``), skops as a ratio to pickle in the same run; and whether the loaded model's
``predict_proba`` equals the fitted one bit for bit. Usage:
``python benchmarks/bench_modelfiles.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import benchsupport
import numpy as np

from risk.core import artefacts
from risk.core.settings import load_config
from risk.data import ingest, masterstore, sample
from risk.model import modelfiles, pipelines
from risk.model.scoring import binary_target, feature_frame


def fitted_models(folder: Path) -> tuple[dict[str, Any], object]:
    """A model of every candidate kind and the blend, fitted on the ingested sample data."""
    (folder / "config.json").write_text(
        '{"target": "exited", "positive_label": 1, "id_columns": ["corporation"], "settle_seconds": 0}'
    )
    config = load_config(folder / "config.json")
    sample.write_sample_data(config)
    ingest.ingest_new_files(config)
    data = masterstore.load_master(config)
    features = pipelines.feature_types(config, masterstore.column_kinds(config))
    X, y = feature_frame(data, features), binary_target(data[config.target], config.positive_label)
    models = benchsupport.every_kind(features, X, y)
    return models, X


def load_seconds(path: Path, repeat: int) -> float:
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        modelfiles.read_model(path, expected)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args, _ = parser.parse_known_args(argv)
    print("model files: skops (trusted types) against pickle, same run")
    print(
        f"{'model':<24} {'skops MB':>9} {'pickle MB':>10} {'size x':>7} {'skops load ms':>14} {'pickle load ms':>15} {'load x':>7}  round trip"
    )
    with tempfile.TemporaryDirectory() as tmp:
        models, X = fitted_models(Path(tmp))
        for name, model in models.items():
            skops_file, pickle_file = (
                Path(tmp) / name / artefacts.SKOPS_MODEL_FILE,
                Path(tmp) / name / artefacts.MODEL_FILE,
            )
            skops_file.parent.mkdir()
            skops_file.write_bytes(modelfiles.model_bytes(model))
            pickle_file.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
            same = np.array_equal(modelfiles.read_model(skops_file, None).predict_proba(X), model.predict_proba(X))
            sizes = [p.stat().st_size / 1e6 for p in (skops_file, pickle_file)]
            loads = [load_seconds(p, args.repeat) * 1000 for p in (skops_file, pickle_file)]
            print(
                f"{name:<24} {sizes[0]:>9.2f} {sizes[1]:>10.2f} {sizes[0] / sizes[1]:>7.2f} {loads[0]:>14.1f} {loads[1]:>15.1f} "
                f"{loads[0] / loads[1]:>7.1f}  {'exact' if same else 'DIFFERS'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
