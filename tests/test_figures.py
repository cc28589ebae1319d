"""Figures are truthful and readable: labelled axes with units, no text overlapping or cut off."""

import itertools

import librosa
import numpy as np
import pytest
from conftest import standalone_copy, tone, write_audio
from matplotlib.backends.backend_agg import FigureCanvasAgg

import melstore
from melstore.features.presets import PRESETS, resolve_feature_set
from melstore.pipeline.extract import ShardJob, extract_shard
from melstore.pipeline.gather import GatherJob, gather_store
from melstore.report.figures import (
    DB_CAPTION,
    class_examples,
    class_examples_figure,
    clip_figure,
    counts_figure,
    power_and_log,
    power_vs_db_figure,
    value_label,
)
from melstore.store.format import FAILURE_COLUMNS, Storage, StoreWriter, encode_text

FIGURES = {
    "clip": lambda store: clip_figure(store, 5),
    "classes": class_examples_figure,
    "power_vs_db": power_vs_db_figure,
    "counts": counts_figure,
}
# What each kind stores: dB of mel power, ln of the PSD, ln of mel + amin.
UNIT_OF_KIND = {"logmel": "dB re ", "logspec": "ln(PSD + ", "vggish": "ln(mel + "}
MEL_AXIS_OF_KIND = {"logmel": True, "logspec": False, "vggish": True}
TONES = {"low/a.wav": 220.0, "low/b.wav": 330.0, "high/c.wav": 2500.0}  # path: pitch in Hz


@pytest.fixture(scope="module", params=["seed", "seed64", "logspec"])
def store(request, demo_build):
    # The demo store's dataset_root is relative to its work directory, as in the report job.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(demo_build[0])
        with melstore.open(f"results/demo/{request.param}.h5") as opened:
            yield opened


def drawn_texts(fig):
    """Every piece of text the figure draws, with its box in pixels."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts)
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        texts += [ax.title, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            texts.append(axis.label)
            low, high = sorted(axis.get_view_interval())
            texts += [
                tick.label1
                for tick in axis.get_major_ticks()
                if low <= tick.get_loc() <= high  # ticks outside the view are not drawn
            ]
    return [
        (text.get_text(), text.get_window_extent(renderer))
        for text in texts
        if text.get_visible() and text.get_text().strip()
    ]


def assert_readable(fig):
    """No text is cut off by the figure's edge or overlaps another."""
    texts = drawn_texts(fig)
    width, height = fig.canvas.get_width_height()
    outside = [
        s for s, box in texts if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height
    ]
    assert outside == []
    overlapping = [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(texts, 2)
        if box_a.overlaps(box_b)
    ]
    assert overlapping == []


@pytest.mark.parametrize("name", FIGURES)
def test_no_text_overlaps_or_leaves_the_figure(store, name):
    assert_readable(FIGURES[name](store))


@pytest.mark.parametrize("n_classes", [7, 50])
def test_class_grids_with_an_empty_slot_or_fifty_classes_stay_readable(tmp_path, n_classes):
    # ESC-50's 50 classes fill a 10 x 5 grid; 7 classes leave a slot empty in a 2 x 4 one
    params = resolve_feature_set("seed", {}).to_dict()
    n_frames, rng = 130, np.random.default_rng(0)
    mel_centres = librosa.mel_frequencies(n_mels=130, fmax=11025)[1:-1]
    path = tmp_path / "grid.h5"
    with StoreWriter(path, n_bins=128, n_frames=n_frames, n_clips=n_classes) as writer:
        for _ in range(n_classes):
            writer.append(rng.uniform(-80, 0, (128, n_frames)).astype(np.float32))
        names = [f"class_{i}_{'x' * (i % 12)}" for i in range(n_classes)]
        writer.finish(
            metadata={"clip_id": [f"{i}-a-b" for i in range(n_classes)], "class": names,
                      "n_frames_valid": [n_frames] * n_classes},
            failures={c: np.array([], dtype=object) for c in FAILURE_COLUMNS},
            attrs={"dataset": "esc50", "feature_set": "seed", "params": params},
            axes={"frequency": mel_centres, "time": np.arange(n_frames) / 43},
        )  # fmt: skip
    with melstore.open(path) as store:
        fig = class_examples_figure(store)
        assert len([ax for ax in fig.axes if ax.get_visible()]) == n_classes + 1  # + colour bar
        assert_readable(fig)


@pytest.mark.parametrize("name", ["clip", "classes", "power_vs_db"])
def test_spectrogram_axes_are_labelled_with_units(store, name):
    fig = FIGURES[name](store)
    drawn = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert {ax.get_xlabel() for ax in drawn} - {""} == {"Time (s)"}
    mel = store.params["kind"] == "logmel"
    assert {ax.get_ylabel() for ax in drawn} - {""} == {
        "Mel band centre (Hz)" if mel else "Frequency (Hz)"
    }
    colour_bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    unit = (
        ("dB re the clip's peak" if store.params["ref"] == "max" else "dB re 1 (full-scale power)")
        if mel
        else "ln(PSD + 1e-10)"
    )
    assert unit in colour_bars


def test_the_clip_title_names_the_id_the_class_and_the_parameters(store):
    fig = clip_figure(store, "100000-0-0-0")
    assert fig.get_suptitle() == "100000-0-0-0 · class tone"
    subtitle = fig.axes[0].get_title()
    assert subtitle.startswith(
        f"{store.feature_set}: {store.params['kind']}, sr {store.params['sr']} Hz"
    )
    assert f"hop {store.params['hop_length']}" in subtitle


def test_recomputed_power_gives_the_stored_values_back(store):
    row = 0
    power, log, mismatch = power_and_log(store, row)
    assert power.shape == store.clip(row).shape and (power >= 0).all()
    assert mismatch < 1e-3
    if store.params["kind"] == "logmel":  # the dB version is power_to_db of the linear one
        import librosa

        p = store.params
        ref = np.max if p["ref"] == "max" else float(p["ref"])
        expected = librosa.power_to_db(power, ref=ref, amin=p["amin"], top_db=p["top_db"])
        np.testing.assert_allclose(log, expected, atol=1e-3)


def test_the_seed_question_figure_carries_its_one_line_caption(demo_build):
    with melstore.open(demo_build[0] / "results/demo/seed.h5") as store:
        fig = power_vs_db_figure(store)
    assert fig.get_supxlabel() == DB_CAPTION and "\n" not in DB_CAPTION
    left, right = (ax for ax in fig.axes if ax.get_label() != "<colorbar>")
    assert left.get_title() == "mel power, linear colour scale"
    assert right.get_title().startswith("power_to_db, as stored (largest difference")


def test_class_examples_are_the_longest_clip_of_each_class(store):
    examples = class_examples(store)
    meta = store.metadata
    assert list(examples["class"]) == sorted(meta["class"].unique())
    for row, example in examples.iterrows():
        same_class = meta[meta["class"] == example["class"]]
        assert example["n_frames_valid"] == same_class["n_frames_valid"].max()
        assert row == same_class["n_frames_valid"].idxmax()


def test_a_changed_source_is_refused_instead_of_drawn(demo_build, tmp_path):
    import h5py

    copy = standalone_copy(demo_build[0] / "results/demo/seed.h5", tmp_path / "seed.h5")
    with h5py.File(copy, "a") as f:
        f.attrs["dataset_root"] = str(demo_build[0] / "resources/demo")
        f["metadata/source_xxh128"][0] = "0" * 32
    with melstore.open(copy) as store, pytest.raises(melstore.MelstoreError, match="changed since"):
        power_and_log(store, 0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_has_a_colour_bar_label_in_the_unit_it_stores(preset):
    params = resolve_feature_set(preset, {}).to_dict()
    label = value_label(params)
    assert label.startswith(UNIT_OF_KIND[params["kind"]])
    assert label.removeprefix(UNIT_OF_KIND[params["kind"]]).strip(" )")


def test_vggish_values_are_labelled_as_the_log_of_mel_plus_its_offset():
    assert value_label(PRESETS["vggish"]) == "ln(mel + 0.01)"


@pytest.fixture(scope="module")
def tones_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    for i, (path, pitch) in enumerate(TONES.items()):
        write_audio(root / path, tone(22050, 1.0 + 0.5 * i, freq=pitch, seed=i), 22050)
    return root


@pytest.fixture(scope="module", params=sorted(PRESETS))
def preset_store(request, tones_root, tmp_path_factory):
    """A few clips of each built-in preset, extracted and gathered as the workflow's jobs do."""
    preset, paths = request.param, list(TONES)
    params = resolve_feature_set(preset, {}).to_dict()
    work = tmp_path_factory.mktemp(preset)
    entries = [(path, path, "") for path in paths]
    build = {"params": params, "storage": Storage().to_dict(), "versions": {}, "code": ""}
    extract_shard(ShardJob(entries, tones_root, work / "shard.h5", preset, build, digest="d"))
    manifest = {  # as Manifest.store_columns gives it: text as UTF-8 bytes
        "clip_id": encode_text(paths),
        "path": encode_text(paths),
        "class": encode_text([path.split("/")[0] for path in paths]),
    }
    dataset = {"name": "tones", "layout": "folder", "root": str(tones_root), "metadata": None}
    store = work / "store.h5"
    gather_store(GatherJob(manifest, [work / "shard.h5"], store, store, dataset, preset, params))
    with melstore.open(work / "store.h5") as store:
        yield store


@pytest.mark.parametrize(
    "draw",
    [lambda store: clip_figure(store, "high/c.wav"), class_examples_figure, power_vs_db_figure],
    ids=["clip", "classes", "power_vs_db"],
)
def test_every_preset_store_is_drawn_readably_in_its_own_unit(preset_store, draw):
    kind = preset_store.params["kind"]
    fig = draw(preset_store)
    colour_bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert any(label.startswith(UNIT_OF_KIND[kind]) for label in colour_bars)
    drawn = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    mel = MEL_AXIS_OF_KIND[kind]
    assert {ax.get_ylabel() for ax in drawn} - {""} == {
        "Mel band centre (Hz)" if mel else "Frequency (Hz)"
    }
    assert_readable(fig)


def test_every_preset_store_is_recomputed_from_its_audio(preset_store):
    power, _, mismatch = power_and_log(preset_store, 2)
    assert (power >= 0).all() and mismatch < 1e-3
    if preset_store.params["kind"] == "vggish":  # ln(mel + 0.01) is at least ln(0.01)
        assert preset_store.clip(2).min() >= np.log(0.01) - 1e-5
