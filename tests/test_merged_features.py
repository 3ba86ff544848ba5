"""Hostile tests of features merged together (rebuild + drift checkpoint, blends served, ...)."""
from __future__ import annotations

import json
import os
import shutil
import time

import fullprocess
import ingestion
import sampledata
from settings import Config


def settled_copy(source, destination) -> None:
    """Copy a file into the input folder as one written an hour ago (nothing waits for it)."""
    shutil.copy(source, destination)
    an_hour_ago = time.time() - 3600
    os.utime(destination, (an_hour_ago, an_hour_ago))


def test_rows_added_after_a_rebuild_to_a_smaller_master_are_judged(deployed_project: Config):
    """Sources gone, master rebuilt smaller: the offsets recorded against the old master (drift
    checkpoint, v1's trained-on size) must not hide the next batch's rows."""
    config = deployed_project
    (config.input_folder / "2026-10_clients.csv").unlink()
    ingestion.master_path(config).unlink()
    rebuilt = ingestion.rebuild_master(config)
    assert rebuilt["rebuilt"] and rebuilt["rows"] == 5000
    for batch in (config.root / sampledata.SAMPLE_BATCH_FOLDER).glob("*.csv"):
        settled_copy(batch, config.input_folder / batch.name)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    record = fullprocess.read_audit(config)[-1]
    assert record["rows_added"] == 1500
    assert record.get("rows_judged") == 1500, record


def test_a_positive_label_matching_no_value_is_named_by_the_set_up_check(deployed_project: Config, capsys):
    """positive_label "yes" on 0/1 data: the test data is not "one class only" (it has both);
    the message names the values seen and the key to fix, not "add rows of both classes"."""
    config = deployed_project
    values = json.loads(config.path.read_text(encoding="utf-8"))
    config.path.write_text(json.dumps({**values, "positive_label": "yes"}), encoding="utf-8")
    settled_copy(config.test_data_folder / "testdata.csv", config.input_folder / "new.csv")
    assert fullprocess.main(["--config", str(config.path)]) == 1
    reason = fullprocess.read_audit(config)[-1]["reason"]
    assert "positive_label" in reason and "'0'" in reason and "'1'" in reason, reason
    assert "add rows of both classes" not in reason
