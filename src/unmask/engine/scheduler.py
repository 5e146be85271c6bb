"""The scheduler: which requests are live, which wait, and which arena slots each live row holds.

Requests wait in arrival order and join the live set at the next step while
the live rows (guidance twins counted) stay within ``max_rows`` and, for
cached requests, free arena slots remain; the oldest waiting request goes
first, so none waits forever behind smaller ones. A finished or cancelled
request leaves at once and frees its slots (a row that is done frees its own
slot at once); its place is taken at the next step.
"""

from __future__ import annotations

from collections import deque

from .request import RequestState


class Scheduler:
    def __init__(self, max_rows: int, slots: int) -> None:
        self.max_rows = max_rows
        self.free_slots = list(range(slots - 1, -1, -1))  # a stack: the lowest slot is handed out first
        self.slots = slots
        self.waiting: deque[RequestState] = deque()
        self.running: list[RequestState] = []

    def resize(self, slots: int) -> None:
        """Set the number of arena slots (only while no slot is held)."""
        assert len(self.free_slots) == self.slots, "the arena is resized only when no slot is held"
        self.slots, self.free_slots = slots, list(range(slots - 1, -1, -1))

    @property
    def live_rows(self) -> int:
        return sum(st.request.rows for st in self.running)

    def add(self, state: RequestState) -> None:
        self.waiting.append(state)

    def admit(self) -> list[RequestState]:
        """Move waiting requests in arrival order into the live set while they fit; returns those admitted."""
        admitted, rows = [], self.live_rows
        while self.waiting:
            st = self.waiting[0]
            need = st.request.rows if st.config.cache != "none" else 0
            if rows + st.request.rows > self.max_rows or need > len(self.free_slots):
                break
            self.waiting.popleft()
            st.slots = [self.free_slots.pop() for _ in range(need)]
            self.running.append(st)
            rows += st.request.rows
            admitted.append(st)
        return admitted

    def release_rows(self, state: RequestState, rows: list[int]) -> None:
        """Rows of a live request that are done give their slots back (guidance twins too)."""
        if not state.slots:
            return
        for r in rows:
            for i in (r, r + state.n) if state.guided else (r,):
                if state.slots[i] >= 0:
                    self.free_slots.append(state.slots[i])
                    state.slots[i] = -1

    def remove(self, state: RequestState) -> None:
        """A finished or cancelled request leaves the live set (or the queue) and frees its slots."""
        if state in self.running:
            self.running.remove(state)
            self.free_slots += [s for s in state.slots if s >= 0]
            state.slots = []
        elif state in self.waiting:
            self.waiting.remove(state)
