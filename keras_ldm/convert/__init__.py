"""Converters from released checkpoints to keras_ldm models."""

from keras_ldm.convert.diffusers import from_diffusers

__all__ = ["from_diffusers"]
