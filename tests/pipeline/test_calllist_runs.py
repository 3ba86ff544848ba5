"""The cron run and the call list: a list exactly when the current version or the client book changes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import fullprocess
from risk.core import logbook
from risk.core.settings import Config
from risk.data import sample
from risk.model import scoring
from risk.registry import booklist, calllists, deploy, predictions, versions
from tests.conftest import (
    SCORES_WARNING,
    UNINFORMATIVE_WARNING,
    deploy_uninformative_version,
    import_or_fail_in_ci,
    rewrite_config,
)
from tests.data.test_dbpull import (  # noqa: F401 (database and postgres_server are fixtures)
    PostgresDatabase,
    SqliteDatabase,
    client_rows,
    database,
    postgres_server,
)
from tests.model.test_compute_dask import tasks_run_on
from tests.pipeline.test_process import probe_fast_path


def run(config: Config) -> int:
    return fullprocess.main(["--config", str(config.path)])


def lists(config: Config) -> list[str]:
    folder = calllists.call_list_folder(config)
    return sorted(p.name for p in folder.glob("2*.csv")) if folder.is_dir() else []


@pytest.fixture
def book_project(deployed_project: Config) -> Config:
    """The deployed sample project with its client book (sampledata.py wrote it) configured."""
    return rewrite_config(deployed_project, client_book=sample.SAMPLE_BOOK)


def test_the_first_run_writes_a_list_and_a_run_with_nothing_changed_writes_none_and_stays_light(
    book_project: Config,
) -> None:
    assert run(book_project) == 0
    [first] = lists(book_project)
    info, frame = calllists.latest_call_list(book_project)
    assert info["file"] == first and info["version"] == "v1" and info["rows"] == sample.CLIENTS
    assert info["previous"] is None and (frame["change"] == "new").all()
    assert frame["rank"].tolist() == list(range(1, sample.CLIENTS + 1))
    assert frame["risk"].is_monotonic_decreasing
    assert set(frame["band"]) <= {"green", "amber", "red"} and info["flagged"] == int(frame["flagged"].sum())
    assert info["warnings"] == versions.version_warnings(
        versions.load_deployed_model(book_project).metadata, versions.load_deployed_model(book_project).scores
    )
    assert logbook.read_audit(book_project)[-1]["call_list"]["file"] == first

    assert probe_fast_path(book_project) == "0 []", "an unchanged book costs a stat, not pandas"
    assert run(book_project) == 0
    assert lists(book_project) == [first]
    assert "call_list" not in logbook.read_audit(book_project)[-1]


def test_a_book_change_makes_one_new_list_with_its_changes(book_project: Config) -> None:
    assert run(book_project) == 0
    [first] = lists(book_project)
    _, before = calllists.latest_call_list(book_project)
    path = book_project.root / sample.SAMPLE_BOOK
    clients = pd.read_csv(path, dtype={"corporation": str})
    riskiest = before["corporation"].iloc[0]
    clients = clients[clients["corporation"] != riskiest]  # the riskiest left
    clients.loc[len(clients)] = ["new001", 0, 500, 3]  # a new client, quiet and small: risky
    clients.to_csv(path, index=False)

    assert run(book_project) == 0
    assert len(lists(book_project)) == 2
    info, after = calllists.latest_call_list(book_project)
    assert info["previous"] == first and "book changed" in logbook.read_audit(book_project)[-1]["call_list"]["reason"]
    assert riskiest not in set(after["corporation"])
    new = after.set_index("corporation").loc["new001"]
    assert new["change"] == "new" and pd.isna(new["previous_rank"])
    kept = after[after["corporation"] != "new001"]
    expected = np.where(
        kept["rank"] < kept["previous_rank"], "up", np.where(kept["rank"] > kept["previous_rank"], "down", "same")
    )
    assert (kept["change"].to_numpy() == expected).all() and set(kept["change"]) >= {"up", "same"}

    assert run(book_project) == 0
    assert len(lists(book_project)) == 2, "the same book again: no list"


@pytest.mark.slow  # a deploy writes its reports
def test_a_version_change_makes_one_new_list_and_a_rollback_another(book_project: Config) -> None:
    assert run(book_project) == 0
    assert deploy.deploy_model(book_project, reason="by hand") == "v2"
    assert run(book_project) == 0
    assert len(lists(book_project)) == 2 and calllists.latest_list_info(book_project)["version"] == "v2"
    assert run(book_project) == 0
    assert len(lists(book_project)) == 2

    assert deploy.rollback(book_project) == "v1"
    assert run(book_project) == 0
    assert len(lists(book_project)) == 3 and calllists.latest_list_info(book_project)["version"] == "v1"


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda path: path.unlink(), "does not exist"),
        (lambda path: path.write_bytes(b"\xff\xfe\x00garbage"), "not UTF-8"),
        (lambda path: path.write_text("lastmonth_activity,number_of_employees\n1,2\n"), "lacks column(s)"),
        (
            lambda path: path.write_text(
                "corporation,lastmonth_activity,lastyear_activity,number_of_employees\n,1,2,3\n"
            ),
            "no client can be scored",
        ),
    ],
)
def test_a_bad_book_keeps_the_previous_list_and_fails_in_one_line(
    book_project: Config, capsys: pytest.CaptureFixture, damage, words: str
) -> None:
    assert run(book_project) == 0
    latest = calllists.latest_json_path(book_project).read_bytes()
    capsys.readouterr()
    damage(book_project.root / sample.SAMPLE_BOOK)

    assert run(book_project) == 1
    assert calllists.latest_json_path(book_project).read_bytes() == latest and len(lists(book_project)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err and "call list not written: client_book" in err
    record = logbook.read_audit(book_project)[-1]
    assert record["status"] == "failed" and words in record["call_list"]["failed"]


def test_a_run_killed_while_writing_a_list_is_finished_by_the_next(book_project: Config) -> None:
    assert run(book_project) == 0
    folder = calllists.call_list_folder(book_project)
    first = calllists.latest_list_info(book_project)
    path = book_project.root / sample.SAMPLE_BOOK
    path.write_text(path.read_text() + "late01,0,1,1\n")
    # What a run killed after the stamped list and latest.csv, before latest.json, leaves behind.
    (folder / "20990101T000000Z_v1.csv").write_text("rank,corporation\n1,half\n")
    (folder / ".latest.json.1234.abcdef.tmp").write_text("{")
    (folder / calllists.LATEST_CSV).write_text("torn")
    info, frame = calllists.latest_call_list(book_project)
    assert info == first and len(frame) == sample.CLIENTS, "readers still see the whole previous list"

    assert run(book_project) == 0
    info, frame = calllists.latest_call_list(book_project)
    assert info["previous"] == first["file"] and "late01" in set(frame["corporation"])
    assert calllists.latest_csv_path(book_project).read_bytes() == (folder / info["file"]).read_bytes()
    assert not list(folder.glob(".*.tmp"))


def test_no_book_no_list(deployed_project: Config) -> None:
    assert run(deployed_project) == 0
    assert not calllists.call_list_folder(deployed_project).exists()


def test_chunked_scoring_equals_one_shot_scoring(book_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = versions.load_deployed_model(book_project)
    the_book = booklist.read_book_for(book_project, deployed)
    monkeypatch.setattr(booklist, "CHUNK_ROWS", 777)  # 13 chunks, the last one short
    explainer, _ = booklist.explainer_and_method(book_project, deployed)
    risk, predicted, reasons = booklist.score_book(book_project, deployed, the_book.frame, explainer)
    whole_risk, whole_predicted = predictions.risk_and_predictions(deployed, the_book.frame)
    # A forest sums its trees' votes in blocks whose size follows the rows: one risk in 10,000 differs in its last bit.
    np.testing.assert_allclose(risk, whole_risk, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(predicted, whole_predicted)
    whole_reasons = explainer.reasons(the_book.frame, top=3)
    assert [list(filter(None, row)) for row in zip(*reasons)] == whole_reasons
    assert len(risk) == sample.CLIENTS and scoring.CLUSTER_MIN_ROWS > len(risk)


def test_the_list_json_says_what_the_budget_reaches(book_project: Config) -> None:
    book_project = rewrite_config(book_project, contact_budget=50)
    assert run(book_project) == 0
    info, frame = calllists.latest_call_list(book_project)
    saved = json.loads(calllists.latest_json_path(book_project).read_text())
    assert saved == info and info["contact_budget"] == 50
    assert info["flagged_beyond_budget"] == int(frame["flagged"].iloc[50:].sum())
    assert info["expected_positives_reached"] == pytest.approx(
        frame["risk"].iloc[:50].sum() / frame["risk"].sum(), abs=1e-6
    )
    assert info["written_at"].endswith("+00:00") and info["book_checks"]["rows_kept"] == sample.CLIENTS


def test_a_budget_change_makes_one_new_list_whose_figures_are_the_new_budgets(book_project: Config) -> None:
    # The list kept the budget it was written with: after contact_budget 100 -> 50 the JSON, /calllist
    # and the page still said "beyond the budget of 100 calls" until the book or the version changed.
    assert run(book_project) == 0
    book_project = rewrite_config(book_project, contact_budget=50)
    assert run(book_project) == 0
    info, frame = calllists.latest_call_list(book_project)
    assert len(lists(book_project)) == 2 and info["contact_budget"] == 50
    assert info["why"] == "contact_budget is 50 and the newest list was made for 100"
    assert info["flagged_beyond_budget"] == int(frame["flagged"].iloc[50:].sum())
    assert (frame["change"] == "same").all()
    assert run(book_project) == 0 and len(lists(book_project)) == 2


def test_a_database_book_makes_a_list_and_another_only_when_its_rows_change(
    database: SqliteDatabase | PostgresDatabase,  # noqa: F811 (the fixture imported above)
    deployed_project: Config,
) -> None:
    database.create_clients()
    database.insert(client_rows(1, 300))
    spec = {key: value for key, value in database.source().items() if key != "watermark_column"}
    config = rewrite_config(deployed_project, client_book=spec)

    assert run(config) == 0
    info, frame = calllists.latest_call_list(config)
    assert info["rows"] == 300 and info["book"].startswith(f"crm ({database.kind}")
    assert frame["corporation"].str.startswith("db-").all()
    assert run(config) == 0
    assert len(lists(config)) == 1, "the same rows: no new list"

    database.insert(client_rows(301, 5))
    assert run(config) == 0
    assert len(lists(config)) == 2 and calllists.latest_list_info(config)["rows"] == 305


@pytest.mark.slow
def test_a_large_book_is_scored_and_explained_on_the_cluster_as_here(
    book_project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = import_or_fail_in_ci(
        "distributed", "distributed (Dask) is not installed: pip install -r requirements.txt"
    )
    deployed = versions.load_deployed_model(book_project)
    the_book = booklist.read_book_for(book_project, deployed)
    explainer, _ = booklist.explainer_and_method(book_project, deployed)
    monkeypatch.setattr(booklist, "CHUNK_ROWS", 2_500)
    here = booklist.score_book(book_project, deployed, the_book.frame, explainer)
    monkeypatch.setattr(scoring, "CLUSTER_MIN_ROWS", 1_000)  # the sample book is "large"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    ) as cluster:
        config = rewrite_config(book_project, dask_scheduler_address=cluster.scheduler_address)
        there = booklist.score_book(config, deployed, the_book.frame, explainer)
        assert tasks_run_on(cluster, "risk-calllist") == 4
    np.testing.assert_allclose(there[0], here[0], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(there[1], here[1])
    for ours, theirs in zip(here[2], there[2]):
        assert ours.tolist() == theirs.tolist()


@pytest.mark.slow  # a deploy writes its reports
def test_a_version_no_better_than_chance_says_so_at_the_top_of_its_list(book_project: Config) -> None:
    version = deploy_uninformative_version(book_project)
    assert run(book_project) == 0
    info = calllists.latest_list_info(book_project)
    assert info["version"] == version
    assert info["warnings"][0] == UNINFORMATIVE_WARNING and SCORES_WARNING in info["warnings"]
