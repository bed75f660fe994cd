"""Error pages that keep a person mid-incident oriented instead of stranding them."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.views import defaults

STALE_FORM = (
    "This page is out of date: you logged in or out in another tab, or the page is very old. "
    "Reload the page and try again; nothing was changed."
)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A refused CSRF check. For htmx the message goes into the flash area rather than over
    the panel the button targeted."""
    if getattr(request, "htmx", False):
        response = render(request, "base.html#flash", {"error": STALE_FORM}, status=403)
        response["HX-Retarget"] = "#flash"
        response["HX-Reswap"] = "outerHTML"
        return response
    return render(request, "403_csrf.html", {"message": STALE_FORM}, status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404. Under /api/ a JSON answer like every other API error, so a script that built a
    wrong URL reads what it got wrong instead of an HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": (
            f"No such endpoint: {request.method} {request.path}. The endpoints are listed at "
            "/api/v1/docs."
        )}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400, and 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE: JSON under /api/."""
    if request.path.startswith("/api/"):
        if isinstance(exception, RequestDataTooBig):
            limit = filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
            return JsonResponse({"detail": (
                f"The request body is larger than this server accepts ({limit})."
            )}, status=413)
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


class ApiMethodNotAllowedMiddleware:
    """A wrong method on an API endpoint answers JSON like every other API error (ninja
    answers it in plain text)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 405 and request.path.startswith("/api/") and \
                not response.get("Content-Type", "").startswith("application/json"):
            allowed = response.get("Allow", "")
            replaced = JsonResponse({"detail": (
                f"{request.method} is not allowed on {request.path}: use {allowed}."
            )}, status=405)
            replaced["Allow"] = allowed
            return replaced
        return response
