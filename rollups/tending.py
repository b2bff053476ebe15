"""The realtime tables kept vacuumed and analyzed, whatever the server's autovacuum does.

The per-minute rows of the last hour and the realtime window rows (``rollups.tables``:
``RECENT_LEVELS``, ``RECENT_WINDOWS``) churn as no other table does: absorb upserts each
minute's rows many times over while the minute is current, deletes every row older than an hour,
updates the window rows at each chunk and rolls them every minute. Every one of those writes
leaves a dead row version behind. Left alone they pile up (measured: 1.8 M dead rows beside
650 k live ones in the (minute, blog, country) table after four realtime benchmark runs in 12
minutes, about 770 k views and the migrations between the runs, on a server whose autovacuum
is off), and the statistics the planner picks its plans with describe minutes that are gone: a
realtime answer for two countries took 83 ms instead of 26 ms until a ``VACUUM`` and an
``ANALYZE``.

So a beat task (``rollups.tend_recent_tables``, every minute) vacuums and analyzes these
tables when they are due by autovacuum's own default rules (dead rows, or rows changed since the
last analysis, past 50 plus a share of the live ones; rows inserted since the last vacuum past
1,000 plus a share), read from ``pg_stat_user_tables``. The inserts' rule matters for reads as
much as the dead rows': the per-minute tables mostly get new rows, and until a vacuum marks
their pages all-visible an index-only read of them (a country's rows, covering their count)
fetches every row from the table as well (20,000 buffers instead of a few hundred). Where
autovacuum runs and keeps up, it finds nothing due; where it is off, or too slow for tables
rewritten every hour, it does the work. ``SKIP_LOCKED``: a table another vacuum holds is left
to it. The other tables, which mostly grow, are autovacuum's (docs/OPERATIONS.md).

PostgreSQL only: SQLite has no dead row versions to clear that would slow these reads.
"""

import logging
import time

from django.db import connection

from core.sql import postgres
from rollups.tables import RECENT_LEVELS, RECENT_WINDOWS

logger = logging.getLogger(__name__)

TENDED_TABLES = (
    *(table for level in RECENT_LEVELS for table in level.tables),
    *(window.table for window in RECENT_WINDOWS),
)
# autovacuum's defaults: autovacuum_vacuum_threshold / _scale_factor,
# autovacuum_vacuum_insert_threshold / _scale_factor and autovacuum_analyze_threshold /
# _scale_factor.
VACUUM_THRESHOLD, VACUUM_SHARE = 50, 0.2
INSERT_VACUUM_THRESHOLD, INSERT_VACUUM_SHARE = 1000, 0.2
ANALYZE_THRESHOLD, ANALYZE_SHARE = 50, 0.1


def recent_tables_tend() -> list[str]:
    """Vacuum (and analyze) each realtime table with dead rows past the threshold, analyze
    each one changed past it since its last analysis; return the statements run. Outside any
    transaction (``VACUUM`` cannot run in one)."""
    if not postgres():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relid::regclass::text, n_live_tup, n_dead_tup, n_ins_since_vacuum, "
            "n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = ANY(%s::regclass[]) "
            "ORDER BY 1",
            [list(TENDED_TABLES)],
        )
        due = []
        for table, live, dead, inserted, changed in cursor.fetchall():
            if (
                dead > VACUUM_THRESHOLD + VACUUM_SHARE * live
                or inserted > INSERT_VACUUM_THRESHOLD + INSERT_VACUUM_SHARE * live
            ):
                due.append(f"VACUUM (ANALYZE, SKIP_LOCKED) {table}")
            elif changed > ANALYZE_THRESHOLD + ANALYZE_SHARE * live:
                due.append(f"ANALYZE (SKIP_LOCKED) {table}")
        for statement in due:
            started = time.perf_counter()
            cursor.execute(statement)
            logger.info(
                "%s in %d ms",
                statement,
                (time.perf_counter() - started) * 1000,
                extra={"statement": statement},
            )
    return due
