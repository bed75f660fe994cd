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
            return healthz(strict="strict" in request.GET)
        return self.get_response(request)


def healthz(*, strict: bool = False) -> JsonResponse:
    """503 when this web process cannot serve: the database does not answer. A broker that
    is down or a late sweep is reported ("degraded") but answers 200: staff can still claim,
    complete and abandon (a lapsed claim is taken back at claim time), so a load balancer
    must not take every web process out of rotation for it. `?strict` answers 503 for those
    too, for monitoring that should page someone."""
    report = health_report()
    serving = report["database"] == "ok"
    timers = report["broker"] == "ok" and report["sweep"] != "late"
    status = "ok" if serving and timers else ("degraded" if serving else "fail")
    healthy = serving and (timers or not strict)
    response = JsonResponse({"status": status, **report}, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response
