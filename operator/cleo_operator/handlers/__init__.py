"""The only Kopf-aware code: thin handlers that parse bodies and call the reconcilers."""
