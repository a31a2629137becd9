"""Converters from released checkpoints to keras_ldm models."""

from keras_ldm.convert.diffusers import from_diffusers
from keras_ldm.convert.ldm_bert import ldm_bert_from_diffusers, tokenizer_from_diffusers

__all__ = ["from_diffusers", "ldm_bert_from_diffusers", "tokenizer_from_diffusers"]
