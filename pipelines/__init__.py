"""Lockgate pipelines."""
