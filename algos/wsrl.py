"""WSRL: offline pretraining, a short warmup, then online fine-tuning that keeps NO offline data.

Paper: Zhou, Peng, Li, Levine, Kumar. "Efficient Online Reinforcement Learning Fine-Tuning Need Not Retain
Offline Data", ICLR 2025 (arXiv:2412.07762).

Three phases, each a pure function of the previous one's output:

  1. pretrain   Cal-QL (`algos/calql.py`) on the offline dataset D for `pretrain` gradient steps.
  2. handoff    the WHOLE agent (actor, critic ensemble, target critics, temperature, and all their Adam states)
                becomes the online SAC agent: `handoff(online_carry, pretrain_carry)`.
  3. online     SAC (`algos/sac.py`) with the paper's REDQ-style ensemble (10 LayerNorm critics, target = min of
                a random pair with the max-target backup, UTD 4, no entropy backup; actor on the ensemble min)
                into an EMPTY replay buffer. The first `warmup_steps`
                transitions are collected by the pretrained policy with no gradient steps ("warmup"); updates
                then sample the online buffer only: no offline transition ever enters it.

Why warmup: with offline data dropped, the first updates see only a handful of online transitions whose actions
the pessimistic Q-function has never been trained on; the TD backups from this tiny, narrow buffer make the
Q-values collapse ("unlearning") and the pretrained policy with them. A few thousand rollouts of the pretrained
policy "recalibrate" the Q-function on the online state distribution first. Log `q_mean` at the switch (the
experiment does) to see the dip without warmup.

Baselines in the same code path (flags of `experiments/wsrl.py`): `warmup_steps=0` (no warmup),
`retain_offline=True` (RLPD-style: every online minibatch is half offline, half online), `from_scratch=True` (no
pretraining: uniform-random actions for the first `warmup_steps` transitions, as plain SAC/RLPD do).

Checked against the reference code (zhouzypaul/wsrl: `experiments/configs/train_config.py:antmaze_wsrl`,
`wsrl_config.py`, `sac_config.py`, `agents/sac.py`, `agents/cql.py`, `networks/lagrange.py`, `finetune.py`). What
now matches it: the actor loss takes the MIN over all critics; policy and critics use LayerNorm; the TD target uses
the max-target backup (N = 10 policy samples at s'); target entropy -|A| (the reference's 0.0 means -|A|); Cal-QL
tunes its weight with a Lagrange multiplier (softplus, initialised to 1, target gap 0.8); no entropy backup.
Departures that remain, and why:
  * One `hidden_sizes` for actor and critics (reference AntMaze: critics 4x256, policy 2x256), a state-dependent
    log-std (reference: `std_parameterization="uniform"`, a state-independent one) and Xavier init everywhere
    (reference: final-layer kernel scale 1e-2). Kept for one agent shape across the collection.
  * The online phase keeps Cal-QL's agent and simply stops using the conservative term (the reference switches
    agent class and restores the checkpoint into a SAC agent: the same parameters).
  * UTD is counted per VECTORISED step: `updates_per_step` critic steps per step of `num_envs` envs, i.e.
    `updates_per_step / num_envs` per transition. The reference (one env) takes 4 critic steps of 256 per
    transition (its batch of 1024 split 4 ways). `PAPER_AGENT` has one env and 4 steps of 256; the CPU defaults of
    `experiments/wsrl.py` are smaller and state their per-transition UTD.
  * The target subset is drawn without replacement (the reference's `randint` can pick one critic twice).
  * Warmup is counted in transitions over all parallel envs and must be a multiple of `num_envs`; the reference
    pretrains for 1M steps with batch 256 (Cal-QL) and fine-tunes with batch 1024: flags here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import envs
from algos import calql, sac
from envs import datasets

# The agent of the reference's `antmaze_wsrl` config: 10 LayerNorm critics, target = min over a random pair with
# the max-target backup, no entropy backup, LayerNorm policy whose loss takes the MIN over all 10 critics, target
# entropy -|A|, UTD 4 per transition (one env; `updates_per_step` counts critic steps per VECTORISED step).
PAPER_AGENT = sac.Config(num_critics=10, num_target_critics=2, critic_layernorm=True, updates_per_step=4,
                         num_envs=1, backup_entropy=False, actor_q_reduction="min", actor_layernorm=True,
                         max_target_backup=True, target_entropy_per_action=-1.0,
                         batch_size=256)


@dataclasses.dataclass(frozen=True)
class Config:
    """Static WSRL settings. The agent's networks are shared by pretraining and fine-tuning (the handoff needs
    identical shapes)."""

    agent: sac.Config = PAPER_AGENT
    """The SAC agent: networks, ensemble, UTD, envs and chunking of the online phase."""
    cql: calql.Config = calql.Config(lagrange=True)
    """Cal-QL pretraining options (the conservative term; the agent is `agent` above). The reference tunes the
    CQL weight with a Lagrange multiplier on AntMaze (target gap 0.8, `HParams.target_action_gap`)."""
    warmup_steps: int = 5000
    """Online transitions collected by the pretrained policy before the first gradient step (0 = no warmup)."""
    retain_offline: bool = False
    """Baseline: keep the offline data and sample every online minibatch half offline, half online (RLPD)."""
    from_scratch: bool = False
    """Baseline: skip pretraining; the warmup transitions then use uniform-random actions."""

    def __post_init__(self):
        if self.warmup_steps < 0 or self.warmup_steps % self.agent.num_envs:
            raise ValueError(f"warmup_steps must be a non-negative multiple of agent.num_envs "
                             f"({self.agent.num_envs}) so that warmup collects exactly that many transitions; "
                             f"got {self.warmup_steps}.")
        if self.retain_offline and self.agent.batch_size % 2:
            raise ValueError(f"retain_offline samples half offline, half online: agent.batch_size must be even, "
                             f"got {self.agent.batch_size}.")

    @property
    def online(self) -> sac.Config:
        return dataclasses.replace(self.agent, start_steps=self.warmup_steps,
                                   start_actions="uniform" if self.from_scratch else "policy")


HParams = calql.HParams  # one set of sweepable scalars for both phases


def offline_transitions(data: dict[str, np.ndarray], discount: float, timeout_tail: str = "repeat_last") -> dict:
    """D4RL arrays -> the transition dict both phases use, with the Monte-Carlo returns Cal-QL needs.

    MC returns are linear in the reward transform r' = scale * r + bias, so both parts are stored and combined on
    device (`mc_return(batch, hp)`): reward scale and bias stay sweepable; the discount is fixed here.
    """
    mc = lambda r: datasets.monte_carlo_returns(r, data["terminals"], data["timeouts"], discount,
                                                timeout_tail=timeout_tail)
    return {"obs": data["observations"], "action": data["actions"], "reward": data["rewards"],
            "next_obs": data["next_observations"], "terminated": data["terminals"].astype(bool),
            "truncated": data["timeouts"].astype(bool), "mc_return_raw": mc(data["rewards"]),
            "mc_return_unit": mc(np.ones_like(data["rewards"]))}


ONLINE_KEYS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


def make(cfg: Config, env: envs.Env):
    """The three phases as pure functions of one population member.

    Returns `pretrain = (init_carry, train_chunk(carry, hp, dataset), evaluate)`, `online = (init_carry,
    train_chunk(carry, hp[, prior]), evaluate)` and `handoff(online_carry, pretrain_carry) -> online_carry`.
    """
    pretrain = calql.make_pretrain(cfg.cql, cfg.agent, env)
    online_init, online_chunk, online_eval = sac.make_train(cfg.online, env)

    def handoff(online_carry: sac.Carry, pretrain_carry: calql.Carry) -> sac.Carry:
        """Online SAC starts from the whole pretrained agent (params, targets, temperature, optimiser states)
        and an EMPTY buffer."""
        return online_carry.replace(agent=pretrain_carry.agent)

    return pretrain, (online_init, online_chunk, online_eval), handoff

