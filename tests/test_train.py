"""The training loop: replicas against separate runs, batches, evaluation, precision."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from imprint.config import ConfigError
from imprint.data import load_dataset
from imprint.imp import derive_seed
from imprint.model import build_model
from imprint.prune import apply_masks, full_masks, magnitude_prune
from imprint.train import (
    TrainingDiverged,
    evaluate,
    precision_context,
    sample_batch,
    step_threads,
    train_replicas,
    train_round,
)
from tests.conftest import smoke_config


@pytest.fixture(scope="module")
def smoke():
    config = smoke_config()
    return config, load_dataset(config.data)


def _models(config, data, seeds):
    return [build_model(config.model, data.input_dim, data.num_classes, s) for s in seeds]


def _gens(config, seeds, index):
    return [torch.Generator().manual_seed(derive_seed("data", s, index)) for s in seeds]


def test_replicas_give_what_separate_runs_give(smoke):
    """Three seeds in one batched model against three single runs, over two IMP rounds
    with momentum: identical curves, weights and masks (bitwise on this config)."""
    config, data = smoke
    train = config.train.model_copy(update={"momentum": 0.9})
    seeds = [0, 1, 2]
    rewind = config.prune.rewind_step

    def imp_rounds(group: list[int]):
        """Round 0 and one pruned round for the seeds in ``group``, trained together."""
        models = _models(config, data, group)
        masks = [full_masks(m.state_dict()) for m in models]
        dense = train_replicas(
            models, masks, data, train, _gens(config, group, 0), rewind_step=rewind
        )
        pruned_masks = [
            magnitude_prune(r.final_state, m, {0: 0.3, 1: 0.3}) for r, m in zip(dense, masks)
        ]
        for model, result, mask in zip(models, dense, pruned_masks):
            model.load_state_dict(apply_masks(result.rewind_state, mask))
        pruned = train_replicas(models, pruned_masks, data, train, _gens(config, group, 1))
        return dense, pruned, pruned_masks

    together = imp_rounds(seeds)
    for r, seed in enumerate(seeds):
        alone = imp_rounds([seed])
        for stage in (0, 1):
            a, b = together[stage][r], alone[stage][0]
            assert a.curves == b.curves
            for name, value in b.final_state.items():
                assert torch.equal(a.final_state[name], value), (seed, stage, name)
        for name, value in alone[0][0].rewind_state.items():
            assert torch.equal(together[0][r].rewind_state[name], value)
        for name, mask in alone[2][0].items():
            assert torch.equal(together[2][r][name], mask)
    # different seeds really are different runs
    assert together[0][0].curves != together[0][1].curves


def test_train_round_is_one_replica(smoke):
    config, data = smoke
    model = _models(config, data, [3])[0]
    twin = copy.deepcopy(model)
    masks = full_masks(model.state_dict())
    rows = []
    single = train_round(
        model,
        masks,
        data,
        config.train,
        _gens(config, [3], 0)[0],
        on_eval=lambda step, row: rows.append((step, row)),
    )
    batched = train_replicas([twin], [masks], data, config.train, _gens(config, [3], 0))[0]
    assert single.curves == batched.curves == [row for _, row in rows]
    assert [step for step, _ in rows] == list(range(10, config.train.steps + 1, 10))
    for name, value in single.final_state.items():
        assert torch.equal(batched.final_state[name], value)
    # the model was trained in place and its BN counters count the steps
    assert torch.equal(model.state_dict()["layers.0.weight"], single.final_state["layers.0.weight"])
    assert int(model.norms[0].num_batches_tracked) == config.train.steps


def test_sample_batch_draws_rows_with_replacement_per_generator(smoke):
    _, data = smoke
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    x, y = sample_batch(data, gens, 7)
    assert x.shape == (2, 7, data.input_dim) and y.shape == (2, 7)
    assert x.dtype == data.x_train.dtype
    for r, seed in enumerate((5, 6)):
        idx = torch.randint(
            data.x_train.shape[0], (7,), generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(x[r], data.x_train[idx]) and torch.equal(y[r], data.y_train[idx])


def test_evaluate_matches_the_module_in_eval_mode(smoke):
    config, data = smoke
    model = _models(config, data, [0])[0]
    train_round(model, full_masks(model.state_dict()), data, config.train, _gens(config, [0], 0)[0])
    result = evaluate(model, data, batch_size=100)
    with torch.no_grad():
        logits = model.eval()(data.normalize(data.x_val))
    top5 = logits.topk(2, dim=1).indices  # two classes: top-k is top-2
    assert result.top1 == (logits.argmax(1) == data.y_val).float().mean().item()
    assert result.top5 == (top5 == data.y_val[:, None]).any(1).float().mean().item() == 1.0
    expected = torch.nn.functional.cross_entropy(logits, data.y_val).item()
    assert result.loss == pytest.approx(expected, rel=1e-5)


def test_divergence_names_the_replica(smoke):
    config, data = smoke
    models = _models(config, data, [0, 1])
    with torch.no_grad():
        models[1].layers[1].weight.fill_(float("nan"))
    masks = [full_masks(m.state_dict()) for m in models]
    with pytest.raises(
        TrainingDiverged, match="training loss of replica 1 became nan between steps 0 and 10"
    ):
        train_replicas(models, masks, data, config.train, _gens(config, [0, 1], 0))


def test_replica_arguments_must_align(smoke):
    config, data = smoke
    models = _models(config, data, [0, 1])
    with pytest.raises(ValueError, match="one entry per replica. Got 2, 1 and 2"):
        train_replicas(
            models,
            [full_masks(models[0].state_dict())],
            data,
            config.train,
            _gens(config, [0, 1], 0),
        )


def test_precision_options(smoke):
    config, data = smoke
    with precision_context("fp32", torch.device("cpu")):
        pass
    for precision in ("tf32", "bf16"):
        with pytest.raises(ConfigError, match=f"train.precision = '{precision}' needs a CUDA"):
            with precision_context(precision, torch.device("cpu")):
                pass
    with pytest.raises(ConfigError, match="must be one of fp32, tf32, bf16. Got 'fp16'"):
        with precision_context("fp16", torch.device("cpu")):
            pass
    with pytest.raises(ConfigError, match="train.precision"):
        smoke_config("train.precision=fp16")
    bf16 = smoke_config("train.precision=bf16")
    model = _models(bf16, data, [0])[0]
    with pytest.raises(ConfigError, match="needs a CUDA device; this run is on cpu"):
        train_round(model, full_masks(model.state_dict()), data, bf16.train, torch.Generator())


def test_folder_from_before_an_option_existed_resumes(tmp_path):
    """A run folder whose config.toml predates train.precision resumes: the missing key
    takes its default (the run folder format is unchanged for old folders)."""
    from imprint.imp import run_imp

    config = smoke_config("prune.max_rounds=1", "train.steps=20")
    run_imp(config, tmp_path, device="cpu", progress=False, log=lambda _: None)
    path = tmp_path / "config.toml"
    text = path.read_text()
    assert 'precision = "fp32"' in text
    path.write_text(text.replace('precision = "fp32"\n', ""))
    again = run_imp(config, tmp_path, device="cpu", progress=False, log=lambda _: None)
    assert [m["round"] for m in again.rounds] == [0, 1]


@pytest.mark.slow
def test_compiled_step_agrees_with_the_eager_step(smoke):
    """train.compile = true: the torch.compile'd step (10-30 s to compile) trains the
    same net as the eager one, up to float rounding."""
    config, data = smoke
    compiled = config.train.model_copy(update={"compile": True})
    models = _models(config, data, [0, 0])
    masks = full_masks(models[0].state_dict())
    eager = train_round(models[0], masks, data, config.train, _gens(config, [0], 0)[0])
    fused = train_round(models[1], masks, data, compiled, _gens(config, [0], 0)[0])
    for name, value in eager.final_state.items():
        torch.testing.assert_close(fused.final_state[name], value, rtol=1e-4, atol=1e-5)
    assert fused.best_top1 == pytest.approx(eager.best_top1, abs=0.02)


def test_small_cpu_steps_run_on_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = torch.device("cpu")
        with step_threads([144, 128, 4], 1, 256, cpu) as threads:  # the default config
            assert threads == torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored
        with step_threads([144, 128, 4], 16, 256, cpu) as threads:  # 16 replicas: 78M MACs
            assert threads == torch.get_num_threads() == 2
        with step_threads([3072, 1024, 1000], 1, 1000, cpu) as threads:
            assert threads == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("momentum", "seeds", "every"),
    [(0.0, [0], 3), (0.9, [0], 7), (0.9, [1, 2], 4)],
    ids=["plain", "momentum", "two-replicas"],
)
def test_resume_from_every_checkpoint_is_bitwise_identical(smoke, momentum, seeds, every):
    """Checkpoints at steps that split validation intervals, before and after the
    rewind step: resuming from each, with the round's starting models and fresh
    generators, ends with the uninterrupted round's weights, BN averages, curves and
    rewind state, bit for bit; taking checkpoints changes nothing either."""
    config, data = smoke
    train = config.train.model_copy(update={"momentum": momentum, "checkpoint_every": every})
    rewind = config.prune.rewind_step  # 5: checkpoints before and after it

    def round_from(resume=None, on_checkpoint=None):
        models = _models(config, data, seeds)
        masks = [
            magnitude_prune(m.state_dict(), full_masks(m.state_dict()), {0: 0.5}) for m in models
        ]
        for model, mask in zip(models, masks):
            model.load_state_dict(apply_masks(model.state_dict(), mask))
        return train_replicas(
            models,
            masks,
            data,
            train,
            _gens(config, seeds, 0),
            rewind_step=rewind,
            on_checkpoint=on_checkpoint,
            resume=resume,
        )

    plain = round_from()
    states = []
    watched = round_from(on_checkpoint=states.append)
    assert [s.step for s in states] == list(range(every, train.steps, every))
    for state in states:
        resumed = round_from(resume=state)
        for a, b, c in zip(plain, watched, resumed):
            assert a.curves == b.curves == c.curves, state.step
            assert a.best_step == c.best_step and a.final == c.final
            for name, value in a.final_state.items():
                assert torch.equal(value, b.final_state[name])
                assert torch.equal(value, c.final_state[name]), (state.step, name)
            for name, value in a.rewind_state.items():
                assert torch.equal(value, c.rewind_state[name]), (state.step, name)
    assert any(s.since_eval for s in states)  # some resumed mid-interval
    assert any(any(n.startswith("momentum.") for n in s.tensors) for s in states) == (momentum > 0)


def test_resume_state_must_fit_the_round(smoke):
    """A state that does not fit is refused by a ValueError naming the part."""
    config, data = smoke
    train = config.train.model_copy(update={"checkpoint_every": 10, "momentum": 0.9})
    rewind = config.prune.rewind_step  # 5: the state at step 10 holds the rewind state
    states = []
    model = _models(config, data, [0])[0]
    start = copy.deepcopy(model.state_dict())

    def run(**options):
        model.load_state_dict(start)
        gen = _gens(config, [0], 0)[0]
        return train_round(
            model, full_masks(start), data, train, gen, rewind_step=rewind, **options
        )

    run(on_checkpoint=states.append)
    state = states[0]
    run(resume=state)  # as it is, it fits

    def altered(step=None, **changes):
        tensors = {k: v for k, v in state.tensors.items() if k not in changes}
        tensors.update({k: v for k, v in changes.items() if v is not None})
        return dataclasses.replace(state, step=step or state.step, tensors=tensors)

    cases = [
        (altered(**{"generator.0": None}), "generator"),
        (altered(**{"net.weights.0": torch.zeros(1, 3, 3)}), "weights.0"),
        (altered(**{"momentum.0": None}), "momentum"),
        (altered(**{"loss_sum": torch.zeros(3)}), "loss_sum"),
        (altered(**{"bogus.0": torch.zeros(1)}), "unknown entries"),
        (altered(**{k: None for k in state.tensors if k.startswith("rewind.")}), "rewind"),
        (altered(step=train.steps), "inside this round"),
    ]
    for bad, words in cases:
        with pytest.raises(ValueError, match=words):
            run(resume=bad)
