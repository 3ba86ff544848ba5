"""The model card (risk.report.card): model_card.md beside the reports and the report's second page."""

from __future__ import annotations

import json

import numpy as np
import pytest

from risk.core import artefacts
from risk.core.jsonfiles import append_json_line
from risk.core.settings import Config
from risk.monitoring import diagnostics, fairness
from risk.report import card as report_card
from risk.report import reports
from tests.conftest import page_number, page_text
from tests.conftest import rewrite_config as with_settings

PURPOSE = "Find *clients* at risk [before](http://x) they leave <b>#1</b>\n# not a heading"


def test_markdown_escaping_neutralises_markup_and_line_breaks() -> None:
    escaped = report_card.md_escape(PURPOSE)
    assert "\n" not in escaped
    assert escaped == r"Find \*clients\* at risk \[before\](http://x) they leave \<b>#1\</b> # not a heading"
    assert report_card.md_escape("a_b|c`d") == r"a_b|c\`d"
    assert report_card.md_escape("# heading") == r"\# heading" and report_card.md_escape("1. item") == r"1\. item"
    assert report_card.md_escape("_emphasis_ &amp; 2 & 3") == r"\_emphasis\_ \&amp; 2 & 3"


@pytest.mark.parametrize(
    "text",
    [
        "not configured (set model_purpose in config.json)",
        "2026-12-06T23:40:02+00:00",
        "2026-08_clients.csv (2500 rows)",
        "0.5467, 95% interval 0.4912 to 0.6062",
        "-5 clients a month",
        "#1 client",
    ],
)
def test_markdown_escaping_leaves_what_markdown_reads_as_text_alone(text: str) -> None:
    """Parentheses, a word's inner underscore and a time zone's plus are text to Markdown: no backslashes."""
    assert report_card.md_escape(text) == text


def test_bootstrap_intervals_are_seeded_and_hold_the_point_value() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    risk = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, 300), 0, 1)
    predicted = (risk >= 0.4).astype(int)
    first = report_card.bootstrap_interval("roc_auc", y, risk, predicted, seed=1)
    assert first == report_card.bootstrap_interval("roc_auc", y, risk, predicted, seed=1)
    assert first != report_card.bootstrap_interval("roc_auc", y, risk, predicted, seed=2)
    from sklearn.metrics import roc_auc_score

    assert first[0] < roc_auc_score(y, risk) < first[1]
    costs = {"false_negative": 5, "false_positive": 1}
    low, high = report_card.bootstrap_interval("cost", y, risk, predicted, seed=1, cost_matrix=costs)
    point = ((predicted == 0) & (y == 1)).sum() * 5 / 300 + ((predicted == 1) & (y == 0)).sum() / 300
    assert low < point < high
    assert report_card.bootstrap_interval("roc_auc", np.zeros(50, int), risk[:50], predicted[:50], seed=1) is None, (
        "one class: no interval"
    )


def test_delong_gives_the_auc_and_the_standard_error_of_its_pairwise_definition() -> None:
    """Midranks give each row's placement at once; the same figures as comparing every positive with
    every negative (ties counting half), as DeLong (1988) defines them."""
    from sklearn.metrics import roc_auc_score

    from risk.model.scoring import delong_roc_auc

    rng = np.random.default_rng(7)
    y = (rng.random(400) < 0.3).astype(int)
    risk = np.round(rng.random(400) + 0.3 * y, 1)  # many ties
    pairs = (risk[y == 1][:, None] > risk[y == 0][None, :]) + 0.5 * (risk[y == 1][:, None] == risk[y == 0][None, :])
    expected_error = np.sqrt(pairs.mean(1).var(ddof=1) / (y == 1).sum() + pairs.mean(0).var(ddof=1) / (y == 0).sum())
    auc, error = delong_roc_auc(y, risk)
    assert auc == pytest.approx(roc_auc_score(y, risk), abs=1e-12)
    assert error == pytest.approx(expected_error, rel=1e-9)
    assert delong_roc_auc(np.r_[y[:10] * 0, 1], risk[:11]) is None, "one row of a class: no variance"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_closed_form_roc_auc_interval_agrees_with_the_bootstrap_where_it_is_used(seed: int) -> None:
    """From CLOSED_FORM_MIN_ROWS test rows the card's ROC AUC interval is DeLong's: on data of that
    size both intervals' bounds lie within a quarter of a standard error of each other."""
    rng = np.random.default_rng(seed)
    rows = report_card.CLOSED_FORM_MIN_ROWS
    y = (rng.random(rows) < 0.2).astype(int)
    risk = np.round(np.clip(0.3 + 0.2 * y + rng.normal(0, 0.2, rows), 0, 1), 3)
    predicted = (risk >= 0.4).astype(int)
    assert report_card.uses_closed_form("roc_auc", y) and not report_card.uses_closed_form("roc_auc", y[:-1])
    assert not report_card.uses_closed_form("f1", y)
    low, high, error = report_card.delong_interval(y, risk)
    boot_low, boot_high = report_card.bootstrap_interval("roc_auc", y, risk, predicted, seed=1)
    assert abs(low - boot_low) < 0.25 * error and abs(high - boot_high) < 0.25 * error
    assert high - low == pytest.approx(2 * 1.959964 * error, rel=1e-6)


def test_a_card_with_a_closed_form_interval_says_how_each_interval_was_computed(
    governed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deployed project's test data is small: the threshold comes down to it.
    monkeypatch.setattr(report_card, "CLOSED_FORM_MIN_ROWS", 10)
    monkeypatch.setattr(report_card, "CLOSED_FORM_MIN_CLASS_ROWS", 2)
    paths = reports.write_reports(governed, refresh_diagnostics=True)

    report = json.loads(paths["report_json"].read_text())
    intervals = report["model_card"]["intervals"]
    assert intervals["roc_auc"]["method"] == "delong" and intervals["f1"]["method"] == "bootstrap"
    assert intervals["roc_auc"]["low"] < intervals["roc_auc"]["value"] < intervals["roc_auc"]["high"]
    card = paths["model_card"].read_text(encoding="utf-8")
    assert "ROC AUC: normal interval from DeLong's (1988) closed-form standard error" in card
    assert "; F1: percentile bootstrap, 1000 resamples" in card and "seed 42" in card


@pytest.fixture
def governed(deployed_project: Config) -> Config:
    return with_settings(
        deployed_project,
        package_check_seconds=0,
        model_purpose=PURPOSE,
        protected_attributes=["number_of_employees"],
        cost_matrix={"false_negative": 5, "false_positive": 1},
    )


@pytest.mark.slow
def test_the_card_is_written_beside_the_reports_and_is_the_second_page(governed: Config) -> None:
    paths = reports.write_reports(governed, refresh_diagnostics=True)

    card = paths["model_card"].read_text(encoding="utf-8")
    assert paths["model_card"] == governed.reports_folder / "v1" / "model_card.md"
    assert f"- **purpose:** {report_card.md_escape(PURPOSE)}" in card
    assert "- **intended use:** not configured (set intended_use in config.json)" in card
    assert "2026-08_clients.csv (2500 rows)" in card, "the training files, from the version's ingestion record"
    assert "95% interval" in card and "ROC AUC" in card and "seed 42" in card
    assert "the threshold with the highest out-of-fold f1" in card
    assert "number_of_employees (used by the model)" in card
    # v1 went live by rule (require_approval off): the card says so, and which rule.
    assert "not approved yet" not in card
    assert "- **status:** no approval required (require_approval was off): deployed by the first-version rule" in card
    report = json.loads(paths["report_json"].read_text())
    assert report["pages"][1]["title"] == "Model card"
    text = page_text(paths["report_pdf"], 2)
    assert "Find *clients* at risk" in text and "deployed by the first-version rule" in text
    # The fairness section in the report's JSON and in the diagnostics /diagnostics serves.
    groups = report["fairness"]["attributes"]["number_of_employees"]["groups"]
    assert len([g for g in groups if g != fairness.MISSING]) == 4 and all(
        {"selection_rate", "true_positive_rate", "false_positive_rate"} <= set(g) for g in groups.values()
    )
    assert (
        diagnostics.load_diagnostics(governed, "v1")["fairness"]["attributes"]["number_of_employees"]["groups"]
        == groups
    )
    assert page_number(report, "Fairness across protected groups") and page_number(
        report, "Business cost and the decision threshold"
    )
    fairness_text = page_text(paths["report_pdf"], page_number(report, "Fairness across protected groups"))
    assert "screening flag, not a verdict" in fairness_text
    assert report["cost"]["test_cost"] == report["metrics"]["cost"]
    assert report["metrics_match_stored_scores"] is True, (
        "a cost matrix configured after scoring does not make the test data look changed"
    )


def test_the_diagnostics_endpoint_serves_the_fairness_section(
    governed: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from risk.api import service

    monkeypatch.delenv("API_TOKEN", raising=False)
    diagnostics.save_diagnostics(governed)
    served = service.create_app(governed.path).test_client().get("/diagnostics").get_json()
    groups = served["fairness"]["attributes"]["number_of_employees"]["groups"]
    assert (
        groups
        == diagnostics.load_diagnostics(governed, "v1")["fairness"]["attributes"]["number_of_employees"]["groups"]
    )
    assert all(0 <= g["selection_rate"] <= 1 for g in groups.values())


@pytest.mark.slow
def test_an_approval_recorded_in_the_history_is_on_the_card(governed: Config) -> None:
    history = governed.deployment_folder / artefacts.HISTORY_FILE
    append_json_line(
        history,
        {"at": "2026-11-01T10:00:00+00:00", "action": "reject", "version": "v9", "by": "someone", "note": "other"},
    )
    append_json_line(
        history,
        {
            "at": "2026-11-02T09:30:00+00:00",
            "action": "approve",
            "version": "v1",
            "by": "Ada_Lovelace",
            "note": "fine *really*",
        },
    )

    paths = reports.write_reports(governed)

    card = paths["model_card"].read_text(encoding="utf-8")
    assert "- **approved:** by Ada_Lovelace at 2026-11-02T09:30:00+00:00: fine \\*really\\*" in card
    assert "not approved yet" not in card and "someone" not in card
    assert "Ada_Lovelace" in page_text(paths["report_pdf"], 2)


@pytest.mark.parametrize("scores", ["separated", "tied"])
def test_an_interval_of_no_width_is_not_shown_as_certainty(scores: str) -> None:
    """Test data whose scores separate the classes perfectly (a leaked column) or all tie give both
    DeLong's and the bootstrap's interval no width: the card says what that does and does not show
    instead of "95% interval 1.0000 to 1.0000"."""
    rows = report_card.CLOSED_FORM_MIN_ROWS
    y = (np.arange(rows) % 5 == 0).astype(int)
    risk = y * 0.9 + 0.05 if scores == "separated" else np.full(rows, 0.3)
    low, high, error = report_card.delong_interval(y, risk)
    assert low == high and error == 0
    assert report_card.bootstrap_interval("roc_auc", y[:2000], risk[:2000], y[:2000], seed=1) == (low, high)
    card = {
        "intervals": {"roc_auc": {"value": low, "low": low, "high": high, "method": "delong", "standard_error": 0.0}},
        "bootstrap": {"confidence": 0.95, "resamples": 1000, "rows": rows, "seed": 42},
    }
    shown = dict(report_card._metric_items(card))["ROC AUC"]
    assert f"{low:.4f}; no interval: it has no width on this test data" in shown
    assert "95% interval" not in shown
