"""Shared fixtures: a small synthetic, bimodal demonstration set in the zarr replay-buffer layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


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


class RobomimicStyleReader:
    """A reader that touches an HDF5 file exactly the way robomimic 0.3.0 does, with default arguments.

    Follows robomimic's documented dataset layout and the access pattern of
    ``robomimic.utils.dataset.SequenceDataset`` (hdf5_cache_mode=None, load_next_obs=True,
    frame_stack=1, seq_length=1, padding on) and ``FileUtils.get_env_metadata_from_dataset`` /
    ``get_shape_metadata_from_dataset``. It exists because robomimic itself cannot be installed
    here (it pulls a CUDA torch); every h5py access below is one robomimic makes, so a file this
    reader rejects is one robomimic would reject.
    """

    def __init__(self, path, obs_keys, dataset_keys=("actions", "rewards", "dones"), *, filter_by_attribute=None,
                 frame_stack: int = 1, seq_length: int = 1, load_next_obs: bool = True) -> None:
        import h5py

        self.obs_keys, self.dataset_keys = tuple(obs_keys), tuple(dataset_keys)
        self.frame_stack, self.seq_length, self.load_next_obs = frame_stack, seq_length, load_next_obs
        self.file = h5py.File(path, "r", swmr=True, libver="latest")  # SequenceDataset.hdf5_file
        if filter_by_attribute is not None:
            demos = [elem.decode("utf-8") for elem in np.array(self.file[f"mask/{filter_by_attribute}"][:])]
        else:
            demos = list(self.file["data"].keys())
        self.demos = [demos[i] for i in np.argsort([int(elem[5:]) for elem in demos])]
        self.index: list[tuple[str, int]] = []  # (demo, index in demo); pad_frame_stack/pad_seq_length on
        self.lengths: dict[str, int] = {}
        for ep in self.demos:
            length = int(self.file[f"data/{ep}"].attrs["num_samples"])
            self.lengths[ep] = length
            self.index += [(ep, i) for i in range(max(length, 1))]

    def env_meta(self) -> dict:
        import json

        return json.loads(self.file["data"].attrs["env_args"])

    def shape_meta(self) -> dict:
        demo_id = list(self.file["data"].keys())[0]
        demo = self.file[f"data/{demo_id}"]
        return {"ac_dim": self.file[f"data/{demo_id}/actions"].shape[1],
                "all_shapes": {k: demo[f"obs/{k}"].shape[1:] for k in sorted(demo["obs"])}}

    def __len__(self) -> int:
        return len(self.index)

    def _sequence(self, ep: str, t: int, keys) -> dict:
        length = self.lengths[ep]
        stack = self.frame_stack - 1
        begin, end = max(0, t - stack), min(length, t + self.seq_length)
        pad_before, pad_after = max(0, stack - t), max(0, t + self.seq_length - length)
        out = {}
        for key in keys:
            data = self.file[f"data/{ep}/{key}"][begin:end]
            out[key] = np.concatenate([np.repeat(data[:1], pad_before, 0), data, np.repeat(data[-1:], pad_after, 0)])
        return out

    def __getitem__(self, index: int) -> dict:
        ep, t = self.index[index]
        item = self._sequence(ep, t, self.dataset_keys)
        prefixes = ("obs", "next_obs") if self.load_next_obs else ("obs",)
        for prefix in prefixes:
            seq = self._sequence(ep, t, [f"{prefix}/{k}" for k in self.obs_keys])
            item[prefix] = {k.split("/")[1]: v for k, v in seq.items()}
        return item

    def close(self) -> None:
        self.file.close()


@pytest.fixture
def robomimic_reader():
    """Factory: ``robomimic_reader(path, obs_keys, ...)`` -> RobomimicStyleReader, closed after the test."""
    readers = []

    def make(*args, **kwargs) -> RobomimicStyleReader:
        readers.append(RobomimicStyleReader(*args, **kwargs))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()
