"""model.export(): a SavedModel whose `serving_default` signature is the whole generate() pipeline.

The exported models are loaded and called in a separate Python process that imports only TensorFlow
(keras, jax, keras_hub, keras_ldm and tensorflow_text are blocked, and no TensorFlow Text op library is
loaded: prompts are tokenized with core TensorFlow ops, so any TensorFlow runtime serves the text model;
every op of the SavedModels must be registered in that process). Their images must equal
`model.generate()` with the same seed and settings (at most one grey level apart) for a text, a
super-resolution and an inpainting model, at batch sizes 1 and 3 from one export. Runs on the jax and tensorflow backends; on torch
export raises an error naming the supported backends.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ldm.cli import main
from keras_ldm.export import export_model
from keras_ldm.models import AutoencoderKL, ClassEmbedder, LatentDiffusion, VQAutoencoder
from tests.conftest import to_numpy
from tests.tiny_models import randomized, text_model, unet, vae

BACKEND = keras.backend.backend()
exporting_backends = pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow"), reason="export runs on the jax and tensorflow backends"
)
BLOCKED = ("keras", "jax", "jaxlib", "keras_hub", "keras_ldm", "tensorflow_text", "torch")
# ops of TensorFlow Text that tokenizers use (the export tokenized with some of them before)
TEXT_OPS = ("NormalizeUTF8", "CaseFoldUTF8", "RegexSplitWithOffsets", "WordpieceTokenizeWithOffsets",
            "FastWordpieceTokenizeWithOffsets", "WhitespaceTokenizeWithOffsets")  # fmt: skip

# Runs in a fresh interpreter: load each SavedModel, call its signature on each request (npz files
# of the signature's inputs), save the images, record the errors of the bad requests.
SERVER = textwrap.dedent(
    """
    import json, sys
    job = json.load(open(sys.argv[1]))
    for name in job["blocked"]:
        sys.modules[name] = None  # importing any of them now raises ImportError
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    signatures, report = {}, {"errors": {}, "defaults": {}, "ops": {}, "unregistered": {}}
    for request in job["requests"]:
        if request["dir"] not in signatures:
            signatures[request["dir"]] = tf.saved_model.load(request["dir"]).signatures["serving_default"]
            saved = saved_model_pb2.SavedModel()
            with open(request["dir"] + "/saved_model.pb", "rb") as f:
                saved.ParseFromString(f.read())
            defaults = saved.meta_graphs[0].signature_def["serving_default"].defaults
            report["defaults"][request["dir"]] = {
                key: json.loads(json.dumps(tf.make_ndarray(value).tolist(), default=bytes.decode))
                for key, value in defaults.items()
            }
            graph = saved.meta_graphs[0].graph_def  # every op of the graph and of its functions
            ops = {node.op for node in graph.node}
            ops |= {node.op for function in graph.library.function for node in function.node_def}
            report["ops"][request["dir"]] = sorted(ops)
            unregistered = sorted(op for op in ops if op_def_registry.get(op) is None)
            report["unregistered"][request["dir"]] = unregistered
        inputs = {key: tf.constant(value) for key, value in np.load(request["inputs"]).items()}
        try:
            images = signatures[request["dir"]](**inputs)["images"].numpy()
        except Exception as error:
            report["errors"][request["name"]] = type(error).__name__ + ": " + str(error)[:2000]
        else:
            np.save(request["out"], images)
    report["imported"] = sorted(name for name in job["blocked"] if sys.modules.get(name) is not None)
    report["text_ops_registered"] = [op for op in job["text_ops"] if op_def_registry.get(op) is not None]
    maps = open("/proc/self/maps").read().splitlines() if sys.platform == "linux" else []
    # the shared libraries loaded: no TensorFlow Text one
    report["text_libraries"] = sorted({line.split()[-1] for line in maps if "tensorflow_text" in line})
    json.dump(report, open(job["report"], "w"))
    """
)

PROMPTS = ["a red circle", "Blue CIRCLE on\ta red one!", "a green square"]  # upper case, tab, unknown words
# what BERT's basic tokenization changes: accents (decomposed too), final sigma, İ, control characters,
# CJK, emoji, [MASK] written in the prompt, a word over 100 characters
ODD_PROMPTS = ["Ré\u0301D [MASK]\x07 ÇIRCLE 中circle😀 ΟΝΣ", "İ BLUE,red\u2028" + "a" * 101 + " circle"]
NEGATIVES = ["", "blue", "red circle"]


def saved_floats(path):
    """Number of float values stored in the SavedModel's checkpoint."""
    entries = tf.train.list_variables(os.path.join(path, "variables", "variables"))
    return sum(int(np.prod(shape)) for name, shape in entries if name.endswith("VARIABLE_VALUE"))


def write_request(folder, name, path, **inputs):
    os.makedirs(folder, exist_ok=True)
    file = os.path.join(folder, f"{name}.npz")
    np.savez(file, **inputs)
    return {"name": name, "dir": path, "inputs": file, "out": os.path.join(folder, f"{name}.npy")}


def text_export(root):
    model = text_model()
    model.generation_defaults = {"num_steps": 3, "guidance_scale": 3.0, "image_size": 8}
    path = model.export(str(root / "text"))  # every setting from generation_defaults
    return model, path


def super_resolution_export(root):
    model = LatentDiffusion(unet(in_channels=7), vae(), concat="low_res", ema_decay=0.9)
    for average in model.ema.averages:  # moving averages that differ from the raw weights
        average.assign(to_numpy(average) * 0.8)
    path = model.export(str(root / "sr"), num_steps=3, sampler="ddpm", height=16, width=16)  # stochastic
    return model, path


def inpainting_export(root):
    vq = VQAutoencoder(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=3, n_embed=16)
    model = LatentDiffusion(unet(in_channels=7, out_channels=3), vq, concat="masks")
    path = model.export(str(root / "inpainting"), num_steps=3, sampler="plms", height=8, width=8)
    return model, path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Exports the three models, serves every request in one TensorFlow-only process."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    models, requests = {}, []
    folder = str(root / "requests")
    models["text"] = _, text_path = text_export(root)
    requests += [
        write_request(
            folder,
            "text_3",
            text_path,
            prompts=np.array(PROMPTS, "S"),
            negative_prompts=np.array(NEGATIVES, "S"),
            seed=np.int32(5),
            guidance_scale=np.float32(3.0),
        ),
        write_request(  # guidance 1: the unguided branch, as generate()
            folder,
            "text_1",
            text_path,
            prompts=np.array(PROMPTS[1:2], "S"),
            negative_prompts=np.array([""], "S"),
            seed=np.int32(7),
            guidance_scale=np.float32(1.0),
        ),
        write_request(  # one negative prompt for every prompt
            folder,
            "text_shared_negative",
            text_path,
            prompts=np.array(PROMPTS, "S"),
            negative_prompts=np.array(["blue"], "S"),
            seed=np.int32(1),
            guidance_scale=np.float32(2.0),
        ),
        write_request(
            folder,
            "text_odd",
            text_path,
            prompts=np.array([p.encode() for p in ODD_PROMPTS], "S"),
            negative_prompts=np.array(["rÉd".encode()], "S"),
            seed=np.int32(4),
            guidance_scale=np.float32(2.0),
        ),
        write_request(
            folder,
            "bad_text_dtype",
            text_path,
            prompts=np.array([1, 2], "int32"),
            negative_prompts=np.array([""], "S"),
            seed=np.int32(0),
            guidance_scale=np.float32(1.0),
        ),
        write_request(
            folder,
            "bad_text_rank",
            text_path,
            prompts=np.array([PROMPTS], "S"),
            negative_prompts=np.array([""], "S"),
            seed=np.int32(0),
            guidance_scale=np.float32(1.0),
        ),
        write_request(
            folder,
            "bad_seed_dtype",
            text_path,
            prompts=np.array(PROMPTS, "S"),
            negative_prompts=np.array([""], "S"),
            seed=np.float32(0),
            guidance_scale=np.float32(1.0),
        ),
    ]
    models["sr"] = _, sr_path = super_resolution_export(root)
    low_res = rng.integers(0, 256, (3, 4, 4, 3)).astype("uint8")
    scalars = {"seed": np.int32(2), "guidance_scale": np.float32(1.0)}
    requests += [
        write_request(folder, "sr_3", sr_path, images=low_res, **scalars),
        write_request(
            folder, "sr_1", sr_path, images=low_res[1:2], seed=np.int32(3), guidance_scale=np.float32(1.0)
        ),
        write_request(folder, "bad_sr_dtype", sr_path, images=low_res.astype("float32"), **scalars),
        write_request(folder, "bad_sr_size", sr_path, images=np.zeros((1, 5, 5, 3), "uint8"), **scalars),
        write_request(folder, "bad_sr_rank", sr_path, images=low_res[0], **scalars),
    ]
    models["inpainting"] = _, inpainting_path = inpainting_export(root)
    photos = rng.integers(0, 256, (3, 8, 8, 3)).astype("uint8")
    masks = np.zeros((3, 8, 8), "float32")
    masks[0, 2:6, 3:7] = masks[1, :4] = masks[2, :, 5:] = 1
    requests += [
        write_request(folder, "inpainting_3", inpainting_path, images=photos, masks=masks, **scalars),
        write_request(
            folder,
            "inpainting_1",
            inpainting_path,
            images=photos[2:],
            masks=masks[2:],
            seed=np.int32(9),
            guidance_scale=np.float32(1.0),
        ),
        write_request(
            folder, "bad_mask_values", inpainting_path, images=photos, masks=masks * 0.5, **scalars
        ),
        write_request(folder, "bad_mask_batch", inpainting_path, images=photos, masks=masks[:2], **scalars),
    ]
    job = {
        "blocked": BLOCKED,
        "text_ops": TEXT_OPS,
        "requests": requests,
        "report": str(root / "report.json"),
    }
    with open(root / "job.json", "w") as f:
        json.dump(job, f)
    with open(root / "server.py", "w") as f:
        f.write(SERVER)
    result = subprocess.run(
        [sys.executable, str(root / "server.py"), str(root / "job.json")],
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(job["report"]) as f:
        report = json.load(f)
    images = {r["name"]: np.load(r["out"]) for r in requests if os.path.exists(r["out"])}
    images = Served(images, report["errors"])
    inputs = {r["name"]: dict(np.load(r["inputs"])) for r in requests}
    return {"models": models, "images": images, "inputs": inputs, "report": report}


class Served(dict):
    """Served images by request name; a missing one fails with the server's error."""

    def __init__(self, images, errors):
        super().__init__(images)
        self.errors = errors

    def __missing__(self, name):
        raise AssertionError(f"request {name!r} failed in the server: {self.errors.get(name)}")


def assert_close_images(served_images, expected):
    assert served_images.dtype == np.uint8 and served_images.shape == expected.shape
    assert np.abs(served_images.astype(int) - expected.astype(int)).max() <= 1


@exporting_backends
def test_the_serving_process_imported_only_tensorflow(served):
    assert served["report"]["imported"] == []


@exporting_backends
def test_text_signature_equals_generate_at_batch_sizes_3_and_1(served):
    model, path = served["models"]["text"]
    images = served["images"]
    expected = model.generate(
        {"prompts": PROMPTS, "negative_prompts": NEGATIVES}, seed=5
    )  # defaults: 3 steps, s=3
    assert_close_images(images["text_3"], expected)
    assert_close_images(images["text_1"], model.generate(PROMPTS[1:2], guidance_scale=1.0, seed=7))
    shared = model.generate({"prompts": PROMPTS, "negative_prompts": "blue"}, guidance_scale=2.0, seed=1)
    assert_close_images(images["text_shared_negative"], shared)
    assert np.any(images["text_3"][0] != images["text_shared_negative"][0])
    # the defaults of the optional inputs are stored in the signature (TF Serving applies them)
    assert served["report"]["defaults"][path] == {"negative_prompts": [""], "seed": 0, "guidance_scale": 3.0}


@exporting_backends
def test_the_text_saved_model_needs_no_tensorflow_text(served):
    """The server process never loaded TensorFlow Text (package or op library), yet every op of the
    SavedModels is registered there and the text signature tokenizes as `generate()` does."""
    report = served["report"]
    assert report["text_ops_registered"] == [] and report["text_libraries"] == []
    assert all(ops == [] for ops in report["unregistered"].values()), report["unregistered"]
    _, text_path = served["models"]["text"]
    ops = report["ops"][text_path]
    assert not set(ops) & set(TEXT_OPS)
    assert "StringToHashBucketFast" in ops and "UnicodeDecode" in ops  # the tokenizer is in the graph
    model, _ = served["models"]["text"]
    expected = model.generate({"prompts": ODD_PROMPTS, "negative_prompts": "rÉd"}, guidance_scale=2.0, seed=4)
    assert_close_images(served["images"]["text_odd"], expected)


@exporting_backends
def test_super_resolution_signature_equals_generate_with_moving_average_weights(served):
    model, path = served["models"]["sr"]
    images, inputs = served["images"], served["inputs"]
    settings = {"num_steps": 3, "sampler": "ddpm"}
    assert_close_images(
        images["sr_3"], model.generate({"images": inputs["sr_3"]["images"]}, seed=2, **settings)
    )
    assert_close_images(
        images["sr_1"], model.generate({"images": inputs["sr_1"]["images"]}, seed=3, **settings)
    )
    # weights once: the UNet's moving averages, the decoder and scale_factor; no raw copies, no encoder
    decoder = model.first_stage.decoder.count_params() + model.first_stage.post_quant_conv.count_params()
    assert saved_floats(path) == model.unet.count_params() + decoder + 1
    assert saved_floats(path) < sum(int(np.prod(v.shape)) for v in model.weights)


@exporting_backends
def test_inpainting_signature_equals_generate_and_keeps_the_unmasked_pixels(served):
    model, _ = served["models"]["inpainting"]
    images, inputs = served["images"], served["inputs"]
    for name, seed in (("inpainting_3", 2), ("inpainting_1", 9)):
        request = {"images": inputs[name]["images"], "masks": inputs[name]["masks"]}
        expected = model.generate(request, num_steps=3, sampler="plms", seed=seed)
        assert_close_images(images[name], expected)
        keep = request["masks"] == 0
        np.testing.assert_array_equal(images[name][keep], request["images"][keep])


@exporting_backends
@pytest.mark.parametrize(
    "name, message",
    [
        ("bad_text_dtype", "expected to be a string tensor but is a int32 tensor"),
        ("bad_text_rank", "Shape of tensor prompts [1,3] is not compatible with expected shape [?]"),
        ("bad_seed_dtype", "expected to be a int32 tensor but is a float tensor"),
        ("bad_sr_dtype", "expected to be a uint8 tensor but is a float tensor"),
        ("bad_sr_size", "Shape of tensor images [1,5,5,3] is not compatible with expected shape [?,4,4,3]"),
        ("bad_sr_rank", "Shape of tensor images [4,4,3] is not compatible with expected shape [?,4,4,3]"),
        ("bad_mask_values", "`masks` must hold only 0 (keep) and 1 (fill)"),
        ("bad_mask_batch", "`masks` and `images` differ in batch size"),
    ],
)
def test_the_served_signature_rejects_bad_requests(served, name, message):
    error = served["report"]["errors"].get(name)
    assert error is not None, f"{name} was accepted"
    assert message in error


@exporting_backends
def test_saved_model_cli_shows_the_signature_and_runs_it(served, tmp_path):
    _, text_path = served["models"]["text"]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    shown = subprocess.run(
        [cli, "show", "--all", "--dir", text_path], check=False, capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    signature = shown.stdout.split("signature_def['serving_default']:")[1].split("Method name is")[0]
    for name, dtype, shape in (
        ("prompts", "DT_STRING", "(-1)"),
        ("negative_prompts", "DT_STRING", "(-1)"),
        ("seed", "DT_INT32", "()"),
        ("guidance_scale", "DT_FLOAT", "()"),
        ("images", "DT_UINT8", "(-1, 8, 8, 3)"),
    ):
        block = signature.split(f"['{name}'] tensor_info:")[1]
        assert f"dtype: {dtype}" in block.split("name:")[0] and f"shape: {shape}" in block.split("name:")[0]

    model, sr_path = served["models"]["sr"]
    low_res = served["inputs"]["sr_1"]["images"]
    np.save(tmp_path / "low_res.npy", low_res)
    command = [cli, "run", "--dir", sr_path, "--tag_set", "serve", "--signature_def", "serving_default"]
    command += ["--inputs", f"images={tmp_path / 'low_res.npy'}", "--outdir", str(tmp_path / "out")]
    # seed and guidance_scale are left out: the signature's defaults apply
    ran = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    image = np.load(tmp_path / "out" / "images.npy")
    assert_close_images(image, model.generate({"images": low_res}, num_steps=3, sampler="ddpm", seed=0))


@exporting_backends
def test_class_signature_equals_generate_with_and_without_guidance(tmp_path):
    embedder = ClassEmbedder(num_classes=3, embed_dim=16)
    embedder.build()
    model = LatentDiffusion(
        unet(context_dim=16, scale=0.3),
        vae(),
        cross_attention="class",
        class_embedder=randomized(embedder, 1.0),
    )
    path = model.export(str(tmp_path / "class"), num_steps=2, height=8, width=8, guidance_scale=2.0)
    serve = tf.saved_model.load(path).signatures["serving_default"]  # in this process: quicker
    for labels, scale in (([0, 2], 2.0), ([1], 1.0)):
        images = serve(labels=tf.constant(labels), seed=tf.constant(6), guidance_scale=tf.constant(scale))
        expected = model.generate(
            {"labels": labels}, num_steps=2, height=8, width=8, guidance_scale=scale, seed=6
        )
        assert_close_images(images["images"].numpy(), expected)


@exporting_backends
def test_bad_exports_are_named(tmp_path):
    model = LatentDiffusion(unet(), vae())
    with pytest.raises(TypeError, match="`model` must be a keras_ldm LatentDiffusion .* got UNet"):
        export_model(unet(), str(tmp_path / "unet"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not empty .* overwrite=True"):
        model.export(str(tmp_path / "full"), num_steps=1, height=8, width=8)
    with pytest.raises(ValueError, match="is a file"):
        model.export(str(tmp_path / "full" / "notes.txt"))
    factor_2 = LatentDiffusion(unet(), AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4))
    with pytest.raises(ValueError, match="width=13; it must be a positive multiple of 2"):
        factor_2.export(str(tmp_path / "a"), height=8, width=13)
    with pytest.raises(ValueError, match="sampler='heun'"):
        model.export(str(tmp_path / "b"), sampler="heun")
    no_tokenizer = text_model()
    no_tokenizer.tokenizer = None
    with pytest.raises(ValueError, match="tokenizer=None"):
        no_tokenizer.export(str(tmp_path / "c"))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "c")


@exporting_backends
def test_cli_export_of_an_unconditional_preset_and_overwrite(tmp_path, capsys):
    preset = str(tmp_path / "preset")
    model = LatentDiffusion(unet(), vae())
    model.save_to_preset(preset, generation_defaults={"num_steps": 2, "image_size": 8})
    out = tmp_path / "served"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["export", "--preset", preset, "--out", str(out), "--sampler", "euler"]
    assert main(args) == 2 and "overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"  # only the SavedModel's own files are replaced
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    images = serve(batch_size=tf.constant(2), seed=tf.constant(4), guidance_scale=tf.constant(1.0))["images"]
    expected = model.generate(batch_size=2, sampler="euler", seed=4)
    assert_close_images(images.numpy(), expected)


@pytest.mark.skipif(BACKEND != "torch", reason="the error of the unsupported backend")
def test_torch_backend_export_names_the_supported_backends(tmp_path):
    with pytest.raises(ValueError, match=r"one of \['jax', 'tensorflow'\]; the current backend is 'torch'"):
        LatentDiffusion(unet(), vae()).export(str(tmp_path / "saved"))
    assert not os.path.exists(tmp_path / "saved")


@exporting_backends
def test_a_failed_export_leaves_the_older_saved_model_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "served"
    older = tf.Module()
    older.scale = tf.Variable(2.0)
    older.serve = tf.function(
        lambda x: {"y": x * older.scale}, input_signature=[tf.TensorSpec([], tf.float32)]
    )
    tf.saved_model.save(older, str(path), signatures={"serving_default": older.serve})
    (path / "notes.txt").write_text("keep me")
    files = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    def save(module, export_dir, signatures=None):
        os.makedirs(os.path.join(export_dir, "variables"))
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", save)
    model = LatentDiffusion(unet(), vae())
    with pytest.raises(OSError, match="No space left"):
        model.export(str(path), num_steps=1, height=8, width=8, overwrite=True)
    assert os.listdir(tmp_path) == ["served"]  # the temporary folder is gone
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == files
    y = tf.saved_model.load(str(path)).signatures["serving_default"](x=tf.constant(3.0))["y"]
    assert float(y) == 6.0
