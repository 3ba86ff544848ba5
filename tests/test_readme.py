"""The README's and docs/' claims that a test can see: the `make` targets and their CONFIG,
every config key and its default, every endpoint, every relative link, the test count, and the
short sections at the top of the README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from risk.core.dburls import SOURCE_KEYS
from risk.core.settings import DEFAULTS
from tests.conftest import write_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
README = PROJECT_DIR / "README.md"
DOCS = PROJECT_DIR / "docs"
MAKEFILE = PROJECT_DIR / "Makefile"
# The quick start and the operator's daily path, in this order, before any reference.
README_SECTIONS = ["Install", "Run", "Test", "Operate", "Approve", "Serve"]
MAX_CELL_WORDS = 60  # a table cell longer than this belongs in a paragraph
TEST_COUNT_TOLERANCE = 0.15
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
MAKE_CALL = re.compile(r"(?<![\w/-])make ([a-z][a-z-]*)")
ENDPOINT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_/<>:.-]*)")
MIB = re.compile(r"^(\d+) MiB$")


def documents() -> dict[Path, str]:
    """The README and every page of docs/, by path."""
    pages = [README, *sorted(DOCS.glob("*.md"))]
    return {page: page.read_text(encoding="utf-8") for page in pages}


def code_of(markdown: str) -> str:
    """The code in a page: fenced blocks and inline code spans, one per line."""
    fenced = FENCE.findall(markdown)
    inline = INLINE_CODE.findall(FENCE.sub("", markdown))
    return "\n".join(fenced + inline)


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table row of a page (header and rule rows included)."""
    rows = []
    for line in FENCE.sub("", markdown).splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            rows.append([cell.strip() for cell in line.strip()[1:-1].split(" | ")])
    return rows


def code_names(cell: str) -> list[str]:
    return INLINE_CODE.findall(cell)


def makefile_recipes() -> dict[str, str]:
    """Each target of the Makefile with its recipe (the tab-indented lines below it)."""
    recipes: dict[str, str] = {}
    target = None
    for line in MAKEFILE.read_text(encoding="utf-8").splitlines():
        rule = re.match(r"^([a-z][a-z-]*):", line)
        if rule:
            target = rule.group(1)
            recipes[target] = line + "\n"
        elif line.startswith("\t") and target:
            recipes[target] += line + "\n"
        else:
            target = None
    return recipes


# ----------------------------------------------------------------------------- make targets


def test_every_make_target_mentioned_exists_and_every_target_is_mentioned() -> None:
    targets = set(makefile_recipes())
    mentioned = {name for text in documents().values() for name in MAKE_CALL.findall(code_of(text))}
    assert mentioned - targets == set(), "the documents mention make targets the Makefile does not have"
    assert targets - mentioned == set(), "Makefile targets that no document mentions"


def test_the_config_column_of_the_make_targets_matches_the_makefile() -> None:
    """docs/commands.md says, per target, whether CONFIG reaches its scripts."""
    recipes = makefile_recipes()
    stated = {}
    for cells in table_rows((DOCS / "commands.md").read_text(encoding="utf-8")):
        target = re.fullmatch(r"`make ([a-z-]+)`", cells[0])
        if target:
            stated[target.group(1)] = cells[1]
    assert set(stated) == set(recipes), "docs/commands.md lists each target once"
    for target, config in stated.items():
        uses_config = "$(CONFIG)" in recipes[target]
        assert config.split(",")[0].split()[0] in ("yes", "no", "partly"), (target, config)
        assert config.startswith("no") != uses_config, (target, config)


# ----------------------------------------------------------------------------- configuration


def documented_defaults(markdown: str) -> dict[str, str]:
    """Each key in the first column of a key/default/meaning table, with its default cell."""
    found: dict[str, str] = {}
    for cells in table_rows(markdown):
        if len(cells) >= 2 and cells[0].startswith("`"):
            keys = code_names(cells[0])
            defaults = cells[1].split(", ") if len(cells) == 3 else [""]
            if len(defaults) != len(keys):  # `null` for two keys: it holds for both
                defaults = defaults[:1] * len(keys)
            for key, default in zip(keys, defaults):
                assert key not in found, f"{key} is documented twice"
                found[key] = default
    return found


def parsed_default(text: str) -> object:
    """A documented default as a value, or Ellipsis when it is words (``all three``)."""
    size = MIB.match(text)
    if size:
        return int(size.group(1)) * 1024 * 1024
    literal = re.fullmatch(r"`([^`]+)`", text)
    if not literal:
        return ...
    try:
        return json.loads(literal.group(1))
    except ValueError:
        return literal.group(1)


def test_every_config_key_is_documented_with_its_default_and_no_other() -> None:
    documented = documented_defaults((DOCS / "configuration.md").read_text(encoding="utf-8"))
    assert set(documented) == set(DEFAULTS), (
        f"undocumented: {sorted(set(DEFAULTS) - set(documented))}; unknown: {sorted(set(documented) - set(DEFAULTS))}"
    )
    for key, text in documented.items():
        value = parsed_default(text)
        if value is not ...:
            assert value == DEFAULTS[key], (key, text, DEFAULTS[key])


def test_every_database_source_key_is_documented_and_no_other() -> None:
    rows = table_rows((DOCS / "database-sources.md").read_text(encoding="utf-8"))
    documented = {name for cells in rows if cells[0].startswith("`") for name in code_names(cells[0])}
    assert documented == SOURCE_KEYS


# ----------------------------------------------------------------------------- endpoints


def test_every_endpoint_is_documented_and_every_documented_one_exists(tmp_path: Path) -> None:
    from risk.api import service

    app = service.create_app(write_config(tmp_path).path)
    registered = {
        (method, rule.rule) for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    api_page = (DOCS / "api.md").read_text(encoding="utf-8")
    for method, path in registered:
        assert f"{method} {path}" in api_page, f"docs/api.md does not describe {method} {path}"
    for page, text in documents().items():
        for method, path in ENDPOINT.findall(text):
            path = "/static/<path:filename>" if path.startswith("/static/") else path.rstrip(".")
            assert (method, path) in registered, f"{page.name} documents {method} {path}, which the app does not answer"


# ----------------------------------------------------------------------------- links


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as '-'."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", markdown), re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    pages = documents()
    for page, text in pages.items():
        for target in LINK.findall(FENCE.sub("", text)):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            assert linked.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor:
                assert anchor in heading_anchors(linked.read_text(encoding="utf-8")), (page.name, target)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"the README's reference table does not link docs/{page.name}"


# ----------------------------------------------------------------------------- shape


def test_the_readme_starts_with_the_daily_path_in_short_sections() -> None:
    headings = re.findall(r"^## (.+)$", FENCE.sub("", README.read_text(encoding="utf-8")), re.M)
    assert headings[: len(README_SECTIONS)] == README_SECTIONS


def test_no_table_cell_is_a_paragraph() -> None:
    for page, text in documents().items():
        for cells in table_rows(text):
            for cell in cells:
                assert len(cell.split()) <= MAX_CELL_WORDS, f"{page.name}: a {len(cell.split())}-word cell: {cell[:60]}"


# ----------------------------------------------------------------------------- the test count


def stated_test_count() -> int:
    found = re.findall(r"about ([\d,]+) tests", README.read_text(encoding="utf-8"))
    assert len(found) == 1, "the README states the test count once"
    return int(found[0].replace(",", ""))


def collects_the_whole_suite(config: pytest.Config) -> bool:
    """This session collected every test, none left out: pytest given no paths (so ``testpaths``),
    no -k, -m, --deselect, --ignore or --last-failed."""
    option = config.option
    return config.args_source == pytest.Config.ArgsSource.TESTPATHS and not any(
        getattr(option, name, None) for name in ("keyword", "markexpr", "deselect", "ignore", "ignore_glob", "lf")
    )


def collected_test_count(request: pytest.FixtureRequest) -> int:
    """The suite's test count: this session's own collection when it is the whole suite (`make
    test`, each xdist worker collects it all), else that of `pytest --collect-only`."""
    if collects_the_whole_suite(request.config):
        return request.session.testscollected
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(re.search(r"^(\d+) tests? collected", collected.stdout, re.M).group(1))


@pytest.mark.slow
def test_the_stated_test_count_is_within_15_percent_of_the_collected_count(request: pytest.FixtureRequest) -> None:
    """Outside a whole-suite session, collecting imports every test module (about 25 s on 2 busy
    cores), hence `slow`."""
    count = collected_test_count(request)
    stated = stated_test_count()
    assert abs(stated - count) <= TEST_COUNT_TOLERANCE * count, f"the README says about {stated}; {count} collected"
