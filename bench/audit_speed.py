"""The drift audit (rollups.audit) at 10 M views: how long recounting one day takes.

    python bench/audit_speed.py [--database-url URL] [--days N] [--repeat R]

Runs against an existing database (default: the one bench/rollup_speed.py fills with ~10 M
views, absorbed). For each of N days (default 10, spread over the data back from its last
whole day), ``rollups_verify(days=[day])`` is timed R times (default 3): a snapshot, the day's raw
views recounted through the ``viewed_at`` index, every daily level's rows read and compared.
It prints the median and the worst of those per-day times and the views a day holds. Goal: well
under a second per day. Then one whole default audit (yesterday, the month starts of a year,
seven random days) is timed. The audits it records are deleted afterwards.
"""

import argparse
import statistics
import time
from datetime import timedelta

from common import ROLLUPS_DATABASE_URL, bench_env, django_setup, server_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=ROLLUPS_DATABASE_URL)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    django_setup(bench_env(args.database_url))
    from django.db.models import Max, Min

    from ingest.models import BlogView
    from rollups.audit import audit_days_sample, rollups_verify
    from rollups.models import RollupAudit

    print(server_settings())
    total = BlogView.objects.count()
    bounds = BlogView.objects.aggregate(first=Min("viewed_at"), last=Max("viewed_at"))
    if not total:
        raise SystemExit("the database holds no views: run bench/rollup_speed.py first")
    # The last day may still be filling (today's views): the day before it is the last whole one.
    first, last = bounds["first"].date(), bounds["last"].date() - timedelta(days=1)
    span = (last - first).days
    step = max(span // max(args.days, 1), 1)
    days = [last - timedelta(days=step * n) for n in range(args.days) if step * n <= span]
    print(f"{total:,} views, {first}..{last}; auditing {len(days)} single days")

    keep = set(RollupAudit.objects.values_list("pk", flat=True))
    times, drifting = [], 0
    for day in days:
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = rollups_verify(days=[day])
            times.append(time.perf_counter() - started)
            drifting += len(result.drifts)
        print(
            f"  {day}: {result.audit.views_recounted:,} views, "
            f"{min(times[-args.repeat :]) * 1000:.1f} ms best of {args.repeat}"
        )
    print(
        f"one day: median {statistics.median(times) * 1000:.1f} ms, worst "
        f"{max(times) * 1000:.1f} ms over {len(times)} audits (goal: well under 1,000 ms); "
        f"drifting groups found: {drifting}"
    )

    sample = audit_days_sample(start=last - timedelta(days=364), end=last, random_days=7)
    started = time.perf_counter()
    result = rollups_verify(days=sample)
    print(
        f"default audit ({len(sample)} days, {result.audit.views_recounted:,} views): "
        f"{(time.perf_counter() - started) * 1000:.0f} ms, {len(result.drifts)} drifting groups"
    )
    RollupAudit.objects.exclude(pk__in=keep).delete()


if __name__ == "__main__":
    main()
