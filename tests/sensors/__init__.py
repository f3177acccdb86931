"""Tests of lockgate.sensors."""
