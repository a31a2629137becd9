"""The training benchmark: keras_ldm's `train_on_batch` (AdamW) against a PyTorch AdamW step on the
diffusers modules doing the same work (frozen VAE encode + posterior sample, q_sample, LDMBert and UNet
forward/backward, MSE), both timed by the same loop after `TRAIN_WARMUP_STEPS` untimed steps."""

import numpy as np

from .models import prompts
from .timing import NotMeasured, attempt, phase, progress, shown, time_calls

TRAIN_WARMUP_STEPS = 3  # on PyTorch, keras_ldm records its UNet, encoder and text encoder in the first three


def samples_per_second(step, loss_of, batch_size, args):
    """Samples/s of `step()` over `args.train_steps` steps after the warm-up steps; `loss_of(step())` waits
    for the device (once after the warm-up, once after the timed steps) and gives the loss."""
    timing = time_calls(step, args.train_steps, warmup=TRAIN_WARMUP_STEPS, wait=loss_of, wait_each=False)
    if not np.isfinite(timing.result):
        return NotMeasured(f"the training loss is {timing.result}")
    return batch_size * args.train_steps / timing.total


def train_keras(model, images, token_ids, args):
    """`LatentDiffusion.compile()` (AdamW, lr 1e-4, weight decay 0.01), then `train_on_batch` steps."""
    from keras import ops

    if args.freeze_text_encoder:
        model.text_encoder.trainable = False
        for variable in model.text_encoder.variables:
            variable.trainable = False
    model.compile(learning_rate=1e-4, weight_decay=0.01)  # Keras' jit_compile="auto" (report() says which)
    batch = {"images": ops.convert_to_tensor(images), "token_ids": ops.convert_to_tensor(token_ids)}
    return samples_per_second(
        lambda: model.train_on_batch(batch, return_dict=True),
        lambda logs: float(logs["loss"]),
        len(images),
        args,
    )


def train_diffusers(side, images, token_ids, args):
    """torch.optim.AdamW steps doing what `LatentDiffusion.train_step` does, on `side`'s modules."""
    import torch
    import torch.nn.functional as F

    pipeline, device = side.pipeline, side.torch_device
    unet, bert, vae, scheduler = pipeline.unet, pipeline.bert, pipeline.vqvae, pipeline.scheduler
    vae.requires_grad_(False)
    trained = [side.eager_unet] + ([] if args.freeze_text_encoder else [bert])
    bert.requires_grad_(not args.freeze_text_encoder)
    for module in trained:
        module.train()
    parameters = [p for module in trained for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)
    images = torch.from_numpy(np.transpose(images, (0, 3, 1, 2))).to(device)
    token_ids = torch.from_numpy(token_ids.astype("int64")).to(device)
    alphas = scheduler.alphas_cumprod.to(device)
    scale = vae.config.scaling_factor

    def step():
        x = images.float() / 127.5 - 1.0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=side.bf16):
            with torch.no_grad():
                latents = vae.encode(x).latent_dist.sample().float() * scale
            t = torch.randint(0, len(alphas), (len(latents),), device=device)
            noise = torch.randn_like(latents)
            a = alphas[t][:, None, None, None]
            noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise
            context = bert(token_ids)[0]
            prediction = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return samples_per_second(step, lambda loss: float(loss.item()), len(images), args)


def measure_training(ours, theirs, args):
    """{side: samples/s} at `--train-batch` on the same random images and prompts, keras_ldm first."""
    import keras

    if not args.train_batch:
        return {s.name: NotMeasured("--train-batch 0") for s in (ours, theirs)}
    size = args.config["image_size"]
    images = np.random.default_rng(3).integers(0, 256, (args.train_batch, size, size, 3), dtype="uint8")
    token_ids = np.asarray(
        keras.ops.convert_to_numpy(ours.model.tokenizer(prompts(args.train_batch))), dtype="int32"
    )
    runs = {ours.name: lambda: train_keras(ours.model, images, token_ids, args)}
    runs[theirs.name] = lambda: train_diffusers(theirs, images, token_ids, args)
    training = {}
    for name, run in runs.items():
        with phase(f"{name} training"):
            training[name] = attempt(run)
        progress(f"{name} training, batch {args.train_batch}: {shown(training[name])} samples/s")
    return training
