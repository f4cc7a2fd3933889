"""Parses a Prometheus/OpenMetrics exposition (stdin) with prometheus_client's own
parsers and prints every sample as JSON, for tests/metrics.rs. Both parsers must
accept the text: the Prometheus text parser and the stricter OpenMetrics one."""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
samples = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        samples.append(
            {"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value}
        )
strict = sum(len(f.samples) for f in openmetrics_families(text))
print(json.dumps({"samples": samples, "openmetrics_samples": strict}))
