"""The report of a store: its figures and tables, drawn again only when what they show changes.

:func:`write_report` is what the Snakemake ``report`` rule runs. Drawing is
done by :mod:`melstore.figures`, imported only when a figure must be drawn:
matplotlib alone costs 0.4 s, and a rerun after one changed clip usually has
nothing to draw.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from melstore.errors import MelstoreError
from melstore.files import atomic_path
from melstore.fingerprint import REPORT_MODULES, code_fingerprint
from melstore.reader import Store

log = logging.getLogger("melstore")

# The text chunk of a report PNG holding the digest of what it shows (see shown_digest).
SHOWN_KEY = "melstore:shows"
# The report's figures, the longest to draw first, so that the others share the second core.
FIGURES = ("classes", "power_vs_db", "counts")


def write_report(
    store: str | Path | Callable[[], Store],
    *,
    classes: str | Path,
    power_vs_db: str | Path,
    counts: str | Path,
    counts_table: str | Path,
    failures: str | Path,
    processes: int = 1,
) -> None:
    """Write every report figure and table of one store.

    Parameters
    ----------
    store : str, Path or callable
        The store's path, or a callable opening it (a :class:`ShardedStore`
        not gathered yet); each drawing process opens its own.
    classes, power_vs_db, counts : str or Path
        PNG files: one clip per class, the seed question, class x fold counts.
    counts_table, failures : str or Path
        HTML tables: class x fold counts with totals, and the failed files.
    processes : int
        Figures drawn at once, each in a forked process (matplotlib draws on
        one core: the class grid alone takes a second).

    Notes
    -----
    Each PNG carries the :func:`shown_digest` of what it shows. A figure whose
    existing file carries the current digest is not drawn again, so a rerun
    after one changed clip redraws only the figures that clip appears in.
    """
    opener = partial(Store, store) if isinstance(store, str | Path) else store
    paths = {"classes": classes, "power_vs_db": power_vs_db, "counts": counts}
    with opener() as opened:
        if not len(opened):
            raise MelstoreError(f"{opened.path} holds no clips to draw; see melstore info")
        digests = {figure: shown_digest(figure, opened) for figure in FIGURES}
    stale = [figure for figure in FIGURES if digest_in(paths[figure]) != digests[figure]]
    log.info("drawing: %s; unchanged: %s", ", ".join(stale) or "none",
             ", ".join(f for f in FIGURES if f not in stale) or "none")  # fmt: skip
    if stale:  # imported once, before any fork (matplotlib alone costs 0.4 s)
        import librosa.display  # noqa: F401

        from melstore import figures  # noqa: F401

    drawings = [(opener, figure, paths[figure], digests[figure]) for figure in stale]
    if processes < 2 or len(drawings) < 2:
        for drawing in drawings:
            _draw(*drawing)
        _write_tables(opener, counts_table=counts_table, failures=failures)
        return
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(processes, len(drawings)), mp_context=fork) as pool:
        pending = [pool.submit(_draw, *drawing) for drawing in drawings]
        _write_tables(opener, counts_table=counts_table, failures=failures)  # meanwhile
        for future in pending:
            future.result()  # raises what a drawing raised


def shown_digest(figure: str, store: Store) -> str:
    """A digest of everything a report figure shows: an unchanged digest, an unchanged picture.

    It covers the drawing code and library versions, the store's parameters,
    names and axes, and the figure's own data: every metadata value and
    feature of the clips it draws (the class grid's examples, the seed
    question's clip, whose source checksum is among them), or the class x fold
    counts.
    """
    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(part.tobytes() if isinstance(part, np.ndarray) else str(part).encode())
            digest.update(b"\0")

    add(figure, code_fingerprint(REPORT_MODULES), importlib_metadata.version("matplotlib"))
    add(json.dumps(store.versions, sort_keys=True), json.dumps(store.params, sort_keys=True))
    add(store.attrs.get("dataset", ""), store.feature_set, store.axes.frequency, store.axes.time)
    if figure == "counts":
        add(store.class_fold_counts().to_csv(), len(store), len(store.failures))
        return digest.hexdigest()
    rows = class_examples(store).index if figure == "classes" else [seed_question_row(store)]
    for row in rows:
        add(json.dumps(store.metadata.iloc[row].to_dict(), default=str), store.clip(int(row)))
    if figure == "power_vs_db":  # recomputed from the audio with the store's front end
        add(*store.frontend.values())
    return digest.hexdigest()


def digest_in(path: str | Path) -> str | None:
    """The :func:`shown_digest` a report PNG was drawn with, or None."""
    from PIL import Image  # matplotlib's own PNG dependency

    try:
        with Image.open(path) as image:
            return image.text.get(SHOWN_KEY)
    except (OSError, ValueError):  # missing, or not a readable PNG: draw it
        return None


def class_examples(store: Store) -> pd.DataFrame:
    """One example row per class: its longest clip (the first of those, in store order).

    Returns the metadata of the examples, sorted by class; the index is the
    feature row. Without a class column, the longest clip overall.
    """
    table = store.metadata
    groups = table[store.label_column] if store.label_column else pd.Series("", table.index)
    longest = table.groupby(groups.to_numpy(), sort=True)["n_frames_valid"].idxmax()
    return table.loc[longest.to_numpy()]


def seed_question_row(store: Store) -> int:
    """The clip the seed-question figure shows by default: the longest, first in store order."""
    return int(np.argmax(store.metadata["n_frames_valid"].to_numpy()))


def html_table(frame: pd.DataFrame, *, title: str, empty: str = "none") -> str:
    """A small self-contained HTML page holding one table (the report shows HTML inline)."""
    body = frame.to_html(border=0) if len(frame) else f"<p>{html.escape(empty)}</p>"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "th,td{padding:.25em .7em;border-bottom:1px solid #ccc;text-align:right}"
        "td:last-child{text-align:left}</style></head>"
        f"<body><h3>{html.escape(title)}</h3>{body}</body></html>\n"
    )


def write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _write_tables(opener: Callable[[], Store], *, counts_table, failures) -> None:
    with opener() as store:
        name = f"{store.attrs.get('dataset', '')} / {store.feature_set}"
        write_text(
            html_table(store.class_fold_counts(), title=f"{name}: clips per class and fold"),
            counts_table,
        )
        write_text(
            html_table(
                store.failures.set_index("clip_id"),
                title=f"{name}: {len(store.failures)} file(s) could not be processed",
                empty="Every file was read.",
            ),
            failures,
        )


def _draw(opener: Callable[[], Store], figure: str, path: str | Path, digest: str) -> None:
    from melstore import figures

    draw = {
        "classes": figures.class_examples_figure,
        "power_vs_db": figures.power_vs_db_figure,
        "counts": figures.counts_figure,
    }[figure]
    with opener() as store:  # opened per process: HDF5 handles do not survive a fork
        figures.save_figure(draw(store), path, metadata={SHOWN_KEY: digest})
