"""P-tuning v2 (Liu et al. 2022): deep prompt tuning. Trainable prefixes at every layer, trained
directly (no reparameterization). Not pruning, not compression."""

from __future__ import annotations

from bench.methods import register
from bench.methods.prefix_tuning import PREFIX_LABELS, PrefixInitConfig, PrefixTuning


class PTuningV2(PrefixTuning):
    name = "ptuning_v2"
    Config = PrefixInitConfig
    label_keys = PREFIX_LABELS
    variant_of = "prefix_tuning"  # the same per-layer prefixes, learned directly
    variant_change = "no MLP reparameterization"
    order = 5
    note = (
        "P-tuning v2 (Liu et al., 2022): deep prompt tuning, i.e. key/value prefixes at every "
        "layer learned directly, without the MLP reparameterisation. It is deep prompt tuning, "
        "not pruning or compression. Initialised from the keys and values of real tokens."
    )
    projection = False


register(PTuningV2())
