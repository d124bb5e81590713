"""ExPLORe, the optimistic relabeler: reward-free prior data, labelled online, trained RLPD-style.

Paper: Li, Zhang, Ghosh, Zhang, Levine. "Accelerating Exploration with Unlabeled Prior Data", NeurIPS 2023.
Reference code: facebookresearch/ExPLORe (`train_finetuning.py`, `rlpd/agents/{rm,rnd}.py`, `run_antmaze.sh`).

The prior data D_prior = {(s, a, s')} has no rewards. Online, three small models are learned from the agent's OWN
transitions only, and the prior half of every RLPD minibatch is labelled with them inside the jitted update:

  reward model     r̂_phi(s, a)       regression:  L = mean_online (r̂(s, a) - r)^2
  termination      c_psi(s')          logistic:    L = mean_online BCE(c(s'), terminated);  p_end = sigmoid(c)
  RND              b(s, a) = mean_k (f_theta(s, a)_k - f_rand(s, a)_k)^2  over K = `rnd_features` outputs,
                   f_rand a fixed random MLP, f_theta trained (L = b on those rows) on the NEWEST online
                   transitions, so b is low where the agent has been and high where it has not.

  prior label      r~ = r̂(s, a) + beta b(s, a)     ("optimistic", the paper's method)
                   r~ = r̂(s, a)                    ("predicted": the reference's "naive" baseline)
                   r~ = r_min + beta b(s, a)        ("min": the dataset-minimum reward plus the bonus; SUPE's choice)
                   r~ = 0, p_end = 0                ("zero": prior data as-is, reward 0 and never terminal)
                   terminated~ = p_end(s') in [0, 1], a SOFT label (all but "zero")
  online label     the true reward r (plus beta b(s, a) with `online_bonus`, the "online + RND" baseline)

and the critic target is SAC's (`algos/sac.py`) with r~ shifted by `hp.reward_bias` and the soft termination:

  y = r~ + reward_bias + gamma_row (1 - terminated~) min_{j in M} Q̄_j(s', a'),
  gamma_row = gamma for ordinary transitions; gamma^(k / H) for a skill transition of k <= H low-level steps when
  `skill_horizon` = H > 1 (SUPE's semi-MDP: gamma = hp.discount is the discount of one full skill).

Task convention (the default of `experiments/explore.py` and `experiments/supe.py`): the reference's antmaze
convention, step reward r - 1 (`hp.reward_bias = -1`: -1 per step, 0 on the step that reaches the goal) and the
episode TERMINATES at the goal. D4RL's antmaze-v2 envs are registered with eval=True, and GoalReachingEnv.step
then returns done=True within 0.5 of the goal (D4RL `locomotion/goal_reaching_env.py` l.45-47, `__init__.py`);
ExPLORe stores mask 0 for such a step (`train_finetuning.py` l.348-353) and subtracts 1 from every reward
(l.374, 393, 440). Terminating is then the best outcome (value 0) while any path that keeps wandering pays
-1 + beta b < 0 per step as long as beta b < 1: the goal is never a loss. With a 0/1 reward (reward_bias 0) and a
positive bonus, ending the episode forfeits the bonus stream, so a Q-maximiser can prefer to wander.

The agent is `algos/sac.py` with RLPD's choices (critic ensemble, LayerNorm, UTD G, symmetric sampling: every
minibatch is exactly half prior, half online). One vectorised env step = insert the transitions, G critic steps on
relabelled minibatches (each minibatch's online half first trains the reward model and termination classifier:
`labeler_updates_per_step` = L <= G steps), one RND step on the newest transitions, one actor/temperature step.
Without prior data the same code is online SAC (with or without the RND bonus): the baselines differ in flags only.

What the reference does and where this departs from it (checked against the files named):
  * RND (`rlpd/agents/rnd.py`): bonus = coeff * MEAN over 256 features of the squared difference (l.106) of two
    `StateActionFeature` nets, MLP (256, 256, 256) + a 256-wide linear head (`configs/rnd_config.py`, coeff 1
    for ExPLORe; 8 in SUPE's config). Not normalised by any running statistic. Same here (defaults
    `rnd_hidden_sizes` (256, 256, 256), `rnd_features` 256, MEAN). The predictor takes one Adam step on the single
    newest transition per env step (`train_finetuning.py` l.454-464); here one step on the newest `num_envs`
    transitions per vectorised step.
  * Reward model (`rlpd/agents/rm.py`): MLP (256, 256, 256) on (s, a), trained from 2 x start_training on
    online rows: `rm.update(batch of 256 * utd, utd)` = utd (20) Adam steps of 256 rows per env step (l.106-120,
    `train_finetuning.py` l.437-443). Here L = `labeler_updates_per_step` steps (default G, one per critic
    minibatch) on each minibatch's B/2 online rows per vectorised step, starting with the agent's updates.
  * Termination: the reference trains a second (s, a) net `m_net` by BCE on the online MASKS (1 - terminal) and
    uses sigmoid(m_net) as a soft continuation in the target of prior rows (`rm.py` l.93-99, 141-146;
    `train_finetuning.py` l.397-410, for both the pred and the min label). Here the classifier reads s' (a
    terminal is a property of the state reached; in the point maze a function of s' alone) and its probability
    is used the same way, soft, never thresholded. The "zero" label (not in the reference) keeps prior rows
    non-terminal.
  * Target pessimism: the antmaze runs use `--config.num_min_qs=1` (`run_antmaze.sh`; SUPE's README too): the
    target is ONE randomly chosen target critic of the 10 (`sac_learner.py` l.232-244). Default here:
    `num_target_critics=1`. The actor uses the ensemble mean (l.180), as `sac.Config.actor_q_reduction="mean"`.
    `backup_entropy=False` as in `run_antmaze.sh`.
  * Baselines: the reference's "naive" (`run_antmaze.sh` l.8) is `offline_relabel_type=pred` without RND, i.e.
    `prior_label="predicted"` here; `zero` (reward 0, never terminal) is this repo's extra baseline.
  * No ICVF representation for the reward model and RND (plain MLPs on (s, a); ICVF is the pixel variant).
  * Early exploration can take actions from any `start_action(obs, key)` (SUPE samples skills from its prior)
    instead of uniform noise.
"""

from __future__ import annotations

import dataclasses

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from algos import replay, sac
from nets import MLP

PRIOR_LABELS = ("optimistic", "predicted", "min", "zero")


@dataclasses.dataclass(frozen=True)
class Config:
    """Static ExPLORe settings; the agent (networks, ensemble, UTD, envs, chunking) is a `sac.Config`."""

    agent: sac.Config = sac.Config(num_critics=10, num_target_critics=1, critic_layernorm=True,
                                   updates_per_step=20, num_envs=1, backup_entropy=False)
    """The RLPD agent (the reference on antmaze: 10 LayerNorm critics, target = 1 random critic, UTD 20, one env,
    no entropy in the backup)."""
    prior_label: str = "optimistic"
    """How prior transitions are labelled: optimistic (r̂ + beta RND), predicted (r̂), min (r_min + beta RND) or
    zero (reward 0, never terminal)."""
    online_bonus: bool = False
    """Add beta * RND to the rewards of online transitions (the online + RND baseline; SUPE on antmaze)."""
    labeler_hidden_sizes: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the reward model and the termination classifier (the reference: 256 x 3)."""
    rnd_hidden_sizes: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of both RND networks (the reference: 256 x 3)."""
    rnd_features: int = 256
    """Output width K of the RND networks; the bonus is the MEAN over the K squared differences."""
    labeler_updates_per_step: int | None = None
    """Reward-model/termination Adam steps per vectorised env step, each on the online half of one of the G critic
    minibatches (1 <= L <= G); None = G (the reference: utd steps per env step)."""
    skill_horizon: int = 1
    """H > 1: transitions are skills of k <= H low-level steps (the env reports `env_steps` = k) and bootstrap
    with hp.discount^(k / H) (SUPE sets it); 1 = an ordinary MDP."""

    def __post_init__(self):
        for name in ("labeler_hidden_sizes", "rnd_hidden_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.prior_label not in PRIOR_LABELS:
            raise ValueError(f"Config.prior_label must be one of {PRIOR_LABELS}, got {self.prior_label!r}.")
        for name in ("labeler_hidden_sizes", "rnd_hidden_sizes"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ValueError(f"Config.{name} must be non-empty positive widths, got {getattr(self, name)}.")
        if self.rnd_features < 1 or self.skill_horizon < 1:
            raise ValueError(f"Config.rnd_features and Config.skill_horizon must be positive, got "
                             f"{self.rnd_features} and {self.skill_horizon}.")
        if self.labeler_updates_per_step is not None and not \
                1 <= self.labeler_updates_per_step <= self.agent.updates_per_step:
            raise ValueError(f"Config.labeler_updates_per_step must be in [1, agent.updates_per_step = "
                             f"{self.agent.updates_per_step}] (one per critic minibatch), got "
                             f"{self.labeler_updates_per_step}.")
        if self.agent.batch_size % 2:
            raise ValueError(f"agent.batch_size must be even (half prior, half online), got "
                             f"{self.agent.batch_size}.")

    @property
    def labeler_steps(self) -> int:
        return self.agent.updates_per_step if self.labeler_updates_per_step is None else \
            self.labeler_updates_per_step


@struct.dataclass
class HParams(sac.HParams):
    rnd_coef: float = 1.0  # beta
    min_reward: float = 0.0  # r_min of the "min" label (before sac's reward_bias)
    labeler_lr: float = 3e-4  # reward model, termination classifier and RND predictor

    RANGES = {"rnd_coef": "[0, inf)", "min_reward": "(-inf, inf)", "labeler_lr": "[0, inf)"}  # SAC's are inherited


@struct.dataclass
class Labeler:
    reward_params: dict
    reward_opt_state: optax.OptState
    termination_params: dict
    termination_opt_state: optax.OptState
    rnd_target_params: dict  # fixed
    rnd_params: dict
    rnd_opt_state: optax.OptState


def _scalar_net(cfg: Config) -> MLP:
    return MLP(cfg.labeler_hidden_sizes, output_size=1)


def _rnd_net(cfg: Config) -> MLP:
    return MLP(cfg.rnd_hidden_sizes, output_size=cfg.rnd_features)


def init_labeler(key: jax.Array, cfg: Config, observation_size: int, action_size: int) -> Labeler:
    k_reward, k_term, k_target, k_rnd = jax.random.split(key, 4)
    sa, s = jnp.zeros((1, observation_size + action_size)), jnp.zeros((1, observation_size))
    reward, term = _scalar_net(cfg).init(k_reward, sa), _scalar_net(cfg).init(k_term, s)
    target, rnd = _rnd_net(cfg).init(k_target, sa), _rnd_net(cfg).init(k_rnd, sa)
    return Labeler(reward_params=reward, reward_opt_state=sac.adam.init(reward), termination_params=term,
                   termination_opt_state=sac.adam.init(term), rnd_target_params=target, rnd_params=rnd,
                   rnd_opt_state=sac.adam.init(rnd))


# ---- the three labeller models -----------------------------------------------------------------------------

def rnd_bonus(labeler: Labeler, obs: jax.Array, action: jax.Array, cfg: Config, params=None) -> jax.Array:
    """b(s, a) = mean_k (f_theta(s, a)_k - f_rand(s, a)_k)^2 over the K features (the reference's scale: O(1) at
    initialisation, whatever K), shape (batch,)."""
    sa = jnp.concatenate([obs, action], -1)
    target = jax.lax.stop_gradient(_rnd_net(cfg).apply(labeler.rnd_target_params, sa))
    predicted = _rnd_net(cfg).apply(labeler.rnd_params if params is None else params, sa)
    return jnp.mean((predicted - target) ** 2, -1)


def predicted_reward(labeler: Labeler, obs, action, cfg: Config, params=None) -> jax.Array:
    sa = jnp.concatenate([obs, action], -1)
    return _scalar_net(cfg).apply(labeler.reward_params if params is None else params, sa)[..., 0]


def termination_logit(labeler: Labeler, next_obs, cfg: Config, params=None) -> jax.Array:
    return _scalar_net(cfg).apply(labeler.termination_params if params is None else params, next_obs)[..., 0]


def _adam(labeler: Labeler, name: str, loss_fn, hp: HParams) -> tuple[Labeler, jax.Array]:
    params, opt_state = getattr(labeler, f"{name}_params"), getattr(labeler, f"{name}_opt_state")
    loss, grads = jax.value_and_grad(loss_fn)(params)
    params, opt_state = sac.adam_step(params, opt_state, grads, hp.labeler_lr)
    return labeler.replace(**{f"{name}_params": params, f"{name}_opt_state": opt_state}), loss


def update_reward_and_termination(labeler: Labeler, online: dict, hp: HParams, cfg: Config):
    """One Adam step on the reward model and one on the termination classifier, on the online rows `online`."""
    def reward_loss(params):
        return jnp.mean((predicted_reward(labeler, online["obs"], online["action"], cfg, params)
                         - online["reward"]) ** 2)

    def termination_loss(params):
        logits = termination_logit(labeler, online["next_obs"], cfg, params)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, online["terminated"].astype(jnp.float32)))

    labeler, r_loss = _adam(labeler, "reward", reward_loss, hp)
    labeler, t_loss = _adam(labeler, "termination", termination_loss, hp)
    return labeler, {"reward_model_loss": r_loss, "termination_model_loss": t_loss}


def update_rnd(labeler: Labeler, newest: dict, hp: HParams, cfg: Config):
    """One Adam step of the RND predictor on the newest online transitions `newest` (loss = their mean bonus)."""
    labeler, loss = _adam(labeler, "rnd", lambda p: jnp.mean(rnd_bonus(labeler, newest["obs"], newest["action"],
                                                                       cfg, p)), hp)
    return labeler, {"rnd_model_loss": loss}


def update_labeler(labeler: Labeler, online: dict, newest: dict, hp: HParams, cfg: Config):
    """One Adam step on each model: reward and termination on `online`, RND on `newest`."""
    labeler, metrics = update_reward_and_termination(labeler, online, hp, cfg)
    labeler, rnd_metrics = update_rnd(labeler, newest, hp, cfg)
    return labeler, {**metrics, **rnd_metrics}


def relabel(labeler: Labeler, batch: dict, is_prior: jax.Array, hp: HParams, cfg: Config) -> tuple[dict, dict]:
    """The minibatch with the prior half labelled (and, with `online_bonus`, the bonus added online).

    `is_prior` (bool, (B,)) marks the prior rows; online rows keep their true reward and termination. The returned
    `terminated` is float32: sac's target multiplies by (1 - terminated), so a prior row's soft p_end enters as a
    continuation weight. With `skill_horizon` H > 1 a skill of k steps (`batch["env_steps"]`) also gets
    `discount_exponent` = k / H, so sac's target bootstraps with gamma^(k / H)."""
    bonus = jax.lax.stop_gradient(rnd_bonus(labeler, batch["obs"], batch["action"], cfg))
    if cfg.prior_label in ("optimistic", "predicted"):
        prior_reward = predicted_reward(labeler, batch["obs"], batch["action"], cfg)
        prior_reward = prior_reward + (hp.rnd_coef * bonus if cfg.prior_label == "optimistic" else 0.0)
    elif cfg.prior_label == "min":
        prior_reward = hp.min_reward + hp.rnd_coef * bonus
    else:
        prior_reward = jnp.zeros_like(bonus)
    prior_end = jax.nn.sigmoid(termination_logit(labeler, batch["next_obs"], cfg)) if cfg.prior_label != "zero" \
        else jnp.zeros_like(bonus)
    online_reward = batch["reward"] + (hp.rnd_coef * bonus if cfg.online_bonus else 0.0)
    reward = jax.lax.stop_gradient(jnp.where(is_prior, prior_reward, online_reward))
    ended = jax.lax.stop_gradient(jnp.where(is_prior, prior_end, batch["terminated"].astype(jnp.float32)))
    relabelled = {**batch, "reward": reward, "terminated": ended}
    if cfg.skill_horizon > 1:  # a skill of k low-level steps bootstraps with gamma^(k / H) (sac.bootstrap_discount)
        relabelled["discount_exponent"] = batch["env_steps"].astype(jnp.float32) / cfg.skill_horizon
    n_prior, n_online = jnp.maximum(is_prior.sum(), 1), jnp.maximum((~is_prior).sum(), 1)
    prior_mean = lambda x: jnp.sum(jnp.where(is_prior, x, 0.0)) / n_prior
    online_mean = lambda x: jnp.sum(jnp.where(is_prior, 0.0, x)) / n_online
    metrics = {"prior_reward": prior_mean(reward), "prior_terminated": prior_mean(ended),
               "rnd_bonus_prior": prior_mean(bonus), "rnd_bonus_online": online_mean(bonus),
               "online_reward": online_mean(reward)}
    return relabelled, metrics


def unlabeled_prior(observations, actions, next_observations) -> dict:
    """Reward-free prior data in the buffer's layout (reward 0 and no ends: placeholders the labeller replaces;
    the prior's `truncated` is never read)."""
    n = len(observations)
    return {"obs": np.asarray(observations, np.float32), "action": np.asarray(actions, np.float32),
            "next_obs": np.asarray(next_observations, np.float32), "reward": np.zeros(n, np.float32),
            "terminated": np.zeros(n, bool), "truncated": np.zeros(n, bool)}


# ---- training loop -----------------------------------------------------------------------------------------

@struct.dataclass
class Carry:
    agent: sac.AgentState
    labeler: Labeler
    buffer: replay.ReplayBuffer  # online transitions only
    env_state: envs.State
    rng: jax.Array
    env_steps: jax.Array  # int32: environment steps so far (all envs; low-level steps for SUPE's skill env)
    num_updates: jax.Array  # int32
    first_success_step: jax.Array  # int32: env_steps when the goal was first reached online, -1 until then


def make_train(cfg: Config, env: envs.Env, start_action=None):
    """Pure `init_carry(key, hp)`, `train_chunk(carry, hp, prior=None)`, `evaluate(carry, key, hp)`.

    `prior`: the shared reward-free prior data (`unlabeled_prior(...)`, not vmapped); None = online only.
    `start_action(obs, key) -> actions` replaces uniform-random actions during `agent.start_steps`.
    Environment steps are counted from `info["env_steps"]` when the env reports it (a skill env running H
    low-level steps per action), else one per env per step; `start_steps` counts the same env steps. With
    `cfg.skill_horizon` > 1 the env must report `env_steps` (k of each transition, stored in the buffer).
    """
    a = cfg.agent
    skills = cfg.skill_horizon > 1
    venv = envs.make_vec(env, a.num_envs)
    obs_size, action_size = env.observation_size, env.action_size
    if skills and "env_steps" not in jax.eval_shape(env.reset, jax.random.PRNGKey(0)).info:
        raise ValueError(f"Config.skill_horizon={cfg.skill_horizon} needs an env that reports info['env_steps'] "
                         f"(the low-level steps of each transition, e.g. supe.SkillEnv); {env!r:.80} does not.")
    if start_action is None:
        start_action = lambda obs, key: jax.random.uniform(key, obs.shape[:-1] + (action_size,), minval=-1.0,
                                                           maxval=1.0)

    def init_carry(key: jax.Array, hp: HParams) -> Carry:
        k_agent, k_labeler, k_env, k_rng = jax.random.split(key, 4)
        example = {"obs": jnp.zeros(obs_size), "action": jnp.zeros(action_size), "reward": jnp.zeros(()),
                   "next_obs": jnp.zeros(obs_size), "terminated": jnp.zeros((), bool),
                   "truncated": jnp.zeros((), bool)}
        if skills:
            example["env_steps"] = jnp.zeros((), jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        return Carry(agent=sac.init_agent(k_agent, a, hp, obs_size, action_size),
                     labeler=init_labeler(k_labeler, cfg, obs_size, action_size),
                     buffer=replay.init(a.buffer_capacity, example), env_state=venv.reset(k_env), rng=k_rng,
                     env_steps=zero, num_updates=zero, first_success_step=zero - 1)

    def train_chunk(carry: Carry, hp: HParams, prior: dict | None = None) -> tuple[Carry, dict]:
        if prior is not None and skills:  # prior segments are whole skills: k = H
            prior = {**prior, "env_steps": jnp.full(prior["reward"].shape, cfg.skill_horizon, jnp.int32)}
        prior_buffer = None if prior is None else replay.from_arrays(prior)

        def learn(agent, labeler, buffer, newest, key):
            k_sample, k_update = jax.random.split(key)
            keys = jax.random.split(k_sample, a.updates_per_step)
            if prior_buffer is None:
                batches = jax.vmap(lambda k: replay.sample(buffer, k, a.batch_size))(keys)
                is_prior = jnp.zeros(a.batch_size, bool)
            else:
                batches, is_prior = jax.vmap(lambda k: replay.sample_symmetric(prior_buffer, buffer, k,
                                                                               a.batch_size))(keys)
                is_prior = is_prior[0]
            half = 0 if prior_buffer is None else a.batch_size // 2  # symmetric sampling: online rows last
            online = jax.tree.map(lambda x: x[:cfg.labeler_steps, half:], batches)  # online halves, true rewards
            labeler, labeler_metrics = jax.lax.scan(
                lambda lb, rows: update_reward_and_termination(lb, rows, hp, cfg), labeler, online)
            labeler, rnd_metrics = update_rnd(labeler, newest, hp, cfg)
            labeler_metrics = {**jax.tree.map(jnp.mean, labeler_metrics), **rnd_metrics}
            batches, label_metrics = jax.vmap(lambda b: relabel(labeler, b, is_prior, hp, cfg))(batches)
            agent, metrics = sac.update(agent, batches, k_update, hp, a)
            return agent, labeler, {**metrics, **labeler_metrics, **jax.tree.map(jnp.mean, label_metrics)}

        example_newest = {"obs": jnp.zeros((a.num_envs, obs_size)), "action": jnp.zeros((a.num_envs, action_size))}
        shapes = jax.eval_shape(learn, carry.agent, carry.labeler, carry.buffer, example_newest, carry.rng)[2]
        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def env_step(state, _):
            carry, sums = state
            rng, k_start, k_policy, k_learn = jax.random.split(carry.rng, 4)
            obs = carry.env_state.obs
            starting = carry.env_steps < a.start_steps
            action = jnp.where(starting, start_action(obs, k_start), sac.act(carry.agent, obs, k_policy, False, a))
            env_state = venv.step(carry.env_state, action)
            final = env_state.info["final_info"]  # the info of this step, before any auto-reset
            buffer = replay.insert(carry.buffer, {
                "obs": obs, "action": action, "reward": env_state.reward, "next_obs": env_state.info["next_obs"],
                "terminated": env_state.terminated, "truncated": env_state.truncated,
                **({"env_steps": final["env_steps"].astype(jnp.int32)} if skills else {})})
            ready = ~starting & (buffer.size >= a.batch_size)
            agent, labeler, metrics = jax.lax.cond(
                ready, learn, lambda ag, lb, *_: (ag, lb, zero_metrics), carry.agent, carry.labeler, buffer,
                {"obs": obs, "action": action}, k_learn)
            steps = carry.env_steps + (jnp.sum(final["env_steps"]) if "env_steps" in final else a.num_envs)
            reached = jnp.any(final["success"] > 0)
            first = jnp.where((carry.first_success_step < 0) & reached, steps, carry.first_success_step)
            done = env_state.info["episode_done"]
            sums = {**{k: sums[k] + v for k, v in metrics.items()}, "updates": sums["updates"] + ready,
                    "episode_return": sums["episode_return"] + jnp.sum(done * env_state.info["episode_return"]),
                    "episode_success": sums["episode_success"] + jnp.sum(done * env_state.info["episode_success"]),
                    "episode_count": sums["episode_count"] + jnp.sum(done)}
            carry = Carry(agent=agent, labeler=labeler, buffer=buffer, env_state=env_state, rng=rng,
                          env_steps=steps.astype(jnp.int32), num_updates=carry.num_updates + ready,
                          first_success_step=first.astype(jnp.int32))
            return (carry, sums), None

        sums = {**zero_metrics, **{k: jnp.zeros(()) for k in
                                   ("updates", "episode_return", "episode_success", "episode_count")}}
        (carry, sums), _ = jax.lax.scan(env_step, (carry, sums), None, length=a.chunk_steps)
        metrics = {k: sums[k] / jnp.maximum(sums["updates"], 1.0) for k in zero_metrics}
        episodes = jnp.maximum(sums["episode_count"], 1.0)
        metrics.update(episode_return=sums["episode_return"] / episodes,
                       episode_success=sums["episode_success"] / episodes, episode_count=sums["episode_count"],
                       env_steps=carry.env_steps, num_updates=carry.num_updates,
                       first_success_step=carry.first_success_step)
        return carry, metrics

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        return sac.evaluate_policy(env, carry.agent, key, a)

    return init_carry, train_chunk, evaluate
