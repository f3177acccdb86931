"""Dagster definitions (grown from lockgate.yaml in later modules)."""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()
