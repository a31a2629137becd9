"""Converters from released checkpoints to keras_ldm models."""

from keras_ldm.convert.compvis import from_compvis_checkpoint
from keras_ldm.convert.diffusers import from_diffusers
from keras_ldm.convert.ldm_bert import ldm_bert_from_diffusers, tokenizer_from_diffusers
from keras_ldm.convert.pipelines import (
    from_diffusers_pipeline,
    is_diffusers_pipeline,
    pipeline_generation_defaults,
)

__all__ = [
    "from_compvis_checkpoint",
    "from_diffusers",
    "from_diffusers_pipeline",
    "is_diffusers_pipeline",
    "ldm_bert_from_diffusers",
    "pipeline_generation_defaults",
    "tokenizer_from_diffusers",
]
