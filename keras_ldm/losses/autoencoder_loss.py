"""The first-stage training objective (CompVis `LPIPSWithDiscriminator` / taming `VQLPIPSWithDiscriminator`).

Generator (autoencoder) loss, for images `x` and reconstructions `x_rec` in [-1, 1]:

    rec      = |x - x_rec| + perceptual_weight * lpips(x, x_rec)          (per pixel; l2 with pixel_loss="l2")
    nll      = sum(rec / exp(logvar) + logvar) / B                         (KL: learned log-variance)
             = mean(rec)                                                   (VQ)
    g_loss   = -mean(D(x_rec))
    d_weight = disc_weight * clip(||grad_W nll|| / (||grad_W g_loss|| + 1e-4), 0, 1e4)   (W: the decoder's
               last conv kernel; no gradient flows through d_weight)
    loss     = nll + kl_weight * KL  (or codebook_weight * codebook loss)
               + d_weight * disc_factor * g_loss

Discriminator loss: `disc_factor * hinge_d_loss(D(x), D(x_rec))` (or `vanilla_d_loss`), where
`disc_factor` is 0 before step `disc_start` (CompVis `adopt_weight`).
"""

import keras
from keras import ops

from keras_ldm.losses.discriminator import NLayerDiscriminator, discriminator_loss
from keras_ldm.losses.perceptual import LPIPS

REGULARIZATIONS = ("kl", "vq")
PIXEL_LOSSES = ("l1", "l2")
MAX_ADAPTIVE_WEIGHT = 1e4
ADAPTIVE_EPSILON = 1e-4


def adopt_weight(weight, step, threshold, value=0.0):
    """`weight` from step `threshold` on and `value` before it (CompVis `adopt_weight`), as a float32 tensor.

    Example:
    >>> [float(adopt_weight(1.0, step, threshold=2)) for step in range(4)]
    [0.0, 0.0, 1.0, 1.0]
    """
    step = ops.convert_to_tensor(step)
    return ops.where(step >= threshold, ops.cast(weight, "float32"), ops.cast(value, "float32"))


def adaptive_weight(rec_grad, adv_grad, max_weight=MAX_ADAPTIVE_WEIGHT, epsilon=ADAPTIVE_EPSILON):
    """`clip(||rec_grad|| / (||adv_grad|| + epsilon), 0, max_weight)` with no gradient through it.

    `rec_grad` and `adv_grad` are the gradients of the reconstruction (nll) loss and of the generator's
    adversarial loss with respect to the decoder's last layer (CompVis `calculate_adaptive_weight`,
    before the `disc_weight` factor).

    Example:
    >>> float(adaptive_weight(keras.ops.array([3.0, 4.0]), keras.ops.array([0.0, 1.0]), epsilon=0.0))
    5.0
    """
    rec_norm = ops.sqrt(ops.sum(ops.square(ops.cast(rec_grad, "float32"))))
    adv_norm = ops.sqrt(ops.sum(ops.square(ops.cast(adv_grad, "float32"))))
    return ops.stop_gradient(ops.clip(rec_norm / (adv_norm + epsilon), 0.0, max_weight))


def generator_adversarial_loss(logits_fake):
    """`-mean(D(x_rec))`: the generator's side of the GAN game (for hinge and vanilla alike)."""
    return -ops.mean(ops.cast(logits_fake, "float32"))


@keras.saving.register_keras_serializable(package="keras_ldm")
class AutoencoderLoss(keras.layers.Layer):
    """The loss settings and loss-side weights of first-stage training: LPIPS, discriminator, `logvar`.

    `AutoencoderKL.compile(...)` and `VQAutoencoder.compile(...)` build one from their keyword
    arguments; the two `fit` phases call `reconstruction_losses`, `adversarial_loss` and
    `discriminator_losses`.

    Args:
        regularization: `"kl"` (nll with a learned `logvar`, summed per example) or `"vq"` (mean).
        in_channels: image channels (the discriminator's input).
        perceptual_weight: weight of the LPIPS term inside `rec` (0 disables it; no VGG is built).
        perceptual_model: a layer `(x0, x1) -> (B,)` distances; default `LPIPS(weights="imagenet")`.
        pixel_loss: `"l1"` (CompVis) or `"l2"`.
        kl_weight: KL weight (`"kl"` only).
        codebook_weight: codebook-loss weight (`"vq"` only).
        logvar_init: initial `logvar` (`"kl"` only); `logvar` is trained with the autoencoder.
        discriminator: a layer `images -> logits`; default `NLayerDiscriminator(in_channels,
            disc_ndf, disc_num_layers, disc_norm)`.
        disc_num_layers, disc_ndf, disc_norm: the default discriminator's settings.
        disc_loss: `"hinge"` or `"vanilla"`.
        disc_start: the step from which the discriminator trains and the adversarial term counts.
        disc_factor: the factor on both adversarial terms once active.
        disc_weight: the factor on the adaptive weight.
        seed: seed of the generator behind posterior samples.

    Example:
    >>> loss = AutoencoderLoss("vq", perceptual_weight=0.0, disc_num_layers=1, disc_ndf=8)
    >>> x = keras.ops.zeros((2, 8, 8, 3))
    >>> terms = loss.reconstruction_losses(x, x + 0.5)
    >>> float(terms["rec_loss"]), float(terms["nll_loss"])
    (0.5, 0.5)
    """

    def __init__(
        self,
        regularization="kl",
        in_channels=3,
        perceptual_weight=1.0,
        perceptual_model=None,
        pixel_loss="l1",
        kl_weight=1e-6,
        codebook_weight=1.0,
        logvar_init=0.0,
        discriminator=None,
        disc_num_layers=3,
        disc_ndf=64,
        disc_norm="batch",
        disc_loss="hinge",
        disc_start=50001,
        disc_factor=1.0,
        disc_weight=0.5,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if regularization not in REGULARIZATIONS:
            raise ValueError(f"regularization={regularization!r}; expected one of {REGULARIZATIONS}.")
        if pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss={pixel_loss!r}; expected one of {PIXEL_LOSSES}.")
        for name, value in (
            ("perceptual_weight", perceptual_weight),
            ("kl_weight", kl_weight),
            ("codebook_weight", codebook_weight),
            ("disc_factor", disc_factor),
            ("disc_weight", disc_weight),
            ("disc_start", disc_start),
        ):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}={value!r}; expected a non-negative number.")
        self.d_loss_fn = discriminator_loss(disc_loss)
        self.regularization, self.in_channels = regularization, in_channels
        self.perceptual_weight, self.pixel_loss = float(perceptual_weight), pixel_loss
        self.kl_weight, self.codebook_weight = float(kl_weight), float(codebook_weight)
        self.logvar_init = float(logvar_init)
        self.disc_num_layers, self.disc_ndf, self.disc_norm = disc_num_layers, disc_ndf, disc_norm
        self.disc_loss, self.disc_start = disc_loss, int(disc_start)
        self.disc_factor, self.disc_weight = float(disc_factor), float(disc_weight)
        self.seed = seed
        if perceptual_weight > 0 and perceptual_model is None:
            perceptual_model = LPIPS(weights="imagenet", name="perceptual")
        self.perceptual = perceptual_model if perceptual_weight > 0 else None
        if discriminator is None:
            discriminator = NLayerDiscriminator(
                in_channels, disc_ndf, disc_num_layers, disc_norm, name="discriminator"
            )
        self.discriminator = discriminator
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.logvar = None
        if regularization == "kl":
            self.logvar = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(logvar_init), name="logvar"
            )
        self.step = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="step"
        )
        if not self.discriminator.built:
            self.discriminator.build((None, None, None, in_channels))
        self.build()

    def build(self, input_shape=None):
        self.built = True

    @property
    def adversarial(self):
        """Whether the adversarial terms exist at all (`disc_factor > 0`); training skips the discriminator if not."""
        return self.disc_factor > 0

    def disc_factor_at(self, step=None):
        """The adversarial factor at `step` (default: the training step counter)."""
        return adopt_weight(self.disc_factor, self.step if step is None else step, self.disc_start)

    def perceptual_losses(self, images, reconstructions):
        """Per-example LPIPS distances `(B,)` (zeros when the perceptual term is off)."""
        if self.perceptual is None:
            return ops.zeros((ops.shape(images)[0],), "float32")
        if isinstance(self.perceptual, LPIPS) and images.shape[-1] in (1, 4):  # VGG compares RGB images
            images, reconstructions = _as_rgb(images), _as_rgb(reconstructions)
        return ops.cast(self.perceptual(images, reconstructions), "float32")

    def reconstruction_losses(self, images, reconstructions):
        """`rec_loss` (mean pixel loss), `p_loss` (mean LPIPS) and `nll_loss` (see the module doc)."""
        images = ops.cast(images, "float32")
        reconstructions = ops.cast(reconstructions, "float32")
        error = reconstructions - images
        pixel = ops.abs(error) if self.pixel_loss == "l1" else ops.square(error)
        perceptual = self.perceptual_losses(images, reconstructions)
        rec = pixel + self.perceptual_weight * perceptual[:, None, None, None]
        if self.regularization == "kl":
            logvar = ops.cast(self.logvar, "float32")
            per_example = ops.sum(rec / ops.exp(logvar) + logvar, axis=(1, 2, 3))
            nll = ops.mean(per_example)
        else:
            nll = ops.mean(rec)
        return {"rec_loss": ops.mean(pixel), "p_loss": ops.mean(perceptual), "nll_loss": nll}

    def regularization_loss(self, terms):
        """`kl_weight * kl_loss` or `codebook_weight * codebook_loss` from the autoencoder's terms."""
        if self.regularization == "kl":
            return self.kl_weight * terms["kl_loss"]
        return self.codebook_weight * terms["codebook_loss"]

    def adversarial_loss(self, reconstructions, training=None):
        """`g_loss = -mean(D(x_rec))`."""
        return generator_adversarial_loss(self.discriminator(reconstructions, training=training))

    def discriminator_losses(self, images, reconstructions, step=None, training=None):
        """`d_loss` (weighted by the disc factor) and the mean real/fake logits."""
        logits_real = ops.cast(self.discriminator(images, training=training), "float32")
        logits_fake = ops.cast(self.discriminator(reconstructions, training=training), "float32")
        d_loss = self.disc_factor_at(step) * self.d_loss_fn(logits_real, logits_fake)
        return {
            "d_loss": d_loss,
            "logits_real": ops.mean(logits_real),
            "logits_fake": ops.mean(logits_fake),
        }

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "regularization": self.regularization,
            "in_channels": self.in_channels,
            "perceptual_weight": self.perceptual_weight,
            "perceptual_model": serialize(self.perceptual) if self.perceptual is not None else None,
            "pixel_loss": self.pixel_loss,
            "kl_weight": self.kl_weight,
            "codebook_weight": self.codebook_weight,
            "logvar_init": self.logvar_init,
            "discriminator": serialize(self.discriminator),
            "disc_num_layers": self.disc_num_layers,
            "disc_ndf": self.disc_ndf,
            "disc_norm": self.disc_norm,
            "disc_loss": self.disc_loss,
            "disc_start": self.disc_start,
            "disc_factor": self.disc_factor,
            "disc_weight": self.disc_weight,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("perceptual_model", "discriminator"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _as_rgb(images):
    """Grey images as RGB (repeated), RGBA images without their alpha channel."""
    return ops.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]
