"""A seeded, realistic synthetic behaviour stream for the demo, tests and training.

What makes it realistic enough to learn from:

* a catalogue with plausible titles per category (for text embeddings);
* Zipf item popularity, overall and within each category;
* users with a few favourite categories whose interests drift from session to
  session, and a heavy-tailed activity level;
* sessions that stay on a topic and follow "related item" links, so item-to-item
  transitions carry signal;
* taste: each user favours one of three tiers of every category's makers and
  styles (a title's first words: a brand, a fit, a material), the kind of
  preference that shows in an item's text and in a user's whole history rather
  than in the last item alone (``StreamShape.taste``), and related items of the
  same kind (``related_alike``); both 0 by default, which gives the stream as it
  was before they existed;
* a funnel per viewed item: view > click > cart > purchase, some purchases rated.

Standard library only (``random``), so it runs in the worker image and gives the
same stream for the same seed on every platform.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recstream.schemas.messages import Event, now_ms

#: category -> (first words, second words, third words) of its titles.
_TITLE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "books": (
        (
            "The Silent",
            "The Last",
            "A Winter's",
            "The Hidden",
            "Beyond the",
            "The Glass",
            "Under the",
        ),
        ("Harbor", "Orchard", "Cartographer", "Lighthouse", "Archive", "River", "Garden", "Empire"),
        ("", ": A Novel", " (Paperback)", ": Stories", " - Second Edition"),
    ),
    "electronics": (
        ("Voltix", "Nordlight", "Aurex", "Kinetica", "Pixelon", "Sonara"),
        (
            "Wireless Earbuds",
            "4K Monitor",
            "Smart Speaker",
            "USB-C Hub",
            "Mechanical Keyboard",
            "Action Camera",
            "Noise-Cancelling Headphones",
            "Portable Charger",
        ),
        (" X1", " X2", " Pro", " Mini", " Max", " 2", " Lite"),
    ),
    "fashion": (
        ("Slim", "Relaxed", "Classic", "Cropped", "Oversized", "Tailored"),
        ("Linen", "Denim", "Merino", "Cotton", "Cashmere", "Leather"),
        ("Shirt", "Jacket", "Sweater", "Trousers", "Dress", "Sneakers", "Scarf"),
    ),
    "home": (
        ("Nordic", "Rustic", "Minimal", "Vintage", "Modern", "Cozy"),
        ("Oak", "Ceramic", "Bamboo", "Marble", "Wool", "Copper"),
        (
            "Bedside Lamp",
            "Serving Bowl",
            "Throw Blanket",
            "Wall Shelf",
            "Plant Pot",
            "Coffee Table",
        ),
    ),
    "sports": (
        ("Trailblazer", "Apex", "Stride", "Summit", "Ridge"),
        ("Lightweight", "Waterproof", "Adjustable", "Foldable", "Insulated"),
        (
            "Running Shoes",
            "Yoga Mat",
            "Water Bottle",
            "Hiking Backpack",
            "Dumbbell Set",
            "Bike Helmet",
        ),
    ),
    "beauty": (
        ("Hydrating", "Brightening", "Gentle", "Nourishing", "Overnight", "Soothing"),
        ("Rose", "Vitamin C", "Hyaluronic", "Aloe", "Shea", "Green Tea"),
        ("Face Serum", "Cleanser", "Night Cream", "Lip Balm", "Sheet Mask", "Body Lotion"),
    ),
    "toys": (
        ("Wooden", "Magnetic", "Deluxe", "Glow-in-the-Dark", "Musical"),
        ("Dinosaur", "Space", "Jungle", "Pirate", "Robot", "Castle"),
        ("Puzzle", "Building Set", "Board Game", "Plush Toy", "Train Set", "Craft Kit"),
    ),
    "grocery": (
        ("Organic", "Fair-Trade", "Cold-Pressed", "Stone-Ground", "Wild"),
        ("Colombian", "Sicilian", "Himalayan", "Japanese", "Alpine", "Greek"),
        ("Coffee Beans", "Olive Oil", "Green Tea", "Honey", "Pasta", "Sea Salt", "Dark Chocolate"),
    ),
}
CATEGORIES: tuple[str, ...] = tuple(_TITLE_WORDS)
#: Share of the catalogue per category (uneven on purpose).
_CATEGORY_SHARE = (0.22, 0.16, 0.16, 0.12, 0.10, 0.10, 0.07, 0.07)
_USER_TRIES = 8
_DEVICES = (("mobile", 0.6), ("desktop", 0.3), ("tablet", 0.1))
_GEOS = (
    ("US", 0.35),
    ("DE", 0.15),
    ("GB", 0.12),
    ("FR", 0.1),
    ("IN", 0.1),
    ("BR", 0.1),
    ("JP", 0.08),
)


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    title: str
    category: str


#: Tiers of taste: a category's title openers (brands, fits, materials) in turn.
TIERS = 3


def _groups(items: dict[str, CatalogItem], weight: dict[str, float],
            key: Callable[[CatalogItem], object]) -> dict[tuple[str, Any], tuple[list[str], list[float]]]:
    """(category, key) -> (its items, their cumulative popularity weights)."""
    members: dict[tuple[str, Any], list[str]] = {}
    for item_id, item in items.items():
        members.setdefault((item.category, key(item)), []).append(item_id)
    return {g: (ids, _cumulative([weight[i] for i in ids])) for g, ids in members.items()}


def kind_of(item: CatalogItem) -> str:
    """The item's kind: its title's middle words (a product type, a material ...)."""
    first, second, _ = _TITLE_WORDS[item.category]
    rest = next(item.title[len(w) + 1:] for w in first if item.title.startswith(w + " "))
    return max((w for w in second if rest.startswith(w)), key=len)


def user_tier(user_id: str) -> int:
    """The tier a generated user favours, from the id (``u000042``), not the generator."""
    return int(user_id.lstrip("u")) % TIERS


def tier_of(item: CatalogItem) -> int:
    """The item's tier, read from its title's opening words (so its text carries it)."""
    openers = _TITLE_WORDS[item.category][0]
    for n, opener in enumerate(openers):
        if item.title.startswith(opener + " "):
            return n % TIERS
    raise ValueError(f"title {item.title!r} does not open with a word of {item.category}")


@dataclass(frozen=True)
class SyntheticData:
    events: list[Event]
    items: dict[str, CatalogItem]


@dataclass(frozen=True)
class StreamShape:
    """Knobs of the generator; the defaults give a plausible e-commerce stream."""

    item_zipf: float = 1.05
    user_activity_zipf: float = 0.7
    #: Probability per session that a user picks up a new interest (and half-forgets the old).
    drift: float = 0.15
    stay_on_topic: float = 0.7
    #: Probability that an item drawn within a topic comes from the user's tier.
    taste: float = 0.0
    #: Probability that each of an item's related items shares its kind (the
    #: title's middle words: a product type, a material, an ingredient).
    related_alike: float = 0.0
    follow_related: float = 0.35
    mean_views_per_session: float = 5.0
    p_click: float = 0.3
    p_cart: float = 0.25
    p_purchase: float = 0.5
    p_rate: float = 0.3
    #: The time window that session starts are spread over.
    span_ms: int = 6 * 3600 * 1000


def generate(
    n_events: int,
    n_users: int = 2000,
    n_items: int = 1000,
    seed: int = 0,
    start_ms: int | None = None,
    shape: StreamShape | None = None,
) -> SyntheticData:
    """``n_events`` events in time order, starting at ``start_ms`` (default: ``span`` before now)."""
    if n_events < 0 or n_users < 1 or n_items < len(CATEGORIES):
        raise ValueError(f"need n_events >= 0, n_users >= 1, n_items >= {len(CATEGORIES)}")
    shape = shape or StreamShape()
    start = now_ms() - shape.span_ms if start_ms is None else start_ms
    rng = random.Random(seed)
    catalogue = _Catalogue.build(rng, n_items, shape.item_zipf, shape.related_alike)
    users = [_User.build(rng, f"u{u:06d}") for u in range(n_users)]
    activity = _cumulative([1.0 / (r + 1) ** shape.user_activity_zipf for r in range(n_users)])
    rng.shuffle(users)  # activity rank independent of the user id (and so of the tier)

    raw: list[tuple[int, str, str, str, float | None, str, dict[str, str]]] = []
    events_per_view = 1 + shape.p_click * (
        1 + shape.p_cart * (1 + shape.p_purchase * (1 + shape.p_rate))
    )
    sessions_needed = max(1.0, n_events / (shape.mean_views_per_session * events_per_view))
    mean_gap_ms = shape.span_ms / sessions_needed
    clock = float(start)
    for n_session in itertools.count():
        if len(raw) >= n_events:
            break
        clock += rng.expovariate(1.0 / mean_gap_ms)
        # A user still in a session does not start another: draw someone else
        # (a few tries, then queue the session after the current one).
        for _ in range(_USER_TRIES):
            user = _weighted(rng, users, activity)
            if user.busy_until + 60_000 <= clock:
                break
        begin = max(int(clock), user.busy_until + 60_000)
        user.busy_until = _session(rng, shape, catalogue, user, f"s{seed}-{n_session}", begin, raw)
    raw.sort(key=lambda r: r[0])
    del raw[n_events:]
    events = [
        Event(
            event_id=f"e{seed}-{n:08d}",
            user_id=uid,
            item_id=iid,
            event_type=etype,  # type: ignore[arg-type]
            ts=ts,
            value=value,
            session_id=sid,
            context=ctx,  # type: ignore[arg-type]
        )
        for n, (ts, uid, iid, etype, value, sid, ctx) in enumerate(raw)
    ]
    return SyntheticData(events=events, items=catalogue.items)


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _weighted(rng: random.Random, choices: list[Any], cum: list[float]) -> Any:
    """One of ``choices`` drawn by its weight (``cum``: the cumulative weights)."""
    return choices[bisect.bisect_left(cum, rng.random() * cum[-1])]


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


@dataclass
class _Catalogue:
    items: dict[str, CatalogItem]
    by_category: dict[str, list[str]]
    cum_weights: dict[str, list[float]]
    related: dict[str, list[str]]
    #: (category, tier) -> (its items, their cumulative popularity weights).
    tiers: dict[tuple[str, Any], tuple[list[str], list[float]]]

    @classmethod
    def build(cls, rng: random.Random, n_items: int, zipf: float, alike: float) -> _Catalogue:
        ranks = list(range(n_items))
        rng.shuffle(ranks)  # popularity rank independent of id and category
        items: dict[str, CatalogItem] = {}
        weight: dict[str, float] = {}
        by_category: dict[str, list[str]] = {c: [] for c in CATEGORIES}
        titles = _TitleBook()
        for i in range(n_items):
            # Every category gets at least one item, the rest by share.
            cat = (
                CATEGORIES[i]
                if i < len(CATEGORIES)
                else rng.choices(CATEGORIES, _CATEGORY_SHARE)[0]
            )
            first, second, third = _TITLE_WORDS[cat]
            title = f"{rng.choice(first)} {rng.choice(second)}{_joiner(third)}{rng.choice(third)}"
            title = titles.unique(title, cat, i)
            item_id = f"i{i:06d}"
            items[item_id] = CatalogItem(item_id, title, cat)
            weight[item_id] = 1.0 / (ranks[i] + 1) ** zipf
            by_category[cat].append(item_id)
        cum = {c: _cumulative([weight[i] for i in ids]) for c, ids in by_category.items()}
        self = cls(items, by_category, cum, {}, _groups(items, weight, tier_of))
        kinds = _groups(items, weight, kind_of) if alike > 0 else {}
        for item_id, item in items.items():
            pool = by_category[item.category]
            group = kinds[(item.category, kind_of(item))] if kinds else ([], [])
            picks = {self._related_pick(rng, item.category, group, alike)
                     for _ in range(4)} - {item_id}  # fmt: skip
            self.related[item_id] = sorted(picks) if len(pool) > 1 else []
        return self

    def _related_pick(self, rng: random.Random, category: str,
                      alike: tuple[list[str], list[float]], p: float) -> str:  # fmt: skip
        ids, cum = alike
        if len(ids) > 1 and rng.random() < p:
            return _weighted(rng, ids, cum)
        return self.popular_in(rng, category)

    def popular_in(self, rng: random.Random, category: str) -> str:
        return _weighted(rng, self.by_category[category], self.cum_weights[category])

    def draw(self, rng: random.Random, category: str, user: _User, taste: float) -> str:
        """A popular item of the topic; with probability ``taste`` one of the user's tier.
        No extra random draw when ``taste`` is 0, so such streams stay as they were."""
        if taste > 0 and rng.random() < taste:
            group = self.tiers.get((category, user.tier))
            if group:
                return _weighted(rng, *group)
        return self.popular_in(rng, category)


class _TitleBook:
    """Keeps every item's title its own.

    Drawn at random, a quarter of 1,000 titles repeated another item's: the
    demo then showed one title twice in a list of recommendations, and the
    item text encoder saw two items as one. A repeat is replaced by the
    category's next unused combination of words, found without the stream's
    random generator (so every other draw, and so the events, stay as they
    were for a seed); once those run out, by the title and a number.
    """

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._combinations: dict[str, list[str]] = {}
        self._numbered: dict[str, int] = {}

    def unique(self, title: str, category: str, start: int) -> str:
        if title in self._used:
            title = self._unused(title, category, start)
        self._used.add(title)
        return title

    def _unused(self, title: str, category: str, start: int) -> str:
        combos = self._combinations.get(category)
        if combos is None:
            first, second, third = _TITLE_WORDS[category]
            combos = [
                f"{a} {b}{_joiner(third)}{c}" for a, b, c in itertools.product(first, second, third)
            ]
            self._combinations[category] = combos
        for k in range(len(combos)):
            candidate = combos[(start + k) % len(combos)]
            if candidate not in self._used:
                return candidate
        n = self._numbered.get(title, 1) + 1
        while f"{title} ({n})" in self._used:
            n += 1
        self._numbered[title] = n
        return f"{title} ({n})"


def _joiner(third: tuple[str, ...]) -> str:
    # Suffix lists start with a space or punctuation already; word lists need one.
    return "" if any(w == "" or not w[0].isalpha() for w in third) else " "


@dataclass
class _User:
    user_id: str
    interests: list[float]
    device: str
    geo: str
    #: The tier of makers and styles this user favours (``StreamShape.taste``).
    tier: int = 0
    busy_until: int = 0

    @classmethod
    def build(cls, rng: random.Random, user_id: str) -> _User:
        interests = [0.02] * len(CATEGORIES)
        for _ in range(rng.choice((1, 2, 2, 3))):
            interests[rng.randrange(len(CATEGORIES))] += rng.uniform(0.5, 1.0)
        # The tier from the id, not the generator: streams without taste stay as they were.
        tier = user_tier(user_id)
        return cls(user_id, _normalise(interests), _pick(rng, _DEVICES), _pick(rng, _GEOS), tier)

    def drift(self, rng: random.Random) -> None:
        new = [0.0] * len(CATEGORIES)
        new[rng.randrange(len(CATEGORIES))] = 1.0
        self.interests = _normalise(
            [0.5 * a + 0.5 * b for a, b in zip(self.interests, new, strict=True)]
        )

    def category(self, rng: random.Random) -> str:
        return rng.choices(CATEGORIES, self.interests)[0]


def _normalise(w: list[float]) -> list[float]:
    total = sum(w)
    return [x / total for x in w]


def _session(
    rng: random.Random,
    shape: StreamShape,
    cat: _Catalogue,
    user: _User,
    session_id: str,
    begin: int,
    out: list[tuple[int, str, str, str, float | None, str, dict[str, str]]],
) -> int:
    """Append one session's events; return when it ended."""
    if rng.random() < shape.drift:
        user.drift(rng)
    ctx = {"device": user.device, "geo": user.geo}
    p_more = 1.0 - 1.0 / shape.mean_views_per_session  # geometric number of views
    t = begin
    topic = user.category(rng)
    item = cat.draw(rng, topic, user, shape.taste)
    while True:
        out.append((t, user.user_id, item, "view", None, session_id, ctx))
        t = _funnel(rng, shape, user.user_id, item, session_id, ctx, t, out)
        if rng.random() > p_more:
            return t
        t += int(rng.lognormvariate(math.log(20_000), 0.8))  # ~20 s between views
        related = cat.related[item]
        if related and rng.random() < shape.follow_related:
            item = rng.choice(related)
            continue
        if rng.random() > shape.stay_on_topic:
            topic = user.category(rng)
        item = cat.draw(rng, topic, user, shape.taste)


def _funnel(
    rng: random.Random,
    shape: StreamShape,
    user_id: str,
    item: str,
    session_id: str,
    ctx: dict[str, str],
    t: int,
    out: list[tuple[int, str, str, str, float | None, str, dict[str, str]]],
) -> int:
    for etype, p in (
        ("click", shape.p_click),
        ("cart", shape.p_cart),
        ("purchase", shape.p_purchase),
    ):
        if rng.random() >= p:
            return t
        t += rng.randint(2_000, 45_000)
        out.append((t, user_id, item, etype, None, session_id, ctx))
    if rng.random() < shape.p_rate:
        t += rng.randint(5_000, 120_000)
        stars = float(rng.choices((1, 2, 3, 4, 5), (0.05, 0.07, 0.15, 0.33, 0.4))[0])
        out.append((t, user_id, item, "rate", stars, session_id, ctx))
    return t
