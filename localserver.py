"""Start gunicorn with ``gunicorn.conf.py`` on a free loopback port, wait until it is ready, stop it.

Used by the end-to-end tests and the benchmark, which each need a real server of their own.
``python localserver.py [--config PATH] [--workers N]`` runs one in the foreground on a free port
(Ctrl-C stops it); ``make serve`` is the everyday way to serve.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0


class ServerError(RuntimeError):
    """gunicorn did not start or did not become ready; the message holds its log's tail."""


def gunicorn_command() -> str:
    """The gunicorn beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("gunicorn")
    return str(beside) if beside.exists() else (shutil.which("gunicorn") or "gunicorn")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn_server(
    config_path: Path,
    workers: int = 2,
    threads: int | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Yield the base URL of a gunicorn serving ``config_path``; stop it (and its workers) on exit.

    gunicorn's log goes to ``log_path`` (its tail is quoted if the server fails to start), or to
    this process's own output where None.
    """
    port = free_port()
    environment = {
        **os.environ,
        "RISK_API_CONFIG": str(config_path),
        "RISK_API_BIND": f"{LOOPBACK}:{port}",
        "RISK_API_WORKERS": str(workers),
        **({"RISK_API_THREADS": str(threads)} if threads else {}),
        **(env or {}),
    }
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server makes its own
    command = [gunicorn_command(), "--config", str(PROJECT_DIR / "gunicorn.conf.py"), "--chdir", str(PROJECT_DIR)]
    with open(log_path, "ab") if log_path else contextlib.nullcontext() as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT if log else None
        )
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_ready(url, process, log_path, workers, environment.get("API_TOKEN"))
        yield url
    finally:
        stop(process)


def wait_ready(
    url: str, process: subprocess.Popen, log_path: Path | None, workers: int, token: str | None = None
) -> None:
    """Poll /readyz until it answers (a model or a clear 503), or fail with the log's tail."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    answered = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"gunicorn exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            requests.get(url + "/readyz", headers=headers, timeout=30)
            answered += 1
            if answered >= workers:  # most likely every worker has booted by now
                return
        except requests.RequestException:  # not listening yet, or a worker still booting
            pass
        time.sleep(0.1)
    raise ServerError(f"gunicorn did not answer within {START_TIMEOUT_SECONDS:.0f}s:\n{_tail(log_path)}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL if it lingers (orphaned workers exit by themselves)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(gunicorn's log is in the output above)"
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PROJECT_DIR / "config.json"), help="path to config.json")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that the server is stopped on the way out
    try:
        with gunicorn_server(Path(args.config).resolve(), workers=args.workers) as url:
            print(f"serving on {url} (Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(3600)
    except ServerError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
