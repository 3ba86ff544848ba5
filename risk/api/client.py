"""Call every endpoint of a running risk API and render every answer (``apicalls.py`` is the command).

Of each batch answer the rendering keeps the first few predictions and says how many it left
out, so that ``apireturns.txt`` stays small and readable. A call fails when it gets no answer
or a status other than 2xx; ``/summarystats`` and ``/diagnostics`` answer 503 until
``diagnostics.py`` has run for the served version, and that counts as a failure: the system is
not fully up. ``/calllist`` and ``/calllist.csv`` answer 404 until a client book is configured and
a list written: that is an answer (the system has nothing to list), said as such, not a failure.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from risk.core.artefacts import csv_files
from risk.core.settings import Config

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 3
METRICS_LINES = 40  # of the Prometheus text kept in the file; the rest is counted
PREDICTION_ROWS = 5  # of each batch answer (and of the call list) kept in the file; the rest is counted
CSV_LINES = 6  # of a CSV answer kept in the file (the header and 5 rows); the rest is counted


@dataclass
class Call:
    method: str
    path: str
    purpose: str
    json: Any = None
    data: bytes | None = None
    content_type: str | None = None
    missing_ok: bool = False  # a 404 answers "nothing of that kind yet" (no call list without a client book)


@dataclass
class Answer:
    call: Call
    status: int | None
    seconds: float
    body: str
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and (200 <= self.status < 300 or self.missing)

    @property
    def missing(self) -> bool:
        """A 404 where one means "not there yet", not a failure; ``message`` says what."""
        return self.status == 404 and self.call.missing_ok

    @property
    def message(self) -> str:
        """The error answer's message, else its body."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return self.body
        return str(document.get("message", self.body)) if isinstance(document, dict) else self.body


def sample_records(config: Config, rows: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """A few rows of the first test-data CSV, as JSON records (numbers as numbers, empty as null)."""
    files = csv_files(config.test_data_folder)
    if not files:
        return []
    with open(files[0], newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        records = [row for _, row in zip(range(rows), reader)]
    return [{name.strip(): _json_value(value) for name, value in record.items() if name} for record in records]


def _json_value(text: str | None) -> Any:
    if text is None or not text.strip():
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def sample_csv(config: Config) -> tuple[str, bytes] | None:
    files = csv_files(config.test_data_folder)
    return (files[0].name, files[0].read_bytes()) if files else None


def planned_calls(config: Config) -> list[Call]:
    """Every endpoint, and /prediction in each input shape the API takes."""
    calls = [
        Call("GET", "/healthz", "the process answers"),
        Call("GET", "/readyz", "a verified model is loaded"),
        Call("GET", "/model", "version, parameters, metrics, lineage"),
        Call("GET", "/scoring", "the deployed model's metrics on the test data"),
        Call("GET", "/summarystats", "summary statistics from diagnostics"),
        Call("GET", "/diagnostics", "the diagnostics document"),
    ]
    sample = sample_csv(config)
    dataset = sample[0] if sample else "testdata.csv"
    calls.append(
        Call("POST", "/prediction", f"the classic shape: a data file by name ({dataset})", json={"dataset": dataset})
    )
    records = sample_records(config)
    if records:
        calls.append(Call("POST", "/prediction", f"{len(records)} JSON records", json={"records": records}))
    if sample:
        calls.append(Call("POST", "/prediction", f"{sample[0]} as a CSV body", data=sample[1], content_type="text/csv"))
    calls += [
        Call("GET", "/calllist", "the call list: whom to call first, and why", missing_ok=True),
        Call("GET", "/calllist.csv", "the call list's file", missing_ok=True),
        Call("GET", "/monitoring", "outcomes: realised figures and the call lists' back-test"),
        Call("GET", "/metrics", "Prometheus metrics (after the calls above)"),
        Call("GET", "/", "the Risk-O-Meter page"),
    ]
    return calls


def call_api(session: requests.Session, base_url: str, call: Call, timeout: float) -> Answer:
    headers = {"Content-Type": call.content_type} if call.content_type else {}
    started = time.perf_counter()
    try:
        response = session.request(
            call.method, base_url + call.path, json=call.json, data=call.data, headers=headers, timeout=timeout
        )
    except requests.RequestException as exc:
        return Answer(call, None, time.perf_counter() - started, f"no answer: {exc}")
    return Answer(
        call,
        response.status_code,
        time.perf_counter() - started,
        response.text,
        response.headers.get("X-Model-Version"),
    )


def render(answers: list[Answer], base_url: str) -> str:
    """The text of apireturns.txt: one section per call, JSON pretty-printed."""
    lines = [
        f"# risk API answers from {base_url}",
        f"# {sum(a.ok for a in answers)} of {len(answers)} calls succeeded",
        "",
    ]
    for answer in answers:
        status = answer.status if answer.status is not None else "no answer"
        version = f", model {answer.version}" if answer.version else ""
        missing = " (not a failure: there is none yet)" if answer.missing else ""
        lines.append(
            f"## {answer.call.method} {answer.call.path} -> {status}{missing} in {answer.seconds * 1000:.1f} ms{version}: {answer.call.purpose}"
        )
        lines.append(_pretty(answer))
        lines.append("")
    return "\n".join(lines)


def _pretty(answer: Answer) -> str:
    if answer.call.path == "/metrics" and answer.ok:
        metric_lines = answer.body.splitlines()
        kept = metric_lines[:METRICS_LINES]
        more = len(metric_lines) - len(kept)
        return "\n".join(kept + ([f"... {more} more lines"] if more > 0 else []))
    if answer.call.path.endswith(".csv") and answer.ok and not answer.missing:
        csv_lines = answer.body.splitlines()
        more = len(csv_lines) - CSV_LINES
        return "\n".join(csv_lines[:CSV_LINES] + ([f"... {more} more lines"] if more > 0 else []))
    try:
        document = json.loads(answer.body)
    except ValueError:
        return answer.body
    return json.dumps(shortened(document), indent=2)


def shortened(document: Any) -> Any:
    """A batch answer (or the call list) with its first few rows only, and the count of those left out."""
    if not isinstance(document, dict):
        return document
    for key in ("predictions", "clients"):
        rows = document.get(key)
        if isinstance(rows, list) and len(rows) > PREDICTION_ROWS:
            return {**document, key: rows[:PREDICTION_ROWS], f"{key}_not_shown": len(rows) - PREDICTION_ROWS}
    return document


def run_calls(base_url: str, config: Config, token: str | None = None, timeout: float = 60.0) -> list[Answer]:
    with requests.Session() as session:
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return [call_api(session, base_url, call, timeout) for call in planned_calls(config)]
