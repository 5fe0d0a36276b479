"""P-tuning v2 (Liu et al. 2022): deep prompt tuning. Trainable prefixes at every layer, trained
directly (no reparameterization). Not pruning, not compression."""

from __future__ import annotations

from bench.methods import register
from bench.methods.prefix_tuning import PrefixTuning


class PTuningV2(PrefixTuning):
    name = "ptuning_v2"
    projection = False


register(PTuningV2())
