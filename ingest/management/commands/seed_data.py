import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from tqdm import tqdm

from core.models import Blog
from ingest.models import BlogView
from ingest.seeding import (
    DEFAULT_AUTHORS,
    DEFAULT_BLOGS,
    DEFAULT_VIEWS,
    SeedOptionsError,
    demo_data_options_check,
    demo_data_present,
    demo_data_reset,
    demo_data_seed,
)
from rollups.absorb import rollups_absorb_pending
from rollups.rebuild import rollups_rebuild, summaries_clear
from rollups.tables import SUMMARY_TABLES


def summaries_tend() -> None:
    """PostgreSQL: vacuum and analyze the summaries just filled (only analyze them inside a
    transaction, where ``VACUUM`` cannot run).

    Until autovacuum gets to them, or never where it is off, they have no statistics (the
    planner guessed 977 presence rows where 118,890 matched) and no visibility map, so the
    covering indexes cannot be read index-only: at 10 M views the author breakdown for three
    countries took 27.9 ms in the process before ``VACUUM``, 12.9 ms after.
    """
    if connection.vendor != "postgresql":
        return
    tables = ", ".join(map(connection.ops.quote_name, SUMMARY_TABLES))
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            cursor.execute(f"ANALYZE {tables}")
        else:
            cursor.execute(f"VACUUM (ANALYZE) {tables}")


def seeded_tables() -> list[str]:
    """The tables ``seed_data`` fills, quoted: users, blogs, raw views."""
    return [
        connection.ops.quote_name(model._meta.db_table)
        for model in (get_user_model(), Blog, BlogView)
    ]


class Command(BaseCommand):
    help = (
        "Create demo authors, blogs and a year of skewed views (a few blogs and countries take "
        "most of them). The same --seed on the same UTC day gives the same data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--views", type=int, default=DEFAULT_VIEWS, help=f"default {DEFAULT_VIEWS:,}"
        )
        parser.add_argument(
            "--authors", type=int, default=DEFAULT_AUTHORS, help=f"default {DEFAULT_AUTHORS}"
        )
        parser.add_argument(
            "--blogs", type=int, default=DEFAULT_BLOGS, help=f"default {DEFAULT_BLOGS}"
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="random seed (default: a fresh one, printed)"
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="first delete all views and blogs, and the authors seed_data created",
        )
        parser.add_argument(
            "--bulk",
            action="store_true",
            help=(
                "PostgreSQL: let the database draw the views (same blogs, popularity and "
                "countries; no per-view Python, not the ingest write path): for 100 M-view "
                "benchmarks"
            ),
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing when any blog or view exists",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["reset"] and options["if_empty"]:
            raise CommandError("--reset and --if-empty contradict each other; give one.")
        if options["if_empty"] and demo_data_present():
            self.stdout.write("The database already has blogs or views; nothing seeded.")
            return
        try:
            demo_data_options_check(
                views=options["views"], authors=options["authors"], blogs=options["blogs"]
            )
        except SeedOptionsError as error:
            raise CommandError(str(error)) from error
        if options["bulk"] and connection.vendor != "postgresql":
            raise CommandError("--bulk needs PostgreSQL.")
        if options["reset"]:
            # Raw views and the summaries computed from them go together.
            with transaction.atomic():
                demo_data_reset()
                summaries_clear()
        # tqdm goes to the real stderr: Django's OutputWrapper would end each redraw with a newline.
        with tqdm(
            total=options["views"], unit=" views", unit_scale=True, file=sys.stderr, disable=None
        ) as bar:
            summary = demo_data_seed(
                views=options["views"],
                authors=options["authors"],
                blogs=options["blogs"],
                seed=options["seed"],
                progress=bar.update,
                bulk=options["bulk"],
            )
        if connection.vendor == "postgresql":
            # Statistics for the tables just filled, before anything reads them: autovacuum
            # gets to them only later, and until then the planner takes any author for one
            # with no blogs (a 100 M view seed's read of a 144-blog author ran a nested loop
            # over every blog's days: 517 ms instead of a few).
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {', '.join(seeded_tables())}")
        self.stdout.write(
            f"Seeded {summary.authors:,} authors, {summary.blogs:,} blogs and {summary.views:,} "
            f"views in {summary.seconds:.1f} s ({summary.views_per_second:,.0f} views/s); "
            f"--seed {summary.seed} repeats it today (UTC)."
        )
        if options["bulk"]:
            # Recounting everything from raw beats absorbing a huge backlog chunk by chunk.
            summaries_clear()
            rebuilt = rollups_rebuild()
            summaries_tend()
            self.stdout.write(
                f"Summaries rebuilt from raw ({rebuilt.views:,} views in "
                f"{rebuilt.duration_ms / 1000:.1f} s)."
            )
            return
        absorbed = rollups_absorb_pending()
        summaries_tend()
        self.stdout.write(f"Summaries up to date ({absorbed.views:,} views absorbed).")
