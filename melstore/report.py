"""The report of a store: its figures and tables, made again only when what they show changes.

:func:`write_report` is what the Snakemake ``report`` rule runs. Drawing is
done by :mod:`melstore.figures`, imported only when a figure must be drawn,
and pandas only when a table must be written: matplotlib alone costs 0.4 s,
pandas 0.45 s, and a rerun after one changed clip usually has nothing to
redraw. Whether it has is told from numpy columns.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import logging
import multiprocessing
import re
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from melstore.errors import MelstoreError
from melstore.files import atomic_path
from melstore.fingerprint import REPORT_MODULES, code_fingerprint
from melstore.reader import FOLD_COLUMN, Store

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("melstore")

# Where a report file keeps the digest of what it shows (see shown_digest): the
# key of a PNG text chunk, and the name of an HTML table's meta tag.
SHOWN_KEY = "melstore:shows"
_SHOWN_META = re.compile(rf"<meta name='{SHOWN_KEY}' content='(\w+)'>")
# The report's figures and tables, the longest first, so that the others share the second core.
FIGURES = ("classes", "power_vs_db", "counts")
TABLES = ("counts_table", "failures")
OUTPUTS = FIGURES + TABLES


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
        Files made at once, each in a forked process (matplotlib draws on
        one core: the class grid alone takes a second).

    Notes
    -----
    Each file carries the :func:`shown_digest` of what it shows. A file that
    carries the current digest is not made again, so a rerun after one
    changed clip redraws only the figures that clip appears in, and needs
    neither matplotlib nor pandas when it appears in none.
    """
    opener = partial(Store, store) if isinstance(store, str | Path) else store
    paths = dict(zip(OUTPUTS, (classes, power_vs_db, counts, counts_table, failures), strict=True))
    with opener() as opened:
        if not len(opened):
            raise MelstoreError(f"{opened.path} holds no clips to draw; see melstore info")
        digests = {output: shown_digest(output, opened) for output in OUTPUTS}
        stale = [output for output in OUTPUTS if digest_in(paths[output]) != digests[output]]
        log.info("making: %s; unchanged: %s", ", ".join(stale) or "none",
                 ", ".join(o for o in OUTPUTS if o not in stale) or "none")  # fmt: skip
        if not stale:
            return
        import pandas  # noqa: F401 (imported once, before any fork)

        if set(stale) & set(FIGURES):
            import librosa.display  # noqa: F401

            from melstore import figures  # noqa: F401

        if processes < 2 or len(stale) < 2:  # with the store already open
            for output in stale:
                _make(opened, output, paths[output], digests[output])
            return
    fork = multiprocessing.get_context("fork")  # once closed: HDF5 handles do not survive a fork
    # Ctrl-C reaches the whole process group: the job alone reports it, in one line
    ignore_interrupts = {"initializer": signal.signal, "initargs": (signal.SIGINT, signal.SIG_IGN)}
    with ProcessPoolExecutor(
        min(processes, len(stale)), mp_context=fork, **ignore_interrupts
    ) as pool:
        tasks = [(opener, output, paths[output], digests[output]) for output in stale]
        for future in [pool.submit(_make_in_own_process, *task) for task in tasks]:
            future.result()  # raises what making the file raised


def shown_digest(output: str, store: Store) -> str:
    """A digest of everything a report figure or table shows: unchanged digest, unchanged file.

    It covers the drawing code and library versions, the store's parameters,
    names and axes, and the output's own data: every metadata value and
    feature of the clips a figure draws (the class grid's examples, the seed
    question's clip, whose source checksum is among them), the classes and
    folds counted, or the failures. It reads numpy columns only.
    """
    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(_as_bytes(part))
            digest.update(b"\0")

    add(output, code_fingerprint(REPORT_MODULES), *_drawing_versions())
    add(json.dumps(store.versions, sort_keys=True), json.dumps(store.params, sort_keys=True))
    add(store.attrs.get("dataset", ""), store.feature_set, store.axes.frequency, store.axes.time)
    columns = store.metadata_columns
    if output in ("counts", "counts_table"):
        # what Store.class_fold_counts counts: the fallback folds come from the clip ids
        label = store.label_column
        add(label, columns[label] if label else "", columns.get(FOLD_COLUMN, columns["clip_id"]))
        add(len(store.failure_columns["clip_id"]))
    elif output == "failures":
        add(*store.failure_columns.values())
    else:
        rows = class_example_rows(store) if output == "classes" else [seed_question_row(store)]
        for row in rows:
            values = {name: column[row] for name, column in columns.items()}
            add(json.dumps(values, default=str), store.clip(int(row)))
        if output == "power_vs_db":  # recomputed from the audio with the store's front end
            add(*store.frontend.values())
    return digest.hexdigest()


def digest_in(path: str | Path) -> str | None:
    """The :func:`shown_digest` a report PNG or HTML table was made with, or None."""
    path = Path(path)
    try:
        if path.suffix.lower() != ".png":
            with open(path, "rb") as table:
                match = _SHOWN_META.search(table.read(1024).decode("utf-8", "replace"))
            return match and match.group(1)
        from PIL import Image  # matplotlib's own PNG dependency

        with Image.open(path) as image:  # text chunks come before the pixels: none decoded
            return image.info.get(SHOWN_KEY)
    except (OSError, ValueError):  # missing, or not a readable file: make it
        return None


def class_examples(store: Store) -> pd.DataFrame:
    """The metadata of :func:`class_example_rows`; the index is the feature row."""
    return store.metadata.iloc[class_example_rows(store)]


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


def html_table(frame: pd.DataFrame, *, title: str, empty: str = "none", shows: str = "") -> str:
    """A small self-contained HTML page holding one table (the report shows HTML inline).

    ``shows`` is the :func:`shown_digest` to keep in the page for :func:`digest_in`.
    """
    body = frame.to_html(border=0) if len(frame) else f"<p>{html.escape(empty)}</p>"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<meta name='{SHOWN_KEY}' content='{shows}'>"
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


def _make(store: Store, output: str, path: str | Path, digest: str) -> None:
    """Draw one figure or write one table, keeping ``digest`` in the file."""
    if output in TABLES:
        write_text(_table(output, store, shows=digest), path)
        return
    from melstore import figures

    draw = {
        "classes": figures.class_examples_figure,
        "power_vs_db": figures.power_vs_db_figure,
        "counts": figures.counts_figure,
    }[output]
    figures.save_figure(draw(store), path, metadata={SHOWN_KEY: digest})


def _make_in_own_process(opener: Callable[[], Store], *task) -> None:
    with opener() as store:  # each process opens its own
        _make(store, *task)


def _table(output: str, store: Store, *, shows: str) -> str:
    name = f"{store.attrs.get('dataset', '')} / {store.feature_set}"
    if output == "counts_table":
        title = f"{name}: clips per class and fold"
        return html_table(store.class_fold_counts(), title=title, shows=shows)
    title = f"{name}: {len(store.failures)} file(s) could not be processed"
    return html_table(
        store.failures.set_index("clip_id"), title=title, empty="Every file was read.", shows=shows
    )


@functools.cache
def _drawing_versions() -> tuple[str, str]:
    return importlib_metadata.version("matplotlib"), importlib_metadata.version("pandas")


def _as_bytes(part) -> bytes:
    if isinstance(part, np.ndarray):
        # text columns are object arrays, whose bytes would be pointers
        return "\0".join(map(str, part)).encode() if part.dtype.kind == "O" else part.tobytes()
    return str(part).encode()
