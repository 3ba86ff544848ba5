"""What the benchmarks share: a measurement run in a fresh interpreter of the benchmark's own script."""

from __future__ import annotations

import json
import subprocess
import sys


def run_worker(script: str, phase: str, *options: str) -> dict:
    """Run ``script --worker PHASE OPTIONS…`` in a fresh Python (its imports and peak memory
    are its own) and return the JSON it prints on its last line."""
    output = subprocess.run(
        [sys.executable, script, "--worker", phase, *options],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])
