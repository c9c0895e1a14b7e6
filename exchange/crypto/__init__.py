"""Encryption (age) and signatures (Ed25519): the only modules that touch key material."""
