"""MovieLens importers: the classic 100K folder and the ``ml-latest`` CSV family.

``movielens-100k``
    A folder with ``u.data`` (required; tab-separated ``user item rating unix-ts``),
    ``u.item`` (``|``-separated, latin-1, 5 fields + one 0/1 flag per genre; genre
    names from ``u.genre`` when present) and ``u.user`` (``id|age|gender|occupation|zip``).
    ``u.item`` / ``u.user`` are optional (a warning is logged when absent). The
    path may also be the parent of an ``ml-100k/`` folder (as unpacked from the zip).

``movielens-latest``
    A folder in the format of ``ml-latest``, ``ml-latest-small``, ``ml-20m``/``25m``/``32m``:
    ``ratings.csv`` (required; ``userId,movieId,rating,timestamp``), ``movies.csv``
    (``movieId,title,genres``; ``(no genres listed)`` = no genre) and ``tags.csv``
    (``userId,movieId,tag,timestamp``), both optional. Tags become item content:
    a ``tags`` list column (distinct tags in file order) and ``text`` (the tags
    joined with ``", "``; null for an untagged movie).

Both yield ``rating`` events with ``value`` = the rating and no session id.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recpipe.config import DataParams
from recpipe.data._io import (
    Col,
    build_events,
    find_file,
    read_delimited,
    read_text_lines,
    require_dir,
    require_file,
    split_list,
    timestamps,
)
from recpipe.data.schema import CanonicalTables, empty_items, empty_users
from recpipe.errors import DataImportError

log = logging.getLogger(__name__)

#: The 19 genres of MovieLens 100K in flag order (used when ``u.genre`` is absent).
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_ML100K_EXPECTED = "u.data (required), u.item and u.user (MovieLens 100K, as in ml-100k.zip)"
_LATEST_EXPECTED = (
    "ratings.csv (required), movies.csv and tags.csv (MovieLens ml-latest / ml-25m format)"
)


def _ml100k_folder(path: Path) -> Path:
    if path.is_file() and path.name == "u.data":
        return path.parent
    folder = require_dir(path, "movielens-100k", _ML100K_EXPECTED)
    if not (folder / "u.data").exists() and (folder / "ml-100k" / "u.data").exists():
        return folder / "ml-100k"
    return folder


def import_movielens_100k(path: Path, options: DataParams) -> CanonicalTables:
    """Import a MovieLens 100K folder (see the module docstring for the format).

    Returns
    -------
    CanonicalTables
        Events (``rating``, value = rating), items (``item_id``, ``title``,
        ``categories`` = genre names, ``release_year``, ``url``) and users
        (``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code``).
    """
    folder = _ml100k_folder(Path(path))
    what = "movielens-100k"
    data_path = require_file(folder, ["u.data"], what, _ML100K_EXPECTED)
    ratings = read_delimited(
        data_path,
        [
            Col("user_id", "int_id"),
            Col("item_id", "int_id"),
            Col("rating", "float"),
            Col("timestamp", "int"),
        ],
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        quoting=False,
        what=what,
    )
    ts = timestamps(ratings["timestamp"], "s", column="timestamp", where=f"{what} {data_path}")
    events = build_events(
        ratings["user_id"],
        ratings["item_id"],
        ts,
        "rating",
        ratings["rating"],
        None,
    )
    files = [data_path]

    items = empty_items()
    item_path = find_file(folder, ["u.item"])
    if item_path is not None:
        genre_path = find_file(folder, ["u.genre"])
        genres = list(ML100K_GENRES)
        if genre_path is not None:
            genres = _read_genres(genre_path)
            files.append(genre_path)
        items = _read_ml100k_items(item_path, genres)
        files.append(item_path)
    else:
        log.warning("%s: no u.item in %s; the items table will be empty", what, folder)

    users = empty_users()
    user_path = find_file(folder, ["u.user"])
    if user_path is not None:
        users = read_delimited(
            user_path,
            [
                Col("user_id", "int_id"),
                Col("age", "int"),
                Col("gender", "str"),
                Col("occupation", "str"),
                Col("zip_code", "str"),
            ],
            sep="|",
            names=["user_id", "age", "gender", "occupation", "zip_code"],
            quoting=False,
            what=what,
        )
        files.append(user_path)
    else:
        log.warning("%s: no u.user in %s; the users table will be empty", what, folder)

    log.info(
        "%s: %d ratings, %d items, %d users from %s",
        what,
        len(events),
        len(items),
        len(users),
        folder,
    )
    return CanonicalTables(events=events, items=items, users=users, source=what, input_files=files)


def _read_genres(path: Path) -> list[str]:
    """Genre names of ``u.genre`` (``name|index`` lines), in index order."""
    pairs: list[tuple[int, str]] = []
    for lineno, line in enumerate(read_text_lines(path, "latin-1"), start=1):
        name, sep, idx = line.rpartition("|")
        if not sep or not idx.strip().isdigit():
            raise DataImportError(
                f"movielens-100k: file {str(path)!r} line {lineno}: {line!r} is not "
                "'name|index'; expected one genre per line such as 'Action|1'"
            )
        pairs.append((int(idx), name))
    return [name for _, name in sorted(pairs)]


def _read_ml100k_items(path: Path, genres: list[str]) -> pd.DataFrame:
    flags = [f"g{i}" for i in range(len(genres))]
    names = ["item_id", "title", "release_date", "video_release_date", "url", *flags]
    raw = read_delimited(
        path,
        [
            Col("item_id", "int_id"),
            Col("title", "str"),
            Col("release_date", "str"),
            Col("url", "str"),
            *(Col(f, "int") for f in flags),
        ],
        sep="|",
        names=names,
        encoding="latin-1",
        quoting=False,
        what="movielens-100k",
    )
    matrix = raw[flags].fillna(0).to_numpy(dtype=np.int64) > 0
    genre_names = np.array(genres, dtype=object)
    categories = [list(genre_names[row]) for row in matrix]
    release = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce")
    return pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": raw["title"],
            "categories": categories,
            "release_year": release.dt.year.astype("Int64"),
            "url": raw["url"],
        }
    )


# ----------------------------------------------------------- ml-latest family ---


def import_movielens_latest(path: Path, options: DataParams) -> CanonicalTables:
    """Import a MovieLens ``ml-latest``-format folder (see the module docstring).

    Returns
    -------
    CanonicalTables
        Events (``rating``), items (``item_id``, ``title``, ``categories`` = genres,
        ``release_year`` from the title, and ``tags`` / ``text`` when ``tags.csv`` is
        present); the users table is empty (the format has no user attributes).
    """
    what = "movielens-latest"
    folder = Path(path)
    if folder.is_file() and folder.name == "ratings.csv":
        folder = folder.parent
    require_dir(folder, what, _LATEST_EXPECTED)
    ratings_path = require_file(folder, ["ratings.csv"], what, _LATEST_EXPECTED)
    ratings = read_delimited(
        ratings_path,
        [
            Col("user_id", "int_id", aliases=("userId",)),
            Col("item_id", "int_id", aliases=("movieId",)),
            Col("rating", "float"),
            Col("timestamp", "int"),
        ],
        what=what,
    )
    ts = timestamps(ratings["timestamp"], "s", column="timestamp", where=f"{what} {ratings_path}")
    events = build_events(
        ratings["user_id"],
        ratings["item_id"],
        ts,
        "rating",
        ratings["rating"],
        None,
    )
    files = [ratings_path]

    items = empty_items()
    movies_path = find_file(folder, ["movies.csv"])
    if movies_path is not None:
        movies = read_delimited(
            movies_path,
            [
                Col("item_id", "int_id", aliases=("movieId",)),
                Col("title", "str"),
                Col("genres", "str", required=False),
            ],
            what=what,
            allow_no_rows=True,
        )
        year = movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False)
        items = pd.DataFrame(
            {
                "item_id": movies["item_id"],
                "title": movies["title"],
                "categories": split_list(movies["genres"], "|", empty=("(no genres listed)",)),
                "release_year": pd.to_numeric(year).astype("Int64"),
            }
        )
        files.append(movies_path)
    else:
        log.warning("%s: no movies.csv in %s; the items table has no titles/genres", what, folder)

    tags_path = find_file(folder, ["tags.csv"])
    if tags_path is not None:
        items = _merge_tags(items, tags_path, what)
        files.append(tags_path)

    log.info("%s: %d ratings, %d items from %s", what, len(events), len(items), folder)
    return CanonicalTables(events=events, items=items, source=what, input_files=files)


def _merge_tags(items: pd.DataFrame, tags_path: Path, what: str) -> pd.DataFrame:
    tags = read_delimited(
        tags_path,
        [
            Col("user_id", "int_id", aliases=("userId",)),
            Col("item_id", "int_id", aliases=("movieId",)),
            Col("tag", "str"),
        ],
        what=what,
        allow_no_rows=True,
    )
    tags = tags.dropna(subset=["tag"])  # a missing tag carries no item content
    tags = tags.assign(tag=tags["tag"].str.strip())
    tags = tags[tags["tag"] != ""].drop_duplicates(subset=["item_id", "tag"])
    per_item = tags.groupby("item_id", sort=False)["tag"].agg(list)
    tag_frame = pd.DataFrame(
        {
            "item_id": pd.Series(per_item.index, dtype="string"),
            "tags": per_item.to_list(),
        }
    )
    if len(items.columns) > 1:
        merged = items.merge(tag_frame, on="item_id", how="outer", sort=False)
    else:
        merged = tag_frame
    merged["tags"] = [t if isinstance(t, list) else [] for t in merged["tags"]]
    merged["text"] = pd.Series(
        [", ".join(t) if t else None for t in merged["tags"]], index=merged.index, dtype="string"
    )
    if "categories" in merged:
        merged["categories"] = [c if isinstance(c, list) else [] for c in merged["categories"]]
    return merged
