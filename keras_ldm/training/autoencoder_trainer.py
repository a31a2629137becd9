"""`fit()` for the first stage: the two-optimizer adversarial training step of the autoencoders.

One training step, on a batch of images `x` (uint8, or floats in [-1, 1]):

1. generator: encode (a posterior sample for KL, the codebook for VQ) -> decoder features `h` ->
   `x_rec = conv_out(h)`; the loss `nll + regularization + d_weight * disc_factor * g_loss`
   (`AutoencoderLoss`), where `d_weight` comes from the gradients of `nll` and `g_loss` with respect
   to `conv_out`'s kernel; one update of the autoencoder (and `logvar`) by `optimizer.generator`.
   The discriminator is only read: its weights and statistics are restored afterwards.
2. discriminator: `disc_factor * d_loss(D(x), D(sg[x_rec]))`; one update by
   `optimizer.discriminator`, kept only from step `disc_start` on (before it, the discriminator's
   weights, statistics and optimizer state stay exactly as they were).

The step is written once with keras.ops; `keras_ldm.backend.gradients` holds the backend-specific part.
"""

import keras
from keras import ops

from keras_ldm.backend import gradients
from keras_ldm.losses.autoencoder_loss import AutoencoderLoss, adaptive_weight
from keras_ldm.losses.discriminator import NLayerDiscriminator
from keras_ldm.training.optimizers import OptimizerPair

SHARED_METRICS = ("rec_loss", "p_loss", "nll_loss")
ADVERSARIAL_METRICS = ("g_loss", "d_weight", "disc_factor", "d_loss")
REGULARIZATION_METRICS = {"kl": ("kl_loss", "logvar"), "vq": ("codebook_loss", "perplexity")}
REGULARIZATION_DEFAULTS = {
    "kl": {"kl_weight": 1e-6, "logvar_init": 0.0},
    "vq": {"codebook_weight": 1.0},
}


def metric_names(regularization):
    """The names `fit` logs for `"kl"` or `"vq"` training (besides Keras' `loss`).

    Example:
    >>> metric_names("vq")
    ('rec_loss', 'p_loss', 'nll_loss', 'codebook_loss', 'perplexity', 'g_loss', 'd_weight', 'disc_factor', 'd_loss')
    """
    return SHARED_METRICS + REGULARIZATION_METRICS[regularization] + ADVERSARIAL_METRICS


class AutoencoderTrainer:
    """Mixin giving `AutoencoderKL` and `VQAutoencoder` their `compile()`, `fit()` and `evaluate()`.

    The class using it sets `regularization` (`"kl"` or `"vq"`) and provides `encode`,
    `quantize_latents` (VQ), `post_quant_conv`, `decoder` (with `features` and `conv_out`) and
    `_check_images`. Batches are dicts with `"images"`, or image arrays; `fit` logs `loss` (the
    generator's total) and `metric_names(regularization)`. The discriminator's BatchNorm statistics
    move in the discriminator phase only. Losses are computed in float32; no loss scaling is applied,
    so prefer `mixed_bfloat16` to `mixed_float16`.
    """

    regularization = None

    # -- compile ---------------------------------------------------------------------------------

    def compile(
        self,
        optimizer=None,
        discriminator_optimizer=None,
        *,
        perceptual_weight=1.0,
        perceptual_model=None,
        pixel_loss="l1",
        kl_weight=None,
        codebook_weight=None,
        logvar_init=None,
        discriminator=None,
        disc_num_layers=3,
        disc_ndf=64,
        disc_norm="batch",
        disc_loss="hinge",
        disc_start=50001,
        disc_factor=1.0,
        disc_weight=0.5,
        seed=None,
        steps_per_execution=1,
        jit_compile="auto",
        run_eagerly=False,
    ):
        """Sets the losses and the two optimizers of autoencoder training.

        Args:
            optimizer: the autoencoder's optimizer (an `OptimizerPair` sets both); default
                `Adam(1e-4, beta_1=0.5, beta_2=0.9)`.
            discriminator_optimizer: the discriminator's; same default.
            perceptual_weight: weight of LPIPS in the reconstruction loss; 0 builds no VGG.
            perceptual_model: default `LPIPS(weights="imagenet")` (Keras downloads the VGG16
                weights once); pass `LPIPS(weights=None)` or your own layer to avoid it.
            pixel_loss: `"l1"` or `"l2"`.
            kl_weight, logvar_init: `AutoencoderKL` only (defaults 1e-6 and 0).
            codebook_weight: `VQAutoencoder` only (default 1).
            discriminator: a layer `images -> logits`; default a CompVis `NLayerDiscriminator`
                with `disc_num_layers`, `disc_ndf`, `disc_norm` (`"batch"` or `"act"`).
            disc_loss: `"hinge"` or `"vanilla"`.
            disc_start: training step from which the adversarial terms count.
            disc_factor, disc_weight: the adversarial factor and the adaptive weight's factor;
                `disc_factor=0` trains without a discriminator (and skips its cost).
            seed: seed of the posterior samples (KL).
            steps_per_execution, jit_compile, run_eagerly: as in `keras.Model.compile`.
        """
        given = {"kl_weight": kl_weight, "logvar_init": logvar_init, "codebook_weight": codebook_weight}
        allowed = REGULARIZATION_DEFAULTS[self.regularization]
        for name, value in given.items():
            if value is not None and name not in allowed:
                raise ValueError(
                    f"{name}={value!r} does not apply to {type(self).__name__}; its settings are {sorted(allowed)}."
                )
        settings = {
            name: given[name] if given[name] is not None else value for name, value in allowed.items()
        }
        if self.in_channels != self.out_channels:
            raise ValueError(
                f"Training compares images with their reconstructions, so in_channels ({self.in_channels}) "
                f"must equal out_channels ({self.out_channels})."
            )
        if isinstance(optimizer, OptimizerPair):
            if discriminator_optimizer is not None:
                raise ValueError(
                    "`optimizer` is an OptimizerPair; do not pass `discriminator_optimizer` too."
                )
            pair = optimizer
        else:
            pair = OptimizerPair(optimizer, discriminator_optimizer)
        loss = AutoencoderLoss(
            regularization=self.regularization,
            in_channels=self.out_channels,
            perceptual_weight=perceptual_weight,
            perceptual_model=perceptual_model,
            pixel_loss=pixel_loss,
            discriminator=discriminator,
            disc_num_layers=disc_num_layers,
            disc_ndf=disc_ndf,
            disc_norm=disc_norm,
            disc_loss=disc_loss,
            disc_start=disc_start,
            disc_factor=disc_factor,
            disc_weight=disc_weight,
            seed=seed,
            name="autoencoder_loss",
            **settings,
        )
        self._compile_training(
            pair,
            loss,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            run_eagerly=run_eagerly,
        )

    def _compile_training(self, pair, loss, **kwargs):
        super().compile(optimizer=pair, auto_scale_loss=False, **kwargs)
        self._attach("autoencoder_loss", loss)
        self._attach(
            "loss_trackers", [keras.metrics.Mean(name=name) for name in metric_names(self.regularization)]
        )
        pair.build(self._generator_variables(), loss.discriminator.trainable_variables)
        self._training_compile_config = {"optimizer": pair, "loss": loss, **kwargs}

    def _attach(self, name, value):
        """Sets a tracked attribute after build (replacing, and untracking, an earlier one)."""
        tracker = self._tracker
        locked = tracker.locked
        tracker.unlock()
        try:
            old = getattr(self, name, None)
            for item in old if isinstance(old, (list, tuple)) else [old]:
                if item is not None:
                    tracker.untrack(item)
            setattr(self, name, value)
        finally:
            if locked:
                tracker.lock()

    def get_compile_config(self):
        config = getattr(self, "_training_compile_config", None)
        if not self.compiled or config is None:
            return {}
        serialize = keras.saving.serialize_keras_object
        return {
            key: serialize(value) if key in ("optimizer", "loss") else value for key, value in config.items()
        }

    def compile_from_config(self, config):
        config = dict(config)
        pair = keras.saving.deserialize_keras_object(config.pop("optimizer"))
        loss = keras.saving.deserialize_keras_object(config.pop("loss"))
        self._compile_training(pair, loss, **config)

    def _compiled_loss(self):
        loss = getattr(self, "autoencoder_loss", None)
        if loss is None or not self.compiled:
            raise ValueError(
                f"Call `{type(self).__name__}.compile(...)` before training or computing its losses."
            )
        return loss

    def _generator_variables(self):
        """Everything the autoencoder's optimizer trains: the model's trainable variables but the critic's."""
        critic = {id(v) for v in self.autoencoder_loss.discriminator.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in critic]

    # -- the forward pass and the losses ---------------------------------------------------------

    def batch_images(self, data):
        """A batch (dict with `"images"`, or an image array) -> float32 images in [-1, 1], checked."""
        from keras_ldm.models.conditioners import images_to_unit_range  # (models import this module)

        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict):
            if "images" not in x:
                raise ValueError(f"`images`: a batch dict needs an 'images' entry; got keys {sorted(x)}.")
            x = x["images"]
        images = images_to_unit_range(ops.convert_to_tensor(x))
        self._check_images(images)
        return images

    def _decoder_features(self, images, training):
        """Images -> (the decoder's activations before `conv_out`, the regularization terms)."""
        if self.regularization == "kl":
            posterior = self.encode(images, training=training)
            seed = self.autoencoder_loss.seed_generator
            latents = posterior.sample(seed) if training else posterior.mode()
            terms = {"kl_loss": ops.mean(posterior.kl())}
        else:
            quantized = self.quantize_latents(self.encode(images, training=training))
            latents = quantized["quantized"]
            terms = {"codebook_loss": quantized["loss"], "perplexity": quantized["perplexity"]}
        features = self.decoder.features(self.post_quant_conv(latents), training=training)
        return features, terms

    def generator_losses(self, images, step=None, training=False):
        """Every generator-side term for a batch: a dict with `loss`, the logged metrics and `reconstructions`.

        Args:
            images: a batch (uint8, or floats in [-1, 1]; or a dict with `"images"`).
            step: the training step deciding `disc_factor` (default: the model's step counter).
            training: sample the posterior and run the discriminator in training mode.
        """
        self._compiled_loss()
        return self._generator_terms(self.batch_images(images), step, training)

    def _generator_terms(self, images, step, training):
        loss_fn = self.autoencoder_loss
        disc_factor = loss_fn.disc_factor_at(step)
        features, terms = self._decoder_features(images, training)
        conv_out, context = self.decoder.conv_out, self.variables
        if not loss_fn.adversarial:  # disc_factor=0: no discriminator and no adaptive-weight gradients
            reconstructions = conv_out(features)
            rec_terms = loss_fn.reconstruction_losses(images, reconstructions)
            zero = ops.zeros((), "float32")
            loss = rec_terms["nll_loss"] + loss_fn.regularization_loss(terms)
            terms.update(rec_terms)
            terms.update(loss=loss, g_loss=zero, d_weight=zero, disc_factor=disc_factor)
            terms["reconstructions"] = reconstructions
            if loss_fn.logvar is not None:
                terms["logvar"] = ops.convert_to_tensor(loss_fn.logvar)
            return terms

        def reconstruction():
            losses = loss_fn.reconstruction_losses(images, conv_out(features))
            return losses["nll_loss"], losses

        def adversarial():
            reconstructions = conv_out(features)
            return loss_fn.adversarial_loss(reconstructions, training=training), reconstructions

        # The values stay differentiable for the outer (autoencoder) gradient; the kernel gradients
        # only feed the adaptive weight, which carries no gradient.
        (nll, rec_terms), (rec_grad,) = gradients.value_and_grad(reconstruction, [conv_out.kernel], context)
        (g_loss, reconstructions), (adv_grad,) = gradients.value_and_grad(
            adversarial, [conv_out.kernel], context
        )
        d_weight = loss_fn.disc_weight * adaptive_weight(rec_grad, adv_grad)
        loss = nll + loss_fn.regularization_loss(terms) + d_weight * disc_factor * g_loss
        terms.update(rec_terms)
        terms.update(
            loss=loss,
            g_loss=g_loss,
            d_weight=d_weight,
            disc_factor=disc_factor,
            reconstructions=reconstructions,
        )
        if loss_fn.logvar is not None:
            terms["logvar"] = ops.convert_to_tensor(loss_fn.logvar)
        return terms

    # -- the Keras steps -------------------------------------------------------------------------

    def check_data(self, x):
        """Checks the images of `x` (arrays, a dict, or a `tf.data.Dataset`'s spec) before training.

        `fit`, `evaluate`, `train_on_batch` and `test_on_batch` call it first: bad input fails with
        a `ValueError` naming `images` before anything is compiled (and before the JAX trainer
        detaches the variables for its compiled step).
        """
        if hasattr(x, "element_spec"):  # tf.data: check the static shape of the spec
            x = x.element_spec
            x = x[0] if isinstance(x, tuple) else x
        if isinstance(x, dict):
            if "images" not in x:
                raise ValueError(f"`images`: a batch dict needs an 'images' entry; got keys {sorted(x)}.")
            x = x["images"]
        shape = getattr(x, "shape", None)
        if shape is None:
            return  # a generator or PyDataset: checked when the step is traced
        shape = tuple(None if s is None else int(s) for s in shape)
        self._check_images(keras.KerasTensor(shape))
        critic = self.autoencoder_loss.discriminator if getattr(self, "autoencoder_loss", None) else None
        if isinstance(critic, NLayerDiscriminator):
            critic.compute_output_shape(shape)

    def fit(self, x=None, y=None, **kwargs):
        self._compiled_loss()
        self.check_data(x)
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        self._compiled_loss()
        self.check_data(x)
        return super().evaluate(x, y, **kwargs)

    def train_on_batch(self, x, y=None, **kwargs):
        self._compiled_loss()
        self.check_data(x)
        return super().train_on_batch(x, y, **kwargs)

    def test_on_batch(self, x, y=None, **kwargs):
        self._compiled_loss()
        self.check_data(x)
        return super().test_on_batch(x, y, **kwargs)

    def train_step(self, *args):
        return gradients.run_train_step(self, self._fit_step, *args)

    def test_step(self, *args):
        return gradients.run_test_step(self, self._evaluate_step, *args)

    def _fit_step(self, data):
        loss_fn = self._compiled_loss()
        images = self.batch_images(data)
        pair = self.optimizer
        step = gradients.snapshot([loss_fn.step])[0]
        critic_state = loss_fn.discriminator.variables
        generator_variables = self._generator_variables()

        # 1. The autoencoder.
        critic_before = gradients.snapshot(critic_state)

        def generator_objective():
            terms = self._generator_terms(images, step, training=True)
            return terms["loss"], terms

        (_, terms), grads = gradients.value_and_grad(generator_objective, generator_variables, self.variables)
        gradients.apply_gradients(pair.generator, grads, generator_variables)
        for variable, value in zip(critic_state, critic_before):
            variable.assign(value)
        if not loss_fn.adversarial:
            loss_fn.step.assign(step + 1)
            return self._log(dict(terms, d_loss=ops.zeros((), "float32")), images)

        # 2. The discriminator, on the reconstructions of step 1; kept only from disc_start on.
        critic_variables = loss_fn.discriminator.trainable_variables
        guarded = critic_state + pair.discriminator.variables
        before = gradients.snapshot(guarded)
        fakes = ops.stop_gradient(terms["reconstructions"])

        def discriminator_objective():
            losses = loss_fn.discriminator_losses(images, fakes, step=step, training=True)
            return losses["d_loss"], losses

        (d_loss, _), d_grads = gradients.value_and_grad(
            discriminator_objective, critic_variables, self.variables
        )
        gradients.apply_gradients(pair.discriminator, d_grads, critic_variables)
        active = terms["disc_factor"] > 0
        for variable, value in zip(guarded, before):
            variable.assign(ops.where(active, variable.value, value))
        loss_fn.step.assign(step + 1)
        return self._log(dict(terms, d_loss=d_loss), images)

    def _evaluate_step(self, data):
        loss_fn = self._compiled_loss()
        images = self.batch_images(data)
        terms = self._generator_terms(images, None, training=False)
        d_terms = loss_fn.discriminator_losses(images, terms["reconstructions"], training=False)
        return self._log(dict(terms, d_loss=d_terms["d_loss"]), images)

    def _log(self, terms, images):
        batch = ops.shape(images)[0]
        trackers = [self._loss_tracker, *self.loss_trackers]
        for tracker in trackers:
            tracker.update_state(ops.stop_gradient(terms[tracker.name]), sample_weight=batch)
        return {tracker.name: tracker.result() for tracker in trackers}
