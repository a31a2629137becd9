"""Conditioning inputs of the LDM: class embeddings for cross-attention and concatenated images."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ldm")
class ClassEmbedder(keras.layers.Layer):
    """Class labels `(B,)` -> a one-token cross-attention context `(B, 1, embed_dim)` (CompVis `ClassEmbedder`).

    With `null_class=True` the table has one extra row, index `num_classes`, used as the
    "no class" condition for classifier-free guidance.

    Example:
    >>> embedder = ClassEmbedder(num_classes=10, embed_dim=16)
    >>> tuple(embedder(keras.ops.array([0, 9])).shape), embedder.null_label
    ((2, 1, 16), 10)
    """

    def __init__(self, num_classes, embed_dim, null_class=True, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.null_class = null_class
        self.embedding = keras.layers.Embedding(num_classes + int(null_class), embed_dim, name="embedding")

    @property
    def null_label(self):
        """The label of the unconditional ("null") class, or None without one."""
        return self.num_classes if self.null_class else None

    def build(self, input_shape=None):
        self.embedding.build((None,))

    def call(self, labels):
        return self.embedding(ops.cast(labels, "int32"))[:, None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embed_dim": self.embed_dim,
            "null_class": self.null_class,
        }


def images_to_unit_range(images):
    """uint8 images in [0, 255] -> float32 in [-1, 1]; float images are taken to be in [-1, 1] already."""
    if "int" in str(images.dtype):
        return ops.cast(images, "float32") / 127.5 - 1.0
    return ops.cast(images, "float32")


def resize_to(images, height, width, interpolation="bicubic"):
    """Resizes `(B, H, W, C)` to `(B, height, width, C)` (a no-op when the size matches)."""
    if tuple(images.shape[1:3]) == (height, width):
        return images
    return ops.image.resize(images, (height, width), interpolation=interpolation)


def masked_images(images, masks):
    """Images with the region to fill (`masks == 1`) zeroed, as CompVis' inpainting data: `(1 - m) * x`."""
    return (1.0 - masks) * images
