"""The backup runner, storage backends, retention, restore and verification."""
