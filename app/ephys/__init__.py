"""Ephys workspace."""
