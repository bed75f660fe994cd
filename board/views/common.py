"""What every board view shares: the response to a domain error, login for htmx, the
idempotent run of an action, where a plain form post returns to."""

from collections.abc import Callable
from functools import partial, wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect

from board import idempotency
from board.errors import BoardError, InvalidInput


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def is_partial(request: HttpRequest) -> bool:
    return bool(request.htmx and not request.htmx.boosted)


# --- Errors, in one place -------------------------------------------------------------------


def render_flash(request: HttpRequest, message: str, status: int, *,
                 with_my_work: bool = False) -> HttpResponse:
    """The flash fragment carrying an error, swapped into #flash whatever the form targeted;
    `with_my_work` adds My work, swapped out of band."""
    if with_my_work:
        from board.views.board import board_context  # the board's context renders My work

        context = board_context(request.user) | {"error": message, "my_work_oob": True}
        response = render(request, "board/board.html#action_error", context, status=status)
    else:
        response = render(request, "base.html#flash", {"error": message}, status=status)
    response["HX-Retarget"] = "#flash"
    response["HX-Reswap"] = "outerHTML"
    return response


def login_required_htmx(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`login_required` that also works for htmx: a fragment request would follow a plain
    redirect and swap the login page into a panel, so the browser is told to go there."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if is_partial(request):
            login = f"{resolve_url(settings.LOGIN_URL)}?next={reverse('board:board')}"
            return HttpResponseClientRedirect(login)
        return redirect_to_login(request.get_full_path() if request.method == "GET"
                                 else reverse("board:board"))

    return wrapped


def board_action(view: Callable[..., HttpResponse] | None = None, *,
                 my_work: bool = True) -> Callable[..., HttpResponse]:
    """Wrap a state-changing view: login, and domain errors turned into one response shape.
    `my_work=False` for the forms of pages without My work (the run page): their error is the
    flash alone, and the form keeps what was typed."""
    if view is None:
        return partial(board_action, my_work=my_work)

    @login_required_htmx
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except BoardError as error:
            if is_partial(request):
                # My work is rendered again: a claim lost meanwhile disappears, and its forms
                # get fresh idempotency keys, so a corrected retry (a reason typed after a
                # 422) is a new request rather than a reused key.
                return render_flash(request, error.message, error.status,
                                    with_my_work=my_work)
            messages.error(request, error.message)
            return HttpResponseSeeOther(next_url(request))
        except PermissionDenied as error:
            if not is_partial(request):
                raise
            return render_flash(request, str(error) or "You may not do that.", 403)
        except Http404 as error:
            if not is_partial(request):
                raise
            return render_flash(request, str(error) or "Not found.", 404)

    return wrapped


def next_url(request: HttpRequest, default: str = "") -> str:
    """Where a plain form post returns to: its `next` field when it is ours, else `default`
    (the board when none)."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default or reverse("board:board")


# Form fields that are not part of the request an idempotency key stands for.
NOT_FINGERPRINTED = frozenset({"csrfmiddlewaretoken", "idempotency_key"})


def run_once(request: HttpRequest, action: Callable[[], str]) -> str:
    """Run a board action at most once per idempotency key (the form's hidden field) and
    return its notice; a form sent again gets the first notice, or the first error, back."""
    fields = {
        name: request.POST.getlist(name) for name in request.POST
        if name not in NOT_FINGERPRINTED
    }
    outcome = idempotency.run_once(
        user=request.user,
        key=request.POST.get("idempotency_key", ""),
        fingerprint=idempotency.request_fingerprint(request.method, request.path, fields),
        action=lambda: idempotency.Outcome(200, {"notice": action()}),
    )
    return outcome.body["notice"]


def valid_data(form) -> dict:
    """The cleaned data, or InvalidInput (a 422 through `board_action`) naming the problem."""
    if not form.is_valid():
        problems = "; ".join(
            f"{name}: {' '.join(errors)}" for name, errors in form.errors.items()
        )
        raise InvalidInput(f"The form was not valid ({problems}). Reload the page and retry.")
    return form.cleaned_data
