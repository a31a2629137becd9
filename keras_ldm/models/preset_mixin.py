"""`from_preset` / `save_to_preset` / `presets` for keras_ldm models, keras-hub style.

`keras_ldm.presets` sits above the models (it builds them, and converts checkpoints into them), so this
module imports it only inside the methods, when a preset is loaded or saved: importing a model never
imports the preset machinery, and no import cycle runs through here.
"""


class _ClassProperty:
    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


class PresetMixin:
    """Adds preset loading and saving to a model class; `preset_kind` says which named presets fit it."""

    preset_kind = "latent_diffusion"

    @_ClassProperty
    def presets(cls):
        """`{name: description}` of the named presets this class loads."""
        from keras_ldm.presets import loading

        presets = loading.all_presets()
        return {name: presets[name] for name in loading.preset_names(cls.preset_kind)}

    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, config=None):
        """Loads a model: a preset name (see `presets`), a preset or diffusers folder, `hf://org/name`, or a
        CompVis `.ckpt` with its YAML `config`. See `keras_ldm.presets.loading`.

        Args:
            preset: where the model comes from.
            load_weights: False builds the architecture with random weights.
            dtype: a dtype policy (e.g. `"mixed_bfloat16"`); default: as saved.
            config: the YAML config of a CompVis `.ckpt`.
        """
        from keras_ldm.presets import loading

        model = loading.from_preset(preset, load_weights, dtype, config, kind=cls.preset_kind)
        if not isinstance(model, cls):
            raise ValueError(
                f"Preset {preset!r} holds a {type(model).__name__}, not a {cls.__name__}; load it with "
                f"{type(model).__name__}.from_preset."
            )
        return model

    def save_to_preset(self, path, description="", overwrite=True):
        """Writes this model as a preset folder: config, weights, tokenizer vocabulary, metadata.

        Args:
            path: the folder; `from_preset(path)` loads it back.
            description: one line stored in `metadata.json`.
            overwrite: replace an existing preset in `path`.
        """
        write_preset(self, path, description=description, overwrite=overwrite)


def write_preset(model, path, **options):
    """`keras_ldm.presets.files.save_preset(model, path, **options)`."""
    from keras_ldm.presets.files import save_preset

    save_preset(model, path, **options)
