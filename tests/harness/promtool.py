"""promtool, the toolchain's: built from Prometheus's Go module (e2e/toolchain/promtool), the
release users run, rather than a distribution's older package."""

from __future__ import annotations

from e2e.cluster import build_toolchain

__all__ = ["promtool"]


def promtool() -> str:
    """The path of the toolchain's promtool (built on first use, cached after)."""
    binary = build_toolchain() / "promtool"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run e2e/toolchain/build.sh")
    return str(binary)
