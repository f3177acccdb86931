"""Tests of lockgate.resources."""
