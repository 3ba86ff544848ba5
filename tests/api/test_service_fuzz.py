"""Property-based fuzzing of the API (risk.api.service) at POST /prediction: whatever the body, never a 5xx,
always a JSON answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk.api import service

FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
FIELDS = FEATURES + ["corporation", "exited", "region"]
DATASET_NAMES = ["testdata.csv", "../config.json", "/etc/passwd", "finaldata.csv", ".."]
CSV_TRICKS = ["", " ", "1", "-2.5", "1e308", "1e999", "nan", "inf", "NA", "True", "x", '"', '""', "1,2", "\n"]
CONTENT_TYPES = ["application/json", "text/csv", "multipart/form-data", "application/octet-stream", ""]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Records that are nearly right: the schema's fields, each with a value of any type, some left out.
record = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=8)
near_records = st.fixed_dictionaries(
    {f: json_scalars for f in FEATURES}, optional={"corporation": json_scalars, "extra": json_values}
)
bodies = st.one_of(
    json_values,
    st.lists(record, max_size=5),
    st.lists(near_records, min_size=1, max_size=5),
    st.fixed_dictionaries({"records": st.one_of(st.lists(near_records, max_size=5), json_values)}),
    st.fixed_dictionaries({"dataset": st.one_of(st.text(max_size=30), st.sampled_from(DATASET_NAMES), json_values)}),
)
csv_cells = st.one_of(st.sampled_from(CSV_TRICKS), st.text(max_size=6))


@st.composite
def csv_bodies(draw) -> str:
    header = draw(st.lists(st.sampled_from(FIELDS) | st.text(max_size=5), min_size=0, max_size=6))
    rows = draw(st.lists(st.lists(csv_cells, min_size=0, max_size=7), max_size=5))
    return "\n".join([",".join(header)] + [",".join(row) for row in rows])


@pytest.fixture(scope="module")
def client(deployed_template: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fuzz") / "project"
    shutil.copytree(deployed_template, folder, symlinks=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("API_TOKEN", raising=False)
        yield service.create_app(folder / "config.json").test_client()


def assert_answered(response) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict)
    if response.status_code >= 400:
        assert body["message"] and "Traceback" not in body["message"]
    else:
        assert body["model_version"] and len(body["predictions"]) == body["rows"]


@FUZZ
@given(body=bodies)
def test_any_json_body_gets_an_answer_not_a_crash(client, body) -> None:
    assert_answered(client.post("/prediction", data=json.dumps(body), content_type="application/json"))


@FUZZ
@given(body=csv_bodies())
def test_any_csv_body_gets_an_answer_not_a_crash(client, body: str) -> None:
    assert_answered(client.post("/prediction", data=body.encode(), content_type="text/csv"))


@FUZZ
@given(body=st.binary(max_size=200), content_type=st.sampled_from(CONTENT_TYPES))
def test_any_bytes_get_an_answer_not_a_crash(client, body: bytes, content_type: str) -> None:
    assert_answered(client.post("/prediction", data=body, content_type=content_type))
