"""Declarative dataset-building recipes (TOML), one per dataset; read by ``lrfb build-dataset``."""
