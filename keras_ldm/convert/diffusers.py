"""Load diffusers component folders (`config.json` + safetensors) into keras_ldm models, without PyTorch.

Supported `_class_name`s: `UNet2DConditionModel`, `UNet2DModel`, `AutoencoderKL`, `VQModel`.
Tensors are read with the safetensors numpy API and transposed to channels-last Keras layouts.
"""

import json
import os

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.convert.tensors import assign_weights, conv, dense, norm, read_safetensors
from keras_ldm.layers.attention import AttnBlock
from keras_ldm.layers.resnet import ResBlock
from keras_ldm.models.autoencoder import AutoencoderKL, VQAutoencoder
from keras_ldm.models.unet import UNet

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def from_diffusers(path, dtype=None):
    """Returns the keras_ldm model for a diffusers component folder written by `save_pretrained`.

    Args:
        path: folder with `config.json` and `diffusion_pytorch_model.safetensors` (or a sharded index).
        dtype: optional Keras dtype policy for the model (e.g. `"float32"`, `"mixed_bfloat16"`).

    Example:
    >>> unet = from_diffusers("ldm-text2im-large-256/unet")  # doctest: +SKIP
    """
    config = read_config(path)
    tensors = read_tensors(path)
    with random_init_skipped():
        model = model_from_config(config, dtype=dtype)
    load_weights(model, tensors, source=path)
    return model


def read_config(path):
    """The parsed `config.json` of a diffusers component folder (with a clear error otherwise)."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(path) or not os.path.isfile(config_path):
        raise ValueError(
            f"path={path!r} is not a diffusers component folder: expected a directory with config.json "
            f"and {WEIGHTS_NAME} (as written by diffusers' save_pretrained)."
        )
    with open(config_path) as f:
        config = json.load(f)
    if config.get("_class_name") not in TRANSLATORS:
        raise ValueError(
            f"{config_path} describes _class_name={config.get('_class_name')!r}; "
            f"expected one of {sorted(TRANSLATORS)}."
        )
    return config


def read_tensors(path):
    """All tensors of the folder's safetensors file(s), as a dict of numpy arrays."""
    return read_safetensors(path, WEIGHTS_NAME, "diffusers' save_pretrained(safe_serialization=True)")


def model_from_config(config, dtype=None):
    """Builds (with fresh weights) the keras_ldm model that a diffusers `config.json` describes."""
    cls, kwargs = TRANSLATORS[config["_class_name"]](config)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return cls(**kwargs)


# -- config translation ------------------------------------------------------------------------


def _require(config, key, allowed, default):
    value = config.get(key, default)
    if value not in allowed:
        raise ValueError(f"{config['_class_name']} config has {key}={value!r}; keras_ldm supports {allowed}.")
    return value


def _uniform(config, key, default):
    """A per-block setting that keras_ldm keeps as one value (CompVis style)."""
    value = config.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(
                f"{config['_class_name']} config has {key}={value!r}; keras_ldm needs one value for every block."
            )
        value = value[0]
    return value


def _channel_mult(config):
    channels = list(config["block_out_channels"])
    base = channels[0]
    if any(c % base for c in channels):
        raise ValueError(f"block_out_channels={channels} are not multiples of their first entry {base}.")
    return base, [c // base for c in channels]


def _attention_levels(config, marker):
    down = config.get("down_block_types", [""] * len(config["block_out_channels"]))
    up = config.get("up_block_types", [""] * len(config["block_out_channels"]))
    levels = [i for i, kind in enumerate(down) if marker in kind]
    mirrored = [len(up) - 1 - i for i, kind in enumerate(up) if marker in kind]
    if sorted(mirrored) != levels:
        raise ValueError(f"down_block_types={down} and up_block_types={up} do not mirror each other.")
    return levels


def _autoencoder_kwargs(config):
    _require(config, "act_fn", ("silu",), "silu")
    _require(config, "use_quant_conv", (True,), True)
    _require(config, "use_post_quant_conv", (True,), True)
    ch, ch_mult = _channel_mult(config)
    resolution = config.get("sample_size", 256)
    resolution = resolution[0] if isinstance(resolution, (list, tuple)) else resolution
    levels = _attention_levels(config, "Attn")
    return dict(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=config.get("layers_per_block", 1),
        attn_resolutions=[resolution // 2**i for i in levels],
        resolution=resolution,
        z_channels=config["latent_channels"],
        mid_attention=config.get("mid_block_add_attention", True),
        norm_num_groups=config.get("norm_num_groups", 32),
    )


def _translate_autoencoder_kl(config):
    kwargs = _autoencoder_kwargs(config)
    kwargs["embed_dim"] = config["latent_channels"]
    return AutoencoderKL, kwargs


def _translate_vq_model(config):
    _require(config, "norm_type", ("group",), "group")
    kwargs = _autoencoder_kwargs(config)
    kwargs["embed_dim"] = config.get("vq_embed_dim") or config["latent_channels"]
    kwargs["n_embed"] = config["num_vq_embeddings"]
    return VQAutoencoder, kwargs


def _heads(config, model_channels, channel_mult, levels, default):
    """diffusers' head settings -> (num_heads, num_head_channels)."""
    heads = config.get("num_attention_heads") or config.get("attention_head_dim") or default
    if not isinstance(heads, (list, tuple)):
        return heads, None
    widths = [model_channels * channel_mult[i] for i in levels]
    per_level = [heads[i] for i in levels]
    head_dims = {w // h for w, h in zip(widths, per_level)}
    if len(head_dims) == 1:
        return None, head_dims.pop()
    if len(set(per_level)) == 1:
        return per_level[0], None
    raise ValueError(f"attention heads {heads} are neither one count nor one head width for every block.")


def _unet_common(config):
    _require(config, "act_fn", ("silu",), "silu")
    _require(config, "norm_eps", (1e-5,), 1e-5)
    _require(config, "attn_norm_num_groups", (None,), None)
    _require(config, "downsample_padding", (1,), 1)
    _require(config, "center_input_sample", (False,), False)
    _require(config, "time_embedding_type", ("positional",), "positional")
    _require(config, "class_embed_type", (None,), None)
    model_channels, channel_mult = _channel_mult(config)
    return dict(
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        model_channels=model_channels,
        channel_mult=channel_mult,
        num_res_blocks=_uniform(config, "layers_per_block", 2),
        use_scale_shift_norm=_require(
            config, "resnet_time_scale_shift", ("default", "scale_shift"), "default"
        )
        == "scale_shift",
        num_classes=config.get("num_class_embeds"),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        norm_num_groups=config.get("norm_num_groups", 32),
    )


def _translate_unet_2d_condition(config):
    for key, default in (("only_cross_attention", False), ("dual_cross_attention", False)):
        if _uniform(config, key, default):
            raise ValueError(f"UNet2DConditionModel config has {key}=True; keras_ldm does not support it.")
    _require(config, "mid_block_type", ("UNetMidBlock2DCrossAttn",), "UNetMidBlock2DCrossAttn")
    _require(config, "addition_embed_type", (None,), None)
    kwargs = _unet_common(config)
    levels = _attention_levels(config, "CrossAttn")
    kwargs["num_heads"], kwargs["num_head_channels"] = _heads(
        config, kwargs["model_channels"], kwargs["channel_mult"], levels, 8
    )
    kwargs.update(
        attention_resolutions=[2**i for i in levels],
        transformer_depth=_uniform(config, "transformer_layers_per_block", 1),
        context_dim=_uniform(config, "cross_attention_dim", 1280),
    )
    return UNet, kwargs


def _resamples_with_resblocks(config):
    """Whether every resampler of a UNet2DModel is a ResnetBlock2D (CompVis `resblock_updown`)."""
    kinds = set()
    for direction in ("down", "up"):
        blocks = config[f"{direction}_block_types"][:-1]
        setting = _require(config, f"{direction}sample_type", ("conv", "resnet"), "conv")
        for kind in blocks:
            by_name = "Resnet" in kind and "sample" in kind
            kinds.add(by_name or ("Attn" in kind and setting == "resnet"))
    if len(kinds) > 1:
        raise ValueError("UNet2DModel mixes conv and ResnetBlock2D resamplers; keras_ldm needs one kind.")
    return kinds.pop() if kinds else False


def _translate_unet_2d(config):
    _require(config, "add_attention", (True,), True)
    # diffusers drops the mid-block attention's GroupNorm under scale_shift; CompVis never does.
    _require(config, "resnet_time_scale_shift", ("default",), "default")
    kwargs = _unet_common(config)
    levels = _attention_levels(config, "Attn")
    head_dim = config.get("attention_head_dim", 8)
    kwargs.update(
        attention_resolutions=[2**i for i in levels],
        num_heads=None if head_dim else 1,
        num_head_channels=head_dim or None,
        resblock_updown=_resamples_with_resblocks(config),
        dropout=config.get("dropout", 0.0),
    )
    return UNet, kwargs


TRANSLATORS = {
    "AutoencoderKL": _translate_autoencoder_kl,
    "VQModel": _translate_vq_model,
    "UNet2DConditionModel": _translate_unet_2d_condition,
    "UNet2DModel": _translate_unet_2d,
}


# -- weight mapping ----------------------------------------------------------------------------
# Each generator yields (keras_variable, diffusers_key, layout) for one layer.


def _resnet(block, key):
    yield from norm(block.norm1, f"{key}.norm1")
    yield from conv(block.conv1, f"{key}.conv1")
    if block.time_emb_proj is not None:
        yield from dense(block.time_emb_proj, f"{key}.time_emb_proj")
    yield from norm(block.norm2, f"{key}.norm2")
    yield from conv(block.conv2, f"{key}.conv2")
    if block.conv_shortcut is not None:
        yield from conv(block.conv_shortcut, f"{key}.conv_shortcut")


def _attn_block(block, key):
    yield from norm(block.group_norm, f"{key}.group_norm")
    for ours, theirs in (("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v"), ("to_out", "to_out.0")):
        yield from dense(getattr(block, ours), f"{key}.{theirs}")


def _cross_attention(block, key):
    for name in ("to_q", "to_k", "to_v"):
        yield from dense(getattr(block, name), f"{key}.{name}")
    yield from dense(block.to_out, f"{key}.to_out.0")


def _spatial_transformer(block, key):
    yield from norm(block.norm, f"{key}.norm")
    yield from dense(block.proj_in, f"{key}.proj_in")
    for i, tb in enumerate(block.transformer_blocks):
        prefix = f"{key}.transformer_blocks.{i}"
        for n in ("norm1", "norm2", "norm3"):
            yield from norm(getattr(tb, n), f"{prefix}.{n}")
        yield from _cross_attention(tb.attn1, f"{prefix}.attn1")
        yield from _cross_attention(tb.attn2, f"{prefix}.attn2")
        yield from dense(tb.ff.proj, f"{prefix}.ff.net.0.proj")
        yield from dense(tb.ff.out, f"{prefix}.ff.net.2")
    yield from dense(block.proj_out, f"{key}.proj_out")


def _attention(block, key):
    return _attn_block(block, key) if isinstance(block, AttnBlock) else _spatial_transformer(block, key)


def _stage(stage, key, resampler_name):
    for j, resnet in enumerate(stage.resnets):
        yield from _resnet(resnet, f"{key}.resnets.{j}")
    for j, attention in enumerate(stage.attentions):
        yield from _attention(attention, f"{key}.attentions.{j}")
    resampler = stage.resampler
    if isinstance(resampler, ResBlock):
        yield from _resnet(resampler, f"{key}.{resampler_name}.0")
    elif resampler is not None and resampler.conv is not None:
        yield from conv(resampler.conv, f"{key}.{resampler_name}.0.conv")


def _coder(coder, key, blocks_name, resampler_name):
    yield from conv(coder.conv_in, f"{key}conv_in")
    for i, stage in enumerate(getattr(coder, blocks_name)):
        yield from _stage(stage, f"{key}{blocks_name}.{i}", resampler_name)
    yield from _stage(coder.mid_block, f"{key}mid_block", None)
    yield from norm(coder.conv_norm_out, f"{key}conv_norm_out")
    yield from conv(coder.conv_out, f"{key}conv_out")


def _autoencoder_weights(model):
    yield from _coder(model.encoder, "encoder.", "down_blocks", "downsamplers")
    yield from conv(model.quant_conv, "quant_conv")
    if isinstance(model, VQAutoencoder):
        yield model.quantizer.embeddings, "quantize.embedding.weight", "matrix"
    yield from conv(model.post_quant_conv, "post_quant_conv")
    yield from _coder(model.decoder, "decoder.", "up_blocks", "upsamplers")


def _unet_weights(model):
    yield from dense(model.time_embedding.linear_1, "time_embedding.linear_1")
    yield from dense(model.time_embedding.linear_2, "time_embedding.linear_2")
    if model.class_embedding is not None:
        yield model.class_embedding.embeddings, "class_embedding.weight", "matrix"
    yield from conv(model.conv_in, "conv_in")
    for i, stage in enumerate(model.down_blocks):
        yield from _stage(stage, f"down_blocks.{i}", "downsamplers")
    yield from _stage(model.mid_block, "mid_block", None)
    for i, stage in enumerate(model.up_blocks):
        yield from _stage(stage, f"up_blocks.{i}", "upsamplers")
    yield from norm(model.conv_norm_out, "conv_norm_out")
    yield from conv(model.conv_out, "conv_out")


def weight_map(model):
    """(keras variable, diffusers key, layout) for every weight of a keras_ldm model."""
    if isinstance(model, UNet):
        return list(_unet_weights(model))
    if isinstance(model, (AutoencoderKL, VQAutoencoder)):
        return list(_autoencoder_weights(model))
    raise TypeError(f"weight_map() takes a UNet, AutoencoderKL or VQAutoencoder; got {type(model).__name__}.")


def dense_paths(model):
    """`{diffusers module name: path of our Keras kernel variable}` of every Dense layer of `model`: where
    a diffusers LoRA file's `{module}.lora_A.weight` (etc.) goes (see `keras_ldm.convert.diffusers_lora`).

    Example:
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=16)
    >>> paths = dense_paths(unet)
    >>> paths["mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"].split("/", 1)[1]
    'mid_block_attentions_0/transformer_blocks_0/attn2/to_out/kernel'
    """
    return {
        key[: -len(".weight")]: variable.path
        for variable, key, layout in weight_map(model)
        if layout == "dense" and key.endswith(".weight")
    }


# Names that older diffusers releases (and the released CompVis/ldm-* repos) use in attention blocks.
LEGACY_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _legacy_keys(key):
    return [key.replace(f".{new}.", f".{old}.") for new, old in LEGACY_NAMES.items() if f".{new}." in key]


def load_weights(model, tensors, source="tensors"):
    """Assigns diffusers-named numpy `tensors` to `model`; every weight must be present and fit."""
    assign_weights(weight_map(model), tensors, source, aliases=_legacy_keys)
