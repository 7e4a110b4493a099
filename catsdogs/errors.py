"""The one error type for inputs and requests the service will not take."""

from http import HTTPStatus

TOO_LARGE = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class RefusedInput(Exception):
    """An input that will not be classified: a short machine-readable `reason`, a message a
    person can act on, the HTTP status a client gets for it (400 unless said otherwise) and,
    for refusals that pass (overload, rate limits), when to try again."""

    def __init__(
        self,
        reason: str,
        message: str,
        status: int = HTTPStatus.BAD_REQUEST,
        retry_after_s: int | None = None,
    ):
        super().__init__(message)
        self.reason = reason
        self.status = int(status)
        self.retry_after_s = retry_after_s
