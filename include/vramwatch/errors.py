"""Errors a user can fix. The CLI prints them as one line plus the fix, never as a traceback."""

from vramwatch.redact import redact


class UserError(Exception):
    def __init__(self, message: str, fix: str = "") -> None:
        message, fix = redact(message), redact(fix)  # an error's text goes to logs, alerts and the warehouse
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message
