"""The generalist transformer policy (nets/transformer.py): the block-causal mask, KV-cached decoding, and a
multi-task toy that needs the task token.

Parameters are random (numpy, from the shapes of `jax.eval_shape(init)`), adapters included (LoRA-Switch, B not
zero), so that every path of the mask, the time bias and the routing carries signal. Compiled functions are shared
through module-scope fixtures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets.lora_switch import AdapterConfig
from nets.mlp import MLP
from nets.transformer import (OBS, READOUT, TASK, GeneralistPolicy, PolicyConfig, PRESETS, action_loss,
                              attention_mask, policy_loss)


WINDOW = PRESETS["tiny"].window  # 3
STEPS = 2 * WINDOW + 1  # longer than the window, so the cache's ring wraps


def random_variables(model, example, seed=0):
    shapes = {"params": jax.eval_shape(model.init, jax.random.PRNGKey(0), *example)["params"]}  # no "aux"
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        base = 1.0 if getattr(path[-1], "key", "") == "scale" else 0.0
        return jnp.asarray(base + 0.3 * rng.normal(size=leaf.shape), leaf.dtype)
    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def policy():
    config = PolicyConfig(adapter=AdapterConfig(kind="switch", num_experts=4, rank=2, top_k=2),
                          observations=(("proprio", 2), ("touch", 1)), num_tasks=3, head="adacat", horizon=2,
                          num_bins=8)
    model = GeneralistPolicy(config)
    rng = np.random.default_rng(1)
    obs = {"proprio": jnp.asarray(rng.normal(size=(2, STEPS, 5)), jnp.float32),
           "touch": jnp.asarray(rng.normal(size=(2, STEPS, 3)), jnp.float32)}
    task = jnp.array([0, 2])
    variables = random_variables(model, (obs, task))
    traces = []

    def step(v, cache, o):
        traces.append(1)
        return model.apply(v, cache, o, method=GeneralistPolicy.step)
    return dict(model=model, obs=obs, task=task, variables=variables, forward=jax.jit(model.apply),
                start=jax.jit(lambda v, t: model.apply(v, t, method=GeneralistPolicy.start)),
                step=jax.jit(step, donate_argnums=1), traces=traces)


def test_attention_mask_is_block_causal():
    """The mask against the rules written out token by token (task, 2 obs + readout per step, window 3)."""
    kinds = [TASK] + [OBS, OBS, READOUT] * 5
    times = [-1] + [t for t in range(5) for _ in range(3)]
    got = np.asarray(attention_mask(jnp.array(times), jnp.array(kinds), jnp.array(times), jnp.array(kinds),
                                    jnp.ones(len(kinds), bool), window=3))
    for i, (tq, kq) in enumerate(zip(times, kinds)):
        for j, (tk, kk) in enumerate(zip(times, kinds)):
            near = 0 <= tq - tk < 3
            want = kk == TASK or (kq != TASK and kk == OBS and near) or (kq == READOUT and kk == READOUT and near)
            assert got[i, j] == want, (i, j)
    assert not got[np.array(kinds) != READOUT][:, np.array(kinds) == READOUT].any()  # nothing else reads readouts


def test_a_later_timestep_cannot_change_an_earlier_readout(policy):
    forward, v, obs, task = policy["forward"], policy["variables"], policy["obs"], policy["task"]
    base = forward(v, obs, task)
    for later in range(STEPS):
        bumped = {k: x.at[:, later].add(1.0) for k, x in obs.items()}
        out = forward(v, bumped, task)
        for before, after in zip(base, out):  # width and mass logits (B, T, H, A, bins)
            np.testing.assert_allclose(after[:, :later], before[:, :later], rtol=0, atol=1e-6)
            assert np.abs(after[:, later] - before[:, later]).min(axis=(1, 2, 3)).max() > 1e-4


def test_kv_cached_decoding_equals_full_recomputation(policy):
    full = policy["forward"](policy["variables"], policy["obs"], policy["task"])
    cache = policy["start"](policy["variables"], policy["task"])
    for t in range(STEPS):
        cache, out = policy["step"](policy["variables"], cache, {k: x[:, t] for k, x in policy["obs"].items()})
        for got, want in zip(out, full):
            np.testing.assert_allclose(got, want[:, t], rtol=1e-5, atol=1e-5)
    assert len(policy["traces"]) == 1  # one compiled step for the whole rollout
    assert np.all(np.asarray(cache.step) == STEPS)


def toy_tasks(key, num_tasks=4, obs_dim=4, action_dim=2):
    """K tasks that map the same observation to conflicting actions: a = 0.8 tanh(x M_k)."""
    return jax.random.normal(key, (num_tasks, obs_dim, action_dim))


def toy_batch(key, maps, batch, steps=2):
    kx, kt = jax.random.split(key)
    x = jax.random.uniform(kx, (batch, steps, maps.shape[1]), minval=-1.0, maxval=1.0)
    task = jax.random.randint(kt, (batch,), 0, maps.shape[0])
    actions = 0.8 * jnp.tanh(jnp.einsum("btd,bda->bta", x, maps[task]))
    return {"observations": {"proprio": x}, "task": task, "actions": actions[:, :, None]}


def numpy_init(model, example, seed=0):
    """Parameters like flax's initialisers (kernels N(0, 1/fan_in), embeddings N(0, 1), scales 1, the rest 0),
    drawn in numpy from `jax.eval_shape(init)`: the same start without compiling the initialiser."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        value = {"kernel": rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 0.0,
                 "embedding": rng.normal(size=leaf.shape), "scale": np.ones(leaf.shape)}.get(name, 0.0)
        return jnp.asarray(np.broadcast_to(value, leaf.shape), leaf.dtype)
    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.PRNGKey(0), *example))


def test_policy_fits_a_multi_task_toy_that_a_task_blind_mlp_cannot():
    config = PolicyConfig(observations=(("proprio", 2),), num_tasks=4, action_dim=2, head="mse")
    model, mlp = GeneralistPolicy(config), MLP((64, 64), output_size=2)
    maps = toy_tasks(jax.random.PRNGKey(0))
    opt = optax.adam(3e-3)

    def fit(loss_of, params, key, steps=400):
        state = opt.init(params)

        def update(carry, k):
            params, state = carry
            grads = jax.grad(loss_of)(params, toy_batch(k, maps, 128))
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), None
        (params, _), _ = jax.lax.scan(update, (params, state), jax.random.split(key, steps))
        return params

    blind_loss = lambda p, b: jnp.mean(jnp.square(mlp.apply(p, b["observations"]["proprio"]) - b["actions"][:, :, 0]))

    @jax.jit
    def run(params, mlp_params, key):
        k_fit, k_test = jax.random.split(key)
        test = toy_batch(k_test, maps, 2048)
        params = fit(lambda p, b: policy_loss(model, p, b)[0], params, k_fit)
        policy_test = action_loss(config, model.apply(params, test["observations"], test["task"]), test["actions"])
        mlp_params = fit(blind_loss, mlp_params, k_fit)
        # the best any task-blind predictor can do: predict the mean over tasks, leaving the variance
        every_task = 0.8 * jnp.tanh(jnp.einsum("btd,kda->kbta", test["observations"]["proprio"], maps))
        floor = jnp.mean(jnp.var(every_task, axis=0))
        return policy_test, blind_loss(mlp_params, test), floor

    probe = toy_batch(jax.random.PRNGKey(2), maps, 2)
    params = numpy_init(model, (probe["observations"], probe["task"]))
    mlp_params = numpy_init(mlp, (probe["observations"]["proprio"],))
    policy_test, mlp_test, floor = map(float, run(params, mlp_params, jax.random.PRNGKey(1)))
    assert mlp_test > 0.9 * floor and mlp_test < 1.3 * floor  # the MLP reaches the task-blind optimum, no better
    assert policy_test < 0.2 * floor, (policy_test, mlp_test, floor)
