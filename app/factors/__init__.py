"""Factors workspace."""
