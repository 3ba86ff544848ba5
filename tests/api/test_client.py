"""The API client (risk.api.client, behind apicalls.py): its file of answers is small and readable whatever
the size of the batch answers."""

from __future__ import annotations

import json

from risk.api import client


def batch_answer(rows: int) -> client.Answer:
    body = {
        "model_version": "v1",
        "rows": rows,
        "predictions": [{"row": i, "prediction": i % 2, "risk": 0.5} for i in range(rows)],
    }
    call = client.Call("POST", "/prediction", "a batch")
    return client.Answer(call, 200, 0.01, json.dumps(body), "v1")


def test_a_batch_answer_keeps_a_few_rows_and_counts_the_rest() -> None:
    text = client.render([batch_answer(10_000)], "http://127.0.0.1:1")
    assert text.count('"row":') == client.PREDICTION_ROWS
    assert f'"predictions_not_shown": {10_000 - client.PREDICTION_ROWS}' in text
    assert '"rows": 10000' in text
    assert len(text) < 2_000


def test_a_small_answer_is_kept_whole() -> None:
    text = client.render([batch_answer(3)], "http://127.0.0.1:1")
    assert text.count('"row":') == 3 and "predictions_not_shown" not in text
