"""Foreign checkpoints: DiffusionPolicy workspace .ckpt and LeRobot diffusion policies.

The fixtures under tests/fixtures/foreign were written by DiffusionPolicy's and LeRobot's own code
(see the README there) together with reference outputs computed by that code from the same weights.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from paradigms_policy.checkpoint import CheckpointError, build_network, build_normalizer, load_checkpoint
from paradigms_policy.formats import UnsafeCheckpointError, UnsupportedCheckpointError, load_any_checkpoint
from paradigms_policy.formats import diffusion_policy_ckpt, lerobot
from paradigms_policy.formats.safe_pickle import torch_load


@pytest.fixture(autouse=True)
def _one_thread():
    """The reference outputs were computed with one thread; more threads reorder float sums (~4e-7)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

FIXTURES = Path(__file__).parent / "fixtures" / "foreign"


def unpack(name: str, dest: Path) -> Path:
    """Copy a fixture (file or directory) to ``dest``, decompressing ``*.xz`` files."""
    src = FIXTURES / name
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for file in files:
        rel = Path(file.name) if src.is_file() else Path(name) / file.relative_to(src)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix == ".xz":
            target.with_suffix("").write_bytes(lzma.decompress(file.read_bytes()))
        else:
            shutil.copyfile(file, target)
    return dest / (Path(name).with_suffix("") if src.suffix == ".xz" else Path(name))


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.reference.npz") as data:
        return {k: data[k] for k in data.files}


def forward(checkpoint, obs: dict, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(global condition, denoiser output) of our network for raw observations [B, To, ...]."""
    network, normalizer = build_network(checkpoint), build_normalizer(checkpoint)
    with torch.no_grad():
        nobs = {k: normalizer[k].normalize(torch.as_tensor(v)) for k, v in obs.items()}
        cond = network.global_cond(nobs)
        eps = network(torch.from_numpy(x), torch.from_numpy(t), cond)
    return cond.numpy(), eps.numpy()


@pytest.fixture(scope="module")
def dp_lowdim(tmp_path_factory) -> Path:
    return unpack("dp_lowdim.ckpt.xz", tmp_path_factory.mktemp("dp"))


@pytest.fixture(scope="module")
def dp_hybrid(tmp_path_factory) -> Path:
    return unpack("dp_hybrid.ckpt.xz", tmp_path_factory.mktemp("dp"))


@pytest.fixture(scope="module")
def le_lowdim(tmp_path_factory) -> Path:
    return unpack("lerobot_lowdim", tmp_path_factory.mktemp("le")) / "pretrained_model"


@pytest.fixture(scope="module")
def le_image(tmp_path_factory) -> Path:
    return unpack("lerobot_image", tmp_path_factory.mktemp("le")) / "pretrained_model"


# ----------------------------------------------------------------------------- DiffusionPolicy
def test_dp_lowdim_matches_diffusion_policy(dp_lowdim):
    ckpt = load_any_checkpoint(dp_lowdim)  # no dill, no trust needed
    ref = reference("dp_lowdim")
    assert ckpt["source"]["format"] == "diffusion_policy_workspace" and ckpt["source"]["weights"] == "ema_model"
    assert ckpt["shape_meta"]["obs"] == {"obs": {"shape": [20], "type": "low_dim"}}
    assert (ckpt["horizon"], ckpt["n_obs_steps"], ckpt["n_action_steps"], ckpt["action_start"]) == (8, 2, 4, 1)
    _, eps = forward(ckpt, {"obs": ref["obs"]}, ref["x"], ref["t"])
    np.testing.assert_array_equal(eps, ref["eps_ema"])  # EMA weights, bit for bit
    assert np.abs(ref["eps_model"] - ref["eps_ema"]).max() > 0.1  # (the raw weights differ)
    normalizer = build_normalizer(ckpt)
    np.testing.assert_array_equal(normalizer["obs"].normalize(torch.from_numpy(ref["obs"])).numpy(), ref["nobs"])
    act = torch.from_numpy(ref["act"])
    np.testing.assert_array_equal(normalizer["action"].normalize(act).numpy(), ref["naction"])
    np.testing.assert_allclose(normalizer["action"].unnormalize(normalizer["action"].normalize(act)).numpy(),
                               ref["action_back"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(normalizer["action"].unnormalize(torch.from_numpy(ref["x"])).numpy(),
                                  ref["unnorm_x"])


def test_dp_without_ema_uses_the_raw_weights(dp_lowdim):
    from omegaconf import open_dict

    payload = torch_load(dp_lowdim)
    with open_dict(payload["cfg"]):
        payload["cfg"].training.use_ema = False
    ckpt = diffusion_policy_ckpt.convert_payload(payload, dp_lowdim)
    ref = reference("dp_lowdim")
    _, eps = forward(ckpt, {"obs": ref["obs"]}, ref["x"], ref["t"])
    np.testing.assert_array_equal(eps, ref["eps_model"])
    assert ckpt["source"]["weights"] == "model"


def test_dp_hybrid_image_matches_diffusion_policy(dp_hybrid):
    ckpt = load_any_checkpoint(dp_hybrid)
    ref = reference("dp_hybrid")
    enc = ckpt["obs_encoder"]
    assert (enc["type"], enc["norm"], enc["crop_shape"], enc["num_kp"], enc["feature_dim"]) == \
        ("robomimic", "group", [33, 33], 32, 64)
    # the image encoder's weights keep DiffusionPolicy's names (both of robomimic's aliases)
    names = set(ckpt["state_dicts"]["ema_model"])
    assert "obs_encoder.obs_nets.agentview_image.backbone.nets.4.0.conv1.weight" in names
    assert "obs_encoder.obs_nets.agentview_image.nets.0.nets.4.0.conv1.weight" in names
    assert "obs_encoder.obs_nets.agentview_image.nets.3.weight" in names
    obs = {"robot0_eef_pos": ref["obs_robot0_eef_pos"], "agentview_image": ref["pixels"].astype(np.float32) / 255}
    cond, eps = forward(ckpt, obs, ref["x"], ref["t"])
    np.testing.assert_array_equal(cond, ref["global_cond_ema"])
    np.testing.assert_array_equal(eps, ref["eps_ema"])


def test_dp_policy_end_to_end_ddim_matches_reference(dp_lowdim):
    """Our sequential DDIM-16 from the same initial noise reproduces diffusers' DDIM loop over DP's model."""
    from paradigms_policy.policy import load_policy

    ref = reference("dp_lowdim")
    policy = load_policy(dp_lowdim, sampler="ddim_sequential")
    with torch.no_grad():
        nobs = policy.normalizer["obs"].normalize(torch.from_numpy(ref["obs"]))
        policy.denoiser.bind(policy.network.global_cond({"obs": nobs}))
        x = torch.from_numpy(ref["x"])
        result = policy.sampler.sample(policy.denoiser, x, torch.zeros(policy.sampler.rule.num_steps, *x.shape))
        action = policy.normalizer["action"].unnormalize(result.sample).numpy()
    np.testing.assert_allclose(action, ref["ddim16_action_pred"], rtol=1e-4, atol=1e-3)
    out = policy.predict_action({"obs": ref["obs"][0]}, seed=0)
    assert out.action.shape == (4, 2) and np.isfinite(out.action).all()


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.policy, "_target_", "diffusion_policy.policy.diffusion_transformer_lowdim_policy."
                                             "DiffusionTransformerLowdimPolicy"), "transformer"),
    (lambda c: (setattr(c.policy, "obs_as_local_cond", True), setattr(c.policy, "obs_as_global_cond", False)),
     "local conditioning"),
    (lambda c: setattr(c.policy, "obs_as_global_cond", False), "inpainting of observations"),
    (lambda c: setattr(c.policy, "pred_action_steps_only", True), "pred_action_steps_only"),
    (lambda c: setattr(c.policy.noise_scheduler, "variance_type", "fixed_small_log"), "fixed_small_log"),
])
def test_dp_unsupported_configurations_are_named(dp_lowdim, edit, message):
    from omegaconf import open_dict

    payload = torch_load(dp_lowdim)
    with open_dict(payload["cfg"]):
        edit(payload["cfg"])
    with pytest.raises(UnsupportedCheckpointError, match=message):
        diffusion_policy_ckpt.convert_payload(payload, dp_lowdim)


def test_dp_weights_must_map_completely(dp_lowdim):
    payload = torch_load(dp_lowdim)
    payload["state_dicts"]["ema_model"]["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="not in network.*model.extra.weight"):
        diffusion_policy_ckpt.convert_payload(payload, dp_lowdim)
    payload = torch_load(dp_lowdim)
    del payload["state_dicts"]["ema_model"]["model.final_conv.1.bias"]
    with pytest.raises(CheckpointError, match="missing in checkpoint.*final_conv.1.bias"):
        diffusion_policy_ckpt.convert_payload(payload, dp_lowdim)


def test_unresolved_config_interpolations_are_resolved_without_eval():
    raw = {"n": 8, "lat": 1, "task": {"obs_dim": 20}, "policy": {
        "n_action_steps": "${eval:'${n}+${lat}'}", "obs_dim": "${task.obs_dim}",
        "g": "${eval: ${task.obs_dim}*2 if True else None}"}}
    out = diffusion_policy_ckpt.plain_config(raw)
    assert out["policy"] == {"n_action_steps": 9, "obs_dim": 20, "g": 40}
    with pytest.raises(UnsupportedCheckpointError, match="not plain arithmetic"):
        diffusion_policy_ckpt.plain_config({"x": "${eval:'__import__(\"os\").getcwd()'}"})


# ----------------------------------------------------------------------------- safe loading
class _Payload:
    """Pickles as a call to os.mkdir(target): stands in for a hostile checkpoint."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_malicious_pickle_is_refused_by_default(tmp_path):
    from paradigms_policy.policy import load_policy

    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"cfg": {}, "state_dicts": {}, "pickles": {}, "x": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.mkdir|os\.mkdir") as info:
        load_any_checkpoint(path)
    assert "trust_checkpoint" in str(info.value)
    with pytest.raises(UnsafeCheckpointError):
        load_policy(path)
    assert not marker.exists()  # nothing ran
    # the explicit opt-in loads it fully (and so does run it)
    with pytest.raises(CheckpointError):
        load_any_checkpoint(path, trust_checkpoint=True)
    assert marker.exists()


def test_safe_unpickler_refuses_a_legacy_pickle_naming_eval(tmp_path):
    import pickle

    path = tmp_path / "legacy.pt"
    with open(path, "wb") as handle:  # a legacy-format pickle naming builtins.eval
        handle.write(pickle.dumps(eval, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"builtin\w*\.eval"):
        load_any_checkpoint(path)


def test_our_own_checkpoints_still_load(random_checkpoint):
    ours = load_any_checkpoint(random_checkpoint)
    assert ours["format"] == "paradigms_policy.checkpoint" and "source" not in ours
    plain = load_checkpoint(random_checkpoint)
    weights = ours["state_dicts"]["ema_model"]
    assert all(torch.equal(v, plain["state_dicts"]["ema_model"][k]) for k, v in weights.items())


# ----------------------------------------------------------------------------- LeRobot
@pytest.mark.parametrize("kind", ["lowdim", "image"])
def test_lerobot_matches_lerobot(kind, le_lowdim, le_image):
    root = le_lowdim if kind == "lowdim" else le_image
    ckpt = load_any_checkpoint(root.parent)  # the run directory holding pretrained_model/ also works
    ref = reference(f"lerobot_{kind}")
    assert ckpt["source"]["format"] == "lerobot_diffusion" and ckpt["source"]["normalization"] == "processor"
    obs = {}
    for key in ckpt["shape_meta"]["obs"]:
        obs[key] = ref[f"obs.{key}"] if f"obs.{key}" in ref else ref[f"pixels.{key}"].astype(np.float32) / 255
    cond, eps = forward(ckpt, obs, ref["x"], ref["t"])
    np.testing.assert_allclose(cond, ref["global_cond"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(eps, ref["eps"], rtol=0, atol=1e-5)
    normalizer = build_normalizer(ckpt)
    for key in obs:
        if f"n.{key}" in ref:
            np.testing.assert_allclose(normalizer[key].normalize(torch.from_numpy(obs[key])).numpy(), ref[f"n.{key}"],
                                       rtol=0, atol=1e-6)
    np.testing.assert_allclose(normalizer["action"].unnormalize(torch.from_numpy(ref["x"])).numpy(), ref["unnorm_x"],
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(normalizer["action"].normalize(torch.from_numpy(ref["act"])).numpy(), ref["naction"],
                               rtol=0, atol=1e-5)
    if kind == "image":
        enc = ckpt["obs_encoder"]
        assert (enc["norm"], enc["num_kp"], enc["crop_shape"]) == ("batch", 8, [33, 33])
        assert list(ckpt["shape_meta"]["obs"]) == ["observation.state", "observation.images.front",
                                                   "observation.images.wrist"]


def test_lerobot_unet_key_mapping():
    assert lerobot.map_unet_key("down_modules.0.0.conv1.block.0.weight") == "down_modules.0.0.blocks.0.block.0.weight"
    assert lerobot.map_unet_key("up_modules.1.1.conv2.block.1.bias") == "up_modules.1.1.blocks.1.block.1.bias"
    assert lerobot.map_unet_key("down_modules.0.2.weight") == "down_modules.0.2.conv.weight"
    assert lerobot.map_unet_key("up_modules.0.2.bias") == "up_modules.0.2.conv.bias"
    assert lerobot.map_unet_key("final_conv.0.block.0.weight") == "final_conv.0.block.0.weight"
    assert lerobot.map_unet_key("mid_modules.1.cond_encoder.1.weight") == "mid_modules.1.cond_encoder.1.weight"


def _rewrite(root: Path, dest: Path, change) -> Path:
    from safetensors.torch import save_file

    shutil.copytree(root, dest)
    tensors = lerobot.read_safetensors(dest / "model.safetensors")
    change(tensors, dest)
    save_file(tensors, str(dest / "model.safetensors"))
    return dest


def test_lerobot_weights_must_map_completely(le_lowdim, tmp_path):
    extra = _rewrite(le_lowdim, tmp_path / "extra", lambda t, d: t.update({"diffusion.unet.extra": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="not in network.*model.extra"):
        load_any_checkpoint(extra)
    missing = _rewrite(le_lowdim, tmp_path / "missing", lambda t, d: t.pop("diffusion.unet.final_conv.1.bias"))
    with pytest.raises(CheckpointError, match="missing in checkpoint.*model.final_conv.1.bias"):
        load_any_checkpoint(missing)


def test_lerobot_pre_processor_layout_with_in_model_buffers(le_lowdim, tmp_path):
    """LeRobot before 0.4 kept the stats in the model: normalize_inputs.buffer_<key>.*, unnormalize_outputs.*."""
    pre = lerobot.read_safetensors(le_lowdim / "policy_preprocessor_step_3_normalizer_processor.safetensors")

    def to_buffers(tensors, dest):
        for feature in ("observation.state", "observation.environment_state", "action"):
            for stat in ("min", "max", "mean", "std"):
                value = pre[f"{feature}.{stat}"]
                buffer = f"buffer_{feature.replace('.', '_')}.{stat}"
                if feature == "action":
                    tensors[f"normalize_targets.{buffer}"] = value.clone()
                    tensors[f"unnormalize_outputs.{buffer}"] = value.clone()
                else:
                    tensors[f"normalize_inputs.{buffer}"] = value.clone()
        for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
            (dest / name).unlink()
    old = _rewrite(le_lowdim, tmp_path / "old", to_buffers)
    config = json.loads((old / "config.json").read_text())
    config["normalization_mapping"]["ENV"] = "MEAN_STD"  # exercise the MEAN_STD buffers too
    (old / "config.json").write_text(json.dumps(config))
    ckpt = load_any_checkpoint(old)
    assert ckpt["source"]["normalization"] == "in_model_buffers"
    ref = reference("lerobot_lowdim")
    normalizer = build_normalizer(ckpt)
    state = torch.from_numpy(ref["obs.observation.state"])
    np.testing.assert_allclose(normalizer["observation.state"].normalize(state).numpy(), ref["n.observation.state"],
                               rtol=0, atol=1e-5)
    env = torch.from_numpy(ref["obs.observation.environment_state"])
    mean, std = pre["observation.environment_state.mean"], pre["observation.environment_state.std"]
    np.testing.assert_allclose(normalizer["observation.environment_state"].normalize(env).numpy(),
                               ((env - mean) / (std + 1e-8)).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(normalizer["action"].unnormalize(torch.from_numpy(ref["x"])).numpy(), ref["unnorm_x"],
                               rtol=0, atol=1e-5)


def test_lerobot_other_policy_types_are_refused(le_lowdim, tmp_path):
    other = shutil.copytree(le_lowdim, tmp_path / "act")
    config = json.loads((other / "config.json").read_text())
    config["type"] = "act"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedCheckpointError, match="'act'"):
        load_any_checkpoint(other)


def test_lerobot_policy_acts_and_profiles_with_dotted_keys(le_lowdim):
    from paradigms_policy.policy import load_policy

    policy = load_policy(le_lowdim, sampler="ddim_sequential")
    assert policy.obs_keys == ["observation.state", "observation.environment_state"]
    obs = {"observation.state": np.zeros((2, 3), np.float32),
           "observation.environment_state": np.ones((2, 4), np.float32)}
    out = policy.predict_action(obs, seed=1)
    assert out.action.shape == (4, 2) and np.isfinite(out.action).all()
    policy.warmup()


# ----------------------------------------------------------------------------- paradigms-convert
def test_convert_writes_a_plain_data_checkpoint(dp_hybrid, le_image, tmp_path):
    from paradigms_policy.convert import convert

    for src in (dp_hybrid, le_image):
        out = convert(src, tmp_path / f"{src.name}.pt")
        ckpt = load_checkpoint(out)  # weights_only load: plain data
        assert ckpt["source"]["path"] == str(src if src.is_file() else src)
        assert ckpt["source"]["format"] in ("diffusion_policy_workspace", "lerobot_diffusion")
        again = load_any_checkpoint(out)
        for key, value in load_any_checkpoint(src)["state_dicts"]["ema_model"].items():
            assert torch.equal(again["state_dicts"]["ema_model"][key], value), key


# ----------------------------------------------------------------------------- ROS inputs
def test_node_inputs_must_cover_a_foreign_checkpoints_keys(le_image):
    """The node maps checkpoint keys to topics with obs_keys/obs_topics; configure fails naming uncovered keys."""
    pytest.importorskip("rclpy")
    from paradigms_policy.ros.inputs import build_specs

    shape_meta = load_any_checkpoint(le_image)["shape_meta"]
    topics = ["robot/state", "camera/front/image_raw", "camera/wrist/image_raw"]
    keys = ["observation.state", "observation.images.front", "observation.images.wrist"]
    specs = build_specs(topics, keys, ["float32_multi_array", "image", "image"], shape_meta, [])
    assert [(s.topic, s.key, s.shape) for s in specs][1] == ("camera/front/image_raw", "observation.images.front",
                                                             (3, 40, 40))
    with pytest.raises(ValueError, match=r"needs observation key\(s\) \['observation.images.wrist'\]"):
        build_specs(topics[:2], keys[:2], ["float32_multi_array", "image"], shape_meta, [])
    with pytest.raises(ValueError, match=r"obs_keys \['observation.image'\] are not inputs"):
        build_specs(topics, ["observation.state", "observation.image", "observation.images.wrist"],
                    ["float32_multi_array", "image", "image"], shape_meta, [])


def test_node_declares_trust_checkpoint():
    pytest.importorskip("rclpy")
    from paradigms_policy.ros.node_params import CONFIGURE_ONLY, SPECS_BY_NAME, PolicyNodeParams

    assert SPECS_BY_NAME["trust_checkpoint"].default is False and "trust_checkpoint" in CONFIGURE_ONLY
    assert PolicyNodeParams.defaults().trust_checkpoint is False
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "policy.yaml").read_text())
    assert config["paradigms_policy_node"]["ros__parameters"]["trust_checkpoint"] is False


def test_convert_command_line(le_lowdim, dp_lowdim, tmp_path, capsys):
    from paradigms_policy.convert import main

    assert main([str(le_lowdim), str(tmp_path / "le.pt")]) == 0
    assert load_checkpoint(tmp_path / "le.pt")["source"]["format"] == "lerobot_diffusion"
    evil = tmp_path / "evil.ckpt"
    torch.save({"cfg": {}, "state_dicts": {}, "x": _Payload(tmp_path / "ran")}, evil)
    assert main([str(evil), str(tmp_path / "evil.pt")]) == 2
    assert "refusing to load" in capsys.readouterr().err and not (tmp_path / "ran").exists()


def test_profile_takes_a_foreign_checkpoint(le_lowdim):
    from hydra import compose, initialize_config_dir

    from paradigms_policy.profiling.policies import load_policies

    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "config"), version_base="1.3"):
        cfg = compose("profile", overrides=[f"checkpoint={le_lowdim}", "threads=1"])
    policies, identity, path = load_policies(cfg, ["ddim_sequential"])
    assert path == le_lowdim and identity["name"] == le_lowdim.name and len(identity["sha256"]) == 64
    assert policies["ddim_sequential"].source["format"] == "lerobot_diffusion"
