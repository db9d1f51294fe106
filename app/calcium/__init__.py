"""Calcium workspace."""
