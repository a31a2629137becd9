"""`generate()` for `LatentDiffusion`: noise -> compiled sampler (CFG as one 2B batch) -> decode -> uint8.

Text encoding, the sampling loop, decoding, the uint8 conversion and inpainting's compositing run as one
compiled program per (sampler, steps, eta, guidance on/off, latent size, input kind), cached on the model;
only tokenization and input checks run outside it.

Accepted inputs, by the model's conditioning:
- text: a str (output batch axis squeezed), a list of str, or `{"prompts", "negative_prompts"}`;
- class: `{"labels"}`;
- super-resolution: `{"images"}` (uint8 low-resolution images; the output is `upscale` times larger);
- inpainting: `{"images", "masks"}` (mask 1 = fill); the result is composited into the original;
- unconditional: `batch_size`;
- any of these, batched, as a `tf.data.Dataset`: each batch is generated in turn (a progress bar counts
  them) and the images are concatenated.

Options not given fall back to the model's `generation_defaults` (set by its preset), then to
`GENERATION_DEFAULTS`.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_ldm.backend.compile import compile_function
from keras_ldm.diffusion.guidance import classifier_free_guidance
from keras_ldm.diffusion.loop import sampling_loop
from keras_ldm.diffusion.tiling import check_tiling, tiled
from keras_ldm.models import generation_inputs as checks
from keras_ldm.models.conditioners import images_to_unit_range, resize_to

GENERATION_DEFAULTS = {
    "num_steps": 50,
    "guidance_scale": 1.0,
    "sampler": "ddim",
    "eta": 0.0,
    "temperature": 1.0,
}


class GenerationMixin:
    """Sampling methods of `LatentDiffusion` (see `generate`)."""

    def generate(
        self,
        inputs=None,
        num_steps=None,
        guidance_scale=None,
        seed=0,
        sampler=None,
        eta=None,
        temperature=None,
        height=None,
        width=None,
        latents=None,
        batch_size=1,
        upscale=4,
        use_ema=True,
        verbose="auto",
        tile_size=None,
        tile_stride=None,
    ):
        """Generates uint8 images `(B, H, W, 3)` (`(H, W, 3)` for a single prompt string).

        Args:
            inputs: the condition (see the module docstring); None for unconditional models.
            num_steps: sampling steps (default: the preset's, else 50).
            guidance_scale: classifier-free guidance scale (1 = no guidance, one model call per step).
            seed: makes the initial noise and stochastic steps reproducible.
            sampler: `"ddpm"`, `"ddim"`, `"plms"`, `"dpmpp_2m"` or `"euler"` (default: the preset's, else DDIM).
            eta: DDIM's η (default 0).
            temperature: scale of the starting noise `x_T` (default: the preset's, else 1). Below 1 trades
                diversity for fidelity, as reduced-temperature sampling in SR3 and Glow: restorations
                (super-resolution, inpainting) move toward the most likely image and gain PSNR.
            height, width: output size for text/class/unconditional models; multiples of the first
                stage's factor times the UNet's down-sampling (default: `default_size()`). Larger than
                the training size works: the model is convolutional.
            latents: initial noise `(B, h, w, c)` instead of drawing it from `seed`.
            batch_size: images for unconditional models.
            upscale: output/input size ratio of a super-resolution model.
            use_ema: sample with the moving-average weights when the model keeps them.
            verbose: show a progress bar over the batches; `"auto"` shows it for a `tf.data.Dataset`.
            tile_size, tile_stride: denoise and decode in overlapping tiles of `tile_size` latent pixels,
                `tile_stride` apart (default: half a tile), blended as CompVis' split-input sampling; the
                networks' memory is then that of one tile. For canvases too large to process at once (big
                SR inputs, semantic maps); None (default) processes the whole canvas.

        Example:
        >>> from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet
        >>> vae = AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4)
        >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
        ...             num_res_blocks=1, attention_resolutions=(), num_heads=1)
        >>> images = LatentDiffusion(unet, vae).generate(batch_size=2, num_steps=3, height=16, width=16)
        >>> images.shape, images.dtype
        ((2, 16, 16, 3), dtype('uint8'))
        """
        options = self.sampling_options(num_steps, guidance_scale, sampler, eta, temperature)
        seed = checks.check_seed(seed)
        upscale = checks.check_positive_int(upscale, "upscale")
        batch_size = checks.check_positive_int(batch_size, "batch_size")  # for every model, as the others
        tiling = check_tiling(tile_size, tile_stride, 2 ** (len(self.unet.channel_mult) - 1))
        kwargs = dict(options, seed=seed, height=height, width=width, upscale=upscale, use_ema=use_ema)
        kwargs["tiling"] = tiling
        if _is_dataset(inputs):
            if latents is not None:
                raise ValueError(
                    "`latents` cannot be combined with a tf.data.Dataset input; pass arrays instead."
                )
            return self._generate_dataset(inputs, verbose, **kwargs)
        progress = keras.utils.Progbar(1) if verbose is True else None
        images = self._generate_batch(inputs, latents=latents, batch_size=batch_size, **kwargs)
        if progress is not None:
            progress.update(1)
        return images

    def export(self, path, **options):
        """Writes the whole `generate()` pipeline as a SavedModel for TF Serving (JAX or TensorFlow backend).

        The `serving_default` signature takes the request as tensors — `prompts` (and optional
        `negative_prompts`), `labels`, `images` (+ `masks`) or `batch_size`, by the conditioning — plus
        `seed` and `guidance_scale`, and returns uint8 `images`; prompts are tokenized inside the graph
        and the batch size is free. See `keras_ldm.export` for the table of inputs, and
        `docs/serving.md` for TF Serving.

        Args:
            path: the SavedModel directory (must not exist or be empty unless `overwrite`).
            **options: the keyword arguments of `keras_ldm.export.export_model`, all optional:
                num_steps, sampler, eta: fixed in the graph (default: as `generate`); so is the
                    model's default `temperature`.
                guidance_scale: the default of the signature's `guidance_scale` input.
                height, width: the fixed output size (default: `default_size()`).
                upscale: output/input size ratio of a super-resolution model (default 4).
                use_ema: export the moving-average weights when the model keeps them (default True).
                overwrite: replace a SavedModel already in `path` (default False).
                platforms: JAX only: the platforms the program is serialized for.

        Returns:
            `path`.

        Example (jax or tensorflow backend; `tests/test_export.py` runs it):
        >>> import keras_ldm, tensorflow as tf
        >>> model = keras_ldm.LatentDiffusion.from_preset("shapes_t2i")  # doctest: +SKIP
        >>> model.export("./serving/shapes_t2i/1", num_steps=50)  # doctest: +SKIP
        >>> serve = tf.saved_model.load("./serving/shapes_t2i/1").signatures["serving_default"]
        ... # doctest: +SKIP
        >>> serve(prompts=tf.constant(["a red circle"]), negative_prompts=tf.constant([""]),
        ...       seed=tf.constant(1), guidance_scale=tf.constant(4.0))["images"].shape  # doctest: +SKIP
        TensorShape([1, 64, 64, 3])
        """
        from keras_ldm.export import export_model

        return export_model(self, path, **options)

    def sampling_options(self, num_steps=None, guidance_scale=None, sampler=None, eta=None, temperature=None):
        """The sampling options `generate` will use: given values, else `generation_defaults`, else defaults.

        Example:
        >>> from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet
        >>> vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
        >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
        ...             num_res_blocks=1, attention_resolutions=(), num_heads=1)
        >>> LatentDiffusion(unet, vae, generation_defaults={"num_steps": 20}).sampling_options(sampler="plms")
        {'num_steps': 20, 'guidance_scale': 1.0, 'sampler': 'plms', 'eta': 0.0, 'temperature': 1.0}
        """
        given = {
            "num_steps": num_steps,
            "guidance_scale": guidance_scale,
            "sampler": sampler,
            "eta": eta,
            "temperature": temperature,
        }
        defaults = dict(GENERATION_DEFAULTS, **(self.generation_defaults or {}))
        options = {key: defaults[key] if value is None else value for key, value in given.items()}
        return checks.check_sampling_options(**options, num_timesteps=self.schedule.num_timesteps)

    def _generate_dataset(self, dataset, verbose, **kwargs):
        batches = []
        total = int(dataset.cardinality())
        progress = keras.utils.Progbar(total if total > 0 else None) if verbose else None
        for element in dataset:
            batches.append(self._generate_batch(_from_dataset_element(element), **kwargs))
            if progress is not None:
                progress.add(1)
        if not batches:
            raise ValueError("The tf.data.Dataset given to generate() is empty.")
        return np.concatenate([b if b.ndim == 4 else b[None] for b in batches])

    def _generate_batch(
        self,
        inputs,
        num_steps,
        guidance_scale,
        seed,
        sampler,
        eta,
        temperature,
        height,
        width,
        upscale,
        use_ema,
        latents=None,
        batch_size=1,
        tiling=(None, None),
    ):
        if latents is not None and self.concat is None and self.cross_attention is None:
            shape = np.shape(checks.as_array(latents, "latents"))  # unconditional: the latents give the batch
            batch_size = shape[0] if shape and shape[0] else batch_size  # else check_latents names them
        request, tensors = self._sampling_request(inputs, batch_size, height, width, upscale)
        guided = self.cross_attention is not None and float(guidance_scale) != 1.0
        if latents is None:
            noise_shape = (request["batch"], *request["latent_size"], self.latent_channels)
            latents = _gaussian(noise_shape, seed)
        else:
            latent_shape = (*request["latent_size"], self.latent_channels)
            latents = checks.check_latents(latents, request["batch"], latent_shape)
        with self.ema_scope() if use_ema else contextlib.nullcontext():
            tensors.update(self._token_ids(request, guided))
            if "low_res" in tensors:
                # TensorFlow's bicubic resize has no XLA kernel: resize to the latent size before the program
                tensors["low_res"] = resize_to(tensors["low_res"], *request["latent_size"])
            tensors = {key: ops.convert_to_tensor(value) for key, value in tensors.items()}
            generate_images = self._generation_fn(
                sampler, num_steps, eta, guided, request["latent_size"], tuple(sorted(tensors)), tiling
            )
            images = generate_images(
                tensors,
                ops.convert_to_tensor(latents),
                ops.convert_to_tensor(seed, "int32"),
                ops.convert_to_tensor(guidance_scale, "float32"),
                ops.convert_to_tensor(temperature, "float32"),
            )
        images = np.asarray(ops.convert_to_numpy(images))
        return images[0] if request["squeeze"] else images

    def _images_from_request(
        self, request, latents, seed, guidance_scale, guided, sample, temperature=1.0, decode=None
    ):
        """Tensors in, uint8 images `(B, H, W, 3)` out: conditions -> `sample` -> decode -> uint8 ->
        inpainting compositing. Pure `keras.ops`, traced whole by `generate` (one compiled program, see
        `_generation_fn`) and by `keras_ldm.export` (batch size unknown).

        `request` holds tensors only (see `_condition_tensors`), plus `original` (uint8) for
        inpainting; `sample(latents, conditions, seed, mask, x0)` is the sampling loop, started from
        `temperature * latents`; `decode` (default `decode_latents`) maps the final latents to [-1, 1].
        """
        conditions, known = self._condition_tensors(request, guidance_scale, guided)
        latents = latents * ops.cast(temperature, latents.dtype)
        result = sample(latents, conditions, seed, known.get("keep"), known.get("x0"))
        images = images_to_uint8((decode or self.decode_latents)(result))
        if "original" in request:
            images = ops.where(ops.convert_to_tensor(request["hole"]) > 0.5, images, request["original"])
        return images

    def default_size(self):
        """Pixel size used when `height`/`width` are not given: `generation_defaults["image_size"]` (the
        training size, set by presets), else 64 latent pixels (CompVis' 256 at f=4)."""
        return (self.generation_defaults or {}).get("image_size") or 64 * self.first_stage.downsample_factor

    # -- inputs -> a sampling request ---------------------------------------------------------

    def _sampling_request(self, inputs, batch_size, height, width, upscale):
        """`(request, tensors)` for checked `generate()` inputs: `request` holds the batch, latent size,
        prompts and whether to squeeze the batch axis; `tensors` the arrays the compiled program takes
        (see `_condition_tensors`; text models get their token ids from `_token_ids`)."""
        factor = self.first_stage.downsample_factor
        request, tensors = {"squeeze": False}, {}
        kind = self.concat or self.cross_attention
        purpose = {
            "low_res": "super-resolution",
            "masks": "inpainting",
            "text": "text-to-image",
            "class": "class-conditional generation",
            "segmentation": "semantic synthesis",
            "layout": "layout-to-image",
        }.get(kind)
        if kind is not None:
            checks.check_input_keys(inputs, kind, purpose)
        if self.concat == "low_res":
            low_res, request["squeeze"] = checks.image_input(inputs, "images", purpose, self.first_stage.in_channels)
            height, width = low_res.shape[1] * upscale, low_res.shape[2] * upscale
            tensors["low_res"] = images_to_unit_range(low_res)
            batch = low_res.shape[0]
        elif self.concat == "masks":
            original, request["squeeze"] = checks.image_input(inputs, "images", purpose, self.first_stage.in_channels)
            masks = checks.mask_input(inputs, original.shape)
            height, width, batch = original.shape[1], original.shape[2], original.shape[0]
            tensors.update(original=original, hole=masks, images=images_to_unit_range(original))
        elif self.concat == "segmentation":
            maps, request["squeeze"] = checks.segmentation_input(inputs, self.spatial_encoder.num_classes)
            (batch, height, width), tensors["segmentation"] = maps.shape[:3], maps
            multiple = factor * 2 ** (len(self.unet.channel_mult) - 1)
            if height % multiple or width % multiple:
                raise ValueError(
                    f"`segmentation` maps of size {height}x{width}: height and width must be multiples of "
                    f"{multiple} (first-stage factor {factor} times the UNet's down-sampling)."
                )
        elif self.cross_attention == "text":
            prompts, negatives, request["squeeze"] = checks.prompt_input(inputs)
            request.update(prompts=prompts, negative_prompts=negatives)
            batch = len(prompts)
        elif self.cross_attention == "class":
            tensors["labels"] = checks.label_input(inputs, self.class_embedder.num_classes)
            batch = len(tensors["labels"])
        elif self.cross_attention == "layout":
            layout, request["squeeze"] = checks.layout_input(inputs)
            tensors["token_ids"] = self.layout_token_ids(layout)
            batch = len(tensors["token_ids"])
        else:
            if inputs is not None:
                raise ValueError(f"This model is unconditional; pass `batch_size`, not inputs={inputs!r:.80}.")
            batch = checks.check_positive_int(batch_size, "batch_size")
        multiple = factor * 2 ** (len(self.unet.channel_mult) - 1)
        height = checks.check_size(height, "height", self.default_size(), multiple, factor)
        width = checks.check_size(width, "width", self.default_size(), multiple, factor)
        request.update(batch=batch, latent_size=(height // factor, width // factor))
        return request, tensors

    def _token_ids(self, request, guided):
        """`token_ids` (and `negative_token_ids` when guided) for the prompts of a text request; for a layout
        request (its `token_ids` already made) the empty layout's as `negative_token_ids`."""
        if self.cross_attention == "layout" and guided:
            return {"negative_token_ids": np.repeat(self._empty_prompt_ids(), request["batch"], axis=0)}
        if self.cross_attention != "text":
            return {}
        ids = {"token_ids": self.tokenizer(request["prompts"])}
        if guided:
            ids["negative_token_ids"] = self.tokenizer(request["negative_prompts"])
        return ids

    def _condition_tensors(self, request, guidance_scale, guided):
        """The tensors the denoiser needs, `(conditions, known)`: context, concat channels,
        unconditional versions and scale from the tensors of `request` (`token_ids`,
        `negative_token_ids`, `labels`, `low_res`, or `images` in [-1, 1] and the 0/1 `hole`);
        `known` holds inpainting's `x0` and `keep` for the sampler. The batch may be unknown."""
        height, width = request["latent_size"]
        conditions, known = {}, {}
        if "low_res" in request:
            conditions["concat"] = resize_to(request["low_res"], height, width)
        if "segmentation" in request:
            conditions["concat"] = self.segmentation_condition(request["segmentation"], height, width)
        if "images" in request:
            hole = ops.convert_to_tensor(request["hole"])
            conditions["concat"] = self.inpainting_condition(request["images"], hole, height, width)
            x0 = self.encode_images(request["images"], sample=False)
            known["x0"] = x0 * ops.cast(self.scale_factor, x0.dtype)
            known["keep"] = 1.0 - resize_to(hole, height, width, "nearest")
        if self.cross_attention in ("text", "layout"):
            encode = self._recorded_text_encoder()
            conditions["context"] = encode(request["token_ids"])
            if guided:
                conditions["unconditional"] = encode(request["negative_token_ids"])
        if self.cross_attention == "class":
            labels = ops.convert_to_tensor(request["labels"], "int32")
            conditions["context"] = self.class_embedder(labels)
            if guided:
                conditions["unconditional"] = self.class_embedder(
                    ops.full_like(labels, self.class_embedder.null_label)
                )
        if guided:
            conditions["guidance_scale"] = ops.convert_to_tensor(guidance_scale, "float32")
        return conditions, known

    # -- the compiled sampler --------------------------------------------------------------------

    def _generation_fn(self, sampler, num_steps, eta, guided, latent_size, keys, tiling=(None, None)):
        """`fn(tensors, latents, seed, guidance_scale, temperature) -> uint8 images`: `_images_from_request`
        compiled whole (on JAX the model's variables are arguments, so EMA and newly loaded weights are used)."""
        key = (sampler, num_steps, float(eta), guided, tuple(latent_size), keys, tiling)
        cache = self.__dict__.setdefault("_generation_fns", {})
        if key not in cache:
            loop = self._sampling_loop(sampler, num_steps, eta, tiling)
            factor = self.first_stage.downsample_factor
            decode = None if tiling[0] is None else tiled(self.decode_latents, *tiling, scale=factor)

            def generate_images(tensors, latents, seed, guidance_scale, temperature):
                request = {**tensors, "latent_size": latent_size}
                return self._images_from_request(
                    request, latents, seed, guidance_scale, guided, loop, temperature, decode
                )

            cache[key] = compile_function(generate_images, self)
        return cache[key]

    def _sampling_loop(self, sampler, num_steps, eta, tiling=(None, None)):
        """The uncompiled sampling loop of the UNet (see `keras_ldm.diffusion.loop.sampling_loop`), tile
        by tile when `tiling` is `(tile_size, tile_stride)` (see `keras_ldm.diffusion.tiling`)."""
        options = {"prediction_type": self.parameterization}
        if sampler == "ddim":
            options["eta"] = eta
        unet = self._recorded_unet() if tiling[0] is None else tiled(self._recorded_unet(), *tiling)
        return sampling_loop(sampler, unet, self._denoiser, self.schedule, num_steps, **options)

    def _denoiser(self, unet, conditions):
        def model(x, t, context=None):
            concat = conditions.get("concat")
            if concat is not None:
                if "guidance_scale" in conditions:  # x is the 2B batch of classifier-free guidance
                    concat = ops.concatenate([concat, concat], axis=0)
                x = ops.concatenate([x, ops.cast(concat, x.dtype)], axis=-1)
            return ops.cast(unet(x, timesteps=t, context=context), "float32")  # sampler maths in float32

        if "guidance_scale" in conditions:
            return classifier_free_guidance(
                model, conditions["context"], conditions["unconditional"], conditions["guidance_scale"]
            )
        return lambda x, t: model(x, t, conditions.get("context"))



def _is_dataset(inputs):
    return hasattr(inputs, "element_spec") and hasattr(inputs, "cardinality")


def _from_dataset_element(element):
    """A `tf.data` element (tensors) as generate() inputs: strings decoded, everything else numpy."""
    if isinstance(element, dict):
        return {key: _from_dataset_element(value) for key, value in element.items()}
    value = element.numpy()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if value.dtype == object:
        return [v.decode("utf-8") for v in value.reshape(-1)]
    return value






def _gaussian(shape, seed):
    return keras.random.normal(shape, seed=int(seed))


def images_to_uint8(images):
    """Images in [-1, 1] -> uint8 in [0, 255] (clipped, rounded half to even); `keras.ops`, traceable.

    Example:
    >>> keras.ops.convert_to_numpy(images_to_uint8(np.array([-1.5, 0.0, 0.999], "float32"))).tolist()
    [0, 128, 255]
    """
    images = ops.cast(images, "float32")
    return ops.cast(ops.round((ops.clip(images, -1.0, 1.0) + 1.0) * 127.5), "uint8")
