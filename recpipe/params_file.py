"""Edits of a params file that keep what its user wrote.

``params.yaml`` is a file people write by hand: its comments, its ``null`` spellings and
its hand-wrapped flow lists are part of it. :func:`edited_text` changes only the entries
of the keys asked for and leaves every other line byte for byte; :func:`holding` puts
such a text in the file only for the length of a block (what ``dvc commit`` reads) and
puts the original bytes back afterwards, even when the block fails or the process is
killed in it (a backup beside the file is restored by :func:`restore_backup`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A mapping key at the start of a line (after its indentation).
_KEY = re.compile(r"^( *)([A-Za-z_][\w\-]*)\s*:")
#: Nothing: the marker of a key the new params no longer have.
_MISSING = object()


def _lookup(tree: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(tree, Mapping) or part in (None, "") or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _outermost(keys: list[str]) -> list[str]:
    """``keys`` without those under another one (``a.b`` is set whole with ``a``)."""
    chosen = sorted(set(keys), key=lambda k: (k.count("."), k))
    kept: list[str] = []
    for key in chosen:
        if not any(key.startswith(f"{other}.") for other in kept):
            kept.append(key)
    return kept


def _blocks(text: str) -> list[tuple[tuple[str, ...], str]]:
    """The text cut into blocks keyed by their path of the top two mapping levels:
    ``()`` for the lines before the first key, ``("train",)`` for a section's own line,
    ``("train", "candidates")`` for an entry with everything below it (comment lines,
    nested keys, continuation lines of a wrapped flow list, blank lines after it)."""
    blocks: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
    section: str | None = None
    for line in text.splitlines(keepends=True):
        match = _KEY.match(line)
        if match and len(match.group(1)) == 0:
            section = match.group(2)
            blocks.append(((section,), [line]))
        elif match and len(match.group(1)) == 2 and section is not None:
            blocks.append(((section, match.group(2)), [line]))
        else:
            blocks[-1][1].append(line)
    return [(path, "".join(lines)) for path, lines in blocks]


def _flow_like(node: Any, value: Any) -> Any:
    """``value`` as ruamel nodes, in flow style (``[a, b]``, ``{k: v}``) as a params file
    writes its lists and small mappings, unless ``node`` (what it replaces) was a block."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, Mapping):
        new: Any = CommentedMap((k, _flow_like(None, v)) for k, v in value.items())
    elif isinstance(value, list | tuple):
        new = CommentedSeq(_flow_like(None, v) for v in value)
    else:
        return value
    block = isinstance(node, CommentedMap | CommentedSeq) and node.fa.flow_style() is False
    if not block:
        new.fa.set_flow_style()
    return new


def edited_text(original: str, values: Mapping[str, Any], keys: list[str]) -> str:
    """``original`` (a params file's text) with ``keys`` set to their values in ``values``.

    Parameters
    ----------
    original : str
        The file's text.
    values : mapping
        The params to take the values from (a nested dict, params.yaml's layout).
    keys : list of str
        Flattened keys (``data.path``, ``train.model_splits.sasrec``) to set; a key that
        ``values`` lacks is removed from the file.

    Returns
    -------
    str
        The new text: the entries of ``keys`` rewritten (their inline comments kept,
        ``null`` written as ``null``, lists in flow style as params files write them);
        every other line exactly as in ``original``. With no keys, ``original`` itself.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    keys = _outermost(keys)
    if not keys:
        return original
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # a changed entry stays on its line; the others are not re-emitted
    rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = rt.load(original) if original.strip() else None
    if not isinstance(data, CommentedMap):
        data = CommentedMap()
    for key in keys:
        parts = key.split(".")
        value = _lookup(values, parts)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = CommentedMap()
            node = node[part]
        if value is _MISSING:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = _flow_like(node.get(parts[-1]), value)
    buffer = io.StringIO()
    rt.dump(data, buffer)
    before = dict(_blocks(original))

    def changed(path: tuple[str, ...]) -> bool:
        dotted = ".".join(path)
        if len(path) == 1:  # a section's own line: only when the section itself is set
            return dotted in keys
        return any(k == dotted or k.startswith(f"{dotted}.") for k in keys)

    pieces = []
    for path, text in _blocks(buffer.getvalue()):
        pieces.append(before[path] if path in before and not changed(path) else text)
    return "".join(pieces)


def _backup(path: Path) -> Path:
    return path.with_name(f".{path.name}.recpipe-original")


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then rename),
    keeping the file's permission bits."""
    tmp = path.with_name(f".{path.name}.recpipe-tmp-{os.getpid()}")
    tmp.write_bytes(data)
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


def restore_backup(path: Path) -> bool:
    """Put back a params file that a killed :func:`holding` left changed; True when it did."""
    path = path.resolve() if path.is_symlink() else path
    backup = _backup(path)
    if not backup.is_file():
        return False
    _replace(path, backup.read_bytes())
    backup.unlink()
    log.warning("restored %s from %s (a run was stopped while DVC read it)", path, backup.name)
    return True


@contextlib.contextmanager
def holding(path: Path, text: str) -> Iterator[None]:
    """``path`` holds ``text`` inside the block, and its original bytes again after it.

    A copy of the original waits beside the file (``.NAME.recpipe-original``) while the
    block runs, so that a process killed inside leaves it for :func:`restore_backup`. A
    file that did not exist is removed again; a symbolic link stays a link (its target
    is what changes and comes back).
    """
    path = path.resolve() if path.is_symlink() else path  # the linked file, not the link
    restore_backup(path)
    existed = path.is_file()
    original = path.read_bytes() if existed else b""
    if existed:
        _replace(_backup(path), original)
    try:
        _replace(path, text.encode())
        yield
    finally:
        if existed:
            _replace(path, original)
            _backup(path).unlink(missing_ok=True)
        else:
            path.unlink(missing_ok=True)
