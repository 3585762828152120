"""One base for the errors the operator raises on purpose.

Why one: every layer's failures end up in the same three places (a condition's reason and
message, an Event, a log line), and every caller asks the same question of them: may trying
again later, unchanged, succeed? So every error the operator raises on purpose says:

- `reason`: one CamelCase word for a condition's ``reason`` and for metrics labels;
- `retryable`: whether the same attempt may succeed later (a site that was down) or not
  (a tampered archive, a refused spec);
- `message`: written for people (what, where, what to do), never holding secret material;
  `safe_message` is that text redacted and cut to what a status field or an Event takes,
  the form every door to the outside uses.
"""

from __future__ import annotations

from cleo_operator.core.redaction import clip

__all__ = ["CleoError"]


class CleoError(Exception):
    """Base of every error the operator raises on purpose."""

    reason: str = "Error"
    """CamelCase, for a condition's reason (a class default; an instance may narrow it)."""
    retryable: bool = True
    """Whether trying again later, unchanged, may succeed."""

    def __init_subclass__(
        cls, *, reason: str | None = None, retryable: bool | None = None, **kwargs: object
    ) -> None:
        """``class Tampered(CryptoError, retryable=False)``: the reason is the class's name
        unless given (or set in the body); `retryable` is inherited unless given."""
        super().__init_subclass__(**kwargs)
        if reason is not None:
            cls.reason = reason
        elif "reason" not in cls.__dict__:
            cls.reason = cls.__name__
        if retryable is not None:
            cls.retryable = retryable

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def safe_message(self) -> str:
        """The message redacted and cut to a condition's or an Event's length."""
        return clip(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"
