"""Run every benchmark in this folder (bench_*.py, each with a main(argv)) one after another."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    for module_file in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(module_file.stem)
        module.main([] if argv is None else argv)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
