"""The generation benchmark: keras_ldm's `generate()` against the diffusers pipeline call, where the time
of one call goes (text encoder, sampling loop, decode), and one UNet forward with its TFLOP/s."""

import numpy as np

from .environment import Device
from .models import count_params, prompts, to_uint8_from_unit, torch_autocast, torch_device
from .timing import NotMeasured, attempt, median_seconds, progress, shown, time_calls


class KerasSide:
    """keras_ldm's side: a loaded `LatentDiffusion`."""

    name = "keras_ldm"

    def __init__(self, model, args):
        self.model, self.args = model, args
        self.size = args.config["image_size"]

    def generate(self, batch, latents=None):
        return self.model.generate(
            prompts(batch),
            num_steps=self.args.steps,
            guidance_scale=self.args.guidance_scale,
            seed=0,
            sampler="ddim",
            eta=0.0,
            height=self.size,
            width=self.size,
            latents=latents,
        )

    def text_seconds(self, batch):
        """Tokenize, then encode the prompts and the empty negative prompts with the text encoder compiled on
        its own (generate() runs it inside its one compiled program)."""
        from keras import ops

        from keras_ldm.backend.compile import compile_function
        from keras_ldm.backend.traced_call import traced_call

        model = self.model
        call = traced_call(model.text_encoder)  # recorded on PyTorch, as by a repeated generate()
        encode = compile_function(lambda ids: call(ids), model.text_encoder)

        def run():
            context = encode(model.tokenizer(prompts(batch)))
            unconditional = encode(model.tokenizer([""] * batch))
            return ops.convert_to_numpy(context), ops.convert_to_numpy(unconditional)

        return median_seconds(run, self.args.repeats)

    def decode_seconds(self, batch):
        """Decode + uint8, compiled on their own (generate() runs them inside its one compiled program)."""
        from keras import ops

        from keras_ldm.backend.compile import compile_function
        from keras_ldm.models.generation import images_to_uint8

        latent = self.size // self.model.first_stage.downsample_factor
        z = ops.convert_to_tensor(
            np.random.default_rng(0).normal(size=(batch, latent, latent, 4)).astype("float32")
        )
        decode = compile_function(lambda z: images_to_uint8(self.model.decode_latents(z)), self.model)
        return median_seconds(lambda: ops.convert_to_numpy(decode(z)), self.args.repeats)

    def unet_params(self):
        return self.model.unet.count_params()

    def unet_forward_seconds(self, x, t, context):
        from keras import ops

        from keras_ldm.backend.compile import compile_function
        from keras_ldm.backend.traced_call import traced_call

        unet = self.model.unet
        call = traced_call(unet)  # as generate() calls it (recorded once on PyTorch)
        forward = compile_function(lambda x, t, c: call(x, timesteps=t, context=c), unet)
        x = ops.convert_to_tensor(np.transpose(x, (0, 2, 3, 1)))
        t, context = ops.convert_to_tensor(t), ops.convert_to_tensor(context)
        return median_seconds(lambda: ops.convert_to_numpy(forward(x, t, context)), self.args.repeats)


class DiffusersSide:
    """diffusers' side: the pipeline keras_ldm loaded, moved to the device by `to_device()`."""

    name = "diffusers"

    def __init__(self, pipeline, args, device):
        self.args, self.device, self.pipeline = args, device, pipeline
        self.torch_device = torch_device(device)
        self.sync = Device(device, "torch").sync
        self.eager_unet = pipeline.unet
        self.size = args.config["image_size"]
        self.bf16 = args.precision == "mixed_bfloat16"

    def to_device(self):
        self.pipeline.to(self.torch_device)
        if self.args.diffusers_compile:
            import torch

            self.pipeline.unet = torch.compile(self.eager_unet)

    def generate(self, batch, latents=None, as_float=False):
        import torch

        generator = torch.Generator(self.torch_device).manual_seed(0)
        if latents is not None:
            latents = torch.from_numpy(np.transpose(latents, (0, 3, 1, 2))).to(self.torch_device)
        with torch_autocast(self.device, self.args.precision):
            images = self.pipeline(
                prompts(batch),
                height=self.size,
                width=self.size,
                num_inference_steps=self.args.steps,
                guidance_scale=self.args.guidance_scale,
                eta=0.0,
                generator=generator,
                latents=latents,
                output_type="pt" if self.bf16 else "np",
            ).images
        if self.bf16:
            images = images.float().permute(0, 2, 3, 1).cpu().numpy()
        return images if as_float else to_uint8_from_unit(images)

    def text_seconds(self, batch):
        import torch

        pipeline = self.pipeline

        def encode(texts):
            ids = pipeline.tokenizer(
                texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            )
            return pipeline.bert(ids.input_ids.to(self.torch_device))[0]

        def run():
            with torch.no_grad(), torch_autocast(self.device, self.args.precision):
                result = encode([""] * batch), encode(prompts(batch))
            self.sync()
            return result

        return median_seconds(run, self.args.repeats)

    def decode_seconds(self, batch):
        import torch

        latent = self.size // 8
        z = torch.from_numpy(
            np.random.default_rng(0).normal(size=(batch, 4, latent, latent)).astype("float32")
        )
        z = z.to(self.torch_device)
        vae = self.pipeline.vqvae

        def run():
            with torch.no_grad(), torch_autocast(self.device, self.args.precision):
                images = (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
            return to_uint8_from_unit(images.float().permute(0, 2, 3, 1).cpu().numpy())

        return median_seconds(run, self.args.repeats)

    def unet_params(self):
        return count_params(self.eager_unet)

    def unet_inputs(self, x, t, context):
        import torch

        return tuple(torch.from_numpy(v).to(self.torch_device) for v in (x, t, context))

    def unet_flops(self, x, t, context):
        """FLOPs of one eager fp32 forward, counted per op from shapes by torch's FlopCounterMode."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

        aten = torch.ops.aten
        # CPU attention kernel, not in torch's table; same count as the GPU SDPA kernels.
        extra = {
            aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: (
                sdpa_flop_count(q, k, v)
            )
        }
        x, t, context = self.unet_inputs(x, t, context)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
            self.eager_unet(x, t, encoder_hidden_states=context)
        return counter.get_total_flops()

    def unet_forward_seconds(self, x, t, context):
        import torch

        x, t, context = self.unet_inputs(x, t, context)
        unet = self.pipeline.unet

        def run():
            with torch.no_grad(), torch_autocast(self.device, self.args.precision):
                out = unet(x, t, encoder_hidden_states=context).sample
            self.sync()
            return out

        return median_seconds(run, self.args.repeats)


def measure_generation(side, device, args):
    """{batch: (first s, median s)} for each batch size, plus the peak memory of this phase."""
    baseline = device.reset_peak()
    if isinstance(side, DiffusersSide):
        side.to_device()
    results = {}
    for batch in args.batches:

        def first_and_median(batch=batch):
            timing = time_calls(lambda: side.generate(batch), args.repeats)
            return timing.first, timing.median

        results[batch] = result = attempt(first_and_median)
        if isinstance(result, NotMeasured):
            progress(f"{side.name} generation, batch {batch}: {result}")
        else:
            first, median = result
            progress(f"{side.name} generation, batch {batch}: first call {first:.3g} s, then {median:.3g} s")
    return results, attempt(lambda: device.peak(baseline))


def time_split(side, batch, total):
    """Seconds in text encoding, decoding+uint8 and (the remainder) the sampling loop at `batch`."""
    if isinstance(total, NotMeasured):
        return total
    text = side.text_seconds(batch)
    decode = side.decode_seconds(batch)
    return text, total[1] - text - decode, decode


def generate_from_same_latents(ours, theirs, image_size):
    """Both sides' images of 2 prompts from the same starting latents (uint8 and diffusers' floats)."""
    latent = image_size // 8
    latents = np.random.default_rng(1).normal(size=(2, latent, latent, 4)).astype("float32")
    return ours.generate(2, latents=latents), theirs.generate(2, latents=latents, as_float=True)


def measure_unet_forward(sides, args):
    """(FLOPs of one forward of the guidance batch, {side: seconds}); each figure also to stderr."""
    ours, theirs = sides
    latent = args.config["image_size"] // 8
    unet_batch = 2 * max(args.batches)
    rng = np.random.default_rng(2)
    unet_args = (
        rng.normal(size=(unet_batch, 4, latent, latent)).astype("float32"),
        np.full((unet_batch,), 500.0, dtype="float32"),
        rng.normal(size=(unet_batch, 77, args.config["unet"]["cross_attention_dim"])).astype("float32"),
    )
    flops = attempt(lambda: theirs.unet_flops(*unet_args))
    forward = {s.name: attempt(lambda s=s: s.unet_forward_seconds(*unet_args)) for s in sides}
    for name, seconds in forward.items():
        progress(f"{name} UNet forward, batch {unet_batch}: {shown(seconds)} s (FLOPs: {shown(flops)})")
    return flops, forward
