"""reports/outcomes.pdf from hand-made outcome records, read back from the PDF's text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from risk.monitoring import outcomes
from risk.report import outcomesreport
from tests.conftest import page_text, write_call_list, write_config


def test_the_page_shows_each_batch_the_version_change_the_budget_and_what_it_cannot_tell(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project")
    assert outcomesreport.refresh_outcomes_report(config) is None, "nothing to show: no report"
    for version, score, auc, at in (("v1", 0.61, 0.81, "10"), ("v1", 0.52, None, "11"), ("v2", 0.58, 0.77, "12")):
        realised = {"version": version, "metric": "f1", "score": score, "deployed_score": 0.6, "roc_auc": auc}
        realised.update(rows=40, positives=10, at=f"2026-12-07T{at}:00:00+00:00")
        if auc is None:
            realised["note"] = "the 40 row(s) judged hold one class only: no ROC AUC"
        outcomes.record_realised(config, realised)
    ids = [f"k{n:02d}" for n in range(40)]
    write_call_list(config, ids, [n / 40 for n in range(40)], stamp="20261207T090000Z", budget=10)
    rows = pd.DataFrame({"corporation": ids[:38], "exited": [int(n >= 33) for n in range(38)]})
    outcomes.record_backtests(config, [(rows, {"name": "b.csv", "ingested_at": "2026-12-07T10:00:00+00:00"})])

    pdf = outcomesreport.refresh_outcomes_report(config)
    text = " ".join(page_text(pdf, n) for n in (1, 2))
    assert "Outcomes over time" in text and "first version v1" in text
    assert "0.8100" in text and "0.7700" in text and "one class only: no ROC AUC" in text
    # ranks 1-10 are k39..k30: k39 and k38 are unknown, k37..k33 left, k32..k30 stayed
    assert "62.5% of 8" in text and "20261207T090000Z_v1" in text and "83.8%" in text
    assert "Unknown" in text and "Calibration of the last period" in text
    assert outcomesreport.refresh_outcomes_report(config) is None, "the same figures: not written again"
    outcomes.record_realised(config, {"version": "v2", "score": 0.5, "roc_auc": 0.7, "at": "2026-12-07T13:00:00+00:00"})
    assert outcomesreport.refresh_outcomes_report(config) == pdf, "new figures: written again"
