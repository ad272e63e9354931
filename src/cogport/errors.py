"""The one exception tree of cogport, mapped to HTTP once (in :mod:`cogport.api.problems`).

::

    CogportError                    500  (never raised directly)
    ├── BadRequest                  400
    │   └── InvalidCursor           (a ``cursor`` this server did not write, or one for another list)
    ├── Unauthenticated             401
    ├── Forbidden                   403
    ├── NotFound                    404
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── PredictionNotFound
    │   ├── FileNotFound
    │   └── DestinationNotFound
    ├── Conflict                    409
    │   └── InvalidTransition
    ├── PayloadTooLarge             413
    ├── Unprocessable               422
    │   ├── ValidationFailed        (with invalid_fields)
    │   └── InvalidVersion          ("Invalid version or not permitted")
    ├── RateLimited                 429  (with Retry-After)
    ├── InsufficientStorage         507  (a disk is full: an upload, a result or a row cannot be stored)
    └── BackendUnavailable          503
        ├── SetupFailed             (a version's model cannot start: its setup failed)
        ├── InstanceUnavailable     (a model instance is not in a state to do what was asked)
        ├── StorageUnavailable      (the object storage refused or could not be reached)
        └── DatabaseUnavailable     (the database cannot be reached, or is starting or stopping)

The database driver's own errors are translated where they reach the HTTP layer (:mod:`cogport.db.faults`
says which are an outage or a full disk); their text never reaches a client.

Every error carries ``title`` and ``detail``; the HTTP layer renders them as problem JSON
(``{"title", "detail", "status"}``), the body the official clients read.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CogportError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"
    retry_after: int | None = None
    """Seconds after which trying again may help (the ``Retry-After`` header), when it may."""

    def __init__(self, detail: str | None = None, *, title: str | None = None) -> None:
        self.detail = detail or self.title
        self.instance_title = title or self.title
        super().__init__(self.detail)

    def extra(self) -> dict[str, Any]:
        """Extra members of the problem body."""
        return {}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class BadRequest(CogportError):
    status = 400
    title = "Bad request"


class InvalidCursor(BadRequest):
    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "The cursor is not valid; use the next or previous URL of a page as it is")


class Unauthenticated(CogportError):
    status = 401
    title = "Unauthenticated"


class Forbidden(CogportError):
    status = 403
    title = "Forbidden"


class NotFound(CogportError):
    status = 404
    title = "Not found"

    def __init__(self, detail: str | None = None, *, title: str | None = None) -> None:
        super().__init__(detail or "The requested resource could not be found.", title=title)


class ModelNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class PredictionNotFound(NotFound):
    pass


class FileNotFound(NotFound):
    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "File not found")


class DestinationNotFound(NotFound):
    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "The specified training destination does not exist")


class Conflict(CogportError):
    status = 409
    title = "Conflict"


class InvalidTransition(Conflict):
    title = "Invalid status transition"


class PayloadTooLarge(CogportError):
    status = 413
    title = "Payload too large"


class Unprocessable(CogportError):
    status = 422
    title = "Unprocessable entity"


class ValidationFailed(Unprocessable):
    """Input or body validation failed; one ``- `` line per problem in ``detail``."""

    title = "Input validation failed"

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        """``problems`` is a list of ``(type, field, description)``."""
        self.problems = problems
        detail = "".join(f"- {field}: {description}\n" for _, field, description in problems)
        super().__init__(detail)

    def extra(self) -> dict[str, Any]:
        return {
            "invalid_fields": [
                {"type": kind, "field": field, "description": description} for kind, field, description in self.problems
            ]
        }


class InvalidVersion(Unprocessable):
    title = "Invalid version or not permitted"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail or "The specified version does not exist (or perhaps you don't have permission to use it?)"
        )


class RateLimited(CogportError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(detail or f"Request was throttled. Expected available in {retry_after} second.")


class InsufficientStorage(CogportError):
    """A disk is full (``ENOSPC``, SQLite's ``SQLITE_FULL``, PostgreSQL's ``disk_full``): what was to be
    stored was not. Retrying helps once space has been freed."""

    status = 507
    title = "Insufficient storage"
    retry_after = 30

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "The server's disk is full: nothing more can be stored until space is freed.")


class BackendUnavailable(CogportError):
    status = 503
    title = "Service unavailable"
    retry_after = 1


class SetupFailed(BackendUnavailable):
    """A version's instances cannot start (setup failed repeatedly); its queued work fails with this.

    ``detail`` is the setup error; ``logs`` what the model printed during setup.
    """

    title = "Model setup failed"

    def __init__(self, detail: str | None = None, *, title: str | None = None, logs: str = "") -> None:
        self.logs = logs
        super().__init__(detail, title=title)


class InstanceUnavailable(BackendUnavailable):
    """An operation on a model instance that its state does not allow (e.g. a prediction while STARTING)."""

    title = "Model instance unavailable"


class StorageUnavailable(BackendUnavailable):
    """The object storage (S3) refused a request or could not be reached."""

    title = "Storage unavailable"


class DatabaseUnavailable(BackendUnavailable):
    """The database cannot be reached (down, restarting, unreachable): nothing was done; try again."""

    title = "Database unavailable"
    retry_after = 5

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "The database cannot be reached right now; try again in a few seconds.")
