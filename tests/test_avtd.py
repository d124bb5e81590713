"""algos/avtd.py and experiments/avtd.py: the validation split, the selection rule (normalised score, margin,
a two-chunk selection period, validation TD errors recomputed independently on distinguishable held-out data),
per-agent regularisers under vmap, fixed agents, compile-once, presets, and the CLI end to end (CPU, tiny nets)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algos import avtd, replay, sac
from experiments import avtd as experiment
from experiments import runner
from nets import CriticEnsemble


KEY = jax.random.PRNGKey(0)
# Two agents (none | LayerNorm + dropout 0.1 + weight decay 0.1), 2 envs x 10 steps per chunk, selection every TWO
# chunks (40 transitions). The TD batch (64) exceeds the validation set (~36 rows after 6 chunks at p = 0.3), so
# the validation TD errors are exact means over the held-out set. The CLI test runs the same program (same flags),
# so it reloads it from the persistent compilation cache.
PERIOD = 40
TINY = ["--env", "pointmaze-umaze-jax", "--regularizers", "none,ln+do0.1+wd0.1", "--selection-period", str(PERIOD),
        "--validation-capacity", "200", "--td-batch-size", "64", "--agent.num-envs", "2", "--agent.chunk-steps",
        "10", "--agent.batch-size", "16", "--agent.start-steps", "20", "--agent.hidden-sizes", "16", "16",
        "--agent.updates-per-step", "2", "--agent.buffer-capacity", "500", "--agent.eval-episodes", "2",
        "--hp.validation-fraction", "0.3", "--no-progress", "--no-tensorboard"]
CHUNKS = 6
HP2 = avtd.HParams(layernorm=(0.0, 1.0), critic_dropout=(0.0, 0.1), critic_weight_decay=(0.0, 0.1))
population = pytest.mark.slow  # the tests that train the population fixture


def tiny_args() -> experiment.Args:
    args, _, _, _ = runner.parse_args(experiment.Args, TINY)
    return experiment.resolve(args)


@pytest.fixture(scope="module")
def population_run():
    """AVTD + each of the 2 agents fixed, one seed, CHUNKS chunks: (runner, carry, per-chunk metrics, eval)."""
    args = tiny_args()
    trainer = experiment.build(args)
    settings = experiment.member_settings([{}], 2, compare=True)
    pop = runner.make_population(args.hp, settings, seed=0, num_seeds=1)
    r = runner.Runner(trainer, pop)
    carry, history = r.init_carry(), []
    for _ in range(CHUNKS):
        carry, metrics = r.train_chunk(carry, r.hparams)
        history.append(jax.device_get(metrics))
    ev = jax.device_get(r.evaluate(carry, r.eval_keys(CHUNKS), r.hparams))
    return r, jax.device_get(carry), history, ev


# ---- the validation split --------------------------------------------------------------------------------------

def test_validation_transitions_never_reach_a_training_minibatch():
    """Transitions carry their insertion index; 50 inserts of 8 go through `route` (p = 0.3), then 300 rounds of
    training minibatches are drawn by `sample_batches`, the function `learn` samples with. No held-out index is
    ever drawn, every index is in exactly one buffer, and the held-out fraction is about p."""
    cfg = avtd.Config(agent=sac.Config(num_envs=8, chunk_steps=1, batch_size=64, buffer_capacity=1000,
                                       updates_per_step=4), validation_capacity=1000, selection_period=8)
    example = {"id": jnp.zeros((), jnp.int32), "x": jnp.zeros(3)}

    @jax.jit
    def fill_and_sample(key):
        def insert(bufs, i):
            ids = i * 8 + jnp.arange(8, dtype=jnp.int32)
            train, val, held_out = avtd.route(*bufs, {"id": ids, "x": jnp.ones((8, 3)) * ids[:, None]},
                                              jax.random.fold_in(key, i), 0.3)
            return (train, val), held_out
        (train, val), held_out = jax.lax.scan(insert, (replay.init(1000, example), replay.init(1000, example)),
                                              jnp.arange(50))
        drawn = jax.vmap(lambda k: avtd.sample_batches(train, k, cfg)["id"])(jax.random.split(key, 300))
        return train, val, held_out.reshape(-1), drawn

    train, val, held_out, drawn = fill_and_sample(KEY)
    train_ids = set(np.asarray(train.data["id"][: int(train.size)]).tolist())
    val_ids = set(np.asarray(val.data["id"][: int(val.size)]).tolist())
    assert val_ids == set(np.flatnonzero(np.asarray(held_out)).tolist())
    assert train_ids.isdisjoint(val_ids) and train_ids | val_ids == set(range(400))
    assert 0.2 < len(val_ids) / 400 < 0.4
    drawn = set(np.asarray(drawn).reshape(-1).tolist())
    assert drawn.isdisjoint(val_ids)
    assert len(drawn) > 0.9 * len(train_ids)  # the sampler really covers the training buffer
    np.testing.assert_array_equal(train.data["x"][: int(train.size), 0], train.data["id"][: int(train.size)])


@population
def test_training_run_keeps_the_two_buffers_disjoint(population_run):
    """In real training, every collected transition is in exactly one buffer (no row of the validation buffer is
    in the training buffer the updates sample from)."""
    _, carry, history, _ = population_run
    for m in range(3):
        train, val = (jax.tree.map(lambda x: np.asarray(x[m]), b) for b in (carry.buffer, carry.validation))
        n_train, n_val = int(train.size), int(val.size)
        assert n_train + n_val == int(history[-1]["env_steps"][m]) == CHUNKS * 20
        assert n_val > 0
        rows = lambda b, n: {r.tobytes() for r in np.concatenate([b.data["obs"][:n], b.data["action"][:n]], 1)}
        assert rows(train, n_train).isdisjoint(rows(val, n_val))


# ---- selection ----------------------------------------------------------------------------------------------------


# ---- selection ----------------------------------------------------------------------------------------------------

def test_selection_is_the_argmin_of_the_scores_with_a_margin():
    select = jax.jit(avtd.select_actor)
    scores = jnp.array([0.5, 0.9, 0.1, 0.3])
    assert int(select(jnp.int32(0), scores, -1.0, True, 0.1)) == 2
    assert int(select(jnp.int32(0), scores, -1.0, False, 0.1)) == 0  # between selections the actor stays
    assert int(select(jnp.int32(0), scores, 3.0, True, 0.1)) == 3  # a pinned actor ignores the scores
    # under a population vmap: each member selects on its own scores
    tds = jnp.array([[0.5, 0.9, 0.1, 0.3], [0.2, 0.9, 0.4, 0.3], [0.5, 0.9, 0.1, 0.3]])
    out = jax.vmap(avtd.select_actor)(jnp.zeros(3, jnp.int32), tds, jnp.array([-1.0, -1.0, 1.0]), jnp.ones(3, bool),
                                      jnp.full(3, 0.1))
    np.testing.assert_array_equal(out, [2, 0, 1])


def test_margin_prevents_switching_on_a_small_improvement():
    """Another agent 5% better does not replace the acting one under margin 0.1; 15% better does; margin 0 is the
    plain argmin; an acting agent with a non-finite score is replaced, never by a non-finite one."""
    select = jax.jit(avtd.select_actor)
    assert int(select(jnp.int32(0), jnp.array([1.0, 0.95]), -1.0, True, 0.1)) == 0
    assert int(select(jnp.int32(1), jnp.array([0.95, 1.0]), -1.0, True, 0.1)) == 1
    assert int(select(jnp.int32(0), jnp.array([1.0, 0.85]), -1.0, True, 0.1)) == 1
    assert int(select(jnp.int32(0), jnp.array([1.0, 0.95]), -1.0, True, 0.0)) == 1
    assert int(select(jnp.int32(0), jnp.array([1.0, 0.95, 0.7]), -1.0, True, 0.1)) == 2  # the best, not the next
    assert int(select(jnp.int32(0), jnp.array([jnp.nan, 5.0]), -1.0, True, 0.1)) == 1
    assert int(select(jnp.int32(0), jnp.array([jnp.inf, 5.0]), -1.0, True, 0.1)) == 1
    assert int(select(jnp.int32(1), jnp.array([jnp.nan, 5.0]), -1.0, True, 0.1)) == 1


def test_normalised_score_picks_the_better_fit_when_agents_differ_only_in_value_scale():
    """Agent A's targets are 10x agent B's; A's critic explains 91% of their variance, B's only 75%. The raw MSE
    (A: 9, B: 0.25) picks B, the smaller-scale, worse-fitting agent; the normalised score (A: 0.09, B: 0.25) picks
    A. The normalised score is invariant to an affine change of the value scale; rows of weight 0 are ignored."""
    rng = np.random.default_rng(0)
    z, eps = rng.standard_normal(4096), rng.standard_normal(4096)
    z = (z - z.mean()) / z.std()
    eps = eps - eps.mean()
    eps = eps - z * np.mean(z * eps)  # exactly uncorrelated with z
    eps = eps / eps.std()
    y = np.stack([10.0 * z, z])
    q = np.stack([10.0 * z + 3.0 * eps, z + 0.5 * eps])
    w = jnp.ones(4096)
    raw, norm = jax.vmap(avtd.td_scores, in_axes=(0, 0, None))(jnp.asarray((q - y) ** 2, jnp.float32),
                                                                jnp.asarray(y, jnp.float32), w)
    np.testing.assert_allclose(raw, [9.0, 0.25], rtol=1e-4)
    np.testing.assert_allclose(norm, [0.09, 0.25], rtol=1e-3)
    pick = lambda gate, current: int(avtd.select_actor(jnp.int32(current), avtd.selection_score(raw, norm, gate),
                                                       -1.0, True, 0.1))
    assert pick(1.0, 0) == 0 and pick(1.0, 1) == 0  # normalised (the default): A, whichever agent acted
    assert pick(0.0, 0) == 1 and pick(0.0, 1) == 1  # raw MSE: B
    assert float(avtd.HParams().normalize_td) == 1.0
    # affine invariance (scale 7, offset -30), and padding rows of weight 0 with huge values change nothing
    e2 = jnp.concatenate([jnp.asarray(49.0 * (q[0] - y[0]) ** 2), jnp.full(100, 1e6)]).astype(jnp.float32)
    y2 = jnp.concatenate([jnp.asarray(7.0 * y[0] - 30.0), jnp.full(100, -1e6)]).astype(jnp.float32)
    raw2, norm2 = avtd.td_scores(e2, y2, jnp.concatenate([jnp.ones(4096), jnp.zeros(100)]))
    np.testing.assert_allclose(raw2, 49.0 * 9.0, rtol=1e-4)
    np.testing.assert_allclose(norm2, 0.09, rtol=1e-3)


def test_estimation_rows_are_exact_on_a_small_buffer_and_sampled_on_a_large_one():
    buf = avtd.insert_masked(replay.init(50, {"x": jnp.zeros(())}), {"x": jnp.arange(30.0)}, jnp.ones(30, bool))
    idx, w = avtd.estimation_rows(buf, KEY, 40)
    np.testing.assert_array_equal(np.asarray(idx)[:30], np.arange(30))
    np.testing.assert_array_equal(w, np.r_[np.ones(30), np.zeros(10)])
    idx, w = avtd.estimation_rows(buf, KEY, 20)  # more rows than the batch: uniform draws, weight 1
    idx = np.asarray(idx)
    assert np.all(np.asarray(w) == 1) and idx.max() < 30 and len(set(idx.tolist())) > 10


@population
def test_training_selects_every_two_chunks_and_fixed_agents_stay_fixed(population_run):
    """Member 0 is AVTD with a selection period of two chunks: only chunks that end at a multiple of 40 transitions
    select, by the margin rule on the logged scores (= the normalised validation TD errors); in the others the
    actor stays. Members 1, 2 pin agent 0, 1: they act in every chunk and are the evaluated policy."""
    _, _, history, ev = population_run
    for m in history:
        selecting = m["env_steps"][0] % PERIOD == 0
        assert m["selection"][0] == selecting
        scores = np.array([m["score_0"][0], m["score_1"][0]])
        np.testing.assert_allclose(scores, [m["val_td_norm_0"][0], m["val_td_norm_1"][0]], rtol=1e-6)
        acted, best = int(m["actor"][0]), int(np.argmin(scores))
        assert m["selected"][0] == (best if selecting and scores[best] < 0.9 * scores[acted] else acted)
        np.testing.assert_array_equal(m["actor"][1:], [0, 1])
        np.testing.assert_array_equal(m["selected"][1:], [0, 1])
    assert [bool(m["selection"][0]) for m in history] == [False, True, False, True, False, True]
    for later, earlier in zip(history[1:], history):
        assert later["actor"][0] == earlier["selected"][0]
    np.testing.assert_array_equal(ev["eval_return"][1:], [ev["eval_return_0"][1], ev["eval_return_1"][2]])
    assert all(np.isfinite(v).all() for m in history for v in m.values())


def independent_td(agent: sac.AgentState, layernorm: float, buffer, hp, cfg: avtd.Config, key, draws: int = 64):
    """(raw, normalised) TD error of one agent over ALL rows of `buffer`, written without algos/avtd's TD code:
    `draws` samples of a' ~ pi(.|s') per row; the mean over critics, rows and draws of (Q_i(s, a) - y)^2, and that
    divided by the variance of y over (row, draw) pairs (what the one-draw-per-row estimate estimates)."""
    a = cfg.agent
    assert a.num_target_critics == a.num_critics and a.backup_entropy  # y = r + g (1 - d) (min Q' - alpha log pi)
    n = int(buffer.size)
    d = {k: jnp.asarray(v[:n]) for k, v in buffer.data.items()}
    critic = CriticEnsemble(a.num_critics, a.hidden_sizes, use_layernorm=True)
    q_fn = lambda params, obs, act: critic.apply(params, obs, act, True, layernorm_gate=jnp.float32(layernorm),
                                                 dropout_rate=jnp.float32(0.0))
    actor = sac.actor_net(a, agent.action_size)
    alpha = sac.temperature(agent)

    def target(k):
        act, log_prob = actor.apply(agent.actor_params, d["next_obs"]).sample_and_log_prob(k)
        next_v = q_fn(agent.target_critic_params, d["next_obs"], act).min(0) - alpha * log_prob
        return hp.reward_scale * d["reward"] + hp.reward_bias + hp.discount * (1.0 - d["terminated"]) * next_v

    ys = jax.vmap(target)(jax.random.split(key, draws))  # (draws, n)
    q = q_fn(agent.critic_params, d["obs"], d["action"])  # (E, n)
    raw = jnp.mean((q[None] - ys[:, None]) ** 2)
    return float(raw), float(raw / jnp.var(ys))


VAL_REWARD, VAL_REWARD_STD = 50.0, 5.0


@pytest.fixture(scope="module")
def crafted_chunks(population_run):
    """Two more chunks of the fixture's program (no recompile) from its final carry, made distinguishable: every
    held-out reward is replaced by 50 + 5 N(0, 1) (training rewards are the maze's, about -1..0), agent 1's online
    and target critics get an output bias b with (1 - gamma) b = 50, so that agent 1 fits the held-out set and
    agent 0 the training set, AVTD's actor is set to agent 0, and no new transitions are held out (p = 0)."""
    r, carry, history, _ = population_run
    assert int(history[-1]["env_steps"][0]) == CHUNKS * 20 and CHUNKS * 20 % PERIOD == 0
    hp0 = jax.tree.map(lambda x: np.asarray(x)[0], r.hparams)
    rng = np.random.default_rng(1)
    val = carry.validation
    rewards = (VAL_REWARD + VAL_REWARD_STD * rng.standard_normal(val.data["reward"].shape)).astype(np.float32)
    bias = VAL_REWARD / (1.0 - float(hp0.discount))

    def shift(params):  # leaves: (population, agent, critic, ...)
        params = jax.tree.map(np.array, params)
        params["params"]["members"]["mlp"]["dense_out"]["bias"][:, 1] += bias
        return params

    agents = carry.agents.replace(critic_params=shift(carry.agents.critic_params),
                                  target_critic_params=shift(carry.agents.target_critic_params))
    actor = np.array(carry.actor)
    actor[0] = 0
    crafted = carry.replace(agents=agents, validation=val.replace(data={**val.data, "reward": rewards}), actor=actor)
    c = jax.device_put(crafted, r.sharding)  # placed like the runner's own carry: the compiled chunk is reused
    hp = jax.device_put(r.hparams.replace(validation_fraction=np.zeros(r.population.size, np.float32)), r.sharding)
    out = []
    for _ in range(2):
        c, metrics = r.train_chunk(c, hp)
        out.append((jax.device_get(c), jax.device_get(metrics)))
    return r, hp0, out


@population
def test_validation_td_is_recomputed_independently_and_selection_waits_for_its_period(crafted_chunks):
    """The logged validation TD errors (raw and normalised) equal an independent recomputation over the held-out
    buffer, and differ from the same recomputation over the training buffer by far more than the tolerance (so
    estimating on the wrong buffer fails). The chunk ending at 140 transitions is not a selection (period 40): the
    actor stays agent 0 although agent 1 is much better on the held-out set; the chunk ending at 160 selects
    agent 1 (the agent that fits the TRAINING set is agent 0)."""
    r, hp0, out = crafted_chunks
    cfg = experiment.make_config(tiny_args())
    for j, (carry, m) in enumerate(out):
        val, train = (jax.tree.map(lambda x: np.asarray(x)[0], b) for b in (carry.validation, carry.buffer))
        assert 0 < int(val.size) <= cfg.td_batch_size  # the code's estimate is the exact mean over the rows
        np.testing.assert_array_equal(val.data["reward"][: int(val.size)] > 20, True)  # still the crafted rows
        recomputed = {}
        for k in range(2):
            agent = jax.tree.map(lambda x: jnp.asarray(x)[0, k], carry.agents)
            ln = float(hp0.layernorm[k])
            recomputed[k] = independent_td(agent, ln, val, hp0, cfg, jax.random.PRNGKey(10 + j))
            raw_train, _ = independent_td(agent, ln, train, hp0, cfg, jax.random.PRNGKey(20 + j))
            np.testing.assert_allclose(m[f"val_td_{k}"][0], recomputed[k][0], rtol=0.1, err_msg=f"agent {k}")
            np.testing.assert_allclose(m[f"val_td_norm_{k}"][0], recomputed[k][1], rtol=0.1, err_msg=f"agent {k}")
            ratio = recomputed[k][0] / raw_train
            assert ratio > 5 or ratio < 0.2, (k, recomputed[k][0], raw_train)  # train and validation far apart
        assert recomputed[1][1] < 0.2 * recomputed[0][1] and recomputed[1][0] < 0.2 * recomputed[0][0]
    (_, first), (_, second) = out
    assert int(first["env_steps"][0]) == 140 and int(second["env_steps"][0]) == 160
    assert first["selection"][0] == 0 and first["actor"][0] == 0 and first["selected"][0] == 0
    assert second["selection"][0] == 1 and second["actor"][0] == 0 and second["selected"][0] == 1
    np.testing.assert_array_equal([first["selected"][1:], second["selected"][1:]], [[0, 1], [0, 1]])
    assert r.trace_counts["train_chunk"] == 1


@population
def test_avtd_compiles_once(population_run):
    r, _, _, _ = population_run
    assert r.trace_counts["train_chunk"] == 1 and r.trace_counts["init"] == 1


# ---- per-agent regularisers under vmap ------------------------------------------------------------------------
# These reuse the fixture's configuration, trained agents and training buffer (no extra initialisation compiles),
# and one jitted single-agent `learn` whose regulariser is an argument.

@pytest.fixture(scope="module")
def agents_buffer_learn(population_run):
    r, carry, _, _ = population_run
    cfg = avtd.Config(agent=tiny_args().agent, num_agents=2, selection_period=20, validation_capacity=200)
    agents, buffer = jax.tree.map(jnp.asarray, (avtd.pick(carry.agents, 0), avtd.pick(carry.buffer, 0)))
    learn = jax.jit(lambda agent, reg, buffer, key, hp: avtd.learn(agent, reg, buffer, key, hp, cfg))
    return cfg, agents, buffer, lambda agent, reg, key, hp: learn(agent, reg, buffer, key, hp)


@population
def test_vmapped_agents_equal_the_same_agents_updated_one_by_one(agents_buffer_learn):
    cfg, agents, buffer, learn_one = agents_buffer_learn
    hp = HP2
    regs = avtd.regularizers(hp, 2)
    together, m_together = jax.jit(lambda ag, b, k, hp: avtd.learn_all(ag, regs, b, k, hp, cfg))(agents, buffer, KEY,
                                                                                                   hp)
    keys = jax.random.split(KEY, 2)
    for i in range(2):
        alone, m_alone = learn_one(avtd.pick(agents, i), avtd.pick(regs, i), keys[i], hp)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), together, alone)
        for k in m_alone:
            np.testing.assert_allclose(m_together[k][i], m_alone[k], rtol=1e-5, atol=1e-6, err_msg=k)


@population
def test_weight_decay_is_per_agent(agents_buffer_learn):
    """Same agent, same minibatches: only the weight decay differs, and only then do the critics differ."""
    cfg, agents, buffer, learn_one = agents_buffer_learn
    agent, hp = avtd.pick(agents, 0), HP2
    step = lambda wd: learn_one(agent, avtd.Regularizer(jnp.float32(1), jnp.float32(0), jnp.float32(wd)), KEY,
                                hp)[0].critic_params
    a, b, c = step(0.0), step(0.0), step(1.0)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    kernels = lambda t: [x for p, x in jax.tree_util.tree_leaves_with_path(t) if "kernel" in str(p[-1])]
    assert all(np.linalg.norm(z) < np.linalg.norm(x) for x, z in zip(kernels(a), kernels(c)))


def test_layernorm_gate_off_is_the_plain_mlp_and_dropout_zero_is_deterministic():
    cfg = avtd.Config(agent=sac.Config(hidden_sizes=(16, 16), batch_size=16, buffer_capacity=64), num_agents=1,
                      selection_period=800)
    obs, action = jax.random.normal(KEY, (32, 4)), jax.random.uniform(KEY, (32, 2))
    params = jax.jit(CriticEnsemble(2, (16, 16), use_layernorm=True).init)(KEY, obs, action)
    # give the LayerNorms non-trivial scale/bias so that "on" cannot coincide with "off" by accident
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.5 if any("layernorm" in str(getattr(k, "key", "")) for k in p) else x, params)
    strip = lambda t: {k: strip(v) for k, v in t.items() if not k.startswith("layernorm")} if isinstance(t, dict) else t

    @jax.jit
    def outputs(ln, do, key1, key2):
        q = lambda key, det=False: avtd.critic_values(params, obs, action, avtd.Regularizer(ln, do, jnp.float32(0)),
                                                      key, cfg, deterministic=det)
        plain = CriticEnsemble(2, (16, 16), use_layernorm=False).apply(strip(params), obs, action)
        return q(key1), q(key2), q(key1, True), plain

    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    off, _, _, plain = outputs(jnp.float32(0), jnp.float32(0), k1, k2)
    np.testing.assert_allclose(off, plain, rtol=1e-6, atol=1e-6)  # gate 0: exactly the LayerNorm-free MLP
    on, on_other_key, on_det, _ = outputs(jnp.float32(1), jnp.float32(0), k1, k2)
    assert not np.allclose(on, plain, atol=1e-3)
    np.testing.assert_allclose(on, on_det, rtol=1e-5, atol=1e-6)  # rate 0: dropout on == dropout off, whatever the key
    np.testing.assert_allclose(on, on_other_key, rtol=1e-5, atol=1e-6)
    drop, drop_other_key, drop_det, _ = outputs(jnp.float32(1), jnp.float32(0.2), k1, k2)
    assert not np.allclose(drop, drop_other_key) and not np.allclose(drop, on)
    np.testing.assert_allclose(drop_det, on, rtol=1e-5, atol=1e-6)  # evaluation mode ignores the rate


# ---- the experiment ---------------------------------------------------------------------------------------------

def test_regularizer_spec_and_members():
    fields = experiment.parse_regularizers("none, ln+do0.01 ,wd1e-4+ln")
    assert fields == {"layernorm": (0.0, 1.0, 1.0), "critic_dropout": (0.0, 0.01, 0.0),
                      "critic_weight_decay": (0.0, 0.0, 1e-4)}
    assert experiment.agent_names(avtd.HParams(**fields)) == ["none", "ln+do0.01", "ln+wd0.0001"]
    with pytest.raises(runner.UserError, match="cannot read 'bn'"):
        experiment.parse_regularizers("ln,bn")
    assert [s["fixed_agent"] for s in experiment.member_settings([{}], 3, True)] == [-1, 0, 1, 2]
    assert experiment.member_settings([{"fixed_agent": 1.0}], 3, True) == [{"fixed_agent": 1.0}]
    assert experiment.member_settings([{}], 3, False) == [{}]  # --no-compare: --hp.fixed-agent decides
    with pytest.raises(runner.UserError, match="fixed-agent"):
        experiment.member_settings([{"fixed_agent": 3.0}], 3, True)


@population
def test_cli_end_to_end(tmp_path, population_run):
    root = experiment.main(TINY + ["--run-dir", str(tmp_path / "run"), "--total-steps", str(CHUNKS * 20),
                                   "--eval-every", "3"])
    for name in ("avtd.png", "table.md", "curves.png", "metrics.jsonl", "eval.jsonl"):
        assert (root / name).exists(), name
    members = json.loads((root / "config.json").read_text())["members"]
    assert [m["fixed_agent"] for m in members] == [-1, 0, 1]
    table = (root / "table.md").read_text()
    for row in ("| AVTD (nTD, m0.1) | 1 |", "| none alone | 1 |", "| ln+do0.1+wd0.1 alone | 1 |"):
        assert row in table, row
    last = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()][-3:]
    # the CLI run and the fixture are the same program with the same seeds: the same numbers
    _, _, history, _ = population_run
    for i, rec in enumerate(last):
        assert rec["val_td_1"] == pytest.approx(float(history[-1]["val_td_1"][i]), rel=1e-5)


def test_raw_baseline_members_and_method_names():
    hp = avtd.HParams()
    settings = experiment.member_settings([{}], 2, True, raw_baseline=True, hp=hp)
    assert [(s["fixed_agent"], s["normalize_td"], s["switch_margin"]) for s in settings] == \
        [(-1.0, 1.0, pytest.approx(0.1)), (-1.0, 0.0, 0.0), (0.0, 1.0, pytest.approx(0.1)),
         (1.0, 1.0, pytest.approx(0.1))]
    assert [experiment.method_name(s, hp, ["a", "b"]) for s in settings] == \
        ["AVTD (nTD, m0.1)", "AVTD (raw TD, m0)", "a alone", "b alone"]


def test_presets_expand_to_flags_that_later_flags_override():
    parse = lambda argv: runner.parse_args(experiment.Args, experiment.expand_preset(argv))[0]
    args = parse(["--preset", "high-utd", "--agent.updates-per-step", "4"])
    assert (args.preset, args.agent.num_envs, args.agent.chunk_steps, args.agent.updates_per_step) == \
        ("high-utd", 1, 100, 4)
    args = parse(["--preset", "high-utd"])
    assert args.agent.updates_per_step / args.agent.num_envs == 8 and args.agent.hidden_sizes == (64, 64)
    experiment.make_config(args)  # a valid static config (the selection period is a multiple of the chunk)
    args = parse(["--preset=paper", "--num-seeds", "2"])
    assert args.env == "hopper" and args.agent.updates_per_step / args.agent.num_envs == 20
    assert args.agent.hidden_sizes == (256, 256) and args.run.total_steps == 1_000_000 and args.run.num_seeds == 2
    experiment.make_config(args)
    assert parse([]).agent == experiment.CPU_AGENT and experiment.expand_preset(["--seed", "1"]) == ["--seed", "1"]
    with pytest.raises(runner.UserError, match="preset"):
        experiment.expand_preset(["--preset", "gpu"])


def test_options_avtd_does_not_implement_are_refused_and_the_entropy_target_is_sacs():
    with pytest.raises(ValueError, match="max_target_backup"):
        avtd.Config(agent=dataclasses.replace(avtd.Config().agent, max_target_backup=True))
    # the temperature step reads sac's entropy target (also its per-action form), not a copy of the default
    assert sac.target_entropy(sac.Config(target_entropy_per_action=-1.0), 3) == -3.0
