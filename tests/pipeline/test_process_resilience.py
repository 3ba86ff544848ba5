"""The cron run (risk.pipeline.process, through fullprocess.py) on damaged state and unusual
inputs: a master rebuilt smaller, a damaged drift checkpoint or master state, odd record lines,
failed reports or database sources named in the cron line; and the pieces it runs (compute's
Dask connection, a served blend, deployment's options) given what they do not expect."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pandas as pd
import pytest
from sklearn.model_selection import FixedThresholdClassifier

import deployment
import diagnostics
import fullprocess
import ingestion
from risk.core import artefacts, logbook
from risk.core.settings import Config
from risk.data import ledger, masterstore, sample
from risk.model import batches, compiled, compute, pipelines, scoring
from risk.pipeline import rebuild
from risk.registry import versions
from tests.conftest import add_region, growing, listener_that_answers, write_config


def drop_new_clients(config: Config, rows: int) -> None:
    """A settled file of ``rows`` clients the master has not seen (test rows under new ids)."""
    batch = pd.read_csv(config.test_data_folder / "testdata.csv").iloc[:rows]
    batch["corporation"] = batch["corporation"] + "m"
    batch.to_csv(config.input_folder / "more.csv", index=False)
    os.utime(config.input_folder / "more.csv", (time.time() - 3600, time.time() - 3600))


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
    masterstore.master_path(config).unlink()
    rebuilt = rebuild.rebuild_master(config)
    assert rebuilt["rebuilt"] and rebuilt["rows"] == 5000
    for batch in (config.root / sample.SAMPLE_BATCH_FOLDER).glob("*.csv"):
        settled_copy(batch, config.input_folder / batch.name)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    record = logbook.read_audit(config)[-1]
    assert record["rows_added"] == sample.SHIFTED_BATCH_ROWS
    assert record.get("rows_judged") == sample.SHIFTED_BATCH_ROWS, record


def test_a_positive_label_matching_no_value_is_named_by_the_set_up_check(deployed_project: Config, capsys):
    """positive_label "yes" on 0/1 data: the test data is not "one class only" (it has both);
    the message names the values seen and the key to fix, not "add rows of both classes"."""
    config = deployed_project
    values = json.loads(config.path.read_text(encoding="utf-8"))
    config.path.write_text(json.dumps({**values, "positive_label": "yes"}), encoding="utf-8")
    settled_copy(config.test_data_folder / "testdata.csv", config.input_folder / "new.csv")
    assert fullprocess.main(["--config", str(config.path)]) == 1
    reason = logbook.read_audit(config)[-1]["reason"]
    assert "positive_label" in reason and "'0'" in reason and "'1'" in reason, reason
    assert "add rows of both classes" not in reason


SILENT_CONNECT_SECONDS = 2  # well inside a busy machine's local connect, below compute's default of 5


@pytest.mark.parametrize(
    "answer", [None, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"], ids=["silent", "http"]
)
def test_a_dask_address_that_is_no_scheduler_fails_the_run_clearly(answer):
    """dask_scheduler_address pointing at something else: ComputeUnavailable naming the address,
    not a hang in distributed's handshake, nor a MemoryError from reading an HTTP reply as a frame."""
    server = listener_that_answers(answer)
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    outcome: list[BaseException] = []
    caller = threading.Thread(target=lambda: _record_failure(outcome, address), daemon=True)
    caller.start()
    caller.join(120)  # a guard against a hang, far above the connect timeout
    server.close()
    assert not caller.is_alive(), "compute.connect hung on an address that is no Dask scheduler"
    assert len(outcome) == 1 and isinstance(outcome[0], compute.ComputeUnavailable), outcome
    assert address in str(outcome[0])


def _record_failure(outcome: list[BaseException], address: str) -> None:
    try:
        # Any deadline shows the same: nothing on the other side ever finishes a handshake.
        compute.connect(address, timeout=SILENT_CONNECT_SECONDS).close()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came out
        outcome.append(exc)


def test_a_served_blend_counts_unseen_categories() -> None:
    """The soft-voting blend is served by scikit-learn (no compiled path); the answer
    must still count the categories it never saw, as it does for a single pipeline."""
    files = sample.build_sample()
    # Every fifth training row: the count of unseen categories does not depend on how many rows fitted the blend.
    train = pd.concat(
        [add_region(f, i) for i, (name, f) in enumerate(files.items()) if name.startswith("input/")], ignore_index=True
    ).iloc[::5]
    numeric = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
    features = {"numeric": numeric, "categorical": ["region"]}
    members = [
        (name, pipelines.build_pipeline(name, features, seed=7))
        for name in ("logistic_regression", "hist_gradient_boosting")
    ]
    model = FixedThresholdClassifier(pipelines.SoftVotingBlend(members), threshold=0.3, response_method="predict_proba")
    model.fit(scoring.feature_frame(train, features), train["exited"].to_numpy())
    schema = batches.Schema(tuple(numeric), ("region",), ())
    frame = pd.DataFrame({**{n: [1.0, 2.0, 3.0] for n in numeric}, "region": ["never-seen", None, "region00"]})
    batch = batches.batch_from_frame(frame, schema, max_rows=0)
    assert compiled.unseen_categories(compiled.known_categories(model), batch, schema) == {"region": 1}


def test_the_cron_line_of_a_deployment_whose_reports_failed_names_the_failure(project: Config, capsys):
    """Deployed, then diagnostics and reporting failed: cron's one line must say that, not
    repeat the deployment's reason ("no deployed model yet") as if it were the failure."""
    config = project
    for path in config.input_folder.glob("*.csv"):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    config.reports_folder.parent.mkdir(parents=True, exist_ok=True)
    config.reports_folder.write_text("a file where the reports folder should be\n", encoding="utf-8")
    assert fullprocess.main(["--config", str(config.path)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "v1" in line and "diagnostics" in line and "reporting" in line, line


@pytest.mark.parametrize("option", ["--activate", "--approve", "--reject"])
def test_activate_with_an_empty_version_is_refused_and_deploys_nothing(deployed_project: Config, option: str):
    """`deployment.py --activate "$VERSION"` (or --approve, --reject) with VERSION unset fell
    through to a plain deploy of whatever models/ holds (a retrained model kept back as worse)."""
    config = deployed_project
    with pytest.raises(SystemExit) as refused:
        deployment.main(["--config", str(config.path), option, "", "--by", "someone", "--note", "why"])
    assert refused.value.code == 2
    assert versions.version_names(config) == ["v1"] and versions.current_version(config) == "v1"


@pytest.mark.slow
def test_a_rebuild_reads_database_snapshots_again(project: Config):
    """Rows pulled from a database live in their snapshot files, not in sourcedata/: a rebuild
    must read them again (the watermark says they were pulled; they would never come back)."""
    import sqlite3

    config = project
    frame = pd.concat([pd.read_csv(p) for p in sorted(config.input_folder.glob("*.csv"))], ignore_index=True)
    for path in config.input_folder.glob("*.csv"):
        path.unlink()
    with sqlite3.connect(config.root / "clients.db") as connection:
        frame.insert(0, "row_id", range(1, len(frame) + 1))
        frame.to_sql("clients", connection, index=False)
    values = json.loads(config.path.read_text(encoding="utf-8"))
    values.update(
        database_sources=[
            {"name": "crm", "url": "sqlite:///clients.db", "table": "clients", "watermark_column": "row_id"}
        ]
    )
    values["id_columns"] = values["id_columns"] + ["row_id"]
    config.path.write_text(json.dumps(values), encoding="utf-8")
    assert fullprocess.main(["--config", str(config.path)]) == 0
    masterstore.master_path(config).unlink()
    rebuilt = rebuild.rebuild_master(config)
    assert rebuilt["files_gone"] == [] and rebuilt["rows"] == len(frame), rebuilt


def test_a_failed_database_source_reads_as_a_sentence_in_the_cron_line(deployed_project: Config, capsys):
    import sqlite3

    config = deployed_project
    sqlite3.connect(config.root / "clients.db").close()  # a database without the table
    values = json.loads(config.path.read_text(encoding="utf-8"))
    values.update(
        database_sources=[
            {"name": "crm", "url": "sqlite:///clients.db", "table": "clients", "watermark_column": "row_id"}
        ]
    )
    values["id_columns"] = values["id_columns"] + ["row_id"]
    config.path.write_text(json.dumps(values), encoding="utf-8")
    assert fullprocess.main(["--config", str(config.path)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "crm: the check for new rows failed: no such table: clients" in line and "{" not in line, line


def test_a_damaged_drift_checkpoint_does_not_stop_every_run(deployed_project: Config):
    """Offsets that are not whole numbers count as unknown (the deployed version's size then
    says what is judged), like a broken `current`: not a ValueError on every run."""
    config = deployed_project
    (config.output_folder / artefacts.CHECKPOINT_FILE).write_text(
        '{"master_bytes": "x", "seen_bytes": null}', encoding="utf-8"
    )
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_checkpoint(config)[0] == versions.covered_master_bytes(config) > 0  # healed


@pytest.mark.parametrize(
    "damage", ["[]", "{not json", '{"bytes": "x"}'], ids=["a-list", "not-json", "bytes-not-a-number"]
)
def test_a_damaged_master_state_is_read_as_absent(deployed_project: Config, damage: str):
    """master_state.json is derived from the master (a missing one is rebuilt from it): a damaged
    one must not stop every run with a TypeError, nor `ingestion.py --rebuild` with a traceback."""
    config = deployed_project
    (config.output_folder / artefacts.MASTER_STATE_FILE).write_text(damage, encoding="utf-8")
    drop_new_clients(config, rows=300)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["rows_added"] == 300
    assert masterstore.read_master_state(config)["rows"] == 7800
    (config.output_folder / artefacts.MASTER_STATE_FILE).write_text(damage, encoding="utf-8")
    assert ingestion.main(["--config", str(config.path), "--rebuild"]) == 0


def test_a_json_line_that_is_not_an_object_is_skipped_like_a_torn_one(deployed_project: Config):
    """A line of the record, history or audit that is valid JSON but not an object ("str", [1])
    was returned to readers that call .get on it: every run failed with a TypeError."""
    config = deployed_project
    for path in (ledger.record_path(config), logbook.audit_path(config)):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write('[1, 2]\n"str"\n')
    drop_new_clients(config, rows=300)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["rows_added"] == 300


def test_a_record_entry_without_name_or_status_is_skipped(deployed_project: Config):
    """An object line of the ingestion record lacking the fields every reader indexes stopped
    every run (KeyError: 'name') and diagnostics (KeyError: 'status')."""
    config = deployed_project
    with open(ledger.record_path(config), "a", encoding="utf-8") as handle:
        handle.write('{"a": 1}\n{"name": "x.csv"}\n')
    drop_new_clients(config, rows=300)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["rows_added"] == 300
    assert diagnostics.main(["--config", str(config.path)]) == 0


def test_the_audit_line_names_a_file_still_being_written(deployed_project: Config):
    """A file that keeps changing waits for a later run; the audit line (all an operator sees)
    must say so, not just "no new or changed files"."""
    config = write_config(deployed_project.root, settle_seconds=1)
    growing_file = config.input_folder / "growing.csv"
    growing_file.write_text("corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n")
    with growing(growing_file):
        assert fullprocess.main(["--config", str(config.path)]) == 0
    record = logbook.read_audit(config)[-1]
    assert record["decision"] == "no_new_data" and record["files_waiting"] == ["growing.csv"]
    assert "still being written" in record["reason"]
