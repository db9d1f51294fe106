"""Morphology workspace."""
