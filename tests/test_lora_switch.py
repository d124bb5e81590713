"""LoRA-Switch and its baselines (nets/lora_switch.py) inside the generalist policy (nets/transformer.py).

Oracles: a numpy loop over tokens written from the equations (y = x W + b + s Σ_j g_j x A_j B_j), numpy sorting
for the top-k choice, and the adapter-free policy for the zero-B identity.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets.lora_switch import (AdaptedDense, AdapterConfig, Routing, dense_gates, is_adapter_path, switch_merged,
                              switch_unmerged, top_k_routing)
from nets.transformer import GeneralistPolicy, PolicyConfig, make_optimizer, parameter_groups, policy_loss


SWITCH = AdapterConfig(kind="switch", num_experts=4, rank=2, alpha=4.0, top_k=2)
OBS = {"proprio": jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 5)), jnp.float32)}
TASK = jnp.array([0, 1, 2])


def policy_config(adapter, head="mse"):
    return PolicyConfig(adapter=adapter, observations=(("proprio", 2),), num_tasks=3, head=head, horizon=2)


def random_variables(model, seed=0, zero_b=False):
    shapes = {"params": jax.eval_shape(model.init, jax.random.PRNGKey(0), OBS, TASK)["params"]}  # no "aux"
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        value = rng.normal(size=leaf.shape) * (0.0 if zero_b and name == "lora_b" else 0.3)
        return jnp.asarray(value + (name == "scale"), leaf.dtype)
    return jax.tree_util.tree_map_with_path(fill, shapes)


def without_adapters(variables):
    def strip(tree, path=()):
        return {k: strip(v, path + (k,)) for k, v in tree.items() if not is_adapter_path(path + (k,))} \
            if isinstance(tree, dict) else tree
    return strip(variables)


@pytest.fixture(scope="module")
def forwards():
    """One jitted forward pass per adapter variant (compiled once, shared by the tests below)."""
    variants = {"none": AdapterConfig(), "lora": AdapterConfig(kind="lora", rank=8),
                "moe_lora": AdapterConfig(kind="moe_lora", num_experts=4, rank=2),
                "switch": SWITCH, "switch_merged": AdapterConfig(**{**SWITCH.__dict__, "merged": True})}
    return {name: (GeneralistPolicy(policy_config(a)), jax.jit(GeneralistPolicy(policy_config(a)).apply))
            for name, a in variants.items()}


def test_top_k_gates_sum_to_one_and_route_exactly_k():
    logits = jax.random.normal(jax.random.PRNGKey(0), (500, 6)) * 3.0
    for k in (1, 2, 3):
        routing = top_k_routing(logits, k)
        gates, indices = np.asarray(routing.gates), np.asarray(routing.indices)
        np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-6)
        assert indices.shape == (500, k) and all(len(set(row)) == k for row in indices)
        want = np.argsort(-np.asarray(logits), axis=-1)[:, :k]
        np.testing.assert_array_equal(np.sort(indices, -1), np.sort(want, -1))
        probs = np.asarray(jax.nn.softmax(logits))
        chosen = np.take_along_axis(probs, indices, -1)
        np.testing.assert_allclose(gates, chosen / chosen.sum(-1, keepdims=True), rtol=1e-5)
        dense = np.asarray(dense_gates(routing))
        assert np.all((dense > 0).sum(-1) == k)
        np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-6)


def test_merged_and_unmerged_paths_agree():
    rng = np.random.default_rng(3)
    tokens, d_in, d_out, experts, rank, k = 7, 6, 5, 4, 3, 2
    x, kernel, bias = rng.normal(size=(tokens, d_in)), rng.normal(size=(d_in, d_out)), rng.normal(size=d_out)
    lora_a, lora_b = rng.normal(size=(experts, d_in, rank)), rng.normal(size=(experts, rank, d_out))
    routing = top_k_routing(jnp.asarray(rng.normal(size=(tokens, experts)) * 2, jnp.float32), k)
    want = x @ kernel + bias
    for t in range(tokens):  # the equation, one token at a time
        for e, g in zip(np.asarray(routing.indices[t]), np.asarray(routing.gates[t])):
            want[t] += 1.5 * g * x[t] @ lora_a[e] @ lora_b[e]
    args = [jnp.asarray(a, jnp.float32) for a in (x, kernel, bias, lora_a, lora_b)]
    for got in (switch_unmerged(*args, routing, 1.5), switch_unmerged(*args, routing, 1.5, dense=True),
                switch_merged(*args, routing, 1.5)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_merged_and_unmerged_policies_agree(forwards):
    model, unmerged = forwards["switch"]
    _, merged = forwards["switch_merged"]
    for seed in range(3):  # random routers, adapters and backbone
        variables = random_variables(model, seed)
        a, b = unmerged(variables, OBS, TASK), merged(variables, OBS, TASK)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert np.abs(a - forwards["none"][1](without_adapters(variables), OBS, TASK)).max() > 1e-2


def test_zero_b_leaves_the_backbone_unchanged(forwards):
    _, backbone = forwards["none"]
    for name in ("lora", "moe_lora", "switch", "switch_merged"):
        model, forward = forwards[name]
        layer = AdaptedDense(3, model.config.adapter)  # the initialiser itself gives B = 0
        init = layer.init(jax.random.PRNGKey(0), OBS["proprio"], Routing(jnp.zeros((3, 2, 2), int),
                                                                          jnp.ones((3, 2, 2)), jnp.ones((3, 2, 4))))
        assert np.all(init["params"]["lora_b"] == 0) and np.any(init["params"]["lora_a"] != 0)
        variables = random_variables(model, seed=1, zero_b=True)  # random A, routers and backbone
        want = backbone(without_adapters(variables), OBS, TASK)
        np.testing.assert_allclose(forward(variables, OBS, TASK), want, rtol=1e-5, atol=1e-6)
        with_b = random_variables(model, seed=1)
        assert np.abs(forward(with_b, OBS, TASK) - want).max() > 1e-2  # and a non-zero B does change it


@pytest.fixture(scope="module")
def fine_tuning():
    """A random backbone with zero-B adapters (as initialised), a batch, and the jitted gradient of the loss."""
    model = GeneralistPolicy(policy_config(SWITCH, head="adacat"))
    rng = np.random.default_rng(4)
    batch = {"observations": OBS, "task": TASK,
             "actions": jnp.asarray(rng.uniform(-1, 1, size=(3, 2, 2, 2)), jnp.float32)}
    grad = jax.jit(jax.grad(lambda v: policy_loss(model, v, batch)[0]))
    return random_variables(model, seed=5, zero_b=True), grad


@pytest.mark.parametrize("mode, trained", [("adapters", {"adapter", "head"}), ("head", {"head"})])
def test_frozen_backbone_fine_tuning_changes_only_adapters_and_head(fine_tuning, mode, trained):
    variables, grad = fine_tuning
    tx = make_optimizer(mode, optax.adam(1e-2))
    state, update = tx.init(variables), jax.jit(tx.update)
    after = variables
    for _ in range(3):  # B is zero at the start: A only moves once B has
        updates, state = update(grad(after), state, after)
        after = optax.apply_updates(after, updates)
    groups = jax.tree_util.tree_leaves(parameter_groups(variables))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)]
    changed = [bool(np.any(a != b)) for a, b in zip(jax.tree_util.tree_leaves(after),
                                                  jax.tree_util.tree_leaves(variables))]
    assert {g for g, c in zip(groups, changed) if c} == trained
    assert all(c for g, c in zip(groups, changed) if g in trained)  # every trained leaf moved
    # by name, independently of parameter_groups: what moved is under head/, or a lora_a/lora_b/router leaf
    names = {"head": ("['head']",), "adapter": ("lora_a", "lora_b", "['router']")}
    allowed = [any(n in p for g in trained for n in names[g]) for p in paths]
    assert changed == allowed
