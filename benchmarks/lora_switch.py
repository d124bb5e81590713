"""LoRA-Switch against the backbone and layer-wise MoE-LoRA: decode-step latency, and held-out quality.

    .venv/bin/python benchmarks/lora_switch.py --out runs/lora-switch            # the RESULTS.md figures
    .venv/bin/python benchmarks/lora_switch.py --sizes policy --batches 1 --rounds 2 --skip quality   # a quick look

On a GPU the same command measures there (JAX takes the first device).

Latency (Kong et al.'s claim: layer-wise MoE-LoRA decodes ~2.5x slower than the backbone, LoRA-Switch cuts the
overhead by >2.4x). One decode step = one jitted call with a KV cache in the carry (donated), for
- "policy": the generalist policy (nets/transformer.py) at Octo-small's trunk (12 layers, width 384, 6 heads,
  window 2; one step = 2 proprio tokens + 1 readout, so 3 tokens per batch row), head included;
- "llm": the same trunk as an LLM-like decoder (12 layers, width 1024, 16 heads, 1 token per step, a 128-slot
  cache; no vocabulary embedding or LM head: a random hidden vector goes in, the final LayerNorm comes out).
Variants at the same sizes: backbone (no adapter), layer-wise MoE-LoRA (a router in every projection, all 8
experts mixed), LoRA-Switch unmerged (gathering each token's 2 experts), merged, and unmerged with dense dispatch
(all 8 experts' adapters times the mostly-zero gates: no gather), 8 experts, rank 16, top-2, one router.
Parameters are random (numpy; B not zero), the backbone's arrays shared by the variants. Rounds are interleaved
(the variants' order rotates each round); a measurement is `reps` steps, reps chosen so it lasts ~`--target-s`.
Reported: median ms per step over rounds, the median over rounds of the per-round ratio to the backbone, compile
wall and CPU seconds, parameter counts (backbone, adapter).

Quality (the paper's other claim: token-wise routing matches layer-wise dynamic adapters). A multi-task toy:
observation x ~ U[-1, 1]^4 in two proprio tokens, task k, action 0.8 tanh(x M_k) with a random M_k per task, so
tasks map the same x to conflicting actions. A backbone (2 layers, width `--width` 32, 2 heads, window 2, two
timesteps per sample) is pretrained in full on tasks 0-3, then frozen; adapters and head are fine-tuned
(`make_optimizer("adapters", ...)`, Adam 3e-3, batch `--batch`) on 4 new tasks (ids 4-7, whose task embeddings
stay untrained and frozen). With `--scene` each observation also carries a "scene" token c_k + noise that
identifies the task, which gives a token-wise router something to route on. Compared at equal adapter parameters
(E=4 experts of rank 4, top-2, vs one LoRA of rank 16; the layer-wise variant's routers come on top), plus
head-only fine-tuning as the floor. LoRA-Switch trains through its unmerged path with dense dispatch (the same
function as gathering, faster to differentiate on a CPU). Held-out MSE on fresh samples of the new tasks, `--seeds`
seeds (problem, initialisation and minibatches all vary) in one vmapped population per variant: IQM [95%
stratified-bootstrap CI] and mean ± std.

Budget: the defaults are sized for ~10 minutes on a 2-core CPU shared with other jobs; most of it is compiling
(19 decode programs of 12 unrolled layers, 5 training programs). The merged LLM step at batch 16 is skipped by
default (`--skip-cells`): it merges 16 per-token weight sets per projection, ~16x the batch-1 merged step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import machine, stats  # noqa: E402
from nets.lora_switch import AdapterConfig, is_adapter_path, shared_lora_like  # noqa: E402
from nets.transformer import (OBS, PRESETS, GeneralistPolicy, KVCache, PolicyConfig, Transformer,  # noqa: E402
                              TransformerConfig, action_loss, attention_mask, make_optimizer, policy_loss,
                              time_bias_index, write_slots)

LLM = TransformerConfig(num_layers=12, width=1024, num_heads=16, window=128)


def latency_variants(experts=8, rank=16, top_k=2) -> dict[str, AdapterConfig]:
    switch = dict(kind="switch", num_experts=experts, rank=rank, alpha=2.0 * rank, top_k=top_k)
    return {"backbone": AdapterConfig(),
            "moe_lora": AdapterConfig(kind="moe_lora", num_experts=experts, rank=rank, alpha=2.0 * rank),
            "switch_unmerged": AdapterConfig(**switch), "switch_merged": AdapterConfig(**switch, merged=True),
            "switch_dense": AdapterConfig(**switch, dense_dispatch=True)}


class SharedRandom:
    """Random parameters from shapes: the same array for the same path and shape across variants."""

    def __init__(self, seed=0):
        self.rng, self.arrays = np.random.default_rng(seed), {}

    def __call__(self, shapes):
        def fill(path, leaf):
            key = (jax.tree_util.keystr(path), leaf.shape)
            if key not in self.arrays:
                scale = 1.0 / np.sqrt(leaf.shape[-2]) if leaf.ndim >= 2 else 0.02
                value = self.rng.standard_normal(leaf.shape, dtype=np.float32) * scale
                if getattr(path[-1], "key", "") == "scale":
                    value = np.ones(leaf.shape, np.float32)
                self.arrays[key] = jnp.asarray(value)
            return self.arrays[key]
        return jax.tree_util.tree_map_with_path(fill, shapes)


def count(variables) -> tuple[int, int]:
    """(backbone-and-head, adapter) parameter counts (the "params" collection only)."""
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    adapter = sum(x.size for p, x in leaves if is_adapter_path(tuple(getattr(k, "key", "") for k in p)))
    return sum(x.size for _, x in leaves) - adapter, adapter


def policy_decoder(adapter: AdapterConfig, batch: int, random: SharedRandom):
    config = PolicyConfig(transformer=PRESETS["octo-small"], adapter=adapter, observations=(("proprio", 2),),
                          num_tasks=8, action_dim=7, horizon=4)
    model = GeneralistPolicy(config)
    obs, task = {"proprio": jnp.ones((batch, 1, 16))}, jnp.zeros((batch,), jnp.int32)
    variables = random(jax.eval_shape(model.init, jax.random.PRNGKey(0), obs, task))
    # the cache's contents do not change the cost: zeros of start()'s shapes (saves compiling start)
    shapes = jax.eval_shape(lambda v, t: model.apply(v, t, method=GeneralistPolicy.start), variables, task)
    cache = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    step = jax.jit(lambda v, c, o: model.apply(v, c, o, method=GeneralistPolicy.step), donate_argnums=1)
    return step, variables, cache, {"proprio": jnp.ones((batch, 16))}


def llm_decoder(adapter: AdapterConfig, batch: int, random: SharedRandom):
    trunk, slots, width = Transformer(LLM, adapter), LLM.window, LLM.width
    heads, head_dim = LLM.num_heads, LLM.width // LLM.num_heads
    x = jnp.ones((batch, 1, width))
    one = jnp.zeros((batch, 1, 1), jnp.int32)
    variables = random(jax.eval_shape(trunk.init, jax.random.PRNGKey(0), x, jnp.ones((batch, 1, 1), bool), one))
    kv = lambda: tuple(jnp.zeros((batch, slots, heads, head_dim)) for _ in range(LLM.num_layers))  # distinct
    cache = KVCache(keys=kv(), values=kv(),  # buffers, as donation needs
                    time=jnp.zeros((batch, slots), jnp.int32), kind=jnp.full((batch, slots), OBS, jnp.int32),
                    valid=jnp.zeros((batch, slots), bool), step=jnp.zeros((batch,), jnp.int32))

    def step(v, cache: KVCache, x):
        slot, q_time, q_kind = cache.step % slots, cache.step[:, None], jnp.full((x.shape[0], 1), OBS)
        k_time = write_slots(cache.time, q_time, slot)
        k_valid = write_slots(cache.valid, jnp.ones_like(q_time, bool), slot)
        mask = attention_mask(q_time, q_kind, k_time, cache.kind, k_valid, slots)
        out, new_kv = trunk.apply(v, x, mask, time_bias_index(q_time, k_time, cache.kind, slots),
                                  list(zip(cache.keys, cache.values)), slot)
        return cache.replace(keys=tuple(k for k, _ in new_kv), values=tuple(v for _, v in new_kv), time=k_time,
                             valid=k_valid, step=cache.step + 1), out
    return jax.jit(step, donate_argnums=1), variables, cache, x


def measure_latency(size: str, batch: int, rounds: int, target_s: float, adapters: dict) -> dict:
    build = {"policy": policy_decoder, "llm": llm_decoder}[size]
    random, runs = SharedRandom(), {}
    for name, adapter in adapters.items():
        step, variables, cache, inputs = build(adapter, batch, random)
        t0, c0 = time.perf_counter(), time.process_time()
        compiled = step.lower(variables, cache, inputs).compile()
        compile_wall, compile_cpu = time.perf_counter() - t0, time.process_time() - c0
        for _ in range(2):  # warm up; the second call sets reps (one call suffices for a slow step)
            t0 = time.perf_counter()
            cache, out = compiled(variables, cache, inputs)
            jax.block_until_ready(out)
            first = time.perf_counter() - t0
            if first > 1.0:
                break
        reps = int(np.clip(target_s / max(first, 1e-6), 1, 200))
        runs[name] = dict(compiled=compiled, variables=variables, cache=cache, inputs=inputs, reps=reps,
                          compile_wall_s=compile_wall, compile_cpu_s=compile_cpu, params=count(variables), ms=[])
        print(f"  {size} b{batch} {name}: compiled in {compile_wall:.1f} s wall ({compile_cpu:.1f} s CPU), "
              f"{reps} reps per measurement", flush=True)
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = runs[name]
            cache, out = run["cache"], None
            t0 = time.perf_counter()
            for _ in range(run["reps"]):
                cache, out = run["compiled"](run["variables"], cache, run["inputs"])
            jax.block_until_ready(out)
            run["ms"].append(1e3 * (time.perf_counter() - t0) / run["reps"])
            run["cache"] = cache
    base = np.array(runs["backbone"]["ms"])
    return {name: {"ms_median": float(np.median(run["ms"])), "ms_rounds": [round(m, 3) for m in run["ms"]],
                   "ratio_to_backbone": float(np.median(np.array(run["ms"]) / base)), "reps": run["reps"],
                   "compile_wall_s": run["compile_wall_s"], "compile_cpu_s": run["compile_cpu_s"],
                   "backbone_params": int(run["params"][0]), "adapter_params": int(run["params"][1])}
            for name, run in runs.items()}


# ---- quality --------------------------------------------------------------------------------------------------
PRE_TASKS, NEW_TASKS, OBS_DIM, ACTION_DIM = 4, 4, 4, 2


def toy_batch(key, maps, scenes, first_task, batch, scene: bool, steps=2):
    kx, kt, ks = jax.random.split(key, 3)
    x = jax.random.uniform(kx, (batch, steps, OBS_DIM), minval=-1.0, maxval=1.0)
    local = jax.random.randint(kt, (batch,), 0, maps.shape[0])
    actions = 0.8 * jnp.tanh(jnp.einsum("btd,bda->bta", x, maps[local]))[:, :, None]
    obs = {"proprio": x}
    if scene:
        obs["scene"] = scenes[local][:, None] + 0.1 * jax.random.normal(ks, (batch, steps, scenes.shape[-1]))
    return {"observations": obs, "task": local + first_task, "actions": actions}


def quality(seeds: int, pre_steps: int, tune_steps: int, scene: bool, width: int, batch: int,
            lr: float = 3e-3) -> dict:
    trunk = TransformerConfig(num_layers=2, width=width, num_heads=2, window=2)
    switch = AdapterConfig(kind="switch", num_experts=4, rank=4, alpha=8.0, top_k=2, dense_dispatch=True)
    variants = {"head_only": (AdapterConfig(), "head"), "lora_shared": (shared_lora_like(switch), "adapters"),
                "moe_lora": (AdapterConfig(kind="moe_lora", num_experts=4, rank=4, alpha=8.0), "adapters"),
                "switch": (switch, "adapters")}
    obs_spec = (("proprio", 2),) + ((("scene", 1),) if scene else ())
    make = lambda adapter: GeneralistPolicy(PolicyConfig(transformer=trunk, adapter=adapter, observations=obs_spec,
                                                         num_tasks=PRE_TASKS + NEW_TASKS, action_dim=ACTION_DIM))

    def problem(key):
        km, ks = jax.random.split(key)
        return (jax.random.normal(km, (PRE_TASKS + NEW_TASKS, OBS_DIM, ACTION_DIM)),
                jax.random.normal(ks, (PRE_TASKS + NEW_TASKS, 8)))

    def train(model, variables, mode, key, maps, scenes, first, steps):
        tx = make_optimizer(mode, optax.adam(lr))
        state = tx.init(variables)

        def update(carry, k):
            variables, state = carry
            grads = jax.grad(lambda v: policy_loss(model, v, toy_batch(k, maps, scenes, first, batch, scene))[0])(
                variables)
            updates, state = tx.update(grads, state, variables)
            return (optax.apply_updates(variables, updates), state), None
        (variables, _), _ = jax.lax.scan(update, (variables, state), jax.random.split(key, steps))
        return variables

    def held_out(model, variables, key, maps, scenes, first):
        test = toy_batch(key, maps, scenes, first, 4096, scene)
        return action_loss(model.config, model.apply(variables, test["observations"], test["task"]), test["actions"])

    pre_model = make(AdapterConfig())

    def pretrain(key):
        maps, scenes = problem(jax.random.fold_in(key, 0))
        probe = toy_batch(key, maps[:PRE_TASKS], scenes[:PRE_TASKS], 0, 2, scene)
        variables = pre_model.init(jax.random.fold_in(key, 1), probe["observations"], probe["task"])
        variables = train(pre_model, variables, "full", jax.random.fold_in(key, 2), maps[:PRE_TASKS],
                          scenes[:PRE_TASKS], 0, pre_steps)
        return variables, held_out(pre_model, variables, jax.random.fold_in(key, 3), maps[:PRE_TASKS],
                                   scenes[:PRE_TASKS], 0)

    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    t0 = time.perf_counter()
    pretrained, pre_loss = jax.jit(jax.vmap(pretrain))(keys)
    out = {"pretrain": {"held_out_mse": np.asarray(pre_loss).tolist(), "seconds": time.perf_counter() - t0}}
    print(f"  pretrained {seeds} seeds in {out['pretrain']['seconds']:.0f} s: held-out MSE on the pretraining "
          f"tasks {np.mean(pre_loss):.4f}", flush=True)
    for name, (adapter, mode) in variants.items():
        model = make(adapter)

        def fine_tune(backbone, key):
            maps, scenes = problem(jax.random.fold_in(key, 0))
            new_maps, new_scenes = maps[PRE_TASKS:], scenes[PRE_TASKS:]
            probe = toy_batch(key, new_maps, new_scenes, PRE_TASKS, 2, scene)
            variables = {"params": model.init(jax.random.fold_in(key, 4), probe["observations"],
                                              probe["task"])["params"]}  # without the "aux" collection
            variables = graft(variables, backbone)  # the pretrained backbone and head, fresh adapters
            variables = train(model, variables, mode, jax.random.fold_in(key, 5), new_maps, new_scenes,
                              PRE_TASKS, tune_steps)
            return held_out(model, variables, jax.random.fold_in(key, 6), new_maps, new_scenes, PRE_TASKS)

        t0 = time.perf_counter()
        losses = np.asarray(jax.jit(jax.vmap(fine_tune))(pretrained, keys))
        probe = jax.eval_shape(model.init, jax.random.PRNGKey(0), *toy_inputs(scene))
        out[name] = {"held_out_mse": losses.tolist(), "adapter_params": int(count(probe)[1]),
                     "seconds": time.perf_counter() - t0, **stats.describe(losses, digits=4)}
        print(f"  {name}: held-out MSE {out[name]['iqm_ci']} (IQM), {out[name]['mean_std']}, adapter params "
              f"{out[name]['adapter_params']}, {out[name]['seconds']:.0f} s", flush=True)
    return out


def toy_inputs(scene: bool):
    obs = {"proprio": jnp.ones((2, 2, OBS_DIM))}
    if scene:
        obs["scene"] = jnp.ones((2, 2, 8))
    return obs, jnp.zeros((2,), jnp.int32)


def graft(target, source):
    """`target` with every leaf that `source` also has (same path) replaced by source's."""
    if isinstance(target, dict):
        return {k: graft(v, source[k]) if k in source else v for k, v in target.items()}
    return source


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/lora-switch")
    p.add_argument("--sizes", nargs="+", default=["policy", "llm"], choices=["policy", "llm"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target-s", type=float, default=0.5, help="seconds per measurement (sets reps)")
    p.add_argument("--skip-cells", nargs="*", default=["llm/b16/switch_merged"],
                   help="size/bBATCH/variant cells not measured (default: the merged LLM step at batch 16, about "
                        "16x the batch-1 merged step: over a minute per step on a 2-core CPU)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--pre-steps", type=int, default=300)
    p.add_argument("--tune-steps", type=int, default=300)
    p.add_argument("--width", type=int, default=32, help="quality toy: trunk width (2 layers, 2 heads)")
    p.add_argument("--batch", type=int, default=32, help="quality toy: batch size")
    p.add_argument("--scene", action="store_true", help="add a task-identifying scene token to the toy")
    p.add_argument("--skip", nargs="*", default=[], choices=["latency", "quality"])
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine.describe(), "args": vars(args), "latency": {}}
    start = time.perf_counter()
    if "latency" not in args.skip:
        for size in args.sizes:
            for batch in args.batches:
                variants = {n: a for n, a in latency_variants().items()
                            if f"{size}/b{batch}/{n}" not in args.skip_cells}
                res = measure_latency(size, batch, args.rounds, args.target_s, variants)
                results["latency"][f"{size}/b{batch}"] = res
                print(f"{size} batch {batch}: " + ", ".join(
                    f"{n} {r['ms_median']:.2f} ms ({r['ratio_to_backbone']:.2f}x)" for n, r in res.items()),
                    flush=True)
    if "quality" not in args.skip:
        results["quality"] = quality(args.seeds, args.pre_steps, args.tune_steps, args.scene, args.width, args.batch)
    results["machine"]["load_average_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - start
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out_dir / 'results.json'} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
