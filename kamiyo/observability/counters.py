"""Read a counter's total back from the metrics registry (all workers' when multiprocess).

For numbers that exist only as counters (dedup hits, duplicate deliveries): the dashboard
shows them as totals since the service started, the way /metrics does.
"""

from __future__ import annotations

from .metrics import _registry


def counter_total(name: str, **labels: str) -> float:
    """The sum of `name`'s samples (`name` without `_total`) whose labels include `labels`."""
    total = 0.0
    for family in _registry().collect():
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_total" and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
