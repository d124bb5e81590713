"""SAC speed: ours (algos/sac.py) next to brax's SAC, rejax's SAC and the CPU limit, in ONE invocation.

For each env (brax `ant`, `inverted_pendulum`, MJX backend) and each UTD G (critic updates per vectorised env step;
default 1 and 8), with 64 envs, batch 256 and 2 critics of 256x256 (actor 256x256 too), these programs are built
and compiled (compile time is measured apart, by `jit(...).lower(...).compile()` or, for brax, its first epoch
minus a steady one), warmed up past the replay warm-up, and then timed in rounds in which they run one after the
other, so that load from other jobs on the machine hits them alike:

- ours:  `sac.make_train(cfg, envs.make(env))`, `jit(train_chunk)` of `--steps` vectorised env steps; per env
         step: our env stack (make_vec: TimeLimit, VmapAutoReset, EpisodeStats), G critic steps, 1 actor + 1 alpha step.
- brax:  `brax.training.agents.sac.train` on `brax.envs.get_environment(env, backend="mjx")` (brax's own wrappers:
         auto-reset to a cached first state), num_envs 64, batch 256, grad_updates_per_step G, (256, 256) nets,
         2 critics, epochs of `--steps` env steps timed by brax itself (`training/sps` in its progress callback).
         Per env step: G x (alpha + critic + actor step). Its evaluation (between epochs, not timed) runs on a
         do-nothing env to save wall time. brax 0.14.2 calls `jax.device_put_replicated`, which jax 0.10 removed:
         a shim is installed on the jax module below (nothing in brax is changed).
- rejax: `rejax.SAC` (rejax 0.1.3, gymnax 0.0.9) in the separate venv `benchmarks/.venv-peers`, driven as a worker
         subprocess over a pipe so its timed calls interleave with ours. It runs on OUR env (`envs.make(env)`,
         the same TimeLimit(BraxEnv) we train on) through a thin gymnax adapter; gymnax's `step` auto-resets with a
         fresh reset every step, as our AutoReset does. Timed program: `rejax`'s own `train_iteration` in a
         `fori_loop` (its `train()` minus the evaluations). Per env step: G x (actor + critic + alpha step).
- limit: bare programs of the same sizes, timed in the same rounds: t_env = one step of 64 envs of brax's wrapped
         env (the cheapest env-with-resets here), `vmap` + `lax.scan`; t_critic / t_actor = one hand-written
         jax.numpy SAC critic step (target with a policy sample, 2 critics as one batched einsum, Adam, Polyak) /
         actor + temperature step, on a fixed batch (no replay sampling). Limit for our scheme:
         64 / (t_env + G t_critic + t_actor) env-steps/s; for the peers' scheme 64 / (t_env + G (t_critic + t_actor)).
  Also timed, to explain ours: our env stack stepped with our policy (no learning), and our `sac.update` alone.

Then: the RLPD configuration (10 critics, M=2 target subset, LayerNorm, UTD 20) on `--rlpd-env`, ours vs its bare
limit; the critic ensemble as ours (`nn.vmap`, one batched computation) vs a Python loop over E separate critic
MLPs (jitted forward + backward + SGD step); and the sweep scaling: the wall time of a 16-seed vmapped population
(`experiments.runner.make_population` + `Runner`) over a 1-seed one, same chunk, pointmaze-umaze-jax, 16 envs, UTD 1,
at the sizes above and at a small size (64x64, batch 64), next to rejax's SAC `vmap`-ed over 16 seeds on the same
env and sizes (its `train_iteration` loop, as above).

Rates are medians over the timed rounds; ratios are medians of the per-round ratios. Updates/s count critic
gradient steps. The ratios are also computed from process CPU time (user + system, all threads, of the process
that ran the program: ours, brax and the limit in this one, rejax in its worker): on a machine shared with other
jobs, CPU time varies much less than wall time, but it charges a program for all the cores it keeps busy, so it
reads as work done, not as speed. The bare programs are a reference floor, not a proof: where XLA compiles ours
at least as well, "ours / limit" can come out at or slightly above 1. The persistent compilation cache is off so
that compile times are honest.

    python benchmarks/sac.py                                   # the defaults, ~15 minutes on a 2-core CPU
    python benchmarks/sac.py --envs ant --utds 8 --steps 200 --rounds 5 --json /tmp/sac.json
    python benchmarks/sac.py --skip brax rejax rlpd ensemble sweep   # ours vs the limit only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
# This script lives next to benchmarks/envs.py: put the repository first on the path so `import envs` finds the
# package (also in the rejax worker, which runs this file with the peers' venv).
sys.path[0] = str(REPO)

from benchmarks.machine import describe  # noqa: E402
from benchmarks.peer_worker import PeerWorker  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

PEERS_PYTHON = REPO / "benchmarks" / ".venv-peers" / "bin" / "python"
SECTIONS = ("compare", "brax", "rejax", "limit", "rlpd", "ensemble", "sweep")


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------
class Stepper:
    """`fn(carry, *args) -> (carry, aux)` compiled ahead of time (the compile timed apart); each call runs it once
    on the current carry (donated) and returns (wall seconds, process CPU seconds) of that run."""

    def __init__(self, fn, carry, *args, donate: bool = True):
        start = time.perf_counter()
        self.fn = jax.jit(fn, donate_argnums=0 if donate else ()).lower(carry, *args).compile()
        self.compile_s = time.perf_counter() - start
        self.carry, self.args, self.aux = carry, args, None

    def __call__(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        self.carry, self.aux = jax.block_until_ready(self.fn(self.carry, *self.args))
        return time.perf_counter() - wall, time.process_time() - cpu


def scan_steps(step, steps: int):
    """carry -> (carry, None) repeated `steps` times in one `lax.scan`."""
    return lambda carry: (jax.lax.scan(lambda c, _: (step(c), None), carry, None, length=steps)[0], None)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------------------------
# The bare SAC update (the limit): plain jax.numpy, no flax, no optax
# --------------------------------------------------------------------------------------------------------------
def _glorot(key, shape):
    limit = math.sqrt(6.0 / (shape[-2] + shape[-1]))
    return jax.random.uniform(key, shape, minval=-limit, maxval=limit)


def bare_init(key, sizes, ensemble=None, layernorm=False):
    pre = () if ensemble is None else (ensemble,)
    layers = []
    for i, (k, a, b) in enumerate(zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:])):
        layer = {"w": _glorot(k, pre + (a, b)), "b": jnp.zeros(pre + (b,))}
        if layernorm and i < len(sizes) - 2:
            layer.update(scale=jnp.ones(pre + (b,)), offset=jnp.zeros(pre + (b,)))
        layers.append(layer)
    return layers


def _layernorm(h, layer):
    """LayerNorm over the features of (E, B, H) activations with per-member scale and offset."""
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + 1e-6) * layer["scale"][:, None] + layer["offset"][:, None]


def bare_mlp(layers, x):
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            x = jax.nn.relu(x)
    return x


def bare_ensemble(layers, x):
    """(E, ...) parameters, x (B, D) -> Q (E, B): each layer is one batched einsum over the ensemble axis."""
    h = x
    for i, layer in enumerate(layers):
        h = jnp.einsum("bi,eio->ebo" if h.ndim == 2 else "ebi,eio->ebo", h, layer["w"]) + layer["b"][:, None]
        if i < len(layers) - 1:
            if "scale" in layer:
                h = _layernorm(h, layer)
            h = jax.nn.relu(h)
    return h[..., 0]


def _adam_init(p):
    return jax.tree.map(jnp.zeros_like, p), jax.tree.map(jnp.zeros_like, p), jnp.zeros((), jnp.int32)


def _adam(p, state, g, lr=3e-4, b1=0.9, b2=0.999, eps=1e-8):
    m, v, t = state
    t = t + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    p = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), p, m, v)
    return p, (m, v, t)


def _bare_policy(actor, obs, key):
    out = bare_mlp(actor, obs)
    a = out.shape[-1] // 2
    mean, log_std = out[:, :a], jnp.clip(out[:, a:], -10.0, 2.0)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_prob = (jnp.sum(-0.5 * ((u - mean) * jnp.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi), -1)
                - jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), -1))
    return jnp.tanh(u), log_prob


def bare_state(obs_size, action_size, hidden, num_critics, layernorm, batch_size, key):
    k_actor, k_critic, k_batch = jax.random.split(key, 3)
    actor = bare_init(k_actor, (obs_size, *hidden, 2 * action_size))
    critic = bare_init(k_critic, (obs_size + action_size, *hidden, 1), num_critics, layernorm)
    ks = jax.random.split(k_batch, 3)
    batch = {"obs": jax.random.normal(ks[0], (batch_size, obs_size)),
             "action": jax.random.uniform(ks[1], (batch_size, action_size), minval=-1, maxval=1),
             "reward": jnp.zeros(batch_size), "next_obs": jax.random.normal(ks[2], (batch_size, obs_size)),
             "terminated": jnp.zeros(batch_size)}
    state = {"actor": actor, "actor_opt": _adam_init(actor), "critic": critic, "target": critic,
             "critic_opt": _adam_init(critic), "log_alpha": jnp.zeros(()), "alpha_opt": _adam_init(jnp.zeros(())),
             "key": key}
    return state, batch


def bare_critic_step(state, batch, num_target):
    key, k_action, k_subset = jax.random.split(state["key"], 3)
    num_critics = state["critic"][0]["w"].shape[0]
    alpha = jnp.exp(state["log_alpha"])
    next_action, next_log_prob = _bare_policy(state["actor"], batch["next_obs"], k_action)
    target = state["target"]
    if num_target < num_critics:
        subset = jax.random.choice(k_subset, num_critics, (num_target,), replace=False)
        target = jax.tree.map(lambda p: p[subset], target)
    next_q = bare_ensemble(target, jnp.concatenate([batch["next_obs"], next_action], -1)).min(0)
    y = jax.lax.stop_gradient(batch["reward"] + 0.99 * (1.0 - batch["terminated"])
                              * (next_q - alpha * next_log_prob))
    x = jnp.concatenate([batch["obs"], batch["action"]], -1)
    grads = jax.grad(lambda p: jnp.mean((bare_ensemble(p, x) - y) ** 2))(state["critic"])
    critic, critic_opt = _adam(state["critic"], state["critic_opt"], grads)
    target = jax.tree.map(lambda p, t: 0.005 * p + 0.995 * t, critic, state["target"])
    return {**state, "critic": critic, "critic_opt": critic_opt, "target": target, "key": key}


def bare_actor_step(state, batch):
    key, k_action = jax.random.split(state["key"])
    alpha = jnp.exp(state["log_alpha"])

    def loss(actor):
        action, log_prob = _bare_policy(actor, batch["obs"], k_action)
        q = bare_ensemble(state["critic"], jnp.concatenate([batch["obs"], action], -1)).mean(0)
        return jnp.mean(alpha * log_prob - q), log_prob

    grads, log_prob = jax.grad(loss, has_aux=True)(state["actor"])
    actor, actor_opt = _adam(state["actor"], state["actor_opt"], grads)
    entropy_gap = jax.lax.stop_gradient(log_prob - 0.5 * batch["action"].shape[-1])
    g_alpha = jax.grad(lambda la: -jnp.mean(jnp.exp(la) * entropy_gap))(state["log_alpha"])
    log_alpha, alpha_opt = _adam(state["log_alpha"], state["alpha_opt"], g_alpha)
    return {**state, "actor": actor, "actor_opt": actor_opt, "log_alpha": log_alpha, "alpha_opt": alpha_opt,
            "key": key}


def fresh(tree):
    """A copy with its own buffers (so a donated carry never aliases another program's arrays, nor itself)."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def bare_update_programs(obs_size, action_size, hidden, batch_size, num_critics, num_target, layernorm,
                         steps) -> dict[str, Stepper]:
    """Scans of `steps` bare critic steps and of `steps` bare actor(+temperature) steps on a fixed batch; the
    batch is an argument, not a constant, so that XLA cannot fold any of it away."""
    state, batch = bare_state(obs_size, action_size, hidden, num_critics, layernorm, batch_size,
                              jax.random.PRNGKey(1))

    def critic(s, b):
        return jax.lax.scan(lambda c, _: (bare_critic_step(c, b, num_target), None), s, None, length=steps)[0], None

    def actor(s, b):
        return jax.lax.scan(lambda c, _: (bare_actor_step(c, b), None), s, None, length=steps)[0], None

    return {"bare critic step": Stepper(critic, fresh(state), batch),
            "bare actor step": Stepper(actor, fresh(state), batch)}


# --------------------------------------------------------------------------------------------------------------
# Env programs
# --------------------------------------------------------------------------------------------------------------
def brax_env_program(name: str, num_envs: int, steps: int) -> Stepper:
    """brax's own training env (Vmap, Episode and AutoReset wrappers: resets to a cached first state), random
    actions: the cheapest env-with-resets of the three implementations."""
    from brax.envs.wrappers import training as brax_training

    from envs.brax_envs import brax_environment
    env = brax_training.wrap(brax_environment(name, "mjx"), episode_length=1000)

    def step(carry):
        state, key = carry
        key, k = jax.random.split(key)
        return env.step(state, jax.random.uniform(k, (num_envs, env.action_size), minval=-1.0, maxval=1.0)), key

    key = jax.random.PRNGKey(2)
    state = jax.jit(env.reset)(jax.random.split(key, num_envs))
    return Stepper(scan_steps(step, steps), (state, key))


def ours_env_program(name: str, cfg, steps: int) -> Stepper:
    """Our env stack (`envs.make_vec(envs.make(name), num_envs)`) stepped with our policy's samples, no learning."""
    import envs
    from algos import sac
    env = envs.make(name)
    venv = envs.make_vec(env, cfg.num_envs)
    agent = fresh(sac.init_agent(jax.random.PRNGKey(0), cfg, sac.HParams(), env.observation_size, env.action_size))

    def run(carry, agent):
        def step(c, _):
            state, key = c
            key, k = jax.random.split(key)
            return (venv.step(state, sac.act(agent, state.obs, k, False, cfg)), key), None
        return jax.lax.scan(step, carry, None, length=steps)[0], None

    key = jax.random.PRNGKey(3)
    return Stepper(run, (jax.jit(venv.reset)(key), key), agent)


# --------------------------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------------------------
def ours_config(a, utd: int, steps: int, num_critics: int = 2, num_target: int = 2, layernorm: bool = False):
    from algos import sac
    return sac.Config(num_envs=a.num_envs, chunk_steps=steps, buffer_capacity=a.buffer, batch_size=a.batch_size,
                      start_steps=a.batch_size, updates_per_step=utd, hidden_sizes=tuple(a.hidden),
                      num_critics=num_critics, num_target_critics=num_target, critic_layernorm=layernorm)


def ours_chunk_program(name: str, cfg) -> Stepper:
    """`jit(train_chunk)`, compiled, then run once to get past the replay warm-up (start_steps = batch size)."""
    import envs
    from algos import sac
    init_carry, train_chunk, _ = sac.make_train(cfg, envs.make(name))
    hp = sac.HParams()
    program = Stepper(train_chunk, jax.jit(init_carry)(jax.random.PRNGKey(0), hp), hp)
    while True:  # warm-up: until every step of a chunk runs an update
        program()
        if int(program.aux["updates_in_chunk"]) == cfg.chunk_steps:
            return program


def ours_update_program(cfg, obs_size: int, action_size: int) -> Stepper:
    """`sac.update` alone (G critic steps + 1 actor/temperature step), `chunk_steps` times, on fixed batches."""
    from algos import sac
    hp = sac.HParams()
    agent = fresh(sac.init_agent(jax.random.PRNGKey(0), cfg, hp, obs_size, action_size))
    g, b = cfg.updates_per_step, cfg.batch_size
    ks = jax.random.split(jax.random.PRNGKey(4), 3)
    batches = {"obs": jax.random.normal(ks[0], (g, b, obs_size)),
               "action": jax.random.uniform(ks[1], (g, b, action_size), minval=-1, maxval=1),
               "reward": jnp.zeros((g, b)), "next_obs": jax.random.normal(ks[2], (g, b, obs_size)),
               "terminated": jnp.zeros((g, b), bool), "truncated": jnp.zeros((g, b), bool)}

    def run(carry, batches, hp):
        def step(c, _):
            agent, key = c
            key, k = jax.random.split(key)
            return (sac.update(agent, batches, k, hp, cfg)[0], key), None
        return jax.lax.scan(step, carry, None, length=cfg.chunk_steps)[0], None

    return Stepper(run, (agent, jax.random.PRNGKey(5)), batches, hp)


# --------------------------------------------------------------------------------------------------------------
# brax's SAC
# --------------------------------------------------------------------------------------------------------------
def install_brax_shim():
    """brax 0.14.2's SAC calls `jax.device_put_replicated`, removed in jax 0.10: the same thing with today's API
    (stack one copy per device on a new leading axis, shard that axis over the devices)."""
    if hasattr(jax, "device_put_replicated"):
        return

    def device_put_replicated(x, devices):
        mesh = jax.sharding.Mesh(np.array(devices), ("devices",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))
        return jax.device_put(jax.tree.map(lambda v: jnp.stack([jnp.asarray(v)] * len(devices)), x), sharding)

    jax.device_put_replicated = device_put_replicated


def null_brax_env(obs_size: int, action_size: int):
    """A brax env that does nothing: brax's SAC evaluates on it between epochs (untimed) to save wall time."""
    from brax.envs.base import Env, State

    class NullEnv(Env):
        def reset(self, rng):
            return State(pipeline_state=None, obs=jnp.zeros(obs_size), reward=jnp.zeros(()), done=jnp.zeros(()),
                         metrics={}, info={})

        def step(self, state, action):
            return state

        observation_size = property(lambda self: obs_size)
        action_size = property(lambda self: action_size)
        backend = property(lambda self: "null")

    return NullEnv()


def run_brax(name: str, utd: int, a, on_round) -> dict:
    """brax's SAC for 1 + rounds epochs of `steps` env steps; `on_round((wall, cpu))` after each steady epoch:
    the epoch's wall time as brax measures it (`training/sps`), and the process CPU time between two of brax's
    progress callbacks less brax's evaluation time. Compile = prefill + first epoch (brax's `training/walltime`)
    minus the median steady epoch."""
    import functools

    install_brax_shim()
    from brax.training.agents.sac import networks as brax_sac_networks
    from brax.training.agents.sac import train as brax_sac

    from envs.brax_envs import brax_environment
    env = brax_environment(name, "mjx")
    epochs = a.rounds + 1
    prefill = -(-a.batch_size // a.num_envs) * a.num_envs
    epoch_s, walltime, cpu = [], [], {"left": None}

    def progress(step, metrics):
        entered = time.process_time()
        if "training/sps" not in metrics:  # the evaluation before training
            cpu["left"] = time.process_time()
            return
        epoch_s.append(a.steps * a.num_envs / float(metrics["training/sps"]))
        walltime.append(float(metrics["training/walltime"]))
        if len(epoch_s) > 1:
            # CPU time of the process since the previous callback returned, less the (untimed, tiny) evaluation
            epoch_cpu = entered - cpu["left"] - float(metrics.get("eval/epoch_eval_time", 0.0))
            on_round((epoch_s[-1], epoch_cpu))
        cpu["left"] = time.process_time()

    brax_sac.train(
        env, num_timesteps=prefill + epochs * a.steps * a.num_envs, episode_length=1000, num_envs=a.num_envs,
        num_eval_envs=1, eval_env=null_brax_env(env.observation_size, env.action_size), learning_rate=3e-4,
        discounting=0.99, tau=0.005, seed=0, batch_size=a.batch_size, num_evals=epochs + 1,
        normalize_observations=False, reward_scaling=1.0, min_replay_size=a.batch_size, max_replay_size=a.buffer,
        grad_updates_per_step=utd, progress_fn=progress,
        network_factory=functools.partial(brax_sac_networks.make_sac_networks, hidden_layer_sizes=tuple(a.hidden)))
    return {"compile_s": walltime[0] - median(epoch_s[1:]), "seconds": epoch_s[1:]}


# --------------------------------------------------------------------------------------------------------------
# rejax's SAC, in a worker process with the peers' venv
# --------------------------------------------------------------------------------------------------------------
def rejax_program(msg: dict) -> Stepper:
    """rejax's `SAC` on OUR env through a gymnax adapter; `fori_loop` over its `train_iteration` (its `train()`
    without the evaluations), compiled, then run once to get past its `fill_buffer`."""
    from flax import struct
    from gymnax.environments import spaces
    from gymnax.environments.environment import Environment
    from rejax import SAC

    import envs

    @struct.dataclass
    class EnvParams:
        max_steps_in_episode: int = 1000

    class OursAsGymnax(Environment):
        """gymnax's `step` calls `step_env`, then `reset_env`, and selects on `done` (a fresh reset per step)."""

        def __init__(self, env):
            self.env = env

        @property
        def default_params(self):
            return EnvParams(self.env.max_steps)

        def step_env(self, key, state, action, params):
            s = self.env.step(state, action)
            return s.obs, s, s.reward, s.terminated | s.truncated, {}

        def reset_env(self, key, params):
            s = self.env.reset(key)
            return s.obs, s

        def action_space(self, params):
            return spaces.Box(low=-1.0, high=1.0, shape=(self.env.action_size,))

        def observation_space(self, params):
            return spaces.Box(low=-jnp.inf, high=jnp.inf, shape=(self.env.observation_size,))

    env = OursAsGymnax(envs.make(msg["env"]))
    steps = msg["steps"]
    algo = SAC.create(env=env, env_params=env.default_params, num_envs=msg["num_envs"], batch_size=msg["batch_size"],
                      num_epochs=msg["utd"], hidden_layer_sizes=tuple(msg["hidden"]), num_critics=2,
                      buffer_size=msg["buffer"], fill_buffer=msg["batch_size"], learning_rate=3e-4, gamma=0.99,
                      polyak=0.995, total_timesteps=10**9, eval_freq=10**9, skip_initial_evaluation=True)
    def run(ts):
        return jax.lax.fori_loop(0, steps, lambda _, t: algo.train_iteration(t), ts), None

    seeds = msg.get("seeds")  # None: one agent; P: a population of P seeds, `vmap`-ed (as in rejax's README)
    if seeds is None:
        program = Stepper(run, fresh(algo.init_state(jax.random.PRNGKey(0))))
    else:
        keys = jax.random.split(jax.random.PRNGKey(0), seeds)
        program = Stepper(jax.vmap(run), fresh(jax.jit(jax.vmap(algo.init_state))(keys)))
    program()
    while int(jnp.min(program.carry.global_step)) < msg["batch_size"]:  # from here on every iteration updates
        program()
    return program


def worker_main():
    """JSON lines on stdin -> one JSON line per request on stdout (jax's own output goes to stderr)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    jax.config.update("jax_enable_compilation_cache", False)
    programs = {}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "versions":
                reply = {"versions": package_versions(["rejax", "gymnax", "jax", "jaxlib", "flax", "optax", "distrax",
                                                       "brax", "mujoco-mjx"])}
            elif msg["cmd"] == "setup":
                programs.pop(msg["id"], None)
                programs[msg["id"]] = rejax_program(msg)
                reply = {"compile_s": programs[msg["id"]].compile_s}
            elif msg["cmd"] == "time":
                wall, cpu = programs[msg["id"]]()
                reply = {"seconds": wall, "cpu_seconds": cpu}
            elif msg["cmd"] == "drop":
                programs.clear()
                reply = {}
            else:
                reply = {"error": f"unknown command {msg['cmd']!r}"}
        except Exception:  # reported to the parent, which carries on without rejax
            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


def RejaxWorker(python: pathlib.Path, log_path: str) -> PeerWorker:
    """rejax in the peers' venv: this file run with --worker."""
    return PeerWorker([str(python), str(pathlib.Path(__file__).resolve()), "--worker"], REPO, log_path, "rejax")


# --------------------------------------------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------------------------------------------
def package_versions(names):
    from importlib import metadata
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


machine = describe


def log(*args):
    print(*args, flush=True)


def time_rounds(programs: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """`rounds` rounds; in each, every program once, one after the other. Returns wall and CPU seconds."""
    wall, cpu = {k: [] for k in programs}, {k: [] for k in programs}
    for _ in range(rounds):
        for k, p in programs.items():
            w, c = p()
            wall[k].append(w)
            cpu[k].append(c)
    return wall, cpu


def bench_env(name: str, a, worker, skip) -> list[dict]:
    """All rows of one env: for each UTD, ours / brax / rejax / limit, timed in the same rounds."""
    import envs
    env = envs.make(name)
    obs_size, action_size = env.observation_size, env.action_size
    shared = {}
    if "limit" not in skip:
        shared["bare env"] = brax_env_program(name, a.num_envs, a.steps)
        shared["our env + policy"] = ours_env_program(name, ours_config(a, 1, a.steps), a.steps)
        shared.update(bare_update_programs(obs_size, action_size, tuple(a.hidden), a.batch_size, 2, 2, False,
                                           a.steps))
        for k, p in shared.items():
            p()  # warm-up
            log(f"  {name}: {k} compiled in {p.compile_s:.1f}s")
    rows = []
    for utd in a.utds:
        cfg = ours_config(a, utd, a.steps)
        programs = {"ours": ours_chunk_program(name, cfg)}
        log(f"  {name} UTD {utd}: ours compiled in {programs['ours'].compile_s:.1f}s")
        if "limit" not in skip:
            programs["our update"] = ours_update_program(cfg, obs_size, action_size)
            programs["our update"]()
        programs.update(shared)
        row = {"env": name, "utd": utd, "obs_size": obs_size, "action_size": action_size, "steps_per_call": a.steps,
               "compile_s": {"ours": programs["ours"].compile_s}, "errors": {}}
        rejax_ok = False
        if worker is not None:
            try:
                worker.call(cmd="drop")
                reply = worker.call(cmd="setup", id="rejax", env=name, utd=utd, steps=a.steps, num_envs=a.num_envs,
                                    batch_size=a.batch_size, hidden=list(a.hidden), buffer=a.buffer)
                row["compile_s"]["rejax"] = reply["compile_s"]
                rejax_ok = True
                log(f"  {name} UTD {utd}: rejax compiled in {reply['compile_s']:.1f}s")
            except Exception as e:  # noqa: BLE001 - reported, and the benchmark goes on without rejax
                row["errors"]["rejax"] = str(e).strip().splitlines()[-1]
                log(f"  {name} UTD {utd}: rejax failed: {row['errors']['rejax']}")
        times, cpu_times = {k: [] for k in programs}, {k: [] for k in programs}
        updates_seen = []

        def record(k, wall, cpu):
            times.setdefault(k, []).append(wall)
            cpu_times.setdefault(k, []).append(cpu)

        def one_round(brax_seconds=None):
            if brax_seconds is not None:
                record("brax", *brax_seconds)
            for k, p in programs.items():
                record(k, *p())
            updates_seen.append(float(programs["ours"].aux["updates_in_chunk"]))
            if rejax_ok:
                reply = worker.call(cmd="time", id="rejax")
                record("rejax", reply["seconds"], reply["cpu_seconds"])
            log("    round: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

        if "brax" not in skip:
            try:
                out = run_brax(name, utd, a, one_round)
                row["compile_s"]["brax"] = out["compile_s"]
            except Exception as e:  # noqa: BLE001
                row["errors"]["brax"] = f"{type(e).__name__}: {e}"
                log(f"  {name} UTD {utd}: brax failed: {row['errors']['brax']}")
                traceback.print_exc()
        while len(times["ours"]) < a.rounds:
            one_round()
        assert all(u == a.steps for u in updates_seen), f"ours ran updates in only {updates_seen} of {a.steps} steps"
        row["seconds"], row["cpu_seconds"] = times, cpu_times
        summarise_row(row, a.num_envs, utd, a.steps)
        rows.append(row)
        del programs
    return rows


def _ratios(t: dict, utd: int, steps: int) -> dict:
    """Per-round ratios (medians): ours over each peer, and each over its limit (limits built from the same
    round's bare timings)."""
    out = {}
    for peer in ("brax", "rejax"):
        if peer in t:
            out[f"ours/{peer}"] = median([p / o for o, p in zip(t["ours"], t[peer])])
    if "bare env" in t:
        env, critic, actor = (t[k] for k in ("bare env", "bare critic step", "bare actor step"))
        ours_limit = [e + utd * c + a for e, c, a in zip(env, critic, actor)]  # seconds per call of `steps`
        peer_limit = [e + utd * (c + a) for e, c, a in zip(env, critic, actor)]
        out["ours/limit"] = median([lim / o for o, lim in zip(t["ours"], ours_limit)])
        for peer in ("brax", "rejax"):
            if peer in t:
                out[f"{peer}/its limit"] = median([lim / p for p, lim in zip(t[peer], peer_limit)])
        out["_limit_s"] = {"ours scheme": median(ours_limit), "peer scheme": median(peer_limit)}
    return out


def summarise_row(row: dict, num_envs: int, utd: int, steps: int):
    """Rates (medians over rounds) and ratios (medians of per-round ratios), from wall and from CPU times."""
    t = row["seconds"]
    n = steps * num_envs
    row["env_steps_per_s"] = {k: n / median(t[k]) for k in ("ours", "brax", "rejax") if k in t}
    row["updates_per_s"] = {k: v * utd / num_envs for k, v in row["env_steps_per_s"].items()}
    row["ratios"] = _ratios(t, utd, steps)
    row["cpu_ratios"] = _ratios(row["cpu_seconds"], utd, steps)
    limit_s = row["ratios"].pop("_limit_s", None)
    row["cpu_ratios"].pop("_limit_s", None)
    if limit_s is not None:
        row["limit_env_steps_per_s"] = {k: n / v for k, v in limit_s.items()}
        row["limit_updates_per_s"] = {k: v * utd / num_envs for k, v in row["limit_env_steps_per_s"].items()}
        ms = lambda k: 1e3 * median(t[k]) / steps
        row["ms_per_env_step"] = {k: ms(k) for k in t}
        if "our env + policy" in t and "our update" in t:
            row["ms_per_env_step"]["ours rest"] = ms("ours") - ms("our env + policy") - ms("our update")


def bench_rlpd(a, skip) -> dict:
    """RLPD's configuration (E=10, M=2, LayerNorm critics, UTD 20; online buffer only) vs its bare limit."""
    import envs
    env = envs.make(a.rlpd_env)
    utd, steps = 20, a.rlpd_steps
    cfg = ours_config(a, utd, steps, num_critics=10, num_target=2, layernorm=True)
    programs = {"ours": ours_chunk_program(a.rlpd_env, cfg)}
    log(f"  RLPD {a.rlpd_env}: ours compiled in {programs['ours'].compile_s:.1f}s")
    if "limit" not in skip:
        programs["our update"] = ours_update_program(cfg, env.observation_size, env.action_size)
        programs["bare env"] = brax_env_program(a.rlpd_env, a.num_envs, steps)
        programs.update(bare_update_programs(env.observation_size, env.action_size, tuple(a.hidden), a.batch_size,
                                             10, 2, True, steps))
        for k, p in programs.items():
            if k != "ours":
                p()
    times, cpu_times = time_rounds(programs, a.rounds)
    assert int(programs["ours"].aux["updates_in_chunk"]) == steps
    row = {"env": a.rlpd_env, "utd": utd, "num_critics": 10, "num_target_critics": 2, "layernorm": True,
           "steps_per_call": steps, "compile_s": {"ours": programs["ours"].compile_s}, "seconds": times,
           "cpu_seconds": cpu_times}
    summarise_row(row, a.num_envs, utd, steps)
    return row


def bench_ensemble(a, obs_size: int, action_size: int) -> list[dict]:
    """Critic forward + backward + SGD step: `CriticEnsemble` (nn.vmap) vs a Python loop over E `Critic`s."""
    from nets import Critic, CriticEnsemble
    k = jax.random.split(jax.random.PRNGKey(6), 4)
    obs = jax.random.normal(k[0], (a.batch_size, obs_size))
    action = jax.random.uniform(k[1], (a.batch_size, action_size), minval=-1, maxval=1)
    target = jax.random.normal(k[2], (a.batch_size,))
    steps, rows = a.ensemble_steps, []
    for e in a.ensemble_sizes:
        ensemble, single = CriticEnsemble(e, tuple(a.hidden)), Critic(tuple(a.hidden))
        params_v = ensemble.init(k[3], obs, action)
        params_l = [single.init(kk, obs, action) for kk in jax.random.split(k[3], e)]
        loss_v = lambda p, o, u, y: jnp.mean((ensemble.apply(p, o, u) - y) ** 2)
        loss_l = lambda p, o, u, y: jnp.mean((jnp.stack([single.apply(q, o, u) for q in p]) - y) ** 2)

        def trainer(loss):
            def run(p, o, u, y):
                def step(p, _):
                    g = jax.grad(loss)(p, o, u, y)
                    return jax.tree.map(lambda w, d: w - 1e-4 * d, p, g), None
                return jax.lax.scan(step, p, None, length=steps)[0], None
            return run

        programs = {"vmapped": Stepper(trainer(loss_v), params_v, obs, action, target),
                    "loop": Stepper(trainer(loss_l), params_l, obs, action, target)}
        for p in programs.values():
            p()
        times, cpu_times = time_rounds(programs, a.rounds)
        rows.append({"num_critics": e, "ms_per_step": {kk: 1e3 * median(v) / steps for kk, v in times.items()},
                     "loop/vmapped": median([lp / vp for vp, lp in zip(times["vmapped"], times["loop"])]),
                     "cpu loop/vmapped": median([lp / vp for vp, lp in zip(cpu_times["vmapped"], cpu_times["loop"])]),
                     "compile_s": {kk: p.compile_s for kk, p in programs.items()}, "seconds": times,
                     "cpu_seconds": cpu_times})
    return rows


def bench_sweep(a, worker) -> list[dict]:
    """Wall time of one chunk of a `--sweep-seeds`-member vmapped population over a 1-member one: ours through
    `experiments.runner` (make_population + Runner), and rejax's SAC `vmap`-ed over seeds on the same env (through
    the gymnax adapter) with the same sizes, timed in the same rounds."""
    from algos import sac
    from experiments import runner
    from experiments import sac as sac_experiment
    rows = []
    for hidden, batch in ((tuple(a.hidden), a.batch_size), (tuple(a.sweep_small_hidden), a.sweep_small_batch)):
        agent = sac.Config(num_envs=a.sweep_num_envs, chunk_steps=a.sweep_steps, batch_size=batch, start_steps=batch,
                           hidden_sizes=hidden, updates_per_step=1, buffer_capacity=a.buffer)
        args = sac_experiment.Args(env=a.sweep_env, agent=agent, run=runner.RunConfig(progress=False))
        trainer = sac_experiment.build(args)
        programs, first_call_s, errors = {}, {}, {}
        for size in (1, a.sweep_seeds):
            pop = runner.make_population(args.hp, [{}], seed=0, num_seeds=size)
            r = runner.Runner(trainer, pop)
            state = {"carry": r.init_carry()}

            def call(r=r, state=state):
                wall, cpu = time.perf_counter(), time.process_time()
                state["carry"], metrics = r.train_chunk(state["carry"], r.hparams)
                jax.block_until_ready(state["carry"])
                return time.perf_counter() - wall, time.process_time() - cpu

            first_call_s[f"ours {size}"] = call()[0]  # the first call compiles (and runs) the chunk
            call()  # warm-up
            programs[f"ours {size}"] = call
        if worker is not None:
            try:
                worker.call(cmd="drop")
                for size in (1, a.sweep_seeds):
                    reply = worker.call(cmd="setup", id=f"rejax {size}", seeds=size, env=a.sweep_env, utd=1,
                                        steps=a.sweep_steps, num_envs=a.sweep_num_envs, batch_size=batch,
                                        hidden=list(hidden), buffer=a.buffer)
                    first_call_s[f"rejax {size}"] = reply["compile_s"]

                    def remote(size=size):
                        reply = worker.call(cmd="time", id=f"rejax {size}")
                        return reply["seconds"], reply["cpu_seconds"]

                    programs[f"rejax {size}"] = remote
            except RuntimeError as e:
                errors["rejax"] = str(e).strip().splitlines()[-1]
                log(f"  sweep: rejax failed: {errors['rejax']}")
                programs = {k: v for k, v in programs.items() if not k.startswith("rejax")}
        times, cpu_times = time_rounds(programs, a.rounds)
        row = {"env": a.sweep_env, "num_envs": a.sweep_num_envs, "hidden": hidden, "batch_size": batch,
               "seeds": a.sweep_seeds, "chunk_steps": a.sweep_steps, "seconds": times, "cpu_seconds": cpu_times,
               "first_call_s": first_call_s, "errors": errors, "factor": {}, "cpu factor": {},
               "env_steps_per_s": {}}
        for impl in ("ours", "rejax"):
            if f"{impl} 1" not in times:
                continue
            one, many = times[f"{impl} 1"], times[f"{impl} {a.sweep_seeds}"]
            row["factor"][impl] = median([m / o for o, m in zip(one, many)])
            row["cpu factor"][impl] = median([m / o for o, m in zip(cpu_times[f"{impl} 1"],
                                                                    cpu_times[f"{impl} {a.sweep_seeds}"])])
            n = a.sweep_steps * a.sweep_num_envs
            row["env_steps_per_s"][impl] = {"1": n / median(one), str(a.sweep_seeds): a.sweep_seeds * n / median(many)}
        rows.append(row)
        log(f"  sweep {hidden} batch {batch}: {a.sweep_seeds} seeds / 1 seed = " +
            ", ".join(f"{k} {v:.2f}x" for k, v in row["factor"].items()))
    return rows


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------
def fmt(x, spec=",.0f"):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report(res: dict) -> str:
    out = []
    rows = res.get("rows", [])
    if rows:
        out += ["| env | UTD | implementation | env-steps/s | updates/s | actor steps per env step | compile (s) |",
                "|---|---:|---|---:|---:|---:|---:|"]
        for r in rows:
            for impl in ("ours", "brax", "rejax"):
                if impl in r["env_steps_per_s"]:
                    actor = 1 if impl == "ours" else r["utd"]
                    out.append(f"| {r['env']} | {r['utd']} | {impl} | {fmt(r['env_steps_per_s'][impl])} | "
                               f"{fmt(r['updates_per_s'][impl])} | {actor} | {fmt(r['compile_s'].get(impl), '.1f')} |")
                elif impl in r.get("errors", {}):
                    out.append(f"| {r['env']} | {r['utd']} | {impl} | failed: {r['errors'][impl]} | | | |")
            if "limit_env_steps_per_s" in r:
                for scheme, actor in (("ours scheme", 1), ("peer scheme", r["utd"])):
                    out.append(f"| {r['env']} | {r['utd']} | limit ({scheme}) | "
                               f"{fmt(r['limit_env_steps_per_s'][scheme])} | {fmt(r['limit_updates_per_s'][scheme])} "
                               f"| {actor} | |")
        for key, intro in (("ratios", []), ("cpu_ratios", ["The same ratios from process CPU time (robust to the load "
                                                            "of other jobs; see the docstring):", ""])):
            out += ["", *intro, "| env | UTD | ours ÷ brax | ours ÷ rejax | ours ÷ limit | brax ÷ its limit | "
                    "rejax ÷ its limit |", "|---|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                q = r[key]
                out.append(f"| {r['env']} | {r['utd']} | " + " | ".join(
                    fmt(q.get(k), ".2f") for k in ("ours/brax", "ours/rejax", "ours/limit", "brax/its limit",
                                                     "rejax/its limit")) + " |")
        if all("ms_per_env_step" in r for r in rows):
            out += ["", "ms per vectorised env step (64 envs):", "",
                    "| env | UTD | ours | our env + policy | our update | ours, rest | bare env | bare critic step | "
                    "bare actor step |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                m = r["ms_per_env_step"]
                out.append(f"| {r['env']} | {r['utd']} | " + " | ".join(
                    fmt(m[k], ".2f") for k in ("ours", "our env + policy", "our update", "ours rest", "bare env",
                                                "bare critic step", "bare actor step")) + " |")
    if res.get("rlpd"):
        r = res["rlpd"]
        out += ["", f"RLPD ({r['env']}, 10 critics, M=2, LayerNorm, UTD 20, online buffer only): ours "
                f"{fmt(r['env_steps_per_s']['ours'])} env-steps/s, {fmt(r['updates_per_s']['ours'])} updates/s; "
                f"limit {fmt(r.get('limit_env_steps_per_s', {}).get('ours scheme'))} env-steps/s, "
                f"{fmt(r.get('limit_updates_per_s', {}).get('ours scheme'))} updates/s; ours ÷ limit "
                f"{fmt(r['ratios'].get('ours/limit'), '.2f')} (CPU time: {fmt(r['cpu_ratios'].get('ours/limit'), '.2f')}"
                f"); compile {r['compile_s']['ours']:.1f}s."]
        if "ms_per_env_step" in r:
            m = r["ms_per_env_step"]
            out.append("  ms per env step: " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()))
    for e in res.get("ensemble", []):
        out.append(f"Critic ensemble of {e['num_critics']}, forward+backward+SGD, batch {res['args']['batch_size']}: "
                   f"vmapped {e['ms_per_step']['vmapped']:.2f} ms, loop {e['ms_per_step']['loop']:.2f} ms "
                   f"(loop ÷ vmapped {e['loop/vmapped']:.2f}, CPU time {e['cpu loop/vmapped']:.2f}); compile vmapped {e['compile_s']['vmapped']:.1f}s, "
                   f"loop {e['compile_s']['loop']:.1f}s.")
    for s in res.get("sweep", []):
        out.append(f"Sweep {s['env']}, {s['num_envs']} envs, UTD 1, hidden {s['hidden']}, batch {s['batch_size']}, "
                   f"{s['seeds']} seeds in one vmapped program vs 1:")
        for impl, f in s["factor"].items():
            rates = s["env_steps_per_s"][impl]
            out.append(f"  {impl}: {f:.2f}x the wall time (CPU time {s['cpu factor'][impl]:.2f}x); env-steps/s, all "
                       f"members together: {fmt(rates['1'])} (1 seed), {fmt(rates[str(s['seeds'])])} "
                       f"({s['seeds']} seeds)")
        for impl, e in s.get("errors", {}).items():
            out.append(f"  {impl}: failed: {e}")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["ant", "inverted_pendulum"], metavar="NAME",
                        help="brax envs (MJX backend) to compare on (default: %(default)s)")
    parser.add_argument("--utds", nargs="+", type=int, default=[1, 8], metavar="G",
                        help="critic updates per vectorised env step (default: %(default)s)")
    parser.add_argument("--num-envs", type=int, default=64, help="parallel envs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size (default: %(default)s)")
    parser.add_argument("--hidden", nargs="+", type=int, default=[256, 256],
                        help="hidden sizes of actor and critics (default: %(default)s)")
    parser.add_argument("--buffer", type=int, default=100_000, help="replay capacity (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=64,
                        help="vectorised env steps per timed call (one chunk / one brax epoch) (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds after warm-up; medians are reported (default: %(default)s)")
    parser.add_argument("--rlpd-env", default="ant", help="env of the RLPD row (default: %(default)s)")
    parser.add_argument("--rlpd-steps", type=int, default=8,
                        help="vectorised env steps per timed RLPD call (default: %(default)s)")
    parser.add_argument("--ensemble-sizes", nargs="+", type=int, default=[2, 10],
                        help="critic counts for the vmapped-vs-loop micro-benchmark (default: %(default)s)")
    parser.add_argument("--ensemble-steps", type=int, default=20,
                        help="SGD steps per timed ensemble call (default: %(default)s)")
    parser.add_argument("--sweep-env", default="pointmaze-umaze-jax", help="env of the sweep scaling (default: "
                                                                           "%(default)s)")
    parser.add_argument("--sweep-seeds", type=int, default=16, help="population size (default: %(default)s)")
    parser.add_argument("--sweep-num-envs", type=int, default=16, help="envs per member (default: %(default)s)")
    parser.add_argument("--sweep-steps", type=int, default=50, help="chunk length of the sweep (default: %(default)s)")
    parser.add_argument("--sweep-small-hidden", nargs="+", type=int, default=[64, 64],
                        help="hidden sizes of the second, small sweep configuration (default: %(default)s)")
    parser.add_argument("--sweep-small-batch", type=int, default=64,
                        help="batch size of the second, small sweep configuration (default: %(default)s)")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS,
                        help="sections to leave out: compare (the whole ours/brax/rejax/limit table), or one peer "
                             "(brax, rejax), the limit, rlpd, ensemble, sweep (default: none)")
    parser.add_argument("--peers-python", default=str(PEERS_PYTHON),
                        help="python of the venv with rejax (default: %(default)s; `make bench` builds it)")
    parser.add_argument("--json", metavar="PATH", help="also write everything measured to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        return worker_main()
    skip = set(a.skip)

    import envs
    for name in {*a.envs, a.rlpd_env, a.sweep_env}:
        envs.env_class(name)  # fail fast, with the list of valid names
    jax.config.update("jax_enable_compilation_cache", False)
    started = time.time()
    res = {"args": vars(a), "machine": machine(),
           "versions": package_versions(["jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx"])}
    log(f"# {res['machine']['cpu']} ({res['machine']['cpus']} cpus), load {res['machine']['load_average']}, "
        f"{res['versions']}")

    worker = None
    if "compare" in skip and "sweep" in skip:
        skip.add("rejax")  # the rejax worker serves only these two
    if "rejax" not in skip:
        if not pathlib.Path(a.peers_python).exists():
            res["rejax_error"] = (f"{a.peers_python} not found: build it with `make bench` or `python3 -m venv "
                                  f"benchmarks/.venv-peers && benchmarks/.venv-peers/bin/pip install -r "
                                  f"benchmarks/requirements-peers.txt`")
            log(f"rejax skipped: {res['rejax_error']}")
        else:
            log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sac_bench_rejax_{os.getpid()}.log")
            worker = RejaxWorker(pathlib.Path(a.peers_python), log_path)
            try:
                res["peer_versions"] = worker.call(cmd="versions")["versions"]
                log(f"# rejax worker: {res['peer_versions']} (log {log_path})")
            except RuntimeError as e:
                res["rejax_error"] = str(e)
                log(f"rejax skipped: {e}")
                worker = None

    res["rows"] = []
    for name in a.envs if "compare" not in skip else []:
        log(f"== {name}")
        res["rows"] += bench_env(name, a, worker, skip)
    if "rlpd" not in skip:
        log("== RLPD")
        res["rlpd"] = bench_rlpd(a, skip)
    if "ensemble" not in skip:
        log("== critic ensemble: vmapped vs loop")
        env = envs.make(a.rlpd_env)
        res["ensemble"] = bench_ensemble(a, env.observation_size, env.action_size)
    if "sweep" not in skip:
        log("== sweep scaling")
        res["sweep"] = bench_sweep(a, worker)
    if worker is not None:
        worker.close()
    res["wall_s"] = time.time() - started
    res["machine"]["load_average_end"] = os.getloadavg()
    log("")
    log(report(res))
    log(f"\n(whole run {res['wall_s'] / 60:.1f} min; load average at the end {res['machine']['load_average_end']})")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, default=str)


if __name__ == "__main__":
    main()
