"""The registry's promotion (risk.registry.promotion, deploy, listing): champion and challenger,
human approval, inventory, a tamper-evident audit."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deployment
import fullprocess
from risk.api import service
from risk.core import artefacts, jsonfiles, logbook
from risk.core.settings import Config, ConfigError, metric_gain
from risk.data import ingest, sample
from risk.model import scoring, training
from risk.pipeline import process
from risk.registry import deploy, promotion, versions
from tests.conftest import add_shifted_month, write_config
from tests.conftest import rewrite_config as with_settings

PROJECT_DIR = Path(__file__).resolve().parents[2]


def train_and_score(config: Config, flag_nobody: bool = False) -> None:
    """A real training; ``flag_nobody``: its threshold raised above every risk, so F1 is 0 (a known worse model)."""
    model, metadata = training.train_model(config)
    if flag_nobody:
        model.set_params(threshold=1.01)
        metadata["threshold"] = 1.01
    training.save_model(config, model, metadata)
    scoring.score_model(config)


def copy_version_into_models(config: Config, version: str) -> None:
    """The deployed version's own model as the challenger: the same predictions, a gain of exactly 0."""
    source = versions.versions_folder(config) / version
    for name in ("trainedmodel.skops", "trainedmodel.json", "scores.json", "latestscore.txt"):
        shutil.copy(source / name, config.model_folder / name)


# --- settings -----------------------------------------------------------------------------------


def test_metric_gain_points_the_right_way_for_costs_and_scores() -> None:
    assert metric_gain("f1", 0.8, 0.7) == pytest.approx(0.1)
    assert metric_gain("cost", 0.8, 0.7) == pytest.approx(-0.1)  # a higher cost is worse
    assert metric_gain("cost", 0.5, 0.7) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("promotion_margin", "0.1", "promotion_margin must be a finite number"),
        ("promotion_margin", True, "promotion_margin must be a finite number"),
        ("require_approval", "yes", "require_approval must be true or false"),
    ],
)
def test_governance_keys_are_validated(tmp_path: Path, key: str, value, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        write_config(tmp_path / "p", **{key: value})


def test_governance_keys_default_to_todays_behaviour(tmp_path: Path) -> None:
    config = write_config(tmp_path / "p")
    assert config["promotion_margin"] == 0.0 and config["require_approval"] is False


# --- the paired bootstrap -----------------------------------------------------------------------


def test_weighted_metrics_with_unit_weights_equal_scikit_learns() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 400)
    risk = np.round(rng.random(400), 2)  # rounded: ties, which ROC AUC and AP must group as sklearn does
    predicted = (risk >= 0.4).astype(int)
    for name in ("f1", "roc_auc", "average_precision", "precision", "recall", "accuracy", "balanced_accuracy"):
        ours = promotion.weighted_metric(name, y, risk, predicted, np.ones((1, 400)))[0]
        assert ours == pytest.approx(scoring.metric_value(name, y, risk, predicted), abs=1e-12), name


@pytest.mark.parametrize("decimals", [2, None], ids=["ties", "distinct"])
def test_rank_metric_resamples_counted_per_cell_equal_scikit_learn_on_the_drawn_rows(decimals) -> None:
    """bootstrap_metric sorts the scores once and counts each resample's draws per cell: every
    resample's ROC AUC or average precision is scikit-learn's on the rows it drew (in order)."""
    rng = np.random.default_rng(11)
    y = (rng.random(500) < 0.3).astype(int)
    risk = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, 500), 0, 1)
    risk = risk if decimals is None else np.round(risk, decimals)
    predicted = (risk >= 0.4).astype(int)
    for name in ("roc_auc", "average_precision"):
        ours = promotion.bootstrap_metric(name, y, risk, predicted, np.random.default_rng(5), 20)
        draws = np.random.default_rng(5)
        for value in ours:
            rows = draws.integers(0, 500, 500)
            assert value == pytest.approx(scoring.metric_value(name, y[rows], risk[rows], predicted[rows]), abs=1e-12)


def test_threshold_metric_resamples_are_multinomial_counts_scored_as_scikit_learn_scores_those_rows() -> None:
    """A threshold metric's resample is its counts of (class, prediction), multinomial over the
    cells' shares; its figure is scikit-learn's on rows holding those counts, and the resamples
    centre on the point value."""
    rng = np.random.default_rng(11)
    y = (rng.random(500) < 0.3).astype(int)
    risk = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, 500), 0, 1)
    predicted = (risk >= 0.4).astype(int)
    costs = {"false_negative": 5, "false_positive": 1}
    share = np.bincount(y * 2 + predicted, minlength=4) / 500
    for name in ("f1", "precision", "recall", "accuracy", "balanced_accuracy", "cost"):
        ours = promotion.bootstrap_metric(name, y, risk, predicted, np.random.default_rng(5), 200, costs)
        counts = np.random.default_rng(5).multinomial(500, share, size=200)
        for value, drawn in list(zip(ours, counts))[:20]:
            drawn_y, drawn_predicted = np.repeat([0, 0, 1, 1], drawn), np.repeat([0, 1, 0, 1], drawn)
            if name == "cost":
                want = (5 * drawn[2] + drawn[1]) / 500
            else:
                want = scoring.metric_value(name, drawn_y, drawn_predicted.astype(float), drawn_predicted)
            assert value == pytest.approx(want, abs=1e-12), name
        point = promotion.weighted_metric(name, y, risk, predicted, np.ones((1, 500)), costs)[0]
        assert abs(np.median(ours) - point) < 3 * np.std(ours), name


def test_weighted_cost_is_the_expected_cost_per_client() -> None:
    y = np.array([1, 1, 0, 0, 0])
    predicted = np.array([1, 0, 1, 0, 0])  # one missed risky client, one false alarm
    cost = promotion.weighted_metric(
        "cost", y, predicted.astype(float), predicted, np.ones((1, 5)), {"false_negative": 5, "false_positive": 1}
    )[0]
    assert cost == pytest.approx((5 + 1) / 5)


def test_paired_bootstrap_is_seeded_and_finds_a_known_better_challenger() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    noise = rng.normal(0, 0.25, 600)
    good = np.clip(y * 0.6 + 0.2 + noise * 0.3, 0, 1)  # separates the classes well
    poor = np.clip(0.5 + noise, 0, 1)  # ignores the classes
    champion, challenger = (poor, (poor >= 0.5).astype(int)), (good, (good >= 0.5).astype(int))

    first = promotion.paired_bootstrap("f1", y, champion, challenger, resamples=500, seed=3)
    again = promotion.paired_bootstrap("f1", y, champion, challenger, resamples=500, seed=3)
    auc = promotion.paired_bootstrap("roc_auc", y, champion, challenger, resamples=500, seed=3)

    assert first == again
    assert first["gain"] > 0 and 0 < first["interval"][0] <= first["gain"] <= first["interval"][1]
    assert auc["interval"][0] > 0.2  # chance against a good ranker
    reverse = promotion.paired_bootstrap("f1", y, challenger, champion, resamples=500, seed=3)
    assert reverse["interval"][1] < 0


# --- the gate -----------------------------------------------------------------------------------


def test_a_challenger_equal_to_the_champion_does_not_pass_a_zero_margin(deployed_project: Config) -> None:
    copy_version_into_models(deployed_project, "v1")

    outcome = process.decide_deployment(deployed_project, "model drift", None, kept="v1")

    compared = outcome["champion_challenger"]
    assert outcome["decision"] == "retrained_not_deployed", outcome
    assert compared["f1"]["gain"] == 0 and compared["f1"]["interval"] == [0, 0]
    assert compared["roc_auc"]["champion_score"] == compared["roc_auc"]["challenger_score"]
    assert compared["decision"] == "keep the champion v1" and "promotion_margin +0" in outcome["reason"]
    assert versions.version_names(deployed_project) == ["v1"]


def test_a_negative_margin_accepts_a_challenger_that_is_no_better(deployed_project: Config) -> None:
    config = with_settings(deployed_project, promotion_margin=-0.01)
    copy_version_into_models(config, "v1")

    outcome = process.decide_deployment(config, "model drift", None, kept="v1")

    assert outcome["decision"] == "redeployed" and outcome["version_deployed"] == "v2"
    assert outcome["champion_challenger"]["decision"] == "promote the challenger"
    manifest = versions.read_manifest(versions.versions_folder(config) / "v2")
    assert manifest["decision"]["champion_challenger"]["margin"] == -0.01


def test_a_worse_challenger_is_blocked_and_deployed_only_with_blocking_off(deployed_project: Config) -> None:
    train_and_score(deployed_project, flag_nobody=True)  # F1 0 on the test data

    blocked = process.decide_deployment(deployed_project, "model drift", None, kept="v1")
    f1 = blocked["champion_challenger"]["f1"]
    assert blocked["decision"] == "retrained_not_deployed" and "kept v1" in blocked["reason"]
    assert f1["challenger_score"] == 0 and f1["gain"] < 0 and f1["interval"][1] < 0

    config = with_settings(deployed_project, block_worse_deployments=False)
    deployed = process.decide_deployment(config, "model drift", None, kept="v1")
    assert deployed["decision"] == "redeployed" and deployed["version_deployed"] == "v2"
    assert "deployed although" in deployed["reason"] and "block_worse_deployments is false" in deployed["reason"]
    assert "although it does not pass the gate" in deployed["champion_challenger"]["decision"]


def test_a_better_challenger_replaces_a_poor_champion_with_its_interval(project: Config) -> None:
    ingest.ingest_new_files(project)
    train_and_score(project, flag_nobody=True)
    assert deploy.deploy_model(project, reason="a poor champion") == "v1"
    train_and_score(project)

    outcome = process.decide_deployment(project, "model drift", None, kept="v1")

    f1 = outcome["champion_challenger"]["f1"]
    assert outcome["decision"] == "redeployed" and versions.current_version(project) == "v2"
    assert f1["champion_score"] == 0 and f1["interval"][0] > 0
    assert f1["resamples"] == 1000


@pytest.mark.slow
def test_the_audit_line_and_make_versions_show_the_comparison(
    deployed_project: Config, capsys: pytest.CaptureFixture
) -> None:
    project = with_settings(deployed_project, block_worse_deployments=False)
    # a drift run: the shifted month drifts v1, a retrain, the comparison, v2 deployed whatever it shows
    add_shifted_month(project)
    assert fullprocess.main(["--config", str(project.path)]) == 0

    record = logbook.read_audit(project)[-1]
    assert record["decision"] == "redeployed" and record["champion_challenger"]["champion"] == "v1"
    assert record["champion_challenger"]["decision"].startswith("promote the challenger")
    assert record["champion_challenger"]["f1"]["challenger_score"] == record["test_score"]
    capsys.readouterr()
    assert deployment.main(["--config", str(project.path), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "champion v1 vs challenger: f1 " in listing and "95% CI" in listing
    assert "decision: promote the challenger" in listing
    report = json.loads((project.reports_folder / "v2" / "model_report.json").read_text())
    assert report["champion_challenger"]["champion"] == "v1"


# --- approval -----------------------------------------------------------------------------------


def approval_project(tmp_path: Path) -> Config:
    config = write_config(tmp_path / "project", require_approval=True, block_worse_deployments=False, drift_min_rows=20)
    sample.write_sample_data(config)
    return config


@pytest.mark.slow
def test_approval_end_to_end_with_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    config = approval_project(tmp_path)
    assert fullprocess.main(["--config", str(config.path)]) == 0

    # The first version waits: nothing is served.
    assert versions.current_version(config) is None and versions.pending_versions(config) == ["v1"]
    assert logbook.read_audit(config)[-1]["decision"] == "pending_approval"
    assert (config.reports_folder / "v1" / "model_report.pdf").is_file()
    client = service.create_app(config.path).test_client()
    answer = client.post("/prediction", json={"dataset": "testdata.csv"})
    assert answer.status_code == 503 and "v1 awaits approval" in answer.get_json()["message"]
    inventory = client.get("/model?all=1").get_json()
    assert [(v["version"], v["status"]) for v in inventory["versions"]] == [("v1", "pending")]
    # A second run neither redeploys nor judges the rows again: the pending version covers them.
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["decision"] == "no_new_data" and versions.version_names(config) == ["v1"]

    assert deployment.main(["--config", str(config.path), "--approve", "v1", "--by", "Ada", "--note", "validated"]) == 0
    assert client.post("/prediction", json={"dataset": "testdata.csv"}).headers["X-Model-Version"] == "v1"

    # Drift: the challenger v2 waits while v1 keeps serving.
    add_shifted_month(config)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert versions.current_version(config) == "v1" and versions.pending_versions(config) == ["v2"]
    model = client.get("/model").get_json()
    assert model["model_version"] == "v1" and [p["version"] for p in model["pending_approval"]] == ["v2"]
    assert model["pending_approval"][0]["champion_challenger"]["champion"] == "v1"
    assert client.post("/prediction", json={"dataset": "testdata.csv"}).headers["X-Model-Version"] == "v1"
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["decision"] == "no_new_data" and versions.version_names(config) == [
        "v1",
        "v2",
    ]

    capsys.readouterr()
    assert deployment.main(["--config", str(config.path), "--approve", "v2", "--by", "Grace"]) == 0
    assert "v2 approved: now current; reports rewritten: ok" in capsys.readouterr().out
    assert client.post("/prediction", json={"dataset": "testdata.csv"}).headers["X-Model-Version"] == "v2"
    assert client.get("/model").get_json()["pending_approval"] == []

    approvals = [h for h in logbook.read_history(config) if h["action"] == "approve"]
    assert [(h["version"], h["by"], h["note"]) for h in approvals] == [("v1", "Ada", "validated"), ("v2", "Grace", "")]
    assert all(h["at"] for h in approvals)
    audited = [
        (r["decision"], r["version"], r["by"]) for r in logbook.read_audit(config) if r["decision"] == "approved"
    ]
    assert audited == [("approved", "v1", "Ada"), ("approved", "v2", "Grace")]
    report = json.loads((config.reports_folder / "v2" / "model_report.json").read_text())
    assert report["approval"] == {
        "required": True,
        "state": "approved",
        "by": "Grace",
        "at": approvals[1]["at"],
        "note": "",
    }
    assert report["current"] is True
    # The next cron run finds nothing to redo.
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["decision"] in ("no_new_data",)


def test_the_sign_off_box_shows_the_recorded_decision() -> None:
    from risk.report import pages

    assert pages.sign_off_lines(
        {"state": "approved", "by": "Ada", "at": "2026-01-02T03:04:05+00:00", "note": "fine"}
    ) == ["Approved by Ada at 2026-01-02T03:04:05+00:00 (UTC), recorded in the deployment history", "Comments: fine"]
    assert "Awaiting approval" in pages.sign_off_lines({"state": "pending"})[0]
    assert "____" in pages.sign_off_lines({})[0]


@pytest.mark.slow
def test_a_rejection_is_recorded_and_its_report_rewritten(deployed_project: Config) -> None:
    deploy.deploy_model(deployed_project, reason="challenger", pending=True)
    from risk.report import reports

    reports.write_reports(deployed_project, "v2")
    assert (
        json.loads((deployed_project.reports_folder / "v2" / "model_report.json").read_text())["approval"]["state"]
        == "pending"
    )

    with pytest.raises(SystemExit):  # a note is required
        deployment.main(["--config", str(deployed_project.path), "--reject", "v2", "--by", "Ada"])
    assert (
        deployment.main(
            ["--config", str(deployed_project.path), "--reject", "v2", "--by", "Ada", "--note", "too few rows"]
        )
        == 0
    )

    assert versions.current_version(deployed_project) == "v1" and versions.pending_versions(deployed_project) == []
    line = logbook.read_history(deployed_project)[-1]
    assert (line["action"], line["version"], line["by"], line["note"]) == ("reject", "v2", "Ada", "too few rows")
    assert logbook.read_audit(deployed_project)[-1]["decision"] == "rejected"
    approval = json.loads((deployed_project.reports_folder / "v2" / "model_report.json").read_text())["approval"]
    assert (approval["state"], approval["by"], approval["note"]) == ("rejected", "Ada", "too few rows")
    with pytest.raises(versions.DeploymentError, match="not awaiting approval"):
        deploy.approve(deployed_project, "v2", by="Ada")
    with pytest.raises(versions.DeploymentError, match="rejected before it was ever approved"):
        deploy.activate(deployed_project, "v2")


def test_a_newer_challenger_supersedes_an_older_pending_one(deployed_project: Config) -> None:
    assert deploy.deploy_model(deployed_project, reason="first challenger", pending=True) == "v2"
    assert deploy.deploy_model(deployed_project, reason="second challenger", pending=True) == "v3"

    assert versions.pending_versions(deployed_project) == ["v3"] and versions.current_version(deployed_project) == "v1"
    superseded = [h for h in logbook.read_history(deployed_project) if h["action"] == "supersede"]
    assert [(h["version"], h["by"]) for h in superseded] == [("v2", "system")] and "v3" in superseded[0]["note"]
    with pytest.raises(versions.DeploymentError, match="awaits approval"):
        deploy.activate(deployed_project, "v3")


def test_a_rollback_never_lands_on_a_version_that_was_not_approved(deployed_project: Config) -> None:
    deploy.deploy_model(deployed_project, reason="rejected one", pending=True)
    deploy.reject(deployed_project, "v2", by="Ada", note="no")
    deploy.deploy_model(deployed_project, reason="v3")

    assert deploy.rollback(deployed_project) == "v1"


# --- inventory ----------------------------------------------------------------------------------


def test_inventory_statuses_after_a_rollback_a_rejection_and_a_broken_file(
    deployed_project: Config, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deployed_project
    deploy.deploy_model(config, reason="v2")  # v1 retired
    deploy.deploy_model(config, reason="v3")
    deploy.rollback(config)  # v3 rolled back, v2 current
    deploy.deploy_model(config, reason="v4", pending=True)
    deploy.reject(config, "v4", by="Ada", note="not enough evidence")
    deploy.deploy_model(config, reason="v5", pending=True)
    deploy.deploy_model(config, reason="v6", pending=True)  # supersedes v5
    deploy.deploy_model(config, reason="v7", pending=True)  # supersedes v6
    (versions.versions_folder(config) / "v6" / "trainedmodel.skops").write_bytes(b"tampered")

    rows = {row["version"]: row for row in versions.inventory(config)}

    assert {name: row["status"] for name, row in rows.items()} == {
        "v1": "retired",
        "v2": "current",
        "v3": "rolled back",
        "v4": "rejected",
        "v5": "superseded",
        "v6": "failed verification",
        "v7": "pending",
    }
    assert (rows["v4"]["decided_by"], rows["v4"]["decision_note"]) == ("Ada", "not enough evidence")
    assert rows["v3"]["left_current_at"] and rows["v2"]["became_current_at"] and rows["v7"]["became_current_at"] is None
    assert rows["v1"]["left_current_at"] and "trainedmodel.skops fails verification" in rows["v6"]["problem"]

    assert deployment.main(["--config", str(config.path), "--inventory"]) == 0
    printed = capsys.readouterr().out
    assert "rolled back" in printed and "rejected by Ada" in printed and "note: not enough evidence" in printed

    monkeypatch.delenv("API_TOKEN", raising=False)
    body = service.create_app(config.path).test_client().get("/model?all=1").get_json()
    assert {v["version"]: v["status"] for v in body["versions"]} == {name: row["status"] for name, row in rows.items()}
    assert body["awaiting_approval"] == ["v7"] and body["current"] == "v2"
    assert str(config.root) not in json.dumps(body)  # no server path in the answer


def test_the_inventory_needs_the_token_like_model(deployed_project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "s3cret")
    client = service.create_app(deployed_project.path).test_client()
    assert client.get("/model?all=1").status_code == 401
    assert client.get("/model?all=1", headers={"Authorization": "Bearer s3cret"}).status_code == 200


# --- the audit chain ----------------------------------------------------------------------------


def verify(config: Config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "fullprocess.py"), "--config", str(config.path), "--verify-audit"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_audit_and_history_chains_hold_and_a_tampered_line_is_named(deployed_project: Config) -> None:
    config = deployed_project
    for _ in range(3):
        assert fullprocess.main(["--config", str(config.path)]) == 0
    deploy.deploy_model(config, reason="v2")
    audit = logbook.audit_path(config)
    first = json.loads(audit.read_text().splitlines()[0])
    assert first["prev_sha256"] == jsonfiles.CHAIN_GENESIS

    done = verify(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit.jsonl: ok, 4 chained line(s)" in done.stdout and "history.jsonl: ok, 2 chained line(s)" in done.stdout

    lines = audit.read_text().splitlines()
    lines[1] = lines[1].replace('"status": "ok"', '"status": "failed"')
    audit.write_text("\n".join(lines) + "\n")
    done = verify(config)
    assert done.returncode == 1
    assert "audit.jsonl line 3" in done.stdout and "line 2 was edited" in done.stdout


def test_a_removed_history_line_is_named(deployed_project: Config) -> None:
    for reason in ("v2", "v3"):
        deploy.deploy_model(deployed_project, reason=reason)
    history = deployed_project.deployment_folder / artefacts.HISTORY_FILE
    lines = history.read_text().splitlines()
    history.write_text("\n".join([lines[0], lines[2]]) + "\n")

    done = verify(deployed_project)
    assert done.returncode == 1 and "history.jsonl line 2" in done.stdout


def test_lines_before_the_chain_are_accepted_only_at_the_start(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text('{"decision": "no_new_data"}\n{"decision": "redeployed"}\n')
    jsonfiles.append_json_line(log, {"decision": "no_drift"})
    jsonfiles.append_json_line(log, {"decision": "no_new_data"})
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line is None and "2 chained line(s), 2 earlier line(s) written before the chain existed" in message

    with open(log, "a") as handle:
        handle.write('{"decision": "inserted"}\n')
    line, message = jsonfiles.verify_json_line_chain(log)
    assert line == 5 and "has no prev_sha256 although earlier lines are chained" in message


def test_a_torn_line_is_covered_and_a_long_last_line_is_read_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "history.jsonl"
    jsonfiles.append_json_line(log, {"note": "x" * 10000})  # longer than one tail chunk
    jsonfiles.append_json_line(log, {"n": 1})
    with open(log, "ab") as handle:
        handle.write(b'{"torn": ')  # a crash mid-write
    jsonfiles.append_json_line(log, {"n": 2})

    line, message = jsonfiles.verify_json_line_chain(log)
    assert line is None and "1 torn line(s)" in message
    assert [r.get("n") for r in jsonfiles.read_json_lines(log)] == [None, 1, 2]


def _append_many(path: str, writer: int) -> None:
    for number in range(40):
        jsonfiles.append_json_line(Path(path), {"writer": writer, "number": number})


def test_concurrent_appenders_keep_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(log), n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert len(log.read_text().splitlines()) == 160
    assert jsonfiles.verify_json_line_chain(log)[0] is None


@pytest.mark.slow
def test_a_pending_deploy_killed_before_its_history_line_is_finished_without_moving_current(
    deployed_project: Config,
) -> None:
    config = with_settings(deployed_project, require_approval=True, block_worse_deployments=False)
    train_and_score(config)
    outcome = process.decide_deployment(config, "model drift", None, record={"started_at": "then"}, kept="v1")
    assert outcome["decision"] == "pending_approval" and outcome["version_deployed"] == "v2"
    # What a run killed right after the version was renamed into place leaves: no history line, no reports, no audit line.
    history = config.deployment_folder / artefacts.HISTORY_FILE
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))
    assert not (config.reports_folder / "v2").exists()

    assert fullprocess.main(["--config", str(config.path)]) == 0

    assert versions.current_version(config) == "v1" and versions.pending_versions(config) == ["v2"]
    last = logbook.read_history(config)[-1]
    assert (last["action"], last["version"], last.get("pending_approval")) == ("deploy", "v2", True)
    recovered = [r for r in logbook.read_audit(config) if r.get("recovered")]
    assert [(r["decision"], r["version_deployed"]) for r in recovered] == [("pending_approval", "v2")]
    assert (config.reports_folder / "v2" / "model_report.pdf").is_file()
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["decision"] == "no_new_data" and versions.version_names(config) == [
        "v1",
        "v2",
    ]
    assert process.verify_audit(config) == 0


@pytest.mark.slow
def test_page_one_shows_the_rejection_in_the_sign_off_box(deployed_project: Config) -> None:
    from tests.conftest import page_text

    deploy.deploy_model(deployed_project, reason="challenger", pending=True)
    assert (
        deployment.main(
            ["--config", str(deployed_project.path), "--reject", "v2", "--by", "Ada", "--note", "too few rows"]
        )
        == 0
    )

    text = page_text(deployed_project.reports_folder / "v2" / "model_report.pdf", 1)
    assert "Validator sign-off Rejected by Ada at" in text and "Comments: too few rows" in text


def test_a_batch_arriving_while_a_version_waits_is_compared_with_the_current_one(deployed_project: Config) -> None:
    from risk.core.jsonfiles import read_json_lines
    from risk.monitoring import diagnostics

    deploy.deploy_model(deployed_project, reason="challenger", pending=True)
    add_shifted_month(deployed_project)
    ingest.ingest_new_files(deployed_project)
    last = read_json_lines(deployed_project.output_folder / "ingestion_record.jsonl")[-1]

    assert diagnostics.version_current_on_arrival(deployed_project, last["run_id"], last["ingested_at"]) == "v1"


def test_a_deployment_by_hand_waits_for_approval_when_required(
    deployed_project: Config, capsys: pytest.CaptureFixture
) -> None:
    config = with_settings(deployed_project, require_approval=True)
    assert deployment.main(["--config", str(config.path), "--reason", "by hand"]) == 0
    assert "deployed v2, awaiting approval" in capsys.readouterr().out
    assert versions.current_version(config) == "v1" and versions.pending_versions(config) == ["v2"]


@pytest.mark.slow
def test_with_a_cost_metric_drift_and_the_gate_treat_lower_as_better(tmp_path: Path) -> None:
    config = write_config(tmp_path / "project", metric="cost", cost_matrix={"false_negative": 5, "false_positive": 1})
    sample.write_sample_data(config)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    deployed = versions.load_deployed_model(config)
    test = scoring.load_test_data(config)
    flipped = test.assign(**{config.target: 1 - scoring.binary_target(test[config.target], config.positive_label)})

    assert process.check_model_drift(config, deployed, test)[0] is False  # the same rows: the same cost
    drifted, reason, scores = process.check_model_drift(config, deployed, flipped)
    assert drifted and scores["new_score"] > scores["deployed_score"] and " > deployed " in reason

    train_and_score(config, flag_nobody=True)  # misses every risky client: a higher cost
    outcome = process.decide_deployment(config, "model drift", None, kept="v1")
    cost = outcome["champion_challenger"]["cost"]
    assert outcome["decision"] == "retrained_not_deployed"
    assert cost["challenger_score"] > cost["champion_score"] and cost["gain"] < 0 and cost["interval"][1] < 0


@pytest.mark.slow
def test_with_nothing_approved_new_data_makes_a_new_pending_version_that_supersedes_the_first(tmp_path: Path) -> None:
    config = approval_project(tmp_path)
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert (
        json.loads((config.reports_folder / "v1" / "model_report.json").read_text())["approval"]["state"] == "pending"
    )
    add_shifted_month(config)

    assert fullprocess.main(["--config", str(config.path)]) == 0

    record = logbook.read_audit(config)[-1]
    assert record["decision"] == "pending_approval" and record["version_deployed"] == "v2"
    assert "no approved model yet (v1 awaiting approval)" in record["reason"]
    assert record["superseded_reports_refreshed"] == {"v1": "ok"}
    assert versions.current_version(config) is None and versions.pending_versions(config) == ["v2"]
    assert (
        json.loads((config.reports_folder / "v1" / "model_report.json").read_text())["approval"]["state"]
        == "superseded"
    )
    assert fullprocess.main(["--config", str(config.path)]) == 0
    assert logbook.read_audit(config)[-1]["decision"] == "no_new_data"
