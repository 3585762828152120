"""Pure functions from API models to the desired Kubernetes objects: no I/O, no Kopf."""
