"""Lockgate sensors."""
