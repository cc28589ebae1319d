"""Split a manifest into extraction shards that stay stable as files come and go.

Each clip id is hashed to a 64-bit key. Shards are the leaves of a binary trie
over those keys: a node holding more than ``shard_size`` clips splits in two by
the next bit. A shard is named by its bit prefix (``s``, ``s0``, ``s01``...).

So adding a file changes only the shard it lands in, or splits that shard into
two; removing one changes its shard, or merges it with its sibling. The
assignment of every other clip, and so every other shard job, is untouched.
``shard_size=1`` gives one clip per shard.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

KEY_BITS = 64


def shard_key(clip_id: str) -> str:
    """The clip's position in the trie: 64 bits of sha256, as a '0'/'1' string."""
    value = int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8], "big")
    return format(value, f"0{KEY_BITS}b")


def assign_shards(clip_ids: Sequence[str], shard_size: int) -> dict[str, list[int]]:
    """Group manifest rows into shards of at most ``shard_size`` clips.

    Parameters
    ----------
    clip_ids : sequence of str
        Unique clip ids, in manifest order.
    shard_size : int
        Most clips per shard (at least 1).

    Returns
    -------
    dict
        Shard name to the manifest row indices it holds, ascending. Shards are
        listed in name order and none is empty.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    keyed = sorted((shard_key(clip_id), row) for row, clip_id in enumerate(clip_ids))
    shards: dict[str, list[int]] = {}
    _split(keyed, depth=0, shard_size=shard_size, out=shards)
    return dict(sorted(shards.items()))


def _split(keyed: list[tuple[str, int]], depth: int, shard_size: int, out: dict) -> None:
    if not keyed:
        return
    prefix = keyed[0][0][:depth]
    if len(keyed) <= shard_size or depth == KEY_BITS:
        out["s" + prefix] = sorted(row for _, row in keyed)
        return
    # keys are sorted, so the ones with a 0 at this depth come first
    split_at = next((i for i, (key, _) in enumerate(keyed) if key[depth] == "1"), len(keyed))
    _split(keyed[:split_at], depth + 1, shard_size, out)
    _split(keyed[split_at:], depth + 1, shard_size, out)


# Beside a feature set's shard files: a hard link to each one's last build, for
# its next build to reuse (Snakemake deletes a job's output before it reruns).
PREVIOUS_DIR = ".previous"


def previous_build(shard_file: str | Path) -> Path:
    """Where the last build of ``shard_file`` is kept for its next build."""
    path = Path(shard_file)
    return path.parent / PREVIOUS_DIR / path.name


def keep_previous_build(shard_file: str | Path) -> None:
    """Hard-link a finished shard file to :func:`previous_build`, replacing the older link.

    A link, not a copy: it costs no time and, while the shard exists, no space
    (a copy of a 10,000-clip shard costs 0.3 s on every rerun). Where the
    filesystem has no hard links, nothing is kept and a rerun recomputes.
    """
    kept = previous_build(shard_file)
    with suppress(OSError):
        kept.parent.mkdir(exist_ok=True)
        # unlink, then link: ext4 flushes a file renamed over another (0.2-1 s
        # here), and a rerun missing this link only recomputes
        kept.unlink(missing_ok=True)
        os.link(shard_file, kept)


def shard_files(shard_file: str | Path) -> list[Path]:
    """Existing shard files of the same feature set, and kept previous builds.

    ``shard_file``'s own previous build comes first; a file reachable under
    both names (a shard and its link) is listed once.
    """
    path = Path(shard_file)
    found = sorted(
        [*path.parent.glob("s*.h5"), *(path.parent / PREVIOUS_DIR).glob("s*.h5")],
        key=lambda other: (other.name != path.name, other.name, other.parent.name == PREVIOUS_DIR),
    )
    files, inodes = [], set()
    for other in found:
        with suppress(OSError):  # vanished meanwhile
            stat = other.stat()
            inode = (stat.st_dev, stat.st_ino)
            if inode not in inodes:
                inodes.add(inode)
                files.append(other)
    return files


def related_shard_files(shard_file: str | Path) -> list[Path]:
    """Existing shard files on the same trie path as ``shard_file``.

    That is the file itself (its previous build), the shards it was split from
    (its prefixes) and the shards it was merged from (names it prefixes): the
    only earlier files that can hold its clips.
    """
    stem = Path(shard_file).stem
    return [
        other
        for other in shard_files(shard_file)
        if stem.startswith(other.stem) or other.stem.startswith(stem)
    ]
