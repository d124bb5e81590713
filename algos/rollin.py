"""ROLLIN: learn a hard task through a curriculum, starting each task where the previous task's policy goes.

Paper: Li, Zhai, Ma, Levine. "Understanding the Complexity Gains of Single-Task RL with a Curriculum", ICML 2023
(arXiv:2212.12809). Followed here: the task of interest is the last of K contexts w_1..w_K; the policy of task k
starts from that of task k-1; task k's episodes start from  mu_k = beta d^{pi_{k-1}}_{mu,gamma} + (1 - beta) mu,
sampled by a roll-in: from s_0 ~ mu run pi_{k-1} for h ~ Geometric(1 - gamma) steps, P(h = n) = (1 - gamma)
gamma^n, n = 0, 1, ..., then switch to pi_k (s_h ~ d^{pi_{k-1}}_{mu,gamma}, the discounted state visitation).

This file (SAC from `algos/sac.py` is the learner; one `lax.scan` chunk holds everything):
  contexts  a static K x C table held by a `ContextEnv` wrapper; the context is the LAST C entries of the
            observation (goal-conditioned networks: the warm start theta_k <- theta_{k-1} is automatic). The stage
            k is an int32 in the carry and `set_context` writes contexts[k] into every env state after each step,
            so the task changes without recompiling. `MazeGoals`: goals at cell centres evenly spaced along the
            BFS shortest path from the start to G (task K is G). `TargetVelocity` (brax): reward
            max(0, 1 - |v_x - v*| / width), targets v_max / K, ..., v_max.
  roll-in   per env, `rollin_left` (int32): at every episode start, with probability beta and from stage 1 on,
            h ~ Geometric(1 - gamma_rollin) (else 0). While rollin_left > 0 the env's action is the FROZEN previous
            actor's (`carry.rollin_actor`, a copy of the actor taken when stage k began), fed the observation with
            the PREVIOUS context, chosen per env by `jnp.where`. At 0 the current policy takes over and the task-k
            episode begins: its return, its success and its time limit (TimeLimit's `info["steps"]` is reset)
            count from the switch; an episode that ends during its roll-in is not a task-k episode.
  advance   stage success = a bias-corrected EMA (rate `success_ema`) over the stage's completed episodes that
            began on this stage, at the env's own start state (h = 0) and after the uniform-random warm-up. When
            it is >= `advance_threshold` with >= `min_stage_episodes` such episodes, k <- k + 1 and the actor is
            copied into `rollin_actor`. Rolled-in episodes are excluded because they start closer to the goal: the
            rule certifies that pi_k solves task k from mu, which is where the next stage's roll-ins start.
  buffer    roll-in transitions ENTER the replay buffer (default `store_rollin=True`). The env always runs the
            CURRENT task (only the roll-in policy is shown the previous context), so a roll-in transition
            (s, a, r_k, s', done_k) with s, s' carrying w_k is a true transition of task k's MDP from another
            behaviour policy: off-policy SAC learns Q^{pi_k} from it, and its states (on the way to and around the
            previous goal) are where task k needs values. On-policy learners must drop them (the theory's roll-in
            is not part of task k's episode): `store_rollin=False` does that (`insert_where`).
  evaluate  deterministic episodes of the FINAL task from the env's start states (`eval_success`), and of the
            current stage (`eval_stage_success`). Train metrics: `stage`, `stage_success`, `rollin_fraction`.

Defaults: beta 0.5, gamma_rollin 0.99 (mean roll-in 99 steps), advance at success >= 0.8 (EMA rate 0.1, >= 20
episodes), roll-in actions sampled from the previous (stochastic) policy. All four are sweepable `HParams`.

Choices made here, not taken from the paper (only its abstract-level description could be checked): the
advance rule; storing roll-in transitions; resetting the time limit at the switch; when the stage advances,
episodes in flight switch to the new context at once (and are not counted for it).
`rollin=False` removes the roll-in code statically; beta = 0 gives the bit-identical result (tested), so
`--sweep.beta 0,...` puts the plain curriculum in the same program, and K = 1 is no curriculum.
"""

from __future__ import annotations

import abc
import dataclasses

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

import envs
from algos import replay, sac
from envs import maze_data
from envs.core import Wrapper

# ---- tasks: a context at the end of the observation ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ContextEnv(Wrapper):
    """A time-limited env whose task is a context vector: the last C entries of the observation.

    `contexts` (K x C, static) is the curriculum; `reset` starts on the FINAL task (so a plain rollout of this env is
    the task of interest); `set_context(state, c)` makes an (unbatched) state pursue task c from now on."""

    contexts: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self):
        if not self.contexts or len({len(c) for c in self.contexts}) != 1:
            raise ValueError(f"{type(self).__name__}.contexts must be a non-empty K x C table, got {self.contexts}.")

    @property
    def num_stages(self) -> int:
        return len(self.contexts)

    def context_table(self) -> jax.Array:
        return jnp.asarray(np.array(self.contexts, np.float32))

    def reset(self, key):
        return self.set_context(self._reset(key), self.context_table()[-1])

    def _reset(self, key):
        return self.env.reset(key)

    @abc.abstractmethod
    def set_context(self, state: envs.State, context: jax.Array) -> envs.State:
        """`state` switched to the task `context` (observation and task bookkeeping)."""


def with_context(obs: jax.Array, context: jax.Array) -> jax.Array:
    """`obs` (any batch shape) with its trailing context entries replaced by `context`."""
    return obs.at[..., obs.shape[-1] - context.shape[-1]:].set(context)


@dataclasses.dataclass(frozen=True)
class MazeGoals(ContextEnv):
    """Point maze (obs [x, y, vx, vy, goal_x, goal_y]): the context is the goal; reward/success follow it.
    `start_cell` (row, col) replaces the `S` cell as the start (with the env's start noise)."""

    start_cell: tuple[int, int] | None = None

    def _reset(self, key):
        if self.start_cell is None:
            return self.env.reset(key)
        key, k_noise = jax.random.split(key)
        s, base = self.env.reset(key), self.unwrapped
        noise = jax.random.uniform(k_noise, (2,), minval=-1.0, maxval=1.0) * base.start_noise * base.unit
        physics = base.init_physics(jnp.asarray(base.spec.cell_center(self.start_cell), jnp.float32) + noise)
        return s.replace(obs=base.observe(*base.pos_vel(physics), s.info["goal"]), physics=physics)

    def set_context(self, state, context):
        return state.replace(obs=with_context(state.obs, context), info={**state.info, "goal": context})


def maze_goals(env: envs.Env, num_stages: int, start_cell: tuple[int, int] | None = None) -> MazeGoals:
    """K goals at cell centres evenly spaced (in cells) along the shortest path from the start (`S`, or
    `start_cell`) to `G`; the last one is G."""
    spec = env.unwrapped.spec
    next_cell, _ = maze_data.shortest_paths(spec)
    goal = tuple(int(i) for i in spec.find("G"))
    start = tuple(int(i) for i in (spec.find("S") if start_cell is None else start_cell))
    if not (0 <= start[0] < spec.wall_grid.shape[0] and 0 <= start[1] < spec.wall_grid.shape[1]) \
            or spec.wall_grid[start] or start == goal:
        raise ValueError(f"start_cell {start_cell} must be a free cell of the {spec.name} maze other than G.")
    path = [start]
    while path[-1] != goal:
        path.append(tuple(int(i) for i in next_cell[path[-1] + goal]))
    length = len(path) - 1
    if not 1 <= num_stages <= length:
        raise ValueError(f"num_stages must be between 1 and the start->G path length ({length} cells) of the "
                         f"{spec.name} maze, got {num_stages}.")
    cells = [path[int(k * length / num_stages + 0.5)] for k in range(1, num_stages + 1)]
    goals = spec.cell_center(np.array(cells))
    return MazeGoals(env, contexts=tuple(tuple(float(v) for v in g) for g in goals),
                     start_cell=None if start_cell is None else start)


@dataclasses.dataclass(frozen=True)
class TargetVelocity(ContextEnv):
    """Locomotion (brax): run forward at v* = the context. Reward max(0, 1 - |v_x - v*| / width) (bounded: far
    targets give no reward until approached, which is what makes a curriculum useful); success: an EMA (rate
    `velocity_ema`) of v_x within `tolerance` of v*. The observation gets v* appended. brax's own reward terms
    (control cost, healthy bonus) are dropped; brax's termination (an unhealthy hopper) is kept."""

    width: float = 1.0
    tolerance: float = 0.5
    velocity_ema: float = 0.05

    @property
    def observation_size(self) -> int:
        return self.env.observation_size + 1

    def _reset(self, key):
        s = self.env.reset(key)
        zero = jnp.zeros((), jnp.float32)
        return s.replace(obs=jnp.concatenate([s.obs, zero[None]]),
                         info={**s.info, "target_velocity": zero, "velocity": zero, "success": zero})

    def set_context(self, state, context):
        return state.replace(obs=with_context(state.obs, context), info={**state.info, "target_velocity": context[0]})

    def step(self, state, action):
        s = self.env.step(state.replace(obs=state.obs[:-1], physics=state.physics), action)
        target = state.info["target_velocity"]
        v = jnp.asarray(s.physics.metrics["x_velocity"], jnp.float32)
        ema = (1.0 - self.velocity_ema) * state.info["velocity"] + self.velocity_ema * v
        reward = jnp.maximum(0.0, 1.0 - jnp.abs(v - target) / self.width)
        success = (jnp.abs(ema - target) < self.tolerance).astype(jnp.float32)
        return s.replace(obs=jnp.concatenate([s.obs, target[None]]), reward=reward,
                         info={**s.info, "target_velocity": target, "velocity": ema, "success": success})


def target_velocity(env: envs.Env, max_velocity: float, num_stages: int, **kwargs) -> TargetVelocity:
    """K evenly spaced targets max_velocity / K, ..., max_velocity."""
    targets = np.linspace(max_velocity / num_stages, max_velocity, num_stages)
    return TargetVelocity(env, contexts=tuple((float(v),) for v in targets), **kwargs)


# ---- configuration ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    """Static settings: SAC's (networks, envs, chunking, UTD, warm-up) plus ROLLIN's. K and the contexts are the
    env's (see `ContextEnv`)."""

    rollin: bool = True  # False removes the roll-in code from the program (the plain curriculum; = beta 0)
    store_rollin: bool = True  # roll-in transitions enter the replay buffer (see the module docstring)
    rollin_deterministic: bool = False  # roll in with the previous policy's mode instead of samples
    min_stage_episodes: int = 20  # episodes (started at the env's start state) a stage needs before advancing

    def __post_init__(self):
        super().__post_init__()
        if self.min_stage_episodes < 1:
            raise ValueError(f"Config.min_stage_episodes must be >= 1, got {self.min_stage_episodes}.")


@struct.dataclass
class HParams(sac.HParams):
    """SAC's sweepable scalars plus ROLLIN's."""

    beta: float = 0.5  # probability that an episode starts with a roll-in of the previous policy
    rollin_gamma: float = 0.99  # h ~ Geometric(1 - rollin_gamma) on {0, 1, ...}; in [0, 1)
    advance_threshold: float = 0.8  # stage success needed to move on
    success_ema: float = 0.1  # EMA rate of the stage success (weight of each new episode)

    # Valid values (experiments/runner/sweeps.py checks them; SAC's are inherited). A threshold above 1 never advances.
    RANGES = {"beta": "[0, 1]", "rollin_gamma": "[0, 1)", "advance_threshold": "[0, inf)", "success_ema": "(0, 1]"}


# ---- roll-in lengths and the advance rule (pure, tested on their own) -----------------------------------------

def sample_rollin_length(key: jax.Array, beta, gamma, shape) -> jax.Array:
    """h = 0 with probability 1 - beta, else h ~ Geometric(1 - gamma) on {0, 1, 2, ...}, P(h = n) = (1 - gamma)
    gamma^n (mean gamma / (1 - gamma)), by inversion: h = floor(log U / log gamma), U ~ Uniform(0, 1]."""
    k_use, k_len = jax.random.split(key)
    use = jax.random.uniform(k_use, shape) < beta
    u = 1.0 - jax.random.uniform(k_len, shape)
    h = jnp.clip(jnp.floor(jnp.log(u) / jnp.log(gamma)), 0, 1e6)  # cap: gamma -> 1
    return jnp.where(use, h, 0).astype(jnp.int32)


@struct.dataclass
class StageStats:
    ema: jax.Array  # float32, EMA of episode success (zero-initialised)
    weight: jax.Array  # float32, 1 - (1 - rate)^n: total EMA weight, for the bias correction
    episodes: jax.Array  # int32, episodes counted on this stage

    @staticmethod
    def zeros() -> "StageStats":
        return StageStats(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))

    @property
    def success(self) -> jax.Array:
        """Bias-corrected EMA: a run of equal outcomes c reads exactly c."""
        return jnp.where(self.weight > 0, self.ema / jnp.maximum(self.weight, 1e-12), 0.0)


def record_episodes(stats: StageStats, counted: jax.Array, success: jax.Array, rate) -> StageStats:
    """Fold the episodes with `counted` (bool, per env) into the EMA; those of one step share one weight."""
    n = counted.sum()
    mean = jnp.sum(jnp.where(counted, success, 0.0)) / jnp.maximum(n, 1)
    decay = (1.0 - rate) ** n
    return StageStats(ema=decay * stats.ema + (1 - decay) * mean, weight=decay * stats.weight + (1 - decay),
                      episodes=stats.episodes + n.astype(jnp.int32))


def should_advance(stats: StageStats, stage, num_stages: int, min_episodes: int, threshold) -> jax.Array:
    return (stage < num_stages - 1) & (stats.episodes >= min_episodes) & (stats.success >= threshold)


# ---- training ----------------------------------------------------------------------------------------------

@struct.dataclass
class Carry:
    agent: sac.AgentState
    rollin_actor: dict  # actor parameters frozen when the current stage began (the roll-in policy pi_{k-1})
    buffer: replay.ReplayBuffer
    env_state: envs.State
    rng: jax.Array
    env_steps: jax.Array  # int32
    num_updates: jax.Array  # int32
    stage: jax.Array  # int32, current curriculum stage k in [0, K)
    stats: StageStats  # success statistic of the current stage
    rollin_left: jax.Array  # (N,) int32, roll-in actions still to take in each env's episode
    episode_stage: jax.Array  # (N,) int32, stage on which each env's episode began
    counts: jax.Array  # (N,) bool, the episode counts for the advance rule: h = 0 and begun after the warm-up
    task_return: jax.Array  # (N,) float32, return of the current task since the switch


def insert_where(buffer: replay.ReplayBuffer, transitions: dict, keep: jax.Array) -> replay.ReplayBuffer:
    """Insert only the rows with `keep`, contiguously (rows without it are written out of range and dropped)."""
    capacity = buffer.capacity
    offset = jnp.cumsum(keep) - 1
    idx = jnp.where(keep, (buffer.pos + offset) % capacity, capacity)
    data = {k: buffer.data[k].at[idx].set(jnp.asarray(v, buffer.data[k].dtype), mode="drop")
            for k, v in transitions.items()}
    n = keep.sum().astype(jnp.int32)
    return replay.ReplayBuffer(data=data, size=jnp.minimum(buffer.size + n, capacity).astype(jnp.int32),
                               pos=((buffer.pos + n) % capacity).astype(jnp.int32))


def make_train(cfg: Config, env: ContextEnv):
    """Pure `init_carry(key, hp)`, `train_chunk(carry, hp)`, `evaluate(carry, key, hp)` for one population member
    (the runner jits and vmaps them over (key, hp)). `env`: a `ContextEnv` (its contexts are the curriculum)."""
    if not isinstance(env, ContextEnv) or getattr(env, "max_steps", None) is None:
        raise ValueError("rollin.make_train needs a ContextEnv around a time-limited env (e.g. "
                         f"rollin.maze_goals(envs.make(name), K)), got {type(env).__name__}.")
    n = cfg.num_envs
    venv = envs.make_vec(env, n)
    num_stages, contexts = env.num_stages, env.context_table()
    obs_size, action_size = env.observation_size, env.action_size
    actor = sac.actor_net(cfg, action_size)
    set_context = jax.vmap(env.set_context, in_axes=(0, None))

    def init_carry(key, hp):
        k_agent, k_env, k_rng = jax.random.split(key, 3)
        agent = sac.init_agent(k_agent, cfg, hp, obs_size, action_size)
        example = {"obs": jnp.zeros(obs_size), "action": jnp.zeros(action_size), "reward": jnp.zeros(()),
                   "next_obs": jnp.zeros(obs_size), "terminated": jnp.zeros((), bool),
                   "truncated": jnp.zeros((), bool)}
        zeros = jnp.zeros(n, jnp.int32)
        return Carry(agent=agent, rollin_actor=agent.actor_params, buffer=replay.init(cfg.buffer_capacity, example),
                     env_state=set_context(venv.reset(k_env), contexts[0]), rng=k_rng,
                     env_steps=jnp.zeros((), jnp.int32), num_updates=jnp.zeros((), jnp.int32),
                     stage=jnp.zeros((), jnp.int32), stats=StageStats.zeros(), rollin_left=zeros,
                     episode_stage=zeros, counts=jnp.full(n, cfg.start_steps == 0),
                     task_return=jnp.zeros(n, jnp.float32))

    def train_chunk(carry: Carry, hp: HParams):
        def learn(agent, buffer, key):
            k_sample, k_update = jax.random.split(key)
            batches = jax.vmap(lambda k: replay.sample(buffer, k, cfg.batch_size))(
                jax.random.split(k_sample, cfg.updates_per_step))
            return sac.update(agent, batches, k_update, hp, cfg)

        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                    jax.eval_shape(learn, carry.agent, carry.buffer, carry.rng)[1])

        def env_step(state, _):
            c, sums = state
            rng, k_random, k_policy, k_learn = jax.random.split(c.rng, 4)  # the stream of algos/sac.py
            k_rollin, k_length = jax.random.split(jax.random.fold_in(k_policy, 1))  # extra, so rollin=False
            obs = c.env_state.obs  # carries the current context           # leaves the others untouched
            starting = c.env_steps < cfg.start_steps
            random_action = jax.random.uniform(k_random, (n, action_size), minval=-1.0, maxval=1.0)
            action = sac.act(c.agent, obs, k_policy, False, cfg)
            if cfg.start_actions == "uniform":
                action = jnp.where(starting, random_action, action)
            rolling = c.rollin_left > 0  # (N,) phase flag: this step belongs to the roll-in
            if cfg.rollin:
                prev_obs = with_context(obs, contexts[jnp.maximum(c.stage - 1, 0)])
                dist = actor.apply(c.rollin_actor, prev_obs)
                prev_action = dist.mode() if cfg.rollin_deterministic else dist.sample(k_rollin)
                action = jnp.where(rolling[:, None], prev_action, action)
            env_state = venv.step(c.env_state, action)
            transitions = {"obs": obs, "action": action, "reward": env_state.reward,
                           "next_obs": env_state.info["next_obs"], "terminated": env_state.terminated,
                           "truncated": env_state.truncated}
            if cfg.store_rollin:
                buffer = replay.insert(c.buffer, transitions)
            else:
                buffer = insert_where(c.buffer, transitions, ~rolling)
            ready = ~starting & (buffer.size >= cfg.batch_size)
            agent, metrics = jax.lax.cond(ready, learn, lambda a, b, k: (a, zero_metrics), c.agent, buffer, k_learn)

            # The current task's episodes: rewards after the switch; an episode ended in roll-in does not count.
            done = env_state.done
            task_step = ~rolling
            task_return = c.task_return + jnp.where(task_step, env_state.reward, 0.0)
            finished = done & task_step
            success = env_state.info["episode_success"]
            counted = finished & c.counts & (c.episode_stage == c.stage)
            stats = record_episodes(c.stats, counted, success, hp.success_ema)
            advance = should_advance(stats, c.stage, num_stages, cfg.min_stage_episodes, hp.advance_threshold)
            stage = c.stage + advance.astype(jnp.int32)
            stats = jax.tree.map(lambda z, s: jnp.where(advance, z, s), StageStats.zeros(), stats)
            rollin_actor = jax.tree.map(lambda p, q: jnp.where(advance, p, q), agent.actor_params, c.rollin_actor)

            # New episodes draw their roll-in length (only from stage 1 on); running roll-ins count down.
            if cfg.rollin:
                h = sample_rollin_length(k_length, hp.beta, hp.rollin_gamma, (n,)) * (stage > 0)
            else:
                h = jnp.zeros(n, jnp.int32)
            rollin_left = jnp.where(done, h, jnp.maximum(c.rollin_left - 1, 0))
            switched = rolling & (rollin_left == 0) & ~done  # the task-k episode starts at the next step:
            info = {**env_state.info, "steps": jnp.where(switched, 0, env_state.info["steps"])}  # full time limit
            env_state = set_context(env_state.replace(info=info), contexts[stage])

            sums = {**{k: sums[k] + v for k, v in metrics.items()}, "updates": sums["updates"] + ready,
                    "rollin_steps": sums["rollin_steps"] + rolling.sum(),
                    "episode_return": sums["episode_return"] + jnp.sum(jnp.where(finished, task_return, 0.0)),
                    "episode_success": sums["episode_success"] + jnp.sum(jnp.where(finished, success, 0.0)),
                    "episode_count": sums["episode_count"] + finished.sum(),
                    "stage_advances": sums["stage_advances"] + advance}
            c = Carry(agent=agent, rollin_actor=rollin_actor, buffer=buffer, env_state=env_state, rng=rng,
                      env_steps=c.env_steps + n, num_updates=c.num_updates + ready, stage=stage, stats=stats,
                      rollin_left=rollin_left, episode_stage=jnp.where(done, stage, c.episode_stage),
                      counts=jnp.where(done, (h == 0) & (c.env_steps + n >= cfg.start_steps), c.counts),
                      task_return=jnp.where(done, 0.0, task_return))
            return (c, sums), None

        sums = {**zero_metrics, **{k: jnp.zeros(()) for k in ("updates", "rollin_steps", "episode_return",
                                                             "episode_success", "episode_count", "stage_advances")}}
        (carry, sums), _ = jax.lax.scan(env_step, (carry, sums), None, length=cfg.chunk_steps)
        metrics = {k: sums[k] / jnp.maximum(sums["updates"], 1.0) for k in zero_metrics}
        episodes = jnp.maximum(sums["episode_count"], 1.0)
        metrics.update(episode_return=sums["episode_return"] / episodes,
                       episode_success=sums["episode_success"] / episodes, episode_count=sums["episode_count"],
                       rollin_fraction=sums["rollin_steps"] / (n * cfg.chunk_steps),
                       stage=carry.stage.astype(jnp.float32), stage_success=carry.stats.success,
                       stage_episodes=carry.stats.episodes.astype(jnp.float32),
                       stage_advances=sums["stage_advances"], updates_in_chunk=sums["updates"],
                       env_steps=carry.env_steps, num_updates=carry.num_updates)
        return carry, metrics

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        k_final, k_stage = jax.random.split(key)
        final = evaluate_context(env, carry.agent, contexts[-1], k_final, cfg)
        current = evaluate_context(env, carry.agent, contexts[carry.stage], k_stage, cfg)
        return {"eval_return": final["return"], "eval_success": final["success"],
                "eval_stage_success": current["success"], "stage": carry.stage.astype(jnp.float32)}

    return init_carry, train_chunk, evaluate


def evaluate_context(env: ContextEnv, agent: sac.AgentState, context: jax.Array, key: jax.Array,
                     cfg: sac.Config) -> dict:
    """Mean return and success of `cfg.eval_episodes` deterministic episodes of task `context` from the env's
    start states (no roll-in, no auto-reset; success = `info["success"]` seen at least once)."""
    state = jax.vmap(env.reset)(jax.random.split(key, cfg.eval_episodes))
    state = jax.vmap(env.set_context, in_axes=(0, None))(state, context)

    def step(c, _):
        state, alive, ret, success = c
        state = jax.vmap(env.step)(state, sac.act(agent, state.obs, key, True, cfg))
        ret = ret + jnp.where(alive, state.reward, 0.0)
        success = success | (alive & (state.info["success"] > 0))
        return (state, alive & ~state.done, ret, success), None

    m = cfg.eval_episodes
    init = (state, jnp.ones(m, bool), jnp.zeros(m), jnp.zeros(m, bool))
    (_, _, ret, success), _ = jax.lax.scan(step, init, None, length=env.max_steps)
    return {"return": ret.mean(), "success": success.astype(jnp.float32).mean()}
