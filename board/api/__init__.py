"""The staff JSON API under /api/v1/ (django-ninja), authenticated by bearer tokens.

Endpoints are as thin as the views: fetch through accounts.access (404 outside the user's
teams, 403 without the capability), run one service through board.idempotency, answer JSON.
Every error is `{"detail": "<readable message>"}`, made in one place: the exception handlers
at the end of this module. The endpoints are in holder (claims and the holder's actions)
and runs (reads, launch, the managers' push); their shapes in schemas and bodies. Times are
ISO 8601 in UTC with the offset written out, as in the trail export.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.api_auth import ApiTokenAuth
from board import idempotency
from board.api import holder, runs
from board.errors import BoardError

api = NinjaAPI(
    title="Pullboard API",
    version="1",
    description=(
        "Claim, complete, abandon and extend items of recovery runs; read runs and their "
        "trails; launch runs, from alerts too, and push, restart and cancel them (managers). "
        "Authenticate with `Authorization: Bearer <token>` (`manage.py "
        "create_api_token`). Every POST needs an `Idempotency-Key` header: a fresh value "
        "(a UUID) for each action, sent again unchanged to retry it; a retry returns the "
        "first outcome and changes nothing. The one exception is the Alertmanager webhook, "
        "which is idempotent by each alert's fingerprint. Errors are "
        "`{\"detail\": \"<message>\"}`."
    ),
    urls_namespace="api",
    auth=ApiTokenAuth(),
)

api.add_router("", holder.router)
api.add_router("", runs.router)


# --- Errors, in one place -------------------------------------------------------------------


def _detail(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return api.create_response(request, {"detail": message}, status=status)


@api.exception_handler(BoardError)
def _board_error(request: HttpRequest, error: BoardError) -> HttpResponse:
    response = _detail(request, error.message, error.status)
    if isinstance(error, idempotency.ReplayedError):
        response["Idempotent-Replayed"] = "true"  # as for a replayed success
    return response


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return _detail(request, str(error) or "Not found.", 404)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, error: PermissionDenied) -> HttpResponse:
    return _detail(request, str(error) or "You may not do that.", 403)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    response = _detail(request, error.message, 401)
    response["WWW-Authenticate"] = 'Bearer realm="pullboard"'
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    if error.status_code == 400:
        # The only 400 ninja raises here: a body that is not JSON. A bad body is a 422.
        return _detail(request, "The request body is not valid JSON.", 422)
    return _detail(request, error.message, error.status_code)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    match = getattr(request, "resolver_match", None)
    opening = "Invalid request" if match is None or match.url_name != "hooks_alertmanager" \
        else "This is not an Alertmanager webhook payload (version 4)"
    return _detail(request, f"{opening}: " + "; ".join(
        _problem(problem) for problem in error.errors
    ) + ".", 422)


def _problem(problem: dict) -> str:
    """One of pydantic's errors as a phrase: "“token” is required", "the Idempotency-Key
    header is required", "“token”: input should be a valid integer"."""
    loc = [str(part) for part in problem.get("loc", ())]
    source, rest = (loc[0], loc[1:]) if loc else ("", [])
    if source == "body":
        # ninja puts the parameter name (payload) after "body"; the fields follow it.
        fields = rest[1:]
        what = f"“{'.'.join(fields)}”" if fields else "the JSON body"
    elif source == "header" and rest:
        what = f"the {rest[0]} header"
    elif rest:
        what = f"the {source} parameter “{'.'.join(rest)}”"
    else:
        what = "the request"
    if problem.get("type") == "missing":
        return f"{what} is required"
    message = str(problem.get("msg", "is not valid"))
    return f"{what}: {message[:1].lower()}{message[1:]}"
