"""Promote the trained model into the production deployment, versioned, with rollback.

Layout of the deployment folder::

    production_deployment/
      versions/v1/, v2/, ...   immutable; each holds trainedmodel.pkl, trainedmodel.json,
                               scores.json, latestscore.txt, ingestedfiles.txt,
                               ingestion_record.jsonl, reference_data.csv, manifest.json
      current -> versions/vN   a symlink, swapped atomically by rename
      history.jsonl            one line per deploy or rollback

A version is assembled in a hidden folder and renamed into ``versions/`` only when every
file is written and synced; ``current`` then switches with one ``rename``. A reader that
resolves ``current`` once sees a whole version, old or new, even if a deploy is killed at
any instant. ``manifest.json`` lists every file's SHA-256; a model is unpickled only after
its hash matches.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import ledger
from fsutil import (
    LockBusy,
    append_json_line,
    before_change,
    configure_logging,
    fsync_dir,
    read_json_lines,
    run_lock,
    sha256_file,
)
from settings import Config, ConfigError, load_config, script_parser

TYPE_CHECKING = False
if TYPE_CHECKING:  # fullprocess's fast path asks current_version(): keep this module light
    from typing import Any

# hashlib, pickle and shutil are imported where they are used, for the same reason.

logger = logging.getLogger(__name__)

VERSIONS_FOLDER = "versions"
CURRENT_LINK = "current"
HISTORY_FILE = "history.jsonl"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "trainedmodel.pkl"
METADATA_FILE = "trainedmodel.json"
SCORES_FILE = "scores.json"
SCORE_FILE = "latestscore.txt"
REFERENCE_FILE = "reference_data.csv"
INCOMING_PREFIX = ".incoming-"


class DeploymentError(RuntimeError):
    """A deployment is missing, incomplete or fails verification; the message says which."""


class BrokenCurrentLink(DeploymentError):
    """``current`` exists but is not a link to a version (a directory or a regular file)."""


REQUIRED_FILES = (MODEL_FILE, METADATA_FILE, SCORES_FILE)


class DeployedModel:
    """A loaded, verified deployment version."""

    __slots__ = ("version", "path", "model", "metadata", "scores", "manifest")

    def __init__(self, version: str, path: Path, model: Any, metadata: dict, scores: dict, manifest: dict):
        self.version, self.path, self.model = version, path, model
        self.metadata, self.scores, self.manifest = metadata, scores, manifest

    def __repr__(self) -> str:
        return f"DeployedModel({self.version!r}, {self.metadata.get('model')!r})"


def _unique_suffix() -> str:
    return os.urandom(8).hex()


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
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeploymentError(f"{path / MANIFEST_FILE} is not valid JSON ({exc}): the version cannot be verified") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise DeploymentError(f"{path / MANIFEST_FILE} is not a version manifest (a JSON object with \"files\"): the version cannot be verified")
    return manifest


def verify_version(path: Path) -> dict[str, Any]:
    """Check every file of a version against its manifest. Returns the manifest."""
    manifest = read_manifest(path)
    unlisted = [name for name in REQUIRED_FILES if name not in manifest.get("files", {})]
    if unlisted:
        raise DeploymentError(f"{path / MANIFEST_FILE} does not list {unlisted}: the version cannot be verified")
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise DeploymentError(f"{file} is listed in the manifest but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise DeploymentError(f"{file} fails verification: sha256 {actual[:12]}… is not the manifest's {expected[:12]}…")
    return manifest


def load_deployed_model(config: Config, version: str | None = None) -> DeployedModel:
    """Load a deployed version (default: current), verified before anything is unpickled."""
    # Resolve the link once, so every file below comes from the same version.
    path = version_path(config, version)
    manifest = verify_version(path)
    # Unpickle the very bytes that were hashed, so the file cannot change in between.
    import hashlib
    import pickle

    model_bytes = (path / MODEL_FILE).read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != manifest["files"][MODEL_FILE]:
        raise DeploymentError(f"{path / MODEL_FILE} changed while it was being loaded")
    model = pickle.loads(model_bytes)
    return DeployedModel(
        version=path.name,
        path=path,
        model=model,
        metadata=json.loads((path / METADATA_FILE).read_text(encoding="utf-8")),
        scores=json.loads((path / SCORES_FILE).read_text(encoding="utf-8")),
        manifest=manifest,
    )


def deploy_model(
    config: Config, reason: str = "manual deployment", decision: dict[str, Any] | None = None, master_bytes: int | None = None
) -> str:
    """Promote the trained model, its scores and the ingestion record as a new current version.

    ``decision``: the audit fields of the fullprocess run that decided this deployment, and
    ``master_bytes``: the size of the master dataset the model was trained on. Both are kept
    in the manifest, so a run killed after this point is finished by the next one (its audit
    line written, marked as recovered) and the rows the version covers are never judged again.
    """
    _remove_incomplete(config)
    metadata = _checked_trained_model(config)
    incoming = versions_folder(config) / f"{INCOMING_PREFIX}{_unique_suffix()}"
    before_change(incoming)
    incoming.mkdir(parents=True)
    try:
        files = _assemble(config, incoming)
        previous = current_version_or_none(config)
        version = f"v{max([version_number(v) for v in version_names(config)] + [0]) + 1}"
        scores = json.loads((incoming / SCORES_FILE).read_text(encoding="utf-8"))
        manifest = {
            "version": version,
            "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reason": reason,
            "previous_version": previous,
            "model": metadata["model"],
            "metric": metadata["metric"],
            "scores": scores,
            "files": files,
            "master_bytes": master_bytes if master_bytes is not None else _trained_master_bytes(config, metadata),
            "uninformative": bool(metadata.get("uninformative", False)),
            "warnings": version_warnings(metadata, scores),
            "decision": decision,
        }
        _write_synced(incoming / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())
        fsync_dir(incoming)
        before_change(versions_folder(config) / version)
        os.rename(incoming, versions_folder(config) / version)
        fsync_dir(versions_folder(config))
    except BaseException:
        _remove_tree(incoming)
        raise
    _switch_current(config, version)
    _record(config, "deploy", version, previous, reason)
    logger.info("deployed %s (%s, %s %.4f on test data)", version, metadata["model"], "f1", manifest["scores"]["f1"])
    return version


def version_warnings(metadata: dict[str, Any], scores: dict[str, Any]) -> list[str]:
    """What an operator must know about a model: its training's and its scoring's warnings."""
    found = [str(w) for w in [*(metadata.get("warnings") or []), *(scores.get("warnings") or [])]]
    if metadata.get("uninformative") and not any("no better than chance" in w for w in found):
        found.insert(0, "the model is no better than chance: no candidate beat chance and the rule \"flag everyone\"")
    return list(dict.fromkeys(found))


def _trained_master_bytes(config: Config, metadata: dict[str, Any]) -> int | None:
    """The master's size when the model saw all of it (same row count), else None."""
    try:
        state = json.loads((config.output_folder / ledger.MASTER_STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return int(state["bytes"]) if state.get("rows") == metadata.get("training_rows") and "bytes" in state else None


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


def _versions_before_rebuild(config: Config) -> int:
    """The number of the newest version deployed before the master was last rebuilt (0: none);
    ``ingestion.py --rebuild`` records it in the drift checkpoint."""
    try:
        state = json.loads((config.output_folder / "drift_checkpoint.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    name = state.get("rebuilt_after_version") if isinstance(state, dict) else None
    return version_number(name) if isinstance(name, str) else 0


def rollback(config: Config) -> str:
    """Make the newest verified version older than the current one current again.

    A broken ``current`` (not a link) is replaced by the newest verified version.
    """
    try:
        current, broken = current_version(config), None
    except BrokenCurrentLink as exc:
        current, broken = None, exc
    if current is None and broken is None:
        raise DeploymentError("nothing is deployed, so there is nothing to roll back")
    names = version_names(config)
    older = names if broken else [v for v in names if version_number(v) < version_number(current)]
    for candidate in reversed(older):
        try:
            verify_version(versions_folder(config) / candidate)
        except (DeploymentError, OSError, ValueError) as exc:
            logger.warning("skipping %s: %s", candidate, exc)
            continue
        _switch_current(config, candidate)
        origin = current or "a broken current link"
        _record(config, "rollback", candidate, current, f"rollback from {origin}")
        logger.info("rolled back from %s to %s", origin, candidate)
        return candidate
    if broken:
        raise DeploymentError(f"{broken}; and no version passes verification to roll back to")
    raise DeploymentError(f"no verified version older than {current} to roll back to")


def activate(config: Config, version: str) -> str:
    """Make any verified version current again (recorded in the history as "activate")."""
    path = versions_folder(config) / version
    if version_number(version) <= 0 or not path.is_dir():
        known = ", ".join(version_names(config)) or "none"
        raise DeploymentError(f"there is no version {version!r} (versions: {known})")
    try:
        verify_version(path)
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"{version} cannot be activated: {exc}") from None
    except DeploymentError as exc:
        raise DeploymentError(f"{version} cannot be activated: {exc}") from None
    current = current_version_or_none(config)
    if current == version:
        logger.info("%s is already current", version)
        return version
    _switch_current(config, version)
    _record(config, "activate", version, current, f"activated by hand (was {current or 'no usable version'})")
    logger.info("activated %s (was %s)", version, current)
    return version


def complete_interrupted_deploy(config: Config) -> str | None:
    """Finish a deploy that was killed after its version was complete. Returns that version.

    A version is renamed into place complete; a deploy killed after that left ``current`` on
    the previous version, or switched it without writing the history line. Either way the
    deployment was decided and is finished here, instead of a later run deploying again.
    """
    names = version_names(config)
    if not names:
        return None
    newest = names[-1]
    mentioned = {h.get(key) for h in history(config) for key in ("version", "previous_version")}
    if newest in mentioned:
        return None  # its deploy was recorded (and maybe rolled back since)
    try:
        manifest = verify_version(versions_folder(config) / newest)
    except (DeploymentError, OSError, ValueError) as exc:
        logger.error("an interrupted deployment of %s cannot be completed: %s", newest, exc)
        return None
    current = current_version_or_none(config)
    if current not in (newest, manifest.get("previous_version")):
        return None
    if current != newest:
        _switch_current(config, newest)
    _record(config, "deploy", newest, manifest.get("previous_version"), manifest.get("reason", ""),
            note="completed by a later run: the deploying process was interrupted")
    logger.warning("completed the interrupted deployment of %s", newest)
    return newest


def list_versions(config: Config) -> list[dict[str, Any]]:
    """Every version with when and why it was deployed, its scores on the test data and warnings."""
    current = current_version_or_none(config)
    rows = []
    for name in version_names(config):
        path = versions_folder(config) / name
        row = {"version": name, "current": name == current, "deployed_at": "?", "model": "?", "f1": None, "roc_auc": None}
        try:
            manifest = read_manifest(path)
        except (DeploymentError, OSError) as exc:
            rows.append({**row, "reason": "", "warnings": [f"fails verification: {exc}"], "uninformative": False})
            continue
        scores = manifest.get("scores") or {}
        warnings = manifest.get("warnings")
        if warnings is None:  # deployed before manifests kept them: ask the version's files
            warnings = version_warnings(_read_json_or_empty(path / METADATA_FILE), _read_json_or_empty(path / SCORES_FILE))
        row.update(
            deployed_at=manifest.get("deployed_at", "?"),
            model=manifest.get("model", "?"),
            f1=scores.get("f1"),
            roc_auc=scores.get("roc_auc"),
            reason=manifest.get("reason", ""),
            warnings=list(warnings),
            uninformative=bool(manifest.get("uninformative", False)),
        )
        rows.append(row)
    return rows


def current_since(config: Config) -> dict[str, Any] | None:
    """The history line that made the current version current (deploy, rollback or activate)."""
    current = current_version_or_none(config)
    made_current = [h for h in history(config) if h.get("version") == current]
    return made_current[-1] if current and made_current else None


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def history(config: Config) -> list[dict[str, Any]]:
    """Every deploy and rollback, oldest first."""
    return read_json_lines(config.deployment_folder / HISTORY_FILE)


def _checked_trained_model(config: Config) -> dict[str, Any]:
    folder = config.model_folder
    for name in (MODEL_FILE, METADATA_FILE, SCORES_FILE, SCORE_FILE):
        if not (folder / name).is_file():
            raise DeploymentError(f"{folder / name} is missing: train and score a model first")
    metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    if sha256_file(folder / MODEL_FILE) != metadata.get("model_sha256"):
        raise DeploymentError(f"{folder / MODEL_FILE} does not match its metadata's checksum: retrain")
    scores = json.loads((folder / SCORES_FILE).read_text(encoding="utf-8"))
    if scores.get("model_trained_at") != metadata["trained_at"]:
        raise DeploymentError(f"{folder / SCORES_FILE} scores another model than {MODEL_FILE}: score it again")
    return metadata


def _assemble(config: Config, incoming: Path) -> dict[str, str]:
    """Copy a version's files into ``incoming``, synced. Returns {name: sha256}."""
    sources = {name: config.model_folder / name for name in (MODEL_FILE, METADATA_FILE, SCORES_FILE, SCORE_FILE)}
    for name in ("ingestedfiles.txt", "ingestion_record.jsonl"):
        sources[name] = config.output_folder / name
    files = {}
    for name, source in sources.items():
        _write_synced(incoming / name, source.read_bytes() if source.exists() else b"")
        files[name] = sha256_file(incoming / name)
    _write_synced(incoming / REFERENCE_FILE, _reference_sample(config))
    files[REFERENCE_FILE] = sha256_file(incoming / REFERENCE_FILE)
    return files


def _reference_sample(config: Config) -> bytes:
    """A seeded sample of the training data, kept so drift can be measured against it later."""
    import ingestion  # pandas, only needed when deploying

    master = ingestion.load_master(config)
    limit = config["reference_sample_rows"]
    if limit and len(master) > limit:
        master = master.sample(n=limit, random_state=config["random_seed"]).sort_index()
    return master.to_csv(index=False).encode("utf-8")


def _write_synced(path: Path, data: bytes) -> None:
    before_change(path)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _switch_current(config: Config, version: str) -> None:
    """Point ``current`` at ``version`` with one atomic rename of a fresh symlink."""
    folder = config.deployment_folder
    link = folder / CURRENT_LINK
    if (link.exists() or link.is_symlink()) and not link.is_symlink():
        _move_broken_current_aside(link)
    staging = folder / f".current-{_unique_suffix()}"
    before_change(staging)
    os.symlink(Path(VERSIONS_FOLDER) / version, staging)
    before_change(link)
    os.replace(staging, link)
    fsync_dir(folder)


def _move_broken_current_aside(link: Path) -> None:
    """A directory or file where the ``current`` link belongs: kept aside for a look, not deleted."""
    aside = link.with_name(f"broken-current-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{_unique_suffix()[:6]}")
    before_change(aside)
    os.rename(link, aside)
    logger.warning("%s was not a link to a version: moved it to %s", link, aside)


def _record(config: Config, action: str, version: str, previous: str | None, reason: str, note: str | None = None) -> None:
    line = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "action": action,
        "version": version,
        "previous_version": previous,
        "reason": reason,
    }
    if note:
        line["note"] = note
    append_json_line(config.deployment_folder / HISTORY_FILE, line)


def _remove_tree(folder: Path) -> None:
    import shutil

    before_change(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _remove_incomplete(config: Config) -> None:
    """Clear what a killed deploy left: half-built versions and stray link files."""
    folder = versions_folder(config)
    if folder.is_dir():
        for leftover in folder.glob(f"{INCOMING_PREFIX}*"):
            _remove_tree(leftover)
    for stray in config.deployment_folder.glob(".current-*"):
        before_change(stray)
        stray.unlink(missing_ok=True)


def remove_incomplete(config: Config) -> None:
    """What killed deploys left (half-built versions, stray links); call under the run lock."""
    _remove_incomplete(config)


def _print_versions(config: Config, rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no versions deployed")
        return
    print(f"{'':2}{'version':<8} {'deployed at':<26} {'model':<24} {'f1':>7} {'roc_auc':>8}  reason")
    for row in rows:
        marker = "* " if row["current"] else "  "
        f1 = f"{row['f1']:.4f}" if row["f1"] is not None else "n/a"
        auc = f"{row['roc_auc']:.4f}" if row["roc_auc"] is not None else "n/a"
        model = f"{row['model']} (no better than chance)" if row.get("uninformative") else row["model"]
        print(f"{marker}{row['version']:<8} {row['deployed_at']:<26} {model:<24} {f1:>7} {auc:>8}  {row['reason']}")
        for warning in row.get("warnings", []):
            print(f"{'':11}warning: {warning}")
    _print_current(config)


def _print_current(config: Config) -> None:
    """Which version is current and since when, and every rollback or activation."""
    try:
        current_version(config)
    except BrokenCurrentLink as exc:
        print(f"\ncurrent: none usable: {exc}")
        return
    since = current_since(config)
    if since:
        how = {"deploy": "deployed", "rollback": "rolled back", "activate": "activated"}.get(since.get("action"), since.get("action"))
        came_from = f" from {since['previous_version']}" if since.get("previous_version") and since.get("action") != "deploy" else ""
        print(f"\ncurrent: {since['version']}, since {since.get('at')} ({how}{came_from})")
    switches = [h for h in history(config) if h.get("action") in ("rollback", "activate")]
    if switches:
        print("rollbacks and activations:")
        for h in switches:
            print(f"  {h.get('at')}  {h.get('action')} {h.get('previous_version') or '-'} -> {h.get('version')}")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="show versions with their scores (* marks current)")
    action.add_argument("--rollback", action="store_true", help="make the previous version current again")
    action.add_argument("--activate", metavar="VERSION", help="make any verified version (vN) current again")
    parser.add_argument("--reason", default="manual deployment", help="why this version is deployed")
    args = parser.parse_args(argv)
    if args.activate is not None and not args.activate.strip():  # "$VERSION" unset must not deploy models/
        parser.error("--activate needs a version name (vN): `make versions` lists them")
    configure_logging(console_tracebacks=False)
    try:
        config = load_config(args.config)
        if args.list:
            _print_versions(config, list_versions(config))
            return 0
        with run_lock(ledger.lock_path(config)):
            if args.rollback:
                version = rollback(config)
            elif args.activate:
                version = activate(config, args.activate)
            else:
                version = deploy_model(config, reason=args.reason)
    except (ConfigError, DeploymentError, LockBusy, OSError) as exc:
        logger.error("%s", exc)
        return 1
    print(f"current version: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
