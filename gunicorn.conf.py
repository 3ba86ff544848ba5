"""gunicorn settings for the risk API (``make serve``); each can be overridden from the environment.

RISK_API_BIND     address to listen on (default: 127.0.0.1 and the port of the config's api_url, so
                  that apicalls.py finds it; loopback only: put a TLS proxy in front to expose it)
RISK_API_WORKERS  worker processes (default: one per CPU core, at least 2: the work is CPU-bound,
                  so more processes than cores only queue for them and add latency)
RISK_API_THREADS  threads per worker (default 2: a slow client or a 10,000-row request does not
                  hold a whole worker; the gthread worker also keeps connections alive)
RISK_API_WORKER_CLASS  risk.api.worker.BufferingThreadWorker (default: gthread that hands a thread only
                  whole requests, so slow clients cannot hold the threads), gthread or sync
RISK_API_READ_TIMEOUT  seconds a client has to send its whole request (default 60), then 408
RISK_API_ACCESSLOG  "-" for an access log on stdout (default: none; Prometheus counts requests)
RISK_API_CONFIG   the config.json to serve (read by wsgi.py)

Workers are not preloaded: each imports the app and loads the model itself, and each notices a
new deployment on its own. Prometheus metrics are shared through PROMETHEUS_MULTIPROC_DIR, a
fresh folder made before any worker starts and removed when the server stops.
"""

import os
import shutil
import sys
import tempfile
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORT = 8000


def _config_port() -> int:
    """The port of api_url in the config being served; 8000 if the config cannot be read."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from risk.core.settings import ConfigError, load_config

    try:
        return urlsplit(load_config(os.environ.get("RISK_API_CONFIG") or None)["api_url"]).port or DEFAULT_PORT
    except (ConfigError, ValueError):
        return DEFAULT_PORT  # the workers will report the config's problem when they start


wsgi_app = "wsgi:app"
bind = os.environ.get("RISK_API_BIND") or f"127.0.0.1:{_config_port()}"
workers = int(os.environ.get("RISK_API_WORKERS", max(2, os.cpu_count() or 1)))
# The worker's name before it moved into the risk package, as a crontab or unit file may still set it.
MOVED_WORKER_CLASSES = {"bufferingworker.BufferingThreadWorker": "risk.api.worker.BufferingThreadWorker"}
worker_class = os.environ.get("RISK_API_WORKER_CLASS", "risk.api.worker.BufferingThreadWorker")
worker_class = MOVED_WORKER_CLASSES.get(worker_class, worker_class)
threads = int(os.environ.get("RISK_API_THREADS", 2))
keepalive = 5
timeout = 60  # a 10,000-row request takes well under a second; a stuck worker is restarted
graceful_timeout = 30
max_requests = 50000  # recycle workers now and then, staggered, against slow leaks
max_requests_jitter = 5000
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat files off the disk
accesslog = os.environ.get("RISK_API_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("RISK_API_LOGLEVEL", "info")
proc_name = "risk-api"
# Each worker is single-threaded for numpy/OpenMP: workers already fill the cores.
raw_env = [
    f"{name}=1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if name not in os.environ
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWN_DIR_ENV = "RISK_API_OWN_METRICS_DIR"


def on_starting(server: Any) -> None:
    """Give the workers a metrics folder before any of them imports prometheus_client."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):  # values of an earlier run must not be added to this one
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))
    else:
        folder = tempfile.mkdtemp(prefix="risk-api-metrics-")
        os.environ[_OWN_DIR_ENV] = folder
    os.environ[MULTIPROC_ENV] = folder
    # Imported here, once the folder is set, so that child_exit never imports it mid-shutdown.
    from prometheus_client import multiprocess  # noqa: F401

    server.log.info("prometheus multiprocess folder: %s", folder)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges (the model version it served) no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    own = os.environ.get(_OWN_DIR_ENV)
    if own:
        shutil.rmtree(own, ignore_errors=True)
