from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role
from accounts.services import team_get_or_create, user_create


class Command(BaseCommand):
    help = "Create a user with a role on a team (the team is created if missing)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--team", required=True, help="team slug")
        parser.add_argument("--password", help="generated and printed if omitted")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, role, team, password, email, **options):
        try:
            user, generated = user_create(
                username=username, role=role, team_slug=team, password=password, email=email
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        slug = team_get_or_create(slug=team).slug
        line = f"{user.username}: {role} on team {slug}"
        if generated:
            line += f", password {generated}"
        self.stdout.write(line)
