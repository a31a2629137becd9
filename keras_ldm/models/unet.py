"""The time-conditional UNet of the LDM, with every CompVis `UNetModel` knob."""

import keras
from keras import ops

from keras_ldm.layers.attention import AttnBlock, SpatialTransformer
from keras_ldm.layers.conv import conv2d
from keras_ldm.layers.embeddings import TimestepEmbedding
from keras_ldm.layers.normalization import group_norm
from keras_ldm.layers.resnet import Downsample, ResBlock, Upsample
from keras_ldm.models.blocks import Stage, apply_attention, build_stage, mid_stage, run_mid_stage
from keras_ldm.models.checks import check_batch, check_feature_map, check_sequence

EPSILON = 1e-5  # GroupNorm epsilon of the UNet's ResBlocks and AttnBlocks


@keras.saving.register_keras_serializable(package="keras_ldm")
class UNet(keras.Model):
    """Predicts the noise (or x0 / v) of latents `x_t` at timesteps `t`, optionally conditioned.

    Conditioning enters by cross-attention over `context` (`context_dim` set: SpatialTransformer
    blocks), by a class embedding added to the time embedding (`num_classes`), or by
    concatenation with the input (`in_channels` counts the extra channels).

    Args:
        in_channels, out_channels: channels of `x_t` (plus concatenated conditions) and of the output.
        model_channels: base width; level i has `model_channels * channel_mult[i]` channels.
        channel_mult: width multipliers per resolution level.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: downsample factors (1, 2, 4, ...) at which attention is used.
        num_heads: attention heads (used when `num_head_channels` is not set).
        num_head_channels: width of each head; the head count then follows the level width.
            A negative value (CompVis writes -1) means "not set" for either.
        transformer_depth: BasicTransformerBlocks per SpatialTransformer.
        context_dim: width of the cross-attention context; None uses plain AttnBlocks.
        use_scale_shift_norm: FiLM-style timestep injection in the ResBlocks.
        resblock_updown: resample with ResBlocks instead of Downsample/Upsample.
        num_classes: size of the class-embedding table (its output is added to the time embedding).
        dropout: dropout rate in the ResBlocks.
        conv_resample: whether Downsample/Upsample use convolutions.
        flip_sin_to_cos, freq_shift: sinusoidal timestep layout (CompVis: True, 0).
        norm_num_groups: GroupNorm groups (CompVis: 32).
        gradient_checkpointing: in training, recompute each block's activations in the backward pass
            instead of keeping them (`keras.remat`): less memory for big UNets, about a third more compute.

    Example:
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
    ...             num_res_blocks=1, attention_resolutions=(2,), num_heads=2, context_dim=16)
    >>> x = keras.ops.zeros((2, 8, 8, 4))
    >>> tuple(unet(x, keras.ops.array([10, 500]), context=keras.ops.zeros((2, 5, 16))).shape)
    (2, 8, 8, 4)
    """

    def __init__(
        self,
        in_channels=4,
        out_channels=4,
        model_channels=320,
        channel_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(4, 2, 1),
        num_heads=None,
        num_head_channels=None,
        transformer_depth=1,
        context_dim=None,
        use_scale_shift_norm=False,
        resblock_updown=False,
        num_classes=None,
        dropout=0.0,
        conv_resample=True,
        flip_sin_to_cos=True,
        freq_shift=0.0,
        norm_num_groups=32,
        gradient_checkpointing=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        num_heads, num_head_channels = _unset_if_negative(num_heads), _unset_if_negative(num_head_channels)
        if not (num_heads or num_head_channels):
            raise ValueError(
                "UNet needs `num_heads` or `num_head_channels` (the middle block always has attention); got neither."
            )
        self.architecture = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=list(channel_mult),
            num_res_blocks=num_res_blocks,
            attention_resolutions=list(attention_resolutions),
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            transformer_depth=transformer_depth,
            context_dim=context_dim,
            use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown,
            num_classes=num_classes,
            dropout=dropout,
            conv_resample=conv_resample,
            flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift,
            norm_num_groups=norm_num_groups,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.context_dim, self.num_classes = context_dim, num_classes
        self.channel_mult = tuple(channel_mult)
        embed_dim = 4 * model_channels
        self.embed_dim = embed_dim
        self.time_embedding = TimestepEmbedding(
            model_channels, embed_dim, flip_sin_to_cos, freq_shift, name="time_embedding"
        )
        self.class_embedding = None
        if num_classes is not None:
            self.class_embedding = keras.layers.Embedding(num_classes, embed_dim, name="class_embedding")
        self.conv_in = conv2d(model_channels, name="conv_in")
        self.down_blocks, self.up_blocks = [], []
        self._make_blocks()
        self.conv_norm_out = group_norm(EPSILON, norm_num_groups, name="conv_norm_out")
        self.conv_out = conv2d(out_channels, zero_init=True, name="conv_out")
        self.build()

    # -- construction -------------------------------------------------------------------------

    def _resblock(self, channels, name, resample=None):
        a = self.architecture
        return ResBlock(
            channels,
            self.embed_dim,
            a["dropout"],
            a["use_scale_shift_norm"],
            resample=resample,
            epsilon=EPSILON,
            zero_init=True,
            groups=a["norm_num_groups"],
            name=name,
        )

    def _attention(self, channels, name):
        a = self.architecture
        if a["num_head_channels"]:
            heads, head_dim = channels // a["num_head_channels"], a["num_head_channels"]
        else:
            heads, head_dim = a["num_heads"], channels // a["num_heads"]
        if heads * head_dim != channels:
            raise ValueError(f"{channels} channels do not split into {heads} heads of {head_dim}.")
        if self.context_dim is None:
            return AttnBlock(heads, EPSILON, zero_init_out=True, groups=a["norm_num_groups"], name=name)
        return SpatialTransformer(
            heads,
            head_dim,
            a["transformer_depth"],
            self.context_dim,
            groups=a["norm_num_groups"],
            name=name,
        )

    def _resampler(self, channels, direction, name):
        if self.architecture["resblock_updown"]:
            return self._resblock(channels, name, resample=direction)
        if direction == "down":
            return Downsample(channels, self.architecture["conv_resample"], "symmetric", name=name)
        return Upsample(channels, self.architecture["conv_resample"], name=name)

    def _make_blocks(self):
        a = self.architecture
        levels = len(self.channel_mult)
        for level, mult in enumerate(self.channel_mult):
            width, prefix = a["model_channels"] * mult, f"down_blocks_{level}"
            with_attention = 2**level in a["attention_resolutions"]
            self.down_blocks.append(
                Stage(
                    [self._resblock(width, f"{prefix}_resnets_{j}") for j in range(a["num_res_blocks"])],
                    [self._attention(width, f"{prefix}_attentions_{j}") for j in range(a["num_res_blocks"])]
                    if with_attention
                    else [],
                    self._resampler(width, "down", f"{prefix}_downsample") if level < levels - 1 else None,
                    name=prefix,
                )
            )
        top = a["model_channels"] * self.channel_mult[-1]
        self.mid_block = mid_stage(
            top,
            self._attention(top, "mid_block_attentions_0"),
            embed_dim=self.embed_dim,
            dropout=a["dropout"],
            use_scale_shift_norm=a["use_scale_shift_norm"],
            epsilon=EPSILON,
            zero_init=True,
            groups=a["norm_num_groups"],
        )
        for index, level in enumerate(reversed(range(levels))):
            width, prefix = a["model_channels"] * self.channel_mult[level], f"up_blocks_{index}"
            with_attention = 2**level in a["attention_resolutions"]
            count = a["num_res_blocks"] + 1
            self.up_blocks.append(
                Stage(
                    [self._resblock(width, f"{prefix}_resnets_{j}") for j in range(count)],
                    [self._attention(width, f"{prefix}_attentions_{j}") for j in range(count)]
                    if with_attention
                    else [],
                    self._resampler(width, "up", f"{prefix}_upsample") if level > 0 else None,
                    name=prefix,
                )
            )

    def _skip_channels(self):
        """Channels of every tensor the down path hands to the up path, in order."""
        a = self.architecture
        channels = [a["model_channels"]]
        for level, mult in enumerate(self.channel_mult):
            channels += [a["model_channels"] * mult] * a["num_res_blocks"]
            if level < len(self.channel_mult) - 1:
                channels.append(a["model_channels"] * mult)
        return channels

    def build(self, input_shape=None):
        a = self.architecture
        self.time_embedding.build()
        if self.class_embedding is not None:
            self.class_embedding.build((None,))
        self.conv_in.build((None, None, None, self.in_channels))
        channels = a["model_channels"]
        for level, stage in enumerate(self.down_blocks):
            build_stage(stage, channels, a["model_channels"] * self.channel_mult[level], self.context_dim)
            channels = a["model_channels"] * self.channel_mult[level]
        build_stage(self.mid_block, channels, channels, self.context_dim)
        skips = self._skip_channels()
        for stage, level in zip(self.up_blocks, reversed(range(len(self.channel_mult)))):
            width = a["model_channels"] * self.channel_mult[level]
            for resnet in stage.resnets:
                resnet.build((None, None, None, channels + skips.pop()))
                channels = width
            build_stage(Stage([], stage.attentions, stage.resampler), width, width, self.context_dim)
            stage.built = True
        self.conv_norm_out.build((None, None, None, channels))
        self.conv_out.build((None, None, None, channels))
        self.built = True

    # -- forward --------------------------------------------------------------------------------

    def _check_inputs(self, x, timesteps, context, labels):
        check_feature_map(x, "x", self.in_channels, 2 ** (len(self.channel_mult) - 1))
        batch = x.shape[0]
        if len(timesteps.shape) > 1:
            raise ValueError(
                f"`timesteps` must be a scalar or have shape (batch,); got shape {tuple(timesteps.shape)}."
            )
        if len(timesteps.shape) == 1 and timesteps.shape[0] != 1:
            check_batch(timesteps.shape, "timesteps", batch)
        if self.context_dim is not None:
            if context is None:
                raise ValueError(
                    f"This UNet cross-attends to a context of width {self.context_dim}; pass `context`."
                )
            check_sequence(context, "context", self.context_dim, batch)
        elif context is not None:
            raise ValueError("`context` was given but this UNet has no cross-attention (context_dim=None).")
        if self.num_classes is not None:
            if labels is None:
                raise ValueError(
                    f"This UNet is class-conditional ({self.num_classes} classes); pass `labels`."
                )
            if len(labels.shape) != 1:
                raise ValueError(f"`labels` must have shape (batch,); got shape {tuple(labels.shape)}.")
            check_batch(labels.shape, "labels", batch)
        elif labels is not None:
            raise ValueError("`labels` were given but this UNet is not class-conditional (num_classes=None).")

    def _embed(self, timesteps, labels, batch):
        timesteps = ops.broadcast_to(ops.reshape(timesteps, (-1,)), (batch,))
        emb = self.time_embedding(timesteps)
        if self.class_embedding is not None:
            emb = emb + ops.cast(self.class_embedding(ops.cast(labels, "int32")), emb.dtype)
        return emb

    def _resample(self, resampler, h, emb, training):
        if isinstance(resampler, ResBlock):
            return resampler(h, emb, training=training)
        return resampler(h)

    def call(self, x, timesteps, context=None, labels=None, training=None):
        """`x` `(B, H, W, in_channels)`, `timesteps` `(B,)` or scalar -> `(B, H, W, out_channels)`."""
        timesteps = ops.convert_to_tensor(timesteps)
        labels = None if labels is None else ops.convert_to_tensor(labels)
        self._check_inputs(x, timesteps, context, labels)
        emb = self._embed(timesteps, labels, ops.shape(x)[0])
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down_blocks:
            for j, resnet in enumerate(stage.resnets):
                attention = stage.attentions[j] if stage.attentions else None
                h = self._block(resnet, attention, h, emb, context, training)
                skips.append(h)
            if stage.resampler is not None:
                h = self._resample(stage.resampler, h, emb, training)
                skips.append(h)
        h = run_mid_stage(self.mid_block, h, emb, context, training)
        for stage in self.up_blocks:
            for j, resnet in enumerate(stage.resnets):
                attention = stage.attentions[j] if stage.attentions else None
                h = ops.concatenate([h, ops.cast(skips.pop(), h.dtype)], axis=-1)
                h = self._block(resnet, attention, h, emb, context, training)
            if stage.resampler is not None:
                h = self._resample(stage.resampler, h, emb, training)
        return self.conv_out(ops.silu(self.conv_norm_out(h)))

    def _block(self, resnet, attention, h, emb, context, training):
        """ResBlock, then attention if the level has it; rematerialized under `gradient_checkpointing`."""

        def run(h, emb, *context):  # no context: no argument (TensorFlow's recompute_grad refuses None)
            h = resnet(h, emb, training=training)
            return h if attention is None else apply_attention(attention, h, context[0] if context else None, training)

        if self.gradient_checkpointing and training:
            run = keras.remat(run)
        return run(h, emb) if context is None else run(h, emb, context)

    def get_config(self):
        return {
            **super().get_config(),
            **self.architecture,
            "gradient_checkpointing": self.gradient_checkpointing,
        }


def _unset_if_negative(value):
    return None if value is not None and value < 0 else value
