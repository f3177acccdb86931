"""Lockgate resources."""
