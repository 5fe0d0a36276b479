"""General-ability metrics of one model state: forgetting (held-out NLL, lm-eval probe suite),
repetition, hallucination, and inference cost. Entry points live in `bench.metrics.general`."""

from bench.metrics.general import evaluate_general, forgetting_summary, measure_inference

__all__ = ["evaluate_general", "forgetting_summary", "measure_inference"]
