"""Item and user content features for content-aware and cold-start models.

:class:`ContentEncoder` (fitted on an items table) turns each item into

- ``categories``: a multi-hot CSR row over a vocabulary fitted on the catalogue;
  column 0 is *unknown* (set for categories not seen at fit time);
- ``text``: hashed word and char n-grams of ``title`` and ``text``
  (:func:`recpipe.features.hashing.hash_texts`, counts summed over the columns);
- ``numeric``: every numeric attribute (price, release year, ...) standardised with
  the fitted mean and standard deviation, NaN -> 0, followed by one 0/1
  missing-indicator column per attribute.

:class:`UserEncoder` (fitted on a users table) turns each user attribute into one
integer code per column, 0 = unknown or missing: categorical attributes through a
vocabulary, numeric ones through bucket edges (MovieLens ``age`` uses the classic
groups <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+; other numeric columns quantile
edges fitted on the table unless given).

Both encoders work on rows unseen at fit time (cold-start items and users), save
to and load from JSON only (no pickle), and :func:`align` reorders encoded rows to
an :class:`~recpipe.features.idmap.IdMap` so models index content by item index.
Vocabularies are ordered by count descending, then by name, like id maps.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from recpipe.config import FeaturesParams
from recpipe.errors import ArtifactError, RecpipeError
from recpipe.features.hashing import hash_texts
from recpipe.features.idmap import N_RESERVED, IdMap, as_arrow_strings

log = logging.getLogger(__name__)

#: Default bucket edges of numeric user attributes, by column name: bucket
#: ``1 + i`` holds values in ``[edges[i - 1], edges[i])``; 0 is missing.
DEFAULT_USER_BUCKET_EDGES: dict[str, tuple[float, ...]] = {
    # MovieLens (1M README) age groups: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
    "age": (18.0, 25.0, 35.0, 45.0, 50.0, 56.0),
}

ITEM_ENCODER_FILE = "item_encoder.json"
USER_ENCODER_FILE = "user_encoder.json"
ITEM_CONTENT_ARRAYS = "item_content.npz"
ITEM_CONTENT_IDS = "item_ids.parquet"
ITEM_CONTENT_META = "item_content.json"

_FORMAT_VERSION = 1
MISSING_SUFFIX = "_missing"


# vocabularies --------------------------------------------------------------------
def fit_vocab(values: pd.Series | Sequence[Any], min_count: int = 1) -> list[str]:
    """Distinct non-null values seen at least ``min_count`` times, by count then value.

    Returns
    -------
    list of str
        Entry ``i`` gets code ``i + 1``; code 0 is unknown.
    """
    arr = as_arrow_strings(values)
    vc = pc.value_counts(arr.drop_null())
    table = pa.table({"v": vc.field("values"), "n": vc.field("counts").cast(pa.int64())})
    table = table.filter(pc.greater_equal(table["n"], min_count))
    table = table.sort_by([("n", "descending"), ("v", "ascending")])
    return [str(v) for v in table["v"].to_pylist()]


def vocab_codes(values: pd.Series | Sequence[Any], vocab: Sequence[str]) -> np.ndarray:
    """(N,) int32 codes of ``values`` in ``vocab`` (``vocab[i]`` -> ``i + 1``; else 0)."""
    arr = as_arrow_strings(values)
    pos = pc.index_in(arr, value_set=pa.array(list(vocab), type=pa.large_string()))
    if isinstance(pos, pa.ChunkedArray):
        pos = pos.combine_chunks()
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32) + 1


def _cell_values(cell: Any) -> list[str]:
    """The categories of one cell: a list / array / tuple, a single string, or null."""
    if cell is None:
        return []
    if isinstance(cell, str):
        return [cell]
    if isinstance(cell, float) and math.isnan(cell):
        return []
    if cell is pd.NA:
        return []
    return [str(v) for v in cell if v is not None and v is not pd.NA and v == v]


def _explode(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(rows, values) of a list column: row position of each category, and the category."""
    cells = [_cell_values(c) for c in column.tolist()]
    rows = np.repeat(np.arange(len(cells)), [len(c) for c in cells])
    return rows, [v for c in cells for v in c]


def _to_float(column: pd.Series, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing (and non-finite) values."""
    values = pd.to_numeric(column, errors="coerce")
    bad = int((values.isna() & column.notna()).sum())
    if bad:
        log.warning("column %r: %d non-numeric value(s) taken as missing", name, bad)
    out = values.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(out), out, np.nan)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )


# persistence helpers -------------------------------------------------------------
def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _read_json(path: Path, fmt: str) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{fmt} file {str(path)!r} does not exist")
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{fmt} file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ArtifactError(f"{str(path)!r} is not a {fmt} file (format={got!r})")
    if payload.get("version") != _FORMAT_VERSION:
        raise ArtifactError(
            f"{str(path)!r}: {fmt} version {payload.get('version')!r} is not supported "
            f"(expected {_FORMAT_VERSION})"
        )
    return payload


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def _csr_from(arrays: Mapping[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    shape = tuple(int(s) for s in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


# encoded content -----------------------------------------------------------------
@dataclass(eq=False)
class ItemContent:
    """Encoded item content, one row per item.

    Attributes
    ----------
    item_ids : numpy.ndarray
        (N,) object: item id of each row (``None`` for the reserved rows after
        :func:`align`).
    categories : scipy.sparse.csr_matrix
        (N, n_categories + 1) float32 multi-hot; column 0 = unknown category.
    text : scipy.sparse.csr_matrix
        (N, text_buckets) float32 hashed n-gram counts of title and text.
    numeric : numpy.ndarray
        (N, 2 * n_attributes) float32: standardised attributes, then their
        missing indicators.
    numeric_names : list of str
        (2 * n_attributes,) column names of ``numeric`` (``price``, ...,
        ``price_missing``, ...).
    """

    item_ids: np.ndarray
    categories: sp.csr_matrix
    text: sp.csr_matrix
    numeric: np.ndarray
    numeric_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        shapes = {
            "categories": self.categories.shape[0],
            "text": self.text.shape[0],
            "numeric": self.numeric.shape[0],
        }
        bad = {k: v for k, v in shapes.items() if v != n}
        if bad:
            raise ValueError(f"ItemContent rows disagree: {n} item_ids but {bad}")
        if self.numeric.shape[1] != len(self.numeric_names):
            raise ValueError(
                f"numeric has {self.numeric.shape[1]} columns but {len(self.numeric_names)} names"
            )

    def __len__(self) -> int:
        return len(self.item_ids)

    def save(self, directory: Path | str) -> Path:
        """Write ``item_content.npz`` (arrays), ``item_ids.parquet`` and ``item_content.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / ITEM_CONTENT_ARRAYS,
            numeric=self.numeric,
            **_csr_arrays("categories", self.categories),
            **_csr_arrays("text", self.text),
        )
        ids = pa.array(self.item_ids.tolist(), type=pa.string())
        pq.write_table(pa.table({"item_id": ids}), directory / ITEM_CONTENT_IDS)
        _write_json(
            directory / ITEM_CONTENT_META,
            {
                "format": "recpipe.item_content",
                "version": _FORMAT_VERSION,
                "n_items": len(self),
                "numeric_names": list(self.numeric_names),
            },
        )
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> ItemContent:
        """Read what :meth:`save` wrote; a missing or corrupt file raises ArtifactError."""
        directory = Path(directory)
        meta = _read_json(directory / ITEM_CONTENT_META, "recpipe.item_content")
        try:
            with np.load(directory / ITEM_CONTENT_ARRAYS, allow_pickle=False) as arrays:
                categories = _csr_from(arrays, "categories")
                text = _csr_from(arrays, "text")
                numeric = arrays["numeric"]
            ids = pq.read_table(directory / ITEM_CONTENT_IDS)["item_id"].to_pylist()
            return cls(
                item_ids=np.array(ids, dtype=object),
                categories=categories,
                text=text,
                numeric=numeric,
                numeric_names=list(meta["numeric_names"]),
            )
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise ArtifactError(f"item content at {str(directory)!r} is corrupt: {exc}") from exc


@dataclass(eq=False)
class UserContent:
    """Encoded user attributes: one integer code per user and attribute.

    Attributes
    ----------
    user_ids : numpy.ndarray
        (N,) object user ids (``None`` for the reserved rows after :func:`align`).
    codes : numpy.ndarray
        (N, n_columns) int32; column ``j`` lies in ``[0, cardinalities[j])``,
        0 = unknown or missing.
    columns : list of str
        (n_columns,) attribute names.
    cardinalities : list of int
        (n_columns,) embedding table size of each attribute.
    """

    user_ids: np.ndarray
    codes: np.ndarray
    columns: list[str]
    cardinalities: list[int]

    def __len__(self) -> int:
        return len(self.user_ids)

    def column(self, name: str) -> np.ndarray:
        """(N,) int32 codes of one attribute."""
        if name not in self.columns:
            raise KeyError(f"no user attribute {name!r}; have {self.columns}")
        return self.codes[:, self.columns.index(name)]


# item encoder --------------------------------------------------------------------
@dataclass
class ContentEncoder:
    """Fit on an items table, then encode any items (see the module docstring).

    Parameters
    ----------
    text_buckets : int
        Hashing space of title/text n-grams.
    word_ngrams, char_ngrams : tuple of int
        n-gram sizes (empty to switch a kind off).
    hash_seed : int
        Seed of the stable hash.
    text_columns : tuple of str
        Text columns hashed into the ``text`` matrix (absent ones are skipped).
    category_column : str
        List-of-strings column of categories.
    id_column : str
        The id column (never a numeric attribute).
    binary_text : bool
        0/1 text features instead of counts.

    Examples
    --------
    >>> items = pd.DataFrame(
    ...     {
    ...         "item_id": ["a", "b"],
    ...         "title": ["Red hat", "Blue hat"],
    ...         "categories": [["hats"], ["hats", "sale"]],
    ...         "price": [10.0, 30.0],
    ...     }
    ... )
    >>> enc = ContentEncoder.from_params(FeaturesParams(text_buckets=1024)).fit(items)
    >>> content = enc.transform(items)
    >>> content.categories.toarray().tolist()  # columns: unknown, hats, sale
    [[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    >>> content.numeric_names, content.numeric.tolist()
    (['price', 'price_missing'], [[-1.0, 0.0], [1.0, 0.0]])
    >>> content.text.shape
    (2, 1024)
    """

    text_buckets: int = 1 << 18
    word_ngrams: tuple[int, ...] = (1, 2)
    char_ngrams: tuple[int, ...] = (3,)
    hash_seed: int = 0
    text_columns: tuple[str, ...] = ("title", "text")
    category_column: str = "categories"
    id_column: str = "item_id"
    binary_text: bool = False
    # fitted state (None until fit)
    category_vocab: list[str] | None = None
    numeric_columns: list[str] | None = None
    means: list[float] | None = None
    stds: list[float] | None = None

    @classmethod
    def from_params(cls, params: FeaturesParams | None = None, **options: Any) -> ContentEncoder:
        """An unfitted encoder with the hashing settings of ``params`` (defaults if None)."""
        fp = params or FeaturesParams()
        return cls(
            text_buckets=fp.text_buckets,
            word_ngrams=tuple(fp.word_ngrams),
            char_ngrams=tuple(fp.char_ngrams),
            hash_seed=fp.hash_seed,
            **options,
        )

    @property
    def is_fitted(self) -> bool:
        return self.category_vocab is not None

    @property
    def n_categories(self) -> int:
        """Columns of the ``categories`` matrix: vocabulary size plus the unknown column."""
        return len(self._fitted().category_vocab or []) + 1

    @property
    def numeric_names(self) -> list[str]:
        cols = self._fitted().numeric_columns or []
        return [*cols, *(f"{c}{MISSING_SUFFIX}" for c in cols)]

    def _fitted(self) -> Self:
        if not self.is_fitted:
            raise RecpipeError("ContentEncoder is not fitted; call fit(items) first")
        return self

    def fit(self, items: pd.DataFrame) -> Self:
        """Learn the category vocabulary and numeric means/stds from ``items``; return self."""
        if self.category_column in items.columns:
            _, values = _explode(items[self.category_column])
            self.category_vocab = fit_vocab(pd.Series(values, dtype="string"))
        else:
            self.category_vocab = []
        skip = {self.id_column, self.category_column, *self.text_columns}
        self.numeric_columns = [c for c in items.columns if c not in skip and _is_numeric(items[c])]
        self.means, self.stds = [], []
        for col in self.numeric_columns:
            x = _to_float(items[col], col)
            finite = x[~np.isnan(x)]
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std()) if len(finite) else 0.0
            self.means.append(mean)
            self.stds.append(std if std > 0.0 else 1.0)
        log.info(
            "ContentEncoder: %d items, %d categories, numeric %s, text columns %s",
            len(items),
            len(self.category_vocab),
            self.numeric_columns,
            [c for c in self.text_columns if c in items.columns],
        )
        ignored = [c for c in items.columns if c not in skip and c not in self.numeric_columns]
        if ignored:
            log.debug(
                "ContentEncoder: columns %s are neither text, categories nor numeric", ignored
            )
        return self

    def transform(self, items: pd.DataFrame) -> ItemContent:
        """Encode ``items`` (rows in input order; unseen items welcome).

        Parameters
        ----------
        items : pandas.DataFrame
            (N, ...) items table with ``id_column``; absent content columns give
            zeros (numeric ones: missing indicators of 1).

        Returns
        -------
        ItemContent
            N rows.
        """
        self._fitted()
        if self.id_column not in items.columns:
            raise ValueError(f"items lack the id column {self.id_column!r}")
        ids = items[self.id_column].astype("string").to_numpy(dtype=object, na_value=None)
        return ItemContent(
            item_ids=ids,
            categories=self._categories(items),
            text=self._text(items),
            numeric=self._numeric(items),
            numeric_names=self.numeric_names,
        )

    def _categories(self, items: pd.DataFrame) -> sp.csr_matrix:
        n, width = len(items), self.n_categories
        if self.category_column not in items.columns:
            return sp.csr_matrix((n, width), dtype=np.float32)
        rows, values = _explode(items[self.category_column])
        cols = vocab_codes(pd.Series(values, dtype="string"), self.category_vocab or [])
        m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, width))
        m.sum_duplicates()
        m.data[:] = 1.0  # multi-hot, also when a cell repeats a category
        m.sort_indices()
        return m

    def _text(self, items: pd.DataFrame) -> sp.csr_matrix:
        m = sp.csr_matrix((len(items), self.text_buckets), dtype=np.float32)
        for col in self.text_columns:
            if col in items.columns:
                m = m + hash_texts(
                    items[col],
                    self.text_buckets,
                    word_ngrams=self.word_ngrams,
                    char_ngrams=self.char_ngrams,
                    seed=self.hash_seed,
                )
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        if self.binary_text:
            m.data[:] = 1.0
        return m

    def _numeric(self, items: pd.DataFrame) -> np.ndarray:
        cols = self.numeric_columns or []
        out = np.zeros((len(items), 2 * len(cols)), dtype=np.float32)
        for j, (col, mean, std) in enumerate(
            zip(cols, self.means or [], self.stds or [], strict=True)
        ):
            if col not in items.columns:
                log.warning("items lack numeric column %r; all taken as missing", col)
                x = np.full(len(items), np.nan)
            else:
                x = _to_float(items[col], col)
            missing = np.isnan(x)
            out[:, j] = np.where(missing, 0.0, (x - mean) / std)
            out[:, len(cols) + j] = missing
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able overview for reports."""
        self._fitted()
        return {
            "n_categories": self.n_categories,
            "categories": list(self.category_vocab or [])[:50],
            "text_columns": list(self.text_columns),
            "text_buckets": self.text_buckets,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
            "numeric": {
                c: {"mean": m, "std": s}
                for c, m, s in zip(
                    self.numeric_columns or [], self.means or [], self.stds or [], strict=True
                )
            },
        }

    def save(self, directory: Path | str) -> Path:
        """Write ``item_encoder.json`` into ``directory`` (created); return its path."""
        self._fitted()
        path = Path(directory) / ITEM_ENCODER_FILE
        _write_json(
            path,
            {
                "format": "recpipe.item_encoder",
                "version": _FORMAT_VERSION,
                "text_buckets": self.text_buckets,
                "word_ngrams": list(self.word_ngrams),
                "char_ngrams": list(self.char_ngrams),
                "hash_seed": self.hash_seed,
                "text_columns": list(self.text_columns),
                "category_column": self.category_column,
                "id_column": self.id_column,
                "binary_text": self.binary_text,
                "category_vocab": list(self.category_vocab or []),
                "numeric_columns": list(self.numeric_columns or []),
                "means": list(self.means or []),
                "stds": list(self.stds or []),
            },
        )
        return path

    @classmethod
    def load(cls, directory: Path | str) -> ContentEncoder:
        """Read an encoder written by :meth:`save`; problems raise ArtifactError."""
        path = Path(directory) / ITEM_ENCODER_FILE
        p = _read_json(path, "recpipe.item_encoder")
        try:
            enc = cls(
                text_buckets=int(p["text_buckets"]),
                word_ngrams=tuple(int(n) for n in p["word_ngrams"]),
                char_ngrams=tuple(int(n) for n in p["char_ngrams"]),
                hash_seed=int(p["hash_seed"]),
                text_columns=tuple(str(c) for c in p["text_columns"]),
                category_column=str(p["category_column"]),
                id_column=str(p["id_column"]),
                binary_text=bool(p["binary_text"]),
                category_vocab=[str(c) for c in p["category_vocab"]],
                numeric_columns=[str(c) for c in p["numeric_columns"]],
                means=[float(m) for m in p["means"]],
                stds=[float(s) for s in p["stds"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"item encoder {str(path)!r} is incomplete: {exc!r}") from exc
        if not len(enc.numeric_columns or []) == len(enc.means or []) == len(enc.stds or []):
            raise ArtifactError(f"item encoder {str(path)!r}: numeric columns, means, stds differ")
        return enc


# user encoder --------------------------------------------------------------------
@dataclass
class UserEncoder:
    """Fit on a users table, then encode any users (see the module docstring).

    Parameters
    ----------
    bucket_edges : dict of str to sequence of float
        Edges of numeric attributes by column name (default
        :data:`DEFAULT_USER_BUCKET_EDGES`); value ``x`` gets bucket
        ``1 + #{edges <= x}``, missing values 0.
    n_quantile_buckets : int
        Buckets of numeric attributes without given edges (quantile edges fitted
        on the table; repeated edges merge).
    min_count : int
        Categorical values seen fewer times map to 0 (unknown).
    id_column : str
        The id column (never an attribute).
    exclude : tuple of str
        Columns not to encode.

    Examples
    --------
    >>> users = pd.DataFrame(
    ...     {"user_id": ["1", "2", "3"], "age": [17, 30, None], "gender": ["F", "M", "F"]}
    ... )
    >>> content = UserEncoder().fit(users).transform(users)
    >>> content.columns, content.cardinalities
    (['age', 'gender'], [8, 3])
    >>> content.codes.tolist()  # age: <18 -> 1, 25-34 -> 3, missing -> 0; gender F -> 1
    [[1, 1], [3, 2], [0, 1]]
    """

    bucket_edges: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: dict(DEFAULT_USER_BUCKET_EDGES)
    )
    n_quantile_buckets: int = 5
    min_count: int = 1
    id_column: str = "user_id"
    exclude: tuple[str, ...] = ()
    # fitted state (None until fit): column -> vocabulary or edges, in table order
    vocabs: dict[str, list[str]] | None = None
    edges: dict[str, list[float]] | None = None
    columns: list[str] | None = None

    @property
    def is_fitted(self) -> bool:
        return self.columns is not None

    def _fitted(self) -> Self:
        if not self.is_fitted:
            raise RecpipeError("UserEncoder is not fitted; call fit(users) first")
        return self

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size of each attribute, in :attr:`columns` order."""
        self._fitted()
        vocabs, edges = self.vocabs or {}, self.edges or {}
        return [
            len(vocabs[c]) + 1 if c in vocabs else len(edges[c]) + 2 for c in self.columns or []
        ]

    def fit(self, users: pd.DataFrame) -> Self:
        """Learn vocabularies and numeric edges from ``users``; return self."""
        self.vocabs, self.edges, self.columns = {}, {}, []
        for col in users.columns:
            if col == self.id_column or col in self.exclude:
                continue
            series = users[col]
            if _is_numeric(series):
                if col in self.bucket_edges:
                    edges = sorted(float(e) for e in self.bucket_edges[col])
                else:
                    x = _to_float(series, col)
                    x = x[~np.isnan(x)]
                    q = np.linspace(0.0, 1.0, self.n_quantile_buckets + 1)[1:-1]
                    edges = np.unique(np.quantile(x, q)).tolist() if len(x) else []
                self.edges[col] = [float(e) for e in edges]
            else:
                self.vocabs[col] = fit_vocab(series, self.min_count)
            self.columns.append(col)
        log.info(
            "UserEncoder: %d users; %s",
            len(users),
            dict(zip(self.columns, self.cardinalities, strict=True)),
        )
        return self

    def transform(self, users: pd.DataFrame) -> UserContent:
        """Encode ``users`` (rows in input order); absent attributes give 0 (unknown)."""
        self._fitted()
        if self.id_column not in users.columns:
            raise ValueError(f"users lack the id column {self.id_column!r}")
        cols = self.columns or []
        codes = np.zeros((len(users), len(cols)), dtype=np.int32)
        vocabs, edges = self.vocabs or {}, self.edges or {}
        for j, col in enumerate(cols):
            if col not in users.columns:
                log.warning("users lack attribute %r; all taken as unknown", col)
                continue
            if col in vocabs:
                codes[:, j] = vocab_codes(users[col], vocabs[col])
            else:
                x = _to_float(users[col], col)
                bucket = 1 + np.searchsorted(np.asarray(edges[col]), x, side="right")
                codes[:, j] = np.where(np.isnan(x), 0, bucket)
        ids = users[self.id_column].astype("string").to_numpy(dtype=object, na_value=None)
        return UserContent(
            user_ids=ids, codes=codes, columns=list(cols), cardinalities=self.cardinalities
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able overview for reports."""
        self._fitted()
        vocabs, edges = self.vocabs or {}, self.edges or {}
        return {
            "columns": {
                c: (
                    {"kind": "categorical", "cardinality": k, "top": vocabs[c][:10]}
                    if c in vocabs
                    else {"kind": "numeric", "cardinality": k, "edges": edges[c]}
                )
                for c, k in zip(self.columns or [], self.cardinalities, strict=True)
            }
        }

    def save(self, directory: Path | str) -> Path:
        """Write ``user_encoder.json`` into ``directory`` (created); return its path."""
        self._fitted()
        path = Path(directory) / USER_ENCODER_FILE
        _write_json(
            path,
            {
                "format": "recpipe.user_encoder",
                "version": _FORMAT_VERSION,
                "bucket_edges": {k: list(v) for k, v in self.bucket_edges.items()},
                "n_quantile_buckets": self.n_quantile_buckets,
                "min_count": self.min_count,
                "id_column": self.id_column,
                "exclude": list(self.exclude),
                "columns": list(self.columns or []),
                "vocabs": self.vocabs,
                "edges": self.edges,
            },
        )
        return path

    @classmethod
    def load(cls, directory: Path | str) -> UserEncoder:
        """Read an encoder written by :meth:`save`; problems raise ArtifactError."""
        path = Path(directory) / USER_ENCODER_FILE
        p = _read_json(path, "recpipe.user_encoder")
        try:
            enc = cls(
                bucket_edges={k: tuple(float(e) for e in v) for k, v in p["bucket_edges"].items()},
                n_quantile_buckets=int(p["n_quantile_buckets"]),
                min_count=int(p["min_count"]),
                id_column=str(p["id_column"]),
                exclude=tuple(str(c) for c in p["exclude"]),
                columns=[str(c) for c in p["columns"]],
                vocabs={k: [str(v) for v in vs] for k, vs in p["vocabs"].items()},
                edges={k: [float(e) for e in es] for k, es in p["edges"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"user encoder {str(path)!r} is incomplete: {exc!r}") from exc
        unknown = [c for c in enc.columns or [] if c not in (enc.vocabs or {}) | (enc.edges or {})]
        if unknown:
            raise ArtifactError(f"user encoder {str(path)!r}: no vocabulary or edges for {unknown}")
        return enc


# alignment -----------------------------------------------------------------------
def _target_rows(ids: np.ndarray, idmap: IdMap, what: str) -> np.ndarray:
    """(len(idmap),) row of ``ids`` holding each index, or -1 (reserved / absent)."""
    dup = pd.Series(ids).dropna()
    dup = dup[dup.duplicated()]
    if len(dup):
        raise ValueError(
            f"{what} content has {len(dup)} repeated id(s), e.g. {dup.head(5).tolist()}; "
            "expected one row per id"
        )
    pos = idmap.encode(pd.Series(ids, dtype="string"))
    rows = np.full(len(idmap), -1, dtype=np.int64)
    known = pos >= N_RESERVED
    rows[pos[known]] = np.flatnonzero(known)
    absent = int((rows[N_RESERVED:] < 0).sum())
    if absent:
        log.warning(
            "align: %d of %d mapped %s ids have no content row (zeros)", absent, idmap.n_ids, what
        )
    log.debug("align: %d %s content rows not in the id map dropped", int((~known).sum()), what)
    return rows


def _take_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of ``m`` by position; -1 gives an all-zero row."""
    padded = sp.vstack([m, sp.csr_matrix((1, m.shape[1]), dtype=m.dtype)], format="csr")
    return padded[np.where(rows >= 0, rows, m.shape[0])]


def align(content: ItemContent | UserContent, idmap: IdMap) -> ItemContent | UserContent:
    """Reorder content rows to ``idmap`` indices: row ``i`` is the id with index ``i``.

    Reserved rows (:data:`~recpipe.features.idmap.PAD`, :data:`~recpipe.features.idmap.UNK`)
    and ids without a content row are all zeros; content rows of ids outside the map
    are dropped.

    Parameters
    ----------
    content : ItemContent or UserContent
        Encoded content with one row per distinct id.
    idmap : IdMap
        The map whose indices the result follows.

    Returns
    -------
    ItemContent or UserContent
        ``len(idmap)`` rows; ``item_ids`` / ``user_ids`` are ``idmap.decode(range)``.
    """
    ids = idmap.decode(np.arange(len(idmap)))
    if isinstance(content, ItemContent):
        rows = _target_rows(content.item_ids, idmap, "item")
        numeric = np.vstack([content.numeric, np.zeros((1, content.numeric.shape[1]), np.float32)])
        return ItemContent(
            item_ids=ids,
            categories=_take_rows(content.categories, rows),
            text=_take_rows(content.text, rows),
            numeric=numeric[np.where(rows >= 0, rows, len(content))],
            numeric_names=list(content.numeric_names),
        )
    if isinstance(content, UserContent):
        rows = _target_rows(content.user_ids, idmap, "user")
        codes = np.vstack([content.codes, np.zeros((1, content.codes.shape[1]), np.int32)])
        return UserContent(
            user_ids=ids,
            codes=codes[np.where(rows >= 0, rows, len(content))],
            columns=list(content.columns),
            cardinalities=list(content.cardinalities),
        )
    raise TypeError(f"align takes ItemContent or UserContent, got {type(content).__name__}")
