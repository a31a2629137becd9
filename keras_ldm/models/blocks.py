"""Containers that mirror one diffusers block (resnets, attentions, a resampler) and their helpers."""

import keras

from keras_ldm.layers.attention import AttnBlock
from keras_ldm.layers.resnet import ResBlock


class Stage(keras.layers.Layer):
    """A container of `resnets`, optional `attentions` (one per resnet) and a `resampler`.

    It mirrors one diffusers block so that weights map one to one; the owning model runs it.
    """

    def __init__(self, resnets, attentions=(), resampler=None, **kwargs):
        super().__init__(**kwargs)
        self.resnets = list(resnets)
        self.attentions = list(attentions)
        self.resampler = resampler


def mid_stage(channels, attention=None, name="mid_block", **resblock_kwargs):
    """ResBlock -> attention (if any) -> ResBlock at the lowest resolution."""
    resnets = [ResBlock(channels, name=f"{name}_resnets_{i}", **resblock_kwargs) for i in range(2)]
    return Stage(resnets, [attention] if attention is not None else [], name=name)


def build_stage(stage, in_channels, out_channels, context_dim=None):
    """Builds a stage whose resnets map `in_channels` (then `out_channels`) to `out_channels`."""
    channels = in_channels
    for resnet in stage.resnets:
        resnet.build((None, None, None, channels))
        channels = resnet.out_channels
    for attention in stage.attentions:
        _build_attention(attention, out_channels, context_dim)
    if stage.resampler is not None:
        stage.resampler.build((None, None, None, out_channels))
    stage.built = True


def _build_attention(attention, channels, context_dim=None):
    if isinstance(attention, AttnBlock):
        attention.build((None, None, None, channels))
    else:
        context = None if context_dim is None else (None, None, context_dim)
        attention.build((None, None, None, channels), context)


def apply_attention(attention, h, context=None, training=None):
    """Runs an `AttnBlock` (no context) or a `SpatialTransformer` (with context)."""
    if isinstance(attention, AttnBlock):
        return attention(h)
    return attention(h, context, training=training)


def run_mid_stage(stage, h, emb=None, context=None, training=None):
    """ResBlock -> attention -> ResBlock of a `mid_stage`."""
    h = stage.resnets[0](h, emb, training=training)
    for attention in stage.attentions:
        h = apply_attention(attention, h, context, training)
    return stage.resnets[1](h, emb, training=training)
