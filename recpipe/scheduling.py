"""Scheduled retraining: the deployment's definition and the Prefect server it needs.

The values that define the retraining deployment live here, once: ``recpipe
schedule`` (``flows/deploy.py``, which serves the flow) and the top-level
``prefect.yaml`` (for ``prefect deploy``) both use them, and a test keeps the YAML in
step. Prefect's temporary (ephemeral) API cannot run schedules, so scheduling needs a
real server: ``recpipe server`` starts one (:func:`server_command`), and
:func:`check_api` tells a person how when none answers. Nothing here imports prefect.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from recpipe.errors import SchedulerError

#: The flow's name (``@flow(name=...)`` in flows/retrain.py).
FLOW_NAME = "recpipe-retrain"
#: Where the flow is defined, as ``prefect deploy`` wants it (relative to the repo root).
FLOW_ENTRYPOINT = "flows/retrain.py:retrain"
#: The deployment ``recpipe schedule`` serves by default.
DEPLOYMENT_NAME = "nightly"
#: Every night at 03:00 (in ``DEFAULT_TIMEZONE``).
DEFAULT_CRON = "0 3 * * *"
DEFAULT_TIMEZONE = "UTC"
#: At most one run of the deployment at a time; later ones wait (ENQUEUE), not overlap.
CONCURRENCY_LIMIT = 1
COLLISION_STRATEGY = "ENQUEUE"
#: The process work pool ``prefect deploy`` (prefect.yaml) uses; a worker runs it.
WORK_POOL = "recpipe-process"
WORK_POOL_TYPE = "process"
#: Tags of the deployment (shown and filterable in the UI).
DEPLOYMENT_TAGS = ("recpipe", "retrain")
DESCRIPTION = (
    "Retrain the recommender: ingest, validate, sessions, features, train candidates, "
    "evaluate, gate, register and package the champion."
)

#: ``recpipe server``'s defaults.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200

#: Environment of a Prefect server that sends no usage data.
SERVER_ENV: dict[str, str] = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}


def deployment_full_name(name: str = DEPLOYMENT_NAME) -> str:
    """``recpipe-retrain/<name>``: how ``run_deployment`` and ``prefect deployment run``
    name a deployment of the retraining flow."""
    return f"{FLOW_NAME}/{name}"


def api_url(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> str:
    """``http://HOST:PORT/api``: the value of ``PREFECT_API_URL`` for a server."""
    return f"http://{host}:{port}/api"


def ui_url(api: str) -> str:
    """The Prefect UI of an API URL (the same server without ``/api``)."""
    api = api.rstrip("/")
    return api[: -len("/api")] if api.endswith("/api") else api


def flow_run_url(api: str, flow_run_id: str) -> str:
    """The UI page of one flow run."""
    return f"{ui_url(api)}/runs/flow-run/{flow_run_id}"


def server_command(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> list[str]:
    """The command that starts a Prefect server (this interpreter's prefect)."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def server_env(
    base: Mapping[str, str] | None = None, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST
) -> dict[str, str]:
    """``base`` (default: this process's environment) with the server's analytics off
    and its UI pointed at its own API: the UI derives its API URL from
    ``PREFECT_SERVER_API_PORT`` (or an inherited ``PREFECT_API_URL``), not from
    ``--port``, so on another port than 4200 it could not reach its API."""
    env = dict(os.environ if base is None else base)
    env.update(SERVER_ENV)
    env.update(
        {
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": api_url(port, host),
        }
    )
    return env


def how_to_start(port: int = DEFAULT_PORT) -> str:
    """The two commands that give scheduling a server, for error messages."""
    return (
        f"start one with `recpipe server --port {port}` (in another terminal) and "
        f"`export PREFECT_API_URL={api_url(port)}`"
    )


def check_api(url: str | None, timeout: float = 5.0) -> str:
    """Check that a Prefect server answers at ``url`` (a ``PREFECT_API_URL``).

    Returns
    -------
    str
        The URL without a trailing slash.

    Raises
    ------
    SchedulerError
        No URL (Prefect would fall back to its temporary API, which cannot run
        schedules), or ``<url>/health`` does not answer ``true``; the message says how
        to start a server.
    """
    if not url:
        raise SchedulerError(
            "PREFECT_API_URL is not set: scheduling needs a running Prefect server "
            "(the temporary API that `recpipe run` starts cannot run schedules); " + how_to_start()
        )
    url = url.rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # something answered, but not a Prefect API
        body = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SchedulerError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({reason}); "
            f"expected a running server; {how_to_start(_port_of(url))}"
        ) from None
    try:
        healthy = json.loads(body) is True
    except ValueError:
        healthy = False
    if not healthy:
        raise SchedulerError(
            f"PREFECT_API_URL={url} answered {body[:80]!r} at /health, expected true: "
            f"is it a Prefect server's API (ending in /api)? {how_to_start(_port_of(url))}"
        )
    return url


def _port_of(url: str) -> int:
    from urllib.parse import urlparse

    try:
        return urlparse(url).port or DEFAULT_PORT
    except ValueError:
        return DEFAULT_PORT
