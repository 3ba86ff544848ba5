"""Risk bands: green, amber, red. One set of rules for every place that shows a band (the API's
answers and page, the call list).

Stdlib only.
"""

from __future__ import annotations

from risk.core.settings import Config

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time on the cron fast path
    from typing import Any


def band_thresholds(config: Config, threshold: float | None) -> dict[str, Any]:
    """Where amber and red start, and where those numbers come from.

    Unless configured (``risk_band_thresholds``), amber starts at the model's decision threshold,
    so green means exactly "predicted to stay", and red halfway from there to certainty.
    """
    configured = config["risk_band_thresholds"]
    if configured is not None:
        return {"amber": band_edge(configured["amber"]), "red": band_edge(configured["red"]), "source": "configured"}
    if threshold is None:
        return {"amber": None, "red": None, "source": "threshold"}
    return {"amber": band_edge(threshold), "red": band_edge(threshold + (1.0 - threshold) / 2), "source": "threshold"}


BAND_EDGE_DECIMALS = 6  # 0.66, not 0.6599999999999999; finer than any threshold of the grid


def band_edge(value: float) -> float:
    """A band's lower edge as people read it, and as the bands are cut (the same number both ways)."""
    return round(float(value), BAND_EDGE_DECIMALS)


def risk_bands(risk: list[float], predicted: list[int], thresholds: dict[str, Any]) -> list[str]:
    """green below ``amber``, amber below ``red``, red from ``red`` up; never against the decision.

    A row predicted at risk is at least amber and one predicted to stay at most amber, whatever
    the configured thresholds say: the colour must not contradict the prediction beside it.
    """
    amber, red = thresholds["amber"], thresholds["red"]
    bands = []
    for r, p in zip(risk, predicted):
        band = "red" if r >= red else "amber" if r >= amber else "green"
        if p and band == "green":
            band = "amber"
        elif not p and band == "red":
            band = "amber"
        bands.append(band)
    return bands
