from django.core.management.base import BaseCommand

from board.health import SWEEP_HEARTBEAT, heartbeat_record
from board.services import leases_sweep


class Command(BaseCommand):
    help = (
        "Expire every claim whose lease has run out (what the periodic Celery sweep does), "
        "e.g. when no beat process is running."
    )

    def handle(self, *args, **options):
        expired = leases_sweep()
        outcome = f"expired {expired} claim{'' if expired == 1 else 's'}"
        # A sweep run by hand counts as the periodic one for /healthz.
        heartbeat_record(name=SWEEP_HEARTBEAT, detail=outcome)
        self.stdout.write(outcome)
