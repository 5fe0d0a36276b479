"""Hydra discovers sweepers only in the `hydra_plugins` namespace package: this exposes
bench.sweep.OrderedSweeper there (conf/hydra/sweeper/ordered.yaml names it)."""

from bench.sweep import OrderedSweeper as _OrderedSweeper


class OrderedSweeper(_OrderedSweeper):
    """bench.sweep.OrderedSweeper, registered under the name Hydra looks for."""
