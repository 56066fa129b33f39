"""paradigms-train: train a DiffusionPolicy on a zarr replay buffer (hydra app, config/train.yaml).

Low-dim keys, and camera images (uint8 [T, H, W, C] arrays): images go to the policy as float [C, H, W] in
[0, 1], through DiffusionPolicy's fixed image-range normalizer, into ``ImageObsEncoder`` (``obs_encoder``
config: random crop in training, centre crop in eval; config/train_lift_image.yaml).

The policy is DiffusionPolicy's UNet low-dim policy with observations as global condition: the
normalized obs of n_obs_steps steps condition a ConditionalUnet1D that predicts the noise added to
the normalized action horizon (DDPM training, MSE). AdamW + warm-up/cosine LR, EMA weights (the
deployed ones), validation loss, tqdm bar, periodic resumable checkpoints.

Several processes (DistributedDataParallel; gloo on CPU, nccl on GPU)::

    torchrun --nproc_per_node=N -m paradigms_policy.train dataset.path=... training.batch_size=256

``training.batch_size`` is the global batch: each rank trains on its 1/N of it, so N processes follow
the single-process run with the same batch (training.sampling). Rank 0 keeps the EMA weights,
validates, logs and writes checkpoints; a run resumes from any checkpoint (``resume=true`` for
latest.pt, ``resume_from=PATH``) with any number of processes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import paths
from .checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
from .data.replay_buffer import ReplayBuffer
from .data.sequence_dataset import SequenceDataset
from .model.normalizer import LinearNormalizer
from .training.ema import EMAModel
from .training.lr import make_lr_scheduler
from .training.distributed import World, init_world
from .training.network import DiffusionLoss, NoiseAdder, PolicyNetwork, build_obs_encoder, obs_encoder_spec
from .training.sampling import batch_indices, step_noise

__all__ = ["main", "train", "make_dataset", "model_kwargs_for"]

log = logging.getLogger(__name__)


def resolve_obs_keys(buffer: ReplayBuffer, cfg_keys: Any, action_key: str) -> list[str]:
    if cfg_keys is not None:
        return list(cfg_keys)
    recorded = buffer.attrs.get("obs_keys")
    if recorded:
        return list(recorded)
    return [key for key in buffer.keys() if key != action_key]


def make_dataset(cfg: DictConfig) -> SequenceDataset:
    path = Path(cfg.dataset.path)
    if not path.exists():
        raise FileNotFoundError(f"dataset.path {path} does not exist (a zarr replay buffer; see paradigms-demos)")
    buffer = ReplayBuffer.open(path, mode="r")
    obs_keys = resolve_obs_keys(buffer, cfg.dataset.obs_keys, cfg.dataset.action_key)
    return SequenceDataset(
        buffer, cfg.horizon, obs_keys, n_obs_steps=cfg.n_obs_steps, n_action_steps=cfg.n_action_steps,
        action_key=cfg.dataset.action_key, val_ratio=cfg.dataset.val_ratio, seed=cfg.dataset.seed,
    )


def image_encoder_kwargs(cfg: DictConfig, shape_meta: dict) -> dict[str, Any]:
    """ImageObsEncoder arguments from ``cfg.obs_encoder`` when the dataset has camera images ({} otherwise).

    ``crop_shape`` is DiffusionPolicy's augmentation: a random crop of that size per sample in training,
    the centre crop in eval (the EMA weights, rollouts, the node).
    """
    images = [key for key, meta in shape_meta["obs"].items() if meta["type"] == "rgb"]
    if not images:
        return {}
    settings = cfg.get("obs_encoder") or {}
    kwargs: dict[str, Any] = {}
    if settings.get("crop_shape") is not None:
        kwargs["crop_shape"] = [int(v) for v in settings["crop_shape"]]
        for key in images:
            hw = shape_meta["obs"][key]["shape"][1:]
            if any(c > s for c, s in zip(kwargs["crop_shape"], hw)):
                raise ValueError(f"obs_encoder.crop_shape {kwargs['crop_shape']} is larger than image {key!r} "
                                 f"of {hw[0]}x{hw[1]} pixels")
    for name in ("backbone", "num_kp", "feature_dim", "conv_strided"):
        if settings.get(name) is not None:
            kwargs[name] = settings[name] if name == "backbone" else int(settings[name])
    if settings.get("conv_widths") is not None:
        kwargs["conv_widths"] = [int(v) for v in settings["conv_widths"]]
    return kwargs


def model_kwargs_for(cfg: DictConfig, action_dim: int, global_cond_dim: int) -> dict[str, Any]:
    """ConditionalUnet1D constructor arguments (stored verbatim in the checkpoint)."""
    return {
        "input_dim": int(action_dim),
        "local_cond_dim": None,
        "global_cond_dim": int(global_cond_dim),
        "diffusion_step_embed_dim": int(cfg.model.diffusion_step_embed_dim),
        "down_dims": [int(d) for d in cfg.model.down_dims],
        "kernel_size": int(cfg.model.kernel_size),
        "n_groups": int(cfg.model.n_groups),
        "cond_predict_scale": bool(cfg.model.cond_predict_scale),
    }


def normalize_batch(normalizer: LinearNormalizer, batch: dict, device: torch.device) -> tuple[dict, torch.Tensor]:
    nobs = {key: normalizer[key].normalize(value.to(device)) for key, value in batch["obs"].items()}
    return nobs, normalizer["action"].normalize(batch["action"].to(device))


@torch.no_grad()
def validation_loss(network: PolicyNetwork, noise: NoiseAdder, normalizer: LinearNormalizer,
                    dataset: SequenceDataset, cfg: DictConfig, device: torch.device) -> float | None:
    """Mean loss over the first val_batches batches, with fixed noise so values are comparable over time."""
    if len(dataset) == 0:
        return None
    generator = torch.Generator(device=device).manual_seed(int(cfg.training.seed))
    order_rng = np.random.default_rng(int(cfg.training.seed))
    losses = []
    for i, batch in enumerate(dataset.iter_batches(int(cfg.training.batch_size), generator=order_rng)):
        if i >= int(cfg.training.val_batches):
            break
        nobs, naction = normalize_batch(normalizer, batch, device)
        losses.append(float(noise.loss(network, nobs, naction, generator=generator)))
    return float(np.mean(losses))


def batch_for_step(dataset: SequenceDataset, step: int, batch_size: int, seed: int) -> dict:
    """Global batch number ``step`` of a deterministic epoch-wise shuffle (so a resumed run draws the same batches)."""
    return dataset.get_batch(batch_indices(len(dataset), step, batch_size, seed))


def resume_path(cfg: DictConfig, ckpt_dir: Path) -> Path | None:
    """The checkpoint to continue from: ``resume_from`` (any checkpoint file), else latest.pt when ``resume``."""
    chosen = cfg.get("resume_from")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"resume_from {path} does not exist (a checkpoint written by paradigms-train)")
        return path
    latest = ckpt_dir / "latest.pt"
    return latest if cfg.resume and latest.exists() else None


def train(cfg: DictConfig) -> Path:
    """Run training as configured (one process, or one rank of a torchrun job); returns the final checkpoint path."""
    world, device = init_world(str(cfg.training.device), cfg.training.get("dist_backend"))
    try:
        return _train(cfg, world, device)
    finally:
        world.close()


def _train(cfg: DictConfig, world: World, device: torch.device) -> Path:
    started = time.perf_counter()
    if cfg.training.num_threads:
        torch.set_num_threads(int(cfg.training.num_threads))
    seed = int(cfg.training.seed)
    torch.manual_seed(seed)  # the same initial weights on every rank
    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    dataset = make_dataset(cfg)
    env_args = ReplayBuffer.open(cfg.dataset.path, mode="r").attrs.get("env_args")  # robomimic env metadata, if any
    val_dataset = dataset.get_validation_dataset()
    batch_size = min(int(cfg.training.batch_size), len(dataset))  # the global batch, over all ranks
    shard = world.shard(batch_size)
    normalizer = dataset.get_normalizer().to(device)
    shape_meta = dataset.shape_meta
    encoder_spec = obs_encoder_spec(shape_meta, **image_encoder_kwargs(cfg, shape_meta))
    feature_dim = build_obs_encoder(encoder_spec).output_dim  # encoder width decides the UNet's condition size
    model_kwargs = model_kwargs_for(cfg, dataset.action_dim, feature_dim * int(cfg.n_obs_steps))
    network = PolicyNetwork(encoder_spec, model_kwargs, cfg.n_obs_steps).to(device)
    noise = NoiseAdder(**OmegaConf.to_container(cfg.noise_scheduler, resolve=True))
    ema = EMAModel(network, **OmegaConf.to_container(cfg.ema, resolve=True)) if world.is_main else None
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=float(cfg.optimizer.lr), weight_decay=float(cfg.optimizer.weight_decay),
        betas=tuple(cfg.optimizer.betas), eps=float(cfg.optimizer.eps),
    )
    max_steps = int(cfg.training.max_steps)
    lr_scheduler = make_lr_scheduler(optimizer, cfg.lr_scheduler.name, int(cfg.lr_scheduler.warmup_steps), max_steps)
    n_params = sum(p.numel() for p in network.parameters())
    if world.is_main:
        log.info("dataset %s; %d params; global batch %d over %d process(es)", dataset, n_params, batch_size, world.size)

    global_step, history, prior_wall = 0, [], 0.0
    latest = ckpt_dir / "latest.pt"
    source = resume_path(cfg, ckpt_dir)
    if source is not None:  # every rank loads the same weights and optimizer state; rank 0 also the EMA and log
        state = load_checkpoint(source, map_location=device)
        network.load_state_dict(state["state_dicts"]["model"])
        optimizer.load_state_dict(state["state_dicts"]["optimizer"])
        lr_scheduler.load_state_dict(state["state_dicts"]["lr_scheduler"])
        global_step = int(state["training"]["global_step"])
        if ema is not None:
            ema.averaged_model.load_state_dict(state["state_dicts"]["ema_model"])
            ema.optimization_step = global_step
        history = [r for r in state["training"]["losses"] if r["step"] <= global_step]
        prior_wall = float(state["training"]["wall_time_s"])
        stored_batch = state["training"].get("batch_size")
        if world.is_main:
            log.info("resumed from %s at step %d (written by %d process(es))", source, global_step,
                     int(state["training"].get("world_size", 1)))
            if stored_batch is not None and int(stored_batch) != batch_size:
                log.warning("resuming with global batch %d; %s was trained with %s", batch_size, source, stored_batch)
    torch.manual_seed(seed + world.rank)  # per-rank seed for anything rank-local; batches and noise do not use it

    config_dict = OmegaConf.to_container(cfg, resolve=True)

    def checkpoint_fields() -> dict[str, Any]:
        steps_per_epoch = max(1, len(dataset) // batch_size)
        return dict(
            config=config_dict, shape_meta=shape_meta, horizon=int(cfg.horizon), n_obs_steps=int(cfg.n_obs_steps),
            n_action_steps=int(cfg.n_action_steps), model_kwargs=model_kwargs, obs_encoder=encoder_spec,
            noise_scheduler=OmegaConf.to_container(cfg.noise_scheduler, resolve=True),
            state_dicts={"model": network.state_dict(), "ema_model": ema.averaged_model.state_dict(),
                         "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()},
            normalizer=normalizer.state_dict(), env_args=env_args,
            training={"global_step": global_step, "epoch": global_step // steps_per_epoch, "losses": history,
                      "wall_time_s": prior_wall + time.perf_counter() - started, "torch_version": str(torch.__version__),
                      "seed": seed, "n_params": n_params, "batch_size": batch_size, "world_size": world.size,
                      "n_train_windows": len(dataset), "n_val_windows": len(val_dataset),
                      "n_train_episodes": dataset.n_episodes, "n_val_episodes": val_dataset.n_episodes},
        )

    def save_periodic() -> None:
        fields = checkpoint_fields()
        save_checkpoint(latest, **fields)
        if cfg.training.get("keep_checkpoints"):
            save_checkpoint(ckpt_dir / f"step_{global_step:07d}.pt", **fields)

    loss_module = DiffusionLoss(network, noise)
    if world.distributed:  # gradients averaged over ranks: the gradient of the global-batch mean loss
        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    event_shape = (int(cfg.horizon), int(dataset.action_dim))
    network.train()
    bar = tqdm(total=max_steps, initial=global_step, disable=not (cfg.training.progress and world.is_main),
               desc="train", mininterval=2.0, dynamic_ncols=True)
    running = []
    while global_step < max_steps:
        indices = batch_indices(len(dataset), global_step, batch_size, seed)
        step_eps, step_t = step_noise(seed, global_step, (batch_size, *event_shape), noise.num_train_timesteps)
        nobs, naction = normalize_batch(normalizer, dataset.get_batch(indices[shard]), device)
        loss = loss_module(nobs, naction, step_eps[shard].to(device), step_t[shard].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        if ema is not None:
            ema.step(network)
        global_step += 1
        running.append(world.mean(loss.detach()))  # the global-batch loss
        bar.update(1)
        if not world.is_main:
            continue
        record: dict[str, Any] = {}
        if global_step % int(cfg.training.log_every) == 0 or global_step == max_steps:
            record = {"step": global_step, "train_loss": float(np.mean(running)), "lr": lr_scheduler.get_last_lr()[0]}
            running = []
        if global_step % int(cfg.training.val_every) == 0 or global_step == max_steps:
            val = validation_loss(ema.averaged_model, noise, normalizer, val_dataset, cfg, device)
            record = record or {"step": global_step, "lr": lr_scheduler.get_last_lr()[0]}
            record["val_loss"] = val
        if record:
            history.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step" and v is not None})
        if global_step % int(cfg.training.checkpoint_every) == 0 and global_step < max_steps:
            save_periodic()
    bar.close()

    final = ckpt_dir / "final.pt"
    if world.is_main:
        fields = checkpoint_fields()
        save_checkpoint(latest, **fields)
        if cfg.training.get("keep_checkpoints"):
            save_checkpoint(ckpt_dir / f"step_{global_step:07d}.pt", **fields)
        save_checkpoint(final, **fields)
        if cfg.export_path:
            export = save_checkpoint(cfg.export_path, **slim_checkpoint(fields))
            log.info("exported slim checkpoint to %s", export)
        summary = dict(fields["training"])
        (out_dir / "train_log.json").write_text(json.dumps(summary, indent=1, default=float))
        last = [r for r in history if "train_loss" in r]
        if last:
            log.info("done: step %d, train loss %.4f, %.0f s", global_step, last[-1]["train_loss"], summary["wall_time_s"])
    world.barrier()  # the other ranks return once the final checkpoint is on disk
    return final


@hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    final = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, once
        print(f"final checkpoint: {final}")


if __name__ == "__main__":
    main()
