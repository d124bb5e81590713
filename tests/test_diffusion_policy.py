"""The diffusion policy: noise schedule, samplers, the UNet's horizons, a toy bimodal fit (no MJX here).

Oracles: the forward process iterated step by step (x_k = √(1-β_k) x_{k-1} + √β_k ε) against the closed form;
DDPM's posterior mean written out from its definition (not from `ddpm_step`) against DDIM with η = 1; a toy
dataset whose actions are +0.8 or -0.8 with equal probability, which a unimodal regressor would average to 0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algos import diffusion_policy as dp
from nets.unet1d import ConditionalUnet1D


LAYOUT = {"qpos": (0, 1), "qvel": (1, 2), "touch": (2, 3), "object": (3, 4), "visible": (4, 5)}


def test_schedule_alpha_bar_is_monotone_and_in_the_unit_interval():
    s = dp.schedule(100)
    ab = np.asarray(s["alphas_cumprod"])
    assert np.all(np.diff(ab) < 0) and 0 < ab[-1] < 1e-3 and 0.99 < ab[0] < 1
    betas = np.asarray(s["betas"])
    assert np.all((betas > 0) & (betas <= 0.999))
    # squared cosine: ᾱ_k ≈ cos²(((k+1)/K + s)/(1+s) π/2) / cos²(s/(1+s) π/2)
    k = np.arange(100)
    want = np.cos(((k + 1) / 100 + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(ab[:90], want[:90], rtol=1e-4)


def test_forward_noising_matches_the_closed_form():
    s = dp.schedule(50)
    betas = np.asarray(s["betas"], np.float64)
    rng = np.random.default_rng(0)
    x0 = np.full(200_000, 0.7)
    x = x0.copy()
    for k in range(30):  # iterate to k = 29
        x = np.sqrt(1 - betas[k]) * x + np.sqrt(betas[k]) * rng.standard_normal(x.shape)
    ab = float(s["alphas_cumprod"][29])
    closed = np.asarray(dp.q_sample(s, jnp.asarray(x0[:, None], jnp.float32), jnp.full(len(x0), 29),
                                    jax.random.normal(jax.random.PRNGKey(1), (len(x0), 1))))
    for sample in (x, closed[:, 0]):
        assert abs(sample.mean() - np.sqrt(ab) * 0.7) < 5e-3 and abs(sample.var() - (1 - ab)) < 5e-3


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_with_eta_one_and_all_steps_has_ddpm_posterior_mean(clip):
    s = dp.schedule(100)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3)) * 1.5
    eps = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    for k in (99, 50, 3, 1):
        ab, ab_prev = float(s["alphas_cumprod"][k]), float(s["alphas_cumprod"][k - 1])
        beta = float(s["betas"][k])
        x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        x0 = np.clip(x0, -1, 1) if clip else x0
        posterior = (np.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
        _, ddim_mean = dp.ddim_step(s, x, eps, k, k - 1, jnp.zeros_like(x), eta=1.0, clip=clip)
        _, ddpm_mean = dp.ddpm_step(s, x, eps, k, jnp.zeros_like(x), clip=clip)
        np.testing.assert_allclose(ddim_mean, posterior, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ddpm_mean, posterior, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("horizon", [7, 8, 9, 16])
def test_unet_keeps_odd_and_even_horizons(horizon):
    net = ConditionalUnet1D(3, down_dims=(8, 16, 16), kernel_size=3, n_groups=4, step_embed_dim=8)
    x = jnp.ones((2, horizon, 3))
    params = net.init(jax.random.PRNGKey(0), x, jnp.zeros(2, jnp.int32), jnp.zeros((2, 5)))
    assert net.apply(params, x, jnp.array([0, 7]), jnp.zeros((2, 5))).shape == (2, horizon, 3)


@pytest.fixture(scope="module")
def toy():
    """A toy 'demonstration' set: 64 episodes of 6 steps, actions all +0.8 or all -0.8 (obs carry no hint)."""
    rng = np.random.default_rng(0)
    sign = np.where(rng.uniform(size=64) < 0.5, 1.0, -1.0)
    batch = {"observations": np.tile(rng.normal(size=(1, 6, 5)), (64, 1, 1)).astype(np.float32),
             "actions": np.broadcast_to(0.8 * sign[:, None, None], (64, 6, 1)).astype(np.float32),
             "mask": np.ones((64, 6), np.float32), "lengths": np.full(64, 6, np.int32), "obs_layout": LAYOUT}
    stats = {"obs_min": batch["observations"].min((0, 1)), "obs_max": batch["observations"].max((0, 1)),
             "act_min": np.array([-1.0], np.float32), "act_max": np.array([1.0], np.float32)}
    cfg = dp.Config(obs_horizon=1, pred_horizon=4, action_horizon=2, down_dims=(16, 32), kernel_size=3,
                    n_groups=4, step_embed_dim=16, encoder_dim=16, batch_size=64, updates_per_chunk=150,
                    num_diffusion_steps=50, num_inference_steps=10)
    init_carry, train_chunk, _, act = dp.make_train(cfg, stats, LAYOUT, 1)
    shared = dp.prepare(cfg, batch, stats)
    hp = dp.HParams(lr=3e-3, ema_decay=0.9)
    carry = init_carry(jax.random.PRNGKey(0), hp)
    chunk = jax.jit(train_chunk)
    losses = []
    for _ in range(3):
        carry, metrics = chunk(carry, hp, shared)
        losses.append(float(metrics["loss"]))
    samples = jax.jit(act)(carry.ema, jnp.asarray(batch["observations"][:1, :1].repeat(256, 0)),
                           jax.random.PRNGKey(3))
    return cfg, losses, np.asarray(samples), carry


def test_loss_falls_on_the_toy(toy):
    _, losses, _, carry = toy
    assert losses[-1] < 0.6 * losses[0], losses
    assert int(carry.num_updates) == 450


def test_policy_reproduces_both_modes_and_keeps_the_shapes(toy):
    cfg, _, samples, _ = toy
    assert samples.shape == (256, cfg.pred_horizon, 1)
    first = samples[:, 0, 0]
    assert 0.2 < np.mean(first > 0) < 0.8, np.mean(first > 0)        # both modes
    assert np.mean(np.abs(np.abs(first) - 0.8) < 0.25) > 0.8         # near +-0.8, not averaged to 0


def test_config_errors():
    with pytest.raises(ValueError, match="num_inference_steps"):
        dp.make_train(dp.Config(num_inference_steps=7), {"obs_min": np.zeros(5), "obs_max": np.ones(5),
                                                         "act_min": np.zeros(1), "act_max": np.ones(1)}, LAYOUT, 1)
    with pytest.raises(ValueError, match="action_horizon"):
        dp.make_train(dp.Config(action_horizon=9), {}, LAYOUT, 1)
