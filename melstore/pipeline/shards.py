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
from collections.abc import Sequence

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
