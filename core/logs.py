"""Request ids on every log line, and the logging configuration (text or JSON lines).

A request's id is taken from its ``X-Request-ID`` header when that is a sane token, else made
here; ``core.middleware.RequestIdMiddleware`` keeps it in a context variable for the request and
returns it in the response. ``RequestIdFilter`` puts it on every log record written meanwhile,
and the Celery hooks in ``worker.celery`` send it along in the headers of the tasks the request
starts, where it is set again for the task's log lines.
"""

import logging
import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
# What a client-sent id may be: short and printable, so that it cannot forge log lines or
# headers. Anything else is replaced by a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_var: ContextVar[str | None] = ContextVar("task", default=None)


def request_id_from(sent: str | None) -> str:
    """The id to use for a request that sent ``sent`` in ``X-Request-ID``."""
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and ``task``, inside a Celery task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        record.task = task_var.get() or "-"
        return True


# Beat sends these every few seconds or every minute (the per-minute absorb every 5 s): Celery's
# own lines about them, three a run, buried everything else in `make run`'s console and the logs.
ROUTINE_TASKS = frozenset(
    {
        "rollups.absorb_pending",
        "rollups.absorb_recent",
        "rollups.reap_rebuild_jobs",
        "rollups.tend_recent_tables",
    }
)


class RoutineTaskFilter(logging.Filter):
    """Drops Celery's INFO lines about the routine periodic tasks (``ROUTINE_TASKS``): beat
    sending one, the worker receiving one, and a run that succeeded having done nothing (it
    returned 0). A run that did something still logs its success with what it did (and the
    task its own lines), and a failure or a retry always logs; their metrics count every run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith("celery."):
            return True
        args = record.args
        if record.name == "celery.beat":
            # "Scheduler: Sending due task %s (%s)", entry name and task name.
            return not (
                isinstance(args, tuple)
                and len(args) == 2
                and str(record.msg).startswith("Scheduler: Sending due task")
                and args[1] in ROUTINE_TASKS
            )
        if not isinstance(args, dict) or args.get("name") not in ROUTINE_TASKS:
            return True
        if record.name == "celery.worker.strategy":
            return False  # "Task %(name)s[%(id)s] received"
        if record.name == "celery.app.trace" and "succeeded" in str(record.msg):
            return str(args.get("return_value")) != "0"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# The fixed fields of each JSON line; a record's ``extra`` fields are added beside them.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(task)s"


def logging_config(*, log_format: str, level: str) -> dict[str, object]:
    """``LOGGING`` for ``LOG_FORMAT`` ``text`` (the default) or ``json`` (one object a line)."""
    formatter: dict[str, object]
    if log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "core.logs.RequestIdFilter"},
            "routine_tasks": {"()": "core.logs.RoutineTaskFilter"},
        },
        "formatters": {"main": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["routine_tasks", "request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
    }
