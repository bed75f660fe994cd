from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import api_token_create


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print it. Only its hash is stored: this is the "
        "only time the token is shown."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="api", help="what the token is for (default: api)")

    def handle(self, *args, username, name, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}: create it first with create_user.")
        if not user.is_active:
            raise CommandError(f"{username} is not active: an API token would not work.")
        api_token, token = api_token_create(user=user, name=name)
        # The token alone on standard output, so `TOKEN=$(… create_api_token sam)` works.
        self.stderr.write(
            f"API token “{api_token.name}” for {user.username} (shown only this once):"
        )
        self.stdout.write(token)
