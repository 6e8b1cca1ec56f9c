"""FlowPolicy: guidance algebra, determinism, shapes and clipping, checkpoints, image encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfgrl_ros.data.episode import ACTION_DIM, Episode
from cfgrl_ros.observation import (
    OBSERVATION_FIELDS,
    OBSERVATIONS,
    PROPRIOCEPTION,
    STATE_DIM,
    ObservationSpec,
)
from cfgrl_ros.policy import FlowPolicy, PolicyConfig, TrainConfig, resolve_device, train_policy
from cfgrl_ros.policy.flow_policy import NULL, OPTIMAL
from cfgrl_ros.policy.networks import random_shift, spatial_softmax

SMALL = {
    "hidden_dims": (64, 64),
    "state_hidden_dims": (64,),
    "state_feature_dim": 16,
    "image_feature_dim": 16,
    "image_channels": 8,
    "condition_dim": 16,
    "time_embedding_dim": 16,
}


def make_policy(seed: int = 0, **changes) -> FlowPolicy:
    torch.manual_seed(seed)
    return FlowPolicy(PolicyConfig(**{**SMALL, **changes})).eval()


def cameras(size: int, *keys: str) -> ObservationSpec:
    """The full state and the cameras `keys` (default: the scene camera) at size x size."""
    return ObservationSpec(image_keys=keys or ("image",), image_size=(size, size))


def random_states(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, STATE_DIM)).astype(np.float32)


def observation(rng: np.random.Generator, length: int, image_size: int | None = None) -> dict:
    fields = {name: rng.normal(0, 0.1, (length, size)) for name, size in OBSERVATION_FIELDS.items()}
    if image_size:
        fields["image"] = rng.integers(0, 256, (length, image_size, image_size, 3), dtype=np.uint8)
    return fields


def test_guided_velocity_is_null_plus_w_times_the_conditional_difference():
    policy = make_policy()
    features = policy.encode({"state": random_states(5)})
    actions_t = torch.randn(5, *policy.noise_shape)
    t = torch.full((5,), 0.3)
    with torch.no_grad():
        v_null = policy(features, actions_t, t, torch.full((5,), NULL))
        v_optimal = policy(features, actions_t, t, torch.full((5,), OPTIMAL))
    assert (v_null - v_optimal).abs().max() > 1e-3  # the two branches really differ

    torch.testing.assert_close(policy.guided_velocity(features, actions_t, 0.3, 0.0), v_null)
    torch.testing.assert_close(policy.guided_velocity(features, actions_t, 0.3, 1.0), v_optimal)
    for w in (0.5, 2.0, 3.0, -1.0):
        torch.testing.assert_close(
            policy.guided_velocity(features, actions_t, 0.3, w),
            v_null + w * (v_optimal - v_null),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize("guidance_weight", [0.0, 1.0, 2.5])
def test_decode_integrates_the_guided_velocity_with_euler_steps(guidance_weight):
    policy = make_policy()
    features = policy.encode({"state": random_states(3)})
    noise = 0.1 * torch.randn(3, *policy.noise_shape)  # small: no clipping with these weights
    expected = noise
    for i in range(4):  # a <- a + v(a, i / K) / K
        expected = expected + policy.guided_velocity(features, expected, i / 4, guidance_weight) / 4
    assert expected.abs().max() < 1  # the identity action normaliser, no clipping
    actions = policy.decode(features, noise, guidance_weight, steps=4)
    torch.testing.assert_close(actions, expected, rtol=1e-5, atol=1e-5)


def test_same_noise_gives_the_same_chunk_and_shapes_hold():
    policy = make_policy()
    obs = {"state": random_states(4)}
    noise = torch.randn(4, *policy.noise_shape)
    first = policy.sample(obs, noise, guidance_weight=2.0)
    assert first.shape == (4, 8, ACTION_DIM) and policy.noise_shape == (8, ACTION_DIM)
    assert torch.equal(first, policy.sample(obs, noise.clone(), guidance_weight=2.0))
    assert torch.equal(first, policy.decode(policy.encode(obs), noise.numpy(), 2.0))
    assert not torch.equal(first, policy.sample(obs, torch.randn_like(noise), 2.0))
    drawn = policy.sample(obs, None, 2.0)  # noise=None draws N(0, I)
    assert drawn.shape == first.shape and not torch.equal(drawn, policy.sample(obs, None, 2.0))
    assert policy.encode(obs).shape == (4, policy.feature_dim)
    assert policy.decode(policy.encode(obs), noise, 1.0, steps=16).shape == (4, 8, ACTION_DIM)


def test_actions_are_unnormalised_then_clipped_to_the_env_range():
    policy = make_policy()
    features = policy.encode({"state": random_states(64)})
    noise = torch.randn(64, *policy.noise_shape)
    policy.action_normaliser.mean.fill_(0.5)
    policy.action_normaliser.std.fill_(0.01)
    narrow = policy.decode(features, noise, 1.0)
    assert (narrow - 0.5).abs().max() < 0.2  # the data's units, not the flow's
    policy.action_normaliser.std.fill_(10.0)
    wide = policy.decode(features, noise, 1.0)
    assert wide.abs().max() == 1.0 and (wide.abs() == 1.0).float().mean() > 0.3


def test_outputs_can_feed_another_networks_training_and_inference_mode_works():
    policy = make_policy()
    obs = {"state": random_states(8)}
    features = policy.encode(obs)  # called with autograd enabled, as a DSRL learner does
    chunk = policy.decode(features, torch.randn(8, *policy.noise_shape), 2.0)
    assert not features.requires_grad and not chunk.requires_grad
    critic = torch.nn.Linear(policy.feature_dim + chunk[0].numel(), 1)
    critic(torch.cat([features, chunk.flatten(1)], dim=1)).sum().backward()
    assert critic.weight.grad is not None
    assert not any(p.grad is not None for p in policy.parameters())
    with torch.inference_mode():
        assert torch.equal(
            policy.sample(obs, torch.zeros(8, 8, 7), 2.0),
            policy.sample(obs, torch.zeros(8, 8, 7), 2.0),
        )


def test_unconditioned_policy_ignores_guidance_and_goal_policy_needs_a_goal():
    features_of = {"state": random_states(2)}
    noise = torch.randn(2, 8, ACTION_DIM)
    plain = make_policy(condition="none")
    features = plain.encode(features_of)
    assert torch.equal(plain.decode(features, noise, 0.0), plain.decode(features, noise, 3.0))

    goal_policy = make_policy(condition="goal")
    features = goal_policy.encode(features_of)
    with pytest.raises(ValueError, match="goal-conditioned: pass goal"):
        goal_policy.decode(features, noise, 2.0)
    with pytest.raises(ValueError, match=r"goal has shape \(3, 25\), expected \(2, 25\)"):
        goal_policy.decode(features, noise, 2.0, goal=random_states(3))
    toward_a = goal_policy.decode(features, noise, 2.0, goal=random_states(2, seed=1))
    toward_b = goal_policy.decode(features, noise, 2.0, goal=random_states(2, seed=2))
    assert not torch.equal(toward_a, toward_b)
    assert goal_policy.decode(features, noise, 0.0).shape == (2, 8, ACTION_DIM)


def test_bad_inputs_are_named():
    policy = make_policy()
    with pytest.raises(ValueError, match=r"missing \['state'\]"):
        policy.encode({"joint_pos": np.zeros((1, 7))})
    with pytest.raises(ValueError, match=r"'state' has shape \(25,\), expected \[batch, 25\]"):
        policy.encode({"state": np.zeros(STATE_DIM)})
    features = policy.encode({"state": random_states(2)})
    with pytest.raises(ValueError, match=r"noise has shape \(2, 4, 7\), expected \(2, 8, 7\)"):
        policy.decode(features, torch.zeros(2, 4, 7), 1.0)
    with pytest.raises(ValueError, match=r"features have shape \(2, 3\)"):
        policy.decode(torch.zeros(2, 3), None, 1.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        policy.decode(features, None, 1.0, steps=0)
    with pytest.raises(ValueError, match="condition 'best' is not one of"):
        PolicyConfig(condition="best")
    with pytest.raises(ValueError, match="image_size None must be"):
        PolicyConfig(observation=ObservationSpec(image_keys=("image",)))
    with pytest.raises(ValueError, match=r"image_size \(16, 16\) must be .* >= 32"):
        PolicyConfig(observation=cameras(16))


def test_the_observation_spec_names_what_it_reads():
    assert OBSERVATIONS["state"].state_dim == STATE_DIM == 25  # object pose and relative position
    vision = OBSERVATIONS["vision"]
    assert not vision.uses_object_pose and vision.state_dim == 15
    assert vision.image_keys == ("image", "wrist_image") and vision.image_size == (84, 84)
    assert "no object pose" in vision.describe() and "84x84" in vision.describe()
    with pytest.raises(ValueError, match=r"state_fields \['elbow'\] are not fields"):
        ObservationSpec(state_fields=("elbow",))
    with pytest.raises(ValueError, match="must list each field once, in the order"):
        ObservationSpec(state_fields=("eef_pos", "joint_pos"))
    with pytest.raises(ValueError, match="state_fields is empty: a policy needs at least one"):
        ObservationSpec(state_fields=())
    with pytest.raises(ValueError, match=r"image_keys \['image', 'image'\] must be distinct"):
        ObservationSpec(image_keys=("image", "image"))
    with pytest.raises(ValueError, match="unknown fields"):
        ObservationSpec.from_dict({"cameras": ["image"]})
    spec = ObservationSpec.from_dict({"state_fields": ["joint_pos"], "image_keys": ["image"]})
    assert spec == ObservationSpec(("joint_pos",), ("image",))  # lists become tuples


def test_inputs_from_an_arm_observation():
    rng = np.random.default_rng(0)
    tick = {name: values[0] for name, values in observation(rng, 1, image_size=32).items()}
    state_only = make_policy()
    inputs = state_only.inputs_from_observation(tick)
    assert inputs["state"].shape == (1, STATE_DIM) and "image" not in inputs
    camera = make_policy(observation=cameras(32))
    inputs = camera.inputs_from_observation(tick)
    assert inputs["image"].shape == (1, 32, 32, 3)
    assert camera.encode(inputs).shape == (1, camera.feature_dim)
    # Without the object pose the state is proprioception alone: the object fields are not read.
    blind = make_policy(observation=ObservationSpec(PROPRIOCEPTION, ("image",), (32, 32)))
    arm_only = {name: tick[name] for name in (*PROPRIOCEPTION, "image")}
    inputs = blind.inputs_from_observation(arm_only)
    assert inputs["state"].shape == (1, 15)
    np.testing.assert_array_equal(inputs["state"][0, :7], tick["joint_pos"].astype(np.float32))
    with pytest.raises(ValueError, match="observation has no field 'object_pos'"):
        camera.inputs_from_observation(arm_only)
    del tick["image"]
    with pytest.raises(ValueError, match="needs camera image 'image'"):
        camera.inputs_from_observation(tick)


def test_checkpoint_round_trip(tmp_path):
    policy = make_policy(condition="goal", horizon=4, flow_steps=6)
    policy.state_normaliser.fit(torch.randn(100, STATE_DIM) * 3 + 1)
    policy.action_normaliser.fit(torch.rand(100, ACTION_DIM) * 0.4)
    path = tmp_path / "policy.pt"
    policy.save(path)
    policy.save(path)  # overwriting is atomic too
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]  # no temporary files left

    loaded = FlowPolicy.load(path, device="cpu", expected_noise_shape=(4, ACTION_DIM))
    assert loaded.config == policy.config and loaded.device == torch.device("cpu")
    for key, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    obs, goal = {"state": random_states(3)}, random_states(3, seed=5)
    noise = torch.randn(3, 4, ACTION_DIM)
    assert torch.equal(
        policy.sample(obs, noise, 1.5, goal=goal), loaded.sample(obs, noise, 1.5, goal=goal)
    )


def test_checkpoint_with_wrong_dimensions_fails_with_a_clear_message(tmp_path):
    path = tmp_path / "other_robot.pt"
    make_policy(action_dim=6).save(path)
    with pytest.raises(ValueError, match="checkpoint has action_dim 6, this build expects 7"):
        FlowPolicy.load(path, device="cpu")

    path = tmp_path / "policy.pt"
    make_policy().save(path)
    with pytest.raises(ValueError, match="checkpoint has action chunk 8x7, expected 16x7"):
        FlowPolicy.load(path, device="cpu", expected_noise_shape=(16, 7))

    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["velocity_field.action_in.weight"] = torch.zeros(64, 99)
    del payload["state_dict"]["condition_embedding.weight"]
    torch.save(payload, path)
    with pytest.raises(ValueError) as error:
        FlowPolicy.load(path, device="cpu")
    message = str(error.value)
    assert "weight velocity_field.action_in.weight has shape (64, 99) in the checkpoint" in message
    assert "missing from the checkpoint: ['condition_embedding.weight']" in message

    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="format version 99, this build reads versions 1 to 2"):
        FlowPolicy.load(path, device="cpu")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable policy checkpoint"):
        FlowPolicy.load(tmp_path / "notes.pt", device="cpu")
    with pytest.raises(FileNotFoundError, match="no policy checkpoint"):
        FlowPolicy.load(tmp_path / "missing.pt")


def test_checkpoint_without_config_or_with_non_finite_weights_is_named(tmp_path):
    path = tmp_path / "policy.pt"
    make_policy().save(path)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "config": {**payload["config"], "horizon": "8"}}, path)
    with pytest.raises(ValueError, match=r"policy.pt has an invalid config: policy.horizon is '8'"):
        FlowPolicy.load(path, device="cpu")
    torch.save({key: value for key, value in payload.items() if key != "config"}, path)
    with pytest.raises(ValueError, match=r"policy\.pt is not a cfgrl_ros flow policy checkpoint"):
        FlowPolicy.load(path, device="cpu")
    payload["state_dict"]["velocity_field.action_in.weight"][0, 0] = float("nan")
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"policy.pt has inf or NaN weights \(1 of \d+ tensors"):
        FlowPolicy.load(path, device="cpu")


def test_random_shift_moves_whole_images_by_at_most_pad_pixels():
    images = torch.rand(6, 3, 12, 10)
    assert torch.equal(random_shift(images, 0, None), images)
    generator = torch.Generator().manual_seed(0)
    shifted = random_shift(images, 2, generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for sample in range(6):
        windows = [
            (row, col)
            for row in range(5)
            for col in range(5)
            if torch.equal(shifted[sample], padded[sample, :, row : row + 12, col : col + 10])
        ]
        assert windows, f"sample {sample} is not a shifted copy of its image"
        offsets.add(windows[0])
    assert len(offsets) > 1  # shifts differ between samples


def version_1_checkpoint(policy: FlowPolicy, path, **config_changes) -> None:
    """`policy` saved as checkpoints were before observation specs (format version 1)."""
    policy.save(path)
    payload = torch.load(path, weights_only=True)
    config = dict(payload["config"])
    observation = config.pop("observation")
    config |= {
        "state_dim": STATE_DIM,
        "use_state": True,
        "image_keys": observation["image_keys"],
        "image_size": observation["image_size"],
        **config_changes,
    }
    torch.save({**payload, "format_version": 1, "config": config}, path)


def test_version_1_checkpoints_still_load(tmp_path):
    policy = make_policy(observation=cameras(32))
    version_1_checkpoint(policy, tmp_path / "old.pt")
    loaded = FlowPolicy.load(tmp_path / "old.pt", device="cpu")
    assert loaded.config == policy.config
    version_1_checkpoint(make_policy(), tmp_path / "other.pt", state_dim=20)
    with pytest.raises(ValueError, match="checkpoint has state_dim 20, this build expects 25"):
        FlowPolicy.load(tmp_path / "other.pt", device="cpu")
    version_1_checkpoint(
        make_policy(observation=cameras(32)), tmp_path / "blind.pt", use_state=False
    )
    with pytest.raises(ValueError, match="cameras without any state"):
        FlowPolicy.load(tmp_path / "blind.pt", device="cpu")


def test_spatial_softmax_finds_each_maps_peak_in_image_coordinates():
    maps = torch.zeros(2, 3, 5, 9)
    maps[0, 0, 0, 0] = maps[0, 1, 4, 8] = maps[0, 2, 2, 4] = maps[1, 0, 4, 0] = 50.0
    coordinates = spatial_softmax(maps)  # [B, 2C]: x of each channel, then y of each
    assert coordinates.shape == (2, 6)
    torch.testing.assert_close(coordinates[0], torch.tensor([-1.0, 1.0, 0.0, -1.0, 1.0, 0.0]))
    torch.testing.assert_close(coordinates[1, [0, 3]], torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(coordinates[1, [1, 2, 4, 5]], torch.zeros(4))  # flat maps: centre
    with pytest.raises(ValueError, match="image_encoder 'resnet' is not one of"):
        PolicyConfig(image_encoder="resnet")
    with pytest.raises(ValueError, match=r"image_size \(32, 32\) is too small for the keypoints"):
        PolicyConfig(image_encoder="keypoints", observation=cameras(32))


@pytest.mark.parametrize("image_encoder", ["flatten", "keypoints"])
def test_image_policy_trains_and_its_features_see_the_image(tmp_path, image_encoder):
    rng = np.random.default_rng(0)
    episodes = [
        Episode(
            observation(rng, 5, image_size=48),
            rng.uniform(-1, 1, (5, ACTION_DIM)),
            np.zeros(5),
            False,
        )
        for _ in range(3)
    ]
    config = TrainConfig(
        policy=PolicyConfig(
            **SMALL, horizon=4, observation=cameras(48), image_encoder=image_encoder
        ),
        method="bc",
        steps=5,
        batch_size=8,
        device="cpu",
    )
    synthetic = Episode(observation(rng, 5), np.zeros((5, ACTION_DIM)), np.zeros(5), False, True)
    # synthetic experience has no images: it only trains value functions, never the policy
    result = train_policy([*episodes, synthetic], config, checkpoint_path=tmp_path / "camera.pt")
    assert len(result.history["policy_loss"]) == 5
    policy = FlowPolicy.load(tmp_path / "camera.pt", device="cpu")
    assert policy.feature_dim == 32 and policy.config.observation.image_keys == ("image",)
    assert policy.config.image_encoder == image_encoder
    state = random_states(2)
    images = rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    features = policy.encode({"state": state, "image": images})
    other = policy.encode({"state": state, "image": 255 - images})
    assert not torch.allclose(features[:, 16:], other[:, 16:])
    torch.testing.assert_close(features[:, :16], other[:, :16])
    with pytest.raises(ValueError, match="'image' must be uint8 RGB"):
        policy.encode({"state": state, "image": images.astype(np.float32)})
    with pytest.raises(ValueError, match=r"'image' has shape \(2, 56, 56, 3\)"):
        policy.encode({"state": state, "image": np.zeros((2, 56, 56, 3), np.uint8)})
    bigger = [
        Episode(observation(rng, 5, image_size=56), e.actions, e.rewards, False) for e in episodes
    ]
    with pytest.raises(ValueError, match=r"camera image 'image' is uint8 \[56, 56, 3\]"):
        train_policy(bigger, config)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")
