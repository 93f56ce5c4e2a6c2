//! The search's bookkeeping of unplaced operations: doubly linked lists of call and
//! return events, in time order, that the search unlinks and relinks as it places and
//! un-places operations.

use super::Operation;

pub(super) const NIL: usize = usize::MAX;
/// Sentinels heading the list of completed ops' events and of pending ops' calls.
pub(super) const COMPLETED: usize = 0;
pub(super) const PENDING: usize = 1;

/// A call or return in one of the doubly linked lists of unplaced ops.
#[derive(Clone, Copy)]
pub(super) struct Event {
    pub(super) op: usize,
    pub(super) time: u64,
    pub(super) is_call: bool,
    pub(super) prev: usize,
    pub(super) next: usize,
}

pub(super) struct EventList {
    pub(super) events: Vec<Event>,
    pub(super) call_of: Vec<usize>,
    /// [`NIL`] for pending ops, whose return is at +infinity.
    pub(super) return_of: Vec<usize>,
}

impl EventList {
    pub(super) fn new<I, O>(ops: &[(usize, &Operation<I, O>)]) -> Self {
        let (mut completed, mut pending) = (Vec::new(), Vec::new());
        for (index, &(label, op)) in ops.iter().enumerate() {
            let Some(ret) = op.ret.filter(|_| !op.is_indeterminate()) else {
                pending.push((op.call, false, index));
                continue;
            };
            assert!(ret >= op.call, "op {label} returned before it was called");
            // At equal times calls sort first: touching ops count as concurrent.
            completed.extend([(op.call, false, index), (ret, true, index)]);
        }
        completed.sort_unstable();
        // Newest first: a pending op that took effect is mostly seen soon after its call.
        pending.sort_unstable_by(|a, b| b.cmp(a));
        let sentinel = Event {
            op: NIL,
            time: 0,
            is_call: false,
            prev: NIL,
            next: NIL,
        };
        let (call_of, return_of) = (vec![NIL; ops.len()], vec![NIL; ops.len()]);
        let mut list = Self {
            events: vec![sentinel; 2],
            call_of,
            return_of,
        };
        for (head, chain) in [(COMPLETED, completed), (PENDING, pending)] {
            let mut prev = head;
            for (time, is_return, op) in chain {
                let id = list.events.len();
                let is_call = !is_return;
                list.events.push(Event {
                    op,
                    time,
                    is_call,
                    prev,
                    next: NIL,
                });
                list.events[prev].next = id;
                match is_call {
                    true => list.call_of[op] = id,
                    false => list.return_of[op] = id,
                }
                prev = id;
            }
        }
        list
    }

    pub(super) fn next(&self, id: usize) -> usize {
        self.events[id].next
    }

    /// Unlinks (`link` false) or relinks an event; relinking is valid in reverse order.
    pub(super) fn link(&mut self, id: usize, link: bool) {
        let Event { prev, next, .. } = self.events[id];
        self.events[prev].next = if link { id } else { next };
        if next != NIL {
            self.events[next].prev = if link { id } else { prev };
        }
    }

    pub(super) fn lift(&mut self, op: usize) {
        self.link(self.call_of[op], false);
        if self.return_of[op] != NIL {
            self.link(self.return_of[op], false);
        }
    }

    pub(super) fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.link(self.return_of[op], true);
        }
        self.link(self.call_of[op], true);
    }

    /// When the first unplaced completed op returned: no op called later can go next.
    pub(super) fn first_return(&self) -> u64 {
        let mut id = self.next(COMPLETED);
        while id != NIL && self.events[id].is_call {
            id = self.next(id);
        }
        self.events.get(id).map_or(u64::MAX, |event| event.time)
    }
}
