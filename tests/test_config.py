from __future__ import annotations

import pytest
from pydantic import ValidationError

from imprint.config import ConfigError, apply_overrides, config_to_dict, load_config, parse_config
from tests.conftest import CONFIGS


def test_shipped_configs_load():
    for path in [CONFIGS / "default.toml", CONFIGS / "smoke.toml"]:
        config = load_config(path)
        assert config.prune.procedure == "imp"


def test_paper_defaults():
    config = parse_config({})
    assert config.model.hidden == [1024, 1024, 1024]
    assert config.train.lr == 0.1 and config.train.batch_size == 1000
    assert config.train.steps == 100_000 and config.train.eval_every == 100
    assert config.prune.fraction == 0.3 and config.prune.rewind_step == 1000
    assert config.prune.scope == "layer" and config.prune.exclude_layers == [-1]
    assert config.prune.min_connected_fraction == 0.2
    assert config.model.bn_momentum == 0.01


def test_config_is_frozen():
    config = parse_config({})
    with pytest.raises(ValidationError, match="frozen"):
        config.train.lr = 1.0  # type: ignore[misc]


def test_overrides_are_typed():
    config = load_config(
        CONFIGS / "smoke.toml",
        ["train.steps=20", "prune.scope=global", "train.lr=0.05", "model.hidden=[8, 4]"],
    )
    assert config.train.steps == 20 and config.train.lr == 0.05
    assert config.prune.scope == "global" and config.model.hidden == [8, 4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stpes=3", "unknown key 'train.stpes'. Did you mean 'train.steps'? Allowed keys"),
        ("train.lr=-1", "'train.lr': Input should be greater than 0. Got -1."),
        ("prune.scope=local", "'prune.scope' must be one of 'layer' or 'global'. Got 'local'."),
        ("prune.procedure=magic", "prune.procedure must be one of imp, oneshot"),
        ("train.steps=true", "'train.steps' must be a number, not true or false. Got true."),
        ("model.hidden=[true, 2]", "'model.hidden' must be a number, not true or false."),
        ("seeds.group=[true, false]", "'seeds.group' must be a number, not true or false."),
        ("data.gain=inf", "'data.gain': Input should be a finite number. Got inf."),
        ("model.bn_eps=inf", "'model.bn_eps': Input should be a finite number."),
        ("train.weight_decay=inf", "'train.weight_decay': Input should be a finite number."),
        ("train.lr=nan", "'train.lr': Input should be a finite number."),
        ("prune.fraction=1.5", "'prune.fraction': Input should be less than 1. Got 1.5."),
        ("data.name=cifar", "'data.name' must be one of 'nlgp', 'imagenet32', 'imagenet64'"),
        ("data.gainn=2", "unknown key 'data.gainn'. Did you mean 'data.gain'? Allowed keys here"),
        (
            "prune.rewind_step=40",
            "prune.rewind_step must be smaller than train.steps (40). Got 40.",
        ),
        ("prune.procedure=reinit", "prune.reference_run must name a finished IMP run folder"),
        (
            "prune.layer_fractions=[0.3]",
            "prune.layer_fractions must have one rate per linear layer (3)",
        ),
        ("prune.exclude_layers=[5]", "prune.exclude_layers entries must be in [-3, 2]. Got 5."),
        ("model.hidden=[]", "model.hidden must list at least one hidden width"),
        ("bogus.key=1", "unknown key 'bogus'"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "smoke.toml", [override])
    assert message in str(info.value)
    # The value came from --set: the message says so (cross-key checks name the file).
    assert f"--set {override}" in str(info.value) or "smoke.toml" in str(info.value)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="--set expects key=value"):
        load_config(CONFIGS / "smoke.toml", ["train.steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)


def test_resolved_document_round_trips():
    config = load_config(CONFIGS / "default.toml")
    assert parse_config(config_to_dict(config)) == config


def test_apply_overrides_does_not_touch_input():
    doc = {"train": {"steps": 3}}
    out = apply_overrides(doc, ["train.steps=5"])
    assert doc["train"]["steps"] == 3 and out["train"]["steps"] == 5
