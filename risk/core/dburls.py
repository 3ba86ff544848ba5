"""The rules of ``database_sources`` in config.json, and the parsing of their URLs.

Below both ``settings.py`` (which checks a config when it is loaded) and ``risk/data/dbpull.py``
(which connects with what the URL says), so that neither imports the other. Stdlib only:
the cron fast path loads the config on every tick.
"""

from __future__ import annotations

from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any

DEFAULT_CONNECT_TIMEOUT_SECONDS = 10
DEFAULT_QUERY_TIMEOUT_SECONDS = 300
SOURCE_KEYS = {
    "name",
    "url",
    "password_env",
    "table",
    "query",
    "watermark_column",
    "connect_timeout_seconds",
    "query_timeout_seconds",
}
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
SQLITE_PREFIX = "sqlite:///"


def check_sources(values: dict[str, Any]) -> None:
    """Check ``database_sources``; raises ValueError naming the source and key (never a password)."""
    specs = values["database_sources"]
    if not isinstance(specs, list):
        raise ValueError("database_sources must be a list of sources")
    names = set()
    for index, spec in enumerate(specs):
        name = check_source(spec, f"database_sources[{index}]", values)
        if name in names:
            raise ValueError(f"database_sources[{index}]: name {name!r} is used twice")
        names.add(name)


def check_source(spec: Any, where: str, values: dict[str, Any], watermark: bool = True) -> str:
    """Check one database entry (a ``database_sources`` source, or ``client_book`` with
    ``watermark=False``: read whole each time, it has none); returns its name."""
    keys = SOURCE_KEYS if watermark else SOURCE_KEYS - {"watermark_column"}
    if not isinstance(spec, dict):
        needs = ", and watermark_column" if watermark else ""
        raise ValueError(f"{where} must be an object with name, url, table or query{needs}")
    unknown = sorted(set(spec) - keys)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(keys)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"{where}: name must be a non-empty word of letters, digits, - and _")
    where = f"{where} ({name})"
    for key in ("url", "watermark_column") if watermark else ("url",):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise ValueError(f"{where}: {key} must be a non-empty string")
    if ("table" in spec) == ("query" in spec):
        raise ValueError(f"{where}: give either a table or a query, not both or neither")
    for key in ("table", "query", "password_env"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key].strip()):
            raise ValueError(f"{where}: {key} must be a non-empty string")
    if "query" in spec:
        problem = why_not_one_statement(spec["query"])
        if problem:
            raise ValueError(f"{where}: query {problem}")
    for key in ("connect_timeout_seconds", "query_timeout_seconds"):
        value = spec.get(key, 1)
        # `not 0 < value <= a day` refuses NaN too (every comparison with NaN is false).
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 86400:
            raise ValueError(f"{where}: {key} must be a positive number of seconds, at most 86400 (a day)")
    try:
        parse_url(spec["url"], Path("."))
    except ValueError as exc:
        raise ValueError(f"{where}: url {exc}") from None
    if watermark and spec["watermark_column"] not in values["id_columns"] + values["drop_columns"]:
        raise ValueError(
            f"{where}: the watermark column {spec['watermark_column']!r} must also be listed in drop_columns "
            "(or id_columns): a value that only grows must not become a model feature"
        )
    return name


def why_not_one_statement(query: str) -> str | None:
    """Why ``query`` is not one statement, or None. A ``;`` outside quotes and comments (other
    than one at the very end) would let the query run statements of its own beside the pull's:
    ``...) AS x; COMMIT; DELETE FROM t; SELECT ...`` ends the read-only transaction first."""
    i, n = 0, len(query)
    while i < n:
        char = query[i]
        if char == ";":
            if query[i + 1 :].strip():
                return "must be one statement: a ';' outside quotes may end it only at the very end"
            return None
        if char in "'\"":  # a string or a quoted name; a doubled quote stays inside
            i = _after_quoted(query, i, char, backslashes=char == "'" and query[i - 1 : i] in ("e", "E"))
        elif char == "$":
            tag_end = query.find("$", i + 1)
            tag = query[i : tag_end + 1] if tag_end > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "a").isalnum() and not tag[1].isdigit()):
                close = query.find(tag, tag_end + 1)
                i = n if close < 0 else close + len(tag)
            else:
                i += 1  # a parameter such as $1, or a $ inside a name
        elif query.startswith("--", i):
            newline = query.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif query.startswith("/*", i):
            i = _after_block_comment(query, i)
        else:
            i += 1
    return None


def _after_quoted(query: str, start: int, quote: str, backslashes: bool) -> int:
    i = start + 1
    while i < len(query):
        if backslashes and query[i] == "\\":
            i += 2
        elif query[i] == quote:
            if query[i + 1 : i + 2] != quote:
                return i + 1
            i += 2
        else:
            i += 1
    return len(query)


def _after_block_comment(query: str, start: int) -> int:
    """PostgreSQL's block comments nest."""
    depth, i = 0, start
    while i < len(query):
        if query.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif query.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(query)


def parse_url(url: str, root: Path) -> tuple[str, str, Path | None, dict[str, Any]]:
    """(kind, where to show in messages, SQLite file, PostgreSQL connection arguments).

    Raises ValueError with a message that never repeats the URL (it might hold a password).
    """
    if url.startswith(SQLITE_PREFIX):
        rest = url[len(SQLITE_PREFIX) :]
        if "%" in rest:  # urllib.parse only when needed: this runs on the cron fast path
            from urllib.parse import unquote

            rest = unquote(rest)
        if not rest or rest == "/":
            raise ValueError("names no database file (sqlite:///clients.db, relative to the config's folder)")
        path = Path(rest) if rest.startswith("/") else root / rest
        return "sqlite", f"sqlite file {path}", path, {}
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError("must start with sqlite:/// or postgresql://")
    if parts.password is not None:
        raise ValueError("must not hold a password: put it in the environment variable named by password_env")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number") from None
    args: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query):
        if key == "password":
            raise ValueError("must not hold a password: put it in the environment variable named by password_env")
        args[key] = value
    if parts.hostname:
        args["host"] = parts.hostname
    if port:
        args["port"] = port
    if parts.username:
        from urllib.parse import unquote

        args["user"] = unquote(parts.username)
    database = parts.path.lstrip("/")
    if database:
        args["dbname"] = database
    location = f"{args.get('host', 'local socket')}{':' + str(port) if port else ''}/{database}"
    return "postgresql", f"postgresql at {location}", None, args
