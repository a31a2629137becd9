"""`tf.data` helpers producing the batches `LatentDiffusion.fit` consumes, on every Keras backend.

- `images`: image folders (+ caption sidecar files) -> `{"images"[, "prompts"]}`; uint8 <-> [-1, 1].
- `degradations`: super-resolution inputs (`low_res`): bicubic and the BSRGAN degradation chain.
- `masks`: inpainting masks (`masks`): random boxes and brush strokes.
- `shapes`: the procedural "a {color} {shape} on a {background} background" text-to-image dataset and an
  analyser that reads generated images back.
- `scenes`: procedural scenes of several shapes with their segmentation maps, boxes and labels (semantic
  synthesis, layout-to-image), and the two scores that read generated scenes back.
- `photos`: scikit-image's bundled photographs with a fixed train / held-out split, as random crops.

TensorFlow is the data library here, not the Keras backend, and these modules never import it: they read
`tf` from `keras_ldm.backend.lazy_tensorflow`, which imports it on first use. So the package imports on a
host without TensorFlow and its numpy helpers (shapes, crops, masks) work there; the pipelines need it.
"""

from keras_ldm.data.degradations import bicubic_downsample, bsr_degrade, super_resolution_pairs
from keras_ldm.data.images import image_folder_dataset, list_images, to_uint8, to_unit_range
from keras_ldm.data.masks import box_masks, inpainting_pairs, random_masks, stroke_masks
from keras_ldm.data.photos import (
    load_photo,
    load_photos,
    photo_crops_dataset,
    photo_names,
    random_photo_crops,
)
from keras_ldm.data.prompts import keep_keys, tokenize_prompts
from keras_ldm.data.scenes import layout_accuracy, scenes_arrays, segmentation_accuracy
from keras_ldm.data.shapes import (
    COLOR_VALUES,
    COLORS,
    SHAPES,
    all_prompts,
    combinations,
    describe_image,
    label_of,
    make_prompt,
    parse_prompt,
    render_shape,
    shape_parameters,
    shapes_dataset,
)

__all__ = [
    "COLORS",
    "COLOR_VALUES",
    "SHAPES",
    "all_prompts",
    "bicubic_downsample",
    "box_masks",
    "bsr_degrade",
    "combinations",
    "describe_image",
    "image_folder_dataset",
    "inpainting_pairs",
    "keep_keys",
    "label_of",
    "layout_accuracy",
    "list_images",
    "load_photo",
    "load_photos",
    "make_prompt",
    "parse_prompt",
    "photo_crops_dataset",
    "photo_names",
    "random_masks",
    "random_photo_crops",
    "render_shape",
    "scenes_arrays",
    "segmentation_accuracy",
    "shape_parameters",
    "shapes_dataset",
    "stroke_masks",
    "super_resolution_pairs",
    "to_uint8",
    "to_unit_range",
    "tokenize_prompts",
]
