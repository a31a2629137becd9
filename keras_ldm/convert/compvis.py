"""Load CompVis latent-diffusion checkpoints (a `.ckpt` plus its YAML config) as a `LatentDiffusion`.

The YAML config (`model.params` of `ldm.models.diffusion.ddpm.LatentDiffusion`) builds the networks:
keras_ldm's UNet and autoencoders take CompVis' own arguments. The checkpoint's `state_dict` keys
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`) are renamed to the diffusers
names that `convert/diffusers.py` and `convert/ldm_bert.py` assign, the same renaming diffusers'
conversion scripts do, so both formats share one weight-assignment path.

Conditioning, as CompVis decides it (`conditioning_key`, else `concat_mode`, default concat):
- `cond_stage_config: __is_unconditional__`: unconditional;
- concat + `__is_first_stage__` with `in_channels = 2 c + 1`: inpainting (`concat="masks"`,
  e.g. `inpainting_big`);
- concat + `torch.nn.Identity` with `in_channels = c + 3`: super-resolution (`concat="low_res"`,
  e.g. `bsr_sr`);
- crossattn + `BERTEmbedder`: text (`cross_attention="text"`; the BERT vocabulary is not in the
  checkpoint: pass `tokenizer`, e.g. a folder with `bert-base-uncased`'s `vocab.txt`);
- crossattn + `ClassEmbedder`: class labels (`n_classes: 1001` is read as 1000 classes plus the
  null class 1000 of `cin256-v2`);
- crossattn + `BERTEmbedder(use_tokenizer=False)`: layouts (`cross_attention="layout"`, a `LayoutEncoder`;
  the tokenizer is a `LayoutTokenizer` of OpenImages' 601 classes unless `tokenizer` gives another);
- concat + `SpatialRescaler`: segmentation maps (`concat="segmentation"`, e.g. `semantic_synthesis256`).

PyTorch is needed only to read a `.ckpt` (a pickle); a `.safetensors` state dict reads without it.
"""

import os

import numpy as np

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.backend.torch_checkpoint import read_torch_state_dict
from keras_ldm.convert.diffusers import load_weights
from keras_ldm.convert.ldm_bert import UNUSED_TENSORS, tokenizer_from_diffusers
from keras_ldm.convert.ldm_bert import weight_map as ldm_bert_weight_map
from keras_ldm.convert.tensors import assign_weights, conv
from keras_ldm.diffusion.schedule import NoiseSchedule
from keras_ldm.models.autoencoder import AutoencoderKL, VQAutoencoder
from keras_ldm.models.conditioners import ClassEmbedder
from keras_ldm.models.latent_diffusion import LatentDiffusion
from keras_ldm.models.layout_tokenizer import LayoutTokenizer
from keras_ldm.models.spatial_rescaler import SpatialRescaler
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.tokenizer import LDMBertTokenizer
from keras_ldm.models.unet import UNet

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
COND_STAGE_PREFIX = "cond_stage_model."
EMA_PREFIX = "model_ema."
BERT_EMBEDDER = "ldm.modules.encoders.modules.BERTEmbedder"
CLASS_EMBEDDER = "ldm.modules.encoders.modules.ClassEmbedder"
IDENTITY = "torch.nn.Identity"
SPATIAL_RESCALER = "ldm.modules.encoders.modules.SpatialRescaler"
OPENIMAGES_CLASSES = 601  # layout2img-openimages256's boxable classes (its data module, not its config)
FIRST_STAGES = (
    "ldm.models.autoencoder.AutoencoderKL",
    "ldm.models.autoencoder.VQModel",
    "ldm.models.autoencoder.VQModelInterface",
)


def from_compvis_checkpoint(
    ckpt_path, config_path, use_ema=True, tokenizer=None, weights_only=True, dtype=None
):
    """Returns the `LatentDiffusion` of a CompVis checkpoint and its YAML config.

    Args:
        ckpt_path: the `.ckpt` (a PyTorch pickle with a `state_dict`) or a `.safetensors` state dict.
        config_path: the YAML config the checkpoint was trained with (e.g.
            `models/ldm/inpainting_big/config.yaml`).
        use_ema: load the UNet's moving-average weights when the checkpoint has them (CompVis samples
            inside `ema_scope()`); False loads the trained weights.
        tokenizer: text models only: a tokenizer folder, a `vocab.txt` path or a tokenizer object.
        weights_only: read the `.ckpt` with `torch.load(weights_only=True)`, which refuses arbitrary
            Python objects; set False only for a file you trust (unpickling can run its code).
        dtype: optional Keras dtype policy for the networks.

    Example:
    >>> ckpt, config = "inpainting_big/last.ckpt", "inpainting_big/config.yaml"
    >>> model = from_compvis_checkpoint(ckpt, config)  # doctest: +SKIP
    >>> filled = model.generate({"images": photo, "masks": mask}, num_steps=50)  # doctest: +SKIP
    """
    params = read_compvis_config(config_path)
    state = load_state_dict(ckpt_path, weights_only=weights_only)
    with random_init_skipped():
        first_stage = first_stage_from_config(params["first_stage_config"], dtype, _remap(state))
    load_weights(first_stage, autoencoder_tensors(_strip(state, FIRST_STAGE_PREFIX), first_stage), ckpt_path)
    unet_config = params["unet_config"]["params"]
    with random_init_skipped():
        unet = UNet(**unet_kwargs(unet_config), **_dtype(dtype))
    load_weights(unet, unet_tensors(_unet_state(state, use_ema, ckpt_path), unet_config), ckpt_path)
    conditioning = conditioning_from_config(params, unet, first_stage)
    conditioning.update(_cond_stage(params, state, tokenizer, dtype, ckpt_path, conditioning))
    return LatentDiffusion(
        unet,
        first_stage,
        schedule=schedule_from_config(params),
        parameterization=params.get("parameterization", "eps"),
        loss_type=params.get("loss_type", "l2"),
        l_simple_weight=params.get("l_simple_weight", 1.0),
        original_elbo_weight=params.get("original_elbo_weight", 0.0),
        scale_factor=_scale_factor(params, state),
        **conditioning,
    )


# -- reading ------------------------------------------------------------------------------------


def read_compvis_config(config_path):
    """`model.params` of a CompVis `LatentDiffusion` YAML config (with clear errors otherwise)."""
    try:
        import yaml
    except ImportError as error:
        raise ImportError("Reading a CompVis YAML config needs PyYAML: `pip install pyyaml`.") from error
    if not os.path.isfile(config_path):
        raise ValueError(f"config_path={config_path!r} is not a file; expected a CompVis YAML config.")
    with open(config_path) as f:
        config = yaml.safe_load(f)
    model = config.get("model") if isinstance(config, dict) else None
    target = model.get("target", "") if isinstance(model, dict) else ""
    if not target.endswith(".LatentDiffusion"):
        raise ValueError(
            f"{config_path} has model.target={target!r}; expected ldm.models.diffusion.ddpm.LatentDiffusion."
        )
    params = model.get("params", {})
    for key in ("unet_config", "first_stage_config"):
        if not isinstance(params.get(key), dict):
            raise ValueError(f"{config_path} has no model.params.{key} section.")
    return params


def load_state_dict(ckpt_path, weights_only=True):
    """The checkpoint's `state_dict` as numpy arrays (`.ckpt` through PyTorch, `.safetensors` without)."""
    if not os.path.isfile(ckpt_path):
        raise ValueError(f"ckpt_path={ckpt_path!r} is not a file.")
    if str(ckpt_path).endswith(".safetensors"):
        from safetensors.numpy import load_file

        return load_file(ckpt_path)
    return read_torch_state_dict(ckpt_path, weights_only)


def _strip(state, prefix):
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def _unet_state(state, use_ema, source):
    """The UNet's tensors, the EMA copies (`model_ema.diffusion_model<name without dots>`) if asked."""
    unet = _strip(state, UNET_PREFIX)
    if not unet:
        raise ValueError(f"{source} has no {UNET_PREFIX}* tensors; found e.g. {sorted(state)[:5]}.")
    ema_keys = {key: EMA_PREFIX + ("diffusion_model." + key).replace(".", "") for key in unet}
    present = [key for key in unet if ema_keys[key] in state]
    if not use_ema or not present:
        return unet
    if len(present) != len(unet):
        missing = [ema_keys[key] for key in unet if ema_keys[key] not in state]
        raise ValueError(
            f"{source} has only some EMA weights (missing e.g. {missing[:3]}); pass use_ema=False."
        )
    return {key: state[ema_keys[key]] for key in unet}


def _remap(state):
    used = state.get(FIRST_STAGE_PREFIX + "quantize.used")
    return None if used is None else [int(i) for i in np.asarray(used).reshape(-1)]


def _dtype(dtype):
    return {} if dtype is None else {"dtype": dtype}


def _target(section):
    return section.get("target", "") if isinstance(section, dict) else str(section)


# -- configs ------------------------------------------------------------------------------------


def schedule_from_config(params):
    """The `NoiseSchedule` of CompVis `LatentDiffusion` params (CompVis names, CompVis defaults).

    Example:
    >>> schedule_from_config({"linear_start": 0.0015, "linear_end": 0.0205})
    NoiseSchedule(beta_schedule='linear', num_timesteps=1000, linear_start=0.0015, linear_end=0.0205, \
cosine_s=0.008, v_posterior=0.0)
    """
    return NoiseSchedule(
        params.get("beta_schedule", "linear"),
        int(params.get("timesteps", 1000)),
        params.get("linear_start", 1e-4),
        params.get("linear_end", 2e-2),
        params.get("cosine_s", 8e-3),
        params.get("v_posterior", 0.0),
    )


def _scale_factor(params, state):
    """A `scale_by_std` model keeps the factor it measured as the buffer `scale_factor`."""
    if "scale_factor" in state:
        return float(np.asarray(state["scale_factor"]))
    return float(params.get("scale_factor", 1.0))


def _unsupported(section, key, value, allowed):
    raise ValueError(f"CompVis {section} has {key}={value!r}; keras_ldm supports {allowed}.")


def first_stage_from_config(config, dtype=None, remap=None):
    """The `AutoencoderKL` / `VQAutoencoder` of a CompVis `first_stage_config` section."""
    target, params = _target(config), config.get("params", {})
    ddconfig = params["ddconfig"]
    attn_type = ddconfig.get("attn_type", "linear" if ddconfig.get("use_linear_attn") else "vanilla")
    if attn_type not in ("vanilla", "none"):
        _unsupported("ddconfig", "attn_type", attn_type, ["vanilla", "none"])
    for key, default in (("resamp_with_conv", True), ("give_pre_end", False), ("tanh_out", False)):
        if ddconfig.get(key, default) != default:
            _unsupported("ddconfig", key, ddconfig[key], [default])
    kwargs = dict(
        in_channels=ddconfig["in_channels"],
        out_channels=ddconfig["out_ch"],
        ch=ddconfig["ch"],
        ch_mult=list(ddconfig["ch_mult"]),
        num_res_blocks=ddconfig["num_res_blocks"],
        attn_resolutions=list(ddconfig.get("attn_resolutions", [])) if attn_type == "vanilla" else [],
        resolution=ddconfig["resolution"],
        z_channels=ddconfig["z_channels"],
        embed_dim=params["embed_dim"],
        dropout=ddconfig.get("dropout", 0.0),
        mid_attention=attn_type == "vanilla",
        **_dtype(dtype),
    )
    vq = target.endswith((".VQModel", ".VQModelInterface"))
    if not vq and not target.endswith(".AutoencoderKL"):
        _unsupported("first_stage_config", "target", target, list(FIRST_STAGES))
    if ddconfig.get("double_z", not vq) == vq:
        _unsupported("ddconfig", "double_z", ddconfig["double_z"], [not vq])
    if vq:
        return VQAutoencoder(n_embed=params["n_embed"], remap=remap, **kwargs)
    return AutoencoderKL(**kwargs)


def unet_kwargs(params):
    """keras_ldm `UNet` arguments from CompVis `UNetModel` params (CompVis' -1 means "not set").

    Example:
    >>> kwargs = unet_kwargs({"in_channels": 7, "out_channels": 3, "model_channels": 256,
    ...                       "channel_mult": [1, 2, 3, 4], "num_res_blocks": 2,
    ...                       "attention_resolutions": [8, 4, 2], "num_heads": 8, "resblock_updown": True})
    >>> kwargs["num_heads"], kwargs["num_head_channels"], kwargs["context_dim"]
    (8, None, None)
    """
    for key, allowed in (
        ("dims", (2,)),
        ("n_embed", (None,)),
        ("disable_self_attentions", (None,)),
        ("num_attention_blocks", (None,)),
        ("num_heads_upsample", (-1, params.get("num_heads", -1))),
    ):
        if params.get(key, allowed[0]) not in allowed:
            _unsupported("unet_config", key, params[key], list(allowed))
    for key in ("num_res_blocks", "num_classes", "transformer_depth"):
        if params.get(key) is not None and not isinstance(params[key], int):
            _unsupported("unet_config", key, params[key], "an int")
    spatial = params.get("use_spatial_transformer", False)
    context_dim = params.get("context_dim")
    if isinstance(context_dim, (list, tuple)):
        if len(set(context_dim)) != 1:
            _unsupported("unet_config", "context_dim", context_dim, "one width for every level")
        context_dim = context_dim[0]
    return dict(
        in_channels=params["in_channels"],
        out_channels=params["out_channels"],
        model_channels=params["model_channels"],
        channel_mult=list(params.get("channel_mult", (1, 2, 4, 8))),
        num_res_blocks=params["num_res_blocks"],
        attention_resolutions=list(params["attention_resolutions"]),
        num_heads=None if params.get("num_heads", -1) == -1 else params["num_heads"],
        num_head_channels=None if params.get("num_head_channels", -1) == -1 else params["num_head_channels"],
        transformer_depth=params.get("transformer_depth", 1),
        context_dim=context_dim if spatial else None,
        use_scale_shift_norm=params.get("use_scale_shift_norm", False),
        resblock_updown=params.get("resblock_updown", False),
        num_classes=params.get("num_classes"),
        dropout=params.get("dropout", 0.0),
        conv_resample=params.get("conv_resample", True),
    )


def _conditioning_key(params):
    """CompVis' rule: `conditioning_key`, else concat (`concat_mode`, default True) or crossattn."""
    if params.get("cond_stage_config") == "__is_unconditional__":
        return None
    key = params.get("conditioning_key")
    if key is None:
        key = "concat" if params.get("concat_mode", True) else "crossattn"
    if key not in ("concat", "crossattn"):
        _unsupported("model.params", "conditioning_key", key, ["concat", "crossattn", None])
    return key


def conditioning_from_config(params, unet, first_stage):
    """`cross_attention` / `concat` arguments of `LatentDiffusion` for CompVis params."""
    key = _conditioning_key(params)
    if key is None:
        return {}
    cond = params.get("cond_stage_config")
    if key == "crossattn":
        kinds = {BERT_EMBEDDER: "text", CLASS_EMBEDDER: "class"}
        if _target(cond) not in kinds:
            _unsupported("cond_stage_config", "target", _target(cond), sorted(kinds))
        if _target(cond) == BERT_EMBEDDER and cond.get("params", {}).get("use_tokenizer", True) is False:
            return {"cross_attention": "layout"}  # token ids in, no BERT word pieces: layout tokens
        return {"cross_attention": kinds[_target(cond)]}
    if _target(cond) == SPATIAL_RESCALER:
        return {"concat": "segmentation"}
    latent, extra = first_stage.embed_dim, unet.in_channels - first_stage.embed_dim
    if cond == "__is_first_stage__" and extra == latent + 1:
        return {"concat": "masks", "signed_masks": True}  # as scripts/inpaint.py conditions
    if _target(cond) == IDENTITY and extra == first_stage.in_channels:
        return {"concat": "low_res"}
    raise ValueError(
        f"Concat conditioning with cond_stage_config={_target(cond)!r} and {extra} extra UNet input "
        f"channels ({latent} latent channels): keras_ldm supports inpainting (__is_first_stage__, "
        f"{latent + 1} extra) and super-resolution ({IDENTITY}, {first_stage.in_channels} extra)."
    )


def _cond_stage(params, state, tokenizer, dtype, source, conditioning):
    """The text encoder + tokenizer or the class embedder, with their weights."""
    kind = conditioning.get("cross_attention")
    cond = params.get("cond_stage_config", {})
    tensors = _strip(state, COND_STAGE_PREFIX)
    if kind == "class":
        embedder = class_embedder_from_config(cond.get("params", {}), dtype)
        assign_weights([(embedder.embedding.embeddings, "embedding.weight", "matrix")], tensors, source)
        return {"class_embedder": embedder}
    if kind == "text":
        cond_params = cond.get("params", {})
        with random_init_skipped():
            encoder = LDMBertEncoder(**bert_kwargs(cond_params), **_dtype(dtype))
        entries = ldm_bert_weight_map(encoder)
        assign_weights(entries, bert_tensors(tensors), source, unused=UNUSED_TENSORS)
        length = cond_params.get("max_seq_len", 77)
        return {"text_encoder": encoder, "tokenizer": _tokenizer(tokenizer, length)}
    if kind == "layout":
        return _layout_stage(cond.get("params", {}), tensors, tokenizer, dtype)
    if conditioning.get("concat") == "segmentation":
        rescaler = spatial_rescaler_from_config(cond.get("params", {}), dtype)
        if rescaler.channel_mapper is not None:
            assign_weights(list(conv(rescaler.channel_mapper, "channel_mapper")), tensors, source)
        return {"spatial_encoder": rescaler}
    return {}


def _layout_stage(params, tensors, tokenizer, dtype):
    """The `LayoutEncoder` (with its weights) and `LayoutTokenizer` of a layout checkpoint."""
    from keras_ldm.convert.layout_encoder import layout_encoder_from_compvis

    encoder = layout_encoder_from_compvis(tensors, params, prefix="", dtype=dtype)
    if tokenizer is None:
        length = params.get("max_seq_len", 77)
        tokenizer = LayoutTokenizer(
            OPENIMAGES_CLASSES, max_objects=(length - 2) // 3, num_tokens=params.get("vocab_size", 8192)
        )
    positions = encoder.layout_architecture["max_length"]
    if not isinstance(tokenizer, LayoutTokenizer) or tokenizer.sequence_length > positions:
        raise ValueError(
            f"A layout checkpoint takes tokenizer=None or a LayoutTokenizer of at most {positions} tokens; "
            f"got {tokenizer!r:.80}."
        )
    return {"text_encoder": encoder, "tokenizer": tokenizer}


def spatial_rescaler_from_config(params, dtype=None):
    """CompVis `SpatialRescaler(n_stages=1, method='bilinear', multiplier=0.5, in_channels=3,
    out_channels=None, bias=False)` with the config's `params`.

    Example:
    >>> spatial_rescaler_from_config({"n_stages": 2, "in_channels": 182, "out_channels": 3}).count_params()
    546
    """
    names = ("n_stages", "method", "multiplier", "in_channels", "out_channels", "bias")
    unknown = sorted(set(params) - set(names))
    if unknown:
        _unsupported("cond_stage_config.params", unknown[0], params[unknown[0]], list(names))
    rescaler = SpatialRescaler(**params, **_dtype(dtype))
    rescaler.build()
    return rescaler


def class_embedder_from_config(params, dtype=None):
    """CompVis `ClassEmbedder(embed_dim, n_classes)`; 1001 classes = 1000 + the null class."""
    n_classes = params.get("n_classes", 1000)
    null_class = n_classes == 1001
    embedder = ClassEmbedder(n_classes - int(null_class), params["embed_dim"], null_class, **_dtype(dtype))
    embedder.build()
    return embedder


def bert_kwargs(params):
    """`LDMBertEncoder` arguments of a CompVis `BERTEmbedder` (x-transformers: 8 heads of 64, ff x4).

    Example:
    >>> bert_kwargs({"n_embed": 1280, "n_layer": 32})["encoder_ffn_dim"]
    5120
    """
    return dict(
        vocab_size=params.get("vocab_size", 30522),
        max_position_embeddings=params.get("max_seq_len", 77),
        encoder_layers=params["n_layer"],
        encoder_ffn_dim=4 * params["n_embed"],
        encoder_attention_heads=8,
        head_dim=64,
        d_model=params["n_embed"],
    )


def _tokenizer(tokenizer, length):
    if tokenizer is None:
        raise ValueError(
            "This checkpoint conditions on text (BERTEmbedder) but its BERT vocabulary is not in it: pass "
            "tokenizer= a folder or vocab.txt of bert-base-uncased (or a tokenizer object)."
        )
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    if os.path.isdir(tokenizer):
        return tokenizer_from_diffusers(str(tokenizer), sequence_length=length)
    return LDMBertTokenizer(str(tokenizer), sequence_length=length)


# -- key renaming: CompVis -> diffusers ------------------------------------------------------------

RESNET_NAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
AUTOENCODER_ATTENTION_NAMES = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}


def _rename_module(suffix, names):
    """`suffix` (e.g. `in_layers.0.weight`) with its module path renamed by `names`."""
    module, _, parameter = suffix.rpartition(".")
    return f"{names.get(module, module)}.{parameter}"


def _unet_prefixes(params):
    """CompVis UNet module -> (diffusers module, kind, width) for every module that holds weights."""
    levels, blocks = len(params.get("channel_mult", (1, 2, 4, 8))), params["num_res_blocks"]
    widths = [params["model_channels"] * m for m in params.get("channel_mult", (1, 2, 4, 8))]
    attention = {level for level in range(levels) if 2**level in params["attention_resolutions"]}
    resample = "resnet" if params.get("resblock_updown", False) else "same"
    table = {
        "time_embed.0": ("time_embedding.linear_1", "same", None),
        "time_embed.2": ("time_embedding.linear_2", "same", None),
        "label_emb": ("class_embedding", "same", None),
        "input_blocks.0.0": ("conv_in", "same", None),
        "middle_block.0": ("mid_block.resnets.0", "resnet", None),
        "middle_block.1": ("mid_block.attentions.0", "attention", widths[-1]),
        "middle_block.2": ("mid_block.resnets.1", "resnet", None),
        "out.0": ("conv_norm_out", "same", None),
        "out.2": ("conv_out", "same", None),
    }
    index = 1
    for level in range(levels):
        for j in range(blocks):
            table[f"input_blocks.{index}.0"] = (f"down_blocks.{level}.resnets.{j}", "resnet", None)
            if level in attention:
                table[f"input_blocks.{index}.1"] = (
                    f"down_blocks.{level}.attentions.{j}",
                    "attention",
                    widths[level],
                )
            index += 1
        if level < levels - 1:
            kind = "resnet" if resample == "resnet" else "downsample"
            table[f"input_blocks.{index}.0"] = (f"down_blocks.{level}.downsamplers.0", kind, None)
            index += 1
    for up, level in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            index = up * (blocks + 1) + j
            table[f"output_blocks.{index}.0"] = (f"up_blocks.{up}.resnets.{j}", "resnet", None)
            if level in attention:
                table[f"output_blocks.{index}.1"] = (
                    f"up_blocks.{up}.attentions.{j}",
                    "attention",
                    widths[level],
                )
            if level > 0 and j == blocks:
                position = 2 if level in attention else 1
                table[f"output_blocks.{index}.{position}"] = (f"up_blocks.{up}.upsamplers.0", resample, None)
    return table


def _split_qkv(qkv, heads, new_order):
    """CompVis' fused `qkv` weight `(3C, C, 1)` or bias `(3C,)` -> q, k, v (`(C, C, 1)` / `(C,)` each).

    The legacy order (`QKVAttentionLegacy`, CompVis' default) interleaves by head:
    `[q_0, k_0, v_0, q_1, k_1, v_1, ...]`; `use_new_attention_order` stacks `[q, k, v]`.
    """
    channels, rest = qkv.shape[0] // 3, qkv.shape[1:]
    if new_order:
        return list(qkv.reshape(3, channels, *rest))
    grouped = qkv.reshape(heads, 3, channels // heads, *rest)
    return [grouped[:, i].reshape(channels, *rest) for i in range(3)]


def _attention_tensors(suffix, value, prefix, heads, new_order):
    """Diffusers tensors of one CompVis `AttentionBlock` parameter (or one SpatialTransformer one)."""
    module, _, parameter = suffix.rpartition(".")
    if heads is None:  # a SpatialTransformer: CompVis and diffusers share the names
        return {f"{prefix}.{suffix}": value}
    if module == "qkv":
        parts = zip(("to_q", "to_k", "to_v"), _split_qkv(value, heads, new_order), strict=True)
        return {f"{prefix}.{name}.{parameter}": part for name, part in parts}
    names = {"norm": "group_norm", "proj_out": "to_out.0"}
    return {f"{prefix}.{names.get(module, module)}.{parameter}": value}


def _match_prefix(key, table):
    parts = key.split(".")
    for size in (3, 2, 1):
        prefix = ".".join(parts[:size])
        if prefix in table:
            return prefix, ".".join(parts[size:])
    raise ValueError(f"UNet tensor {key!r} does not fit the UNet that the config describes.")


def unet_tensors(state, params):
    """CompVis UNet tensors (keys without `model.diffusion_model.`) renamed to diffusers' names."""
    table = _unet_prefixes(params)
    spatial = params.get("use_spatial_transformer", False)
    new_order = params.get("use_new_attention_order", False)
    tensors = {}
    for key, value in state.items():
        prefix, suffix = _match_prefix(key, table)
        target, kind, width = table[prefix]
        if kind == "attention":
            heads = None if spatial else _heads(params, width)
            tensors.update(_attention_tensors(suffix, value, target, heads, new_order))
        elif kind == "resnet":
            tensors[f"{target}.{_rename_module(suffix, RESNET_NAMES)}"] = value
        elif kind == "downsample":
            tensors[f"{target}.{suffix.replace('op.', 'conv.', 1)}"] = value
        else:
            tensors[f"{target}.{suffix}" if suffix else target] = value
    return tensors


def _heads(params, width):
    head_channels = params.get("num_head_channels", -1)
    return params["num_heads"] if head_channels == -1 else width // head_channels


def _autoencoder_key(key, levels):
    """One CompVis Encoder/Decoder key renamed to diffusers' (`None` for training-only tensors)."""
    parts = key.split(".")
    if parts[0] in ("loss",) or key == "quantize.used":
        return None
    if parts[0] not in ("encoder", "decoder"):
        return key
    coder, rest = parts[0], parts[1:]
    if rest[0] in ("down", "up"):
        level = int(rest[1])
        stage = f"{coder}.{rest[0]}_blocks.{level if rest[0] == 'down' else levels - 1 - level}"
        if rest[2] == "block":
            return f"{stage}.resnets.{rest[3]}." + _rename_module(
                ".".join(rest[4:]), {"nin_shortcut": "conv_shortcut"}
            )
        if rest[2] == "attn":
            return f"{stage}.attentions.{rest[3]}." + _rename_module(
                ".".join(rest[4:]), AUTOENCODER_ATTENTION_NAMES
            )
        return f"{stage}.{rest[2]}rs.0." + ".".join(rest[3:])  # downsample/upsample -> ...samplers.0
    if rest[0] == "mid":
        module = {"block_1": "resnets.0", "attn_1": "attentions.0", "block_2": "resnets.1"}[rest[1]]
        names = AUTOENCODER_ATTENTION_NAMES if rest[1] == "attn_1" else {"nin_shortcut": "conv_shortcut"}
        return f"{coder}.mid_block.{module}." + _rename_module(".".join(rest[2:]), names)
    return f"{coder}.{'conv_norm_out' if rest[0] == 'norm_out' else rest[0]}." + ".".join(rest[1:])


def autoencoder_tensors(state, model):
    """CompVis first-stage tensors (keys without `first_stage_model.`) renamed to diffusers' names.

    Training-only tensors (the `loss.*` discriminator and LPIPS weights) are dropped.
    """
    levels = len(model.encoder.ch_mult)
    renamed = {_autoencoder_key(key, levels): value for key, value in state.items()}
    renamed.pop(None, None)
    return renamed


BERT_NAMES = {
    "0": "self_attn_layer_norm",
    "1.to_q": "self_attn.q_proj",
    "1.to_k": "self_attn.k_proj",
    "1.to_v": "self_attn.v_proj",
    "1.to_out": "self_attn.out_proj",
}
BERT_FF_NAMES = {"0": "final_layer_norm", "1.net.0.0": "fc1", "1.net.2": "fc2"}


def bert_tensors(state):
    """x-transformers `BERTEmbedder` tensors (keys without `cond_stage_model.`) in `LDMBertModel` names.

    `transformer.attn_layers.layers` alternate attention (even) and feed-forward (odd) blocks, each
    `[LayerNorm, block]`, as diffusers' `convert_ldm_bert_checkpoint` reads them.
    """
    tensors = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("transformer.attn_layers.layers."):
            index, module, parameter = int(parts[3]), ".".join(parts[4:-1]), parts[-1]
            names = BERT_NAMES if index % 2 == 0 else BERT_FF_NAMES
            if module not in names:
                raise ValueError(f"BERTEmbedder tensor {key!r} is not one keras_ldm knows.")
            tensors[f"model.layers.{index // 2}.{names[module]}.{parameter}"] = value
        else:
            names = {
                "transformer.token_emb.weight": "model.embed_tokens.weight",
                "transformer.pos_emb.emb.weight": "model.embed_positions.weight",
                "transformer.norm.weight": "model.layer_norm.weight",
                "transformer.norm.bias": "model.layer_norm.bias",
                "transformer.to_logits.weight": "to_logits.weight",
                "transformer.to_logits.bias": "to_logits.bias",
            }
            tensors[names.get(key, key)] = value
    return tensors
