"""The only code that talks to the Kubernetes API about children: apply, reads, status."""
