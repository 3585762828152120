"""Prometheus metrics, structured logging and error sanitizing."""
