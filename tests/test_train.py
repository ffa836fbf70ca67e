"""The training loop: replicas against separate runs, batches, evaluation, precision."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from imprint.config import ConfigError
from imprint.data import load_dataset
from imprint.engine import precision_context, step_threads
from imprint.imp import derive_seed
from imprint.model import build_model
from imprint.prune import apply_masks, full_masks, layer_names, magnitude_prune
from imprint.train import (
    TrainingDiverged,
    evaluate,
    sample_batch,
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


# Three replicas in one batched model against three single runs: the same arithmetic
# through different kernels (bmm over R = 3 against R = 1), whose summation order, and so
# rounding, the BLAS picks per shape and per CPU: bitwise equal on the AMD EPYC (AVX2)
# the project was developed on, not on an AVX-512 Xeon. Bitwise equality is promised only
# on one code path (train_round, resume: below); here float32 rounding bounds the
# difference. Per-op relative rounding u = 2^-24 ~ 6e-8; a K-term dot product (K <= 64:
# the batch, the widths) errs by up to K u ~ 4e-6 of the scale of its terms, typically
# sqrt(K) u ~ 5e-7. Over S = 80 steps (two rounds of 40) the weights' errors add up like
# a random walk, sqrt(S K) u ~ 4e-6 of their scale (the worst case, S K u ~ 3e-4, is
# far from what happens and would hide a wrong learning rate). Measured on the Xeon:
# at most 2.4e-7, ~4 u of a tensor's largest entry, with or without
# ATEN_CPU_CAPABILITY=avx2/default. Hence:
# - weights, BN state, rewind state: within 1e-5 of the tensor's scale (or of the
#   entry): 2.5x the random-walk estimate, ~40x the measured error; a 1e-3 change of
#   one replica's learning rate moves weights by ~2e-3 of their scale and fails it;
# - losses (means of 256 or 640 cross-entropies of logits that carry the weights'
#   error): rtol 1e-4;
# - accuracies count images: an image changes its top-1 class only when its top two
#   logits are within ~1e-5 of each other: with margins spread over ~1, about 1e-5 of
#   the images (256 per evaluation), so allowing two images per evaluation is generous;
# - masks: equal, provided the pruned round's threshold separates the kept and removed
#   magnitudes by more than twice the weight tolerance (asserted, so that an unlucky
#   near-tie would be reported as such and not as a difference of the code paths; the
#   smallest gap here is ~1e-4 of the scale).
WEIGHT_RTOL = 1e-5
LOSS_RTOL = 1e-4
IMAGES = 2  # top-1 / top-5 hits that may differ per evaluation


def _assert_state_close(actual: dict, expected: dict, where) -> None:
    """State dicts equal up to float32 rounding (integer counters exactly)."""
    assert actual.keys() == expected.keys(), where
    for name, value in expected.items():
        if not value.is_floating_point():
            assert torch.equal(actual[name], value), (where, name)
            continue
        scale = value.abs().max().item()
        torch.testing.assert_close(
            actual[name],
            value,
            rtol=WEIGHT_RTOL,
            atol=WEIGHT_RTOL * scale,
            msg=lambda m, name=name: f"{where} {name}: {m}",
        )


def _assert_curves_close(actual: list, expected: list, n_train: int, n_val: int, where) -> None:
    """Validation rows equal up to rounding: losses to LOSS_RTOL, accuracies to IMAGES."""
    assert len(actual) == len(expected), where
    for a, b in zip(actual, expected):
        assert a.keys() == b.keys() and a["step"] == b["step"], where
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=LOSS_RTOL), (where, a["step"], key)
        for key, n in (("train_top1", n_train), ("val_top1", n_val), ("val_top5", n_val)):
            assert abs(a[key] - b[key]) * n <= IMAGES + 1e-6, (where, a["step"], key)


def pruned_round(config, data, seeds, train, rates, resume=None, on_checkpoint=None):
    """One round of ``seeds`` after magnitude pruning at ``rates`` (per layer), with
    the config's rewind step; resumed from ``resume`` or checkpointed when given."""
    models = _models(config, data, seeds)
    masks = [magnitude_prune(m.state_dict(), full_masks(m.state_dict()), rates) for m in models]
    for model, mask in zip(models, masks):
        model.load_state_dict(apply_masks(model.state_dict(), mask))
    return train_replicas(
        models,
        masks,
        data,
        train,
        _gens(config, seeds, 0),
        rewind_step=config.prune.rewind_step,
        on_checkpoint=on_checkpoint,
        resume=resume,
    )


@pytest.mark.numerics
def test_replicas_give_what_separate_runs_give(smoke):
    """Three seeds in one batched model against three single runs, over two IMP rounds
    with momentum: the same curves, weights and masks up to float32 rounding (see
    WEIGHT_RTOL above)."""
    config, data = smoke
    train = config.train.model_copy(update={"momentum": 0.9})
    seeds = [0, 1, 2]
    rewind = config.prune.rewind_step
    rates = {0: 0.3, 1: 0.3}

    def imp_rounds(group: list[int]):
        """Round 0 and one pruned round for the seeds in ``group``, trained together."""
        models = _models(config, data, group)
        masks = [full_masks(m.state_dict()) for m in models]
        dense = train_replicas(
            models, masks, data, train, _gens(config, group, 0), rewind_step=rewind
        )
        pruned_masks = [magnitude_prune(r.final_state, m, rates) for r, m in zip(dense, masks)]
        for model, result, mask in zip(models, dense, pruned_masks):
            model.load_state_dict(apply_masks(result.rewind_state, mask))
        pruned = train_replicas(models, pruned_masks, data, train, _gens(config, group, 1))
        return dense, pruned, pruned_masks

    n_train, n_val = train.eval_every * train.batch_size, data.x_val.shape[0]
    together = imp_rounds(seeds)
    for r, seed in enumerate(seeds):
        alone = imp_rounds([seed])
        dense, dense_alone = together[0][r], alone[0][0]
        _assert_curves_close(dense.curves, dense_alone.curves, n_train, n_val, (seed, 0))
        _assert_state_close(dense.final_state, dense_alone.final_state, (seed, 0))
        _assert_state_close(dense.rewind_state, dense_alone.rewind_state, (seed, "rewind"))
        # the masks could only differ by a near-tie at the pruning threshold: there is none
        mask = alone[2][0]
        for layer in rates:
            names = layer_names(layer)
            score = torch.cat([dense_alone.final_state[n].abs().flatten() for n in names])
            kept = torch.cat([mask[n].flatten() for n in names])
            gap = score[kept].min() - score[~kept].max()
            tolerance = WEIGHT_RTOL * score.max().item()
            assert gap > 2 * tolerance, (seed, layer, gap.item(), "near-tie: change the seed")
        for name, value in mask.items():
            assert torch.equal(together[2][r][name], value), (seed, name)
        pruned, pruned_alone = together[1][r], alone[1][0]
        _assert_curves_close(pruned.curves, pruned_alone.curves, n_train, n_val, (seed, 1))
        _assert_state_close(pruned.final_state, pruned_alone.final_state, (seed, 1))
    # different seeds really are different runs
    assert together[0][0].curves != together[0][1].curves


@pytest.mark.numerics
def test_train_round_is_one_replica(smoke):
    """train_round is train_replicas with R = 1: one code path, so bitwise."""
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


@pytest.mark.numerics
def test_evaluate_matches_the_module_in_eval_mode(smoke):
    config, data = smoke
    model = _models(config, data, [0])[0]
    train_round(model, full_masks(model.state_dict()), data, config.train, _gens(config, [0], 0)[0])
    result = evaluate(model, data, batch_size=100)
    with torch.no_grad():
        logits = model.eval()(data.normalize(data.x_val))
    top5 = logits.topk(2, dim=1).indices  # two classes: top-k is top-2
    # The module (addmm) and the engine (bmm, batches of 100) round differently, by
    # ~1e-6 of the logits: an image may change its top-1 class only if its two logits
    # are closer than that (1e-4 here, with a margin), so only those may differ.
    correct = int((logits.argmax(1) == data.y_val).sum())
    top2 = logits.topk(2, dim=1).values
    near_ties = int((top2[:, 0] - top2[:, 1] <= 1e-4 * logits.abs().max()).sum())
    assert abs(result.top1 * len(data.y_val) - correct) <= near_ties + 1e-6
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


@pytest.mark.numerics
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
    assert config.prune.rewind_step == 5  # checkpoints before and after it

    def round_from(resume=None, on_checkpoint=None):
        return pruned_round(config, data, seeds, train, {0: 0.5}, resume, on_checkpoint)

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
