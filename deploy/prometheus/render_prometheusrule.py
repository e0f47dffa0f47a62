"""Write prometheusrule.yaml: rules.yml's groups wrapped in a Prometheus Operator
PrometheusRule. rules.yml is the source (compose and promtool read it as is).

    python deploy/prometheus/render_prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "rules.yml"
TARGET = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from rules.yml by render_prometheusrule.py: edit rules.yml, then run
#   python deploy/prometheus/render_prometheusrule.py
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: omniroute
  labels:
    app.kubernetes.io/name: omniroute
spec:
"""


def render(rules_text: str) -> str:
    """rules.yml without its leading comment block, indented under `spec:`."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = [("  " + line) if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main() -> None:
    TARGET.write_text(render(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
