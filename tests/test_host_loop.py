"""The host loop's overlap (`runner.train(..., overlap=True)`, the default): chunk k+1 is dispatched before chunk
k's metrics are fetched and written, checkpoint chunks are barriers, and the files written are byte-identical to
the sequential loop's (`overlap=False`), with and without diverging members. CPU only, tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import runner
from tests.test_runner import _toy_trainer, tiny_args


def _train(r: runner.Runner, trainer: runner.Trainer, root: Path, overlap: bool, num_chunks: int,
           events: list | None = None, **run) -> str:
    """Run the host loop into `root`; returns the UserError's message ("" if none). With `events`, records
    ("dispatch", k) for each chunk dispatched and ("write", k) for each metrics.jsonl write, in order."""
    files = runner.RunFiles(root, tensorboard=False)
    dispatch, log = r.guarded_chunk, files.log
    if events is not None:
        r.guarded_chunk = lambda *a: (events.append(("dispatch", sum(e[0] == "dispatch" for e in events) + 1)),
                                      dispatch(*a))[1]
        files.log = lambda path, chunk, *a: (path == files.metrics and events.append(("write", chunk)),
                                             log(path, chunk, *a))[1]
    try:
        runner.train(r, trainer, files, num_chunks, runner.RunConfig(progress=False, tensorboard=False, **run),
                     overlap=overlap)
        return ""
    except runner.UserError as e:
        return str(e)
    finally:
        files.close()
        r.guarded_chunk = dispatch


def _logs(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in ("metrics.jsonl", "eval.jsonl")}


def test_overlapped_sac_writes_the_same_logs_as_sequential(tmp_path):
    from experiments import sac as sac_experiment
    args = tiny_args()
    trainer = sac_experiment.build(args)
    r = runner.Runner(trainer, runner.make_population(args.hp, [{}], seed=0, num_seeds=2))
    for overlap in (False, True):
        assert _train(r, trainer, tmp_path / str(overlap), overlap, 4, eval_every=1, checkpoint_every=3) == ""
    assert _logs(tmp_path / "True") == _logs(tmp_path / "False")
    assert len(_logs(tmp_path / "True")["eval.jsonl"].splitlines()) == 2 * 4


@pytest.mark.parametrize("actor_lrs", [(0.1, 1.0, 0.2), (1.0, 2.0)], ids=["one-diverges", "all-diverge"])
def test_overlapped_divergence_writes_the_same_files_as_sequential(tmp_path, actor_lrs):
    """Members with actor_lr > 0.5 turn NaN at chunk 3: the isolated one is frozen and marked at chunk 3 in both
    loops; when all diverge, both loops save chunk 3's (frozen) carry as chunk 3 and end with the same error."""
    from algos import sac
    pop = runner.make_population(sac.HParams(), [{"actor_lr": lr} for lr in actor_lrs], seed=0, num_seeds=1)
    trainer = _toy_trainer(diverge_at=3)
    r = runner.Runner(trainer, pop)
    errors = [_train(r, trainer, tmp_path / str(o), o, 6, eval_every=2, checkpoint_every=0) for o in (False, True)]
    assert errors[0] == errors[1] and bool(errors[0]) == (len(actor_lrs) == 2)
    assert _logs(tmp_path / "True") == _logs(tmp_path / "False")
    assert b'"diverged": true' in _logs(tmp_path / "True")["metrics.jsonl"]
    steps, carries = [], []
    for o in ("False", "True"):
        step, carry = runner.restore_checkpoint(tmp_path / o / "checkpoints", r.abstract_carry())
        steps.append(step)
        carries.append(carry)
    assert steps[0] == steps[1] == (3 if len(actor_lrs) == 2 else 6)
    for a, b in zip(carries[0].values(), carries[1].values()):
        assert (a == b).all()


@pytest.mark.parametrize("checkpoint_every, expected", [
    (0, ["d1", "d2", "w1", "d3", "w2", "d4", "w3", "w4"]),  # the last chunk is a checkpoint: written at once
    (2, ["d1", "d2", "w1", "w2", "d3", "d4", "w3", "w4"]),  # a checkpoint chunk is a barrier
])
def test_the_next_chunk_is_dispatched_before_the_last_is_written(tmp_path, checkpoint_every, expected):
    from algos import sac
    pop = runner.make_population(sac.HParams(), [{}], seed=0, num_seeds=2)
    trainer = _toy_trainer(diverge_at=99)
    r = runner.Runner(trainer, pop)
    events = []
    assert _train(r, trainer, tmp_path / "overlap", True, 4, events, checkpoint_every=checkpoint_every) == ""
    assert [e[0][0] + str(e[1]) for e in events] == expected
    events.clear()
    assert _train(r, trainer, tmp_path / "sequential", False, 4, events, checkpoint_every=checkpoint_every) == ""
    assert [e[0][0] + str(e[1]) for e in events] == ["d1", "w1", "d2", "w2", "d3", "w3", "d4", "w4"]
