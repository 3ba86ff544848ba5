"""The back-test: labelled rows joined with the latest prediction made before they arrived."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from risk.core.settings import Config
from risk.monitoring import outcomes
from tests.conftest import write_call_list, write_config

IDS = ["c1", "c2", "c3", "c4", "c5", "c6"]
RISKS = [0.9, 0.8, 0.7, 0.4, 0.2, 0.1]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path / "project")


def labelled(outcome: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"corporation": list(outcome), "exited": list(outcome.values())})


def back_test(config: Config, rows: pd.DataFrame, arrived_at: str) -> dict:
    [line] = outcomes.record_backtests(config, [(rows, {"name": "outcomes.csv", "ingested_at": arrived_at})])
    return line


def test_the_per_list_figures_on_a_hand_checked_example(config: Config) -> None:
    write_call_list(config, IDS, RISKS, stamp="20261207T090000Z", budget=2)
    # c6 is on the list but not labelled: outcome unknown; zz was never predicted: unmatched.
    rows = labelled({"c1": 1, "c2": 0, "c3": 1, "c4": 0, "c5": 0, "zz": 1})
    line = back_test(config, rows, "2026-12-07T10:00:00+00:00")

    assert (line["rows"], line["rows_matched"], line["rows_unmatched"]) == (6, 5, 1)
    [figures] = line["lists"]
    assert figures["version"] == "v1" and figures["clients_on_list"] == 6
    assert figures["outcome_unknown"] == 1, "c6 has no outcome yet: unknown, not a negative"
    assert (figures["rows_matched"], figures["positives"], figures["realised_rate"]) == (5, 2, 0.4)
    assert figures["contacted"] == {"rows": 2, "positives": 1, "rate": 0.5}  # c1 and c2, ranks 1 and 2
    assert figures["rest"] == {"rows": 3, "positives": 1, "rate": pytest.approx(1 / 3, abs=1e-6)}
    assert figures["flagged"] == {"rows": 4, "positives": 2, "rate": 0.5}  # risk >= 0.3: c1 to c4
    assert figures["not_flagged"] == {"rows": 1, "positives": 0, "rate": 0.0}
    assert figures["precision_at_budget"] == 0.5 and figures["recall_at_budget"] == 0.5
    assert figures["lift_at_budget"] == 1.25 and figures["expected_rate_at_budget"] == pytest.approx(0.85)
    assert figures["contacted_outcome_unknown"] == 0
    assert figures["roc_auc"] is None and figures["calibration"] == []
    assert any("ROC AUC needs 10" in note for note in figures["notes"])
    assert outcomes.backtests(config) == [line], "the line is kept whole in backtest.jsonl"


def test_unknown_outcomes_are_not_negatives(config: Config) -> None:
    """Only the labelled clients count: c3 to c6, never labelled, leave every rate alone."""
    write_call_list(config, IDS, RISKS, stamp="20261207T090000Z", budget=2)
    line = back_test(config, labelled({"c1": 1, "c2": 1}), "2026-12-07T10:00:00+00:00")
    [figures] = line["lists"]
    assert figures["realised_rate"] == 1.0 and figures["rows_matched"] == 2
    assert figures["outcome_unknown"] == 4 and figures["not_flagged"]["rows"] == 0
    assert figures["rest"] == {"rows": 0, "positives": 0, "rate": None}
    assert any("both outcomes" in note or "needs 10" in note for note in figures["notes"])


def test_the_join_takes_the_latest_prediction_before_arrival_never_one_made_after(config: Config) -> None:
    write_call_list(config, IDS, RISKS, stamp="20261207T090000Z", budget=2)  # v1 at 09:00
    write_call_list(config, [*IDS, "c7"], [0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 0.6], version="v2", stamp="20261207T110000Z")
    write_call_list(config, IDS, RISKS, version="v3", stamp="20261207T130000Z")  # after the batch: never used
    rows = labelled({"c1": 1, "c5": 0, "c7": 1})

    before_v2 = back_test(config, rows, "2026-12-07T10:00:00+00:00")
    assert [f["version"] for f in before_v2["lists"]] == ["v1"]
    assert before_v2["rows_unmatched"] == 1, "c7 was first listed at 11:00, after this batch arrived"

    after_v2 = back_test(config, rows, "2026-12-07T12:00:00+00:00")
    [figures] = after_v2["lists"]
    assert figures["version"] == "v2" and figures["rows_matched"] == 3 and after_v2["rows_unmatched"] == 0
    assert [v["version"] for v in after_v2["versions"]] == ["v2"]
    assert figures["mean_risk"] == pytest.approx((0.1 + 0.8 + 0.6) / 3, abs=1e-6), "v2's risks, not v1's or v3's"


def test_no_prediction_yet_writes_nothing(config: Config) -> None:
    assert outcomes.record_backtests(config, [(labelled({"c1": 1}), {"name": "a.csv", "ingested_at": "x"})]) == []
    assert not outcomes.backtest_path(config).exists()


def test_roc_auc_and_calibration_on_enough_rows_and_one_class_said_in_words(config: Config) -> None:
    ids = [f"k{n:02d}" for n in range(40)]
    risks = [n / 40 for n in range(40)]
    write_call_list(config, ids, risks, stamp="20261207T090000Z", budget=10)
    line = back_test(config, labelled({i: int(n >= 20) for n, i in enumerate(ids)}), "2026-12-07T10:00:00+00:00")
    [figures] = line["lists"]
    assert figures["roc_auc"] == 1.0 and figures["precision_at_budget"] == 1.0 and figures["recall_at_budget"] == 0.5
    assert len(figures["calibration"]) == 8 and figures["calibration"][0]["realised_rate"] == 0.0
    assert [b["rows"] for b in figures["calibration"]] == [5] * 8

    one_class = back_test(config, labelled({i: 0 for i in ids}), "2026-12-07T10:00:00+00:00")
    [figures] = one_class["lists"]
    assert figures["roc_auc"] is None and "every one of the 40 labelled clients stayed" in " ".join(figures["notes"])
    assert figures["recall_at_budget"] is None and figures["lift_at_budget"] is None


def at(text: str) -> float:
    return outcomes.parse_time(text).timestamp()


def test_a_logged_prediction_counts_when_it_is_the_latest_before_arrival(config: Config) -> None:
    from risk.monitoring import predlog

    write_call_list(config, IDS, RISKS, stamp="20261207T090000Z", budget=2)
    predlog.append_predictions(config, "v2", [({"corporation": "c1"}, 0.05, False)], when=at("2026-12-07T09:30:00Z"))
    predlog.append_predictions(config, "v3", [({"corporation": "c2"}, 0.01, False)], when=at("2026-12-07T10:30:00Z"))
    line = back_test(config, labelled({"c1": 1, "c2": 0, "zz": 0}), "2026-12-07T10:00:00+00:00")

    assert line["rows_matched"] == 2 and line["rows_unmatched"] == 1
    [listed] = line["lists"]
    assert listed["rows_matched"] == 1 and listed["contacted"]["rows"] == 1, "c2 from the list: v3 logged it later"
    by_version = {v["version"]: v for v in line["versions"]}
    assert set(by_version) == {"v1", "v2"} and by_version["v2"]["mean_risk"] == 0.05


def test_older_lists_are_read_only_for_clients_the_newer_ones_lack(config: Config, caplog) -> None:
    from risk.registry import calllists

    write_call_list(config, ["c0", *IDS], [0.5, *RISKS], stamp="20261207T080000Z")  # c0 left the book since
    write_call_list(config, IDS, RISKS, version="v2", stamp="20261207T090000Z")
    line = back_test(config, labelled({"c0": 1, "c1": 1, "c2": 0}), "2026-12-07T10:00:00+00:00")
    assert {f["version"]: f["rows_matched"] for f in line["lists"]} == {"v1": 1, "v2": 2}

    (calllists.call_list_folder(config) / "20261207T080000Z_v1.csv").unlink()
    caplog.clear()
    line = back_test(config, labelled({"c1": 1, "c2": 0}), "2026-12-07T10:00:00+00:00")
    assert [f["version"] for f in line["lists"]] == ["v2"]
    assert "left out" not in caplog.text, "the newest list held every client: the older one was not read"


def test_a_logged_id_with_spaces_around_it_is_the_same_client_as_in_the_batch(config: Config) -> None:
    """Ingestion and the book strip the ids; /prediction logs them as sent. ' c1 ' sent to the API is
    client c1 of the labelled batch, not a row matching no prediction."""
    from risk.monitoring import predlog

    predlog.append_predictions(config, "v2", [({"corporation": " c1 "}, 0.7, True)], when=at("2026-12-07T09:30:00Z"))
    line = back_test(config, labelled({"c1": 1}), "2026-12-07T10:00:00+00:00")
    assert line["rows_matched"] == 1 and line["rows_unmatched"] == 0


def test_the_rows_of_a_batch_add_up_when_a_client_is_labelled_twice(config: Config) -> None:
    """A client labelled twice in one batch is judged once, on its last row; the earlier row is counted
    (rows_repeated), so that rows = matched + unmatched + without id + repeated."""
    write_call_list(config, IDS, RISKS, stamp="20261207T090000Z", budget=2)
    rows = pd.DataFrame({"corporation": ["c1", "c1", "c2", None, "zz"], "exited": [0, 1, 0, 1, 0]})
    line = back_test(config, rows, "2026-12-07T10:00:00+00:00")
    assert line["rows"] == 5 and line["rows_matched"] == 2 and line["rows_unmatched"] == 1
    assert line["rows_without_id"] == 1 and line["rows_repeated"] == 1
    [listed] = line["lists"]
    assert listed["contacted"] == {"rows": 2, "positives": 1, "rate": 0.5}, "c1's last row (left) is the one judged"


def test_a_list_time_without_a_zone_is_read_as_utc_not_a_failed_back_test(config: Config) -> None:
    """Every record writes its times with +00:00; a list JSON written without (by hand, another tool)
    made the comparison with the batch's arrival raise TypeError, and the whole back-test failed."""
    import json

    from risk.registry import calllists

    write_call_list(config, IDS, RISKS, stamp="20261207T090000Z", budget=2)
    stamped = calllists.call_list_folder(config) / "20261207T090000Z_v1.json"
    info = json.loads(stamped.read_text())
    info["written_at"] = "2026-12-07T09:00:00"
    stamped.write_text(json.dumps(info))
    line = back_test(config, labelled({"c1": 1, "c6": 0}), "2026-12-07T10:00:00+00:00")
    assert line["rows_matched"] == 2 and line["lists"][0]["written_at"] == "2026-12-07T09:00:00+00:00"
