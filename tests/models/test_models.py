"""Model-level checks: reference parameter counts (built symbolically), serialization, bad input."""

import json

import keras
import numpy as np
import pytest

from keras_ldm.convert import from_diffusers
from keras_ldm.models import AutoencoderKL, UNet, VQAutoencoder
from tests.conftest import to_numpy

TEXT2IM_UNET = dict(
    in_channels=4,
    out_channels=4,
    model_channels=320,
    channel_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    attention_resolutions=(4, 2, 1),
    num_heads=8,
    context_dim=1280,
)
KL_F8 = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, embed_dim=4)


def count_symbolically(cls, **config):
    """Parameters of a model whose weights are never allocated (deferred inside a StatelessScope)."""
    with keras.StatelessScope(initialize_variables=False):
        return cls(**config).count_params()


def test_text2im_large_256_parameter_counts():
    assert count_symbolically(UNet, **TEXT2IM_UNET) == 872_300_484
    assert count_symbolically(AutoencoderKL, **KL_F8) == 83_653_863


def test_big_configs_match_diffusers_parameter_counts():
    """CompVis celebahq-style UNet2DModel and vq-f4 with diffusers built on the meta device."""
    import diffusers
    import torch

    with torch.device("meta"):
        unet = diffusers.UNet2DModel(
            sample_size=64,
            in_channels=3,
            out_channels=3,
            block_out_channels=(224, 448, 672, 896),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=32,
        )
        vq = diffusers.VQModel(
            block_out_channels=(128, 256, 512),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=2,
            latent_channels=3,
            num_vq_embeddings=8192,
        )
    ours_unet = count_symbolically(
        UNet,
        in_channels=3,
        out_channels=3,
        model_channels=224,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_resolutions=(8, 4, 2),
        num_head_channels=32,
    )
    assert ours_unet == sum(p.numel() for p in unet.parameters())
    ours_vq = count_symbolically(
        VQAutoencoder, ch=128, ch_mult=(1, 2, 4), z_channels=3, embed_dim=3, n_embed=8192
    )
    assert ours_vq == sum(p.numel() for p in vq.parameters())


def tiny_unet(**overrides):
    config = dict(
        in_channels=4,
        out_channels=4,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(2,),
        num_heads=2,
        context_dim=16,
    )
    config.update(overrides)
    return UNet(**config)


def randomize(model):
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.1, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_models_survive_keras_save_and_load(tmp_path):
    unet = randomize(tiny_unet(num_classes=3, use_scale_shift_norm=True))
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    inputs = dict(
        timesteps=np.array([1, 700]), context=np.ones((2, 3, 16), "float32"), labels=np.array([0, 2])
    )
    unet.save(tmp_path / "unet.keras")
    restored = keras.models.load_model(tmp_path / "unet.keras")
    np.testing.assert_allclose(to_numpy(restored(x, **inputs)), to_numpy(unet(x, **inputs)), atol=1e-6)

    vq = randomize(VQAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=3, n_embed=16))
    images = np.random.default_rng(2).uniform(-1, 1, size=(1, 8, 8, 3)).astype("float32")
    vq.save_weights(tmp_path / "vq.weights.h5")
    clone = VQAutoencoder.from_config(vq.get_config())
    clone.load_weights(tmp_path / "vq.weights.h5")
    np.testing.assert_allclose(to_numpy(clone(images)), to_numpy(vq(images)), atol=1e-6)
    json.dumps(vq.get_config())


def test_vq_decode_indices_equals_decode_of_quantized():
    vq = randomize(VQAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=3, n_embed=16))
    h = vq.encode(np.random.default_rng(3).uniform(-1, 1, size=(1, 8, 8, 3)).astype("float32"))
    codes = vq.quantize_latents(h)
    np.testing.assert_allclose(
        to_numpy(vq.decode_indices(codes["indices"])),
        to_numpy(vq.decode(codes["quantized"], force_not_quantize=True)),
        atol=1e-6,
    )
    assert np.max(np.abs(to_numpy(vq.decode(h, force_not_quantize=True)) - to_numpy(vq.decode(h)))) > 1e-4


BAD_UNET_CALLS = {
    "rank": (dict(x=np.zeros((8, 8, 4))), "rank 4"),
    "channels": (dict(x=np.zeros((1, 8, 8, 3))), "3 channels"),
    "indivisible": (dict(x=np.zeros((1, 7, 8, 4))), "multiple of 2"),
    "context_width": (dict(context=np.zeros((1, 3, 12))), "expected 16"),
    "context_rank": (dict(context=np.zeros((1, 16))), "rank 3"),
    "context_batch": (dict(context=np.zeros((2, 3, 16))), "batch size 2"),
    "missing_context": (dict(context=None), "pass `context`"),
    "timesteps_batch": (dict(timesteps=np.array([1, 2, 3])), "batch size 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_UNET_CALLS))
def test_unet_rejects_bad_input_by_name(case):
    unet = tiny_unet()
    args = dict(x=np.zeros((1, 8, 8, 4)), timesteps=np.array([5]), context=np.zeros((1, 3, 16)))
    changes, message = BAD_UNET_CALLS[case]
    args.update(changes)
    args = {k: None if v is None else np.asarray(v, "float32") for k, v in args.items()}
    x = args.pop("x")
    with pytest.raises(ValueError, match=message):
        unet(x, **args)


def test_unet_rejects_missing_or_unexpected_labels():
    x = np.zeros((1, 8, 8, 4), "float32")
    with pytest.raises(ValueError, match="pass `labels`"):
        tiny_unet(context_dim=None, num_classes=4)(x, timesteps=np.array([1]))
    with pytest.raises(ValueError, match="not class-conditional"):
        tiny_unet(context_dim=None)(x, timesteps=np.array([1]), labels=np.array([0]))


def test_autoencoders_reject_bad_images_and_latents():
    vae = AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4)
    with pytest.raises(ValueError, match="expected 3"):
        vae.encode(np.zeros((1, 8, 8, 4), "float32"))
    with pytest.raises(ValueError, match="multiple of 2"):
        vae.encode(np.zeros((1, 9, 8, 3), "float32"))
    with pytest.raises(ValueError, match="rank 4"):
        vae.decode(np.zeros((4, 4, 4), "float32"))
    with pytest.raises(ValueError, match="expected 4"):
        vae.decode(np.zeros((1, 4, 4, 8), "float32"))


def test_unet_config_errors_are_named():
    with pytest.raises(ValueError, match="num_heads"):
        UNet(model_channels=32, channel_mult=(1,), attention_resolutions=(1,))
    with pytest.raises(ValueError, match="do not split"):
        UNet(model_channels=32, channel_mult=(1,), attention_resolutions=(1,), num_heads=3)
    with pytest.raises(ValueError, match="num_heads"):  # CompVis' -1 means "not set"
        UNet(
            model_channels=32,
            channel_mult=(1,),
            attention_resolutions=(1,),
            num_heads=-1,
            num_head_channels=-1,
        )
    compvis_style = UNet(
        model_channels=32, channel_mult=(1,), attention_resolutions=(1,), num_heads=2, num_head_channels=-1
    )
    assert compvis_style.mid_block.attentions[0].num_heads == 2


def test_from_diffusers_rejects_folders_that_are_not_components(tmp_path):
    with pytest.raises(ValueError, match="not a diffusers component folder"):
        from_diffusers(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "CLIPTextModel"}))
    with pytest.raises(ValueError, match="_class_name='CLIPTextModel'"):
        from_diffusers(str(tmp_path))
    (tmp_path / "config.json").write_text(
        json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4, "block_out_channels": [32]})
    )
    with pytest.raises(ValueError, match="No diffusion_pytorch_model.safetensors"):
        from_diffusers(str(tmp_path))


def test_from_diffusers_rejects_tensors_that_do_not_fit_the_config(tmp_path):
    import diffusers

    reference = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
    )
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, block_out_channels=[32, 96])))
    with pytest.raises(ValueError, match="has shape .* expects"):
        from_diffusers(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(dict(config, layers_per_block=2)))
    with pytest.raises(ValueError, match="missing"):
        from_diffusers(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(dict(config, mid_block_add_attention=False)))
    with pytest.raises(ValueError, match="do not fit the config"):
        from_diffusers(str(tmp_path))


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    from keras_ldm.backend.compile import compile_function
    from keras_ldm.backend.gradients import value_and_grad

    config = dict(
        in_channels=4, out_channels=4, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(2,), num_heads=2, context_dim=8, norm_num_groups=8,
    )  # fmt: skip
    plain, checkpointed = UNet(**config), UNet(**config, gradient_checkpointing=True)
    rng = np.random.default_rng(0)
    weights = [rng.normal(scale=0.2, size=w.shape).astype("float32") for w in plain.get_weights()]
    plain.set_weights(weights)
    checkpointed.set_weights(weights)
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    context = rng.normal(size=(2, 3, 8)).astype("float32")

    def loss_and_grads(unet):
        def step(x, t, context):
            def loss():
                out = unet(x, t, context=context, training=True)
                return keras.ops.mean(keras.ops.square(out)), out

            (_, out), grads = value_and_grad(loss, unet.trainable_variables)
            return out, grads

        # JAX compiles each primitive of an eager gradient on its own (36 s), one program takes 24 s;
        # TensorFlow takes 2 s eagerly and 21 s through XLA
        run = compile_function(step, unet) if keras.backend.backend() == "jax" else step
        out, grads = run(x, keras.ops.array([3, 700]), context)
        return to_numpy(out), [to_numpy(g) for g in grads]

    (out_plain, grads_plain), (out_checkpointed, grads_checkpointed) = map(
        loss_and_grads, (plain, checkpointed)
    )
    np.testing.assert_allclose(out_checkpointed, out_plain, rtol=1e-5, atol=1e-6)
    for ours, reference in zip(grads_checkpointed, grads_plain):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    assert any(np.abs(g).max() > 0 for g in grads_plain)
    assert UNet.from_config(checkpointed.get_config()).gradient_checkpointing


def test_gradient_checkpointing_trains_an_unconditional_unet_with_fit():
    """No context: TensorFlow's recompute_grad refuses a None argument, so none is passed."""
    from keras_ldm.models import LatentDiffusion

    unet = UNet(in_channels=4, out_channels=4, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(2,), num_heads=2, norm_num_groups=8, gradient_checkpointing=True)  # fmt: skip
    model = LatentDiffusion(unet, AutoencoderKL(ch=16, ch_mult=(1,), num_res_blocks=1, embed_dim=4, norm_num_groups=8))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    assert np.isfinite(model.fit({"images": images}, batch_size=2, verbose=0).history["loss"][0])
