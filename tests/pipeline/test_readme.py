"""The README's first hour, walked as written: the quick start (``make quick``, i.e.
``recpipe run --quick``) in a copy of the project, then every example of "Get
recommendations" (the ``recpipe recommend`` lines and the Python entry point), the
pyfunc snippet of "Gates and promotion" and the curl examples of "Serving" (sent to the
service's ASGI app in-process) against that workspace. Each runs, and the example
user's answers come from the model (``strategy: model``).

The examples are read from README.md, not copied here: a README example that stops
working fails this test.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.pipeline.conftest import REPO, copy_project

pytestmark = pytest.mark.slow

README = REPO / "README.md"
#: The user the README's examples ask for.
EXAMPLE_USER = "u0147"
RECPIPE = [sys.executable, "-m", "recpipe.cli"]


def section(title: str) -> str:
    """The text of the README section ``## title`` (up to the next ``## `` heading)."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def commands(block: str, program: str) -> list[list[str]]:
    """The shell commands of a bash block that start with ``program`` (backslash
    continuations joined, trailing ``# comments`` dropped), split as the shell would."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out, pending = [], ""
    for line in joined.splitlines():
        pending = f"{pending}\n{line}" if pending else line.strip()
        try:  # a quoted argument may go on over the next lines
            argv = shlex.split(pending, comments=True)
        except ValueError:
            continue
        if pending.startswith(program):
            out.append(argv)
        pending = ""
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RECPIPE_BUNDLE", None)
    return env


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project after the README's quick start (``make quick``)."""
    quick = re.search(r"`make quick` \(`([^`]+)`\)", README.read_text())
    assert quick, "the README names the command `make quick` runs"
    argv = shlex.split(quick.group(1))
    assert argv[0] == "recpipe"
    ws = tmp_path_factory.mktemp("readme") / "ws"
    copy_project(ws)
    _run([*RECPIPE, *argv[1:]], ws, timeout=1500)
    assert (ws / "reports" / "package.json").is_file()
    if not json.loads((ws / "reports" / "gate.json").read_text())["passed"]:
        promote_the_candidate(ws)
    return ws


def promote_the_candidate(ws: Path) -> None:
    """After a first run whose gate failed there is no ``champion`` alias (the Bento
    serves the gate's candidate): promote the candidate's version by hand, with the
    README's ``recpipe promote`` line, as the README says to."""
    import mlflow

    from recpipe.gates.registry import Registry
    from recpipe.paths import Paths
    from recpipe.pipeline import workspace_params

    candidate = json.loads((ws / "reports" / "gate.json").read_text())["candidate"]
    before = mlflow.get_tracking_uri()
    try:
        paths = Paths.at(ws)
        registry = Registry.for_workspace(workspace_params(paths), paths)
        assert not registry.aliases()
        version = max(
            (v for v in registry.versions() if _is(registry.get_version(v).tags, candidate)),
            key=int,
        )
    finally:
        mlflow.set_tracking_uri(before)
    (argv,) = [
        a
        for a in commands(
            code_blocks(section("Gates and promotion"), "bash")[0], ".venv/bin/recpipe"
        )
        if a[1] == "promote"
    ]
    argv[argv.index("--version") + 1] = version
    _run([*RECPIPE, *argv[1:]], ws)


def _is(tags: dict[str, str], candidate: dict[str, Any]) -> bool:
    return (tags.get("recpipe.model"), tags.get("recpipe.split")) == (
        candidate["model"],
        candidate["split"],
    )


def test_the_recommend_command_lines(workspace: Path) -> None:
    lines = commands(code_blocks(section("Get recommendations"), "bash")[0], ".venv/bin/recpipe")
    assert len(lines) >= 4
    seen: set[str] = set()
    for argv in lines:
        assert argv[1] == "recommend", argv
        stdout = _run([*RECPIPE, *argv[1:]], workspace)
        if "--all-users" in argv:
            table = pd.read_parquet(workspace / argv[argv.index("--out") + 1])
            mine = table[table["user_id"] == EXAMPLE_USER]
            assert len(mine) == int(argv[argv.index("-k") + 1])
            assert set(mine["strategy"]) == {"model"}
            seen.add("--all-users")
            continue
        answer = json.loads(stdout)
        assert len(answer["items"]) == int(argv[argv.index("-k") + 1]) == len(answer["scores"])
        if "--user" in argv:
            assert argv[argv.index("--user") + 1] == EXAMPLE_USER
            assert answer["strategy"] == "model", answer
        else:  # the example items are in the catalogue: no popularity fallback
            assert answer["strategy"] != "popularity", (argv, answer)
        seen.update(a for a in argv if a.startswith("--") and a != "--out")
    assert {"--user", "--session", "--similar", "--all-users"} <= seen


def test_the_python_entry_point(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = " ".join(section("Get recommendations").split())
    # the calls as the README writes them, e.g. `recommend_session(items, k=k)`
    entry = re.search(r"`(recpipe\.serve\.champion\.load_champion\([^`]*\))`", text)
    calls = re.findall(r"`((?:recommend|recommend_session|similar)\([^`]*\))`", text)
    batch = re.search(r"`(top_k_all_users\([^`]*\))`", text)
    assert entry and batch and len(calls) == 3, (entry, calls, batch)
    import recpipe.serve.champion  # noqa: F401 (the README's dotted name)
    from recpipe.serve.champion import top_k_all_users

    monkeypatch.chdir(workspace)
    predictor = eval(entry.group(1), {"recpipe": sys.modules["recpipe"]})
    names = {"predictor": predictor, "top_k_all_users": top_k_all_users, "k": 5}
    names["user_id"] = EXAMPLE_USER
    answer = eval(f"predictor.{calls[0]}", names)
    assert calls[0].startswith("recommend(") and answer.strategy == "model"
    assert len(answer.items) == 5
    names["items"], names["item_id"] = answer.items[:2], answer.items[0]
    for call in calls[1:]:
        other = eval(f"predictor.{call}", names)
        assert len(other.items) == 5 and other.strategy != "popularity", (call, other)
    table = eval(batch.group(1), names)
    assert list(table.columns) == ["user_id", "rank", "item_id", "score", "strategy"]
    mine = table[table["user_id"] == EXAMPLE_USER]
    assert list(mine["item_id"]) == answer.items


def test_the_pyfunc_snippet(workspace: Path) -> None:
    (snippet,) = code_blocks(section("Gates and promotion"), "python")
    assert EXAMPLE_USER in snippet
    tree = ast.parse(snippet)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr), "the snippet ends with the prediction"
    # the snippet as written, with its last value printed as JSON
    script = (
        ast.unparse(ast.Module(body=tree.body[:-1], type_ignores=[]))
        + f"\n_answer = {ast.unparse(last.value)}\n"
        + "print(_answer.to_json(orient='records'))\n"
    )
    (answer,) = json.loads(_run([sys.executable, "-c", script], workspace).strip().splitlines()[-1])
    assert answer["strategy"] == "model", answer
    # the same list as the service's predictor gives the user (seen items left out)
    from recpipe.serve.champion import load_champion

    k = len(answer["items"])
    assert answer["items"] == load_champion(workspace).recommend(EXAMPLE_USER, k=k).items


def test_the_curl_examples(workspace: Path) -> None:
    from recpipe.serve.champion import champion_bundle
    from tests.serve.helpers import service_client

    examples = commands(code_blocks(section("Serving"), "bash")[0], "curl")
    assert len(examples) >= 5
    answers: dict[str, Any] = {}
    with service_client(champion_bundle(workspace)) as client:
        for argv in examples:
            url = next(a for a in argv[1:] if "localhost:" in a)
            path = "/" + url.split("/", 1)[1] if "/" in url else "/"
            if "-d" in argv:
                body = json.loads(argv[argv.index("-d") + 1])
                response = client.post(path, json=body)
            else:
                body = None
                response = client.get(path)
            assert response.status_code == 200, (argv, response.text)
            answer = response.json()
            if body is not None:
                assert answer["items"] and answer["strategy"], (argv, answer)
                if body.get("user_id") == EXAMPLE_USER:
                    assert answer["strategy"] == "model", answer
                    answers["user"] = answer
            else:
                answers[path] = answer
    assert "user" in answers
    assert answers["/model"]["name"]
