"""``python -m rollups.tests.outage_child COMMAND ...`` on the database of ``DATABASE_URL``.

The PostgreSQL restart test runs worker and beat on a private cluster; the test process stays on
the test database and does its work on the cluster through this module, in a child process:

- ``ingest COUNT SEED``: record ``COUNT`` random views (first creating a few blogs if none);
- ``absorbed SECONDS``: wait until nothing is pending, then check every summary against a
  recount from the raw views; the exit status says whether both held.
"""

import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta


def _ingest(count: int, seed: int) -> None:
    from django.contrib.auth import get_user_model

    from core.models import Blog
    from ingest.services import views_record

    if not Blog.objects.exists():
        for n in range(3):
            author = get_user_model().objects.create_user(username=f"author{n}", password="x")
            Blog.objects.create(title=f"Blog {n}", author=author)
            Blog.objects.create(title=f"Blog {n + 3}", author=author)
    blog_ids = list(Blog.objects.values_list("id", flat=True))
    rng = random.Random(seed)
    first_day = datetime(2024, 1, 1, tzinfo=UTC)
    views_record(
        views=[
            (
                rng.choice(blog_ids),
                rng.choice(["US", "DE", "ET", "IN", "ZZ"]),
                first_day + timedelta(days=rng.randrange(731), seconds=rng.randrange(86_400)),
            )
            for _ in range(count)
        ]
    )


def _absorbed(seconds: float) -> int:
    from rollups.selectors import rollups_status
    from rollups.tests.recount import assert_summaries_exact

    deadline = time.monotonic() + seconds
    while rollups_status().pending_views:
        if time.monotonic() > deadline:
            print(f"still pending after {seconds} s: {rollups_status()}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    assert_summaries_exact()
    return 0


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django

    django.setup()
    command, *args = argv
    if command == "ingest":
        _ingest(int(args[0]), int(args[1]))
        return 0
    if command == "absorbed":
        return _absorbed(float(args[0]))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
