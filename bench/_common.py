"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any


def synth_params_for(n_events: int, seed: int) -> Any:
    """SynthParams whose expected event count is ``n_events`` (sizes scale with it)."""
    from recpipe.config import SynthParams

    base = SynthParams(seed=seed)
    funnel = 1.0 + base.cart_probability * (1.0 + base.purchase_probability)
    n_sessions = max(1, round(n_events / (base.mean_session_length * funnel)))
    n_items = int(min(50_000, max(500, n_events // 250)))
    n_users = int(min(200_000, max(2_000, n_events // 50)))
    n_categories = int(min(50, max(20, n_items // 400)))
    return base.model_copy(
        update={
            "n_sessions": n_sessions,
            "n_items": n_items,
            "n_users": n_users,
            "n_categories": n_categories,
        }
    )


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's own
    memory. ``ru_maxrss`` is not used there: it is copied from the parent at fork and
    kept across exec, so a subprocess would report its parent's peak when larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_features(overrides: list[str], split: str, workspace: Any) -> Any:
    """Run ingest -> validate -> sessions -> features in ``workspace`` with ``overrides``
    (``key=value``, as ``recpipe run --set``), building only ``split``; its features folder."""
    from recpipe.config import load_params
    from recpipe.paths import Paths
    from recpipe.pipeline import run_stage

    params = load_params(None, [*overrides, f"sessions.splits=[{split}]"])
    paths = Paths.at(workspace)
    for stage in ("ingest", "validate", "sessions", "features"):
        run_stage(stage, params, paths)
    return paths.features_dir / split


def prepare_workspace(
    n_events: int, workspace: Path, tmp: Path, stages: tuple[str, ...], extra: list[str]
) -> None:
    """Write ``n_events`` synthetic raw events (``bench/scale.py``'s generator) under
    ``tmp`` and run ``stages`` on them in ``workspace`` with the arrow engine (plus the
    ``extra`` overrides, ``key=value``); each stage's time is logged. The raw file is
    removed after."""
    import logging
    import sys
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale import prep_events

    from recpipe.config import load_params
    from recpipe.paths import Paths
    from recpipe.pipeline import run_stage

    source = tmp / "raw.parquet"
    prep_events(n_events, source)
    params = load_params(
        None,
        [
            "data.source=parquet",
            f"data.path={source}",
            "data.timestamp_unit=s",
            "prep.engine=arrow",
            "validate.on_failure=quarantine",
            *extra,
        ],
    )
    for stage in stages:
        t0 = time.perf_counter()
        run_stage(stage, params, Paths.at(workspace))
        logging.getLogger("bench").warning("%s: %.1f s", stage, time.perf_counter() - t0)
    source.unlink()


def prepare_in_child(script: str, n_events: int, workspace: Path, tmp: str) -> None:
    """Run ``script prepare N WORKSPACE TMP`` (the bench's own ``prepare`` command, which
    calls :func:`prepare_workspace`) in a child process, so its memory is not counted in
    the measured runs; logs how long it took."""
    import logging
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, script, "prepare", str(n_events), str(workspace), tmp],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    logging.getLogger("bench").warning(
        "prepared %d events in %.1f s", n_events, time.perf_counter() - t0
    )
