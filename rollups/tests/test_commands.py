from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from rollups.tests.recount import assert_summaries_exact


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_run_rollups_absorbs_everything_pending(ingest_random):
    ingest_random(120)
    assert "Absorbed 120 views" in _run("run_rollups")
    assert_summaries_exact()
    assert "Absorbed 0 views" in _run("run_rollups")


def test_rebuild_rollups_for_a_range_and_for_everything(ingest_random):
    ingest_random(200)
    output = _run("rebuild_rollups", "--start-date", "2024-03-01", "--end-date", "2024-03-31")
    assert output.startswith("Rebuilt 2024-03-01 to 2024-03-31 from ")
    assert_summaries_exact()
    assert _run("rebuild_rollups").startswith("Rebuilt 2024-01-")
    assert_summaries_exact()


def test_rebuild_rollups_with_nothing_to_do(db):
    assert "Nothing to rebuild" in _run("rebuild_rollups")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start-date", "2024-02-30"], "not a date"),
        (["--start-date", "2024-03-02", "--end-date", "2024-03-01"], "after --end-date"),
        (["--start-date", "0001-01-01"], "--start-date must lie in 1900-01-01..2100-12-31"),
        (["--end-date", "9999-12-31"], "--end-date must lie in 1900-01-01..2100-12-31"),
        (["--start-date", "1899-12-31", "--end-date", "2101-01-01"], "--end-date must lie"),
    ],
)
def test_rebuild_rollups_rejects_bad_dates(db, args, message):
    with pytest.raises(CommandError, match=message):
        _run("rebuild_rollups", *args)


def test_rebuild_rollups_over_exactly_the_supported_days(ingest_random):
    ingest_random(50)
    output = _run("rebuild_rollups", "--start-date", "1900-01-01", "--end-date", "2100-12-31")
    assert output.startswith("Rebuilt 1900-01-01 to 2100-12-31 from 50 views")
    assert_summaries_exact()
