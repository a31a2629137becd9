"""LoRA fine-tuning: only the adapters train, their file round-trips, and diffusers LoRA files load as
diffusers loads them (on every backend)."""

import json
import os

import diffusers
import keras
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from keras_ldm.convert import from_diffusers
from keras_ldm.models import LatentDiffusion
from keras_ldm.training import lora
from tests.conftest import nchw_to_nhwc, to_numpy
from tests.convert.diffusers_references import CROSS_ATTENTION_UNET, assert_close, randomize_norms
from tests.tiny_models import text_model, unet, vae

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (4, 8, 8, 3)).astype("uint8")
PROMPTS = ["a red circle", "a blue circle", "a circle on a red", "blue"]
X = RNG.normal(size=(2, 8, 8, 4)).astype("float32")
TIMESTEPS = np.array([10, 500])
CONTEXT = RNG.normal(size=(2, 3, 16)).astype("float32")


def unet_output(model):
    return to_numpy(model(X, timesteps=TIMESTEPS, context=CONTEXT))


def randomize_adapters(model, seed=1):
    """Fresh adapters have B = 0 (no effect); random ones make every adapter matter."""
    rng = np.random.default_rng(seed)
    for layer in lora.lora_layers(model).values():
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            variable.assign(rng.normal(scale=0.2, size=variable.shape).astype("float32"))


def test_fit_trains_only_the_lora_weights():
    model = text_model()  # its text encoder is trainable (train_text_encoder=True) until LoRA
    assert model.enable_lora(rank=2, text_encoder=True) == 4 * 8 + 4  # UNet: 4 transformers; LDMBert: 1 layer
    adapters = {
        id(v)
        for layer in lora.lora_layers(model).values()
        for v in (layer.lora_kernel_a, layer.lora_kernel_b)
    }
    assert {id(v) for v in model.trainable_variables} == adapters
    before = {v.path: np.array(to_numpy(v)) for v in model.variables}
    model.compile(learning_rate=1e-2)
    model.fit({"images": IMAGES, "prompts": PROMPTS}, batch_size=2, epochs=1, verbose=0)
    changed = {v.path for v in model.variables if not np.array_equal(before[v.path], to_numpy(v))}
    lora_paths = {v.path for v in model.variables if id(v) in adapters}
    assert {path for path in changed if not path.endswith("/seed_generator_state")} <= lora_paths
    assert any(path.endswith("lora_kernel_b") and path.startswith("u_net") for path in changed)
    assert any(path.endswith("lora_kernel_b") and "ldm_bert" in path for path in changed)


def test_enable_lora_arguments_are_checked():
    model = unet(context_dim=16)
    with pytest.raises(ValueError, match="rank=0"):
        lora.enable_lora(model, 0)
    with pytest.raises(ValueError, match=r"target='everything'.*'attention'"):
        lora.enable_lora(model, 2, target="everything")
    with pytest.raises(ValueError, match=r"target=\['qkv'\] matches no Dense layer.*'to_q'"):
        lora.enable_lora(model, 2, target=["qkv"])
    with pytest.raises(ValueError, match="no text encoder"):
        lora.enable_lora(model, 2, text_encoder=True)
    lora.enable_lora(model, 2)
    with pytest.raises(ValueError, match="already enabled"):
        lora.enable_lora(model, 2)
    averaged = LatentDiffusion(unet(), vae(), ema_decay=0.99)  # sampling would use averages without LoRA
    for call in (lambda: averaged.enable_lora(2), lambda: averaged.load_lora_weights("any.safetensors")):
        with pytest.raises(ValueError, match="with ema_decay=0.99: the moving average"):
            call()


def test_saved_adapters_load_back_into_a_model_without_lora(tmp_path):
    trained, fresh = unet(context_dim=16), unet(context_dim=16)  # the same base weights
    base = unet_output(fresh)
    lora.enable_lora(trained, rank=3, target="transformer", alpha=6)
    randomize_adapters(trained)
    expected = unet_output(trained)
    assert np.max(np.abs(expected - base)) > 1e-2
    path = tmp_path / "lora.safetensors"
    lora.save_lora_weights(trained, path)
    tensors = set(lora._read(str(path))[0])
    assert len(tensors) == 2 * len(lora.lora_layers(trained)) and all(
        "/lora_kernel_" in key for key in tensors
    )
    assert os.path.getsize(path) < 100_000

    lora.load_lora_weights(fresh, path)  # enables LoRA with the file's rank and alpha, freezes the rest
    assert {layer.lora_rank for layer in lora.lora_layers(fresh).values()} == {3}
    np.testing.assert_array_equal(unet_output(fresh), expected)
    assert {v.name for v in fresh.trainable_variables} == {"lora_kernel_a", "lora_kernel_b"}

    randomize_adapters(fresh, seed=2)  # into adapters that are already there: the file's values again
    lora.load_lora_weights(fresh, path)
    np.testing.assert_array_equal(unet_output(fresh), expected)

    merged = unet(context_dim=16)
    lora.load_lora_weights(merged, path, merge=True)
    assert not lora.lora_layers(merged)
    np.testing.assert_allclose(unet_output(merged), expected, atol=1e-5)


def test_a_latent_diffusion_round_trips_its_text_encoder_adapters(tmp_path):
    trained, fresh = text_model(), text_model()
    fresh.set_weights(trained.get_weights())
    trained.enable_lora(rank=2, text_encoder=True)
    randomize_adapters(trained)
    trained.save_lora_weights(tmp_path / "lora.safetensors")
    fresh.load_lora_weights(tmp_path / "lora.safetensors")
    token_ids = np.array([[2, 5, 6, 8, 3, 0, 0, 0]], "int32")

    def outputs(model):
        return to_numpy(model.text_encoder(token_ids)), unet_output(model.unet)

    for ours, theirs in zip(outputs(trained), outputs(fresh)):
        np.testing.assert_array_equal(ours, theirs)


def test_adapters_loaded_after_a_call_are_used_by_the_next(tmp_path):
    """On PyTorch the model's UNet calls are recorded; loading adapters makes new recordings."""
    model = text_model()
    x, timesteps, context = (keras.ops.convert_to_tensor(a) for a in (X, TIMESTEPS, CONTEXT))

    def recorded_output():
        return to_numpy(model._recorded_unet()(x, timesteps=timesteps, context=context))

    before = recorded_output()
    source = unet(context_dim=16)  # text_model's UNet weights
    lora.enable_lora(source, rank=2)
    randomize_adapters(source)
    lora.save_lora_weights(source, tmp_path / "lora.safetensors")
    model.load_lora_weights(tmp_path / "lora.safetensors")
    after = recorded_output()
    np.testing.assert_allclose(after, unet_output(source), atol=1e-5)
    assert np.max(np.abs(after - before)) > 1e-3


def test_presets_and_inference_copies_hold_the_adapters_merged(tmp_path):
    model = text_model()
    model.enable_lora(rank=2)
    randomize_adapters(model)
    expected = unet_output(model.unet)
    np.testing.assert_allclose(unet_output(model.inference_copy().unet), expected, atol=1e-5)
    model.save_to_preset(tmp_path / "preset")
    loaded = LatentDiffusion.from_preset(tmp_path / "preset")
    assert not lora.lora_layers(loaded)
    np.testing.assert_allclose(unet_output(loaded.unet), expected, atol=1e-5)


def test_a_failed_save_leaves_the_existing_file(tmp_path, monkeypatch):
    model = unet(context_dim=16)
    lora.enable_lora(model, rank=2)
    path = tmp_path / "lora.safetensors"
    lora.save_lora_weights(model, path)
    good = path.read_bytes()

    def fail_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr("safetensors.numpy.save_file", fail_half_way)
    randomize_adapters(model)
    with pytest.raises(OSError, match="No space"):
        lora.save_lora_weights(model, path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["lora.safetensors"]


def test_files_that_do_not_fit_are_named(tmp_path):
    model = unet(context_dim=16)
    with pytest.raises(ValueError, match="no LoRA adapters to save"):
        lora.save_lora_weights(model, tmp_path / "none.safetensors")

    nothing = str(tmp_path / "nothing.safetensors")
    save_file({"vae.encoder.conv_in.weight": np.zeros((2, 2), "float32")}, nothing)
    with pytest.raises(ValueError, match=rf"{nothing}: 1 of its 1 tensors are not LoRA weights.*conv_in"):
        lora.load_lora_weights(model, nothing)

    elsewhere = str(tmp_path / "elsewhere.safetensors")
    module = "unet.down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{module}.lora_A.weight": np.zeros((2, 32), "float32"),
               f"{module}.lora_B.weight": np.zeros((32, 2), "float32")}, elsewhere)  # fmt: skip
    with pytest.raises(
        ValueError, match=rf"{elsewhere}: 1 of its 1 LoRA modules are not Dense layers.*down_blocks.3"
    ):
        lora.load_lora_weights(model, elsewhere)

    other = unet(context_dim=8)  # another architecture: attn2's to_k and to_v take 8 channels, not 16
    lora.enable_lora(other, rank=2)
    saved = str(tmp_path / "other.safetensors")
    lora.save_lora_weights(other, saved)
    with pytest.raises(ValueError, match=rf"{saved}: LoRA layer 'unet/.*attn2/to_k' has A \(8, 2\)"):
        lora.load_lora_weights(model, saved)
    assert not lora.lora_layers(model)  # nothing was loaded

    renamed = str(tmp_path / "renamed.safetensors")
    save_file({"unet/no/such/layer/lora_kernel_a": np.zeros((2, 2), "float32"),
               "unet/no/such/layer/lora_kernel_b": np.zeros((2, 2), "float32")},
              renamed, metadata={"format": lora.FORMAT, "rank": "2"})  # fmt: skip
    with pytest.raises(
        ValueError, match=rf"{renamed}: 1 of its 1 LoRA layers are not in this model.*no/such"
    ):
        lora.load_lora_weights(model, renamed)

    with pytest.raises(ValueError, match="is not a file"):
        lora.load_lora_weights(model, tmp_path / "missing.safetensors")


# -- diffusers LoRA files ------------------------------------------------------------------------------

DIFFUSERS_UNET = {**CROSS_ATTENTION_UNET, "cross_attention_dim": 24, "attention_head_dim": 4}


def diffusers_lora(reference):
    """Random LoRA factors for every attention projection of a diffusers UNet: `{module: (down, up)}`,
    rank 2, and rank 3 for `to_v`."""
    rng = np.random.default_rng(3)
    modules = {}
    for name, module in reference.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            rank = 3 if name.endswith("to_v") else 2
            down = rng.normal(scale=0.3, size=(rank, module.in_features)).astype("float32")
            up = rng.normal(scale=0.3, size=(module.out_features, rank)).astype("float32")
            modules[name] = (down, up)
    return modules


def alpha_of(module):
    return {"to_q": 1.0, "to_k": 4.0, "to_v": 3.0}.get(module.split(".")[-1], 0.5)


def peft_file(modules, path):
    """PEFT layout, with no alphas: scale 1."""
    tensors = {}
    for module, (down, up) in modules.items():
        tensors[f"unet.{module}.lora_A.weight"], tensors[f"unet.{module}.lora_B.weight"] = down, up
    save_file(tensors, path)
    return tensors, {}


def peft_file_with_metadata(modules, path):
    """PEFT layout with the `lora_adapter_metadata` current diffusers writes (lora_alpha, patterns)."""
    tensors, _ = peft_file(modules, path)
    config = {
        "unet.r": 2,
        "unet.lora_alpha": 4.0,
        "unet.rank_pattern": {"to_v": 3},
        "unet.alpha_pattern": {"to_k": 1.0},
        "unet.target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
    }
    save_file(tensors, path, metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    return tensors, {}


def diffusers_file_with_alphas(modules, path):
    """The pre-PEFT diffusers layout, with kohya-style `.alpha` tensors (scale alpha / rank)."""
    tensors, alphas = {}, {}
    for module, (down, up) in modules.items():
        tensors[f"unet.{module}.lora.down.weight"], tensors[f"unet.{module}.lora.up.weight"] = down, up
        alphas[f"unet.{module}.alpha"] = alpha_of(module)
    save_file({**tensors, **{k: np.array(v, "float32") for k, v in alphas.items()}}, path)
    return tensors, alphas


LAYOUTS = {
    "peft": peft_file,
    "peft_metadata": peft_file_with_metadata,
    "diffusers_alphas": diffusers_file_with_alphas,
}


@pytest.mark.parametrize(
    "layout, merge",
    [("peft", False), ("peft_metadata", False), ("diffusers_alphas", False), ("diffusers_alphas", True)],
)
def test_a_diffusers_lora_changes_the_unet_as_in_diffusers(tmp_path, layout, merge):
    """The reference is diffusers' own loader, `UNet2DConditionModel.load_lora_adapter` (PEFT), given the
    file (it reads the layout and the adapter metadata itself) or, for `.alpha` tensors, the state dict and
    `network_alphas` as `StableDiffusionPipeline.load_lora_weights` hands them over for kohya files."""
    pytest.importorskip("peft")
    torch.manual_seed(0)
    reference = randomize_norms(diffusers.UNet2DConditionModel(**DIFFUSERS_UNET))
    reference.save_pretrained(tmp_path / "unet", safe_serialization=True)
    ours = from_diffusers(str(tmp_path / "unet"))
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 24)
    with torch.no_grad():
        base = reference(x, t, encoder_hidden_states=context).sample

    path = tmp_path / "lora.safetensors"
    tensors, alphas = LAYOUTS[layout](diffusers_lora(reference), str(path))
    if alphas:
        state = {key: torch.from_numpy(value) for key, value in tensors.items()}
        reference.load_lora_adapter(state, prefix="unet", network_alphas=alphas)
    else:
        reference.load_lora_adapter(str(tmp_path), weight_name=path.name, prefix="unet")
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=context).sample
    assert np.max(np.abs((expected - base).numpy())) > 1e-2  # the LoRA matters

    lora.load_lora_weights(ours, path, merge=merge)
    assert bool(lora.lora_layers(ours)) != merge
    result = ours(nchw_to_nhwc(x), timesteps=t.numpy(), context=context.numpy())
    assert_close(result, nchw_to_nhwc(expected))
