"""The only code that talks to the Kubernetes API about children: server-side apply, reads, status."""
