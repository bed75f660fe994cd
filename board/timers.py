"""Lease timers: after a claim or an extend commits, a Celery message expires the claim at
its lease's end (the task checks the token, so a stale timer does nothing).

Sending a Celery message costs about half a millisecond of CPU (more than the claim costs
the database) and waits for the broker. So a claim only drops its timer into this process's
outbox; a background thread sends them. A claim never waits for the broker, nor fails when it
is down, and the timers of claims whose leases end within the same TIMER_BUCKET_SECONDS share
one `expire_claims` message, sent for the latest of their ends (so a lease is expired at most
that much late). A timer lost with its process (killed before the thread sent it) or refused
by a broker that is down is caught by the periodic sweep.
"""

import atexit
import logging
import math
import os
import threading
from collections import defaultdict
from datetime import datetime

from django.conf import settings

log = logging.getLogger(__name__)

# How long the sender waits after the first timer of a batch for others to join it.
GATHER_SECONDS = 0.1


class TimerOutbox:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[tuple[int, int, datetime]] = []
        self._sender: threading.Thread | None = None

    def add(self, item_id: int, token: int, eta: datetime) -> None:
        with self._lock:
            self._pending.append((item_id, token, eta))
            # The sender was woken for the first of the pending timers and takes them all.
            wake = len(self._pending) == 1
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(
                    target=self._send_forever, name="lease-timers", daemon=True
                )
                self._sender.start()
                wake = True
        if wake:
            self._wake.set()

    def _send_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            threading.Event().wait(GATHER_SECONDS)
            self.flush()

    def flush(self) -> int:
        """Send every pending timer now; the number of messages sent."""
        from board.tasks import expire_claims

        with self._lock:
            batch, self._pending = self._pending, []
        buckets: dict[int, list[tuple[int, int, datetime]]] = defaultdict(list)
        width = settings.TIMER_BUCKET_SECONDS
        for timer in batch:
            buckets[math.ceil(timer[2].timestamp() / width)].append(timer)
        sent = 0
        for timers in buckets.values():
            claims = [[item_id, token] for item_id, token, _eta in timers]
            try:
                # One quick retry, not Celery's default of three spaced ones: a broker that
                # is down must not hold up the others (or a process's exit) for seconds.
                expire_claims.apply_async(
                    (claims,), eta=max(eta for *_, eta in timers),
                    retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0},
                )
                sent += 1
            except Exception:  # noqa: BLE001 - a broker outage must not lose the others
                log.warning("could not send the lease timers of %d claims; the sweep will "
                            "expire them", len(claims), exc_info=True)
        return sent


outbox = TimerOutbox()
# Timers still in the outbox when the process ends normally are sent, not lost.
atexit.register(outbox.flush)
# A forked child (a Celery or gunicorn worker) starts with an empty outbox of its own and no
# sender: the parent's thread does not exist in the child, and its timers are the parent's.
os.register_at_fork(after_in_child=outbox._reset)


def timer_schedule(*, item_id: int, token: int, eta: datetime) -> None:
    outbox.add(item_id, token, eta)
