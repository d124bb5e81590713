"""AdaCat (nets/adacat.py), the autoregressive families (nets/autoregressive.py) and the density trainer.

The oracles are independent of the code under test: a numpy implementation written here from the definition
(p = h_i / w_i on bin i, found with np.searchsorted), numerical integration on a fine grid, Monte Carlo from the
library's sampler checked against the closed forms, and Jacobians for the autoregressive masks. The `adacat` pip
package is not used as an oracle: its JAX module imports distrax (which pulls in tensorflow-probability) and its
other module needs torch, neither of which the project installs.
"""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algos import density
from experiments import runner
from nets import autoregressive as ar
from nets.adacat import AdaCat, check_in_support, uniform_categorical


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def random_adacat(seed=0, batch=(3,), k=8, lo=(-1.0, 0.0, 2.0), hi=(1.0, 5.0, 2.5), scale=2.0):
    kw, kh = jax.random.split(jax.random.PRNGKey(seed))
    return AdaCat.create(scale * jax.random.normal(kw, batch + (k,)), scale * jax.random.normal(kh, batch + (k,)),
                         jnp.array(lo), jnp.array(hi))


def numpy_log_prob(w_logits, h_logits, lo, hi, x):
    """From the definition, one distribution at a time: log(h_i / w_i / (hi - lo)) on bin i, np.searchsorted."""
    w = np.exp(w_logits - w_logits.max()); w /= w.sum()
    h = np.exp(h_logits - h_logits.max()); h /= h.sum()
    u = (x - lo) / (hi - lo)
    edges = np.cumsum(w)[:-1]
    i = np.searchsorted(edges, u, side="right")
    return np.log(h[i]) - np.log(w[i]) - np.log(hi - lo)


def test_log_prob_matches_an_independent_numpy_implementation():
    d = random_adacat()
    x = np.stack([np.linspace(lo, hi, 1001) for lo, hi in [(-1, 1), (0, 5), (2, 2.5)]], -1).astype(np.float32)
    got = np.asarray(d.log_prob(x))
    for j in range(3):
        want = numpy_log_prob(np.asarray(d.width_logits[j], np.float64), np.asarray(d.mass_logits[j], np.float64),
                              float(d.lo[j]), float(d.hi[j]), x[:, j].astype(np.float64))
        # a grid point within float32 rounding of an edge may land on either side: compare the rest exactly
        close = np.isclose(got[:, j], want, atol=1e-4)
        assert close.mean() > 0.995, (j, close.mean())


def test_density_integrates_to_one_and_edges_are_finite():
    d = random_adacat(scale=1.0)
    n = 1_000_000  # midpoint rule on a fine grid: the error is about (jumps) * (grid step)
    mids = (np.arange(n) + 0.5) / n
    x = np.asarray(d.lo) + np.outer(mids, np.asarray(d.hi - d.lo))
    integral = np.asarray(d.prob(x), np.float64).sum(0) / n * np.asarray(d.hi - d.lo)  # (float32 sums drift)
    np.testing.assert_allclose(integral, 1.0, atol=2e-3)
    assert np.isfinite(np.asarray(d.log_prob(d.lo))).all() and np.isfinite(np.asarray(d.log_prob(d.hi))).all()
    assert np.isneginf(np.asarray(d.log_prob(d.hi + 1e-3))).all() and np.isneginf(np.asarray(d.log_prob(d.lo - 1e-3))).all()
    np.testing.assert_allclose(np.asarray(d.cdf(d.lo)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d.cdf(d.hi)), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d.icdf(jnp.ones(3))), np.asarray(d.hi), rtol=1e-6)


def test_icdf_inverts_cdf_and_cdf_is_the_integral_of_the_density():
    d = random_adacat(scale=1.0)
    x = d.sample(jax.random.PRNGKey(1), (20_000,))
    np.testing.assert_allclose(np.asarray(d.icdf(d.cdf(x))), np.asarray(x), atol=2e-5)
    q = jnp.linspace(0.0, 1.0, 501)[:, None] * jnp.ones(3)
    np.testing.assert_allclose(np.asarray(d.cdf(d.icdf(q))), np.asarray(q), atol=2e-5)
    # cdf(b) - cdf(a) against a Riemann sum of prob between them
    a, b = d.lo + 0.3 * (d.hi - d.lo), d.lo + 0.8 * (d.hi - d.lo)
    grid = a + (b - a) * (jnp.arange(100_000)[:, None] + 0.5) / 100_000
    np.testing.assert_allclose(np.asarray(d.prob(grid).mean(0) * (b - a)), np.asarray(d.cdf(b) - d.cdf(a)), atol=2e-3)


def test_mean_variance_entropy_against_monte_carlo():
    d = random_adacat(seed=3)
    n = 400_000
    x = np.asarray(d.sample(jax.random.PRNGKey(2), (n,)), np.float64)  # float64: float32 column sums drift
    # 5 standard errors: a false failure has probability < 1e-6 per statistic
    assert np.all(np.abs(x.mean(0) - np.asarray(d.mean())) < 5 * x.std(0) / np.sqrt(n))
    np.testing.assert_allclose(x.var(0), np.asarray(d.variance()), rtol=0.02)
    neg_logp = -np.asarray(d.log_prob(x.astype(np.float32)), np.float64)
    assert np.all(np.abs(neg_logp.mean(0) - np.asarray(d.entropy())) < 5 * neg_logp.std(0) / np.sqrt(n))
    # the mode is the centre of the densest bin: its density is max_i h_i / w_i, computed here in numpy
    lw = np.asarray(d.width_logits, np.float64); lh = np.asarray(d.mass_logits, np.float64)
    log_ratio = (lh - np.log(np.exp(lh).sum(-1, keepdims=True))) - (lw - np.log(np.exp(lw).sum(-1, keepdims=True)))
    np.testing.assert_allclose(np.asarray(d.log_prob(d.mode())), log_ratio.max(-1) - np.log(np.asarray(d.hi - d.lo)),
                               atol=1e-4)


@pytest.mark.parametrize("kernel", ["gaussian", "uniform"])
def test_smoothed_log_prob_tends_to_the_hard_one(kernel):
    d = random_adacat(seed=4, scale=1.0)
    centres = d.lo[:, None] + (d.hi - d.lo)[:, None] * (d.right_edges - 0.5 * d.widths)  # bin centres: away from every edge
    x = jnp.moveaxis(centres, -1, 0)  # (k, 3)
    hard = np.asarray(d.log_prob(x))
    gaps = [np.abs(np.asarray(d.smoothed_log_prob(x, s * (d.hi - d.lo), kernel)) - hard).max()
            for s in (1e-1, 1e-2, 1e-4)]
    assert gaps[-1] < 1e-4, gaps
    assert gaps[0] > 1e-2, gaps  # a wide kernel does differ: the comparison has teeth


def test_hard_likelihood_gradient_is_blind_to_the_position_inside_a_bin_smoothing_is_not():
    """What the paper's smoothing is for (the issue's phrase "zero width-logit gradients without smoothing" is
    not literally true: the hard log-likelihood log h_i - log w_i has the gradient e_i - w with respect to the
    width logits, which shrinks the bin that holds the point). What IS true, and shown here: the hard gradient is
    the same wherever the point lies in its bin, so it carries no information about where the data are; its
    derivative in x is zero. The smoothed objective's gradient depends on the position (nonzero everywhere)."""
    w_logits, h_logits = jnp.zeros(4), jnp.array([0.0, 1.0, -1.0, 0.5])
    hard = lambda wl, x: AdaCat.create(wl, h_logits).log_prob(x)
    smooth = lambda wl, x: AdaCat.create(wl, h_logits).smoothed_log_prob(x, 0.02)
    near_left, near_right = 0.27, 0.48  # both in bin 1 = [0.25, 0.5)
    g_left, g_right = jax.grad(hard)(w_logits, near_left), jax.grad(hard)(w_logits, near_right)
    np.testing.assert_array_equal(np.asarray(g_left), np.asarray(g_right))
    assert float(jax.grad(hard, argnums=1)(w_logits, 0.3)) == 0.0
    s_left, s_right = jax.grad(smooth)(w_logits, near_left), jax.grad(smooth)(w_logits, near_right)
    assert np.abs(np.asarray(s_left - s_right)).max() > 0.1
    # smoothing at a point near bin 1's left edge pulls that edge (the end of bin 0) toward the point: it widens
    # bin 1 leftward by shrinking bin 0's width logit relative to hard MLE's pure "shrink my own bin"
    assert float(s_left[0] - g_left[0]) < 0 and float(s_right[2] - g_right[2]) < 0


def test_without_smoothing_gradient_ascent_does_not_fit_three_points_with_smoothing_it_does():
    """The hard gradient only shrinks the bin holding a point, until the point falls out of it into a neighbour,
    which then shrinks: gradient ascent wanders and ends near the uniform density (measured: mean log-likelihood
    -0.03 after 400 Adam steps, -0.005 after 2000). The smoothed objective moves the edges onto the points and
    reaches ~2.07 nats (hard log-likelihood, same optimiser)."""
    import optax
    data = jnp.array([0.2, 0.5, 0.81])

    def fit(objective, steps=400):
        params = (jnp.zeros(8), jnp.zeros(8))
        opt = optax.adam(0.1)
        state = opt.init(params)

        def step(carry, _):
            params, state = carry
            grads = jax.grad(lambda p: -objective(AdaCat.create(*p)).mean())(params)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
        return AdaCat.create(*params)

    hard_fit = fit(lambda d: d.log_prob(data))
    smooth_fit = fit(lambda d: d.smoothed_log_prob(data, 1e-2))
    assert float(hard_fit.log_prob(data).mean()) < 0.5
    assert float(smooth_fit.log_prob(data).mean()) > 1.5


def test_adacat_fits_a_bimodal_target_better_than_fixed_bins_at_equal_k():
    rng = np.random.default_rng(0)
    n = 4000
    x = np.where(rng.uniform(size=n) < 0.5, rng.normal(0.31, 0.01, n), rng.normal(0.77, 0.01, n)).clip(0, 1)
    train, test = jnp.asarray(x[:3000], jnp.float32), jnp.asarray(x[3000:], jnp.float32)
    k = 8
    optax = __import__("optax")

    def fit(make, objective):
        params = jnp.zeros((2, k))
        opt = optax.adam(0.05)
        state = opt.init(params)

        def step(carry, _):
            params, state = carry
            grads = jax.grad(lambda p: -objective(make(p), train).mean())(params)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, state), None, length=1500)
        return make(params)

    adacat = fit(lambda p: AdaCat.create(p[0], p[1]), lambda d, x: d.smoothed_log_prob(x, 1e-3))
    fixed = fit(lambda p: uniform_categorical(p[1]), lambda d, x: d.log_prob(x))
    nll_adacat, nll_fixed = -float(adacat.log_prob(test).mean()), -float(fixed.log_prob(test).mean())
    # 8 fixed bins can at best put each mode in a 1/8-wide bin: NLL ≥ log(1/8)·(-1) ... ≈ -1.39; AdaCat narrows
    assert nll_adacat < nll_fixed - 0.5, (nll_adacat, nll_fixed)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="lo < hi"):
        AdaCat.create(jnp.zeros(4), jnp.zeros(4), 1.0, 1.0)
    with pytest.raises(ValueError, match="at least one bin"):
        AdaCat.create(jnp.zeros((3, 0)), jnp.zeros((3, 0)))
    with pytest.raises(ValueError, match="same shape"):
        AdaCat.create(jnp.zeros(4), jnp.zeros(5))
    d = AdaCat.create(jnp.zeros(4), jnp.zeros(4))
    for sigma in (0.0, -1e-3):
        with pytest.raises(ValueError, match="must be > 0"):
            d.smoothed_log_prob(0.5, sigma)
    with pytest.raises(ValueError, match="kernel"):
        d.smoothed_log_prob(0.5, 0.1, kernel="laplace")
    with pytest.raises(ValueError, match="dimension 1 .*outside the AdaCat support"):
        check_in_support(np.array([[0.5, 0.2], [0.5, 1.2]]), 0.0, 1.0)
    check_in_support(np.array([[0.0, 1.0]]), 0.0, 1.0)  # the closed interval is fine
    with pytest.raises(ValueError, match="num_bins"):
        ar.params_per_dim("adacat", 0)
    with pytest.raises(ValueError, match="family"):
        ar.params_per_dim("flow", 8)
    # traced arguments cannot be checked at trace time: they must still compute (σ is a swept hyperparameter)
    assert np.isfinite(float(jax.jit(lambda s: d.smoothed_log_prob(0.5, s))(0.1)))


def test_extreme_logits_stay_finite_in_float32():
    """Empty bins (masses or widths that underflow to 0 in float32) must not produce NaN anywhere."""
    w = jnp.array([0.0, -200.0, 0.0, 50.0])  # bin 1 has zero width, bin 3 nearly all of it
    h = jnp.array([-200.0, 0.0, 0.0, 0.0])  # bin 0 has zero mass
    d = AdaCat.create(w, h)
    x = jnp.linspace(0.0, 1.0, 1001)
    for value in (d.cdf(x), d.icdf(x), d.smoothed_log_prob(x, 1e-3), d.entropy(), d.mean(), d.mode()):
        assert np.isfinite(np.asarray(value)).all()
    assert not np.isnan(np.asarray(d.log_prob(x))).any()
    g = jax.grad(lambda w: d.replace(width_logits=w).smoothed_log_prob(x, 1e-3).mean())(w)
    assert np.isfinite(np.asarray(g)).all()


def test_made_outputs_depend_only_on_earlier_dimensions_and_the_context():
    model = ar.MADE(num_dims=4, params_per_dim=3, hidden_sizes=(64, 64))  # 16 units per degree: some are active
    x, c = jax.random.normal(jax.random.PRNGKey(0), (4,)), jax.random.normal(jax.random.PRNGKey(2), (2,))
    params = model.init(jax.random.PRNGKey(1), x, c)
    jx = jax.jacobian(lambda x: model.apply(params, x, c))(x)  # (4, 3, 4): output dim, param, input dim
    depends = np.abs(np.asarray(jx)).max(1) > 0
    np.testing.assert_array_equal(depends, np.tril(np.ones((4, 4), bool), -1))
    jc = jax.jacobian(lambda c: model.apply(params, x, c))(c)
    assert (np.abs(np.asarray(jc)).max((1, 2)) > 0).all()  # every dimension, the first included, sees c


def test_autoregressive_sampling_conditions_each_dimension_on_the_previous():
    """A hand-made conditional: x0 ~ AdaCat concentrated on [0.6, 0.7], x1 | x0 concentrated on x0's bin of
    a 10-bin grid. Samples must satisfy |x1 - x0| < 0.1, which fails if a dimension is sampled before the one it
    depends on."""
    k = 10

    def apply_fn(x, context):
        mass0 = jnp.where(jnp.arange(k) == 6, 30.0, 0.0)
        mass1 = 30.0 * jax.nn.one_hot(jnp.floor(x[..., 0] * k).astype(int), k)
        widths = jnp.zeros(x.shape[:-1] + (2, k))
        masses = jnp.stack([jnp.broadcast_to(mass0, x.shape[:-1] + (k,)), mass1], -2)
        return jnp.concatenate([widths, masses], -1)

    x = ar.sample(apply_fn, "adacat", jax.random.PRNGKey(0), (2000,), 2, 0.0, 1.0)
    assert ((x[:, 0] > 0.6) & (x[:, 0] < 0.7)).mean() > 0.99
    assert (jnp.abs(x[:, 1] - x[:, 0]) < 0.1).mean() > 0.99


@pytest.mark.parametrize("family", ar.FAMILIES)
def test_family_densities_integrate_to_their_mass_on_the_interval(family):
    """Every family's conditional is a density in data units: ∫ over [lo, hi] is 1 for AdaCat and the
    categorical, and the Gaussians' mass inside the interval (from the normal cdf, computed here) for the others."""
    from math import erf, sqrt
    params = jax.random.normal(jax.random.PRNGKey(0), (ar.params_per_dim(family, 6),))
    lo, hi, n = -2.0, 3.0, 200_000
    x = lo + (hi - lo) * (jnp.arange(n) + 0.5) / n
    logp = jax.jit(lambda x: ar.log_prob(family, jnp.broadcast_to(params, x.shape + params.shape), x, lo, hi))(x)
    total = float(np.exp(np.asarray(logp, np.float64)).mean() * (hi - lo))
    phi = lambda z: 0.5 * (1 + erf(z / sqrt(2)))
    p = np.asarray(params, np.float64)
    if family in ("adacat", "categorical"):
        inside = 1.0
    elif family == "gaussian":  # mean 0.5 + p0, log-std p1, in unit coordinates
        m, s = 0.5 + p[0], np.exp(np.clip(p[1], ar.LOG_STD_MIN, ar.LOG_STD_MAX))
        inside = phi((1 - m) / s) - phi(-m / s)
    else:  # components on the grid (i + 1/2)/k with std e^{log_std}/k
        k = 6
        w = np.exp(p[:k] - p[:k].max()); w /= w.sum()
        m = p[k:2 * k] + (np.arange(k) + 0.5) / k
        s = np.exp(np.clip(p[2 * k:] - np.log(k), ar.LOG_STD_MIN, ar.LOG_STD_MAX))
        inside = sum(wi * (phi((1 - mi) / si) - phi(-mi / si)) for wi, mi, si in zip(w, m, s))
    assert abs(total - inside) < 2e-3, (total, inside)


@pytest.fixture(scope="module")
def mixture_data():
    from experiments import adacat as experiment
    return experiment.make_data(experiment.Args(dataset="mixture-1d", num_rows=5000))


def test_density_trainer_learns_compiles_once_and_vmaps_like_single_runs(mixture_data):
    from experiments.adacat import SHAPES
    assert (mixture_data["x"].shape[1], mixture_data["c"].shape[1]) == SHAPES["mixture-1d"]
    cfg = density.Config(family="adacat", num_bins=16, hidden_sizes=(32,), batch_size=128, updates_per_chunk=100)
    init_carry, train_chunk, evaluate = density.make_train(cfg, mixture_data)
    trainer = runner.Trainer(init_carry, train_chunk, evaluate, cfg.updates_per_chunk,
                             shared=density.shared_arrays(mixture_data))
    pop = runner.make_population(density.HParams(lr=3e-3), [{}], seed=0, num_seeds=2)
    r = runner.Runner(trainer, pop)
    carry = r.init_carry()
    assert np.isnan(np.asarray(r.evaluate(carry, r.eval_keys(0), r.hparams)["test_nll"])).all()  # not yet measured
    carry, _ = r.train_chunk(carry, r.hparams)
    first = np.asarray(r.evaluate(carry, r.eval_keys(0), r.hparams)["test_nll"])
    for _ in range(5):
        carry, _ = r.train_chunk(carry, r.hparams)
    last = np.asarray(r.evaluate(carry, r.eval_keys(0), r.hparams)["test_nll"])
    assert r.trace_counts["train_chunk"] == 1
    # the carry's test NLL is the hard NLL of the held-out rows, recomputed here from member 0's parameters
    model, x_test = density.make_model(cfg, 1), jnp.asarray(mixture_data["x_test"][:4096])
    member0 = jax.tree.map(lambda x: x[0], carry.params)
    logp = ar.log_prob("adacat", model.apply(member0, x_test, None), x_test, mixture_data["lo"], mixture_data["hi"])
    np.testing.assert_allclose(last[0], -float(logp.sum(-1).mean()), rtol=1e-5)
    uniform_nll = float(np.log(mixture_data["hi"] - mixture_data["lo"]).sum())
    assert np.all(last < first - 0.1) and np.all(last < uniform_nll - 0.7), (first, last, uniform_nll)
    # member 1 of the population equals a single run with seed 1
    single = runner.Runner(trainer, runner.make_population(density.HParams(lr=3e-3), [{}], seed=1, num_seeds=1))
    c1 = single.init_carry()
    for _ in range(6):
        c1, _ = single.train_chunk(c1, single.hparams)
    alone = np.asarray(single.evaluate(c1, single.eval_keys(0), single.hparams)["test_nll"])
    np.testing.assert_allclose(alone[0], last[1], rtol=1e-5)
    assert abs(float(last[0] - last[1])) > 1e-6  # the seeds do differ


def test_prepare_rejects_bad_data_and_clips_test_rows():
    with pytest.raises(ValueError, match="same D"):
        density.prepare(np.zeros((10, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        density.prepare(np.full((10, 1), np.nan), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="contexts"):
        density.prepare(np.zeros((10, 1)), np.zeros((5, 1)), np.zeros((9, 2)), np.zeros((5, 2)))
    data = density.prepare(np.linspace(0, 1, 100)[:, None], np.array([[0.5], [7.0]]))
    assert data["x_test"].max() <= data["hi"][0] and data["clipped_fraction"] == 0.5


@pytest.mark.slow
def test_cli_trains_and_reports_in_words(tmp_path):
    cmd = [sys.executable, str(REPO / "experiments/adacat.py"), "--dataset", "mixture-2d", "--num-rows", "2000",
           "--model.hidden-sizes", "32", "--model.num-bins", "8", "--model.updates-per-chunk", "50",
           "--total-steps", "100", "--num-seeds", "2", "--run-dir", str(tmp_path / "run"), "--no-progress",
           "--no-tensorboard"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test NLL" in out.stdout and "lower is better" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "run/eval.jsonl").read_text().splitlines()]
    assert {r["member"] for r in rows} == {0, 1} and all(np.isfinite(r["test_nll"]) for r in rows)
    bad = subprocess.run(cmd[:2] + ["--num-rows", "3", "--run-dir", str(tmp_path / "bad")], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "--num-rows 3" in bad.stderr
