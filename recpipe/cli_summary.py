"""What the CLI prints of a finished run (`recpipe run` / `retrain`: where the outputs
are, the gate decision, the registry outcome, the Bento and the lineage) and of a
version's lineage (`recpipe lineage`)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

__all__ = ["print_lineage_info", "print_run"]


def print_run(out: Console, summary: dict[str, Any]) -> None:
    """Print where a finished run's outputs are, its gate decision and registry outcome."""
    outputs = summary["outputs"]
    out.print("[bold green]recpipe run finished[/]")
    out.print(f"  validated data:     {outputs['data']}")
    out.print(f"  validation report:  {outputs['validation_report']}")
    out.print(f"  split report:       {outputs['splits']}")
    out.print(f"  features:           {outputs['features']}")
    out.print(f"  trained models:     {outputs['models']}")
    out.print(f"  leaderboard:        {outputs['leaderboard']}")
    out.print(f"  metrics:            {outputs['metrics']}")
    gate, registry = summary["gate"], summary["registry"]
    verdict = "[green]passed[/]" if gate["passed"] else "[yellow]not passed[/]"
    out.print(f"  gate decision:      {verdict} - {outputs['gate']}")
    if not gate["passed"]:
        for reason in gate["reasons"]:
            out.print(f"                      - {escape(reason)}")
    versions = ", ".join(f"{k} v{v}" for k, v in registry["versions"].items()) or "none"
    out.print(f"  registered:         {registry['registered_model']}: {versions}")
    out.print(f"  registry:           {escape(registry['message'])}")
    if summary.get("outcome") and summary["outcome"] != registry["message"]:
        out.print(f"  outcome:            {escape(summary['outcome'])}")
    out.print(
        f"  champion:           {_version(registry['champion'])} "
        f"(previous: {_version(registry['previous'])})"
    )
    package = summary.get("package") or {}
    if package.get("bento_tag"):
        out.print(f"  Bento:              {package['bento_tag']} - {package['archive']}")
        out.print(f"  serve it with:      {package['serve']} (GET /model, POST /recommend ...)")
    else:
        out.print(f"  Bento:              none - {escape(str(package.get('message')))}")
    _print_lineage(out, summary.get("lineage"))
    out.print(f"  MLflow run:         {summary['mlflow_run_id']} in {outputs['mlflow']}")
    out.print(f"  look at runs with:  mlflow ui --backend-store-uri {outputs['mlflow']}")
    if summary.get("mlflow", {}).get("run_url"):
        out.print(f"  then open:          {summary['mlflow']['run_url']}")


def _version(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


def _print_lineage(out: Console, lineage: dict[str, Any] | None) -> None:
    """One or two lines on a run's DVC lineage (commit, push); warnings in yellow."""
    if not lineage:
        return
    dvc, push = lineage["dvc"], lineage["push"]
    if dvc["status"] == "committed":
        text = f"dvc.lock {lineage['dvc_lock_sha256'][:12]} committed"
        if push["status"] == "pushed":
            text += f", pushed to {push['remote']} ({push['url']})"
        elif push["status"] == "skipped":
            text += f"; not pushed: {push['message']}"
        out.print(f"  lineage:            {escape(text)}")
        if push["status"] == "failed":
            out.print(f"  [yellow]warning:[/]            {escape(push['message'])}")
        if dvc.get("params_overridden"):
            keys = ", ".join(dvc["params_overridden"])
            out.print(
                f"  params.yaml:        left as it was; dvc.lock records this run's {escape(keys)}"
            )
    elif dvc["status"] == "failed":
        out.print(f"  [yellow]lineage warning:[/]    {escape(dvc['message'])}")
    else:
        out.print(f"  lineage:            not recorded with DVC: {escape(dvc['message'])}")


def print_lineage_info(out: Console, info: dict[str, Any]) -> None:
    """`recpipe lineage VERSION`: data -> params -> run -> version -> Bento, as text
    (``info`` is :func:`recpipe.lineage.describe`'s)."""
    data, params, run, ver, bento = (info[k] for k in ("data", "params", "run", "version", "bento"))
    out.print(f"[bold]{escape(ver['name'])} v{ver['version']}[/] lineage")
    out.print("[bold]data[/]")
    out.print(f"  source:           {escape(str(data['source']))}")
    for name, digest in (data["input_files"] or {}).items():
        out.print(f"  input file:       {escape(name)} (sha256 {str(digest)[:12]})")
    rows = ", ".join(f"{k} {v}" for k, v in (data["rows"] or {}).items())
    out.print(f"  rows:             {rows or 'unknown'}")
    out.print(f"  content hash:     {data['content_hash']}")
    for name, entry in data["dvc"].items():
        md5 = entry["md5"] if entry else "not recorded"
        out.print(f"  dvc data/{name + ':':<10} {md5}")
    out.print("[bold]params[/]")
    out.print(f"  sha256:           {params['sha256']}")
    for key, value in params["key"].items():
        out.print(f"  {key + ':':<17} {escape(json.dumps(value))}")
    out.print("[bold]run[/]")
    out.print(f"  MLflow run:       {run['run_id']} ({run['name']}, {run['status']})")
    out.print(f"  started:          {run['start_time']}")
    out.print(f"  git commit:       {run['git_commit']} (dirty: {run['git_dirty']})")
    out.print(f"  dvc.lock sha256:  {run['dvc_lock_sha256']}")
    out.print(f"  dvc commit/push:  {run['dvc_commit']} / {run['dvc_push']}")
    out.print("[bold]model version[/]")
    aliases = ", ".join(ver["aliases"]) or "none"
    out.print(f"  candidate:        {ver['model']} on {ver['split']} (aliases: {aliases})")
    out.print(f"  gate decision:    {ver['gate_decision']}")
    # the largest K only (all of them with --json)
    ks = [k.rsplit("@", 1)[1] for k in ver["metrics"] if "@" in k]
    top = max(ks, key=lambda k: int(k) if k.isdigit() else -1) if ks else None
    shown = {k: v for k, v in ver["metrics"].items() if top is None or k.endswith(f"@{top}")}
    metrics = ", ".join(f"{k} {v}" for k, v in shown.items())
    out.print(f"  metrics:          {metrics or 'none'}")
    out.print("[bold]Bento[/]")
    if bento["tag"]:
        serves = (
            "this version"
            if bento["serves_this_version"]
            else f"v{bento['serves_version']}, not this version"
        )
        out.print(f"  built by the run: {bento['tag']} (serves {serves})")
        out.print(f"  archive sha256:   {bento['archive_sha256']}")
        dvc_md5 = (bento["archive_dvc"] or {}).get("md5", "not recorded")
        out.print(f"  archive dvc md5:  {dvc_md5}")
    else:
        out.print("  built by the run: none recorded")
    for entry in bento["serving_runs"]:
        out.print(f"  serving it:       {entry['bento_tag']} (run {entry['run_id']})")
