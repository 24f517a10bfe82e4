"""Negative sampling from popularity^alpha with a pre-computed sample cache.

Models trained on implicit feedback (BPR matrix factorization, sampled-softmax
and BCE objectives, GRU4Rec's additional negatives) need many item indices
drawn from a fixed distribution. :class:`NegativeSampler` draws them from
``counts ** alpha`` (``alpha = 0``: uniform over the catalogue, ``alpha = 1``:
proportional to popularity), following the sampling scheme of GRU4Rec
(Hidasi & Karatzoglou, 2018, "Recurrent Neural Networks with Top-k Gains for
Session-based Recommendations"): one vectorised inverse-CDF draw (a guide-table
search, exact and faster than plain binary search) fills a large buffer of
samples, and requests are served from the buffer until it is used up, then it
is refilled. Serving a request is a slice copy, so the cost of drawing is paid
in big vectorised chunks rather than per batch.

The stream of draws depends only on the distribution, ``seed`` and
``cache_size``: ``sample(3)`` then ``sample(5)`` returns the same eight items as
one ``sample(8)``.

Reserved index slots (padding and unknown, indices ``< N_RESERVED``) are never
drawn.
"""

from __future__ import annotations

import logging

import numpy as np

from recpipe.features.idmap import N_RESERVED

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 10_000_000
_MAX_REJECTION_ROUNDS = 1000


class _GuidedSearch:
    """Inverse-CDF lookup with a guide table (Chen & Asau 1974, "indexed search").

    Same answers as ``np.searchsorted(cdf, u * total, side="right")``, about four
    times faster on large catalogues: a table over ``M = 2 * n`` equal slices of
    ``[0, total)`` gives, for each slice, the first index whose CDF exceeds the
    slice start; a draw starts there and steps forward a few times (almost every
    draw is done after three steps); the rare rest fall back to binary search.
    """

    _STEPS = 3

    def __init__(self, cdf: np.ndarray) -> None:
        self.cdf = cdf
        self.total = float(cdf[-1])
        self.n_slices = 2 * cdf.shape[0]
        self.slice_width = self.total / self.n_slices
        starts = np.arange(self.n_slices) * self.slice_width
        self.guide = np.searchsorted(cdf, starts, side="right")
        # Largest value below total: u * total may round up to total itself.
        self.u_max = float(np.nextafter(self.total, 0.0))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """Item index of each uniform ``u`` in [0, 1): (N,) -> (N,) int64."""
        x = u * self.total
        np.minimum(x, self.u_max, out=x)
        cell = (x * (1.0 / self.slice_width)).astype(np.int64)
        np.clip(cell, 0, self.n_slices - 1, out=cell)
        # Floating error can put x just below its cell's start: step back one cell,
        # since starting too early is safe and starting too late is not.
        cell -= cell * self.slice_width > x
        idx = self.guide[cell]
        todo = np.flatnonzero(self.cdf[idx] <= x)
        for _ in range(self._STEPS):
            if todo.size == 0:
                break
            idx[todo] += 1
            todo = todo[self.cdf[idx[todo]] <= x[todo]]
        if todo.size:
            idx[todo] = np.searchsorted(self.cdf, x[todo], side="right")
        return idx


class NegativeSampler:
    """Draw item indices from ``counts ** alpha`` through a refilled sample cache.

    Parameters
    ----------
    counts : np.ndarray
        (n_items,) non-negative training counts aligned to item indices (index
        ``i`` is the count of item ``i``; the entries of the reserved slots are
        ignored).
    alpha : float, default 1.0
        Exponent on the counts. ``0`` samples uniformly over every non-reserved
        index (items with a zero count included); ``1`` samples by popularity;
        for ``alpha > 0`` items with a zero count are never drawn.
    seed : int, default 0
        Seed of the ``np.random.Generator`` that fills the cache.
    cache_size : int, default 10_000_000
        Number of draws made at once when the cache runs empty (stored as int32
        where the catalogue allows, so 10M draws take 40 MB). The cache is
        filled lazily, on the first request.
    n_reserved : int, default N_RESERVED
        Number of leading reserved slots that are never drawn.

    Examples
    --------
    >>> counts = np.array([0, 0, 5, 1, 0, 4])  # slots 0 and 1 reserved
    >>> sampler = NegativeSampler(counts, alpha=1.0, seed=0, cache_size=1000)
    >>> sampler.probabilities.round(2).tolist()
    [0.0, 0.0, 0.5, 0.1, 0.0, 0.4]
    >>> sampler.sample_matrix(2, 3).shape
    (2, 3)
    """

    def __init__(
        self,
        counts: np.ndarray,
        *,
        alpha: float = 1.0,
        seed: int = 0,
        cache_size: int = DEFAULT_CACHE_SIZE,
        n_reserved: int = N_RESERVED,
    ) -> None:
        counts = np.asarray(counts)
        if counts.ndim != 1:
            raise ValueError(f"counts must be 1-D (n_items,), got shape {counts.shape}")
        if n_reserved < 0:
            raise ValueError(f"n_reserved must be >= 0, got {n_reserved}")
        if counts.shape[0] <= n_reserved:
            raise ValueError(
                f"counts has {counts.shape[0]} entries: expected more than the "
                f"{n_reserved} reserved slots"
            )
        counts = counts.astype(np.float64)
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("counts must be finite and non-negative")
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")

        weights = np.ones_like(counts) if alpha == 0 else np.power(counts, alpha)
        weights[:n_reserved] = 0.0
        total = float(weights.sum())
        if not total > 0:
            raise ValueError(
                "no item can be drawn: every non-reserved count is zero (use alpha=0 "
                "for uniform sampling)"
            )
        self._alpha = float(alpha)
        self._seed = int(seed)
        self._n_reserved = int(n_reserved)
        self._cache_size = int(cache_size)
        self._probabilities = weights / total
        self._probabilities.setflags(write=False)
        # whether some item's probability is ~1 (sample_excluding checks its rows then)
        self._one_item_holds_all = bool(self._probabilities.max() >= 1.0 - 1e-12)
        # Unnormalised CDF: searching ``u * total`` avoids a last entry below 1.0.
        self._search = _GuidedSearch(np.cumsum(weights))
        self._dtype = np.int32 if counts.shape[0] < np.iinfo(np.int32).max else np.int64
        self._rng = np.random.default_rng(seed)
        self._cache = np.empty(0, dtype=self._dtype)
        self._pos = 0
        self.n_refills = 0

    # ------------------------------------------------------------------ properties
    @property
    def probabilities(self) -> np.ndarray:
        """(n_items,) float64 read-only probability of drawing each index (sums to 1).

        Zero at the reserved slots. ``np.log(probabilities[items])`` is the logQ
        correction of sampled softmax.
        """
        return self._probabilities

    @property
    def n_items(self) -> int:
        """Size of the index space, reserved slots included."""
        return int(self._probabilities.shape[0])

    @property
    def alpha(self) -> float:
        """The popularity exponent."""
        return self._alpha

    @property
    def cache_size(self) -> int:
        """Number of draws made per cache refill."""
        return self._cache_size

    def __repr__(self) -> str:
        return (
            f"NegativeSampler(n_items={self.n_items}, alpha={self._alpha}, "
            f"seed={self._seed}, cache_size={self._cache_size})"
        )

    # ------------------------------------------------------------------ drawing
    def reseeded(self, seed: int, *, cache_size: int | None = None) -> NegativeSampler:
        """A fresh sampler with the same distribution and a new seed (and empty cache).

        Cheap: the probability table is shared, nothing is drawn until used.
        """
        clone = object.__new__(NegativeSampler)
        clone.__dict__.update(self.__dict__)
        clone._seed = int(seed)
        clone._cache_size = int(cache_size) if cache_size is not None else self._cache_size
        if clone._cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {clone._cache_size}")
        clone._rng = np.random.default_rng(seed)
        clone._cache = np.empty(0, dtype=self._dtype)
        clone._pos = 0
        clone.n_refills = 0
        return clone

    def _draw(self, n: int) -> np.ndarray:
        """``n`` fresh inverse-CDF draws (no cache)."""
        return self._search(self._rng.random(n)).astype(self._dtype, copy=False)

    def _refill(self) -> None:
        self._cache = self._draw(self._cache_size)
        self._pos = 0
        self.n_refills += 1
        log.debug(
            "negative sample cache refilled (%d draws, refill %d)", self._cache_size, self.n_refills
        )

    def sample(self, n: int) -> np.ndarray:
        """Draw ``n`` item indices.

        Parameters
        ----------
        n : int
            Number of draws (>= 0).

        Returns
        -------
        np.ndarray
            (n,) int64 item indices, each ``>= n_reserved``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            if self._pos >= self._cache.shape[0]:
                self._refill()
            take = min(n - filled, self._cache.shape[0] - self._pos)
            out[filled : filled + take] = self._cache[self._pos : self._pos + take]
            self._pos += take
            filled += take
        return out

    def sample_matrix(self, rows: int, k: int) -> np.ndarray:
        """Draw a (rows, k) int64 matrix of item indices (row-major from the stream)."""
        if rows < 0 or k < 0:
            raise ValueError(f"rows and k must be >= 0, got rows={rows}, k={k}")
        return self.sample(rows * k).reshape(rows, k)

    def sample_excluding(self, pos: np.ndarray, k: int) -> np.ndarray:
        """Draw k negatives per row, none equal to that row's positive item.

        Collisions are redrawn (rejection sampling), so each negative follows the
        sampler's distribution conditioned on not being the row's positive.

        Parameters
        ----------
        pos : np.ndarray
            (B,) int positive item index of each row. B: batch size.
        k : int
            Negatives per row.

        Returns
        -------
        np.ndarray
            (B, k) int64 item indices with ``out[b, j] != pos[b]``.

        Raises
        ------
        ValueError
            If some positive carries all the probability mass (nothing else can
            be drawn).
        """
        pos = np.asarray(pos)
        if pos.ndim != 1:
            raise ValueError(f"pos must be 1-D (B,), got shape {pos.shape}")
        if self._one_item_holds_all:  # only then can a row have no other item to draw
            in_range = (pos >= 0) & (pos < self.n_items)
            p_pos = np.where(in_range, self._probabilities[np.where(in_range, pos, 0)], 0.0)
            if pos.size and k > 0 and float(p_pos.max()) >= 1.0 - 1e-12:
                bad = int(pos[np.argmax(p_pos)])
                raise ValueError(
                    f"item {bad} holds all the sampling mass: no negative other than it exists"
                )
        out = self.sample_matrix(pos.shape[0], k)
        for _ in range(_MAX_REJECTION_ROUNDS):
            rows, cols = np.nonzero(out == pos[:, None])
            if rows.size == 0:
                return out
            out[rows, cols] = self.sample(rows.size)
        raise RuntimeError(  # only reachable with p(pos) ~ 1, refused above
            f"sample_excluding: collisions left after {_MAX_REJECTION_ROUNDS} rounds"
        )
