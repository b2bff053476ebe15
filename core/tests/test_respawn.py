"""``scripts/respawn``: `make run` runs worker and beat through it, so that one dying is started
again instead of taking the whole honcho stack down with it."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from core.testing import child_env, wait_until

RESPAWN = Path(settings.BASE_DIR) / "scripts" / "respawn"


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.django_db(transaction=True)
def test_respawn_starts_a_dead_worker_again_and_stops_on_sigterm(tmp_path):
    env = child_env(
        CELERY_FILESYSTEM_DIR=str(tmp_path / "celery"),  # a broker of its own
        CELERY_CONCURRENCY="1",
        LOG_LEVEL="INFO",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    env.pop("REDIS_URL", None)
    log = tmp_path / "respawn.log"
    with log.open("wb") as output:
        respawn = subprocess.Popen(
            [str(RESPAWN), "worker"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as honcho starts it: a process group of its own
        )
    try:

        def started(times: int) -> bool:
            return log.read_text(errors="replace").count(" ready.") >= times

        assert wait_until(lambda: started(1), seconds=60), log.read_text()
        [worker] = _children(respawn.pid)
        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: started(2), seconds=60), log.read_text()
        assert "respawn: worker exited with status 137; starting it again in 1 s" in (
            log.read_text()
        )
        assert respawn.poll() is None

        # honcho stops a process by signalling its group: the worker shuts down, the loop ends.
        os.killpg(respawn.pid, signal.SIGTERM)
        assert respawn.wait(timeout=60) == 0, log.read_text()
        assert wait_until(lambda: not _group_alive(respawn.pid), seconds=30), log.read_text()
    finally:
        if _group_alive(respawn.pid):
            os.killpg(respawn.pid, signal.SIGKILL)
        respawn.wait()
