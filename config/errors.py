"""Error pages that keep a person mid-incident oriented instead of stranding them."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
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
