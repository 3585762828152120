"""The one reader of a number of seconds from the operator's environment.

Why one: several layers take durations from environment variables (the backup settings,
the operator's recheck intervals), and a wrong value must be refused the same way
everywhere: at start, naming the variable and the value, never silently replaced by the
default (a typo in a deadline would otherwise go unnoticed until it mattered).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["seconds_setting"]


def seconds_setting(env: Mapping[str, str], variable: str, *, default: float) -> float:
    """`variable`'s value in `env` as seconds (above 0, finite); `default` when unset or
    empty. ValueError names the variable and the value."""
    text = env.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{variable}={text!r}: give a number of seconds above 0, e.g. {default:g}")
    return value
