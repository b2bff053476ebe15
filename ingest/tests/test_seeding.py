import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO
from statistics import median

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F, Sum

from core.models import Blog, Country
from ingest.models import BlogView
from ingest.seeding import SEED_EMAIL_DOMAIN, demo_data_seed
from rollups.models import DailyViews
from rollups.tables import BLOG_COUNTRY_LEVEL, PRESENCE

NOW = datetime(2025, 6, 1, 15, 30, 12, tzinfo=UTC)
MIDNIGHT = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_data", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _seeded_authors():
    return get_user_model().objects.filter(email__endswith=f"@{SEED_EMAIL_DOMAIN}")


def _snapshot():
    """Authors, blogs and views, with blogs numbered by id (ids move on after a reset)."""
    authors = sorted(_seeded_authors().values_list("username", "first_name", "last_name", "email"))
    blogs = list(
        Blog.objects.order_by("pk").values_list("pk", "title", "author__username", "created_at")
    )
    number = {pk: n for n, (pk, *_) in enumerate(blogs)}
    views = sorted(
        (number[blog_id], country, viewed_at)
        for blog_id, country, viewed_at in BlogView.objects.values_list(
            "blog_id", "country_id", "viewed_at"
        )
    )
    return authors, [blog[1:] for blog in blogs], views


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_seeds_exactly_what_was_asked():
    out = _seed("--views", "3000", "--authors", "7", "--blogs", "30", "--seed", "1")

    assert out.startswith("Seeded 7 authors, 30 blogs and 3,000 views in ")
    assert "--seed 1 " in out
    authors = _seeded_authors()
    assert authors.count() == 7
    assert Blog.objects.count() == 30
    assert BlogView.objects.count() == 3000
    assert set(Blog.objects.values_list("author__username", flat=True)) == set(
        authors.values_list("username", flat=True)
    )
    for author in authors:
        assert not author.has_usable_password()
        assert not author.is_staff and not author.is_superuser
    assert len(set(Blog.objects.values_list("title", flat=True))) > 20


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_views_come_in_chunks_that_add_up():
    chunks: list[int] = []

    summary = demo_data_seed(
        views=2500, authors=3, blogs=10, seed=4, chunk_size=300, progress=chunks.append
    )

    assert (summary.authors, summary.blogs, summary.views) == (3, 10, 2500)
    assert sum(chunks) == 2500 and max(chunks) <= 300 and len(chunks) >= 9
    assert BlogView.objects.count() == 2500


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_views_fall_in_the_365_days_ending_now_and_after_their_blog():
    _seed("--views", "4000", "--authors", "10", "--blogs", "60", "--seed", "2")

    views = BlogView.objects.all()
    assert not views.filter(viewed_at__lt=MIDNIGHT - timedelta(days=364)).exists()
    assert not views.filter(viewed_at__gt=NOW).exists()
    # Today has views (a dashboard's latest bucket is real), spread over the hours so far.
    today = views.filter(viewed_at__gte=MIDNIGHT)
    assert today.count() > 0
    assert today.filter(viewed_at__gte=NOW - timedelta(hours=4)).exists()
    assert today.filter(viewed_at__lt=MIDNIGHT + timedelta(hours=4)).exists()
    assert not views.filter(viewed_at__lt=F("blog__created_at")).exists()
    blogs = Blog.objects.all()
    assert not blogs.filter(created_at__lt=MIDNIGHT - timedelta(days=730)).exists()
    assert not blogs.filter(created_at__gte=MIDNIGHT).exists()
    # Blogs are spread over both years, and views over every month of the last one.
    assert blogs.filter(created_at__lt=MIDNIGHT - timedelta(days=365)).exists()
    months = {
        viewed_at.strftime("%Y-%m") for viewed_at in views.values_list("viewed_at", flat=True)
    }
    assert len(months) == 13  # June to June: the 364 days before today, and today


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_same_seed_same_day_gives_the_same_data():
    _seed("--views", "2000", "--authors", "6", "--blogs", "25", "--seed", "7")
    first = _snapshot()

    _seed("--views", "2000", "--authors", "6", "--blogs", "25", "--seed", "7", "--reset")
    assert _snapshot() == first

    _seed("--views", "2000", "--authors", "6", "--blogs", "25", "--seed", "8", "--reset")
    other = _snapshot()
    assert other[0] != first[0] and other[1] != first[1] and other[2] != first[2]


@pytest.mark.django_db
def test_the_day_moves_the_windows_but_keeps_the_draws():
    with time_machine.travel(NOW, tick=False):
        _seed("--views", "500", "--authors", "3", "--blogs", "8", "--seed", "9")
        first = _snapshot()
    with time_machine.travel(NOW + timedelta(hours=8), tick=False):  # still the same UTC day
        _seed("--views", "500", "--authors", "3", "--blogs", "8", "--seed", "9", "--reset")
        later_today = _snapshot()
    # The same data, but for today's views: the same draws, spread over a longer morning.
    assert later_today[:2] == first[:2]
    assert [v for v in later_today[2] if v[2] < MIDNIGHT] == [
        v for v in first[2] if v[2] < MIDNIGHT
    ]
    today_first = sorted((n, c) for n, c, t in first[2] if t >= MIDNIGHT)
    today_later = sorted((n, c) for n, c, t in later_today[2] if t >= MIDNIGHT)
    assert today_first == today_later and today_first
    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        _seed("--views", "500", "--authors", "3", "--blogs", "8", "--seed", "9", "--reset")
        later = _snapshot()
    day = timedelta(days=1)
    assert [(n, c, t - day) for n, c, t in later[2]] == first[2]


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_a_few_blogs_and_countries_take_most_views():
    _seed("--views", "10000", "--authors", "20", "--blogs", "200", "--seed", "3")

    per_blog = sorted(
        Counter(BlogView.objects.values_list("blog_id", flat=True)).values(), reverse=True
    )
    assert sum(per_blog[:20]) > 0.6 * 10000

    per_country = Counter(BlogView.objects.values_list("country_id", flat=True))
    counts = [per_country[code] for code in Country.objects.values_list("code", flat=True)]
    assert max(counts) > 20 * max(median(counts), 1)
    assert per_country.most_common(1)[0][0] == "US"
    assert 0.005 * 10000 < per_country[Country.UNKNOWN] < 0.05 * 10000


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_seeding_twice_without_reset_adds_and_never_reuses_a_username():
    _seed("--views", "100", "--authors", "8", "--blogs", "8", "--seed", "5")
    _seed("--views", "100", "--authors", "8", "--blogs", "8", "--seed", "5")

    assert _seeded_authors().count() == 16
    assert Blog.objects.count() == 16
    assert BlogView.objects.count() == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_if_empty_does_nothing_once_there_are_blogs():
    author = get_user_model().objects.create_user(username="ada", password="x")
    Blog.objects.create(title="Hand-made", author=author)

    out = _seed("--if-empty", "--views", "100", "--seed", "1")

    assert "nothing seeded" in out
    assert list(Blog.objects.values_list("title", flat=True)) == ["Hand-made"]
    assert get_user_model().objects.count() == 1
    assert not BlogView.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_if_empty_seeds_an_empty_database():
    _seed("--if-empty", "--views", "100", "--authors", "2", "--blogs", "3", "--seed", "1")

    assert (Blog.objects.count(), BlogView.objects.count()) == (3, 100)


@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_reset_keeps_users_it_did_not_seed():
    User = get_user_model()
    User.objects.create_superuser(username="root", password="x", email="root@seed-data.example")
    User.objects.create_user(username="staffer", email="s@seed-data.example", is_staff=True)
    User.objects.create_user(username="ada", password="x", email="ada@seed-data.example")
    _seed("--views", "300", "--authors", "5", "--blogs", "9", "--seed", "6")
    assert User.objects.count() == 8

    _seed("--views", "200", "--authors", "4", "--blogs", "6", "--seed", "11", "--reset")

    kept = {"root", "staffer", "ada"}
    assert set(User.objects.values_list("username", flat=True)) >= kept
    assert User.objects.count() == 3 + 4
    assert (Blog.objects.count(), BlogView.objects.count()) == (6, 200)
    assert not Blog.objects.filter(author__username__in=kept).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ["--views", "-1"],
        ["--blogs", "0"],
        ["--authors", "0"],
        ["--authors", "-3", "--blogs", "0", "--views", "0"],
        ["--reset", "--if-empty"],
    ],
)
def test_bad_options_are_refused_before_anything_is_written(args):
    with pytest.raises(CommandError):
        _seed(*args)

    assert not get_user_model().objects.exists()
    assert not Blog.objects.exists()


@pytest.mark.django_db
def test_authors_alone_need_no_blogs():
    _seed("--views", "0", "--blogs", "0", "--authors", "2", "--seed", "1")

    assert (_seeded_authors().count(), Blog.objects.count()) == (2, 0)


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="--bulk draws the views in PostgreSQL"
)


def _raw_indexes() -> dict[str, set[tuple[str, bool]]]:
    """The indexes of the raw table and of each of its partitions, per table: (definition
    without the index's and the table's names, valid)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.relname, pg_get_indexdef(x.indexrelid), x.indisvalid FROM pg_index x "
            "JOIN pg_class t ON t.oid = x.indrelid WHERE t.oid = %s::regclass "
            "OR t.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)",
            [BlogView._meta.db_table] * 2,
        )
        indexes: dict[str, set[tuple[str, bool]]] = {}
        for table, definition, valid in cursor.fetchall():
            bare = re.sub(r"INDEX \S+ ON (ONLY )?\S+", "INDEX ON", definition)
            indexes.setdefault(table, set()).add((bare, valid))
        return indexes


@postgres_only
@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_bulk_seeds_the_same_blogs_and_skew_drawn_by_the_database():
    indexes = _raw_indexes()
    _seed("--views", "3000", "--authors", "6", "--blogs", "40", "--seed", "12")
    drawn = _snapshot()
    drawn_per_blog = Counter(view[0] for view in drawn[2])

    out = _seed("--views", "3000", "--authors", "6", "--blogs", "40", "--seed", "12", "--reset",
                "--bulk")  # fmt: skip

    assert "Summaries rebuilt from raw (3,000 views" in out
    authors, blogs, views = _snapshot()
    assert (authors, blogs) == (drawn[0], drawn[1])
    assert len(views) == 3000
    # Same popularity: the blogs that take most views by draw take most in bulk too.
    bulk_per_blog = Counter(view[0] for view in views)
    top = [blog for blog, _ in drawn_per_blog.most_common(5)]
    assert sum(bulk_per_blog[blog] for blog in top) > 0.5 * sum(drawn_per_blog[b] for b in top)
    assert Counter(view[1] for view in views).most_common(1)[0][0] == "US"
    every = BlogView.objects.all()
    assert not every.filter(viewed_at__lt=MIDNIGHT - timedelta(days=364)).exists()
    assert not every.filter(viewed_at__gt=NOW).exists()
    assert every.filter(viewed_at__gte=MIDNIGHT).exists()
    assert not every.filter(viewed_at__lt=F("blog__created_at")).exists()
    # The secondary indexes, dropped during the load, are back as they were, valid, on the
    # table and on each of its partitions (the load added partitions for the months it filled).
    wanted = indexes[BlogView._meta.db_table]
    assert len(wanted) == 3 and all(valid for _, valid in wanted)
    after = _raw_indexes()
    assert len(after) > len(indexes)
    assert all(found == wanted for found in after.values())
    # The summaries count every view.
    assert DailyViews.objects.aggregate(total=Sum("views"))["total"] == 3000


@pytest.mark.django_db
def test_bulk_needs_postgresql():
    if connection.vendor == "postgresql":
        pytest.skip("the refusal is for other databases")
    with pytest.raises(CommandError, match="--bulk needs PostgreSQL"):
        _seed("--views", "10", "--authors", "1", "--blogs", "1", "--bulk")
    assert not Blog.objects.exists()


@postgres_only
@pytest.mark.django_db
@pytest.mark.usefixtures("frozen_clock")
def test_seeding_gives_the_planner_statistics_of_what_it_filled():
    def analyzed() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_stats WHERE tablename IN (%s, %s) "
                "AND attname IN ('author_id', 'blog_id')",
                [Blog._meta.db_table, BlogView._meta.db_table],
            )
            return {row[0] for row in cursor.fetchall()}

    def summaries_analyzed() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT tablename FROM pg_stats WHERE tablename IN (%s, %s)",
                [BLOG_COUNTRY_LEVEL.daily, PRESENCE],
            )
            return {row[0] for row in cursor.fetchall()}

    assert Blog._meta.db_table not in analyzed()
    assert not summaries_analyzed()
    _seed("--views", "500", "--authors", "3", "--blogs", "12", "--seed", "4")

    assert analyzed() == {Blog._meta.db_table, BlogView._meta.db_table}
    # And the summaries it filled from them (absorbed here, rebuilt with --bulk).
    assert summaries_analyzed() == {BLOG_COUNTRY_LEVEL.daily, PRESENCE}


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("frozen_clock")
@pytest.mark.parametrize("bulk", [False, True])
def test_seeding_from_the_command_line_vacuums_the_summaries(bulk):
    """Outside a transaction the summaries are vacuumed too: their visibility map lets the
    covering indexes be read index-only before autovacuum gets to them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        started = cursor.fetchone()[0]
    _seed("--views", "500", "--authors", "3", "--blogs", "12", "--seed", "4", *(["--bulk"] * bulk))

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE relname IN (%s, %s) "
            "AND last_vacuum >= %s AND last_analyze >= %s",
            [BLOG_COUNTRY_LEVEL.daily, PRESENCE, started, started],
        )
        assert {row[0] for row in cursor.fetchall()} == {BLOG_COUNTRY_LEVEL.daily, PRESENCE}
