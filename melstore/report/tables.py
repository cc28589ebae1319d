"""The report of a store: its figures and tables, drawn from the finished store.

:func:`write_report` is what the Snakemake ``report`` rule runs; the drawing
itself is in :mod:`melstore.report.figures`.
"""

from __future__ import annotations

import functools
import html
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from melstore.errors import MelstoreError
from melstore.files import atomic_path
from melstore.store.audit import audit_store
from melstore.store.reader import Store

if TYPE_CHECKING:
    import pandas as pd

    from melstore.store.audit import Audit


def write_report(
    store: str | Path,
    *,
    classes: str | Path,
    power_vs_db: str | Path,
    counts: str | Path,
    counts_table: str | Path,
    failures: str | Path,
    audit: str | Path,
    processes: int = 1,
) -> None:
    """Write every report figure and table of one store.

    Parameters
    ----------
    store : str or Path
        The store.
    classes, power_vs_db, counts : str or Path
        PNG files: one clip per class, the seed question, class x fold counts.
    counts_table, failures, audit : str or Path
        HTML pages: class x fold counts with totals, the failed files, and
        the leakage audit of the folds (:func:`melstore.store.audit.audit_store`).
    processes : int
        Processes drawing the figures (each figure takes about half a second).
    """
    from melstore.report import figures  # imported before the fork: workers share matplotlib

    drawings = {
        figures.class_examples_figure: classes,
        figures.power_vs_db_figure: power_vs_db,
        figures.counts_figure: counts,
    }
    with Store(store) as opened:
        if not len(opened):
            raise MelstoreError(f"{opened.path} holds no clips to draw; see melstore info")
        name = f"{opened.attrs.get('dataset', '')} / {opened.feature_set}"
        title = f"{name}: clips per class and fold"
        write_text(html_table(opened.class_fold_counts(), title=title), counts_table)
        title = f"{name}: {len(opened.failures)} file(s) could not be processed"
        table = html_table(
            opened.failures.set_index("clip_id"), title=title, empty="Every file was read."
        )
        write_text(table, failures)
        write_text(audit_page(audit_store(opened), name=name), audit)
    # forked once the store is closed: each worker opens it itself
    with ProcessPoolExecutor(
        max_workers=max(1, min(processes, len(drawings))),
        mp_context=multiprocessing.get_context("fork"),
    ) as pool:
        list(pool.map(functools.partial(draw_figure, store=store), drawings, drawings.values()))


def draw_figure(figure: Callable, path: str | Path, *, store: str | Path) -> None:
    """Draw one figure of a store to ``path`` (each process opens the store itself)."""
    from melstore.report.figures import save_figure

    with Store(store) as opened:
        save_figure(figure(opened), path)


def audit_page(found: Audit, *, name: str) -> str:
    """The leakage audit as an HTML page: its verdict, the leaking clips, the class balance."""
    leaks = html_body(
        found.leak_table().set_index("kind"),
        empty="No clip shares its audio or its source recording across folds.",
    )
    balance = html_body(found.balance)
    return html_page(
        f"{name}: leakage audit",
        f"<p>{html.escape(found.verdict())}</p><h4>Clips across folds</h4>{leaks}"
        f"<h4>Clips per class and {html.escape(found.fold_column)}</h4>{balance}",
    )


def html_table(frame: pd.DataFrame, *, title: str, empty: str = "none") -> str:
    """A small self-contained HTML page holding one table (the report shows HTML inline)."""
    return html_page(title, html_body(frame, empty=empty))


def html_body(frame: pd.DataFrame, *, empty: str = "none") -> str:
    """A table as HTML, or ``empty`` in a paragraph when it has no rows."""
    return frame.to_html(border=0) if len(frame) else f"<p>{html.escape(empty)}</p>"


def html_page(title: str, body: str) -> str:
    """A small self-contained HTML page: a title and ``body``."""
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
