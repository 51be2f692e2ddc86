"""The states of a fill and every transition between them, in one table (drawn in
docs/architecture.md): only the fill's own task moves it, and only along TRANSITIONS
(`check_transition`). Readers never look at the state: they read the body
(proxy/fill_body.py) once `Fill.wait_head` returned."""

from __future__ import annotations

import enum


class State(enum.Enum):
    QUEUED = "queued"  # waiting for a fill slot and the key's lock
    FETCHING = "fetching"  # the request is out; no head yet
    STORING = "storing"  # head published; the body goes to a temp file readers follow
    PASSING = "passing"  # head published; the body is not stored, readers take it from memory
    HANDED = "handed"  # not shareable: the leader alone reads the body, from memory
    COMPLETE = "complete"  # the whole body is in the temp file (committed or not)
    PASSED = "passed"  # the whole body went through memory; nothing stored
    ABANDONED = "abandoned"  # the last reader left a body that is not stored: download stopped
    RETRY = "retry"  # another process committed the key while we waited for its lock
    FAILED = "failed"  # the origin, the body or the guard failed; readers get the error


_S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    _S.QUEUED: frozenset({_S.FETCHING, _S.RETRY, _S.FAILED}),
    _S.FETCHING: frozenset({_S.STORING, _S.PASSING, _S.HANDED, _S.COMPLETE, _S.FAILED}),
    _S.STORING: frozenset({_S.PASSING, _S.COMPLETE, _S.FAILED}),
    _S.PASSING: frozenset({_S.PASSED, _S.ABANDONED, _S.FAILED}),
    _S.HANDED: frozenset({_S.PASSED, _S.ABANDONED, _S.FAILED}),
    _S.COMPLETE: frozenset(),
    _S.PASSED: frozenset(),
    _S.ABANDONED: frozenset(),
    _S.RETRY: frozenset(),
    _S.FAILED: frozenset(),
}

FINAL = frozenset(state for state, onward in TRANSITIONS.items() if not onward)
# The head is known (or will never be): waiters stop waiting for it.
HEAD_KNOWN = frozenset(State) - {State.QUEUED, State.FETCHING}
# A late request can still be given the whole body from offset 0: the fill is storing it
# (or stored it), or has not decided yet; or its response goes to its leader alone (a
# request that joins it fetches for itself). A fill that stopped storing lets go of bytes
# once its readers sent them, so nobody may join it to read.
JOINABLE = frozenset(
    {State.QUEUED, State.FETCHING, State.STORING, State.COMPLETE, State.HANDED, State.RETRY}
)


def check_transition(current: State, new: State) -> State:
    """`new`, if the table allows moving there from `current`; else RuntimeError (a bug)."""
    if new not in TRANSITIONS[current]:
        raise RuntimeError(f"fill cannot go from {current.value} to {new.value}")
    return new
