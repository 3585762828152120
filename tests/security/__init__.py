"""Attackers' tests: each tries one way across a boundary of docs/security.md and shows it fails."""
