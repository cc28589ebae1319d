"""The ``melstore`` command line: info, show, export, pack, verify, audit, features and plan.

Exit status: 0 on success; 2 with one line on stderr for bad input, either
``Error: <message>`` (a missing file, not a store, an unknown clip) or, for
arguments click refuses (an unknown option, a bad choice, a missing argument),
``melstore <command>: <click's message>``; 1 when ``verify`` finds the store
differs from its sources or its recorded computation, ``audit`` finds
leakage, or ``features`` cannot compute a file.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from melstore.errors import MelstoreError, VersionWarning

if TYPE_CHECKING:
    from melstore.store.reader import Store

FAILURES_SHOWN = 20
STORE = click.argument("store", type=click.Path(dir_okay=False, path_type=Path))


class Failure(click.ClickException):
    """An expected error: one line on stderr, exit status 2 (1 means "differences found")."""

    exit_code = 2


@contextmanager
def expected_errors(*, output: Path | None = None) -> Iterator[None]:
    """Turn bad input, and failures to write ``output``, into one line and exit status 2."""
    try:
        yield
    except MelstoreError as err:
        raise Failure(str(err)) from None
    except OSError as err:
        if output is None:
            raise
        raise Failure(f"cannot write {output}: {err.strerror or err}") from None


@contextmanager
def one_line_usage_errors(ctx: click.Context) -> Iterator[None]:
    """Print a usage error of ``ctx``'s command as one line naming it, and exit with status 2.

    Click would print the command's usage and a help hint above its message.
    """
    try:
        yield
    except click.UsageError as err:
        message = re.sub(r"\s*\n\s*", " ", err.format_message().strip())
        click.echo(f"{ctx.command_path}: {message}", err=True)
        ctx.exit(err.exit_code)


class OneLineCommand(click.Command):
    """A command whose bad arguments get one line on stderr (see `one_line_usage_errors`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with one_line_usage_errors(ctx):
            return super().parse_args(ctx, args)


class Commands(OneLineCommand, click.Group):
    """The ``melstore`` group, whose usage errors each get one line on stderr.

    Its own bad arguments, a missing or unknown command, and its commands' bad
    arguments (`OneLineCommand`).
    """

    command_class = OneLineCommand

    def invoke(self, ctx: click.Context) -> object:
        with one_line_usage_errors(ctx):
            return super().invoke(ctx)


# no_args_is_help off: a bare ``melstore`` is a usage error ("Missing command."), one line too
@click.group(
    cls=Commands, no_args_is_help=False, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="melstore")
def main() -> None:
    """Log-scaled mel spectrogram feature stores: inspect, plot, export, pack and check them,
    and compute their features for new audio."""


@main.command()
@STORE
def info(store: Path) -> None:
    """Summarise STORE: clips, classes per fold, failures, parameters and versions.

    The size counts the index and every shard file it reads.
    """
    import pandas as pd

    from melstore.store.reader import Store

    with expected_errors(), Store(store) as opened:
        attrs = opened.attrs
        features = opened.features
        files = _store_files(store)
        n_bytes = sum(path.stat().st_size for path in files)
        click.echo(
            f"{store}: {len(opened)} clips, {len(opened.failures)} failed, "
            f"{_size(n_bytes)} with {_shard_files(len(files) - 1)}"
        )
        click.echo(
            f"dataset      {attrs.get('dataset', '?')} ({attrs.get('dataset_layout', '?')} layout, "
            f"root {attrs.get('dataset_root', '?')})"
        )
        click.echo(
            f"features     {opened.feature_set}: {features.shape} {features.dtype}, "
            f"{attrs['features_layout']} layout, store layout version {attrs['layout_version']}"
        )
        if opened.precision_db is not None:
            storage = (
                f"within precision_db {opened.precision_db:g} (largest error "
                f"{opened.max_error_db:g}), gzip"
            )
        else:
            storage = "exact values" + (", gzip" if attrs.get("compression") else "")
        click.echo(f"storage      {storage}")
        frequency, times = opened.axes.frequency, opened.axes.time
        click.echo(
            f"axes         {len(frequency)} rows {frequency[0]:.1f}-{frequency[-1]:.1f} Hz, "
            f"{len(times)} frames {times[0]:.3f}-{times[-1]:.3f} s"
        )
        with pd.option_context("display.max_rows", None, "display.max_columns", None):
            click.echo(f"\nclips per class and fold:\n{opened.class_fold_counts()}")
            click.echo("\nparams:")
            for key, value in sorted(opened.params.items()):
                click.echo(f"  {key:<11} {json.dumps(value)}")
            click.echo("\nversions:")
            click.echo("  " + ", ".join(f"{k} {v}" for k, v in sorted(opened.versions.items())))
            failures = opened.failures
            click.echo(f"\nfailures: {len(failures) or 'none'}")
            if len(failures):
                click.echo(failures.head(FAILURES_SHOWN).to_string(index=False))
            if len(failures) > FAILURES_SHOWN:
                hidden = len(failures) - FAILURES_SHOWN
                click.echo(f"... and {hidden} more: see melstore.open(STORE).failures")


@main.command()
@STORE
@click.argument("clip", metavar="CLIP_ID|ROW")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Image to write; the format follows the extension (png, svg, pdf, jpg).",
)
def show(store: Path, clip: str, output: Path) -> None:
    """Plot the spectrogram of one clip of STORE, given by CLIP_ID or ROW, into an image.

    CLIP_ID is a clip id the store holds; anything else that is an integer is
    taken as the clip's feature ROW, from 0, in the order of
    melstore.open(STORE).metadata.

    Mel (or FFT) frequency axis in Hz, time in seconds, a colour bar in the
    stored unit (dB for logmel, ln for logspec and vggish), and a title with
    the clip id, its class and the feature parameters. Stores with deltas
    show channel 0.
    """
    from melstore.report.figures import clip_figure, save_figure
    from melstore.store.format import check_outside_dataset
    from melstore.store.reader import Store

    with expected_errors(output=output), Store(store) as opened:
        check_outside_dataset(output, store=store, dataset_root=opened.attrs.get("dataset_root"))
        row = clip_row(opened, clip)
        save_figure(clip_figure(opened, row), output)
        clip_id = opened.metadata_columns["clip_id"][row]
    given_as = "" if clip == clip_id else f" (row {row})"
    click.echo(f"{output}: {clip_id}{given_as} from {store}")


@main.command()
@STORE
@click.option(
    "--format",
    "kind",
    required=True,
    type=click.Choice(["npz", "parquet"]),
    help="npz: features, axes, metadata and params for NumPy; parquet: the metadata table.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: STORE with the format's extension).",
)
def export(store: Path, kind: str, output: Path | None) -> None:
    """Export STORE for tools that do not read HDF5.

    parquet writes the metadata (one row per clip, in feature order); npz
    writes the features with their axes, metadata and params. The output is
    written atomically.
    """
    from melstore.store.export import export_npz, export_parquet
    from melstore.store.format import check_outside_dataset
    from melstore.store.reader import Store

    output = output or store.with_suffix(f".{kind}")
    with expected_errors(output=output), Store(store) as opened:
        check_outside_dataset(output, store=store, dataset_root=opened.attrs.get("dataset_root"))
        if kind == "parquet":
            export_parquet(opened, output)
        else:
            export_npz(opened, output)
        click.echo(f"{output}: {len(opened)} clips, {_size(output.stat().st_size)}")


@main.command()
@STORE
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def pack(store: Path, out: Path) -> None:
    """Write STORE as one standalone HDF5 file OUT, for sharing.

    OUT holds the features as one ordinary dataset (no virtual dataset, no
    shard files), with the same values, tables, axes and statistics. Its
    bytes are the same whatever shard_size and cores built STORE. It is
    written atomically, and may be neither STORE itself nor inside its
    shards folder or its dataset.
    """
    from melstore.store.index import pack as pack_store
    from melstore.store.reader import Store

    with expected_errors(output=out):
        pack_store(store, out)
        with Store(out) as packed:
            n_clips = len(packed)
        click.echo(f"{out}: {n_clips} clips, {_size(out.stat().st_size)}, packed from {store}")


@main.command()
@STORE
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Where the dataset is now (default: the root recorded in the store).",
)
@click.option(
    "--recompute",
    "n_recompute",
    type=click.IntRange(min=1),
    metavar="N",
    help="Also recompute N clips (a seeded choice) from their audio with the installed "
    "libraries, and compare them with the stored values.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the recomputed clips."
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    help="Largest difference allowed for --recompute, in the store's units "
    "(default: the larger of 0.01 and the store's precision_db).",
)
def verify(
    store: Path, root: str | None, n_recompute: int | None, seed: int, tolerance: float | None
) -> None:
    """Check STORE's values against its recorded precision, and its sources.

    Reports the recorded precision bound and checks that every stored value
    satisfies it; then re-hashes the sources and lists files that changed,
    vanished or are new. With --recompute N it also recomputes N clips in the
    current environment (the drift guard), reports the largest difference
    and the library versions that differ from those the store records, and
    fails beyond the tolerance. Prints one line per problem, then a summary
    on stderr. Exits 1 if anything is wrong, 0 if the store matches.
    """
    from melstore.pipeline.verify import recompute_clips, verify_sources
    from melstore.store.format import open_store, precision_problems

    start = time.perf_counter()
    with expected_errors():
        with open_store(store) as opened:
            bound = opened.attrs.get("precision_db")
            measured = float(opened.attrs.get("max_error_db", 0.0))
            problems = precision_problems(opened)
        changes = verify_sources(store, root=root)
        drift = (
            None
            if n_recompute is None
            else recompute_clips(
                store, n_clips=n_recompute, root=root, seed=seed, tolerance=tolerance
            )
        )
    for problem in problems:
        click.echo(f"precision {problem}")
    for change in changes:
        click.echo(f"{change.kind:<8} {change.path}")
    summary = [_precision_summary(bound, measured, problems), _source_summary(changes)]
    if drift is not None:
        for name, change in drift.versions.items():
            click.echo(f"version  {name} {change.recorded} in the store, {change.installed} here")
        for clip_id, why in drift.skipped.items():
            click.echo(f"skipped  {clip_id}: {why}")
        for clip_id, difference in drift.beyond.items():
            click.echo(
                f"drift    {clip_id}: differs by {difference:.4g} (tolerance {drift.tolerance:g})"
            )
        summary.append(_drift_summary(drift))
    seconds = time.perf_counter() - start
    click.echo(f"{store}: {'; '.join(summary)} ({seconds:.1f} s)", err=True)
    sys.exit(1 if changes or problems or (drift is not None and drift.beyond) else 0)


def _precision_summary(bound: float | None, measured: float, problems: list[str]) -> str:
    verdict = "not met" if problems else "met"
    if bound is None:
        return f"exact values ({verdict})"
    return f"precision_db {bound:g} {verdict} (largest error {measured:g})"


def _source_summary(changes: list) -> str:
    counts = {kind: sum(c.kind == kind for c in changes) for kind in ("changed", "missing", "new")}
    return f"{counts['changed']} changed, {counts['missing']} missing, {counts['new']} new"


def _drift_summary(drift) -> str:
    from melstore.store.format import describe_version_changes

    clip_id, largest = drift.largest
    verdict = "DRIFT" if drift.beyond else "no drift"
    versions = describe_version_changes(drift.versions)
    return (
        f"{verdict}: recomputed {len(drift.differences)} clips, largest difference "
        f"{largest:.4g} ({clip_id or 'none'}), tolerance {drift.tolerance:g}; "
        f"versions {'differ: ' + versions if versions else 'as recorded'}"
    )


@main.command()
@STORE
@click.option(
    "--source-column",
    metavar="COLUMN",
    help="Metadata column naming each clip's source recording (default: the store's own: "
    "UrbanSound8K fsID, ESC-50 src_file, or the config's dataset.source_column).",
)
def audit(store: Path, source_column: str | None) -> None:
    """Audit STORE's folds for leakage between training and test clips.

    Lists clips whose source audio is identical (the stored checksum) but
    which sit in different folds, then clips that share a source recording
    across folds, then the clips per class and fold. The folds are those of
    melstore.open(STORE).folds(). Prints a one-line verdict on stderr. Exits 1
    if it finds leakage, 0 if the folds are clean, 2 on bad input.
    """
    import pandas as pd

    from melstore.store.audit import audit_store
    from melstore.store.reader import Store

    with expected_errors(), Store(store) as opened:
        found = audit_store(opened, source_column=source_column)
    for leak in found.leaks:
        click.echo(leak.line())
    with pd.option_context("display.max_rows", None, "display.max_columns", None):
        click.echo(f"\nclips per class and {found.fold_column}:\n{found.balance}")
    click.echo(found.summary(), err=True)
    sys.exit(1 if found.leaks else 0)


def _distinct_files(ctx: click.Context, param: click.Parameter, paths: tuple[str, ...]):
    """The AUDIO arguments, each once: a second one would overwrite the first's key."""
    seen = set()
    for path in paths:
        if path in seen:
            raise click.BadParameter(f"{path} is given twice", ctx=ctx, param=param)
        seen.add(path)
    return paths


def _features_suffix(ctx: click.Context, param: click.Parameter, output: Path) -> Path:
    """The output file, if its suffix names a format ``features`` writes."""
    from melstore.store.feature_files import writer_for

    try:
        writer_for(output)
    except MelstoreError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    return output


@main.command()
@STORE
@click.argument("audio", nargs=-1, required=True, callback=_distinct_files)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_features_suffix,
    help="File to write: .npz (an array per AUDIO, keyed by its path as given), .npy "
    "(the clips stacked in the order given) or .h5 (features and a path per clip).",
)
@click.option(
    "--unrounded",
    is_flag=True,
    help="For a store with precision_db: the values before rounding, not as the store keeps them.",
)
def features(store: Path, audio: tuple[str, ...], output: Path, unrounded: bool) -> None:
    """Compute STORE's features for new AUDIO files, exactly as its build computed its clips.

    The window, filter bank, parameters and rounding all come from STORE, so a
    file STORE holds gets the values STORE keeps. OUT holds float32 features
    shaped like STORE's clips. In a .npy they are stacked (N, ...), which a
    variable-length STORE allows for one file only. A file that cannot be
    decoded gets one line on stderr and is left out; a .npy is then not
    written. OUT is written atomically, never inside STORE's dataset. Exits
    0 when every file was computed, 1 when one failed, 2 on bad arguments.
    """
    import warnings

    from melstore.pipeline.extract import Progress
    from melstore.store.feature_files import write_features
    from melstore.store.inference import Extractor

    start = time.perf_counter()
    progress = Progress(f"features {output.name}", total=len(audio), reused=None)
    failures = []

    def on_file(path: str, failure: str | None) -> None:
        if failure is not None:
            click.echo(failure, err=True)
            failures.append(path)
        progress.update(failed=len(failures))

    with expected_errors(output=output):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VersionWarning)
            extractor = Extractor(store, rounded=not unrounded)
        for warning in caught:
            click.echo(f"warning: {warning.message}", err=True)
        written = write_features(output, extractor, audio, on_file=on_file)
    seconds = time.perf_counter() - start
    counts = f"{len(written.computed)} of {len(audio)} files computed ({seconds:.1f} s)"
    if written.kept:
        click.echo(f"{output}: {counts}, {_size(output.stat().st_size)}")
    else:
        click.echo(f"{output} not written: {counts}", err=True)
    sys.exit(1 if written.failed else 0)


@main.command()
@click.option(
    "--configfile",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your config, as given to snakemake (merged over the workflow's config.yaml).",
)
@click.option(
    "--cores",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="this machine's",
    help="The --cores snakemake will be given.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the timed sample.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def plan(configfile: Path, cores: int, seed: int, as_json: bool) -> None:
    """Predict what building the stores of CONFIGFILE costs, before building them.

    Times a seeded sample of the dataset's files (at least one of each format
    and sample rate) through the real extraction code, then predicts for each
    feature set its CPU and wall time at --cores, its extraction jobs, its
    store's size and an extraction job's memory. Also recommends a shard_size
    and the SLURM resources of an extraction job for profiles/slurm. Nothing
    is written.
    """
    from melstore.pipeline.planner import load_plan, predict

    with expected_errors():
        planned = load_plan(configfile)
        prediction = predict(planned, cores=cores, seed=seed)
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
        return
    for line in prediction.lines():
        click.echo(line)


def clip_row(store: Store, clip: str) -> int:
    """The feature row of a clip id in ``store``, or else of an integer literal.

    Raises
    ------
    MelstoreError
        If ``clip`` is neither a clip id of the store nor one of its rows.
    """
    try:
        return store.row(clip)
    except MelstoreError:
        if re.fullmatch(r"[+-]?[0-9]+", clip) is None:
            raise
    return store.row(int(clip))


def _store_files(store: Path) -> list[Path]:
    """The index and the shard files it reads its features from (none for a packed store)."""
    import h5py

    from melstore.store.format import SHARDS_GROUP, read_shard_refs

    with h5py.File(store, "r") as index:
        shards = read_shard_refs(index) if SHARDS_GROUP in index else []
    return [store, *(store.parent / shard.name for shard in shards)]


def _shard_files(count: int) -> str:
    """``no shard files``, ``1 shard file``, ``16 shard files``."""
    return f"{count or 'no'} shard file{'' if count == 1 else 's'}"


def _size(n_bytes: int) -> str:
    """A file size for people: 512 B, 1.3 MB, 2.1 GB."""
    exponent = min(int(math.log10(max(n_bytes, 1)) // 3), 4)
    unit = ("B", "kB", "MB", "GB", "TB")[exponent]
    return f"{n_bytes} B" if exponent == 0 else f"{n_bytes / 1000**exponent:.1f} {unit}"


if __name__ == "__main__":
    main()
