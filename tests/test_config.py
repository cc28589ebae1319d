"""Configuration errors: one line that names the key and what is allowed."""

import copy
import re

import pytest
from conftest import REPO, run_snakemake

from melstore.errors import ConfigError
from melstore.features.presets import PRESETS, resolve_feature_set
from melstore.pipeline.plan import Plan

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
BASE = {
    "dataset": {"name": "demo", "layout": "urbansound8k", "root": "somewhere/resources/demo"},
    "features": ["seed", "mine"],
    "feature_sets": {"mine": {"preset": "seed", "n_mels": 64}},
}


def plan_for(**changes):
    config = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    return Plan.from_config(config, schema_path=SCHEMA)


def test_defaults_are_filled_in_and_every_parameter_is_explicit():
    plan = plan_for()
    assert plan.config["shard_size"] == 20000 and plan.config["on_error"] == "skip"
    mine = plan.feature_sets["mine"].to_dict()
    assert mine == {**PRESETS["seed"], "n_mels": 64}
    assert None not in [mine[k] for k in ("fmin", "fmax", "htk", "norm")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "config: unknown key 'colour'; allowed keys: dataset, features"),
        ({"shard_size": "big"}, "config key 'shard_size': 'big' is not of type 'integer'"),
        ({"dataset__layout": "kaldi"}, "config key 'dataset.layout': 'kaldi' is not allowed; "
                                       "choose one of: urbansound8k, esc50, folder"),
        ({"on_error": "ignore"}, "choose one of: skip, fail"),
        ({"feature_sets__mine__duration": -3}, "'feature_sets.mine.duration': -3 is less than"),
        ({"feature_sets__mine__nmels": 3}, "'feature_sets.mine': unknown key 'nmels'"),
        ({"features": ["seed", "nope"]}, "unknown feature set 'nope'"),
        ({"feature_sets__mine__preset": "vgg"}, "'feature_sets.mine.preset': unknown preset"),
        ({"feature_sets__mine__fmax": 20000.0}, "'feature_sets.mine.fmax': 20000.0 exceeds the "
                                                "Nyquist frequency sr/2 = 11025.0"),
        ({"dataset__root": "x"}, "config key 'dataset.root': x is not a directory"),
        ({"dataset__layout": "folder"}, "'dataset.layout': somewhere/resources/demo holds the "
                                        "generated demo, which is in the urbansound8k layout"),
        ({"dataset__generate": "demo"}, "config key 'dataset': unknown key 'generate'"),
        ({"dataset__source_column": "fsid"}, "config key 'dataset.source_column': 'fsid' is not "
                                             "a column of the dataset's metadata; columns: "
                                             "slice_file_name, fsID, start"),
        ({"dataset__root": "."}, "config key 'dataset.root': "),
        ({"dataset__root": "results/data"}, "overlaps the workflow's output folder"),
        ({"feature_sets__mine__deltas": True, "feature_sets__mine__duration": None},
         "'feature_sets.mine.deltas': needs a fixed duration: the concatenated layout"),
        ({"feature_sets__mine__delta_width": 4}, "'feature_sets.mine.delta_width': 4 must be odd"),
        ({"feature_sets__mine__deltas": True, "feature_sets__mine__duration": 0.1},
         "'feature_sets.mine.delta_width': 9 exceeds the 5 frames of a clip"),
        ({"feature_sets__mine__preset": "vggish", "feature_sets__mine__center": True},
         "'feature_sets.mine.kind': vggish follows VGGish's mel_features: htk true, center false"),
        ({"feature_sets__mine__kind": "mfcc"}, "'feature_sets.mine.kind': 'mfcc' is not allowed; "
                                              "choose one of: logmel, logspec, vggish"),
        ({"feature_sets__seed": {"preset": "seed", "n_mels": 64}},
         "config key 'feature_sets.seed': 'seed' is the name of a built-in preset; give your "
         "feature set another name (for example seed_custom)"),
        ({"feature_sets__vggish": {"preset": "vggish", "n_mels": 32}},  # not among features
         "config key 'feature_sets.vggish': 'vggish' is the name of a built-in preset"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        plan_for(**changes)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_no_feature_set_may_take_a_preset_name_even_when_another_is_resolved(preset):
    feature_sets = {"mine": {"preset": "seed", "n_mels": 64}, preset: {"preset": "seed"}}
    with pytest.raises(ConfigError, match=rf"^config key 'feature_sets\.{preset}': '{preset}' is"):
        resolve_feature_set("mine", feature_sets)
    with pytest.raises(ConfigError, match=f"'feature_sets.{preset}'"):
        plan_for(features=["mine"], feature_sets=feature_sets)


@pytest.mark.parametrize(
    ("given", "listed"),
    [("seed", "seed"), ("seed,logspec", "seed,logspec"), ("seed, mine", "seed,mine")],
)
def test_features_given_as_one_string_get_the_command_line_list_syntax(given, listed):
    from snakemake.cli import parse_config

    with pytest.raises(ConfigError) as err:
        plan_for(features=parse_config([f"features={given}"])["features"])
    assert str(err.value) == (
        f"config key 'features': {given!r} is not a list; "
        f"on the command line write --config 'features=[{listed}]'"
    )
    suggested = re.search(r"--config '(.+)'$", str(err.value)).group(1)
    plan = plan_for(features=parse_config([suggested])["features"])  # snakemake's own parsing
    assert list(plan.feature_sets) == listed.split(",")


def test_a_feature_set_without_preset_must_give_every_parameter():
    with pytest.raises(ConfigError, match="missing amin, center"):
        resolve_feature_set("bare", {"bare": {"kind": "logmel", "sr": 16000}})


def test_snakemake_shows_config_errors_as_one_line_without_traceback(tmp_path):
    config = copy.deepcopy(BASE) | {"shard_size": 0}
    result = run_snakemake(tmp_path, config, "-n", check=False)
    assert result.returncode != 0
    assert "melstore: config key 'shard_size': 0 is less than the minimum of 1" in result.stderr
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr
