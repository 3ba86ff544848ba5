"""Promote the trained model into the production deployment, versioned, with rollback.

Layout of the deployment folder::

    production_deployment/
      versions/v1/, v2/, ...   immutable; each holds trainedmodel.skops (or, made before skops,
                               trainedmodel.pkl), trainedmodel.json,
                               scores.json, latestscore.txt, ingestedfiles.txt,
                               ingestion_record.jsonl, reference_data.csv, manifest.json
      current -> versions/vN   a symlink, swapped atomically by rename
      history.jsonl            one line per deploy, rollback, activation, approval, rejection
                               or supersession; each line carries the SHA-256 of the line before

      switch-intent.json       present only while an approval, rejection, rollback or activation
                               is being carried out (see below)

With ``require_approval`` a new version is deployed *pending*: complete and verified, but
``current`` does not move until ``--approve vN --by NAME`` (``--reject`` retires it). A newer
version supersedes an older pending one.

A version is assembled in a hidden folder and renamed into ``versions/`` only when every
file is written and synced; ``current`` then switches with one ``rename``. A reader that
resolves ``current`` once sees a whole version, old or new, even if a deploy is killed at
any instant. ``manifest.json`` lists every file's SHA-256; a model is loaded only after its
hash matches, and only with the types modelfiles.py trusts (older pickled versions: the hash only).

An approval, rejection, rollback or activation first writes its intent (the history line and
audit line it will write) to ``switch-intent.json``; then the switch of ``current`` is its
commit point (for a rejection, which moves nothing, the history line is). A process killed
after the commit point has its lines written by the next command or run
(``complete_interrupted_switch``); one killed before it did nothing, and the intent is dropped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from risk.core import artefacts, logbook
from risk.core.artefacts import (
    CURRENT_LINK,
    MANIFEST_FILE,
    METADATA_FILE,
    REFERENCE_FILE,
    SCORE_FILE,
    SCORES_FILE,
    VERSIONS_FOLDER,
)
from risk.core.files import atomic_write_json, before_change, fsync_dir, remove_stale_temporaries, sha256_file
from risk.core.jsonfiles import append_json_line, read_json, read_json_or_none
from risk.core.settings import Config
from risk.model import modelfiles
from risk.registry.versions import (
    APPROVAL_ACTIONS,
    LOAD_ERRORS,
    BrokenCurrentLink,
    DeploymentError,
    _trained_master_bytes,
    approval_states,
    current_version,
    current_version_or_none,
    pending_versions,
    verify_version,
    version_names,
    version_number,
    version_warnings,
    versions_folder,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # fullprocess's fast path asks current_version(): keep this module light
    from typing import Any

# shutil is imported where it is used, for the same reason.

logger = logging.getLogger(__name__)

INCOMING_PREFIX = ".incoming-"


def _unique_suffix() -> str:
    return os.urandom(8).hex()


def deploy_model(
    config: Config,
    reason: str = "manual deployment",
    decision: dict[str, Any] | None = None,
    master_bytes: int | None = None,
    pending: bool = False,
) -> str:
    """Promote the trained model, its scores and the ingestion record as a new current version.

    ``decision``: the audit fields of the fullprocess run that decided this deployment, and
    ``master_bytes``: the size of the master dataset the model was trained on. Both are kept
    in the manifest, so a run killed after this point is finished by the next one (its audit
    line written, marked as recovered) and the rows the version covers are never judged again.
    ``pending``: the version awaits approval and ``current`` stays where it is; either way an
    older version still awaiting approval is superseded.
    """
    _remove_incomplete(config)
    metadata = _checked_trained_model(config)
    manifest = _add_version(config, metadata, reason, decision, master_bytes, pending)
    version, previous = manifest["version"], manifest["previous_version"]
    superseded = [v for v in pending_versions(config) if v != version]
    if not pending:
        _switch_current(config, version)
    _supersede(config, superseded, version)
    if pending:
        _record(config, "deploy", version, previous, reason, pending_approval=True)
        logger.info(
            "deployed %s pending approval (%s); %s stays current", version, metadata["model"], previous or "no version"
        )
        return version
    _record(config, "deploy", version, previous, reason)
    metric = manifest["metric"]
    logger.info(
        "deployed %s (%s, %s %s on test data)",
        version,
        metadata["model"],
        metric,
        _score_text(manifest["scores"].get(metric)),
    )
    return version


def _add_version(
    config: Config,
    metadata: dict[str, Any],
    reason: str,
    decision: dict[str, Any] | None,
    master_bytes: int | None,
    pending: bool,
) -> dict[str, Any]:
    """Assemble the next version in a hidden folder, write its manifest, and rename it into
    ``versions/`` whole. Returns the manifest; a failure leaves no trace of the version."""
    incoming = versions_folder(config) / f"{INCOMING_PREFIX}{_unique_suffix()}"
    before_change(incoming)
    incoming.mkdir(parents=True)
    try:
        files = _assemble(config, incoming)
        version = f"v{max([version_number(v) for v in version_names(config)] + [0]) + 1}"
        scores = read_json(incoming / SCORES_FILE)
        manifest = {
            "version": version,
            "deployed_at": artefacts.utc_now(),
            "reason": reason,
            "previous_version": current_version_or_none(config),
            "model": metadata["model"],
            "metric": metadata["metric"],
            "scores": scores,
            "files": files,
            "master_bytes": master_bytes if master_bytes is not None else _trained_master_bytes(config, metadata),
            "uninformative": bool(metadata.get("uninformative", False)),
            "warnings": version_warnings(metadata, scores),
            "decision": decision,
            "pending_approval": pending,
        }
        _write_synced(
            incoming / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()
        )
        fsync_dir(incoming)
        before_change(versions_folder(config) / version)
        os.rename(incoming, versions_folder(config) / version)
        fsync_dir(versions_folder(config))
    except BaseException:
        _remove_tree(incoming)
        raise
    return manifest


def _supersede(config: Config, older_versions: list[str], version: str) -> None:
    """Record each of ``older_versions``, still awaiting approval, as superseded by ``version``."""
    for older in older_versions:
        _record(
            config,
            "supersede",
            older,
            None,
            f"superseded by {version}",
            by="system",
            note=f"a newer version, {version}, was deployed before {older} was approved",
            superseded_by=version,
        )


def _score_text(score: Any) -> str:
    return f"{score:.4f}" if isinstance(score, (int, float)) else "undefined"


# --- approval ------------------------------------------------------------------------------------


def _require_pending(config: Config, version: str) -> None:
    state = approval_states(config).get(version)
    if version_number(version) <= 0 or version not in version_names(config):
        known = ", ".join(version_names(config)) or "none"
        raise DeploymentError(f"there is no version {version!r} (versions: {known})")
    if not state or state["state"] != "pending":
        waiting = ", ".join(pending_versions(config)) or "none"
        raise DeploymentError(
            f"{version} is not awaiting approval (it is {state['state'] if state else 'unknown'}); awaiting approval: {waiting}"
        )


def approve(config: Config, version: str, by: str, note: str | None = None) -> str:
    """Make a pending version current, recorded with who approved it, when and why."""
    if not by or not by.strip():
        raise DeploymentError("an approval needs the approver's name (--by NAME)")
    refuse_control_characters(by=by, note=note)
    _require_pending(config, version)
    try:
        verify_version(versions_folder(config) / version)
    except (OSError, ValueError, DeploymentError) as exc:
        raise DeploymentError(f"{version} cannot be approved: {exc}") from None
    previous = current_version_or_none(config)
    by, note = by.strip(), note or ""
    _carry_out(
        config,
        _history_line("approve", version, previous, f"approved by {by}", by=by, note=note),
        _approval_audit("approved", version, by, note, previous),
        switch_to=version,
    )
    logger.info("%s approved by %s: now current (was %s)", version, by, previous or "no version")
    return version


def reject(config: Config, version: str, by: str, note: str) -> str:
    """Retire a pending version unserved, recorded with who rejected it, when and why."""
    if not by or not by.strip():
        raise DeploymentError("a rejection needs the name of who rejects it (--by NAME)")
    if not note or not note.strip():
        raise DeploymentError("a rejection needs a note saying why (--note TEXT)")
    refuse_control_characters(by=by, note=note)
    _require_pending(config, version)
    current = current_version_or_none(config)
    by, note = by.strip(), note.strip()
    _carry_out(
        config,
        _history_line("reject", version, current, f"rejected by {by}", by=by, note=note),
        _approval_audit("rejected", version, by, note, current),
        switch_to=None,
    )
    logger.info("%s rejected by %s; %s stays current", version, by, current or "no version")
    return version


def refuse_control_characters(**texts: str | None) -> None:
    """DeploymentError naming the first of ``texts`` (option name: text) that holds control
    characters: they would clear a screen or forge lines wherever the history is shown."""
    for option, text in texts.items():
        found = logbook.control_characters(text or "")
        if found:
            raise DeploymentError(
                f"--{option} contains control characters ({', '.join(found)}): "
                "give plain text on one line, without escapes, tabs or line breaks"
            )


def _approval_audit(decision: str, version: str, by: str, note: str, current: str | None) -> dict[str, Any]:
    """The approval or rejection's audit line, beside the runs of fullprocess."""
    at = artefacts.utc_now()
    return {
        "status": "ok",
        "decision": decision,
        "version": version,
        "by": by,
        "note": note,
        "at": at,
        "started_at": at,
        "current_version": version if decision == "approved" else current,
        "reason": f"{version} {decision} by {by}" + (f": {note}" if note else ""),
    }


# --- a switch of ``current`` by hand: intent first, the switch is the commit point ------------------

INTENT_FILE = "switch-intent.json"
INTENT_FIELD = "intent_id"  # names the intent in the history and audit lines written for it


def intent_path(config: Config) -> Path:
    return config.deployment_folder / INTENT_FILE


def _carry_out(config: Config, history: dict[str, Any], audit: dict[str, Any] | None, switch_to: str | None) -> None:
    """Write the intent, switch ``current`` to ``switch_to`` (the commit point; None: the history
    line is), write the history and audit lines, then drop the intent. Killed anywhere, the next
    command or run finds the intent and finishes it (or drops it, before the commit point)."""
    intent_id = _unique_suffix()
    intent = {
        "id": intent_id,
        "switch_to": switch_to,
        "previous_version": history.get("previous_version"),
        "history": {**history, INTENT_FIELD: intent_id},
        "audit": {**audit, INTENT_FIELD: intent_id} if audit else None,
    }
    atomic_write_json(intent_path(config), intent)
    if switch_to is not None:
        _switch_current(config, switch_to)
    _write_intended_lines(config, intent)
    _drop_intent(config)


def _write_intended_lines(config: Config, intent: dict[str, Any], note: str | None = None) -> list[str]:
    """The intent's history and audit lines, each unless already written. Returns those written."""
    written = []
    for name, path, read in (
        ("history", logbook.history_path(config), logbook.read_history),
        ("audit", logbook.audit_path(config), logbook.read_audit),
    ):
        line = intent.get(name)
        if not isinstance(line, dict) or any(r.get(INTENT_FIELD) == intent["id"] for r in read(config)):
            continue
        append_json_line(path, {**line, "completed_by_later_run": note} if note else line)
        written.append(name)
    return written


def _drop_intent(config: Config) -> None:
    path = intent_path(config)
    before_change(path)
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def switch_left_unfinished(config: Config) -> bool:
    """Whether a killed approval, rejection, rollback or activation left anything: its intent,
    the intent half-written, or a half-made link. One listing of the deployment folder."""
    try:
        names = os.listdir(config.deployment_folder)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(n == INTENT_FILE or n.startswith((f".{INTENT_FILE}.", ".current-")) for n in names)


def complete_interrupted_switch(config: Config) -> str | None:
    """Finish (or drop) an approval, rejection, rollback or activation whose process was killed;
    call under the run lock. Returns what was done, in words, or None when nothing was left.

    Past the commit point (``current`` moved, or a rejection's history line written) the missing
    history and audit lines are written, marked as completed by a later run. Before it nothing
    happened: production never changed, so the intent is dropped and the operator is told.
    """
    if not switch_left_unfinished(config):  # every cron tick asks: one listing when nothing was left
        return None
    remove_stale_temporaries([config.deployment_folder])  # a half-written intent of a killed process
    _remove_stray_links(config)
    path = intent_path(config)
    if not path.exists():
        return None
    intent = read_json_or_none(path)
    if not isinstance(intent, dict) or not isinstance(intent.get("history"), dict) or not intent.get("id"):
        logger.error("%s is damaged and was removed: nothing it named can be finished", path)
        _drop_intent(config)
        return "a damaged intent removed"
    history = logbook.shown(intent["history"])  # as text safe to log, whatever the file holds
    what = f"{history.get('action')} of {history.get('version')}" + (
        f" by {history['by']}" if history.get("by") else ""
    )
    recorded = any(h.get(INTENT_FIELD) == intent["id"] for h in logbook.read_history(config))
    switched = intent.get("switch_to") is not None and current_version_or_none(config) == intent["switch_to"]
    if not recorded and not switched:
        _drop_intent(config)
        logger.warning(
            "the %s was interrupted before it took effect: it did not happen, and %s stays current; run it again",
            what,
            current_version_or_none(config) or "no version",
        )
        return f"{what}: interrupted before it took effect, not done"
    written = _write_intended_lines(config, intent, note="the process that made this change was interrupted")
    _drop_intent(config)
    if written:
        logger.warning("completed the interrupted %s: wrote its %s line(s)", what, " and ".join(written))
    return f"{what}: completed" + (f" ({' and '.join(written)} line written)" if written else "")


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
    unapproved = {v for v, s in approval_states(config).items() if s["state"] in ("pending", "rejected", "superseded")}
    older = [
        v
        for v in (names if broken else [v for v in names if version_number(v) < version_number(current)])
        if v not in unapproved
    ]
    for candidate in reversed(older):
        try:
            verify_version(versions_folder(config) / candidate)
        except LOAD_ERRORS as exc:
            logger.warning("skipping %s: %s", candidate, exc)
            continue
        origin = current or "a broken current link"
        _carry_out(config, _history_line("rollback", candidate, current, f"rollback from {origin}"), None, candidate)
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
    state = approval_states(config).get(version, {}).get("state")
    if state == "pending":
        raise DeploymentError(f"{version} awaits approval: approve it with --approve {version} --by NAME")
    if state in ("rejected", "superseded"):
        raise DeploymentError(f"{version} was {state} before it was ever approved: it cannot be activated")
    try:
        verify_version(path)
    except LOAD_ERRORS as exc:
        raise DeploymentError(f"{version} cannot be activated: {exc}") from None
    current = current_version_or_none(config)
    if current == version:
        logger.info("%s is already current", version)
        return version
    reason = f"activated by hand (was {current or 'no usable version'})"
    _carry_out(config, _history_line("activate", version, current, reason), None, version)
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
    mentioned = {h.get(key) for h in logbook.read_history(config) for key in ("version", "previous_version")}
    if newest in mentioned:
        return None  # its deploy was recorded (and maybe rolled back since)
    try:
        manifest = verify_version(versions_folder(config) / newest)
    except LOAD_ERRORS as exc:
        logger.error("an interrupted deployment of %s cannot be completed: %s", newest, exc)
        return None
    current = current_version_or_none(config)
    if current not in (newest, manifest.get("previous_version")):
        return None
    pending = bool(manifest.get("pending_approval"))
    if current != newest and not pending:
        _switch_current(config, newest)
    _supersede(config, [v for v in pending_versions(config) if v != newest], newest)
    extra = {"pending_approval": True} if pending else {}
    _record(
        config,
        "deploy",
        newest,
        manifest.get("previous_version"),
        manifest.get("reason", ""),
        note="completed by a later run: the deploying process was interrupted",
        **extra,
    )
    logger.warning("completed the interrupted deployment of %s", newest)
    return newest


def _checked_trained_model(config: Config) -> dict[str, Any]:
    folder = config.model_folder
    for name in (modelfiles.model_path(folder).name, METADATA_FILE, SCORES_FILE, SCORE_FILE):
        if not (folder / name).is_file():
            raise DeploymentError(f"{folder / name} is missing: train and score a model first")
    metadata = read_json(folder / METADATA_FILE)
    model_file = modelfiles.model_path(folder)
    if sha256_file(model_file) != metadata.get("model_sha256"):
        raise DeploymentError(f"{model_file} does not match its metadata's checksum: retrain")
    scores = read_json(folder / SCORES_FILE)
    if scores.get("model_trained_at") != metadata["trained_at"]:
        raise DeploymentError(f"{folder / SCORES_FILE} scores another model than {model_file.name}: score it again")
    return metadata


def _assemble(config: Config, incoming: Path) -> dict[str, str]:
    """Copy a version's files into ``incoming``, synced. Returns {name: sha256}."""
    model_file = modelfiles.model_path(config.model_folder).name
    sources = {name: config.model_folder / name for name in (model_file, METADATA_FILE, SCORES_FILE, SCORE_FILE)}
    for name in (artefacts.INGESTED_NAMES_FILE, artefacts.RECORD_FILE):
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
    from risk.core.tables import csv_bytes
    from risk.data import masterstore

    sample = masterstore.sample_master(config, config["reference_sample_rows"], config["random_seed"])
    return csv_bytes(sample)


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
    aside = link.with_name(f"broken-current-{artefacts.utc_stamp()}-{_unique_suffix()[:6]}")
    before_change(aside)
    os.rename(link, aside)
    logger.warning("%s was not a link to a version: moved it to %s", link, aside)


def _record(
    config: Config, action: str, version: str, previous: str | None, reason: str, note: str | None = None, **fields: Any
) -> None:
    append_json_line(logbook.history_path(config), _history_line(action, version, previous, reason, note, **fields))


def _history_line(
    action: str, version: str, previous: str | None, reason: str, note: str | None = None, **fields: Any
) -> dict[str, Any]:
    line = {
        "at": artefacts.utc_now(),
        "action": action,
        "version": version,
        "previous_version": previous,
        "reason": reason,
        **fields,
    }
    if note or action in APPROVAL_ACTIONS:
        line["note"] = note or ""
    return line


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
    _remove_stray_links(config)


def _remove_stray_links(config: Config) -> None:
    """The half-made ``current`` links of a killed deploy or switch."""
    for stray in config.deployment_folder.glob(".current-*"):
        before_change(stray)
        stray.unlink(missing_ok=True)


def remove_incomplete(config: Config) -> None:
    """What killed deploys left (half-built versions, stray links); call under the run lock."""
    _remove_incomplete(config)
