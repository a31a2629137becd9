"""`LatentDiffusion.export(path)`: the whole generation pipeline as a SavedModel for TF Serving.

The `serving_default` signature is `generate()` in one graph: request tensors in, `images` out
(uint8 `(B, H, W, 3)`). Its inputs, by the model's conditioning (B, the batch size, is free):

| model            | inputs                                                                     |
|------------------|----------------------------------------------------------------------------|
| text             | `prompts` string `(B,)`; `negative_prompts` string `(B,)` or `(1,)`, optional (default `[""]`) |
| class            | `labels` int32 `(B,)`                                                      |
| super-resolution | `images` uint8 `(B, H / upscale, W / upscale, 3)`                           |
| inpainting       | `images` uint8 `(B, H, W, 3)`, `masks` float32 `(B, H, W)` (1 = fill, 0 = keep) |
| unconditional    | `batch_size` int32 `()`, optional (default 1)                              |
| every model      | `seed` int32 `()` (default 0), `guidance_scale` float32 `()` (default: the model's) |

`images` equal `model.generate(..., seed=seed, guidance_scale=guidance_scale)` with the export's
settings (up to one grey level where the graph rounds a float differently). Prompts are tokenized
inside the graph with core TensorFlow ops only (`keras_ldm.export_tokenizer`, the ids of the model's
`LDMBertTokenizer`), so the SavedModel needs no TensorFlow Text: any TensorFlow runtime loads it (TF
Serving's standard build, Triton's TensorFlow backend, TF-Java, `tf.saved_model.load`). The number of
steps, the sampler, η and the canvas size are fixed at export. `guidance_scale` is used by text and
class models (1 skips the unconditional half, as `generate` does) and ignored by the others.

The graph holds the weights once, as variables: only those the pipeline reads (no moving-average
copies, optimizer slots or training losses). The model may run on JAX (jax2tf, native
serialization for CPU and CUDA) or TensorFlow; see `keras_ldm.backend.export_program`. The sampling loop is
compiled by XLA on both, so TF Serving on CPU needs `--xla_cpu_compilation_enabled=true`
(`docs/serving.md`).
"""

import contextlib
import os

from keras_ldm.backend.export_program import DEFAULT_PLATFORMS, ProgramBuilder, check_backend
from keras_ldm.presets.atomic import atomic_folder

SIGNATURE_KEY = "serving_default"
KINDS = ("text", "class", "super_resolution", "inpainting", "unconditional")
# What tf.saved_model.save writes into a directory; `overwrite=True` replaces only these.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "variables", "assets")


def export_model(
    model,
    path,
    num_steps=None,
    guidance_scale=None,
    sampler=None,
    eta=None,
    height=None,
    width=None,
    upscale=4,
    use_ema=True,
    overwrite=False,
    platforms=DEFAULT_PLATFORMS,
):
    """Writes `model`'s generation pipeline as a SavedModel (see the module docstring).

    Args:
        model: a `LatentDiffusion` (text models need their `tokenizer`).
        path: the SavedModel directory; it must not exist or be empty unless `overwrite`.
        num_steps, sampler, eta: fixed sampling settings (default: the model's
            `generation_defaults`, as `generate`).
        guidance_scale: the default of the `guidance_scale` input (default: the model's).
        height, width: the output size (default: `model.default_size()`); for super-resolution the
            input images are `upscale` times smaller.
        upscale: output/input size ratio of a super-resolution model.
        use_ema: export the moving-average weights when the model keeps them.
        overwrite: replace a SavedModel already in `path` (the directory's other entries are kept). The
            SavedModel is written next to `path` and swapped in when complete (see `atomic_folder`), so
            a failed export leaves the one at `path` as it was.
        platforms: JAX only: the platforms the program is serialized for.

    Returns:
        `path`.

    Example (jax or tensorflow backend; `tests/test_export.py` runs it):
    >>> import tempfile
    >>> import tensorflow as tf
    >>> from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet
    >>> vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(), num_heads=1)
    >>> path = export_model(LatentDiffusion(unet, vae), tempfile.mkdtemp(), num_steps=2, height=8, width=8)
    ... # doctest: +SKIP
    >>> serve = tf.saved_model.load(path).signatures["serving_default"]  # doctest: +SKIP
    >>> serve(batch_size=tf.constant(2), seed=tf.constant(1), guidance_scale=tf.constant(1.0))["images"].shape
    ... # doctest: +SKIP
    TensorShape([2, 8, 8, 3])
    """
    kind = model_kind(model)
    check_backend()
    _check_path(path, overwrite)
    options = model.sampling_options(num_steps, guidance_scale, sampler, eta)
    canvas = export_canvas(model, height, width, upscale)
    import tensorflow as tf

    with model.ema_scope() if use_ema else contextlib.nullcontext():
        module = _serving_module(model, kind, options, canvas, upscale, platforms)
        with atomic_folder(path, replaces=SAVED_MODEL_ENTRIES) as folder:
            tf.saved_model.save(module, folder, signatures={SIGNATURE_KEY: module.serve})
    return path


def model_kind(model):
    """`"text"`, `"class"`, `"super_resolution"`, `"inpainting"` or `"unconditional"`: which request the
    exported signature takes (the same as `generate`); an error for a model without a generate path."""
    from keras_ldm.models.generation import GenerationMixin

    if not isinstance(model, GenerationMixin):
        raise TypeError(
            f"`model` must be a keras_ldm LatentDiffusion (a model with a generate() path); got "
            f"{type(model).__name__}. Wrap the UNet and first stage into a LatentDiffusion to export them."
        )
    if model.concat == "low_res":
        return "super_resolution"
    if model.concat == "masks":
        return "inpainting"
    if model.cross_attention == "layout":
        raise ValueError(
            "Exporting layout-to-image models (cross_attention='layout') is not supported yet: the serving "
            "signature takes prompts, labels or images. Use generate({'boxes': ..., 'box_labels': ...})."
        )
    if model.concat == "segmentation":
        raise ValueError(
            "Exporting semantic-synthesis models (concat='segmentation') is not supported yet: the serving "
            "signature takes prompts, labels or images. Use generate({'segmentation': maps}) in Python."
        )
    if model.cross_attention == "text":
        if model.tokenizer is None:
            raise ValueError(
                "This text-conditioned model has tokenizer=None; export tokenizes prompts inside the "
                "graph and needs the model's `tokenizer` (e.g. an LDMBertTokenizer)."
            )
        return "text"
    if model.cross_attention == "class":
        return "class"
    return "unconditional"


def export_canvas(model, height=None, width=None, upscale=4):
    """The output `(height, width)` of an export, checked like `generate` checks it.

    Example:
    >>> from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet
    >>> vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(), num_heads=1)
    >>> export_canvas(LatentDiffusion(unet, vae), height=16)
    (16, 64)
    """
    factor = model.first_stage.downsample_factor
    multiple = factor * 2 ** (len(model.unet.channel_mult) - 1)
    if model.concat == "low_res":
        if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
            raise ValueError(f"upscale={upscale!r}; expected an int >= 1.")
        multiple = multiple * upscale // _gcd(multiple, upscale)
    sizes = {"height": height or model.default_size(), "width": width or model.default_size()}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % multiple:
            raise ValueError(
                f"{name}={size!r}; it must be a positive multiple of {multiple} (first-stage factor "
                f"{factor} times the UNet's down-sampling"
                + (f", and of upscale={upscale} for super-resolution" if model.concat == "low_res" else "")
                + ")."
            )
    return sizes["height"], sizes["width"]


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _check_path(path, overwrite):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a directory path (str or os.PathLike); got {type(path).__name__}.")
    if os.path.isfile(path):
        raise ValueError(f"path={str(path)!r} is a file; export writes a SavedModel directory.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"path={str(path)!r} exists and is not empty ({len(os.listdir(path))} entries); pass "
            f"overwrite=True to replace the SavedModel there, or choose a new directory."
        )


# -- the graph ----------------------------------------------------------------------------------


def _serving_module(model, kind, options, canvas, upscale, platforms):
    """A `tf.Module` holding the used weights and `serve`, the `serving_default` function."""
    import tensorflow as tf

    from keras_ldm.backend.compile import compile_function
    from keras_ldm.models.conditioners import images_to_unit_range

    height, width = canvas
    factor = model.first_stage.downsample_factor
    latent_size = (height // factor, width // factor)
    noise_shape = (*latent_size, model.latent_channels)
    builder = ProgramBuilder(model.variables, platforms)

    def program(guided):
        loop = model._sampling_loop(options["sampler"], options["num_steps"], options["eta"])
        loop = compile_function(loop, model.unet)  # one XLA program, as in generate()

        def pipeline(inputs, noise, seed, guidance_scale):
            request = {"latent_size": latent_size}
            if kind == "text":
                request["token_ids"] = inputs["token_ids"]
                if guided:
                    request["negative_token_ids"] = inputs["negative_token_ids"]
            elif kind == "class":
                request["labels"] = inputs["labels"]
            elif kind == "super_resolution":
                request["low_res"] = images_to_unit_range(inputs["images"])
            elif kind == "inpainting":
                request.update(
                    original=inputs["images"],
                    hole=inputs["masks"],
                    images=images_to_unit_range(inputs["images"]),
                )
            temperature = options["temperature"]
            return model._images_from_request(request, noise, seed, guidance_scale, guided, loop, temperature)

        specs = _program_specs(model, kind, canvas, upscale, guided)
        return builder.program(pipeline, specs, noise_shape, next(iter(specs)))

    module = tf.Module()
    unguided = program(guided=False)
    guided = program(guided=True) if kind in ("text", "class") else None
    module.model_variables = builder.tracked_variables()
    module.serve = _serving_function(
        model, kind, canvas, upscale, options["guidance_scale"], unguided, guided
    )
    return module


def _program_specs(model, kind, canvas, upscale, guided):
    """The `tf.TensorSpec`s of the keras part of the graph (after tokenization and mask checks)."""
    import tensorflow as tf

    height, width = canvas
    if kind == "text":
        length = _sequence_length(model.tokenizer)
        specs = {"token_ids": tf.TensorSpec([None, length], tf.int32)}
        if guided:
            specs["negative_token_ids"] = tf.TensorSpec([None, length], tf.int32)
        return specs
    if kind == "class":
        return {"labels": tf.TensorSpec([None], tf.int32)}
    if kind == "super_resolution":
        return {"images": tf.TensorSpec([None, height // upscale, width // upscale, 3], tf.uint8)}
    if kind == "inpainting":
        return {
            "images": tf.TensorSpec([None, height, width, 3], tf.uint8),
            "masks": tf.TensorSpec([None, height, width, 1], tf.float32),
        }
    return {"batch": tf.TensorSpec([None], tf.float32)}


def _sequence_length(tokenizer):
    import tensorflow as tf

    length = getattr(tokenizer, "sequence_length", None)
    if length is None:
        length = int(tokenize_in_graph(tokenizer, tf.constant([""])).shape[-1])
    return length


def tokenize_in_graph(tokenizer, prompts):
    """Prompts (a `tf.string` tensor `(B,)`) -> int32 token ids `(B, L)` with TensorFlow ops only.

    An `LDMBertTokenizer` becomes a `keras_ldm.export_tokenizer.GraphTokenizer`: the same ids, with
    core TensorFlow ops only (no TensorFlow Text), so the SavedModel loads in any TensorFlow runtime.
    Any other tokenizer must accept a string tensor.

    Example:
    >>> import tensorflow as tf
    >>> from keras_ldm.models import LDMBertTokenizer
    >>> tokenizer = LDMBertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red"], sequence_length=6)
    >>> tokenize = tf.function(lambda prompts: tokenize_in_graph(tokenizer, prompts))
    >>> tokenize(tf.constant(["A\\tred\\x07 sun"])).numpy().tolist()
    [[2, 4, 5, 1, 3, 0]]
    """
    import tensorflow as tf

    from keras_ldm.export_tokenizer import graph_tokenizer
    from keras_ldm.models.tokenizer import LDMBertTokenizer

    if isinstance(tokenizer, LDMBertTokenizer):
        ids = graph_tokenizer(tokenizer)(prompts)
    else:
        ids = tokenizer(prompts)
    return tf.cast(ids, tf.int32)


def _serving_function(model, kind, canvas, upscale, default_scale, unguided, guided):
    """The `tf.function` behind `serving_default`: its arguments are the signature's inputs."""
    import tensorflow as tf

    height, width = canvas
    default_seed = tf.constant(0, tf.int32)
    default_scale = tf.constant(float(default_scale), tf.float32)
    no_negative_prompt = tf.constant([""])
    one_image = tf.constant(1, tf.int32)
    specs = {
        "text": [
            tf.TensorSpec([None], tf.string, name="prompts"),
            tf.TensorSpec([None], tf.string, name="negative_prompts"),
        ],
        "class": [tf.TensorSpec([None], tf.int32, name="labels")],
        "super_resolution": [
            tf.TensorSpec([None, height // upscale, width // upscale, 3], tf.uint8, name="images")
        ],
        "inpainting": [
            tf.TensorSpec([None, height, width, 3], tf.uint8, name="images"),
            tf.TensorSpec([None, height, width], tf.float32, name="masks"),
        ],
        "unconditional": [tf.TensorSpec([], tf.int32, name="batch_size")],
    }[kind]
    specs += [tf.TensorSpec([], tf.int32, name="seed"), tf.TensorSpec([], tf.float32, name="guidance_scale")]

    def conform(*tensors):
        """The inputs, checked against the signature's shapes when the graph runs (a served graph
        does not check them itself)."""
        return [tf.ensure_shape(tensor, spec.shape) for tensor, spec in zip(tensors, specs)]

    def run(inputs, seed, guidance_scale):
        if guided is None:
            images = unguided(inputs, seed, guidance_scale)
        else:  # generate() skips guidance at scale 1: one model call per step instead of two
            images = tf.cond(
                tf.equal(guidance_scale, 1.0),
                lambda: unguided(
                    {k: v for k, v in inputs.items() if not k.startswith("negative")}, seed, guidance_scale
                ),
                lambda: guided(inputs, seed, guidance_scale),
            )
        return {"images": tf.ensure_shape(images, [None, height, width, 3])}

    if kind == "text":
        tokenizer = model.tokenizer

        def serve(
            prompts, negative_prompts=no_negative_prompt, seed=default_seed, guidance_scale=default_scale
        ):
            prompts, negative_prompts, seed, guidance_scale = conform(
                prompts, negative_prompts, seed, guidance_scale
            )
            negative_prompts = tf.broadcast_to(negative_prompts, tf.shape(prompts))  # (1,) or (B,)
            inputs = {
                "token_ids": tokenize_in_graph(tokenizer, prompts),
                "negative_token_ids": tokenize_in_graph(tokenizer, negative_prompts),
            }
            return run(inputs, seed, guidance_scale)

    elif kind == "class":

        def serve(labels, seed=default_seed, guidance_scale=default_scale):
            labels, seed, guidance_scale = conform(labels, seed, guidance_scale)
            return run({"labels": labels}, seed, guidance_scale)

    elif kind == "super_resolution":

        def serve(images, seed=default_seed, guidance_scale=default_scale):
            images, seed, guidance_scale = conform(images, seed, guidance_scale)
            return run({"images": images}, seed, guidance_scale)

    elif kind == "inpainting":

        def serve(images, masks, seed=default_seed, guidance_scale=default_scale):
            images, masks, seed, guidance_scale = conform(images, masks, seed, guidance_scale)
            binary = tf.reduce_all(tf.logical_or(tf.equal(masks, 0.0), tf.equal(masks, 1.0)))
            checks = [
                tf.debugging.Assert(binary, ["`masks` must hold only 0 (keep) and 1 (fill)."]),
                tf.debugging.assert_equal(
                    tf.shape(masks)[0],
                    tf.shape(images)[0],
                    message="`masks` and `images` differ in batch size.",
                ),
            ]
            with tf.control_dependencies(checks):
                masks = tf.identity(masks)[..., None]
            return run({"images": images, "masks": masks}, seed, guidance_scale)

    else:

        def serve(batch_size=one_image, seed=default_seed, guidance_scale=default_scale):
            batch_size, seed, guidance_scale = conform(batch_size, seed, guidance_scale)
            return run({"batch": tf.zeros([batch_size], tf.float32)}, seed, guidance_scale)

    return tf.function(serve, input_signature=specs, autograph=False)
