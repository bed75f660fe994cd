"""Domain errors. Each carries a readable message; views and the API turn them into responses
in one place (409 for conflicts with the current state, 422 for bad input)."""


class BoardError(Exception):
    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAvailable(BoardError):
    """The item is not in the pool (someone else got it, or it waits, or it is finished)."""


class NothingToClaim(BoardError):
    """The pool is empty for this user."""


class ClaimLost(BoardError):
    """A stale fencing token: the claim presented is no longer the live one."""


class WipLimitReached(BoardError):
    """The user already holds as many live claims as allowed."""


class InvalidInput(BoardError):
    status = 422
