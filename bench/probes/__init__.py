"""lm-eval YAML tasks of the general-ability probe suite (see bench/metrics/probes.py)."""
