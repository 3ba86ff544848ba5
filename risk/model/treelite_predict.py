"""A fitted tree ensemble scored by Treelite's GTIL through its C API, for a few rows at a time.

``treelite.gtil.predict`` spends about ten times the trees' own work on Python: each call parses
a JSON config into a new C++ object, queries the model's types and output shape through ctypes
and wraps every pointer anew (measured: 130 us against 14 us of GTIL for a 45-tree gradient
boosting on one row). ``TreelitePredictor`` does all of that once, when the model is loaded, and
then makes one C call per batch: the same function (``TreeliteGTILPredict``), the same model and
config, so the same probabilities, bit for bit.

The C call reads ``rows x num_feature`` doubles and writes ``rows x outputs`` doubles through raw
pointers, so both arrays are checked (C order, float64, their shapes) before every call.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np
import treelite.core
import treelite.gtil.gtil
import treelite.sklearn

FLOAT64 = "float64"


class TreeliteUnsupported(TypeError):
    """The imported model does not take or give float64 (the only types this caller passes)."""


@functools.cache
def _library() -> ctypes.CDLL:
    """Treelite's own shared library under a second handle, so that typing its functions here
    never changes how treelite's Python package calls them."""
    library = ctypes.cdll.LoadLibrary(treelite.core._LIB._name)
    library.TreeliteGTILPredict.argtypes = [
        ctypes.c_void_p,  # model handle
        ctypes.c_void_p,  # input rows, C order
        ctypes.c_char_p,  # the input's type name
        ctypes.c_uint64,  # rows
        ctypes.c_void_p,  # output, C order
        ctypes.c_void_p,  # config handle
    ]
    library.TreeliteGTILPredict.restype = ctypes.c_int
    library.TreeliteGetLastError.restype = ctypes.c_char_p
    return library


class TreelitePredictor:
    """The positive class's score of a binary scikit-learn tree ensemble, by GTIL (one thread)."""

    def __init__(self, classifier: Any):
        self.model = treelite.sklearn.import_model(classifier)  # owns the model handle: kept alive here
        if self.model.input_type != FLOAT64 or self.model.output_type != FLOAT64:
            raise TreeliteUnsupported(f"Treelite imported a {self.model.input_type} model, not a float64 one")
        self.config = treelite.gtil.gtil.GTILConfig(nthread=1, predict_type="default")  # owns the config handle
        self.features = int(self.model.num_feature)
        # (rows, targets, classes): one score for boosting, one per class for a forest (the last is the positive)
        self.outputs = int(
            np.prod(treelite.gtil.predict(self.model, np.zeros((1, self.features)), nthread=1).shape[1:])
        )
        self._model_handle = self.model.handle.value
        self._config_handle = self.config.handle.value
        self._predict = _library().TreeliteGTILPredict

    def positive(self, features: np.ndarray) -> np.ndarray:
        """The positive class's score per row of ``features`` (rows x num_feature, float64)."""
        features = np.ascontiguousarray(features, dtype=np.float64)  # no copy when it is already so
        if features.ndim != 2 or features.shape[1] != self.features:
            raise ValueError(f"GTIL needs rows of {self.features} features, not an array of shape {features.shape}")
        rows = features.shape[0]
        out = np.empty((rows, self.outputs), dtype=np.float64)
        status = self._predict(
            self._model_handle, features.ctypes.data, b"float64", rows, out.ctypes.data, self._config_handle
        )
        if status != 0:
            raise treelite.core.TreeliteError(_library().TreeliteGetLastError().decode("utf-8", "replace"))
        return out[:, -1]
