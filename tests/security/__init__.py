"""Attackers' tests: each tries one way across a boundary of docs/security.md.

Each shows the attack failing and nothing changed.
"""
