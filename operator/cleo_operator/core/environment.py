"""The readers of a number of seconds and of a switch from the operator's environment.

Why one: several layers take durations from environment variables (the backup settings,
the operator's recheck intervals), and a wrong value must be refused the same way
everywhere: at start, naming the variable and the value, never silently replaced by the
default (a typo in a deadline would otherwise go unnoticed until it mattered). A switch
(`flag_setting`, e.g. workload tracing) is ``true`` or ``false``, nothing else: ``ture``
must not read as off.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["flag_setting", "seconds_setting"]


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


def flag_setting(env: Mapping[str, str], variable: str, *, default: bool = False) -> bool:
    """`variable`'s value in `env` as a switch (``true`` or ``false``, any case); `default`
    when unset or empty. ValueError names the variable and the value."""
    text = env.get(variable, "").strip()
    if not text:
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValueError(f"{variable}={text!r}: give true or false")
