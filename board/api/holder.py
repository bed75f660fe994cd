"""Claims and the holder's actions: claim next or this, complete, abandon, extend."""


from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja import Router

from accounts import access
from accounts.access import Capability
from board import services
from board.api.bodies import (
    answer_once,
    claim_body,
)
from board.api.schemas import (
    ERRORS,
    AbandonIn,
    ClaimNextIn,
    ClaimOut,
    CompleteIn,
    ExtendIn,
    IdempotencyKeyHeader,
)
from board.errors import NothingToClaim
from board.idempotency import Outcome

router = Router()


@router.post("/claims/next", response={200: ClaimOut, 204: None, **ERRORS},
          summary="Claim the next available item (204: nothing to claim)")
def claims_next(request: HttpRequest, payload: ClaimNextIn | None = None,
                idempotency_key: str = IdempotencyKeyHeader):
    user = request.auth
    run_id = payload.run if payload is not None else None
    if not access.team_ids(user, Capability.WORK):
        if run_id is not None:
            access.get_run(user, run_id, Capability.WORK)  # 404, or 403 saying why
        raise PermissionDenied("Only staff of a team can claim its items.")

    def claim() -> Outcome:
        # The claim only takes items of runs the user may work on, so the run is read (for
        # its 404 or 403) only when it found nothing; the refusal rolls the attempt back.
        try:
            item = services.item_claim_next(actor=user, run_id=run_id)
        except NothingToClaim:
            if run_id is not None:
                access.get_run(user, run_id, Capability.WORK)
            return Outcome(204)
        return Outcome(200, claim_body(item))

    return answer_once(request, idempotency_key, claim)


@router.post("/items/{item_id}/claim", response={200: ClaimOut, **ERRORS},
          summary="Claim this item (409 when it is not available)")
def item_claim(request: HttpRequest, item_id: int, idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return answer_once(request, idempotency_key, lambda: Outcome(
        200, claim_body(services.item_claim(item=item, actor=request.auth))
    ))


@router.post("/items/{item_id}/complete", response={200: ClaimOut, **ERRORS},
          summary="Complete the item you hold")
def item_complete(request: HttpRequest, item_id: int, payload: CompleteIn,
                  idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return answer_once(request, idempotency_key, lambda: Outcome(200, claim_body(
        services.item_complete(item_id=item.pk, token=payload.token, actor=request.auth,
                               note=payload.note)
    )))


@router.post("/items/{item_id}/abandon", response={200: ClaimOut, **ERRORS},
          summary="Give the item you hold back, with a reason")
def item_abandon(request: HttpRequest, item_id: int, payload: AbandonIn,
                 idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return answer_once(request, idempotency_key, lambda: Outcome(200, claim_body(
        services.item_abandon(item_id=item.pk, token=payload.token, actor=request.auth,
                              reason=payload.reason)
    )))


@router.post("/items/{item_id}/extend", response={200: ClaimOut, **ERRORS},
          summary="Still on it: extend the lease of the item you hold")
def item_extend(request: HttpRequest, item_id: int, payload: ExtendIn,
                idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return answer_once(request, idempotency_key, lambda: Outcome(200, claim_body(
        services.item_extend(item_id=item.pk, token=payload.token, actor=request.auth)
    )))
