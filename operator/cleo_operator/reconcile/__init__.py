"""Level-based reconciliation: one reconciler per kind, desired against observed."""
