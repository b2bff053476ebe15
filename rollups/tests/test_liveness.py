"""`manage.py liveness absorb|beat`: the healthchecks of the worker and beat containers."""

import os
import shutil
from contextlib import ExitStack
from datetime import datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from core.testing import child_env, procfile_process, redis_server, wait_until
from rollups.absorb import rollups_absorb_pending
from rollups.management.commands.liveness import ABSORB_ENTRY


def test_absorb_is_alive_within_three_intervals_of_a_run(db, settings, capsys) -> None:
    settings.ROLLUP_INTERVAL_SECONDS = 10
    with pytest.raises(CommandError, match="last: never"):
        call_command("liveness", "absorb")

    rollups_absorb_pending()
    call_command("liveness", "absorb")
    assert "absorb alive" in capsys.readouterr().out

    with (
        time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False),
        pytest.raises(CommandError, match="within 30 s"),
    ):
        call_command("liveness", "absorb")


def test_beat_is_alive_while_it_sends_the_absorb_task(db, settings) -> None:
    settings.ROLLUP_INTERVAL_SECONDS = 10
    with pytest.raises(CommandError, match="never"):
        call_command("liveness", "beat")
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    entry = PeriodicTask.objects.create(
        name=ABSORB_ENTRY, task="rollups.absorb_pending", interval=every
    )
    PeriodicTask.objects.filter(pk=entry.pk).update(last_run_at=timezone.now())
    call_command("liveness", "beat")
    PeriodicTask.objects.filter(pk=entry.pk).update(
        last_run_at=timezone.now() - timedelta(seconds=31)
    )
    with pytest.raises(CommandError):
        call_command("liveness", "beat")


def _last_send() -> datetime | None:
    return (
        PeriodicTask.objects.filter(name=ABSORB_ENTRY).values_list("last_run_at", flat=True).first()
    )


@pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")) and shutil.which("redis-server") is None,
    reason="needs the redis-server program for a private broker",
)
@pytest.mark.django_db(transaction=True)
def test_a_running_beat_keeps_its_last_send_fresh(tmp_path, settings) -> None:
    # Beat sends every second; the check here allows three minutes, so that a slow machine
    # cannot fail it (the bound itself is tested above).
    settings.ROLLUP_INTERVAL_SECONDS = 60
    started = timezone.now()
    with ExitStack() as stack:
        # Its own broker: the sends must not wait in a queue other tests' workers share.
        if os.environ.get("REDIS_URL"):
            broker = {"REDIS_URL": stack.enter_context(redis_server(tmp_path)).url}
        else:
            broker = {"CELERY_FILESYSTEM_DIR": str(tmp_path / "celery")}
        env = child_env(ROLLUP_INTERVAL_SECONDS="1", **broker)
        stack.enter_context(procfile_process("beat", log=tmp_path / "beat.log", env=env))
        # Saved at once (not at beat's next sync, minutes later), and saved again each time.
        assert wait_until(lambda: (_last_send() or started) > started, seconds=30), (
            tmp_path / "beat.log"
        ).read_text()
        first = _last_send()
        assert wait_until(lambda: _last_send() != first, seconds=30)
    call_command("liveness", "beat")
