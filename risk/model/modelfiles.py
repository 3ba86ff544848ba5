"""How a model is written to a file and read back: skops with an explicit list of trusted types.

A pickle runs whatever code its bytes name when it is loaded, so a model file that passes its
SHA-256 but was written by a compromised run could run code in the API. New models are saved
with skops (``skops.io``), whose loader reads a description of the objects and constructs only
types on a list: everything outside ``TRUSTED_TYPES`` (and skops' own defaults: scikit-learn
estimators, numpy arrays, builtins) is refused before anything is constructed. Models pickled by
earlier versions of this system stay loadable, checked against their hash first.

Every model is loaded through ``read_model``; every failure to load is a ``ModelFileError``.
Stdlib only at import (the cron fast path imports deployment, which imports this): skops,
pickle and hashlib are imported where they are used.
"""

from __future__ import annotations

from pathlib import Path

from risk.core.artefacts import MODEL_FILE, SKOPS_MODEL_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from collections.abc import Iterable
    from typing import Any

SKOPS = "skops"
PICKLE = "pickle"
FORMATS = {SKOPS_MODEL_FILE: SKOPS, MODEL_FILE: PICKLE}

# What our models hold beyond skops' defaults (found with skops.io.get_untrusted_types on a model
# of every candidate kind; tests/model/test_modelfiles.py fails when a library upgrade adds
# another). The two tree types are not trusted by default because scikit-learn follows their
# node links without bounds checks: a crafted file could make a prediction read outside them,
# though it cannot name code to run. tree_problem checks every link and feature number on load.
TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",  # random forest
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # HistGradientBoosting
    "risk.model.pipelines.SoftVotingBlend",  # the soft-voting blend of the candidates
)
# Our classes as files written before they moved name them: old "module.Class" -> where it lives now.
# Such a file is read as if it named the new place, so versions deployed before the move still load.
MOVED_TYPES = {
    "training.SoftVotingBlend": "risk.model.pipelines.SoftVotingBlend",  # before the risk package
    "risk.model.training.SoftVotingBlend": "risk.model.pipelines.SoftVotingBlend",  # before training.py was split
}


class ModelFileError(ValueError):
    """A model file does not match its checksum, holds types outside the trusted list, or does not
    load with the installed libraries; the message names the file and says which."""


def model_file_name(names: Iterable[str]) -> str | None:
    """Which of ``names`` (a folder's or a manifest's files) is the model file: skops before pickle."""
    present = set(names)
    return next((name for name in FORMATS if name in present), None)


def model_path(folder: Path) -> Path:
    """The model file in ``folder``: the skops file, or an earlier version's pickle when only that is there."""
    skops_file, pickle_file = folder / SKOPS_MODEL_FILE, folder / MODEL_FILE
    return pickle_file if pickle_file.exists() and not skops_file.exists() else skops_file


def model_format(name: str | None) -> str | None:
    """ "skops" or "pickle" for a model file name, None for anything else."""
    return FORMATS.get(name) if name else None


def import_skops_in_background() -> None:
    """Start importing skops in a thread. Its import takes about 0.6 s (it lists every
    scikit-learn estimator to build its trusted types); training overlaps that with its
    last fits, which leave a core idle, instead of adding it before the model is written."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("skops.io",), name="import-skops", daemon=True).start()


def model_bytes(model: Any) -> bytes:
    """``model`` as a skops file (deflated), refused if it holds a type this system would not load back."""
    import zipfile

    import skops.io

    data = skops.io.dumps(model, compression=zipfile.ZIP_DEFLATED)
    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelFileError(
            f"the model holds types outside modelfiles.TRUSTED_TYPES: {untrusted}; a file holding them would be refused "
            "when loaded. Review them (a library upgrade may have added one) before adding them to the list"
        )
    return data


def read_model(path: Path, sha256: str | None) -> Any:
    """The model in ``path`` (skops or, for older versions, pickle), loaded from the very bytes whose
    SHA-256 was checked against ``sha256``, so the file cannot change in between (None: not checked)."""
    import hashlib

    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise ModelFileError(
            f"{path} is not the file that was recorded: sha256 {actual[:12]}… is not {sha256[:12]}… (changed since)"
        )
    kind = model_format(path.name)
    if kind == SKOPS:
        return _load_skops(path, data)
    if kind == PICKLE:
        return _load_pickle(path, data)
    raise ModelFileError(f"{path} is not a model file ({' or '.join(FORMATS)})")


def _load_skops(path: Path, data: bytes) -> Any:
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        # The types are audited before anything in the file is constructed or imported.
        model = skops.io.loads(_with_moved_types(data), trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise ModelFileError(
            f"{path} holds types outside the trusted list (skops' defaults and modelfiles.TRUSTED_TYPES), so it was "
            f"not loaded and nothing in it ran; this system never writes them: retrain, or roll back. {exc}"
        ) from None
    except Exception as exc:  # a damaged archive, a schema this skops cannot read: the file is unusable
        raise ModelFileError(
            f"{path} cannot be loaded with skops {_version('skops')}: {type(exc).__name__}: {exc}"
        ) from exc
    problem = tree_problem(model)
    if problem:
        raise ModelFileError(
            f"{path} holds {problem}: refused, as scikit-learn would follow its nodes without bounds checks"
        )
    return model


def tree_problem(model: Any) -> str | None:
    """What is wrong with the trees in ``model``, or None: a node link or feature number outside its
    arrays, or a link back up the tree. The two tree types are trusted (TRUSTED_TYPES), but
    scikit-learn follows their nodes unchecked, so a crafted file could make a prediction read
    outside them or never end. Nodes are stored parent first: a child always has a higher number.

    A feature number is checked against the feature count of every model that holds the tree,
    the count scikit-learn checks the rows against, never against the tree's own claim. A tree
    (``Tree``) must sit in a random forest's decision tree, as this system writes them: other
    holders (gradient boosting's array of trees, say) hand it rows or outputs unchecked."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import Tree

    found = list(_reachable(model))
    holders = _holders(found, "tree_")  # id(Tree) -> the estimators whose tree_ it is
    forests = _holders(found, "estimators_")  # id(estimator) -> the ensembles listing it
    boosters = _holders(found, "_predictors")  # id(TreePredictor) -> the models listing it
    for obj in found:
        if isinstance(obj, Tree):
            owners = holders.get(id(obj), [])
            ensembles = [ensemble for owner in owners for ensemble in forests.get(id(owner), [])]
            if (
                not ensembles
                or any(type(o) is not DecisionTreeClassifier for o in owners)
                or any(type(e) is not RandomForestClassifier for e in ensembles)
            ):
                return "a decision tree outside a random forest's trees, whose features cannot be checked"
            features = _feature_count([*owners, *ensembles])
            if features is None:
                return "a decision tree in a model that does not record its feature count"
            problem = _node_problem(
                obj.children_left,
                obj.children_right,
                obj.children_left == -1,
                obj.feature,
                min(features, obj.n_features),
            )
            if problem:
                return f"a decision tree with {problem}"
        elif isinstance(obj, TreePredictor):
            owners = boosters.get(id(obj), [])
            features = _feature_count(owners) if owners else None
            if features is None:
                return "a boosted tree outside a HistGradientBoosting model that records its feature count, whose features cannot be checked"
            if any(vars(owner).get("_preprocessor") is not None for owner in owners):
                # Its own encoder (for categorical features) decides how many columns the trees see, unchecked.
                return "a boosted tree behind the model's own categorical encoder (this system never makes one; not checked)"
            nodes = obj.nodes
            if nodes["is_categorical"].any():
                return "a boosted tree with a categorical split (this system never makes one; not checked)"
            problem = _node_problem(
                nodes["left"], nodes["right"], nodes["is_leaf"] != 0, nodes["feature_idx"], features
            )
            if problem:
                return f"a boosted tree with {problem}"
    return None


def _holders(found: list[Any], attribute: str) -> dict[int, list[Any]]:
    """id(member) -> every object in ``found`` whose ``attribute`` is, or lists, that member."""
    holders: dict[int, list[Any]] = {}
    for obj in found:
        value = vars(obj).get(attribute) if hasattr(obj, "__dict__") and not isinstance(obj, type) else None
        if value is not None:
            for member in _members(value):
                holders.setdefault(id(member), []).append(obj)
    return holders


def _members(value: Any) -> list[Any]:
    """``value`` itself, or what it lists: lists, tuples and object arrays, nested (without recursion)."""
    import numpy as np

    members, stack, seen = [], [value], {}  # seen holds what it names, so that no id is reused meanwhile
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray) and item.dtype == object:
            item = item.ravel().tolist()
        if isinstance(item, (list, tuple)):
            if id(item) not in seen:
                seen[id(item)] = item
                stack.extend(reversed(item))
        else:
            members.append(item)
    return members


def _feature_count(models: list[Any]) -> int | None:
    """The fewest features any of ``models`` takes (``n_features_in_``); None if one does not record it."""
    import numpy as np

    counts = [vars(m).get("n_features_in_") if hasattr(m, "__dict__") else None for m in models]
    if any(not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 0 for c in counts):
        return None
    return int(min(counts))


def _node_problem(left: Any, right: Any, leaf: Any, feature: Any, features: int) -> str | None:
    import numpy as np

    count = len(left)
    if count == 0 or not len(right) == len(leaf) == len(feature) == count:
        return f"node arrays of different lengths ({count}, {len(right)}, {len(leaf)}, {len(feature)})"
    inner = np.flatnonzero(~np.asarray(leaf, dtype=bool))
    for name, child in (("left", left), ("right", right)):
        links = np.asarray(child)[inner].astype(np.int64)
        if ((links <= inner) | (links >= count)).any():
            return f"a {name} child link outside 1..{count - 1} or back up the tree"
    used = np.asarray(feature)[inner].astype(np.int64)
    if ((used < 0) | (used >= features)).any():
        return f"a split on a feature outside 0..{features - 1}"
    return None


def _reachable(root: Any) -> Iterable[Any]:
    """Every object reachable from ``root`` through attributes, lists, tuples, sets, dicts and object
    arrays (arrays of numbers not entered)."""
    import numpy as np

    seen, stack = set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:  # gradient boosting keeps its trees in one
                stack.extend(obj.ravel().tolist())
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())


def _with_moved_types(data: bytes) -> bytes:
    """The skops archive ``data`` with the classes of MOVED_TYPES named where they live now."""
    import io
    import json
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = archive.read("schema.json")
            if not any(f'"{old.rsplit(".", 1)[0]}"'.encode() in schema for old in MOVED_TYPES):
                return data
            renamed = json.dumps(_renamed_types(json.loads(schema))).encode()
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as copy:
                for item in archive.infolist():
                    copy.writestr(item, renamed if item.filename == "schema.json" else archive.read(item))
    except (zipfile.BadZipFile, KeyError, ValueError):
        return data  # not a readable archive: skops says why
    return out.getvalue()


def _renamed_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_renamed_types(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _renamed_types(value) for key, value in node.items()}
    moved = MOVED_TYPES.get(f"{node.get('__module__')}.{node.get('__class__')}")
    if moved:
        node["__module__"] = moved.rsplit(".", 1)[0]
    return node


def _unpickle(data: bytes) -> Any:
    """pickle.loads, with the classes of MOVED_TYPES looked up where they live now."""
    import io
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            moved = MOVED_TYPES.get(f"{module}.{name}")
            if moved:
                module, _, name = moved.rpartition(".")
            return super().find_class(module, name)

    return Unpickler(io.BytesIO(data)).load()


def _load_pickle(path: Path, data: bytes) -> Any:
    try:
        return _unpickle(data)
    except Exception as exc:  # unpickling can raise almost anything (ImportError, AttributeError, EOFError...)
        raise ModelFileError(
            f"{path} (a pickle) cannot be loaded with the installed libraries: {type(exc).__name__}: {exc}"
        ) from exc


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"
