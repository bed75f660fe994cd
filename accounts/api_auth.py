"""Bearer-token authentication for the JSON API (django-ninja).

The API authenticates by `Authorization: Bearer <token>` only, never by the session cookie,
so API calls need no CSRF token and a logged-in browser cannot be tricked into making them.
"""

import zoneinfo

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from accounts.models import User
from accounts.services import api_token_authenticate


class ApiTokenAuth(HttpBearer):
    def __call__(self, request: HttpRequest) -> User | None:
        # ninja's HttpBearer answers a bare "Unauthorized" for every failure; say which one.
        header = request.headers.get(self.header, "")
        if not header:
            raise AuthenticationError(message=(
                "Authentication required: send “Authorization: Bearer <token>” (create a "
                "token with manage.py create_api_token)."
            ))
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.openapi_scheme or not token.strip():
            raise AuthenticationError(
                message="The Authorization header must read “Bearer <token>”."
            )
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> User:
        user = api_token_authenticate(token=token)
        if user is None:
            raise AuthenticationError(
                message="This API token is not valid: it is unknown or has been revoked."
            )
        request.user = user
        # UserTimeZoneMiddleware ran before the token was read, so activate the zone here:
        # times inside messages ("your lease ran out at 10:15") read in the caller's zone.
        try:
            timezone.activate(zoneinfo.ZoneInfo(user.time_zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.deactivate()
        return user
