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
from fsutil import LockBusy, append_json_line, configure_logging, fsync_dir, read_json_lines, run_lock, sha256_file
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
    """The current version's name, from one readlink: cheap enough to call per request."""
    try:
        return Path(os.readlink(config.deployment_folder / CURRENT_LINK)).name
    except FileNotFoundError:
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
    return json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))


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


def deploy_model(config: Config, reason: str = "manual deployment") -> str:
    """Promote the trained model, its scores and the ingestion record as a new current version."""
    _remove_incomplete(config)
    metadata = _checked_trained_model(config)
    incoming = versions_folder(config) / f"{INCOMING_PREFIX}{_unique_suffix()}"
    incoming.mkdir(parents=True)
    try:
        files = _assemble(config, incoming)
        previous = current_version(config)
        version = f"v{max([version_number(v) for v in version_names(config)] + [0]) + 1}"
        manifest = {
            "version": version,
            "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reason": reason,
            "previous_version": previous,
            "model": metadata["model"],
            "metric": metadata["metric"],
            "scores": json.loads((incoming / SCORES_FILE).read_text(encoding="utf-8")),
            "files": files,
        }
        _write_synced(incoming / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        fsync_dir(incoming)
        os.rename(incoming, versions_folder(config) / version)
        fsync_dir(versions_folder(config))
    except BaseException:
        _remove_tree(incoming)
        raise
    _switch_current(config, version)
    _record(config, "deploy", version, previous, reason)
    logger.info("deployed %s (%s, %s %.4f on test data)", version, metadata["model"], "f1", manifest["scores"]["f1"])
    return version


def rollback(config: Config) -> str:
    """Make the newest verified version older than the current one current again."""
    current = current_version(config)
    if current is None:
        raise DeploymentError("nothing is deployed, so there is nothing to roll back")
    older = [v for v in version_names(config) if version_number(v) < version_number(current)]
    for candidate in reversed(older):
        try:
            verify_version(versions_folder(config) / candidate)
        except (DeploymentError, OSError, ValueError) as exc:
            logger.warning("skipping %s: %s", candidate, exc)
            continue
        _switch_current(config, candidate)
        _record(config, "rollback", candidate, current, f"rollback from {current}")
        logger.info("rolled back from %s to %s", current, candidate)
        return candidate
    raise DeploymentError(f"no verified version older than {current} to roll back to")


def list_versions(config: Config) -> list[dict[str, Any]]:
    """Every version with when and why it was deployed and its scores on the test data."""
    current = current_version(config)
    rows = []
    for name in version_names(config):
        manifest = read_manifest(versions_folder(config) / name)
        scores = manifest.get("scores", {})
        rows.append(
            {
                "version": name,
                "current": name == current,
                "deployed_at": manifest["deployed_at"],
                "model": manifest["model"],
                "f1": scores.get("f1"),
                "roc_auc": scores.get("roc_auc"),
                "reason": manifest["reason"],
            }
        )
    return rows


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
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _switch_current(config: Config, version: str) -> None:
    """Point ``current`` at ``version`` with one atomic rename of a fresh symlink."""
    folder = config.deployment_folder
    staging = folder / f".current-{_unique_suffix()}"
    os.symlink(Path(VERSIONS_FOLDER) / version, staging)
    os.replace(staging, folder / CURRENT_LINK)
    fsync_dir(folder)


def _record(config: Config, action: str, version: str, previous: str | None, reason: str) -> None:
    append_json_line(
        config.deployment_folder / HISTORY_FILE,
        {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "action": action,
            "version": version,
            "previous_version": previous,
            "reason": reason,
        },
    )


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _remove_incomplete(config: Config) -> None:
    """Clear what a killed deploy left: half-built versions and stray link files."""
    folder = versions_folder(config)
    if folder.is_dir():
        for leftover in folder.glob(f"{INCOMING_PREFIX}*"):
            _remove_tree(leftover)
    for stray in config.deployment_folder.glob(".current-*"):
        stray.unlink(missing_ok=True)


def _print_versions(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no versions deployed")
        return
    print(f"{'':2}{'version':<8} {'deployed at':<26} {'model':<24} {'f1':>7} {'roc_auc':>8}  reason")
    for row in rows:
        marker = "* " if row["current"] else "  "
        f1 = f"{row['f1']:.4f}" if row["f1"] is not None else "n/a"
        auc = f"{row['roc_auc']:.4f}" if row["roc_auc"] is not None else "n/a"
        print(f"{marker}{row['version']:<8} {row['deployed_at']:<26} {row['model']:<24} {f1:>7} {auc:>8}  {row['reason']}")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="show versions with their scores (* marks current)")
    action.add_argument("--rollback", action="store_true", help="make the previous version current again")
    parser.add_argument("--reason", default="manual deployment", help="why this version is deployed")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        config = load_config(args.config)
        if args.list:
            _print_versions(list_versions(config))
            return 0
        with run_lock(ledger.lock_path(config)):
            version = rollback(config) if args.rollback else deploy_model(config, reason=args.reason)
    except (ConfigError, DeploymentError, LockBusy, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    print(f"current version: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
