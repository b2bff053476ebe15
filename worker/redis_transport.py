"""kombu's Redis transport, fixed so that a worker survives Redis restarting.

``worker/celery.py`` calls :func:`use_for_redis_urls`, so that every ``redis://`` (and
``rediss://``) broker URL of this project's processes gets it.

What goes wrong without it (kombu 5.7, Celery 5.7, redis-py 8.1): when Redis goes away under a
worker, Celery's recovery (``Consumer.on_connection_error_after_connected``) first *collects* the
broken connection, which closes its channels and then detaches the transport from it
(``transport.client = None``), and then *closes* it, which closes its default channel again. With
Redis down, the first round of closes can stop half-way: the transport closes its channels one
after the other and gives up at the first one that raises a connection error, so the channels
after it stay open. If the default channel is among them and holds a message delivered to the
worker but not acknowledged yet, the second close tries to put that message back through a new
connection pool; the pool takes its parameters from the detached transport's client, ``None``,
and the ``AttributeError`` that follows (``'NoneType' object has no attribute 'hostname'``) is
no connection error: the worker logs "Unrecoverable error" and exits. It did so in 4 of 55 Redis
restarts under a worker and beat here (and rollups/tests/test_outages.py replays it every time).

Here a channel whose transport was detached raises redis-py's ``ConnectionError`` instead, which
is what the situation is: Celery handles it as the connection loss it is and reconnects. The
message is not lost: kombu keeps every delivered message in Redis until it is acknowledged, and a
worker puts back those left unacknowledged longer than the visibility timeout.
"""

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError(
                "the broker connection of this channel was closed (Redis went away)"
            )
        # celery-types' kombu stubs leave the channel's private methods out.
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


def use_for_redis_urls() -> None:
    """Make kombu resolve the ``redis`` and ``rediss`` URL schemes to :class:`Transport`.

    Through kombu's alias table rather than Celery's ``broker_transport`` setting: that one would
    apply to every broker URL, a ``filesystem://`` one included.
    """
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
