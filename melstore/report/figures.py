"""Figures of a store, for ``melstore show`` and the Snakemake report.

Figures are built on :class:`matplotlib.figure.Figure` objects, not pyplot,
so they render with the Agg canvas whatever backend a caller has chosen, and
leave no global state behind. Layout is matplotlib's constrained layout, or
fixed margins for the class grid, so titles, labels and colour bars never
overlap (``tests/test_figures.py`` checks every text box).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from melstore.errors import MelstoreError
from melstore.features.audio import decode, file_checksum
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.kinds import feature_kind
from melstore.files import atomic_path
from melstore.store.reader import UNLABELLED_NAME, Store

CMAP = "magma"
# mel axes mark the top 5 octaves in range, as librosa's "mel" axis does (512 ... 8192 Hz)
MEL_TICKS_HZ = tuple(2**k for k in range(5, 16))
GRID_COLUMNS = 5
GRID_MAX_CLASSES = 50  # ESC-50 fits; beyond that the panels get too small to read
# The class grid's layout, in inches: margins, gaps between panels, the room a time
# axis takes, the colour bar, and the title's distance from the top.
GRID_MARGINS = {"left": 0.85, "right": 1.25, "bottom": 0.6, "top": 0.95, "col_gap": 0.25,
                "row_gap": 0.45, "axis": 0.45, "bar_gap": 0.25, "bar_width": 0.15,
                "title": 0.1}  # fmt: skip
# One line for the seed question: why a CNN is trained on the log version.
DB_CAPTION = (
    "Linear: a few loud bins hold nearly all the power and the rest looks black. "
    "dB shows the quiet structure and makes gain an offset: CNNs are trained on dB."
)
LN_CAPTION = (
    "Linear: a few loud bins hold nearly all the power and the rest looks black. "
    "The log shows the quiet structure and makes gain an offset: CNNs are trained on it."
)


def describe_params(params: Mapping) -> str:
    """One line naming the parameters that shape a feature set's picture."""
    kind = feature_kind(params["kind"])
    parts = [f"{params['kind']}", f"sr {params['sr']} Hz", f"n_fft {params['n_fft']}"]
    parts.append(f"hop {params['hop_length']}")
    if kind.mel_bands:
        parts.append(f"{params['n_mels']} mels {params['fmin']:g}–{params['fmax']:g} Hz")
    if kind.decibels:
        parts.append(f"ref {params['ref']}")
        parts.append(f"top_db {params['top_db']}")
    else:
        parts.append(kind.value_label(params))
    if params.get("deltas"):
        parts.append("deltas")
    return ", ".join(parts)


def value_label(params: Mapping) -> str:
    """What the stored values are, with their unit (for colour bars): dB or a natural log.

    Raises
    ------
    ConfigError
        For a ``kind`` this melstore does not know.
    """
    return feature_kind(params["kind"]).value_label(params)


def draw_spectrogram(ax, values: np.ndarray, *, params: Mapping, axes, **kwargs):
    """Draw one clip's (bins, frames) matrix with labelled frequency and time axes.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    values : np.ndarray
        (n_bins, n_frames) values to show.
    params : mapping
        The store's parameters (decide the frequency scale).
    axes : melstore.store.reader.Axes
        Frequencies of the rows and times of the frames.
    **kwargs
        Passed on to :func:`librosa.display.specshow` (``vmin``, ``vmax``...).

    Returns
    -------
    matplotlib.collections.QuadMesh
    """
    import librosa.display

    mel = feature_kind(params["kind"]).mel_bands
    # mel bands are evenly spaced in mel: against their index, labelled in Hz, they
    # draw like y_axis="mel" without its slow non-affine transform or numba
    bands = np.arange(len(axes.frequency))
    mesh = librosa.display.specshow(
        values,
        ax=ax,
        x_coords=axes.time[: values.shape[-1]],
        y_coords=bands if mel else axes.frequency,
        x_axis="s",
        y_axis=None if mel else "linear",
        sr=params["sr"],
        hop_length=params["hop_length"],
        cmap=kwargs.pop("cmap", CMAP),
        **kwargs,
    )
    if mel:
        hz = [f for f in MEL_TICKS_HZ if axes.frequency[0] <= f <= axes.frequency[-1]][-5:]
        ax.set_yticks(np.interp(hz, axes.frequency, bands), labels=[f"{f:g}" for f in hz])
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Mel band centre (Hz)" if mel else "Frequency (Hz)")
    return mesh


def static_channel(clip: np.ndarray) -> np.ndarray:
    """Channel 0 (the log spectrogram itself) of a clip stored with deltas."""
    return clip[0] if clip.ndim == 3 else clip


def clip_figure(store: Store, key: int | str) -> Figure:
    """One clip: its spectrogram, a colour bar in the stored unit, a title with id, class, params.

    Parameters
    ----------
    store : Store
    key : int or str
        Feature row or clip id.
    """
    row = store.row(key)
    meta = store.metadata.iloc[row]
    clip = store.clip(row)
    fig = Figure(figsize=(8, 4.6), layout="constrained")
    ax = fig.add_subplot()
    mesh = draw_spectrogram(ax, static_channel(clip), params=store.params, axes=store.axes)
    fig.colorbar(mesh, ax=ax, label=value_label(store.params))
    _mark_padding(ax, store, meta)
    label = f" · class {class_name(store, meta)}" if store.label_column else ""
    channel = f" (channel 0 of {clip.shape[0]})" if clip.ndim == 3 else ""
    fig.suptitle(f"{meta['clip_id']}{label}{channel}", fontsize=12)
    ax.set_title(f"{store.feature_set}: {describe_params(store.params)}", fontsize=9)
    return fig


def _mark_padding(ax, store: Store, meta: pd.Series) -> None:
    """Show where a clip's audio ends and its zero padding begins."""
    n_valid = int(meta["n_frames_valid"])
    if n_valid < len(store.axes.time) and store.fixed_length:
        ax.axvline(store.axes.time[n_valid], color="white", linestyle="--", linewidth=1)
        ax.annotate(
            " zero padding →",
            (store.axes.time[n_valid], 1.0),
            xycoords=("data", "axes fraction"),
            va="top",
            color="white",
            fontsize=8,
        )


def class_examples_figure(store: Store) -> Figure:
    """A grid with one example clip per class (at most 50), on one shared colour scale."""
    every_class = class_examples(store)
    examples = every_class.iloc[:GRID_MAX_CLASSES]
    shown = "" if len(examples) == len(every_class) else f" (first {len(examples)} classes)"
    n_rows = math.ceil(len(examples) / GRID_COLUMNS)
    n_cols = math.ceil(len(examples) / n_rows)  # 6 classes: 2 x 3, not 5 + 1
    width, height = 3.2 * n_cols + 1.2, 2.6 * n_rows + 0.8
    fig = Figure(figsize=(width, height))
    # fixed margins in inches (constrained layout measures every tick twice); rows
    # leave room for two-line panel titles, and for a time axis above an empty slot
    m = GRID_MARGINS
    row_gap = m["row_gap"] + (m["axis"] if n_rows * n_cols > len(examples) else 0.0)
    panel_width = (width - m["left"] - m["right"] - (n_cols - 1) * m["col_gap"]) / n_cols
    panel_height = (height - m["top"] - m["bottom"] - (n_rows - 1) * row_gap) / n_rows
    grid = fig.subplots(
        n_rows,
        n_cols,
        sharex=True,
        sharey=True,
        squeeze=False,
        gridspec_kw={
            "left": m["left"] / width,
            "right": 1 - m["right"] / width,
            "bottom": m["bottom"] / height,
            "top": 1 - m["top"] / height,
            "wspace": m["col_gap"] / panel_width,
            "hspace": row_gap / panel_height,
        },
    )
    clips = [static_channel(store.clip(int(row))) for row in examples.index]
    vmax = max(float(clip.max()) for clip in clips)
    span = store.params.get("top_db") or 80.0
    # dB sets show their top_db range; natural-log sets have none and show all
    decibels = feature_kind(store.params["kind"]).decibels
    vmin = vmax - span if decibels else min(c.min() for c in clips)
    for ax, (_, meta), clip in zip(grid.flat, examples.iterrows(), clips, strict=False):
        mesh = draw_spectrogram(
            ax, clip, params=store.params, axes=store.axes, vmin=vmin, vmax=vmax
        )
        label = class_name(store, meta) if store.label_column else "all clips"
        ax.set_title(f"{label}\n{meta['clip_id']}", fontsize=9)
    for ax in grid.flat:
        ax.label_outer()
    for ax in grid.flat[len(examples) :]:  # the panel above an empty slot keeps its time axis
        ax.set_visible(False)
        above = grid[n_rows - 2, ax.get_subplotspec().colspan.start]
        above.xaxis.set_tick_params(labelbottom=True)
        above.set_xlabel("Time (s)")
    bar_height = (height - m["top"] - m["bottom"]) * min(1.0, 0.5 + n_rows / 4)
    bar = fig.add_axes(
        (
            1 - (m["right"] - m["bar_gap"]) / width,
            (m["bottom"] + (height - m["top"] - m["bottom"] - bar_height) / 2) / height,
            m["bar_width"] / width,
            bar_height / height,
        ),
        label="<colorbar>",  # as fig.colorbar(ax=...) names the axes it makes
    )
    fig.colorbar(mesh, cax=bar, label=value_label(store.params))
    fig.suptitle(
        f"{store.attrs.get('dataset', '')} / {store.feature_set}: the longest clip of each "
        f"class{shown}\n"
        f"{describe_params(store.params)}",
        fontsize=11,
        y=1 - m["title"] / height,  # a fixed distance from the top, whatever the rows
    )
    return fig


def power_and_log(store: Store, row: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Recompute one clip's linear power and its log version from the audio.

    The store holds only the log values, clipped ``top_db`` below the peak,
    and relative to the clip's peak when ``ref`` is ``max``; the linear power
    is therefore recomputed from the source file with the feature set's own
    front end, exactly as the extraction job did.

    Returns
    -------
    power : np.ndarray
        Mel power (``logmel``), mel magnitude (``vggish``: ``|X| ** power``)
        or PSD (``logspec``), linear, (n_bins, n_frames).
    log : np.ndarray
        What ``librosa.power_to_db(power, ref, amin, top_db)`` gives for
        ``logmel``, or ``ln(power + amin)`` for ``logspec`` and ``vggish``:
        what the store should hold.
    mismatch : float
        Largest absolute difference between ``log`` and the stored clip.

    Raises
    ------
    MelstoreError
        If the source file is gone or changed since the store was built.
    """
    meta = store.metadata.iloc[row]
    source = Path(store.attrs["dataset_root"]) / meta["path"]
    try:
        current = file_checksum(source)
    except MelstoreError as err:
        raise MelstoreError(f"{source}: {err}") from None
    if current != meta["source_xxh128"]:
        raise MelstoreError(f"{source} changed since {store.path} was built; rebuild the store")
    p = FeatureParams.from_dict(store.params)
    y, info = decode(source, max_duration=p.duration)
    # the store's own front end: rebuilding it would import scipy.signal
    frontend = Frontend.from_arrays(p, store.frontend) if store.frontend else Frontend.build(p)
    extractor = FeatureExtractor(frontend)
    power = extractor.power_spectrogram(extractor.prepare(y, sr=info.sample_rate)[0])
    # the extractor's log, tested equal to power_to_db, which imports scipy.signal
    log = extractor.to_log(power, peak=float(power.max()))
    stored = static_channel(store.clip(row))
    return power, log, float(np.abs(log - stored).max())


def power_vs_db_figure(store: Store, key: int | str | None = None) -> Figure:
    """The seed question: one clip's mel power on a linear colour scale, and as stored (dB or ln).

    Parameters
    ----------
    store : Store
    key : int or str, optional
        Feature row or clip id; default: the longest clip (first in store order).
    """
    row = seed_question_row(store) if key is None else store.row(key)
    meta = store.metadata.iloc[row]
    power, log, mismatch = power_and_log(store, row)
    kind = feature_kind(store.params["kind"])
    fig = Figure(figsize=(13.5, 5), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    what = kind.linear_label(store.params)
    mesh = draw_spectrogram(left, power, params=store.params, axes=store.axes)
    fig.colorbar(mesh, ax=left, label=f"{what} (linear)")
    left.set_title(f"{what}, linear colour scale")
    mesh = draw_spectrogram(right, log, params=store.params, axes=store.axes)
    fig.colorbar(mesh, ax=right, label=kind.value_label(store.params))
    right.set_title(
        f"{kind.log_name}, as stored "
        f"(largest difference {mismatch:.1g}{' dB' if kind.decibels else ''})"
    )
    right.label_outer()
    label = f" ({class_name(store, meta)})" if store.label_column else ""
    fig.suptitle(
        f"{meta['clip_id']}{label}, {store.feature_set}: {describe_params(store.params)}",
        fontsize=11,
    )
    fig.supxlabel(DB_CAPTION if kind.decibels else LN_CAPTION, fontsize=9)
    return fig


def counts_figure(store: Store) -> Figure:
    """A heat map of clips per class and fold, each cell labelled with its count."""
    with_totals = store.class_fold_counts()
    counts = with_totals.drop(index="total", columns="total")
    n_classes, n_folds = counts.shape
    fig = Figure(
        figsize=(max(5.0, 0.7 * n_folds + 3.5), max(3.0, 0.32 * n_classes + 1.8)),
        layout="constrained",
    )
    ax = fig.add_subplot()
    image = ax.imshow(counts.to_numpy(), cmap="Blues", aspect="auto", vmin=0)
    totals = with_totals.loc["total"]
    ax.set_xticks(range(n_folds), [f"{f}\n({totals[f]})" for f in counts.columns])
    ax.set_yticks(range(n_classes), [f"{c} ({with_totals.at[c, 'total']})" for c in counts.index])
    ax.set_xlabel(f"{counts.columns.name}, with its total in brackets")
    ax.set_ylabel(f"{counts.index.name}, with its total in brackets")
    limit = counts.to_numpy().max() / 2
    for (i, j), count in np.ndenumerate(counts.to_numpy()):
        color = "white" if count > limit else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label="clips", ticks=MaxNLocator(integer=True))
    ax.set_title(
        f"{store.attrs.get('dataset', '')} / {store.feature_set}: {len(store)} clips, "
        f"{len(store.failures)} failed",
        fontsize=10,
    )
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> None:
    """Write a figure atomically, in the format named by the file's extension."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    with atomic_path(path) as tmp:
        try:
            fig.savefig(tmp, format=kind, dpi=dpi)
        except ValueError as err:
            raise MelstoreError(f"{path}: cannot write a figure as {kind!r}: {err}") from None


def class_examples(store: Store) -> pd.DataFrame:
    """The metadata of :func:`class_example_rows`; the index is the feature row."""
    return store.metadata.iloc[class_example_rows(store)]


def class_name(store: Store, meta: Mapping) -> str:
    """The class of one metadata row as figures name it (an unlabelled clip's too)."""
    return str(meta[store.label_column]) or UNLABELLED_NAME


def class_example_rows(store: Store) -> np.ndarray:
    """One example row per class, sorted by class: its longest clip (the first of those).

    Without a class column, the longest clip overall.
    """
    columns = store.metadata_columns
    frames = columns["n_frames_valid"].astype(np.int64)
    label = store.label_column
    classes = (
        np.unique(columns[label], return_inverse=True)[1].reshape(-1)
        if label
        else np.zeros(len(frames), dtype=np.int64)
    )
    order = np.lexsort((-frames, classes))  # stable: store order among the longest
    first_of_class = np.ones(len(order), dtype=bool)
    first_of_class[1:] = classes[order][1:] != classes[order][:-1]
    return order[first_of_class]


def seed_question_row(store: Store) -> int:
    """The clip the seed-question figure shows by default: the longest, first in store order."""
    return int(np.argmax(store.metadata_columns["n_frames_valid"]))
