"""The failover procedure as explicit, timed, resumable steps."""
