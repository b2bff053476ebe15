"""Demo data for ``manage.py seed_data``: authors, blogs and a year of skewed, realistic views.

Popularity follows Zipf's law (weight ``1 / rank**s``) for blogs and for countries, so a few of
each take most of the views, as on a real platform. Older blogs tend to rank higher, and a blog's
rank sets its views *per day* from the day it was created, so the daily total grows with the
platform instead of spiking when a popular blog happens to be new.

Everything is drawn from one ``random.Random(seed)`` and every time window is anchored to today's
UTC midnight, so the same seed on the same UTC day gives the same authors, blogs and views per
day, blog and country. The views reach today, so that a dashboard's latest bucket is real: today
gets a whole day's share of the draws, squeezed into the hours from midnight to the moment of
seeding (the only thing the time of day changes; nothing is dated in the future).

Views are generated in time order, one slice of the year per chunk, and written chunk by chunk
through ``views_record`` (the single write path into the raw table), each chunk in its own
transaction: memory stays flat for any ``views``, and the raw table's indexes on ``viewed_at``
grow at their right edge as they do under live ingest.
"""

import math
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate, pairwise

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.models import Blog, Country
from ingest.models import BlogView
from ingest.partitions import months_between, raw_partitions_ensure
from ingest.services import views_record

DEFAULT_VIEWS = 12_000
DEFAULT_AUTHORS = 50
DEFAULT_BLOGS = 200
CHUNK_SIZE = 100_000

VIEW_DAYS = 365
BLOG_DAYS = 730
# Seeded authors carry an address in this reserved domain (RFC 2606); with an unusable password
# and no staff flags it is how ``--reset`` tells them from real users.
SEED_EMAIL_DOMAIN = "seed-data.example"

BLOG_ZIPF_S = 1.2
AUTHOR_ZIPF_S = 1.0
COUNTRY_ZIPF_S = 1.2
UNKNOWN_COUNTRY_SHARE = 0.02
# How far (in seconds) a blog's popularity rank strays from its age rank.
RANK_AGE_NOISE = 180 * 86_400
# The countries that lead typical web traffic, most views first; the rest follow in seeded order.
LEADING_COUNTRIES = (
    "US", "IN", "GB", "DE", "CA", "FR", "BR", "JP", "AU", "NL", "ES", "IT", "PL", "SE", "MX",
)  # fmt: skip

FIRST_NAMES = (
    "ada", "alan", "amara", "ana", "arjun", "bea", "bruno", "carla", "chen", "dana", "diego",
    "elena", "emeka", "emma", "farah", "felix", "grace", "hana", "hugo", "ines", "ivan", "jack",
    "jonas", "julia", "kai", "kenji", "lara", "leo", "lina", "luca", "maya", "mei", "milan", "mira",
    "nadia", "nico", "noor", "olga", "omar", "paula", "priya", "rafael", "rosa", "sam", "sara",
    "sofia", "tariq", "theo", "uma", "victor", "wei", "yara", "yusuf", "zoe",
)  # fmt: skip
LAST_NAMES = (
    "adeyemi", "alvarez", "becker", "berg", "chen", "costa", "dubois", "evans", "fischer",
    "garcia", "gupta", "haddad", "hansen", "ito", "jansen", "kim", "kowalski", "kumar", "larsen",
    "lopez", "martin", "meyer", "moreau", "nakamura", "nguyen", "novak", "okafor", "olsen", "park",
    "patel", "petrov", "quinn", "rossi", "santos", "schmidt", "silva", "singh", "smith", "tanaka",
    "torres", "wagner", "walker", "wang", "weber", "wilson", "yilmaz", "zhang",
)  # fmt: skip
TOPICS = (
    "Django", "PostgreSQL", "Python", "Rust", "TypeScript", "Kubernetes", "sourdough",
    "home espresso", "trail running", "urban gardening", "film photography", "bouldering",
    "personal finance", "remote work", "open source", "mechanical keyboards", "bird watching",
    "minimalism", "language learning", "chess openings", "bike touring", "indie game dev",
    "data visualization", "machine learning", "database indexing", "caching", "API design",
    "technical writing", "houseplants", "fermentation", "night photography", "woodworking",
    "budget travel", "marathon training", "vegan baking", "jazz piano", "3D printing", "Linux",
    "home automation", "Celery", "Redis", "SQL", "time series", "observability", "product design",
)  # fmt: skip
TITLE_TEMPLATES = (
    "{n} things I wish I knew about {topic}",
    "A beginner's guide to {topic}",
    "Why I stopped worrying about {topic}",
    "{Topic} in {n} minutes a day",
    "Notes on {topic}",
    "What {n} years of {topic} taught me",
    "The case against {topic}",
    "{Topic}: the parts nobody talks about",
    "How I got started with {topic}",
    "{Topic}, revisited",
    "Lessons from a year of {topic}",
    "Getting {topic} right on a budget",
    "My {topic} setup, {year} edition",
    "Is {topic} worth it?",
    "Everything I got wrong about {topic}",
    "{Topic} for the impatient",
)


class SeedOptionsError(ValueError):
    """The options asked for cannot be seeded (e.g. views but no blogs)."""


@dataclass(frozen=True)
class SeedSummary:
    """What one ``demo_data_seed`` run created, and how long it took."""

    authors: int
    blogs: int
    views: int
    seconds: float
    seed: int

    @property
    def views_per_second(self) -> float:
        return self.views / self.seconds if self.seconds > 0 else 0.0


def demo_data_present() -> bool:
    """Whether the database holds any blog or view (``seed_data --if-empty`` then does nothing)."""
    return Blog.objects.exists() or BlogView.objects.exists()


def demo_data_reset() -> None:
    """Delete every view and blog, and the authors a previous seeding created.

    Users who are staff, superusers, have a usable password or an address outside
    ``SEED_EMAIL_DOMAIN`` are kept. PostgreSQL empties the raw table with ``TRUNCATE`` (without
    restarting its id sequence, so ids stay increasing for whatever tracks them).
    """
    view_table = BlogView._meta.db_table
    with transaction.atomic():
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {connection.ops.quote_name(view_table)}")
            else:
                cursor.execute(f"DELETE FROM {connection.ops.quote_name(view_table)}")
        Blog.objects.all().delete()
        get_user_model().objects.filter(
            email__endswith=f"@{SEED_EMAIL_DOMAIN}",
            password__startswith=UNUSABLE_PASSWORD_PREFIX,
            is_staff=False,
            is_superuser=False,
        ).delete()


def demo_data_options_check(
    *, views: int, authors: int, blogs: int, chunk_size: int = CHUNK_SIZE
) -> None:
    """Raise ``SeedOptionsError`` if these options cannot be seeded."""
    if views < 0 or authors < 0 or blogs < 0:
        raise SeedOptionsError("--views, --authors and --blogs must not be negative.")
    if views > 0 and blogs == 0:
        raise SeedOptionsError("Views need blogs: give --blogs 1 or more, or --views 0.")
    if blogs > 0 and authors == 0:
        raise SeedOptionsError("Blogs need authors: give --authors 1 or more, or --blogs 0.")
    if chunk_size < 1:
        raise SeedOptionsError("The chunk size must be at least 1.")


def demo_data_seed(
    *,
    views: int = DEFAULT_VIEWS,
    authors: int = DEFAULT_AUTHORS,
    blogs: int = DEFAULT_BLOGS,
    seed: int | None = None,
    reset: bool = False,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], object] | None = None,
    bulk: bool = False,
) -> SeedSummary:
    """Create ``authors`` users, ``blogs`` blogs and ``views`` views of them; return a summary.

    Blogs are created over the two years before today's UTC midnight and views over the 365 days
    ending today (the 364 days before it, and today up to now: ``_today_squeeze``); no view
    precedes its blog's ``created_at``. ``seed=None`` picks a random seed,
    reported in the summary so that the run can be repeated. ``reset`` first wipes what
    ``demo_data_reset`` wipes. ``progress`` is called with the number of views written after
    each chunk. Raises ``SeedOptionsError`` for impossible options, before touching the database.
    ``bulk`` (PostgreSQL only): the database draws the views (``_views_insert_bulk``).
    """
    demo_data_options_check(views=views, authors=authors, blogs=blogs, chunk_size=chunk_size)
    if bulk and connection.vendor != "postgresql":
        raise SeedOptionsError("--bulk needs PostgreSQL.")

    started = time.perf_counter()
    if seed is None:
        seed = secrets.randbelow(2**32)
    rng = random.Random(seed)
    now = timezone.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = int(midnight.timestamp())

    if reset:
        demo_data_reset()
    with transaction.atomic():
        author_ids = _authors_create(rng=rng, count=authors)
        blog_ids, blog_created = _blogs_create(
            rng=rng,
            count=blogs,
            author_ids=author_ids,
            start=end - BLOG_DAYS * 86_400,
            end=end,
        )
    if views:
        # The monthly partitions of the raw table (PostgreSQL) for every month the views fill,
        # before they are written: else they would land in the default partition.
        first_day = datetime.fromtimestamp(end - (VIEW_DAYS - 1) * 86_400, UTC).date()
        raw_partitions_ensure(months=months_between(first_day, midnight.date()))
        _views_write(
            rng=rng,
            count=views,
            blog_ids=blog_ids,
            blog_created=blog_created,
            start=end - (VIEW_DAYS - 1) * 86_400,
            end=end + 86_400,
            today_until=int(now.timestamp()),
            chunk_size=chunk_size,
            progress=progress,
            bulk=bulk,
        )
        if connection.vendor == "postgresql":
            # Fresh statistics, so that the first queries on a big seeded table plan well.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(BlogView._meta.db_table)}")
    return SeedSummary(
        authors=len(author_ids),
        blogs=len(blog_ids),
        views=views,
        seconds=time.perf_counter() - started,
        seed=seed,
    )


def _zipf_weights(count: int, s: float) -> list[float]:
    return [1 / rank**s for rank in range(1, count + 1)]


def _handles(*, rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    """``count`` (username, first name, last name), unique here and among existing users."""
    User = get_user_model()
    people: list[tuple[str, str, str]] = []
    taken: set[str] = set()
    while len(people) < count:
        batch = []
        for _ in range(min(count - len(people), 1000)):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            handle = rng.choice(
                (
                    f"{first}{last}",
                    f"{first}_{last}",
                    f"{first}.{last}",
                    f"{first[0]}{last}",
                    f"{first}{rng.randrange(1, 100)}",
                    f"{first}_{last[:3]}{rng.randrange(70, 100)}",
                )
            )
            base, suffix = handle, 2
            while handle in taken:
                handle, suffix = f"{base}{suffix}", suffix + 1
            taken.add(handle)
            batch.append((handle, first.title(), last.title()))
        existing = set(
            User.objects.filter(username__in=[handle for handle, _, _ in batch]).values_list(
                "username", flat=True
            )
        )
        # A name some other user already has is dropped and drawn again in the next batch.
        people.extend(person for person in batch if person[0] not in existing)
    return people


def _authors_create(*, rng: random.Random, count: int) -> list[int]:
    User = get_user_model()
    users = []
    for username, first_name, last_name in _handles(rng=rng, count=count):
        user = User(
            username=username,
            first_name=first_name,
            last_name=last_name,
            email=f"{username}@{SEED_EMAIL_DOMAIN}",
        )
        user.set_unusable_password()
        users.append(user)
    User.objects.bulk_create(users, batch_size=1000)
    return [user.pk for user in users]


def _blog_title(rng: random.Random, *, year: int) -> str:
    topic = rng.choice(TOPICS)
    return rng.choice(TITLE_TEMPLATES).format(
        topic=topic, Topic=topic[0].upper() + topic[1:], n=rng.randrange(3, 13), year=year
    )


def _blogs_create(
    *, rng: random.Random, count: int, author_ids: Sequence[int], start: int, end: int
) -> tuple[list[int], list[int]]:
    """Create ``count`` blogs in ``[start, end)``; return their ids and creation timestamps.

    More blogs are created recently than long ago (a growing platform); every author gets one
    blog before anyone gets a second, and the rest go to a few prolific authors. Ids increase
    with ``created_at``.
    """
    if not count:
        return [], []
    created = sorted(min(int(rng.triangular(start, end, end)), end - 1) for _ in range(count))
    owners = list(author_ids[:count])
    prolific = list(author_ids)
    rng.shuffle(prolific)
    owners += rng.choices(
        prolific, weights=_zipf_weights(len(prolific), AUTHOR_ZIPF_S), k=count - len(owners)
    )
    rng.shuffle(owners)
    rows = [
        Blog(
            title=_blog_title(rng, year=datetime.fromtimestamp(stamp, UTC).year),
            author_id=owner,
            created_at=datetime.fromtimestamp(stamp, UTC),
        )
        for stamp, owner in zip(created, owners, strict=True)
    ]
    Blog.objects.bulk_create(rows, batch_size=1000)
    return [blog.pk for blog in rows], created


def _country_cum_weights(rng: random.Random) -> tuple[list[str], list[float]]:
    """Country codes in popularity order and their cumulative weights; ``ZZ`` gets a small share."""
    codes = set(Country.objects.values_list("code", flat=True))
    known = sorted(codes - {Country.UNKNOWN})
    leading = [code for code in LEADING_COUNTRIES if code in codes]
    rest = [code for code in known if code not in leading]
    rng.shuffle(rest)
    ranked = leading + rest
    weights = _zipf_weights(len(ranked), COUNTRY_ZIPF_S)
    if Country.UNKNOWN in codes:
        ranked.append(Country.UNKNOWN)
        weights.append(sum(weights) * UNKNOWN_COUNTRY_SHARE / (1 - UNKNOWN_COUNTRY_SHARE))
    return ranked, list(accumulate(weights))


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    whole = sum(weights)
    quotas = [total * weight / whole for weight in weights]
    counts = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _today_squeeze(*, today_start: int, today_until: int) -> Callable[[int], int]:
    """Map a second of today's whole day onto ``[today_start, today_until]``, keeping order.

    Today's views are drawn over the whole day, like every other day's (so the draws do not
    depend on the time of day), and then dated between midnight and now: never in the future.
    """
    elapsed = max(0, today_until - today_start)

    def squeeze(stamp: int) -> int:
        if stamp < today_start:
            return stamp
        return today_start + (stamp - today_start) * elapsed // 86_400

    return squeeze


def _views_write(
    *,
    rng: random.Random,
    count: int,
    blog_ids: Sequence[int],
    blog_created: Sequence[int],
    start: int,
    end: int,
    today_until: int,
    chunk_size: int,
    progress: Callable[[int], object] | None,
    bulk: bool = False,
) -> None:
    """Write ``count`` views of the blogs over ``[start, end)``, in time order, chunk by chunk.

    A blog's view rate is its Zipf weight by popularity rank, from ``max(created, start)`` on.
    The year is cut into one time slice per chunk; each slice gets its share of the views by the
    weight of the blogs alive in it, then blogs, countries and seconds are drawn in bulk. The
    last day (today) is drawn whole, then squeezed into ``[end - 1 day, today_until]``.
    ``bulk``: the database draws them instead (``_views_insert_bulk``).
    """
    squeeze = _today_squeeze(today_start=end - 86_400, today_until=today_until)
    codes, country_cum = _country_cum_weights(rng)
    # Popularity follows age, loosely: sort by creation time blurred by some months of noise.
    ranked = sorted(
        range(len(blog_ids)),
        key=lambda i: blog_created[i] + rng.uniform(-RANK_AGE_NOISE, RANK_AGE_NOISE),
    )
    rate = [0.0] * len(blog_ids)
    for i, weight in zip(ranked, _zipf_weights(len(ranked), BLOG_ZIPF_S), strict=True):
        rate[i] = weight
    live_from = [max(created, start) for created in blog_created]

    slices = max(1, math.ceil(count / chunk_size))
    bounds = [start + (end - start) * k // slices for k in range(slices + 1)]

    def slice_weights(lo: int, hi: int) -> list[tuple[int, int, float]]:
        """(blog index, first second, weight) of every blog alive during ``[lo, hi)``."""
        alive = []
        for i, since in enumerate(live_from):
            first = max(since, lo)
            if first < hi:
                alive.append((i, first, rate[i] * (hi - first)))
        return alive

    per_slice = _apportion(
        count,
        [sum(weight for _, _, weight in slice_weights(lo, hi)) for lo, hi in pairwise(bounds)],
    )
    if bulk:
        _views_insert_bulk(
            rng=rng,
            slices=[
                (hi, [(blog_ids[i], first, weight) for i, first, weight in slice_weights(lo, hi)])
                for lo, hi in pairwise(bounds)
            ],
            per_slice=per_slice,
            codes=codes,
            country_cum=country_cum,
            today_start=end - 86_400,
            today_until=today_until,
            progress=progress,
        )
        return
    random_unit = rng.random
    for (lo, hi), remaining in zip(pairwise(bounds), per_slice, strict=True):
        alive = slice_weights(lo, hi)
        ids = [blog_ids[i] for i, _, _ in alive]
        firsts = [first for _, first, _ in alive]
        spans = [hi - first for _, first, _ in alive]
        cum = list(accumulate(weight for _, _, weight in alive))
        positions = range(len(alive))
        while remaining > 0:
            size = min(chunk_size, remaining)
            picks = rng.choices(positions, cum_weights=cum, k=size)
            countries = rng.choices(codes, cum_weights=country_cum, k=size)
            stamps = [squeeze(firsts[j] + int(random_unit() * spans[j])) for j in picks]
            views_record(
                views=zip(
                    [ids[j] for j in picks],
                    countries,
                    [datetime.fromtimestamp(stamp, UTC) for stamp in stamps],
                    strict=True,
                ),
                # seed_data absorbs everything at its end.
                absorb_trigger=False,
            )
            remaining -= size
            if progress is not None:
                progress(size)


# One bulk statement: a slice's views, drawn by PostgreSQL from (blog, first second, span, count)
# rows. OFFSET 0 keeps the subquery whole, so that each view's second is drawn once.
_BULK_INSERT = """
INSERT INTO {table} (blog_id, country_id, viewed_at)
SELECT blog_id, (%(codes)s::text[])[width_bucket(country_draw, %(lower_bounds)s::float8[])],
    to_timestamp(CASE WHEN stamp < %(today_start)s THEN stamp
        ELSE %(today_start)s + (stamp - %(today_start)s) * %(today_elapsed)s / 86400 END)
FROM (
    SELECT plan.blog_id, plan.first + floor(random() * plan.span)::bigint AS stamp,
        random() AS country_draw
    FROM unnest(%(blogs)s::bigint[], %(firsts)s::bigint[], %(spans)s::bigint[], %(counts)s::int[])
        AS plan (blog_id, first, span, n)
    CROSS JOIN LATERAL generate_series(1, plan.n)
    OFFSET 0
) AS drawn
"""


@contextmanager
def _secondary_indexes_dropped(cursor: CursorWrapper) -> Iterator[None]:
    """Drop the raw table's secondary indexes for the block, then build them again.

    Keeping two btrees up to date costs about five times the row's own insert (views land all
    over the ``(blog_id, viewed_at)`` index); sorting once at the end is far cheaper. The
    indexes come back from their own definitions (``pg_indexes``), even if the block fails.
    The sorts get 512 MB (at 1 GB the backend building an index over 100 M views peaked at
    1.24 GB resident, its parallel workers at 0.4 GB each).

    A partitioned table's index is defined ``ON ONLY`` the parent in ``pg_indexes``: run as it
    is, that builds an invalid parent index and none on the partitions, so it is run without
    ``ONLY`` (one index per partition, attached to the parent's).
    """
    cursor.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname JOIN pg_index x ON x.indexrelid = c.oid "
        "WHERE i.schemaname = current_schema() AND i.tablename = %s AND NOT x.indisprimary",
        [BlogView._meta.db_table],
    )
    definitions = cursor.fetchall()
    for index, _ in definitions:
        cursor.execute(f"DROP INDEX {connection.ops.quote_name(index)}")
    try:
        yield
    finally:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in definitions:
            cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
        cursor.execute("RESET maintenance_work_mem")


def _views_insert_bulk(
    *,
    rng: random.Random,
    slices: Sequence[tuple[int, Sequence[tuple[int, int, float]]]],
    per_slice: Sequence[int],
    codes: Sequence[str],
    country_cum: Sequence[float],
    today_start: int,
    today_until: int,
    progress: Callable[[int], object] | None,
) -> None:
    """PostgreSQL: write each slice's views with one ``INSERT ... SELECT`` that draws them.

    For benchmarks at 100 M views, where drawing every view in Python and sending it as text
    would take most of an hour on a busy 2-core machine. Blogs, their popularity, the countries'
    ranks and the slices are the ones ``seed_data`` draws for the same seed; what differs is
    how the views are spread: each slice ``(end second, [(blog id, first second, weight)])``
    gets its views apportioned to the blogs by weight (largest remainder, so no draw noise)
    instead of drawn one by one, and PostgreSQL draws each view's country (by the cumulative
    weights) and second (``random()``, seeded from ``rng``). This bypasses ``views_record``.
    """
    total = country_cum[-1]
    lower_bounds = [0.0, *(weight / total for weight in country_cum[:-1])]
    table = connection.ops.quote_name(BlogView._meta.db_table)
    statement = _BULK_INSERT.format(table=table)
    with connection.cursor() as cursor, _secondary_indexes_dropped(cursor):
        cursor.execute("SELECT setseed(%s)", [rng.random() * 2 - 1])
        for (hi, alive), count in zip(slices, per_slice, strict=True):
            counts = _apportion(count, [weight for _, _, weight in alive])
            plan = [
                (blog, first, hi - first, n)
                for (blog, first, _), n in zip(alive, counts, strict=True)
                if n
            ]
            with transaction.atomic():
                cursor.execute(
                    statement,
                    {
                        "codes": list(codes),
                        "lower_bounds": lower_bounds,
                        "today_start": today_start,
                        "today_elapsed": max(0, today_until - today_start),
                        "blogs": [row[0] for row in plan],
                        "firsts": [row[1] for row in plan],
                        "spans": [row[2] for row in plan],
                        "counts": [row[3] for row in plan],
                    },
                )
            if progress is not None:
                progress(count)
