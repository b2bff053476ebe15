"""The web process's gunicorn worker: gthread, with keep-alive that never makes a new connection
wait behind busy threads (``gunicorn.conf.py`` names it as its ``worker_class``).

gunicorn's gthread worker accepts a connection while it holds fewer than ``worker_connections``,
counting the kept-alive ones, which wait in its poller and hold no thread. With
``worker_connections`` = threads (as this project had it, so that a worker whose threads are all
busy, e.g. with slow clients, never takes a connection another worker could serve at once),
gthread can keep no connection alive: every request paid a new TCP connection, and on this
machine a cached read took 1.9-3.6 ms at p50 that way. Here a worker accepts a new connection
only while it has a free thread for it, whatever number of connections it keeps alive: the limit
on accepting is ``threads`` + the connections it keeps alive. It keeps at most
``worker_connections - threads`` alive (gthread's own rule; past that an answer closes its
connection), each for ``keepalive`` seconds at most.

The price: a request sent on a kept-alive connection to a worker whose threads are all busy waits
for one of them, as it would have behind any single-connection server.
"""

from gunicorn.workers.gthread import ThreadWorker


class KeepAliveThreadWorker(ThreadWorker):
    """gthread, accepting a connection only when a thread is free for it (see the module)."""

    @property
    def worker_connections(self) -> int:
        """The number of connections under which the worker accepts another: one per thread,
        plus those it keeps alive (idle, in the poller, holding no thread)."""
        return int(self.cfg.threads) + len(self.keepalived_conns)

    @worker_connections.setter
    def worker_connections(self, configured: int) -> None:
        """gthread sets it from the configuration when it starts; the property replaces it."""
