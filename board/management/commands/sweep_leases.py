from django.core.management.base import BaseCommand

from board.services import leases_sweep


class Command(BaseCommand):
    help = (
        "Expire every claim whose lease has run out (what the periodic Celery sweep does), "
        "e.g. when no beat process is running."
    )

    def handle(self, *args, **options):
        expired = leases_sweep()
        self.stdout.write(f"expired {expired} claim{'' if expired == 1 else 's'}")
