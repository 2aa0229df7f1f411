"""From laptrack's graph of ``(frame, index)`` nodes to tracks with ids and parents.

* :func:`prune_short_divisions` undoes "divisions" whose daughter vanishes again within a
  few frames: in segmented movies they are nearly always a cell cut in two for a frame or
  two, not a mitosis.
* :func:`assign_tracks` walks the graph in time order: a node continues its predecessor's
  track unless the predecessor divides, in which case each daughter starts a new track whose
  parent is the mother.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import networkx as nx
import numpy as np

__all__ = ["assign_tracks", "prune_short_divisions", "relabel_frames"]

Node = tuple[int, int]


def _chain_length(graph: nx.DiGraph, start: Node, last_frame: int) -> tuple[int, bool]:
    """Nodes on the non-branching chain from ``start``; and whether it reaches the movie's
    end or a further division (then its length is no evidence of a spurious split)."""
    n, node = 1, start
    while True:
        succ = list(graph.successors(node))
        if len(succ) != 1:
            return n, len(succ) > 1 or node[0] >= last_frame
        node = succ[0]
        n += 1


def prune_short_divisions(graph: nx.DiGraph, min_frames: int, last_frame: int) -> int:
    """Remove division edges to daughters that exist for fewer than ``min_frames`` frames.

    A daughter chain that ends before the last frame of the movie and is shorter than
    ``min_frames`` is cut from its mother (it stays a track of its own); the other daughter
    then simply continues the mother's track.  Returns the number of edges removed.
    """
    removed = 0
    if min_frames <= 1:
        return 0
    for node in sorted(graph.nodes):
        succ = sorted(graph.successors(node))
        if len(succ) < 2:
            continue
        info = [(_chain_length(graph, s, last_frame), s) for s in succ]
        short = [s for (n, open_end), s in info if n < min_frames and not open_end]
        if len(short) == len(succ):  # keep the longest as the continuation
            keep = max(info, key=lambda x: (x[0][0], x[1]))[1]
            short = [s for s in short if s != keep]
        for s in short:
            graph.remove_edge(node, s)
            removed += 1
    return removed


def assign_tracks(graph: nx.DiGraph, order_key: dict | None = None,
                  prefer: dict | None = None) -> tuple[dict[Node, int], dict[int, int]]:
    """Track id of every node and the division parents.

    Parameters
    ----------
    graph : nx.DiGraph
        Nodes ``(frame, index)``, edges forward in time; at most one predecessor per node.
    order_key : dict, optional
        Node -> sort key, to number new tracks in a reproducible order within a frame
        (default: the node itself).
    prefer : dict, optional
        Node -> a label value the caller would like its track to keep (e.g. the ids of a
        previous linking, for a stable re-link); each track takes the most common preferred
        value of its nodes that no earlier track took.

    Returns
    -------
    track_of : dict
        Node -> track id (1, 2, ... in order of appearance unless ``prefer`` keeps ids).
    parents : dict
        Daughter track id -> mother track id.
    """
    key = (lambda n: (n[0], order_key[n])) if order_key is not None else (lambda n: n)
    track_of: dict[Node, int] = {}
    parents: dict[int, int] = {}
    members: dict[int, list[Node]] = {}
    nxt = 1
    for node in sorted(graph.nodes, key=key):
        preds = list(graph.predecessors(node))
        if len(preds) > 1:
            raise ValueError(f"node {node} has {len(preds)} predecessors; merging is not allowed")
        if preds and graph.out_degree(preds[0]) == 1:
            tid = track_of[preds[0]]
        else:
            tid = nxt
            nxt += 1
            if preds:
                parents[tid] = track_of[preds[0]]
        track_of[node] = tid
        members.setdefault(tid, []).append(node)
    if prefer:
        track_of, parents = _keep_preferred(track_of, parents, members, prefer)
    return track_of, parents


def _keep_preferred(track_of: dict, parents: dict, members: dict, prefer: dict
                    ) -> tuple[dict, dict]:
    """Renumber tracks so each keeps its most common preferred label where possible."""
    taken: set[int] = set()
    new_id: dict[int, int] = {}
    for tid in sorted(members, key=lambda t: (len(members[t]) * -1, t)):  # long tracks first
        votes = Counter(int(prefer[n]) for n in members[tid] if prefer.get(n, 0) > 0)
        for value, _ in votes.most_common():
            if value not in taken:
                new_id[tid] = value
                taken.add(value)
                break
    top = max(taken, default=0)
    for tid in sorted(members):
        if tid not in new_id:
            top += 1
            new_id[tid] = top
    return ({n: new_id[t] for n, t in track_of.items()},
            {new_id[d]: new_id[m] for d, m in parents.items()})


def relabel_frames(frames: Sequence[np.ndarray], objects: Sequence, track_of: dict[Node, int]
                   ) -> np.ndarray:
    """``(T, *spatial)`` int32 labels with each object's track id."""
    out = np.zeros((len(frames),) + tuple(np.shape(frames[0])), np.int32)
    for t, (frame, objs) in enumerate(zip(frames, objects)):
        if not len(objs):
            continue
        tids = np.asarray([track_of[(t, i)] for i in range(len(objs))], np.int32)
        frame = np.asarray(frame)
        if int(objs.ids[-1]) <= 4 * frame.size + 1024:
            lut = np.zeros(int(objs.ids[-1]) + 1, np.int32)
            lut[objs.ids] = tids
            out[t] = lut[frame]
        else:  # huge label values: look them up instead of indexing a table
            fg = frame > 0
            out[t][fg] = tids[np.searchsorted(objs.ids, frame[fg].astype(np.int64))]
    return out
