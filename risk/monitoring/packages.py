"""Which packages in requirements.txt are outdated: pinned, installed and latest version of each.

The latest versions come from the package indexes pip is configured with, asked the way
``pip index versions`` would, every package at once within a time budget; answers are cached
in ``<reports>/package_index_cache.json``. Diagnostics state the result per version.
"""

from __future__ import annotations

import base64
import configparser
import functools
import gzip
import html.parser
import json
import logging
import os
import queue
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from risk.core.artefacts import PACKAGE_CACHE_FILE, utc_now
from risk.core.environment import installed_version
from risk.core.files import atomic_write_json
from risk.core.jsonfiles import read_json_or_none
from risk.core.settings import PROJECT_DIR, Config

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = PROJECT_DIR / "requirements.txt"
UNKNOWN = "unknown"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
# JSON (PEP 691) where the index offers it, the HTML of PEP 503 otherwise, as pip asks.
SIMPLE_API_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"
SDIST_EXTENSIONS = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")
MAX_LOOKUPS_AT_ONCE = 32


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[tuple[str, str | None]]:
    """``(name, pinned version or specifier)`` for every requirement line; options are skipped."""
    requirements = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)", line)
        if not line or line.startswith("-") or not match:
            continue
        spec = match.group(2).strip()
        requirements.append((match.group(1), spec[2:].strip() if spec.startswith("==") else (spec or None)))
    return requirements


def outdated_packages_list(config: Config, requirements: Path | None = None, use_cache: bool = True) -> dict[str, Any]:
    """Pinned, installed and latest available version of every package in ``requirements.txt``.

    The latest versions come from the package indexes pip is configured with (so pip's own
    configuration decides which are asked), every package asked at once, at most
    ``package_check_seconds`` in all; a package not answered in time is ``"unknown"``. Answers are kept ``package_cache_hours`` in
    ``<reports>/package_index_cache.json``; ``use_cache=False`` asks again.
    """
    pins = read_requirements(requirements or REQUIREMENTS_FILE)
    cache_path = config.reports_folder / PACKAGE_CACHE_FILE
    stored = _fresh_cache(cache_path, config["package_cache_hours"])
    cache = stored if use_cache else {}
    to_ask = [name for name, _ in pins if name not in cache]
    started = time.monotonic()
    answers = latest_versions(to_ask, config["package_check_seconds"])
    seconds = time.monotonic() - started
    checked_at = utc_now()
    found = {name: {"latest": latest, "checked_at": checked_at} for name, latest in answers.items() if latest}
    if found:
        atomic_write_json(cache_path, {**stored, **found})
    known = {**{name: entry["latest"] for name, entry in cache.items()}, **{n: e["latest"] for n, e in found.items()}}
    packages = [_package_row(name, pinned, known.get(name)) for name, pinned in pins]
    unknown = [row["name"] for row in packages if row["latest"] == UNKNOWN]
    if unknown and config["package_check_seconds"] > 0:
        logger.warning("latest version unknown for %s: package index unreachable or slow", ", ".join(unknown))
    return {
        "checked_at": checked_at,
        "index_budget_seconds": config["package_check_seconds"],
        "index_seconds": round(seconds, 3),
        "asked_index": to_ask,
        "from_cache": sorted(set(known) & {name for name, _ in pins} - set(found)),
        "packages": packages,
    }


def _package_row(name: str, pinned: str | None, latest: str | None) -> dict[str, Any]:
    installed = installed_version(name)
    return {
        "name": name,
        "pinned": pinned,
        "installed": installed,
        "latest": latest or UNKNOWN,
        "status": _package_status(pinned, installed, latest),
    }


def _package_status(pinned: str | None, installed: str | None, latest: str | None) -> str:
    from packaging.version import InvalidVersion, Version  # pinned in requirements.txt

    if installed is None:
        return "not installed"
    if pinned and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pinned) and pinned != installed:
        return "installed differs from pin"
    if latest is None:
        return "latest unknown"
    try:
        newer = Version(latest) > Version(installed)
    except InvalidVersion:
        newer = latest != installed
    return "outdated" if newer else "up to date"


def _fresh_cache(path: Path, hours: float) -> dict[str, dict[str, str]]:
    """Cached answers younger than ``hours``."""
    cached = read_json_or_none(path) or {}
    oldest = datetime.now(UTC) - timedelta(hours=hours)
    fresh = {}
    for name, entry in cached.items():
        try:
            if datetime.fromisoformat(entry["checked_at"]) >= oldest and entry["latest"]:
                fresh[name] = entry
        except (KeyError, TypeError, ValueError):
            continue  # a damaged entry is asked again
    return fresh


def latest_versions(names: list[str], budget_seconds: float) -> dict[str, str | None]:
    """The newest release of each package on pip's configured indexes; None where unanswered.

    Every package is looked up on every index at once (one round trip, not one pip process
    per package), with the rules of ``pip index versions``: final releases only, not yanked,
    a wheel this interpreter can install or a source archive, ``Requires-Python`` met. Lookups
    still running when ``budget_seconds`` are up are abandoned (daemon threads): a cron run
    never waits longer on an unreachable or slow index.
    """
    answers: dict[str, str | None] = {name: None for name in names}
    if budget_seconds <= 0 or not names:
        return answers
    deadline = time.monotonic() + budget_seconds
    sources, context = pip_index_sources(), _ssl_context()
    tasks: queue.Queue = queue.Queue()
    for name in names:
        for source in sources:
            tasks.put((name, source))
    done: queue.Queue = queue.Queue()
    for _ in range(min(MAX_LOOKUPS_AT_ONCE, tasks.qsize())):
        threading.Thread(target=_lookup_worker, args=(tasks, done, deadline, context), daemon=True).start()
    found: dict[str, list[Any]] = {name: [] for name in names}
    answered: set[str] = set()
    for _ in range(len(names) * len(sources)):
        try:
            name, versions = done.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if versions is not None:
            answered.add(name)
            found[name].extend(versions)
    for name in answered:
        answers[name] = str(max(found[name])) if found[name] else None
    return answers


def pip_index_sources(environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``(kind, location)`` of every index and find-links location pip is configured with.

    pip's own rules: its configuration files in order (global, user, site, then
    ``PIP_CONFIG_FILE``; ``os.devnull`` there disables them all), the ``[index]`` section over
    ``[global]``, and ``PIP_*`` environment variables over both.
    """
    environ = os.environ if environ is None else environ
    values = _pip_config_values(environ)

    def option(name: str) -> str | None:
        from_environment = environ.get("PIP_" + name.upper().replace("-", "_"))
        return (
            from_environment
            if from_environment is not None
            else values.get(f"index.{name}", values.get(f"global.{name}"))
        )

    sources = [("find-links", location) for location in (option("find-links") or "").split()]
    if (option("no-index") or "").strip().lower() in ("1", "y", "yes", "t", "true", "on"):
        return sources
    indexes = [option("index-url") or DEFAULT_INDEX_URL, *(option("extra-index-url") or "").split()]
    return [("index", url) for url in indexes] + sources


def _pip_config_values(environ: dict[str, str]) -> dict[str, str]:
    config_file = environ.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return {}
    home = Path(environ.get("HOME") or Path.home())
    files = [Path(d) / "pip" / "pip.conf" for d in environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (config_file and Path(config_file).exists()):  # pip skips the user's files then
        files += [
            home / ".pip" / "pip.conf",
            Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf",
        ]
    files.append(Path(sys.prefix) / "pip.conf")
    if config_file:
        files.append(Path(config_file))
    values: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # pip would stop on a broken file; the check just does without it
        for section in parser.sections():
            for key, value in parser.items(section):
                values[f"{section}.{key.lower().replace('_', '-')}"] = value
    return values


def _lookup_worker(tasks: queue.Queue, done: queue.Queue, deadline: float, context: ssl.SSLContext) -> None:
    while True:
        try:
            name, (kind, location) = tasks.get_nowait()
        except queue.Empty:
            return
        try:
            files = _index_files(kind, location, name, max(0.1, deadline - time.monotonic()), context)
            versions = _release_versions(files, name)
        except Exception as exc:  # any failure of one index leaves that answer unknown, never the run
            logger.debug("package index %s for %s: %s", location, name, exc)
            versions = None
        done.put((name, versions))


def _index_files(
    kind: str, location: str, name: str, timeout: float, context: ssl.SSLContext
) -> list[tuple[str, str | None, bool]]:
    """``(file name, requires-python, yanked)`` of the files offered for ``name``; [] if it is not there."""
    if kind == "find-links" and "://" not in location:
        folder = Path(location).expanduser()
        return [(p.name, None, False) for p in folder.iterdir()] if folder.is_dir() else []
    url = location if kind == "find-links" else f"{location.rstrip('/')}/{_canonical_name(name)}/"
    answer = _fetch(url, timeout, context)
    if answer is None:
        return []
    content_type, body = answer
    if "json" in content_type:
        return [
            (f["filename"], f.get("requires-python"), f.get("yanked") not in (None, False))
            for f in json.loads(body)["files"]
        ]
    links = _Links()
    links.feed(body.decode("utf-8", errors="replace"))
    return links.files


def _fetch(url: str, timeout: float, context: ssl.SSLContext) -> tuple[str, bytes] | None:
    """(content type, body) of ``url``; None where it does not exist (404, or no such file)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        path = path / "index.html" if path.is_dir() else path
        return ("text/html", path.read_bytes()) if path.is_file() else None
    headers = {"Accept": SIMPLE_API_ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "risk-assessment-diagnostics"}
    if parts.username:  # credentials in the index URL, as pip allows
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return response.headers.get("Content-Type", ""), body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _ssl_context() -> ssl.SSLContext:
    """pip's ``cert`` setting (a CA bundle) where one is configured; the system's otherwise."""
    cert = os.environ.get("PIP_CERT") or _pip_config_values(os.environ).get("global.cert")
    try:
        return ssl.create_default_context(cafile=cert if cert and Path(cert).is_file() else None)
    except (ssl.SSLError, OSError) as exc:  # an unreadable bundle: the system's, and say so
        logger.warning("pip's cert %s cannot be used (%s): the system's CA certificates are used instead", cert, exc)
        return ssl.create_default_context()


class _Links(html.parser.HTMLParser):
    """The file links of a PEP 503 simple-index page or a find-links page."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[tuple[str, str | None, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            filename = urllib.parse.unquote(urllib.parse.urlsplit(attributes["href"]).path.rsplit("/", 1)[-1])
            self.files.append((filename, attributes.get("data-requires-python"), "data-yanked" in attributes))


def _canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release_versions(files: list[tuple[str, str | None, bool]], name: str) -> list[Any]:
    """The versions ``pip index versions`` would list: final, not yanked, installable here."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    python = ".".join(map(str, sys.version_info[:3]))
    versions = []
    for filename, requires_python, yanked in files:
        version = None if yanked else _file_version(filename, _canonical_name(name))
        if version is None or version.is_prerelease:
            continue
        try:
            if requires_python and not SpecifierSet(requires_python).contains(python, prereleases=True):
                continue
        except InvalidSpecifier:
            pass  # pip ignores a malformed Requires-Python too
        versions.append(version)
    return versions


def _file_version(filename: str, canonical: str) -> Any:
    """The version of a wheel this interpreter supports, or of a source archive; None otherwise."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    if filename.endswith(".whl"):
        try:
            project, version, _, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion):
            return None
        return version if project == canonical and tags & _supported_tags() else None
    extension = next((e for e in SDIST_EXTENSIONS if filename.lower().endswith(e)), None)
    if extension is None:
        return None
    project, _, version_text = filename[: -len(extension)].rpartition("-")
    if _canonical_name(project) != canonical:
        return None
    try:
        return Version(version_text)
    except InvalidVersion:
        return None


@functools.lru_cache(maxsize=1)
def _supported_tags() -> frozenset:
    from packaging.tags import sys_tags

    return frozenset(sys_tags())
