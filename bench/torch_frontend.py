"""Speed and accuracy of the PyTorch front end (``melstore.torch.FrontEnd``) on corpus clips.

One invocation synthesises the first clips of the UrbanSound8K-shaped corpus's
plan that last at least ``--seconds`` (in memory: no files are written),
downmixes them and resamples them as the workflow does, then:

- times the module on one batch of them, on one CPU thread, against the numpy
  ``FeatureExtractor`` called on each clip in a loop (what a numpy inference
  front end does), both at the feature set's sample rate, for a preset cut to
  ``--seconds``;
- measures, for every preset, the largest difference between the module's
  features and the numpy extractor's (which the workflow stores), in dB: within
  60 dB of each clip's peak, and below that.

Run ``python -m bench.torch_frontend --help`` from the repository root.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import click
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bench.corpus import DEFAULT_SEED, plan, synthesize
from bench.run import machine, publish
from melstore.features.audio import downmix
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.kinds import feature_kind
from melstore.features.presets import PRESETS, resolve_feature_set
from melstore.torch import FrontEnd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "torch-frontend.md"
NEAR_PEAK_DB = 60  # the range below each clip's peak that the module is held to 0.01 dB in


def corpus_clips(*, n_clips: int, seconds: float) -> list[tuple[np.ndarray, int]]:
    """The first ``n_clips`` planned clips of at least ``seconds``: mono audio and its rate."""
    long_enough = [c for c in plan(seed=DEFAULT_SEED) if c.frames >= seconds * c.samplerate]
    return [
        (downmix(synthesize(clip, base_seed=DEFAULT_SEED)), clip.samplerate)
        for clip in long_enough[:n_clips]
    ]


def front_ends(params: FeatureParams) -> tuple[FeatureExtractor, FrontEnd]:
    """The numpy extractor and the torch module of one feature set, from one front end."""
    frontend = Frontend.build(params)
    return FeatureExtractor(frontend), FrontEnd(frontend=frontend)


def seconds_per_batch(compute, *, repeats: int) -> list[float]:
    """Wall seconds of ``compute()``, once per repeat, after one unmeasured warm-up call."""
    compute()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compute()
        times.append(time.perf_counter() - start)
    return times


def speed(clips, *, preset: str, seconds: float, repeats: int) -> dict:
    """Clips per second of the numpy loop and of the module on one batch of ``clips``."""
    params = resolve_feature_set("bench", {"bench": {"preset": preset, "duration": seconds}})
    extractor, module = front_ends(params)
    waveforms = [extractor.prepare(y, sr=sr)[0] for y, sr in clips]
    batch = torch.from_numpy(np.stack(waveforms))

    def numpy_loop():
        return [extractor(y, sr=params.sr).features for y in waveforms]

    def torch_batch():
        with torch.inference_mode():
            return module(batch)

    with threadpool_limits(1):
        timings = {
            "numpy FeatureExtractor, one clip at a time": seconds_per_batch(
                numpy_loop, repeats=repeats
            ),
            f"FrontEnd, one batch of {len(clips)}": seconds_per_batch(torch_batch, repeats=repeats),
        }
    return {name: [len(clips) / t for t in times] for name, times in timings.items()}


def accuracy(clips, *, preset: str) -> tuple[float, float, float | None]:
    """Largest dB difference of the module from the numpy extractor on ``clips``.

    Returns
    -------
    (float, float, float or None)
        Within NEAR_PEAK_DB of each clip's peak, further below, and on the
        delta channel (dB per frame; None without deltas).
    """
    params = resolve_feature_set(preset, {})
    extractor, module = front_ends(params)
    waveforms = [extractor.prepare(y, sr=sr)[0] for y, sr in clips]
    expected = np.stack([extractor(y, sr=params.sr).features for y in waveforms])
    with torch.inference_mode():
        computed = module(torch.from_numpy(np.stack(waveforms))).numpy()
    delta_error = None
    if params.deltas:
        delta_error = float(np.abs(computed[:, 1] - expected[:, 1]).max())
        computed, expected = computed[:, 0], expected[:, 0]
    per_unit = 1.0 if feature_kind(params.kind).decibels else 20 / (params.power * math.log(10))
    errors = np.abs(computed - expected) * per_unit
    level = expected * per_unit
    near_peak = level >= level.max(axis=(-2, -1), keepdims=True) - NEAR_PEAK_DB
    return float(errors[near_peak].max()), float(errors[~near_peak].max(initial=0.0)), delta_error


@click.command(context_settings={"show_default": True})
@click.option("--clips", type=click.IntRange(min=1), default=32, help="Clips in the batch.")
@click.option("--seconds", type=click.FloatRange(min=0.1), default=4.0,
              help="Seconds of each clip (the corpus's longest are 4 s).")  # fmt: skip
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="seed",
              help="The preset timed, cut to --seconds.")  # fmt: skip
@click.option("--repeats", type=click.IntRange(min=1), default=5,
              help="Timed runs of each, after one warm-up.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              help="Markdown report to write.")  # fmt: skip
def main(clips: int, seconds: float, preset: str, repeats: int, out: Path) -> None:
    """Time the torch front end against the numpy extractor, measure its error, write --out."""
    torch.set_num_threads(1)
    audio = corpus_clips(n_clips=clips, seconds=seconds)
    rates = speed(audio, preset=preset, seconds=seconds, repeats=repeats)
    numpy_rate, torch_rate = (statistics.median(r) for r in rates.values())
    lines = [
        f"# PyTorch front end: {clips} clips of {seconds:g} s, one thread",
        "",
        f"Command: `python -m bench.torch_frontend --clips {clips} --seconds {seconds:g} "
        f"--preset {preset} --repeats {repeats}`",
        "",
        f"The first {clips} clips of the corpus plan lasting at least {seconds:g} s, synthesised,",
        "downmixed and resampled to the feature set's rate as the workflow does; the",
        f"`{preset}` preset cut to {seconds:g} s. Clips per second: median of {repeats} timed runs",
        "(range in brackets), after one warm-up, with torch and numpy on one thread.",
        "",
        "| front end | clips per second |",
        "|---|---:|",
        *(
            f"| {name} | {statistics.median(r):.0f} ({min(r):.0f}–{max(r):.0f}) |"
            for name, r in rates.items()
        ),
        "",
        f"The module is {torch_rate / numpy_rate:.2f}× the numpy loop's speed.",
        "",
        "## Difference from the stored features",
        "",
        f"The module against the numpy extractor (what the workflow stores) on the same {clips}",
        "clips, for each preset at its own duration: the largest difference, in dB (natural",
        f"logs converted), within {NEAR_PEAK_DB} dB of each clip's peak and further below it,",
        "and on the delta channel (dB per frame).",
        "",
        f"| preset | within {NEAR_PEAK_DB} dB of the peak | below | delta |",
        "|---|---:|---:|---:|",
    ]
    for name in PRESETS:
        near_peak, below, delta_error = accuracy(audio, preset=name)
        delta_cell = "–" if delta_error is None else f"{delta_error:.5f}"
        lines.append(f"| `{name}` | {near_peak:.5f} | {below:.5f} | {delta_cell} |")
    lines += ["", "## Machine", *machine(), f"- torch {torch.__version__}"]
    publish("\n".join(lines) + "\n", out)


if __name__ == "__main__":
    main()
