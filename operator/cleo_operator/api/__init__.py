"""The API of cleo-operator: pydantic models of every resource's spec and status.

These models are the single source of truth; the CRD YAML is generated from them.
"""
