"""Curated data-card text per dataset (Markdown); merged with generated statistics."""
