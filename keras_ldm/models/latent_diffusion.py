"""`LatentDiffusion`: a frozen first stage, a UNet, a conditioner and a noise schedule, trained with `fit()`.

The training path reads top to bottom in `call`:
images -> `first_stage.encode` -> x scale_factor -> `schedule.q_sample(z, t, eps)` ->
`unet(z_t [+ concat], t, context)` -> (prediction, target); `compute_loss` turns them into the loss.
"""

import collections.abc
import contextlib
import os
import re

import keras
import numpy as np
from keras import ops

from keras_ldm.backend.distribution import per_replica_loss
from keras_ldm.backend.ema import ema_train_step
from keras_ldm.backend.traced_call import kept_traced_call
from keras_ldm.diffusion.schedule import PARAMETERIZATIONS, NoiseSchedule, check_choice
from keras_ldm.models import generation_inputs as checks
from keras_ldm.models.autoencoder import AutoencoderKL
from keras_ldm.models.conditioners import images_to_unit_range, masked_images, resize_to
from keras_ldm.models.generation import GENERATION_DEFAULTS, GenerationMixin
from keras_ldm.models.layout_tokenizer import LayoutTokenizer
from keras_ldm.models.preset_mixin import PresetMixin, write_preset
from keras_ldm.training import lora
from keras_ldm.training.ema import ExponentialMovingAverage
from keras_ldm.training.schedules import LinearWarmup
from keras_ldm.training.seeds import saved_seed_generator

CROSS_ATTENTION_SOURCES = (None, "text", "class", "layout")
LAYOUT_KEYS = ("boxes", "box_labels", "num_boxes")  # a layout batch: tokenized to `token_ids` by `fit`
CONCAT_SOURCES = (None, "low_res", "masks", "segmentation")
LOSS_TYPES = ("l1", "l2")


@keras.saving.register_keras_serializable(package="keras_ldm")
class LatentDiffusion(PresetMixin, GenerationMixin, keras.Model):
    """A latent diffusion model that trains with `model.fit()` on dict batches, on every backend.

    Batches are dicts: `images` (uint8 or floats in [-1, 1], `(B, H, W, 3)`) plus, by conditioning,
    `token_ids` (text; `prompts` strings are tokenized by `fit` when a `tokenizer` is set), `labels`
    (class), `low_res` (super-resolution: the low-resolution image, resized to the latent size and
    concatenated), `masks` (inpainting: 1 marks the region to fill; the encoded masked image and
    the mask at latent size are concatenated, `in_channels = 2 c + 1`) or `segmentation` (semantic
    synthesis: integer label maps `(B, H, W)` or one-hot floats `(B, H, W, classes)`, encoded to the
    latent size by `spatial_encoder`, trained jointly, and concatenated); layout models take `boxes`
    and `box_labels` (per-image lists, or padded arrays with `num_boxes`; tokenized by `fit`) or
    `token_ids`.

    Args:
        unet: the denoiser, a `keras_ldm.models.UNet`.
        first_stage: an `AutoencoderKL` or `VQAutoencoder`; frozen.
        cross_attention: `None`, `"text"` (needs `text_encoder`), `"class"` (needs `class_embedder`) or
            `"layout"` (needs `text_encoder`, e.g. a `LayoutEncoder`, and `tokenizer`, a `LayoutTokenizer`).
        concat: `None`, `"low_res"`, `"masks"` or `"segmentation"`; both knobs together give CompVis'
            `hybrid`.
        text_encoder: a Keras model mapping token ids `(B, L)` to a context `(B, L, context_dim)`: of prompts,
            or of layout tokens (CompVis uses one `BERTEmbedder` class for both).
        tokenizer: maps strings to token ids inside `tf.data` (e.g. a keras-hub tokenizer); for layouts a
            `LayoutTokenizer`, mapping `boxes` and `box_labels` to layout tokens.
        class_embedder: a `ClassEmbedder` (its null class is the unconditional label).
        spatial_encoder: with `concat="segmentation"`, the trained encoder of the maps to the latent
            size, e.g. `SpatialRescaler(n_stages=2, in_channels=classes, out_channels=3)` at f=4 (CompVis'
            `cond_stage_model` of the semantic-synthesis models, `cond_stage_trainable`).
        schedule: a `NoiseSchedule` (default: CompVis' `linear`, 0.00085 to 0.012, 1000 steps).
        parameterization: what the UNet predicts: `"eps"`, `"x0"` or `"v"`.
        loss_type: `"l2"` or `"l1"`.
        l_simple_weight, original_elbo_weight: CompVis' loss mix (see `NoiseSchedule.loss_weights`).
        p_uncond: probability of dropping the condition (empty prompt, null class, zero image) so
            that classifier-free guidance works.
        signed_masks: inpainting only: condition as CompVis' released `inpainting_big` model does
            (`scripts/inpaint.py`): the masked image with its hole at -1 (black) and the mask channel
            in ±1 (+1 = fill). False (default): the hole at 0 and a 0/1 mask channel, as the shipped
            `photo_inpaint` preset was trained.
        scale_factor: latents are multiplied by it (0.18215 for the released KL-f8 models).
        scale_by_std: replace `scale_factor` by 1 / std of the first training batch's latents,
            computed once and saved with the model.
        train_text_encoder: train the text encoder jointly (CompVis) or keep it frozen.
        ema_decay: keep an exponential moving average of the trained weights (CompVis: 0.9999, with
            the warm-up `min(decay, (1+n)/(10+n))`); `ema_scope()` swaps it in, e.g. for sampling.
        seed: seed of the generator behind t, the noise, condition dropout and posterior samples.
        generation_defaults: `generate()` options used when a call does not give them, e.g.
            `{"num_steps": 50, "guidance_scale": 4.0, "sampler": "ddim", "eta": 0.0, "image_size": 256}`
            (saved with presets; `image_size` is the default height and width).

    Example:
    >>> from keras_ldm.models import AutoencoderKL, UNet
    >>> vae = AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4)
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
    ...             num_res_blocks=1, attention_resolutions=(), num_heads=1)
    >>> ldm = LatentDiffusion(unet, vae, seed=0)
    >>> ldm.compile()
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("uint8")
    >>> history = ldm.fit({"images": images}, batch_size=2, epochs=1, verbose=0)
    >>> len(history.history["loss"])
    1
    """

    def __init__(
        self,
        unet,
        first_stage,
        cross_attention=None,
        concat=None,
        text_encoder=None,
        tokenizer=None,
        class_embedder=None,
        spatial_encoder=None,
        schedule=None,
        parameterization="eps",
        loss_type="l2",
        l_simple_weight=1.0,
        original_elbo_weight=0.0,
        p_uncond=0.0,
        signed_masks=False,
        scale_factor=1.0,
        scale_by_std=False,
        train_text_encoder=True,
        ema_decay=None,
        seed=None,
        generation_defaults=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("cross_attention", cross_attention, CROSS_ATTENTION_SOURCES)
        check_choice("concat", concat, CONCAT_SOURCES)
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        check_choice("loss_type", loss_type, LOSS_TYPES)
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond={p_uncond!r}; expected a probability in [0, 1].")
        self.unet, self.first_stage = unet, first_stage
        self.cross_attention, self.concat = cross_attention, concat
        self.text_encoder, self.tokenizer, self.class_embedder = text_encoder, tokenizer, class_embedder
        self.spatial_encoder = spatial_encoder
        self.schedule = schedule if schedule is not None else NoiseSchedule("linear", 1000, 0.00085, 0.012)
        self.parameterization, self.loss_type = parameterization, loss_type
        self.l_simple_weight, self.original_elbo_weight = l_simple_weight, original_elbo_weight
        self.p_uncond, self.scale_by_std, self.signed_masks = p_uncond, scale_by_std, bool(signed_masks)
        self.train_text_encoder, self.seed, self.ema_decay = train_text_encoder, seed, ema_decay
        self.generation_defaults = _check_generation_defaults(
            generation_defaults, self.schedule.num_timesteps
        )
        self._check_components()
        _set_trainable(first_stage, False)
        if text_encoder is not None:
            _set_trainable(text_encoder, train_text_encoder)
        for encoder in (class_embedder, spatial_encoder):
            if encoder is not None and not encoder.built:
                encoder.build()
        # Not tracked as a Keras seed generator: its state is the saved weight "seed_generator_state".
        object.__setattr__(self, "seed_generator", saved_seed_generator(self, seed))
        self.scale_factor = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(scale_factor),
            trainable=False,
            name="scale_factor",
        )
        self.scale_factor_ready = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(0.0 if scale_by_std else 1.0),
            trainable=False,
            name="scale_factor_ready",
        )
        self._null_token_ids = None
        if cross_attention in ("text", "layout") and p_uncond > 0:
            self._null_token_ids = self._empty_prompt_ids()
        self.ema = None
        if ema_decay is not None:
            self.ema = ExponentialMovingAverage(self, self.trainable_variables, ema_decay)
        self.built = True  # every component arrives built

    # -- set-up checks ----------------------------------------------------------------------------

    @property
    def latent_channels(self):
        return self.first_stage.embed_dim

    def _concat_channels(self):
        if self.concat == "segmentation":
            return self.spatial_encoder.channels if self.spatial_encoder is not None else 0
        return {None: 0, "low_res": self.first_stage.in_channels, "masks": self.latent_channels + 1}[self.concat]

    def _check_components(self):
        if (self.concat == "segmentation") != (self.spatial_encoder is not None):
            raise ValueError(
                f"concat={self.concat!r} with spatial_encoder={self.spatial_encoder!r:.60}: a `spatial_encoder` "
                f"(e.g. SpatialRescaler) goes with concat='segmentation' and only with it."
            )
        expected = self.latent_channels + self._concat_channels()
        if self.unet.in_channels != expected:
            raise ValueError(
                f"unet has in_channels={self.unet.in_channels}; with {self.latent_channels} latent channels and "
                f"concat={self.concat!r} it needs {expected}."
            )
        if self.unet.out_channels != self.latent_channels:
            raise ValueError(
                f"unet has out_channels={self.unet.out_channels}; expected {self.latent_channels}."
            )
        needs = {
            "text": ("text_encoder", self.text_encoder),
            "class": ("class_embedder", self.class_embedder),
            "layout": ("text_encoder", self.text_encoder),
        }
        if self.cross_attention in needs and needs[self.cross_attention][1] is None:
            raise ValueError(
                f"cross_attention={self.cross_attention!r} needs `{needs[self.cross_attention][0]}`."
            )
        if (self.cross_attention is None) != (self.unet.context_dim is None):
            raise ValueError(
                f"cross_attention={self.cross_attention!r} but the unet has context_dim={self.unet.context_dim}."
            )
        if self.cross_attention == "text" and self.p_uncond > 0 and self.tokenizer is None:
            raise ValueError("p_uncond > 0 with text needs a `tokenizer` (for the empty prompt).")
        if self.cross_attention == "layout" and not isinstance(self.tokenizer, LayoutTokenizer):
            raise ValueError(
                f"cross_attention='layout' needs a LayoutTokenizer as `tokenizer` (boxes -> tokens); got "
                f"tokenizer={self.tokenizer!r:.60}."
            )

    def _empty_prompt_ids(self):
        """The token ids of the unconditional input: the empty prompt, or the layout with no objects."""
        if self.cross_attention == "layout":
            return self.layout_token_ids({"boxes": [[]], "box_labels": [[]]})
        return np.asarray(keras.ops.convert_to_numpy(self.tokenizer([""])), dtype="int32")

    def layout_token_ids(self, layouts):
        """Layout tokens `(B, L)` (int32 numpy) of a dict with `boxes`, `box_labels` and optional
        `num_boxes` (see `LayoutTokenizer`); a clear error naming the argument for bad boxes or labels."""
        return np.asarray(
            keras.ops.convert_to_numpy(
                self.tokenizer(layouts["boxes"], layouts["box_labels"], num_boxes=layouts.get("num_boxes"))
            ),
            dtype="int32",
        )

    # -- the training forward pass ------------------------------------------------------------

    def encode_images(self, images, sample=True):
        """Images -> scaled latents (a posterior sample for KL unless `sample=False`)."""
        if isinstance(self.first_stage, AutoencoderKL):
            posterior = self.first_stage.encode(images)
            return posterior.sample(self.seed_generator) if sample else posterior.mode()
        return self.first_stage.encode(images)

    def decode_latents(self, latents):
        """Scaled latents -> images in [-1, 1]."""
        return self.first_stage.decode(latents / ops.cast(self.scale_factor, latents.dtype))

    def _scaled(self, latents, training):
        if self.scale_by_std and training:
            fresh = 1.0 / ops.std(ops.cast(latents, "float32"))
            ready = ops.convert_to_tensor(self.scale_factor_ready) > 0
            self.scale_factor.assign(ops.where(ready, ops.convert_to_tensor(self.scale_factor), fresh))
            self.scale_factor_ready.assign(1.0)
        return latents * ops.cast(self.scale_factor, latents.dtype)

    def _recorded_unet(self):
        """The UNet, recorded on PyTorch once per input signature (see `keras_ldm.backend.traced_call`)."""
        return kept_traced_call(self, "unet", self.unet)

    def _recorded_text_encoder(self):
        """The text encoder, recorded on PyTorch from the third call of a signature on: a first
        `generate()` encodes prompts and negatives eagerly, a repeated one pays for the recording."""
        return kept_traced_call(self, "text_encoder", self.text_encoder, eager_calls=2)

    def condition_dropout(self, batch_size, training):
        """A boolean `(B,)` mask of the examples whose condition is dropped (probability `p_uncond`)."""
        if not training or self.p_uncond == 0:
            return ops.zeros((batch_size,), dtype="bool")
        return keras.random.uniform((batch_size,), seed=self.seed_generator) < self.p_uncond

    def context(self, inputs, drop, training=False):
        """The cross-attention context of a batch (`None` without cross-attention)."""
        if self.cross_attention in ("text", "layout"):
            token_ids = _require_input(inputs, "token_ids", f"{self.cross_attention} conditioning (tokenize first)")
            token_ids = ops.cast(token_ids, "int32")
            if self._null_token_ids is not None:
                token_ids = ops.where(drop[:, None], ops.convert_to_tensor(self._null_token_ids), token_ids)
            # `training` passed explicitly: Keras' inherited flag is reset by any earlier inner call that
            # passes one (the first stage's `training=None`), which silenced the encoder's dropout.
            return self._recorded_text_encoder()(token_ids, training=training)
        if self.cross_attention == "class":
            labels = ops.cast(_require_input(inputs, "labels", "class conditioning"), "int32")
            if self.class_embedder.null_label is not None:
                labels = ops.where(drop, self.class_embedder.null_label, labels)
            return self.class_embedder(labels)
        return None

    def concat_condition(self, inputs, images, latent_shape, drop):
        """The channels concatenated to `z_t` (`None` without concat conditioning)."""
        if self.concat is None:
            return None
        height, width = latent_shape[1], latent_shape[2]
        if self.concat == "low_res":
            low_res = images_to_unit_range(_require_input(inputs, "low_res", "super-resolution"))
            condition = resize_to(low_res, height, width)
        elif self.concat == "segmentation":
            maps = _require_input(inputs, "segmentation", "semantic synthesis")
            condition = self.segmentation_condition(maps, height, width)
        else:
            masks = _masks(_require_input(inputs, "masks", "inpainting"))
            condition = self.inpainting_condition(images, masks, height, width)
        keep = ops.cast(ops.logical_not(drop), condition.dtype)[:, None, None, None]
        return condition * keep

    def segmentation_condition(self, maps, height, width):
        """The concat channels of semantic synthesis: `spatial_encoder(maps)`, which must come out at the
        latent size `(height, width)`."""
        condition = self.spatial_encoder(maps)
        if tuple(condition.shape[1:3]) != (height, width):
            raise ValueError(
                f"`segmentation` maps of shape {tuple(maps.shape)} encode to {tuple(condition.shape[1:3])}, "
                f"not the latent size {(height, width)}: the spatial_encoder must down-sample them by the "
                f"first stage's factor {self.first_stage.downsample_factor}."
            )
        return condition

    def inpainting_condition(self, images, masks, height, width):
        """The concat channels of inpainting: the encoded masked image and the mask at latent size.

        `images` in [-1, 1] `(B, H, W, 3)`, `masks` 0/1 `(B, H, W, 1)` (1 = fill); see `signed_masks`.
        """
        masked = masked_images(images, masks)
        if self.signed_masks:  # CompVis masks in [0, 1] pixel space, then maps both to [-1, 1]
            masked, masks = masked - masks, 2.0 * masks - 1.0
        encoded = self.encode_images(masked, sample=False)
        encoded = encoded * ops.cast(self.scale_factor, encoded.dtype)
        return ops.concatenate([encoded, resize_to(masks, height, width, "nearest")], axis=-1)

    def call(self, inputs, training=False):
        """Diffusion forward of one batch: `{"prediction", "target", "timesteps"}`."""
        images = images_to_unit_range(_require_input(inputs, "images", "training"))
        latents = self._scaled(self.encode_images(images), training)
        batch = ops.shape(latents)[0]
        timesteps = keras.random.randint((batch,), 0, self.schedule.num_timesteps, seed=self.seed_generator)
        noise = keras.random.normal(ops.shape(latents), seed=self.seed_generator)
        noisy = self.schedule.q_sample(latents, timesteps, noise)
        drop = self.condition_dropout(batch, training)
        concat = self.concat_condition(inputs, images, latents.shape, drop)
        unet_input = (
            noisy if concat is None else ops.concatenate([noisy, ops.cast(concat, noisy.dtype)], axis=-1)
        )
        prediction = self._recorded_unet()(
            unet_input, timesteps=timesteps, context=self.context(inputs, drop, training), training=training
        )
        target = self.schedule.training_target(latents, noise, timesteps, self.parameterization)
        return {"prediction": prediction, "target": target, "timesteps": timesteps}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Weighted l1/l2 between prediction and target, in float32 (CompVis `p_losses`)."""
        error = ops.cast(y_pred["prediction"], "float32") - ops.cast(y_pred["target"], "float32")
        error = ops.abs(error) if self.loss_type == "l1" else ops.square(error)
        per_example = ops.mean(error, axis=(1, 2, 3))
        weights = self.schedule.loss_weights(
            y_pred["timesteps"], self.parameterization, self.l_simple_weight, self.original_elbo_weight
        )
        return per_replica_loss(ops.mean(weights * per_example))  # divided by the replicas of a tf.distribute

    # -- Keras integration -------------------------------------------------------------------------

    def compile(
        self,
        optimizer=None,
        learning_rate=1e-4,
        warmup_steps=0,
        weight_decay=0.01,
        gradient_accumulation_steps=None,
        **kwargs,
    ):
        """`compile()` with an AdamW default and an optional linear learning-rate warm-up.

        `gradient_accumulation_steps=k` averages the gradients of k batches before each update of the
        default AdamW (an effective batch k times larger at the memory of one; pass
        `gradient_accumulation_steps` to your own optimizer instead if you give one). The EMA then moves
        once per update. The learning-rate schedule counts batches, as Keras' optimizers do.
        """
        if optimizer is None:
            schedule = LinearWarmup(learning_rate, warmup_steps) if warmup_steps else learning_rate
            optimizer = keras.optimizers.AdamW(
                learning_rate=schedule,
                weight_decay=weight_decay,
                gradient_accumulation_steps=gradient_accumulation_steps,
            )
        elif gradient_accumulation_steps is not None:
            raise ValueError(
                "`gradient_accumulation_steps` configures the default optimizer; with your own `optimizer`, "
                f"pass it there (e.g. keras.optimizers.AdamW(..., gradient_accumulation_steps="
                f"{gradient_accumulation_steps}))."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def train_step(self, *args):
        """Keras' train step, followed by the EMA update when `ema_decay` is set."""
        if self.ema is None:
            return super().train_step(*args)
        return ema_train_step(self, super().train_step, *args)

    def ema_scope(self):
        """Context in which the trained weights are their moving averages (a no-op without EMA)."""
        return self.ema.scope() if self.ema is not None else contextlib.nullcontext()

    def fit(self, x=None, y=None, **kwargs):
        """`keras.Model.fit` on dict batches, checked before the first step.

        `x` is a `tf.data.Dataset` of dict batches or a dict of arrays. `prompts` (strings: a list, a
        numpy array or a `tf.data` string tensor) are tokenized to `token_ids` (text models); keys the
        conditioning does not use (e.g. the `prompts` of a class-labelled dataset) are dropped; missing
        keys, non-finite values (in the first batch of a dataset, in all of a dict) and labels outside the
        class table are a `ValueError`. Training stops at the first NaN/inf loss
        (`keras.callbacks.TerminateOnNaN` is added unless the callbacks hold one).
        """
        if x is None or isinstance(x, (list, tuple, str, bytes, int, float)) or hasattr(x, "shape"):
            raise TypeError(
                f"`x` must be a dict of arrays ({{'images': ..., ...}}) or a tf.data.Dataset of dict "
                f"batches; got {type(x).__name__}."
            )
        if isinstance(x, dict):  # lists (and nested lists) as arrays; `prompts` stay strings
            ragged = ("prompts", "boxes", "box_labels")  # strings, and per-image lists of boxes
            x = {key: value if key in ragged else _batch_array(value, key) for key, value in x.items()}
        if _is_tf_dataset(x) or isinstance(x, dict):
            keys = set(x.element_spec if _is_tf_dataset(x) else x)
            used = self.batch_keys(keys)
            self._check_batch_shapes(x.element_spec if _is_tf_dataset(x) else x)
            self._remember_image_size(x.element_spec if _is_tf_dataset(x) else x)
            self._check_batch_values(next(iter(x.take(1))) if _is_tf_dataset(x) else x)
            if _is_tf_dataset(x):
                from keras_ldm.data.prompts import keep_keys, tokenize_layouts, tokenize_prompts

                if "prompts" in used:
                    x = tokenize_prompts(x, self.tokenizer)
                    used = (used - {"prompts"}) | {"token_ids"}
                if "boxes" in used:
                    x = tokenize_layouts(x, self.layout_token_ids)
                    used = (used - set(LAYOUT_KEYS)) | {"token_ids"}
                x = keep_keys(x, used)
            else:
                x = {k: v for k, v in x.items() if k in used}
                if "prompts" in x:
                    token_ids = self.tokenizer(_prompt_list(x.pop("prompts")))
                    x["token_ids"] = np.asarray(ops.convert_to_numpy(token_ids))
                if "boxes" in x:
                    x["token_ids"] = self.layout_token_ids({k: x.pop(k) for k in LAYOUT_KEYS if k in x})
                _check_batch_lengths(x)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks):
            callbacks.append(keras.callbacks.TerminateOnNaN())
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def _check_batch_shapes(self, batch):
        """Static checks of `images` and `masks` (shapes from a dataset's spec or from arrays)."""
        images = batch["images"]
        shape, dtype = tuple(images.shape), str(images.dtype)
        factor = self.first_stage.downsample_factor * 2 ** (len(self.unet.channel_mult) - 1)
        if len(shape) != 4 or shape[-1] != self.first_stage.in_channels:
            raise ValueError(
                f"`images` must be batches (B, H, W, {self.first_stage.in_channels}); got shape {shape}."
            )
        if "uint8" not in dtype and "float" not in dtype:
            raise ValueError(f"`images` must be uint8 in [0, 255] or floats in [-1, 1]; got dtype {dtype}.")
        for size in shape[1:3]:
            if size is not None and size % factor:
                raise ValueError(
                    f"`images` of shape {shape}: height and width must be multiples of {factor}."
                )
        if self.concat == "segmentation":
            maps = tuple(batch["segmentation"].shape)
            classes = self.spatial_encoder.num_classes
            if maps[1:3] != shape[1:3] or len(maps) not in (3, 4) or (len(maps) == 4 and maps[-1] != classes):
                raise ValueError(
                    f"`segmentation` must be label maps (B, H, W) or one-hot (B, H, W, {classes}) like "
                    f"`images` {shape}; got {maps}."
                )
        if self.concat == "masks":
            masks = tuple(batch["masks"].shape)
            if masks[1:3] != shape[1:3] or len(masks) not in (3, 4) or (len(masks) == 4 and masks[-1] != 1):
                raise ValueError(
                    f"`masks` must be (B, H, W) or (B, H, W, 1) like `images` {shape}; got {masks}."
                )

    def _remember_image_size(self, batch):
        """The first `fit` on square images of one size makes it the `generate()` default size
        (`generation_defaults["image_size"]`) of a text, class or unconditional model that has none:
        a model trained at 32x32 samples 32x32, not the 64-latent-pixel fallback."""
        if self.concat is not None or "image_size" in self.generation_defaults:
            return
        height, width = tuple(batch["images"].shape)[1:3]
        if height is not None and height == width:
            self.generation_defaults["image_size"] = int(height)

    def _check_batch_values(self, batch):
        """Value checks on one batch (the first of a dataset): finite numbers, float images in [-1, 1],
        0/1 masks, labels in the class table."""
        for key, value in batch.items():
            if key != "prompts" and not _is_string_data(value) and not isinstance(value, (list, tuple)):
                array = np.asarray(keras.ops.convert_to_numpy(value))
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise ValueError(
                        f"`{key}` holds {array.size - np.isfinite(array).sum()} NaN or inf values; "
                        f"training on them would make every weight NaN."
                    )
        if self.cross_attention == "class":
            labels = np.asarray(keras.ops.convert_to_numpy(batch["labels"]))
            if labels.size and (labels.min() < 0 or labels.max() >= self.class_embedder.num_classes):
                raise ValueError(
                    f"`labels` must be in [0, {self.class_embedder.num_classes - 1}]; got values in "
                    f"[{labels.min()}, {labels.max()}]."
                )
        images = np.asarray(keras.ops.convert_to_numpy(batch["images"]))
        if images.dtype != np.uint8 and (images.min() < -1.001 or images.max() > 1.001):
            raise ValueError(
                f"Float `images` must be scaled to [-1, 1]; got values in [{images.min():.3g}, {images.max():.3g}] "
                f"(pass uint8 images, or use keras_ldm.data.to_unit_range)."
            )
        if self.cross_attention == "layout" and "boxes" in batch:  # the tokenizer names bad boxes and labels
            self.layout_token_ids({k: _numpy_rows(batch[k]) for k in LAYOUT_KEYS if k in batch})
        if self.concat == "segmentation":
            maps = np.asarray(keras.ops.convert_to_numpy(batch["segmentation"]))
            checks.check_segmentation(maps, self.spatial_encoder.num_classes)
        if self.concat == "masks":
            masks = np.asarray(keras.ops.convert_to_numpy(batch["masks"]))
            if not np.isin(masks, (0, 1)).all():
                raise ValueError(
                    f"`masks` must hold only 0 and 1 (1 = region to fill); got {np.unique(masks)[:5]}."
                )

    def batch_keys(self, keys):
        """The keys of a training batch this model uses; a `ValueError` when a needed one is missing."""
        needed = {"images"}
        if self.cross_attention == "text":
            needed.add("token_ids" if "token_ids" in keys or self.tokenizer is None else "prompts")
        elif self.cross_attention == "class":
            needed.add("labels")
        elif self.cross_attention == "layout":
            needed |= {"token_ids"} if "token_ids" in keys else {"boxes", "box_labels"} | ({"num_boxes"} & set(keys))
        if self.concat is not None:
            needed.add(self.concat)
        missing = needed - set(keys)
        if missing:
            raise ValueError(
                f"Training batches need the keys {sorted(needed)} for this model (cross_attention="
                f"{self.cross_attention!r}, concat={self.concat!r}); missing {sorted(missing)} in {sorted(keys)}."
            )
        conditions = {"prompts", "token_ids", "labels", "low_res", "masks", "segmentation", *LAYOUT_KEYS}
        if self.cross_attention is None and self.concat is None and conditions & set(keys):
            raise ValueError(
                f"This model is unconditional, but the batches hold {sorted(conditions & set(keys))}; "
                f"build it with cross_attention=/concat= to use them, or drop them from the dataset."
            )
        return needed

    # -- LoRA fine-tuning (keras_ldm.training.lora) -------------------------------------------------

    def enable_lora(self, rank, target="attention", text_encoder=False, alpha=None):
        """Adds rank-`rank` LoRA adapters to the UNet's attention projections (and, with `text_encoder=True`,
        the text encoder's) and freezes every other weight: `fit()` then trains only the adapters. Call
        `compile()` afterwards. Returns the number of adapted layers; see
        `keras_ldm.training.lora.enable_lora` for `target` and `alpha`.

        Example:
        >>> from keras_ldm.models import AutoencoderKL, ClassEmbedder, UNet
        >>> vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
        >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
        ...             num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=8)
        >>> ldm = LatentDiffusion(unet, vae, cross_attention="class", class_embedder=ClassEmbedder(3, 8))
        >>> ldm.enable_lora(rank=4)
        32
        >>> sorted({variable.name for variable in ldm.trainable_variables})
        ['lora_kernel_a', 'lora_kernel_b']
        """
        return lora.enable_lora(self, rank, target=target, text_encoder=text_encoder, alpha=alpha)

    def save_lora_weights(self, path):
        """Writes only the LoRA adapters to a small `.safetensors` file (see
        `keras_ldm.training.lora.save_lora_weights`); a failed save leaves an existing file as it was."""
        lora.save_lora_weights(self, path)

    def load_lora_weights(self, path, merge=False, scale=1.0):
        """Loads a LoRA `.safetensors` file: one from `save_lora_weights`, or a diffusers/PEFT UNet LoRA.
        Enables LoRA with the file's rank where it is off; `merge=True` adds the deltas to the kernels
        instead; `scale` multiplies them. See `keras_ldm.training.lora.load_lora_weights`."""
        lora.load_lora_weights(self, path, merge=merge, scale=scale)

    def save_to_preset(
        self,
        path,
        description="",
        generation_defaults=None,
        overwrite=True,
        inference_only=False,
        weights_dtype=None,
    ):
        """Writes the model as a preset folder (see `PresetMixin.save_to_preset`).

        Args:
            path: the folder; `LatentDiffusion.from_preset(path)` loads it back with the weights, EMA,
                scale_factor, tokenizer, schedule and `generation_defaults`.
            description: one line stored in `metadata.json`.
            generation_defaults: replace the model's `generate()` defaults before saving.
            overwrite: replace an existing preset in `path`.
            inference_only: save the moving-average weights as the weights, without the EMA copy, the
                optimizer state or the autoencoder's training losses (what the shipped presets do).
            weights_dtype: store the weights in this float dtype (e.g. `"float16"`: half the size).

        Example:
        >>> import tempfile
        >>> from keras_ldm.models import AutoencoderKL, UNet
        >>> vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
        >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
        ...             num_res_blocks=1, attention_resolutions=(), num_heads=1)
        >>> path = tempfile.mkdtemp()
        >>> LatentDiffusion(unet, vae).save_to_preset(path, generation_defaults={"num_steps": 25})
        >>> LatentDiffusion.from_preset(path).generation_defaults
        {'num_steps': 25}
        """
        _check_preset_arguments(path, description, overwrite)
        previous = self.generation_defaults
        if generation_defaults is not None:
            num_timesteps = self.schedule.num_timesteps
            self.generation_defaults = _check_generation_defaults(generation_defaults, num_timesteps)
        try:
            model = self.inference_copy() if inference_only else self
            write_preset(
                model, path, description=description, overwrite=overwrite, weights_dtype=weights_dtype
            )
        except BaseException:  # a failed save changes nothing, the model's defaults included
            self.generation_defaults = previous
            raise

    def inference_copy(self):
        """A copy with the moving-average weights as its weights and no EMA, optimizer or loss state."""
        config = _without_compile_configs(keras.saving.serialize_keras_object(self))
        config["config"]["ema_decay"] = None
        copy = keras.saving.deserialize_keras_object(config)
        with self.ema_scope():
            _copy_variables(self, copy)
        return copy

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "unet": serialize(self.unet),
            "first_stage": serialize(self.first_stage),
            "cross_attention": self.cross_attention,
            "concat": self.concat,
            "text_encoder": serialize(self.text_encoder) if self.text_encoder is not None else None,
            "tokenizer": serialize(self.tokenizer) if self.tokenizer is not None else None,
            "class_embedder": serialize(self.class_embedder) if self.class_embedder is not None else None,
            "spatial_encoder": serialize(self.spatial_encoder) if self.spatial_encoder is not None else None,
            "schedule": self.schedule.get_config(),
            "parameterization": self.parameterization,
            "loss_type": self.loss_type,
            "l_simple_weight": self.l_simple_weight,
            "original_elbo_weight": self.original_elbo_weight,
            "p_uncond": self.p_uncond,
            "signed_masks": self.signed_masks,
            "scale_factor": float(keras.ops.convert_to_numpy(self.scale_factor)),
            "scale_by_std": self.scale_by_std,
            "train_text_encoder": self.train_text_encoder,
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            "generation_defaults": dict(self.generation_defaults),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("unet", "first_stage", "text_encoder", "tokenizer", "class_embedder", "spatial_encoder"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        config["schedule"] = NoiseSchedule.from_config(config["schedule"])
        return cls(**config)


def _check_generation_defaults(defaults, num_timesteps):
    """`generation_defaults` with plain Python values (JSON-safe): known keys, values `generate()` takes."""
    if defaults is None:
        return {}
    if not isinstance(defaults, collections.abc.Mapping):
        raise TypeError(f"generation_defaults={defaults!r:.80}; expected a dict such as {{'num_steps': 50}}.")
    allowed = {*GENERATION_DEFAULTS, "image_size"}
    unknown = sorted(map(repr, set(defaults) - allowed))
    if unknown:
        raise ValueError(
            f"`generation_defaults` has unknown keys [{', '.join(unknown)}]; allowed: {sorted(allowed)}."
        )
    try:
        given = {key: value for key, value in defaults.items() if key != "image_size"}
        placeholders = dict(GENERATION_DEFAULTS, num_steps=1)  # valid for any schedule: `given` is checked
        options = checks.check_sampling_options(**dict(placeholders, **given), num_timesteps=num_timesteps)
        image_size = defaults.get("image_size")
        if image_size is not None:
            image_size = checks.check_positive_int(image_size, "image_size")
    except (ValueError, TypeError) as error:
        raise type(error)(f"`generation_defaults`: {error}") from None
    checked = {key: options[key] for key in given}
    if "image_size" in defaults:
        checked["image_size"] = image_size
    return checked


def _check_preset_arguments(path, description, overwrite):
    """Errors naming a `save_to_preset` argument that cannot work, before anything is written."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path={path!r:.80}; expected a folder path (a str or os.PathLike).")
    if not os.fspath(path) or "\x00" in os.fspath(path):
        raise ValueError(f"path={path!r}; expected a folder path.")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"path={os.fspath(path)!r}: {parent!r} is a file; no folder can be made under it.")
    if not isinstance(description, str):
        raise TypeError(f"description={description!r:.80}; expected a str (one line).")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite={overwrite!r:.80}; expected True or False.")


def _set_trainable(model, trainable):
    """Sets `model.trainable`; freezing also freezes every variable (a model deserialized with
    `trainable=False` keeps trainable variables otherwise)."""
    model.trainable = trainable
    if not trainable:
        for variable in model.variables:
            variable.trainable = False


def _numpy_rows(value):
    """A batch entry as numpy (from any backend's tensor or a tf.data one), or as given (per-image lists)."""
    return value if isinstance(value, (list, tuple)) else np.asarray(value)


def _require_input(inputs, key, purpose):
    if not isinstance(inputs, dict) or key not in inputs:
        given = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"{purpose} needs a batch dict with {key!r}; got {given}.")
    return inputs[key]


def _masks(masks):
    masks = ops.cast(masks, "float32")
    if len(masks.shape) == 3:
        masks = masks[..., None]
    if len(masks.shape) != 4 or masks.shape[-1] != 1:
        raise ValueError(f"`masks` must have shape (B, H, W) or (B, H, W, 1); got {tuple(masks.shape)}.")
    return masks


def _batch_array(value, key):
    """A training array: arrays and tensors as they are, anything else through `np.asarray`."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    return checks.as_array(value, key)


def _check_batch_lengths(batch):
    """Every array of an in-memory batch dict holds one entry per image (`token_ids` counts `prompts`)."""
    lengths = {key: (np.shape(value)[0] if np.ndim(value) else None) for key, value in batch.items()}
    if len(set(lengths.values())) > 1:
        named = {("prompts" if key == "token_ids" else key): length for key, length in lengths.items()}
        raise ValueError(f"The training arrays need one entry per image; their lengths are {named}.")


def _prompt_list(prompts):
    """In-memory training prompts (a list, tuple or numpy array of str/bytes) as a list of str."""
    values = np.asarray(prompts).reshape(-1).tolist()
    if not all(isinstance(p, (str, bytes)) for p in values):
        raise ValueError(f"`prompts` must be strings (a list or numpy array of str); got {prompts!r:.80}.")
    return [p.decode("utf-8") if isinstance(p, bytes) else p for p in values]


def _is_string_data(value):
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, (str, bytes)) for v in value)
    dtype = getattr(value, "dtype", None)
    return getattr(dtype, "kind", None) in ("U", "S", "O") or "string" in str(dtype)


def _is_tf_dataset(x):
    module = type(x).__module__
    return module.startswith("tensorflow") and hasattr(x, "element_spec")


def _without_compile_configs(config):
    """A serialized model without its (nested) `compile_config`s: a compiled autoencoder would otherwise
    rebuild its training losses (discriminator, LPIPS) in the copy."""
    if isinstance(config, dict):
        return {
            key: _without_compile_configs(value) for key, value in config.items() if key != "compile_config"
        }
    if isinstance(config, list):
        return [_without_compile_configs(value) for value in config]
    return config


def _copy_variables(source, target):
    """Assigns `source`'s variable values to `target`'s, matched by path.

    Paths start at the model's components (`u_net/...`, `autoencoder_kl/...`); a component rebuilt in the
    same process gets a numbered name (`u_net_1`), so that number is ignored. Variables `target` does not
    have (optimizer, EMA, training-loss networks such as the discriminator, LoRA adapters) are left out;
    the adapters' deltas are merged into the copied kernels.
    """
    values = {_component_path(variable): variable.value for variable in source.variables}
    for layer in lora.lora_layers(source).values():
        values[_component_path(lora.kernel_variable(layer))] = lora.merged_kernel(layer)
    for variable in target.variables:
        key = _component_path(variable)
        if key not in values:
            raise ValueError(f"The model has no variable {key!r} to copy into its inference copy.")
        variable.assign(values[key])


def _component_path(variable):
    component, _, rest = variable.path.partition("/")
    return re.sub(r"_\d+$", "", component) + "/" + rest
