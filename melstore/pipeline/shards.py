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
import re
from collections.abc import Sequence

import numpy as np

KEY_BITS = 64
# Hex digits of the digest in a shard file's name: 64 bits, no collision among a set's shards.
SHARD_DIGEST_CHARS = 16
# A shard file's name (Plan.shard_file), or its writer's temporary name (melstore.files).
SHARD_FILE_NAME = re.compile(rf"\.?s[01]*-[0-9a-f]{{{SHARD_DIGEST_CHARS}}}\.h5(\.tmp\d+)?")


def shard_key(clip_id: str) -> str:
    """The clip's position in the trie: 64 bits of sha256, as a '0'/'1' string."""
    return format(key_value(clip_id), f"0{KEY_BITS}b")


def key_range(shard: str) -> tuple[int, int]:
    """The keys (:func:`key_value`) of the clips shard ``shard`` holds: ``start <= key < stop``."""
    prefix = shard.removeprefix("s")
    start = int(prefix, 2) << (KEY_BITS - len(prefix)) if prefix else 0
    return start, start + (1 << (KEY_BITS - len(prefix)))


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
        Shard name to the manifest row indices it holds, in key order (equal
        keys in manifest order). Shards are listed in name order, which is key
        order too, and none is empty: end to end, they list the rows in one
        order at every ``shard_size``.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    keys = key_values(clip_ids)
    rows = np.argsort(keys, kind="stable")  # equal keys (a 64-bit collision) in manifest order
    shards: dict[str, list[int]] = {}
    _split(keys[rows], rows, 0, len(rows), depth=0, shard_size=shard_size, out=shards)
    return dict(sorted(shards.items()))


def key_value(clip_id: str) -> int:
    """:func:`shard_key` as an integer (below ``2**KEY_BITS``): one clip's :func:`key_values`."""
    return int(key_values([clip_id])[0])


def key_values(clip_ids: Sequence[str]) -> np.ndarray:
    """The first 64 bits of each clip id's sha256, as uint64: its place in the shard trie.

    The digests are joined into one buffer and read by numpy at once, which
    halves the cost of a million ids against converting each to an int.
    """
    sha256 = hashlib.sha256
    digests = b"".join([sha256(clip_id.encode()).digest()[: KEY_BITS // 8] for clip_id in clip_ids])
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _split(keys, rows, start, stop, *, depth, shard_size, out) -> None:
    """Shard ``rows[start:stop]``, whose sorted ``keys`` share their first ``depth`` bits."""
    if start == stop:
        return
    if stop - start <= shard_size or depth == KEY_BITS:
        prefix = format(int(keys[start]), f"0{KEY_BITS}b")[:depth]
        out["s" + prefix] = rows[start:stop].tolist()
        return
    # the keys with a 1 at this depth are at least the shared prefix followed by 1
    first = int(keys[start])
    one = (first >> (KEY_BITS - depth) << (KEY_BITS - depth)) | (1 << (KEY_BITS - 1 - depth))
    split_at = start + int(np.searchsorted(keys[start:stop], np.uint64(one)))
    _split(keys, rows, start, split_at, depth=depth + 1, shard_size=shard_size, out=out)
    _split(keys, rows, split_at, stop, depth=depth + 1, shard_size=shard_size, out=out)
