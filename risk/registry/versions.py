"""The deployed versions as every reader sees them: find, verify, load, list; never write.

``deployment.py`` writes versions (deploy, approve, reject, rollback, activate) and is the
command operators run; the API, diagnostics, reporting, ingestion and the cron entry read
versions through this module, so none of them imports the step that writes them.

Stdlib only at import (modelfiles imports skops when a model is loaded): fullprocess's cron
fast path asks ``current_version`` on every tick.
"""

from __future__ import annotations

import os
from pathlib import Path

from risk.core import logbook
from risk.core.artefacts import CURRENT_LINK, MANIFEST_FILE, METADATA_FILE, SCORES_FILE, VERSIONS_FOLDER
from risk.core.files import sha256_file
from risk.core.jsonfiles import read_json, read_json_object
from risk.core.settings import Config
from risk.data import ledger
from risk.model import modelfiles

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any


class DeploymentError(RuntimeError):
    """A deployment is missing, incomplete or fails verification; the message says which."""


class BrokenCurrentLink(DeploymentError):
    """``current`` exists but is not a link to a version (a directory or a regular file)."""


# "This version cannot be used", one definition for every caller (the API, fullprocess, rollback):
# its files fail verification or cannot be read (DeploymentError, OSError), its model file does
# not load (modelfiles.ModelFileError), its JSON is damaged (ValueError), or, in the API, what it
# holds does not compile into a scorer (a metadata field missing, a library that changed).
LOAD_ERRORS = (
    DeploymentError,
    modelfiles.ModelFileError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    ImportError,
)


REQUIRED_FILES = (METADATA_FILE, SCORES_FILE)  # and a model file (modelfiles.FORMATS)


class DeployedModel:
    """A loaded, verified deployment version."""

    __slots__ = ("version", "path", "model", "metadata", "scores", "manifest")

    def __init__(self, version: str, path: Path, model: Any, metadata: dict, scores: dict, manifest: dict):
        self.version, self.path, self.model = version, path, model
        self.metadata, self.scores, self.manifest = metadata, scores, manifest

    def __repr__(self) -> str:
        return f"DeployedModel({self.version!r}, {self.metadata.get('model')!r})"

    @property
    def model_file(self) -> str | None:
        """The name of the version's model file (skops, or pickle for older versions)."""
        return modelfiles.model_file_name(self.manifest["files"])

    @property
    def model_sha256(self) -> str | None:
        return self.manifest["files"].get(self.model_file)


def versions_folder(config: Config) -> Path:
    return config.deployment_folder / VERSIONS_FOLDER


def version_number(name: str) -> int:
    """``"v12"`` -> 12; anything else -> -1."""
    return int(name[1:]) if name.startswith("v") and name[1:].isdigit() else -1


def version_names(config: Config) -> list[str]:
    """Complete versions (those with a manifest), oldest first."""
    folder = versions_folder(config)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if version_number(p.name) > 0 and (p / MANIFEST_FILE).is_file()]
    return sorted(names, key=version_number)


def current_version(config: Config) -> str | None:
    """The current version's name, from one readlink: cheap enough to call per request.

    None when nothing is deployed; BrokenCurrentLink when ``current`` is not a link, which
    counts as a version that fails verification (a deploy or a rollback replaces it).
    """
    link = config.deployment_folder / CURRENT_LINK
    try:
        return Path(os.readlink(link)).name
    except FileNotFoundError:
        return None
    except OSError as exc:
        kind = "a directory" if link.is_dir() else "a regular file" if link.is_file() else "not a symbolic link"
        raise BrokenCurrentLink(
            f"{link} is {kind}, not a link to a version: it fails verification "
            "(the next fullprocess run redeploys; deployment.py --rollback or --activate vN replaces it now)"
        ) from exc


def current_version_or_none(config: Config) -> str | None:
    """The current version, None when nothing usable is deployed (missing or broken link)."""
    try:
        return current_version(config)
    except BrokenCurrentLink:
        return None


def version_path(config: Config, version: str | None = None) -> Path:
    """The folder of ``version`` (default: the current one)."""
    version = version or current_version(config)
    if version is None:
        raise DeploymentError(f"no model is deployed in {config.deployment_folder}")
    path = versions_folder(config) / version
    if version_number(version) <= 0 or not (path / MANIFEST_FILE).is_file():
        raise DeploymentError(f"deployment version {version!r} does not exist in {versions_folder(config)}")
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """A version's manifest; DeploymentError if it is not a JSON object listing files."""
    try:
        manifest = read_json(path / MANIFEST_FILE)
    except ValueError as exc:
        raise DeploymentError(
            f"{path / MANIFEST_FILE} is not valid JSON ({exc}): the version cannot be verified"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise DeploymentError(
            f'{path / MANIFEST_FILE} is not a version manifest (a JSON object with "files"): the version cannot be verified'
        )
    return manifest


def verify_version(path: Path) -> dict[str, Any]:
    """Check every file of a version against its manifest. Returns the manifest."""
    manifest = read_manifest(path)
    unlisted = [name for name in REQUIRED_FILES if name not in manifest.get("files", {})]
    if modelfiles.model_file_name(manifest.get("files", {})) is None:
        unlisted.insert(0, " or ".join(modelfiles.FORMATS))
    if unlisted:
        raise DeploymentError(f"{path / MANIFEST_FILE} does not list {unlisted}: the version cannot be verified")
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise DeploymentError(f"{file} is listed in the manifest but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise DeploymentError(
                f"{file} fails verification: sha256 {actual[:12]}… is not the manifest's {expected[:12]}…"
            )
    return manifest


def load_deployed_model(config: Config, version: str | None = None) -> DeployedModel:
    """Load a deployed version (default: current), verified before its model file is loaded."""
    # Resolve the link once, so every file below comes from the same version.
    path = version_path(config, version)
    manifest = verify_version(path)
    name = modelfiles.model_file_name(manifest["files"])
    model = modelfiles.read_model(path / name, manifest["files"][name])
    return DeployedModel(
        version=path.name,
        path=path,
        model=model,
        metadata=read_json(path / METADATA_FILE),
        scores=read_json(path / SCORES_FILE),
        manifest=manifest,
    )


APPROVAL_ACTIONS = ("approve", "reject", "supersede")


def approval_states(config: Config) -> dict[str, dict[str, Any]]:
    """Each version's last approval event: {"state": pending | approved | rejected | superseded | deployed, ...}.

    From the history; a version whose deploy line a killed run never wrote is read from its manifest.
    """
    states: dict[str, dict[str, Any]] = {}
    for line in logbook.read_history(config):
        version, action = line.get("version"), line.get("action")
        if action == "deploy":
            states[version] = {"state": "pending" if line.get("pending_approval") else "deployed", "at": line.get("at")}
        elif action in APPROVAL_ACTIONS:
            states[version] = {
                "state": {"approve": "approved", "reject": "rejected", "supersede": "superseded"}[action],
                "at": line.get("at"),
                "by": line.get("by"),
                "note": line.get("note"),
            }
    for name in version_names(config):
        if name not in states:
            pending = _object_even_unreadable(versions_folder(config) / name / MANIFEST_FILE).get("pending_approval")
            states[name] = {"state": "pending" if pending else "deployed", "at": None}
    return states


def superseded_by(config: Config, version: str) -> list[str]:
    """The pending versions that the deployment of ``version`` superseded."""
    return [
        h["version"]
        for h in logbook.read_history(config)
        if h.get("action") == "supersede" and h.get("superseded_by") == version
    ]


def pending_versions(config: Config) -> list[str]:
    """Versions deployed pending approval and neither approved, rejected nor superseded, oldest first."""
    states = approval_states(config)
    return [name for name in version_names(config) if states.get(name, {}).get("state") == "pending"]


def version_warnings(metadata: dict[str, Any], scores: dict[str, Any]) -> list[str]:
    """What an operator must know about a model: its training's and its scoring's warnings."""
    found = [str(w) for w in [*(metadata.get("warnings") or []), *(scores.get("warnings") or [])]]
    if metadata.get("uninformative") and not any("no better than chance" in w for w in found):
        found.insert(0, 'the model is no better than chance: no candidate beat chance and the rule "flag everyone"')
    return list(dict.fromkeys(found))


def _trained_master_bytes(config: Config, metadata: dict[str, Any]) -> int | None:
    """The master's size when the model saw all of it (same row count), else None."""
    try:
        state = ledger.master_state(config)
    except ValueError:  # damaged: ingestion remakes it
        return None
    if state is None:
        return None
    return state["bytes"] if state.get("rows") == metadata.get("training_rows") and "bytes" in state else None


def covered_master_bytes(config: Config) -> int:
    """How much of the master dataset the newest deployed version was trained on (0: unknown).

    Rows up to there were decided by that deployment: a run never judges them again, even when
    the run that deployed it was killed before recording its decision.
    """
    void_through = _versions_before_rebuild(config)
    for name in reversed(version_names(config)):
        if version_number(name) <= void_through:
            break  # their sizes are of a master since rebuilt: they cover nothing in it
        try:
            covered = read_manifest(versions_folder(config) / name).get("master_bytes")
        except (DeploymentError, OSError):
            continue
        if isinstance(covered, int):
            return covered
    return 0


def judged_offset(config: Config) -> int:
    """Where the rows not yet judged start: after the last decision, or after the rows the
    newest deployed version was trained on (a run killed before recording its decision)."""
    return max(logbook.read_checkpoint(config)[0], covered_master_bytes(config))


def _versions_before_rebuild(config: Config) -> int:
    """The number of the newest version deployed before the master was last rebuilt (0: none);
    ``ingestion.py --rebuild`` records it in the drift checkpoint."""
    name = logbook.read_checkpoint_state(config).get("rebuilt_after_version")
    return version_number(name) if isinstance(name, str) else 0


def list_versions(config: Config) -> list[dict[str, Any]]:
    """Every version with when and why it was deployed, its scores on the test data and warnings."""
    current = current_version_or_none(config)
    states = approval_states(config)
    rows = []
    for name in version_names(config):
        path = versions_folder(config) / name
        row = {
            "version": name,
            "current": name == current,
            "deployed_at": "?",
            "model": "?",
            "f1": None,
            "roc_auc": None,
        }
        try:
            manifest = read_manifest(path)
        except (DeploymentError, OSError) as exc:
            rows.append({**row, "reason": "", "warnings": [f"fails verification: {exc}"], "uninformative": False})
            continue
        scores = manifest.get("scores") or {}
        decision = manifest.get("decision") if isinstance(manifest.get("decision"), dict) else {}
        row["metric"] = manifest.get("metric")
        row["metric_score"] = scores.get(manifest.get("metric")) if manifest.get("metric") else None
        row["champion_challenger"] = decision.get("champion_challenger")
        # Deployed needing approval, and still waiting: an approval or a rejection ends the wait.
        row["approval_required"] = bool(manifest.get("pending_approval", False))
        row["pending_approval"] = states.get(name, {}).get("state") == "pending"
        row["score_metric"] = config["metric"]
        row["score"] = scores.get(config["metric"])
        row["test_rows"] = scores.get("rows")
        row["test_positives"] = scores.get("positives")
        row["model_format"] = modelfiles.model_format(modelfiles.model_file_name(manifest["files"]))
        warnings = manifest.get("warnings")
        if warnings is None:  # deployed before manifests kept them: ask the version's files
            warnings = version_warnings(
                _object_even_unreadable(path / METADATA_FILE), _object_even_unreadable(path / SCORES_FILE)
            )
        row.update(
            deployed_at=manifest.get("deployed_at", "?"),
            model=manifest.get("model", "?"),
            f1=scores.get("f1"),
            roc_auc=scores.get("roc_auc"),
            reason=logbook.shown(manifest.get("reason", "")),  # text safe to print, whatever an old manifest holds
            warnings=logbook.shown([str(w) for w in warnings]),
            uninformative=bool(manifest.get("uninformative", False)),
        )
        rows.append(row)
    return rows


def inventory(config: Config, verify: bool = True) -> list[dict[str, Any]]:
    """Every version with its status, dates, scores and approver, oldest first.

    status: current, pending (awaiting approval), rejected, superseded (a newer version came
    before approval), rolled back (current until a rollback moved away from it), retired
    (replaced by a later deployment or activation), failed verification (its files no longer
    match its manifest; ``verify=False`` skips hashing them).
    """
    current = current_version_or_none(config)
    states = approval_states(config)
    events = logbook.read_history(config)
    rows = []
    for row in list_versions(config):
        name = row["version"]
        state = states.get(name, {})
        made_current, left = _current_spans(events, name)
        problem = None
        if verify:
            try:
                verify_version(versions_folder(config) / name)
            except LOAD_ERRORS as exc:
                problem = str(exc)
        if problem:
            status = "current, failed verification" if name == current else "failed verification"
        elif name == current:
            status = "current"
        elif state.get("state") in ("pending", "rejected", "superseded"):
            status = state["state"]
        elif left and left[-1].get("action") == "rollback":
            status = "rolled back"
        else:
            status = "retired"
        decided = state if state.get("state") in ("approved", "rejected", "superseded") else {}
        rows.append(
            {
                **row,
                "status": status,
                "problem": problem,
                "became_current_at": made_current[0].get("at") if made_current else None,
                "left_current_at": left[-1].get("at") if left and name != current else None,
                "decision": decided.get("state"),
                "decided_by": decided.get("by"),
                "decided_at": decided.get("at"),
                "decision_note": decided.get("note"),
            }
        )
    return rows


CURRENT_MOVES = ("deploy", "rollback", "activate", "approve")  # the history actions that can move ``current``


def _current_spans(events: list[dict[str, Any]], name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The history lines that made version ``name`` current, and those that moved ``current``
    away from it (a deploy pending approval moves nothing)."""
    made_current = [
        e
        for e in events
        if e.get("version") == name
        and e.get("action") in CURRENT_MOVES
        and not (e.get("action") == "deploy" and e.get("pending_approval"))
    ]
    left = [
        e
        for e in events
        if e.get("previous_version") == name
        and e.get("version") != name
        and e.get("action") in CURRENT_MOVES
        and not e.get("pending_approval")
    ]
    return made_current, left


def current_since(config: Config) -> dict[str, Any] | None:
    """The history line that made the current version current (deploy, rollback or activate)."""
    current = current_version_or_none(config)
    made_current = [h for h in logbook.read_history(config) if h.get("version") == current]
    return made_current[-1] if current and made_current else None


def _object_even_unreadable(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} where it is absent, damaged, not an object, or cannot be
    read at all (a listing shows what it can rather than fail)."""
    try:
        return read_json_object(path)
    except OSError:
        return {}


def resolve_version(config: Config, version: str | None = None) -> str:
    """The name of ``version``, or of the current one; DeploymentError if there is none."""
    return version_path(config, version).name


def report_folder(config: Config, version: str) -> Path:
    """``<reports>/<version>/``: every version keeps its own reports (diagnostics, model report)."""
    return config.reports_folder / version
