"""The built-in synthetic click-stream: the default data of the pipeline (no download).

:func:`generate` turns :class:`~recpipe.config.SynthParams` into canonical tables
(``source="synthetic"``). The same params (seed included) always give identical
tables; every random draw is vectorised with numpy, so millions of events take
seconds. The generative model is built so that each model family of the
catalogue has something real to learn, and a popularity baseline does not:

**Catalogue.** ``n_items`` items, each with one *main category* (category sizes
uneven, every category non-empty); a quarter also carry a secondary category
(``categories`` is a list, main category first). Titles and texts are drawn
mostly from a per-category vocabulary plus generic shop words, so a content
model can recover the category from text. ``price`` is log-normal around a
per-category level. Item popularity is Zipf(``zipf_exponent``) over a random
permutation of the items (so popularity is uncorrelated with ids and categories).

**Successors (the sequential signal).** Every item has a fixed list of
``n_successors`` other items, 80 % from its own category, chosen *uniformly*
(not by popularity), with slot weights 1, 1/2, 1/4, ... (so the first successor
is the most likely next item). A first-order Markov / session model can learn
these transitions; a popularity ranking cannot.

**Users.** Each user has a home category and two more preferred categories
(drawn by category popularity) with Dirichlet weights, the home one heaviest,
plus ``country`` and ``age_band`` attributes and a log-normal activity level
(some users have many sessions). The users table carries ``home_category``,
``country`` and ``age_band``.

**Sessions.** ``n_sessions`` sessions, each owned by a user drawn by activity.
A session starts at a time in ``[start, start + days)`` drawn from hourly slots
weighted by a daily cycle (evening peak, night trough) times a weekly profile
(weekend busier). Its number of views is geometric with mean
``mean_session_length`` (at least 1). Each session has an *intent category*
drawn from its user's preferences.

**Item walk.** The first view and every non-following view draw a fresh item:
with probability ``intent_probability`` by popularity within the session's
intent category, otherwise by global popularity. Each later view, with
probability ``follow_probability``, is instead a successor of the previous item
(the walk is simulated position by position over all sessions at once).

**Funnel and time.** Each view leads to a ``cart`` event of the same item with
probability ``cart_probability`` times an item propensity (cheaper-than-usual
items convert more; mean 1), and each cart to a ``purchase`` with probability
``purchase_probability``; both follow their view within seconds to minutes.
Gaps between views are log-normal: short when following a successor (median
~25 s), longer for a fresh draw (median ~75 s), so time since the last event
carries signal for contextual models. Timestamps are strictly increasing within
a session (integer milliseconds, gaps of at least one second); the event table
is sorted by time, as a real log would be. Every ``value`` is 1.0.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.config import SynthParams
from recpipe.data.schema import CanonicalTables

log = logging.getLogger(__name__)

#: Built-in categories and their vocabularies (extra categories get made-up words).
CATEGORY_VOCAB: dict[str, tuple[str, ...]] = {
    name: tuple(words.split())
    for name, words in {
        "electronics": (
            "wireless bluetooth charger battery usb speaker headphones screen hdmi "
            "adapter cable portable smart digital remote"
        ),
        "books": (
            "novel paperback hardcover author chapter edition story mystery biography "
            "fiction poetry anthology illustrated saga memoir"
        ),
        "kitchen": (
            "pan knife skillet blender espresso grinder kettle cutlery nonstick spatula "
            "oven baking mug teapot cookware"
        ),
        "sports": (
            "running trainer yoga dumbbell fitness racket ball cycling helmet jersey gym "
            "treadmill sweatband marathon kettlebell"
        ),
        "toys": (
            "puzzle lego doll plush building blocks toddler playset figure rc kite marbles "
            "crayons boardgame teddy"
        ),
        "garden": (
            "hose planter seeds shovel lawn mower pruner compost watering greenhouse "
            "trellis mulch rake sprinkler bulbs"
        ),
        "beauty": (
            "lipstick serum moisturizer mascara fragrance skincare cleanser shampoo "
            "conditioner nail blush toner perfume eyeliner balm"
        ),
        "fashion": (
            "dress jacket denim sneakers scarf leather cotton blouse skirt boots sweater "
            "hoodie linen belt handbag"
        ),
        "music": (
            "guitar vinyl strings amplifier drum piano keyboard ukulele microphone album "
            "pedal violin metronome tuner chords"
        ),
        "games": (
            "console controller gamepad multiplayer rpg shooter joystick arcade quest level "
            "dlc headset esports strategy platformer"
        ),
        "pets": (
            "dog cat leash collar kibble litter aquarium treats chew kennel grooming catnip "
            "harness birdseed hamster"
        ),
        "office": (
            "stapler notebook pen binder desk printer envelope folder marker calculator "
            "planner paperclip ergonomic whiteboard toner"
        ),
        "automotive": (
            "tire wiper motor oil brake headlight dashcam jumper wrench spark engine "
            "seatcover polish carwash bumper"
        ),
        "health": (
            "vitamin supplement protein thermometer bandage probiotic massage omega "
            "capsules sanitizer mask inhaler herbal wellness electrolyte"
        ),
        "baby": (
            "diaper stroller pacifier crib onesie bottle teether wipes bib carrier rattle "
            "swaddle highchair nursery formula"
        ),
        "grocery": (
            "coffee tea pasta olive chocolate cereal snack spices honey organic granola "
            "rice sauce beans flour"
        ),
        "tools": (
            "drill hammer screwdriver saw toolbox pliers socket cordless sander clamp level "
            "chisel workbench grinder multimeter"
        ),
        "outdoor": (
            "tent backpack hiking camping sleepingbag lantern compass canoe fishing "
            "trekking stove hammock waterproof trail binoculars"
        ),
        "jewelry": (
            "necklace ring bracelet earrings silver gold pendant gemstone diamond charm "
            "anklet brooch pearl sterling locket"
        ),
        "movies": (
            "bluray dvd director thriller comedy documentary boxset remastered cinema "
            "drama animated horror criterion sequel soundtrack"
        ),
        "home": (
            "lamp cushion curtain rug candle vase duvet pillow shelf mirror blanket frame "
            "clock throw decor"
        ),
        "crafts": (
            "yarn knitting sewing fabric glue beads canvas paint brush embroidery "
            "scrapbook stencil crochet quilting easel"
        ),
    }.items()
}

#: Words any item text may use (they carry no category information).
_GENERIC_TEXT = (
    "new best premium classic quality set pack value durable gift design lightweight "
    "compact deluxe essential original everyday great easy pro black white blue red "
    "large small"
)
GENERIC_WORDS: tuple[str, ...] = tuple(_GENERIC_TEXT.split())

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "SE", "CA")
_COUNTRY_WEIGHTS = np.array([0.30, 0.14, 0.13, 0.10, 0.08, 0.07, 0.06, 0.05, 0.03, 0.04])
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_WEIGHTS = np.array([0.16, 0.27, 0.22, 0.16, 0.11, 0.08])

#: Relative activity by UTC hour of day (evening peak, night trough).
HOURLY_PROFILE = np.array(
    [0.35, 0.22, 0.15, 0.12, 0.12, 0.18, 0.32, 0.50, 0.65, 0.75, 0.80, 0.85,
     0.95, 0.92, 0.85, 0.85, 0.90, 1.05, 1.30, 1.60, 1.80, 1.70, 1.25, 0.70]
)  # fmt: skip
#: Relative activity by weekday, Monday first (weekend busier).
WEEKLY_PROFILE = np.array([0.92, 0.90, 0.93, 0.97, 1.05, 1.20, 1.15])

_SUCCESSOR_IN_CATEGORY = 0.8  # share of successors from the item's own category
_SECONDARY_CATEGORY_SHARE = 0.25  # share of items listing a second category
_TEXT_CATEGORY_SHARE = 0.6  # share of text words from the category vocabulary
_MS = 1_000
_NS_PER_MS = 1_000_000
_MAX_SESSION_VIEWS = 1_000


@dataclass
class _Catalogue:
    category: np.ndarray  # (n_items,) int main category
    popularity: np.ndarray  # (n_items,) float, sums to 1
    successors: np.ndarray  # (n_items, K) int
    propensity: np.ndarray  # (n_items,) float, cart propensity, mean ~1
    sampler: _CategorySampler
    frame: pd.DataFrame


@dataclass
class _Population:
    preferred: np.ndarray  # (n_users, P) int categories, home first
    pref_weights: np.ndarray  # (n_users, P) float rows sum to 1
    activity: np.ndarray  # (n_users,) float
    frame: pd.DataFrame


class _CategorySampler:
    """Draw items by popularity within given categories, vectorised.

    Items are ordered by category; each category's cumulative weights are
    normalised to (0, 1] and shifted by the category index, so one
    ``searchsorted`` of ``category + u`` finds an item of that category.
    """

    def __init__(self, category: np.ndarray, weights: np.ndarray, n_categories: int) -> None:
        self.order = np.argsort(category, kind="stable")
        cat_sorted = category[self.order]
        w = weights[self.order].astype(np.float64)
        totals = np.bincount(cat_sorted, weights=w, minlength=n_categories)
        starts = np.r_[0, np.cumsum(np.bincount(cat_sorted, minlength=n_categories))[:-1]]
        within = np.cumsum(w) - np.r_[0.0, np.cumsum(totals)][cat_sorted]
        cum = cat_sorted + within / totals[cat_sorted]
        last = np.r_[starts[1:], len(cat_sorted)] - 1
        nonempty = totals > 0
        cum[last[nonempty]] = np.arange(n_categories)[nonempty] + 1.0
        self.cum = cum

    def sample(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(len(categories))
        pos = np.searchsorted(self.cum, categories + u, side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]


def _sample_from_weights(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn with probability proportional to ``weights``."""
    cum = np.cumsum(weights, dtype=np.float64)
    cum /= cum[-1]
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(weights) - 1)


def _ids(prefix: str, n: int) -> pa.Array:
    """``prefix`` + zero-padded 0..n-1 (same width, so ids sort like their numbers)."""
    width = len(str(max(n - 1, 0)))
    digits = pc.utf8_lpad(pa.array(np.arange(n)).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _category_names_and_vocab(n: int) -> tuple[list[str], list[tuple[str, ...]]]:
    """Built-in categories first; extra ones get deterministic made-up words."""
    names = list(CATEGORY_VOCAB)[:n]
    vocab = [CATEGORY_VOCAB[c] for c in names]
    if n > len(names):
        fixed = np.random.default_rng(0)  # independent of the seed: stable vocabularies
        consonants, vowels = list("bcdfgklmnprstvz"), list("aeiou")
        for c in range(len(names), n):
            names.append(f"category_{c:02d}")
            words = []
            for _ in range(15):
                syl = int(fixed.integers(2, 4))
                words.append(
                    "".join(fixed.choice(consonants) + fixed.choice(vowels) for _ in range(syl))
                )
            vocab.append(tuple(words))
    return names, vocab


def _make_catalogue(params: SynthParams, rng: np.random.Generator) -> _Catalogue:
    n_items = params.n_items
    n_cat = min(params.n_categories, n_items)
    if n_cat < params.n_categories:
        log.warning(
            "synth: n_categories=%d > n_items=%d; using %d categories",
            params.n_categories,
            n_items,
            n_cat,
        )
    # uneven category sizes, every category non-empty
    cat_share = rng.dirichlet(np.full(n_cat, 3.0))
    category = np.r_[np.arange(n_cat), _sample_from_weights(cat_share, n_items - n_cat, rng)]
    category = rng.permutation(category)

    # Zipf popularity over a random permutation of items
    rank = rng.permutation(n_items) + 1
    popularity = rank.astype(np.float64) ** -params.zipf_exponent
    popularity /= popularity.sum()
    sampler = _CategorySampler(category, popularity, n_cat)

    successors = _make_successors(category, n_cat, params.n_successors, rng)

    # price: per-category level times item noise; cheaper-than-level items convert more
    level = np.exp(rng.normal(3.3, 0.9, n_cat))
    noise = np.exp(rng.normal(0.0, 0.45, n_items))
    price = np.round(level[category] * noise, 2).clip(min=0.99)
    propensity = noise**-0.7 * np.exp(rng.normal(0.0, 0.3, n_items))
    propensity /= propensity.mean()

    names, vocab = _category_names_and_vocab(n_cat)
    has_second = rng.random(n_items) < _SECONDARY_CATEGORY_SHARE
    second = (category + rng.integers(1, max(n_cat, 2), n_items)) % n_cat
    has_second &= second != category
    titles, texts = _item_texts(category, second, has_second, vocab, rng)
    name_arr = np.asarray(names, dtype=object)
    cats = [
        [name_arr[c], name_arr[s]] if h else [name_arr[c]]
        for c, s, h in zip(category, second, has_second, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "item_id": pd.Series(pd.arrays.ArrowStringArray(_ids("i", n_items))),
            "title": pd.Series(titles, dtype="string"),
            "text": pd.Series(texts, dtype="string"),
            "categories": pd.Series(cats, dtype="object"),
            "price": price,
        }
    )
    return _Catalogue(category, popularity, successors, propensity, sampler, frame)


def _item_texts(
    category: np.ndarray,
    second: np.ndarray,
    has_second: np.ndarray,
    vocab: list[tuple[str, ...]],
    rng: np.random.Generator,
) -> tuple[list[str], list[str]]:
    """Titles and texts: category words mixed with generic ones (random draws vectorised)."""
    n_items = len(category)
    width = max(len(v) for v in vocab)
    # (n_cat, width) word matrix; shorter vocabularies repeat their words
    table = np.array([[v[j % len(v)] for j in range(width)] for v in vocab], dtype=object)
    generic = np.asarray(GENERIC_WORDS, dtype=object)
    text_len = rng.integers(8, 17, n_items)
    owner = np.repeat(np.arange(n_items), text_len)
    n_words = len(owner)
    from_cat = rng.random(n_words) < _TEXT_CATEGORY_SHARE
    words = np.where(
        from_cat,
        table[category[owner], rng.integers(0, width, n_words)],
        generic[rng.integers(0, len(generic), n_words)],
    )
    extra = table[second, rng.integers(0, width, n_items)]  # a secondary-category word
    title_words = table[category[:, None], rng.integers(0, width, (n_items, 2))]
    adjective = generic[rng.integers(0, len(generic), n_items)]
    ends = np.cumsum(text_len)
    texts, titles = [], []
    for i, (lo, hi) in enumerate(zip(ends - text_len, ends, strict=True)):
        text = " ".join(words[lo:hi])
        texts.append(f"{text} {extra[i]}" if has_second[i] else text)
        titles.append(f"{adjective[i].capitalize()} {title_words[i, 0]} {title_words[i, 1]}")
    return titles, texts


def _make_successors(
    category: np.ndarray, n_cat: int, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Each item's ``k`` successors: mostly its own category, uniform (not by popularity)."""
    n_items = len(category)
    k = min(k, n_items - 1)
    uniform = _CategorySampler(category, np.ones(n_items), n_cat)
    sizes = np.bincount(category, minlength=n_cat)
    src = np.repeat(np.arange(n_items), k)
    in_cat = (rng.random(len(src)) < _SUCCESSOR_IN_CATEGORY) & (sizes[category[src]] > 1)
    succ = rng.integers(0, n_items, len(src))
    succ[in_cat] = uniform.sample(category[src[in_cat]], rng)
    for _ in range(20):  # redraw self-loops (rare; a handful of rounds clears them)
        bad = np.flatnonzero(succ == src)
        if not len(bad):
            break
        redraw = rng.integers(0, n_items, len(bad))
        cat_bad = in_cat[bad]
        redraw[cat_bad] = uniform.sample(category[src[bad[cat_bad]]], rng)
        succ[bad] = redraw
    bad = succ == src
    succ[bad] = (src[bad] + 1) % n_items
    return succ.reshape(n_items, k)


def _make_population(
    params: SynthParams, rng: np.random.Generator, catalogue: _Catalogue
) -> _Population:
    n_users = params.n_users
    n_cat = int(catalogue.category.max()) + 1
    cat_pop = np.bincount(catalogue.category, weights=catalogue.popularity, minlength=n_cat)
    cat_weight = np.sqrt(cat_pop)  # flatter than popularity: niche categories have fans too
    n_pref = min(3, n_cat)
    preferred = np.empty((n_users, n_pref), dtype=np.int64)
    for j in range(n_pref):
        col = _sample_from_weights(cat_weight, n_users, rng)
        for _ in range(100):  # distinct preferred categories per user
            clash = (preferred[:, :j] == col[:, None]).any(axis=1)
            if not clash.any():
                break
            col[clash] = _sample_from_weights(cat_weight, int(clash.sum()), rng)
        preferred[:, j] = col
    weights = -np.sort(-rng.dirichlet(np.array([6.0, 2.5, 1.5])[:n_pref], n_users), axis=1)
    activity = np.exp(rng.normal(0.0, 1.0, n_users))
    names, _ = _category_names_and_vocab(n_cat)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(pd.arrays.ArrowStringArray(_ids("u", n_users))),
            "home_category": pd.Series(np.asarray(names, dtype=object)[preferred[:, 0]]).astype(
                "string"
            ),
            "country": pd.Series(
                np.asarray(COUNTRIES, dtype=object)[
                    _sample_from_weights(_COUNTRY_WEIGHTS, n_users, rng)
                ]
            ).astype("string"),
            "age_band": pd.Series(
                np.asarray(AGE_BANDS, dtype=object)[
                    _sample_from_weights(_AGE_WEIGHTS, n_users, rng)
                ]
            ).astype("string"),
        }
    )
    return _Population(preferred, weights, activity, frame)


def _start_ns(params: SynthParams) -> int:
    start = pd.Timestamp(params.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return int(start.as_unit("ns").value)


def _session_starts(params: SynthParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """Start times (int ns) by hourly slot: daily cycle times weekly profile."""
    start = _start_ns(params)
    hour_ns = 3600 * 10**9
    slots = pd.to_datetime(start + np.arange(params.days * 24, dtype=np.int64) * hour_ns, utc=True)
    weight = HOURLY_PROFILE[slots.hour] * WEEKLY_PROFILE[slots.dayofweek]
    slot = _sample_from_weights(weight, n, rng)
    offset_ms = rng.integers(0, 3600 * _MS, n)
    return start + slot.astype(np.int64) * hour_ns + offset_ms * _NS_PER_MS


def _lognormal_ms(
    median_s: float, sigma: float, lo_s: float, hi_s: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    gap = median_s * np.exp(sigma * rng.standard_normal(n))
    return (np.clip(gap, lo_s, hi_s) * _MS).astype(np.int64)


def generate(params: SynthParams) -> CanonicalTables:
    """Generate the synthetic click-stream described in the module docstring.

    Returns canonical events (sorted by time), items (``item_id``, ``title``,
    ``text``, ``categories``, ``price``) and users (``user_id``, ``home_category``,
    ``country``, ``age_band``) with ``source="synthetic"``. Deterministic in
    ``params`` (seed included).
    """
    t0 = time.perf_counter()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(params.seed).spawn(5)]
    rng_items, rng_users, rng_sessions, rng_walk, rng_funnel = streams
    catalogue = _make_catalogue(params, rng_items)
    population = _make_population(params, rng_users, catalogue)

    # ---- sessions: owner, start, length, intent category
    n_sess = params.n_sessions
    owner = _sample_from_weights(population.activity, n_sess, rng_sessions)
    starts = np.sort(_session_starts(params, n_sess, rng_sessions))  # chronological ids
    length = np.minimum(
        rng_sessions.geometric(1.0 / params.mean_session_length, n_sess), _MAX_SESSION_VIEWS
    )
    pref_cum = np.cumsum(population.pref_weights[owner], axis=1)
    slot = (rng_sessions.random(n_sess)[:, None] > pref_cum).sum(axis=1)
    slot = np.minimum(slot, pref_cum.shape[1] - 1)
    intent = population.preferred[owner, slot]

    # ---- item walk over all sessions at once (views only)
    n_views = int(length.sum())
    sess_of_view = np.repeat(np.arange(n_sess), length)
    first_view = np.r_[0, np.cumsum(length)[:-1]]
    pos = np.arange(n_views) - first_view[sess_of_view]
    from_intent = rng_walk.random(n_views) < params.intent_probability
    item = _sample_from_weights(catalogue.popularity, n_views, rng_walk)
    item[from_intent] = catalogue.sampler.sample(intent[sess_of_view[from_intent]], rng_walk)
    follow = (pos > 0) & (rng_walk.random(n_views) < params.follow_probability)
    k = catalogue.successors.shape[1]
    slot_weight = 0.5 ** np.arange(k)
    succ_slot = _sample_from_weights(slot_weight, n_views, rng_walk)
    follow_idx = np.flatnonzero(follow)
    follow_idx = follow_idx[np.argsort(pos[follow_idx], kind="stable")]
    bounds = np.searchsorted(pos[follow_idx], np.arange(1, int(length.max()) + 1))
    for lo, hi in itertools.pairwise(bounds):  # position by position
        idx = follow_idx[lo:hi]
        item[idx] = catalogue.successors[item[idx - 1], succ_slot[idx]]

    # ---- funnel: view -> cart -> purchase on the same item
    cart_p = np.minimum(params.cart_probability * catalogue.propensity[item], 1.0)
    cart = rng_funnel.random(n_views) < cart_p
    purchase = cart & (rng_funnel.random(n_views) < params.purchase_probability)
    per_view = 1 + cart.astype(np.int64) + purchase
    view_of_event = np.repeat(np.arange(n_views), per_view)
    n_events = len(view_of_event)
    first_event_of_view = np.r_[0, np.cumsum(per_view)[:-1]]
    step = np.arange(n_events) - first_event_of_view[view_of_event]  # 0 view, 1 cart, 2 purchase

    # ---- time: gap before each event, cumulated within the session
    gap = np.zeros(n_events, dtype=np.int64)
    is_view = step == 0
    view_events = np.flatnonzero(is_view)
    followed = follow[view_of_event[view_events]]
    gap[view_events[followed]] = _lognormal_ms(
        25.0, 0.7, 2.0, 900.0, int(followed.sum()), rng_funnel
    )
    fresh = view_events[~followed]
    gap[fresh] = _lognormal_ms(75.0, 0.9, 3.0, 1800.0, len(fresh), rng_funnel)
    carts = np.flatnonzero(step == 1)
    gap[carts] = _lognormal_ms(20.0, 0.6, 1.0, 600.0, len(carts), rng_funnel)
    buys = np.flatnonzero(step == 2)
    gap[buys] = _lognormal_ms(45.0, 0.6, 1.0, 900.0, len(buys), rng_funnel)
    sess_of_event = sess_of_view[view_of_event]
    first_event = np.r_[0, np.cumsum(np.bincount(sess_of_event, minlength=n_sess))[:-1]]
    gap[first_event] = 0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[first_event][sess_of_event]
    ts = starts[sess_of_event] + elapsed * _NS_PER_MS

    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    sess_of_event = sess_of_event[order]
    event_item = item[view_of_event[order]]
    step = step[order]

    item_ids = _ids("i", params.n_items)
    user_ids = _ids("u", params.n_users)
    session_ids = _ids("s", n_sess)
    event_names = pa.array(["view", "cart", "purchase"], type=pa.string())

    def take(values: pa.Array, idx: np.ndarray) -> pd.Series:
        return pd.Series(pd.arrays.ArrowStringArray(values.take(pa.array(idx))))

    events = pd.DataFrame(
        {
            "user_id": take(user_ids, owner[sess_of_event]),
            "item_id": take(item_ids, event_item),
            "timestamp": pd.Series(pd.to_datetime(ts, unit="ns", utc=True)),
            "event_type": take(event_names, step),
            "value": np.ones(n_events),
            "session_id": take(session_ids, sess_of_event),
        }
    )
    tables = CanonicalTables(
        events=events,
        items=catalogue.frame,
        users=population.frame,
        source="synthetic",
    )
    log.info(
        "synth: %d events (%d views, %d carts, %d purchases) in %d sessions, "
        "%d items, %d users in %.2f s",
        n_events,
        n_views,
        int(cart.sum()),
        int(purchase.sum()),
        n_sess,
        params.n_items,
        params.n_users,
        time.perf_counter() - t0,
    )
    return tables
