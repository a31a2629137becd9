"""Architecture presets: the released CompVis latent-diffusion models, described as keras_ldm models.

Each `Architecture` builds the randomly initialised keras_ldm model of one released checkpoint (the
weights are not in the package) and says where the released weights live and how to load them:

| preset                    | CompVis model (config)                          | first stage | conditioning               |
|---------------------------|-------------------------------------------------|-------------|----------------------------|
| `ldm_text2im_large_256`   | txt2img-1p4B (`configs/latent-diffusion/txt2img-1p4B-eval.yaml`) | KL-f8 | text: 32-layer LDMBert, cross-attention |
| `ldm_super_resolution_4x` | bsr_sr (`models/ldm/bsr_sr/config.yaml`)        | VQ-f4       | concat the low-res image   |
| `ldm_inpainting_big`      | inpainting_big (`models/ldm/inpainting_big/config.yaml`) | VQ-f4, no attention | concat masked image + mask |
| `ldm_celebahq_256`        | celeba256 (`models/ldm/celeba256/config.yaml`)  | VQ-f4       | unconditional              |
| `ldm_ffhq_256`            | ffhq256 (`models/ldm/ffhq256/config.yaml`)      | VQ-f4       | unconditional              |
| `ldm_lsun_churches_256`   | lsun_churches256 (`models/ldm/lsun_churches256/config.yaml`) | KL-f8 | unconditional   |
| `ldm_lsun_bedrooms_256`   | lsun_beds256 (`models/ldm/lsun_beds256/config.yaml`) | VQ-f4  | unconditional              |
| `ldm_cin256_v2`           | cin256-v2 (`configs/latent-diffusion/cin256-v2.yaml`) | VQ-f4 | ImageNet class, cross-attention (null class 1000) |
| `ldm_semantic_synthesis_256`, `_512` | semantic_synthesis256 / 512 (`models/ldm/semantic_synthesis*/config.yaml`) | VQ-f4 | concat a rescaled one-hot map |
| `ldm_layout2img_openimages_256` | layout2img-openimages256 (`models/ldm/layout2img-openimages256/config.yaml`) | VQ-f4 | layout tokens, 16-layer transformer, cross-attention |
| `kl_f4` ... `kl_f32`, `vq_f4` ... `vq_f16` | `models/first_stage_models/<name>/config.yaml` | - | autoencoders |

Sources of the numbers (all paths inside github.com/CompVis/latent-diffusion): the YAML configs and
`scripts/download_models.sh` / `scripts/download_first_stages.sh` / `README.md` (weights URLs). Where the
stored copy of CompVis/latent-diffusion lacked a file, its verbatim copy in CompVis/stable-diffusion (its
first commit ships latent-diffusion's `models/` and `configs/latent-diffusion/` folders: celeba256,
lsun_beds256, lsun_churches256, inpainting_big, cin256-v2, txt2img-1p4B-eval, kl-f8, kl-f32, vq-f16,
vq-f4-noattn) or in forks of latent-diffusion (al-jshen/latent-diffusion and Sygil-Dev/sygil-webui agree:
ffhq256, kl-f4, kl-f16, vq-f4, vq-f8) was read instead.

Translation of CompVis arguments: `UNetModel` arguments map one to one onto `UNet` (CompVis' `-1` for
"unset" `num_heads` / `num_head_channels` is `None` here; `attention_resolutions` are downsample factors
in both, and a factor the UNet never reaches, like bsr_sr's 16, is simply unused). `ddconfig` maps onto
`AutoencoderKL` / `VQAutoencoder` (`attn_resolutions` are pixel sizes relative to `resolution` in both;
`attn_type: none` is `attn_resolutions=()` plus `mid_attention=False`). `LatentDiffusion` gets the
`linear` schedule (CompVis' default `beta_schedule`, `linspace(sqrt(linear_start), sqrt(linear_end))**2`)
between the config's `linear_start` and `linear_end`, its `loss_type`, and its `scale_factor` (default 1.0).

Example:
>>> from keras_ldm.presets.architectures import ARCHITECTURES, architecture
>>> arch = architecture("ldm_celebahq_256")
>>> arch.kind, arch.weights["hf"]
('latent_diffusion', 'CompVis/ldm-celebahq-256')
>>> sorted(name for name, a in ARCHITECTURES.items() if a.kind == "autoencoder")
['kl_f16', 'kl_f32', 'kl_f4', 'kl_f8', 'vq_f16', 'vq_f4', 'vq_f8']
"""

import dataclasses
from collections.abc import Callable

from keras_ldm.diffusion.schedule import NoiseSchedule
from keras_ldm.models.autoencoder import AutoencoderKL, VQAutoencoder
from keras_ldm.models.conditioners import ClassEmbedder
from keras_ldm.models.latent_diffusion import LatentDiffusion
from keras_ldm.models.layout_encoder import LayoutEncoder
from keras_ldm.models.layout_tokenizer import LayoutTokenizer
from keras_ldm.models.spatial_rescaler import SpatialRescaler
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.unet import UNet

KINDS = ("latent_diffusion", "autoencoder")
COMPVIS_FILES = "https://ommer-lab.com/files/latent-diffusion/"
COMPVIS_REPO = "github.com/CompVis/latent-diffusion"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One released CompVis model: how to build it and where its weights are.

    Attributes:
        name: the preset name, e.g. `"ldm_text2im_large_256"`.
        kind: `"latent_diffusion"` (a `LatentDiffusion`) or `"autoencoder"` (an `AutoencoderKL` or
            `VQAutoencoder`).
        description: one line for preset listings.
        build: a zero-argument callable returning the built, randomly initialised Keras model.
        weights: where the released weights are: `"hf"` (a Hugging Face Hub repository in diffusers format)
            and/or `"url"` (CompVis' download: a `.zip` holding the `.ckpt`, or the `.ckpt` itself) with
            `"config"` (the YAML config of that checkpoint, a path inside github.com/CompVis/latent-diffusion).
        how_to_load: a short instruction for users on getting and loading the weights.
    """

    name: str
    kind: str
    description: str
    build: Callable
    weights: dict
    how_to_load: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Architecture {self.name!r} has kind={self.kind!r}; expected one of {KINDS}.")
        if not ("hf" in self.weights or {"url", "config"} <= set(self.weights)):
            raise ValueError(
                f"Architecture {self.name!r} needs weights with 'hf' or with 'url' and 'config'; "
                f"got {sorted(self.weights)}."
            )


# -- the networks, from the CompVis YAML configs --------------------------------------------------

# `first_stage_config.params` (embed_dim, n_embed) and their `ddconfig`. Every first stage has
# in_channels = out_ch = 3, resolution 256, ch 128, num_res_blocks 2, dropout 0.
_AUTOENCODER = dict(ch=128, num_res_blocks=2, resolution=256, dropout=0.0)
FIRST_STAGES = {
    # models/first_stage_models/kl-f4/config.yaml
    "kl_f4": dict(_AUTOENCODER, ch_mult=(1, 2, 4), attn_resolutions=(), z_channels=3, embed_dim=3),
    # models/first_stage_models/kl-f8/config.yaml (also the first stage of txt2img-1p4B and lsun_churches256)
    "kl_f8": dict(_AUTOENCODER, ch_mult=(1, 2, 4, 4), attn_resolutions=(), z_channels=4, embed_dim=4),
    # models/first_stage_models/kl-f16/config.yaml
    "kl_f16": dict(
        _AUTOENCODER, ch_mult=(1, 1, 2, 2, 4), attn_resolutions=(16,), z_channels=16, embed_dim=16
    ),
    # models/first_stage_models/kl-f32/config.yaml
    "kl_f32": dict(
        _AUTOENCODER, ch_mult=(1, 1, 2, 2, 4, 4), attn_resolutions=(16, 8), z_channels=64, embed_dim=64
    ),
    # models/first_stage_models/vq-f4/config.yaml (also the first stage of bsr_sr, celeba256, ffhq256,
    # lsun_beds256 and cin256-v2)
    "vq_f4": dict(
        _AUTOENCODER, ch_mult=(1, 2, 4), attn_resolutions=(), z_channels=3, embed_dim=3, n_embed=8192
    ),
    # models/first_stage_models/vq-f4-noattn/config.yaml and the first stage of inpainting_big:
    # `attn_type: none`, i.e. no attention anywhere, not even in the middle blocks.
    "vq_f4_noattn": dict(
        _AUTOENCODER,
        ch_mult=(1, 2, 4),
        attn_resolutions=(),
        z_channels=3,
        embed_dim=3,
        n_embed=8192,
        mid_attention=False,
    ),
    # models/first_stage_models/vq-f8/config.yaml
    "vq_f8": dict(
        _AUTOENCODER, ch_mult=(1, 2, 2, 4), attn_resolutions=(32,), z_channels=4, embed_dim=4, n_embed=16384
    ),
    # models/first_stage_models/vq-f16/config.yaml
    "vq_f16": dict(
        _AUTOENCODER,
        ch_mult=(1, 1, 2, 2, 4),
        attn_resolutions=(16,),
        z_channels=8,
        embed_dim=8,
        n_embed=16384,
    ),
}

# `unet_config.params` (num_res_blocks is 2 everywhere; image_size and use_checkpoint do not shape the net).
UNETS = {
    # configs/latent-diffusion/txt2img-1p4B-eval.yaml: num_heads 8, use_spatial_transformer, legacy False
    "text2im_large_256": dict(
        in_channels=4,
        out_channels=4,
        model_channels=320,
        channel_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(4, 2, 1),
        num_heads=8,
        transformer_depth=1,
        context_dim=1280,
    ),
    # models/ldm/bsr_sr/config.yaml: 3 latent + 3 low-res image channels; attention only at factor 8
    # (the listed factor 16 is never reached by 4 levels)
    "super_resolution_4x": dict(
        in_channels=6,
        out_channels=3,
        model_channels=160,
        channel_mult=(1, 2, 2, 4),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        num_head_channels=32,
    ),
    # models/ldm/inpainting_big/config.yaml: 3 latent + 3 masked-image latent + 1 mask channels
    "inpainting_big": dict(
        in_channels=7,
        out_channels=3,
        model_channels=256,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_resolutions=(8, 4, 2),
        num_heads=8,
        resblock_updown=True,
    ),
    # models/ldm/celeba256/config.yaml; ffhq256 and lsun_beds256 have the same unet_config
    "faces_256": dict(
        in_channels=3,
        out_channels=3,
        model_channels=224,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_resolutions=(8, 4, 2),
        num_head_channels=32,
    ),
    # models/ldm/lsun_churches256/config.yaml
    "lsun_churches_256": dict(
        in_channels=4,
        out_channels=4,
        model_channels=192,
        channel_mult=(1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(1, 2, 4, 8),
        num_heads=8,
        use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    # models/ldm/semantic_synthesis256/config.yaml (semantic_synthesis512: the same unet_config): 3 latent
    # + 3 SpatialRescaler channels; attention only in the middle block (the factors 32, 16, 8 are never
    # reached by 3 levels)
    "semantic_synthesis": dict(
        in_channels=6,
        out_channels=3,
        model_channels=128,
        channel_mult=(1, 4, 8),
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        num_heads=8,
    ),
    # models/ldm/layout2img-openimages256/config.yaml: use_spatial_transformer, depth 3, context 512
    "layout2img_openimages_256": dict(
        in_channels=3,
        out_channels=3,
        model_channels=128,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_resolutions=(8, 4, 2),
        num_head_channels=32,
        transformer_depth=3,
        context_dim=512,
    ),
    # configs/latent-diffusion/cin256-v2.yaml: num_heads 1, use_spatial_transformer, context 512
    "cin256_v2": dict(
        in_channels=3,
        out_channels=3,
        model_channels=192,
        channel_mult=(1, 2, 3, 5),
        num_res_blocks=2,
        attention_resolutions=(8, 4, 2),
        num_heads=1,
        transformer_depth=1,
        context_dim=512,
    ),
}

# cond_stage_config of txt2img-1p4B: BERTEmbedder(n_embed=1280, n_layer=32) with its defaults
# vocab_size=30522 (bert-base-uncased word pieces), max_seq_len=77; x-transformers' encoder: 8 heads of 64,
# feed-forward 4 x 1280.
LDM_BERT = dict(
    vocab_size=30522,
    max_position_embeddings=77,
    encoder_layers=32,
    encoder_ffn_dim=5120,
    encoder_attention_heads=8,
    head_dim=64,
    d_model=1280,
)

# cond_stage_config of cin256-v2: ClassEmbedder(n_classes=1001, embed_dim=512): the 1000 ImageNet classes
# and the "no class" label 1000 of classifier-free guidance.
CIN_CLASSES = dict(num_classes=1000, embed_dim=512, null_class=True)
# cond_stage_config of the semantic models: SpatialRescaler(n_stages=2, in_channels=182, out_channels=3)
# (bilinear x0.5 twice, a 1x1 conv without bias): one-hot COCO-Stuff maps (182 classes) at the f=4 size.
SEMANTIC_RESCALER = dict(n_stages=2, method="bilinear", multiplier=0.5, in_channels=182, out_channels=3)
# cond_stage_config of layout2img-openimages256: BERTEmbedder(n_embed=512, n_layer=16, vocab_size=8192,
# max_seq_len=92, use_tokenizer=False) over the layout tokens of OpenImages' 601 boxable classes, 30
# objects and 2 crop tokens (retrieval-augmented-diffusion-models OpenImagesBBoxBase).
LAYOUT_ENCODER = dict(vocab_size=8192, max_length=92, n_embed=512, n_layer=16)
OPENIMAGES_LAYOUT = dict(num_classes=601, max_objects=30, num_tokens=8192, encode_crop=True)


def build_first_stage(name):
    """The randomly initialised first stage `name` of `FIRST_STAGES` (an `AutoencoderKL` or `VQAutoencoder`)."""
    config = dict(FIRST_STAGES[name])
    n_embed = config.pop("n_embed", None)
    if n_embed is None:
        return AutoencoderKL(**config)
    return VQAutoencoder(n_embed=n_embed, **config)


def build_unet(name):
    """The randomly initialised UNet `name` of `UNETS`."""
    return UNet(**UNETS[name])


def _schedule(linear_start, linear_end):
    # CompVis LatentDiffusion defaults: beta_schedule "linear", timesteps 1000
    return NoiseSchedule("linear", 1000, linear_start, linear_end)


def _pipeline(
    unet, first_stage, linear_start, linear_end, num_steps, eta, guidance_scale=None, parts=dict, **options
):
    """A builder of the `LatentDiffusion` of the UNet `unet` and the first stage `first_stage` (names of
    `UNETS` and `FIRST_STAGES`), the linear schedule from `linear_start` to `linear_end`, and generation
    defaults of DDIM at 256x256. `parts()` makes the conditioning models (built after the UNet and first
    stage); `options` go to `LatentDiffusion` as they are."""

    def build():
        models = build_unet(unet), build_first_stage(first_stage)
        defaults = {"num_steps": num_steps}
        if guidance_scale is not None:
            defaults["guidance_scale"] = guidance_scale
        defaults.update(sampler="ddim", image_size=256, eta=eta)
        schedule = _schedule(linear_start, linear_end)
        return LatentDiffusion(*models, **parts(), schedule=schedule, generation_defaults=defaults, **options)

    return build


# README: scripts/txt2img.py --ddim_eta 0.0 --ddim_steps 50 --scale 5.0
_text2im_large_256 = _pipeline(
    "text2im_large_256",
    "kl_f8",
    0.00085,
    0.012,
    num_steps=50,
    eta=0.0,
    guidance_scale=5.0,
    parts=lambda: {"text_encoder": LDMBertEncoder(**LDM_BERT)},
    cross_attention="text",
    tokenizer=None,  # bert-base-uncased's vocabulary comes with the weights (the hub repo's tokenizer)
    scale_factor=0.18215,
    train_text_encoder=True,  # cond_stage_trainable: true
)
# diffusers' LDMSuperResolutionPipeline: 100 steps, eta 0
_super_resolution_4x = _pipeline(
    "super_resolution_4x", "vq_f4", 0.0015, 0.0155, num_steps=100, eta=0.0, concat="low_res", loss_type="l2"
)
# scripts/inpaint.py: --steps 50, DDIM with eta 0
_inpainting_big = _pipeline(
    "inpainting_big",
    "vq_f4_noattn",
    0.0015,
    0.0205,
    num_steps=50,
    eta=0.0,
    concat="masks",
    signed_masks=True,
    loss_type="l1",
)


def _unconditional(unet, first_stage, linear_end, num_steps, eta, loss_type="l2", scale_by_std=False):
    # the DDIM steps and eta of the README's FID table
    return _pipeline(
        unet, first_stage, 0.0015, linear_end, num_steps, eta, loss_type=loss_type, scale_by_std=scale_by_std
    )


# scripts/latent_imagenet_diffusion.ipynb: ddim_steps 20, ddim_eta 0, scale 3 (uncond. label 1000)
_cin256_v2 = _pipeline(
    "cin256_v2",
    "vq_f4",
    0.0015,
    0.0195,
    num_steps=20,
    eta=0.0,
    guidance_scale=3.0,
    parts=lambda: {"class_embedder": ClassEmbedder(**CIN_CLASSES)},
    cross_attention="class",
)


# no sampling settings are published for the semantic models: DDIM 50, eta 0; the map gives the size
_semantic_synthesis = _pipeline(
    "semantic_synthesis",
    "vq_f4",
    0.0015,
    0.0205,
    num_steps=50,
    eta=0.0,
    parts=lambda: {"spatial_encoder": SpatialRescaler(**SEMANTIC_RESCALER)},
    concat="segmentation",
    loss_type="l1",
)
# README.md: "LDM-VQ-4 (200 DDIM steps, eta=0)"
_layout2img_openimages_256 = _pipeline(
    "layout2img_openimages_256",
    "vq_f4",
    0.0015,
    0.0205,
    num_steps=200,
    eta=0.0,
    parts=lambda: {"text_encoder": LayoutEncoder(**LAYOUT_ENCODER), "tokenizer": LayoutTokenizer(**OPENIMAGES_LAYOUT)},
    cross_attention="layout",
    loss_type="l1",
    train_text_encoder=True,  # cond_stage_trainable: true
)


# -- where the weights are ----------------------------------------------------------------------


def _hub_how_to(repo, extra=""):
    return (
        f"`LatentDiffusion.from_preset('hf://{repo}')` downloads the diffusers pipeline when online (then it is "
        f"read from the Hugging Face cache); offline, run `huggingface-cli download {repo} --local-dir DIR` "
        f"on a machine with network access and load it with `LatentDiffusion.from_preset(DIR)`.{extra}"
    )


def _ckpt_how_to(url, config, cls="LatentDiffusion"):
    fetch = f"download {url} and unzip it" if url.endswith(".zip") else f"download {url}"
    return (
        f"The weights are a CompVis checkpoint: {fetch}, get `{config}` from {COMPVIS_REPO}, then "
        f"`{cls}.from_preset('path/to/model.ckpt', config='path/to/{config.rsplit('/', 1)[-1]}')`."
    )


def _latent_diffusion(name, description, build, weights, how_to_load=None):
    if how_to_load is None:
        how_to_load = _ckpt_how_to(weights["url"], weights["config"])
    return Architecture(name, "latent_diffusion", description, build, weights, how_to_load)


def _autoencoder(name, compvis_name, description):
    url = f"{COMPVIS_FILES}{compvis_name}.zip"
    config = f"models/first_stage_models/{compvis_name}/config.yaml"
    cls = "VQAutoencoder" if name.startswith("vq") else "AutoencoderKL"
    return Architecture(
        name,
        "autoencoder",
        description,
        lambda: build_first_stage(name),
        {"url": url, "config": config},
        _ckpt_how_to(url, config, cls),
    )


_PRESETS = [
    _latent_diffusion(
        "ldm_text2im_large_256",
        "Text-to-image, 256x256 (LAION-400M): KL-f8, 872M-parameter UNet, 543M-parameter 32-layer LDMBert "
        "text encoder (CompVis txt2img-1p4B).",
        _text2im_large_256,
        {
            "hf": "CompVis/ldm-text2im-large-256",
            "url": f"{COMPVIS_FILES}nitro/txt2img-f8-large/model.ckpt",
            "config": "configs/latent-diffusion/txt2img-1p4B-eval.yaml",
        },
        _hub_how_to(
            "CompVis/ldm-text2im-large-256",
            " (The hub copy brings the bert-base-uncased tokenizer, which the CompVis .ckpt lacks.)",
        ),
    ),
    _latent_diffusion(
        "ldm_super_resolution_4x",
        "4x super-resolution of photographs (OpenImages, BSR degradations): 64x64 -> 256x256 and up; "
        "VQ-f4, low-res image concatenated (CompVis bsr_sr).",
        _super_resolution_4x,
        {
            "hf": "CompVis/ldm-super-resolution-4x-openimages",
            "url": f"{COMPVIS_FILES}sr_bsr.zip",
            "config": "models/ldm/bsr_sr/config.yaml",
        },
        _hub_how_to("CompVis/ldm-super-resolution-4x-openimages"),
    ),
    _latent_diffusion(
        "ldm_inpainting_big",
        "Inpainting, 256x256 (mask 1 = fill): VQ-f4 without attention, masked image and mask concatenated "
        "(CompVis inpainting_big).",
        _inpainting_big,
        # README.md also links the checkpoint alone: https://heibox.uni-heidelberg.de/f/4d9ac7ea40c64582b7c9/?dl=1
        {"url": f"{COMPVIS_FILES}inpainting_big.zip", "config": "models/ldm/inpainting_big/config.yaml"},
    ),
    _latent_diffusion(
        "ldm_celebahq_256",
        "Unconditional faces, 256x256 (CelebA-HQ, FID 5.11): VQ-f4 (CompVis celeba256).",
        _unconditional("faces_256", "vq_f4", 0.0195, num_steps=200, eta=0.0),
        {
            "hf": "CompVis/ldm-celebahq-256",
            "url": f"{COMPVIS_FILES}celeba.zip",
            "config": "models/ldm/celeba256/config.yaml",
        },
        _hub_how_to("CompVis/ldm-celebahq-256"),
    ),
    _latent_diffusion(
        "ldm_ffhq_256",
        "Unconditional faces, 256x256 (FFHQ, FID 4.98): VQ-f4 (CompVis ffhq256).",
        _unconditional("faces_256", "vq_f4", 0.0195, num_steps=200, eta=1.0),
        {"url": f"{COMPVIS_FILES}ffhq.zip", "config": "models/ldm/ffhq256/config.yaml"},
    ),
    _latent_diffusion(
        "ldm_lsun_churches_256",
        "Unconditional churches, 256x256 (LSUN-Churches, FID 4.02): KL-f8 (CompVis lsun_churches256).",
        _unconditional(
            "lsun_churches_256", "kl_f8", 0.0155, num_steps=400, eta=0.0, loss_type="l1", scale_by_std=True
        ),
        {"url": f"{COMPVIS_FILES}lsun_churches.zip", "config": "models/ldm/lsun_churches256/config.yaml"},
    ),
    _latent_diffusion(
        "ldm_lsun_bedrooms_256",
        "Unconditional bedrooms, 256x256 (LSUN-Bedrooms, FID 2.95): VQ-f4 (CompVis lsun_beds256).",
        _unconditional("faces_256", "vq_f4", 0.0195, num_steps=200, eta=1.0),
        {"url": f"{COMPVIS_FILES}lsun_bedrooms.zip", "config": "models/ldm/lsun_beds256/config.yaml"},
    ),
    _latent_diffusion(
        "ldm_cin256_v2",
        "Class-conditional ImageNet, 256x256 (FID 3.6 with guidance): VQ-f4, class embedding cross-attention, "
        "null class 1000 for classifier-free guidance (CompVis cin256-v2).",
        _cin256_v2,
        {"url": f"{COMPVIS_FILES}nitro/cin/model.ckpt", "config": "configs/latent-diffusion/cin256-v2.yaml"},
    ),
    _latent_diffusion(
        "ldm_semantic_synthesis_256",
        "Semantic synthesis, 256x256 and larger (COCO-Stuff/landscapes maps, 182 classes): VQ-f4, one-hot map "
        "rescaled to 3 channels and concatenated (CompVis semantic_synthesis256).",
        _semantic_synthesis,
        {"url": f"{COMPVIS_FILES}semantic_synthesis256.zip", "config": "models/ldm/semantic_synthesis256/config.yaml"},
    ),
    _latent_diffusion(
        "ldm_semantic_synthesis_512",
        "Semantic synthesis of landscapes, trained on 512x512 crops, samples 512x1024 and larger: VQ-f4, "
        "the same network as the 256 model (CompVis semantic_synthesis512).",
        _semantic_synthesis,
        {"url": f"{COMPVIS_FILES}semantic_synthesis.zip", "config": "models/ldm/semantic_synthesis512/config.yaml"},
    ),
    _latent_diffusion(
        "ldm_layout2img_openimages_256",
        "Layout-to-image, 256x256 (OpenImages boxes of 601 classes as 92 tokens; FID 32.02): VQ-f4, 16-layer layout "
        "transformer, cross-attention (CompVis layout2img-openimages256).",
        _layout2img_openimages_256,
        {"url": f"{COMPVIS_FILES}layout2img_model.zip", "config": "models/ldm/layout2img-openimages256/config.yaml"},
    ),
    _autoencoder("kl_f4", "kl-f4", "KL-regularised autoencoder, f=4, 3 latent channels (rFID 0.27)."),
    _autoencoder("kl_f8", "kl-f8", "KL-regularised autoencoder, f=8, 4 latent channels (rFID 0.90)."),
    _autoencoder("kl_f16", "kl-f16", "KL-regularised autoencoder, f=16, 16 latent channels (rFID 0.87)."),
    _autoencoder("kl_f32", "kl-f32", "KL-regularised autoencoder, f=32, 64 latent channels (rFID 2.04)."),
    _autoencoder("vq_f4", "vq-f4", "VQ-regularised autoencoder, f=4, 8192 codes of 3 channels (rFID 0.58)."),
    _autoencoder("vq_f8", "vq-f8", "VQ-regularised autoencoder, f=8, 16384 codes of 4 channels (rFID 1.14)."),
    _autoencoder(
        "vq_f16", "vq-f16", "VQ-regularised autoencoder, f=16, 16384 codes of 8 channels (rFID 5.15)."
    ),
]

ARCHITECTURES = {arch.name: arch for arch in _PRESETS}


def architecture(name):
    """The `Architecture` called `name`; a `ValueError` listing the valid names otherwise.

    Example:
    >>> architecture("kl_f8").weights["config"]
    'models/first_stage_models/kl-f8/config.yaml'
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture preset {name!r}; expected one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name]
