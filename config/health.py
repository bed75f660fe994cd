from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from board.health import health_report

HEALTHZ_PATH = "/healthz"


class HealthzMiddleware:
    """Answers /healthz before host validation and the HTTPS redirect: load balancers and
    container health checks call it by IP address over plain HTTP."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.rstrip("/") == HEALTHZ_PATH and request.method in ("GET", "HEAD"):
            return healthz()
        return self.get_response(request)


def healthz() -> JsonResponse:
    """200 when the database and broker answer and the sweep is on time, else 503."""
    healthy, report = health_report()
    response = JsonResponse(
        {"status": "ok" if healthy else "fail", **report}, status=200 if healthy else 503
    )
    response["Cache-Control"] = "no-store"
    return response
