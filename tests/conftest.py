"""Shared fixtures: a small synthetic, bimodal demonstration set in the zarr replay-buffer layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def make_bimodal_episodes(n_episodes: int = 12, length: int = 40, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A point moves from near the origin to one of two goals (+y or -y), chosen at random per episode.

    Observations: ``pos`` [2] (the point) and ``target`` [3] (x-progress plus a constant cue
    that does NOT reveal the branch), so for the first steps the action distribution is bimodal,
    like human demonstrations going around an obstacle either way. Action [2]: the next position.
    """
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        branch = rng.choice([-1.0, 1.0])
        s = np.linspace(0.0, 1.0, length + 1)
        path = np.stack([s, branch * np.sin(np.pi * s) * 0.8], axis=1) + rng.normal(0, 0.01, (1, 2))
        pos = path[:-1].astype(np.float32)
        action = path[1:].astype(np.float32)
        target = np.stack([1.0 - s[:-1], np.full(length, 0.5), np.ones(length)], axis=1).astype(np.float32)
        episodes.append({"pos": pos, "target": target, "action": action})
    return episodes


@pytest.fixture
def bimodal_episodes() -> list[dict[str, np.ndarray]]:
    return make_bimodal_episodes()


@pytest.fixture
def bimodal_zarr(tmp_path: Path) -> Path:
    """Path of a zarr replay buffer with 12 bimodal episodes (keys pos, target, action)."""
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    path = tmp_path / "bimodal.zarr"
    buffer = ReplayBuffer.create(path)
    for episode in make_bimodal_episodes():
        buffer.add_episode(episode)
    return path


TINY_TRAIN_OVERRIDES = [
    "model.down_dims=[16,32]",
    "model.diffusion_step_embed_dim=16",
    "model.kernel_size=3",
    "model.n_groups=4",
    "horizon=8",
    "n_obs_steps=2",
    "n_action_steps=4",
    "training.batch_size=32",
    "training.num_threads=1",
    "training.progress=false",
    "optimizer.lr=3e-3",
    "lr_scheduler.warmup_steps=10",
    "dataset.val_ratio=0.2",
]


def compose_train_config(dataset_path: Path, out_dir: Path, overrides: list[str] = ()):
    """The repo's config/train.yaml with a tiny network and the given overrides (hydra compose, no app run)."""
    from hydra import compose, initialize_config_dir

    from paradigms_policy import paths

    with initialize_config_dir(config_dir=str(paths.config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"dataset.path={dataset_path}", f"out_dir={out_dir}",
                                           *TINY_TRAIN_OVERRIDES, *overrides])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """out_dir of a tiny policy trained for 300 steps on the bimodal data (shared by the train/policy tests)."""
    import torch

    from paradigms_policy.data.replay_buffer import ReplayBuffer
    from paradigms_policy.train import train

    root = tmp_path_factory.mktemp("trained")
    buffer = ReplayBuffer.create(root / "bimodal.zarr")
    for episode in make_bimodal_episodes(n_episodes=16):
        buffer.add_episode(episode)
    cfg = compose_train_config(root / "bimodal.zarr", root / "run",
                               ["training.max_steps=300", "training.val_every=100", "training.log_every=25",
                                "training.checkpoint_every=100", f"export_path={root / 'slim.pt'}"])
    threads = torch.get_num_threads()
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def make_random_checkpoint(path: Path, *, down_dims=(16, 32), obs_shapes=None, action_dim: int = 2,
                           horizon: int = 8, n_obs_steps: int = 2, n_action_steps: int = 4, seed: int = 0,
                           rgb_keys: tuple[str, ...] = ()) -> Path:
    """An untrained but complete checkpoint (tiny UNet, normalizer fitted on random data) in milliseconds."""
    import torch

    from paradigms_policy.checkpoint import save_checkpoint
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, build_obs_encoder, obs_encoder_spec

    torch.manual_seed(seed)
    obs_shapes = obs_shapes or {"pos": [2], "target": [3]}
    shape_meta = {"obs": {k: {"shape": list(s), "type": "rgb" if k in rgb_keys else "low_dim"}
                          for k, s in obs_shapes.items()},
                  "action": {"shape": [action_dim]}}
    spec = obs_encoder_spec(shape_meta)
    obs_dim = build_obs_encoder(spec).output_dim
    model_kwargs = dict(input_dim=action_dim, local_cond_dim=None, global_cond_dim=obs_dim * n_obs_steps,
                        diffusion_step_embed_dim=16, down_dims=list(down_dims), kernel_size=3, n_groups=4,
                        cond_predict_scale=True)
    network = PolicyNetwork(spec, model_kwargs, n_obs_steps)
    rng = np.random.default_rng(seed)
    data = {k: rng.normal(size=(64, *s)).astype(np.float32) for k, s in obs_shapes.items()}
    data["action"] = rng.uniform(-1, 1, size=(64, action_dim)).astype(np.float32)
    normalizer = LinearNormalizer().fit(data)
    return save_checkpoint(
        path, config={"note": "random test checkpoint"}, shape_meta=shape_meta, horizon=horizon,
        n_obs_steps=n_obs_steps, n_action_steps=n_action_steps, model_kwargs=model_kwargs, obs_encoder=spec,
        noise_scheduler={"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
                         "prediction_type": "epsilon", "clip_sample": True},
        state_dicts={"ema_model": network.state_dict(), "model": network.state_dict()},
        normalizer=normalizer.state_dict(), training={"global_step": 0, "seed": seed})


@pytest.fixture
def random_checkpoint(tmp_path: Path) -> Path:
    return make_random_checkpoint(tmp_path / "random.pt")


# --------------------------------------------------------------------------- diffusion solver helpers
# Small deterministic problems shared by the solver tests (``from conftest import problem, ...``).
HORIZON, ACTION_DIM = 8, 3


def fake_denoiser(seed: int = 0, dtype=torch.float64, shift: float = 0.0):
    """Small deterministic nonlinear 'network': mixes the horizon and the action dims.

    `shift` plays the role of the observation conditioning.
    """
    g = torch.Generator().manual_seed(seed)
    mix_t = torch.randn(HORIZON, HORIZON, generator=g, dtype=dtype) / HORIZON**0.5
    mix_a = torch.randn(ACTION_DIM, ACTION_DIM, generator=g, dtype=dtype) / ACTION_DIM**0.5
    calls = {"n": 0, "windows": []}

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x: [W,B,H,A], t: Long[W]
        calls["n"] += 1
        calls["windows"].append(x.shape[0])
        tt = (t.to(dtype) / 100.0).reshape(-1, 1, 1, 1)
        h = torch.einsum("hk,wbka,ac->wbhc", mix_t, x, mix_a)
        return 0.8 * torch.tanh(h + tt + shift) + 0.3 * x * torch.cos(3 * tt)

    denoise.calls = calls
    return denoise


def gmm_denoiser(rule, phase: float = 0.0, std: float = 0.1):
    """Exact epsilon of a two-mode Gaussian mixture of smooth trajectories (a 'perfect network').

    The modes are smooth functions of absolute action time; ``phase`` shifts time, so a
    later control cycle sees the same curves advanced along the horizon.
    """
    abar = rule.schedule.alphas_cumprod
    calls = {"n": 0, "windows": []}

    def means(dtype):
        h = torch.arange(HORIZON, dtype=dtype) / HORIZON + phase
        a = torch.arange(ACTION_DIM, dtype=dtype)
        up = 0.6 * torch.sin(3 * h[:, None] + a[None, :])
        down = -0.5 * torch.cos(2 * h[:, None] + a[None, :])
        return torch.stack([up, down])  # [K=2, H, A]

    def denoise(x, t):  # x: [W,B,H,A]
        calls["n"] += 1
        calls["windows"].append(x.shape[0])
        ab = abar[t].to(x.dtype).reshape(-1, 1, 1, 1, 1)  # [W,1,1,1,1] over [W,B,K,H,A]
        mu = means(x.dtype)[None, None]
        var = ab * std**2 + (1 - ab)
        d = x.unsqueeze(2) - ab.sqrt() * mu
        w = torch.softmax(-(d**2 / var).sum((-1, -2)) / 2, dim=2)[..., None, None]
        x0 = (w * (mu + ab.sqrt() * std**2 / var * d)).sum(2)
        return (x - ab[:, :, 0].sqrt() * x0) / (1 - ab[:, :, 0]).sqrt()

    denoise.calls = calls
    return denoise


def problem(kind: str, steps: int, batch: int = 2, seed: int = 1):
    """(rule, x_init [B,H,A], noise [S,B,H,A]) in float64 for a rule of ``kind`` with ``steps`` steps."""
    from paradigms_policy.diffusion.sequential import draw_noise
    from paradigms_policy.diffusion.step_rules import make_step_rule

    rule = make_step_rule(kind, steps)
    g = torch.Generator().manual_seed(seed)
    x_init, noise = draw_noise(rule, (batch, HORIZON, ACTION_DIM), generator=g, dtype=torch.float64)
    return rule, x_init, noise


# Deterministic deadlines: a fake clock advanced by the denoiser by a known cost per call.
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cost(w: int) -> float:
    return 0.1 + 0.3 * w  # seconds per batched call of width w


def timed(denoise, clock):
    def call(x, t):
        clock.now += cost(x.shape[0])
        return denoise(x, t)
    return call


def seeded(*windows):
    from paradigms_policy.diffusion.budget import RoundTimeEstimator

    est = RoundTimeEstimator()
    for w in windows:
        est.seed(w, cost(w))
    return est


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
