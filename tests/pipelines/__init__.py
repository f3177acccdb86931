"""Tests of lockgate.pipelines."""
