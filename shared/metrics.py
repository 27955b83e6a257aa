"""Metric definitions shared by more than one service (contract section 9).

Labels are bounded: poll ids come from the catalog, never voter ids or addresses.
"""

from __future__ import annotations

# Objectives (1 s to decide, 2 s to count) sit on bucket edges so the SLI is exact.
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300)
