"""Envelope encryption, keyrings, key-encryption-key providers and sealing, on `cryptography` AEADs."""
