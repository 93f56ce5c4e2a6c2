//! Linearizability checking for recorded histories of concurrent operations.
//!
//! - [`Model`]: a sequential specification (states, and which outputs are legal).
//! - [`check`]: Wing & Gong / Lowe search with memoization of (placed ops, state), the
//!   algorithm of Porcupine, plus the pruning rules below.
//! - [`check_per_key`]: checks each key's sub-history on its own (P-compositionality:
//!   a history of independent objects is linearizable iff each object's is).
//! - [`VersionedRegister`]: the model of one grid object (value plus server version).
//!
//! ```text
//! ops --sort--> completed: call/return events --+--> depth-first search --> Linearizable
//!               pending:   call events ---------+    memo, pruning          NotLinearizable
//!                                                    clock budget           Timeout
//! ```
//!
//! # The search
//!
//! Completed ops' calls and returns are sorted by time into a linked list. Every call
//! before the first return belongs to an op that may take effect next; the search tries
//! each, applies it to the model, removes it from the list and starts over. Meeting a
//! return means that op was not placed in time, so the last choice is undone. Equal
//! timestamps count as overlapping, so clock ties never cause a false alarm. A
//! configuration (placed ops, state) is explored at most once; the search also skips one
//! that an explored configuration *covers*: the same completed ops, a subset of the
//! pending ops, and a state that [`Model::dominates`] it. Further pruning, each sound
//! because only linearizations with the fewest pending ops need be found:
//! - an op that [`Model::never_legal`] says can no longer be placed fails the branch;
//! - a completed op legal without changing the state (a matching read) goes first, as
//!   no linearization needs it later;
//! - a pending op is not placed right before an op that hides its effect (an overwrite).
//!
//! # Pending (indeterminate) operations
//!
//! An op without a response (a timeout, a dropped connection) may have taken effect at
//! any time after its call, or never: its return is at +infinity. It may be placed
//! whenever its call is before the first unplaced return, after completed ops are tried,
//! using [`Model::step_unknown`]; the history is accepted once every completed op is
//! placed, whatever pending ops are left.
//!
//! For [`VersionedRegister`] the hard part is the version a pending write got, which
//! nobody saw. The state records it as [`Version::Unconfirmed`] and keeps
//! `last_version` as the *smallest value the highest version assigned so far can have*:
//! an unconfirmed write raises it by one. A later op that reveals the version (a read
//! of that value, a CAS mismatch reporting it, a CAS that succeeded against it) pins it,
//! legal iff it is at least that bound; a later write needs a version above the bound.
//! Choosing every unpinned version as small as possible is always consistent, so this
//! is exact for integer versions, and the unknown version is one symbol rather than a
//! guess per number, so the state space stays finite.
//!
//! Placed ops are memoized as 128-bit Zobrist fingerprints, as model checkers such as
//! TLC do: a collision could skip one configuration, with odds below 2^-80 for millions.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Debug, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sequential specification of the object under test.
pub trait Model {
    /// A state of the object; compared often, so keep it small and cheap to clone.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked for.
    type Input: Clone + Debug;
    /// What the object answered.
    type Output: Clone + Debug;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// `Some(next state)` if `output` is a legal result of `input` in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
    /// Every state `input` can lead to from `state` when its output is unknown. Outcomes
    /// that change nothing may be left out: never taking effect is always considered.
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Vec<Self::State>;
    /// True if every continuation legal from `worse` is also legal from `better`. The
    /// default, equality, is always correct; a finer order prunes more.
    fn dominates(&self, better: &Self::State, worse: &Self::State) -> bool {
        better == worse
    }
    /// True if a pending `input` can change neither `state` nor any later state (a
    /// read), so it is dropped. The default, false, is always correct.
    fn never_effective(&self, state: &Self::State, input: &Self::Input) -> bool {
        let _ = (state, input);
        false
    }
    /// True if `output` can be a legal result of `input` neither in `state` nor in any
    /// later state. The default, false, is always correct; a sharper answer prunes more.
    fn never_legal(&self, state: &Self::State, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (state, input, output);
        false
    }
}

/// One client operation as recorded by a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Which client issued it (for explanations; one client's ops should not overlap).
    pub client: usize,
    /// When it was invoked, in nanoseconds of one monotonic clock.
    pub call: u64,
    /// When its response arrived; `None` if none did.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What was answered; `None` if no answer arrived.
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// An op that got a response.
    pub fn completed(client: usize, call: u64, ret: u64, input: I, output: O) -> Self {
        let (ret, output) = (Some(ret), Some(output));
        Self {
            client,
            call,
            ret,
            input,
            output,
        }
    }

    /// An op that got no response: it may have taken effect at any time after `call`.
    pub fn indeterminate(client: usize, call: u64, input: I) -> Self {
        Self {
            client,
            call,
            ret: None,
            input,
            output: None,
        }
    }

    /// True unless both the return time and the output are known. Such an op may take
    /// effect at any time after its call, or never; its `ret` and `output` are ignored.
    pub fn is_indeterminate(&self) -> bool {
        self.ret.is_none() || self.output.is_none()
    }
}

/// The verdict on one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some order of the ops respects real time and the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable {
        /// The first completed op no order could place, the longest linearizable prefix
        /// found, the state after it, and the ops that could not go next.
        explanation: String,
    },
    /// The search did not finish within its budget; nothing is known.
    Timeout,
}

/// Checks `history` against `model`, giving up with [`CheckResult::Timeout`] after
/// `budget` of searching. Op numbers in the explanation index `history`.
///
/// # Panics
///
/// If a completed op returned before it was called: that is a bug in the recorder.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Duration,
) -> CheckResult {
    let ops: Vec<_> = history.iter().enumerate().collect();
    search(model, &ops, Instant::now().checked_add(budget))
}

/// An op on one key of a keyed store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedOperation<I, O> {
    /// The key the op touched; ops on different keys are independent.
    pub key: String,
    /// The op itself.
    pub op: Operation<I, O>,
}

/// The verdict on a keyed history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyedCheckResult {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// The first key, in key order, whose sub-history is not.
    NotLinearizable {
        /// The failing key.
        key: String,
        /// As in [`CheckResult::NotLinearizable`]; op numbers index the whole history.
        explanation: String,
    },
    /// No key failed, but these keys were not decided within the budget.
    Timeout {
        /// Keys whose check ran out of budget.
        keys: Vec<String>,
    },
}

/// Checks each key's sub-history independently, sharing one `budget` among them.
///
/// # Panics
///
/// If a completed op returned before it was called.
pub fn check_per_key<M: Model>(
    model: &M,
    history: &[KeyedOperation<M::Input, M::Output>],
    budget: Duration,
) -> KeyedCheckResult {
    let deadline = Instant::now().checked_add(budget);
    let mut by_key: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for (index, keyed) in history.iter().enumerate() {
        by_key
            .entry(&keyed.key)
            .or_default()
            .push((index, &keyed.op));
    }
    let mut timed_out = Vec::new();
    for (key, ops) in by_key {
        match search(model, &ops, deadline) {
            CheckResult::Linearizable => {}
            CheckResult::NotLinearizable { explanation } => {
                let key = key.to_string();
                return KeyedCheckResult::NotLinearizable { key, explanation };
            }
            CheckResult::Timeout => timed_out.push(key.to_string()),
        }
    }
    match timed_out.is_empty() {
        true => KeyedCheckResult::Linearizable,
        false => KeyedCheckResult::Timeout { keys: timed_out },
    }
}

type Op<'a, M> = &'a Operation<<M as Model>::Input, <M as Model>::Output>;

/// Search steps between two reads of the clock.
const CLOCK_EVERY: u64 = 256;
const NIL: usize = usize::MAX;
/// Sentinels heading the list of completed ops' events and of pending ops' calls.
const COMPLETED: usize = 0;
const PENDING: usize = 1;

/// A call or return event in one of the doubly linked lists of unplaced ops.
struct Event {
    op: usize,
    time: u64,
    is_call: bool,
    prev: usize,
    next: usize,
}

struct EventList {
    events: Vec<Event>,
    call_of: Vec<usize>,
    /// [`NIL`] for pending ops, whose return is at +infinity.
    return_of: Vec<usize>,
}

impl EventList {
    fn new<I, O>(ops: &[(usize, &Operation<I, O>)]) -> Self {
        let (mut completed, mut pending) = (Vec::new(), Vec::new());
        for (index, (label, op)) in ops.iter().enumerate() {
            if op.is_indeterminate() {
                pending.push((op.call, false, index));
                continue;
            }
            let ret = op.ret.unwrap_or(op.call);
            assert!(ret >= op.call, "op {label} returned before it was called");
            // At equal times calls sort first: touching ops count as concurrent.
            completed.extend([(op.call, false, index), (ret, true, index)]);
        }
        completed.sort_unstable();
        pending.sort_unstable();
        let mut list = Self {
            events: Vec::with_capacity(2 + completed.len() + pending.len()),
            call_of: vec![NIL; ops.len()],
            return_of: vec![NIL; ops.len()],
        };
        for _ in [COMPLETED, PENDING] {
            let sentinel = Event {
                op: NIL,
                time: 0,
                is_call: false,
                prev: NIL,
                next: NIL,
            };
            list.events.push(sentinel);
        }
        for head in [COMPLETED, PENDING] {
            let chain = if head == COMPLETED {
                &completed
            } else {
                &pending
            };
            let mut prev = head;
            for &(time, is_return, op) in chain {
                let id = list.events.len();
                list.events.push(Event {
                    op,
                    time,
                    is_call: !is_return,
                    prev,
                    next: NIL,
                });
                list.events[prev].next = id;
                match is_return {
                    true => list.return_of[op] = id,
                    false => list.call_of[op] = id,
                }
                prev = id;
            }
        }
        list
    }

    fn next(&self, id: usize) -> usize {
        self.events[id].next
    }

    fn unlink(&mut self, id: usize) {
        let Event { prev, next, .. } = self.events[id];
        self.events[prev].next = next;
        if next != NIL {
            self.events[next].prev = prev;
        }
    }

    /// Relinks an event removed by [`Self::unlink`]; valid in reverse order of removal.
    fn relink(&mut self, id: usize) {
        let Event { prev, next, .. } = self.events[id];
        self.events[prev].next = id;
        if next != NIL {
            self.events[next].prev = id;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if self.return_of[op] != NIL {
            self.unlink(self.return_of[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.relink(self.return_of[op]);
        }
        self.relink(self.call_of[op]);
    }

    /// When the first unplaced completed op returned: no op called later can go next.
    fn first_return(&self) -> u64 {
        let mut id = self.next(COMPLETED);
        while id != NIL && self.events[id].is_call {
            id = self.next(id);
        }
        self.events.get(id).map_or(u64::MAX, |event| event.time)
    }
}

/// The placed ops: a Zobrist fingerprint of the completed ones, the pending ones sorted.
#[derive(Default)]
struct Placed {
    completed: u128,
    pending: Vec<usize>,
}

impl Placed {
    fn toggle(&mut self, op: usize, pending: bool) {
        if !pending {
            let (low, high) = (splitmix64(2 * op as u64), splitmix64(2 * op as u64 + 1));
            self.completed ^= u128::from(high) << 64 | u128::from(low);
            return;
        }
        match self.pending.binary_search(&op) {
            Ok(at) => drop(self.pending.remove(at)),
            Err(at) => self.pending.insert(at, op),
        }
    }
}

/// SplitMix64's output function: a well-mixed 64-bit function of `seed`.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uses a fingerprint as its own hash: it is uniform already, and SipHash dominated
/// debug-build profiles.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, fingerprint: u128) {
        self.0 = fingerprint as u64;
    }
}

/// Explored configurations: by placed completed ops, the placed pending ops and state.
type Memo<S> = HashMap<u128, Vec<(Box<[usize]>, S)>, BuildHasherDefault<FingerprintHasher>>;

/// One placed op: the state before it and the outcomes it could have had.
struct Frame<S> {
    op: usize,
    before: S,
    outcomes: Vec<S>,
    chosen: usize,
    /// Placed because it was legal without changing the state, not as one choice.
    forced: bool,
}

/// The stack that placed the most completed ops, kept incrementally: `ops[..shared]`
/// is known to equal the bottom of the current stack.
struct Deepest<S> {
    ops: Vec<usize>,
    shared: usize,
    completed: usize,
    state: Option<S>,
}

/// Where the search goes next.
#[derive(Clone, Copy)]
enum Step {
    /// At a new configuration: check for dead and forced ops.
    Arrived,
    /// Trying the completed ops' event `at`.
    Completed(usize),
    /// Trying the pending call `at`, if it is no later than `until`.
    Pending {
        at: usize,
        until: u64,
    },
    /// Nothing left to try here: undo the last choice.
    Exhausted,
    Done(bool),
}

struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [(usize, Op<'a, M>)],
    list: EventList,
    placed: Placed,
    memo: Memo<M::State>,
    stack: Vec<Frame<M::State>>,
    state: M::State,
    completed_total: usize,
    completed_left: usize,
    ever_placed: Vec<bool>,
    deepest: Deepest<M::State>,
}

impl<M: Model> Search<'_, M> {
    fn pending(&self, op: usize) -> bool {
        self.ops[op].1.is_indeterminate()
    }

    /// The first of `outcomes[from..]` no explored configuration covers, now recorded.
    fn first_new(&mut self, outcomes: &[M::State], from: usize) -> Option<usize> {
        let seen = self.memo.entry(self.placed.completed).or_default();
        let pending = &self.placed.pending;
        let index = (from..outcomes.len()).find(|&index| {
            !seen.iter().any(|(earlier_pending, earlier)| {
                earlier_pending
                    .iter()
                    .all(|op| pending.binary_search(op).is_ok())
                    && self.model.dominates(earlier, &outcomes[index])
            })
        })?;
        seen.push((pending.clone().into_boxed_slice(), outcomes[index].clone()));
        Some(index)
    }

    /// Places `op` with the first new of `outcomes`, if any.
    fn try_place(&mut self, op: usize, outcomes: Vec<M::State>, forced: bool) -> Option<Step> {
        let pending = self.pending(op);
        self.placed.toggle(op, pending);
        let Some(chosen) = self.first_new(&outcomes, 0) else {
            self.placed.toggle(op, pending);
            return None;
        };
        let before = std::mem::replace(&mut self.state, outcomes[chosen].clone());
        self.stack.push(Frame {
            op,
            before,
            outcomes,
            chosen,
            forced,
        });
        self.list.lift(op);
        if pending {
            return Some(Step::Arrived);
        }
        self.ever_placed[op] = true;
        self.completed_left -= 1;
        let deepest = &mut self.deepest;
        if self.completed_total - self.completed_left > deepest.completed {
            deepest.completed = self.completed_total - self.completed_left;
            deepest.ops.truncate(deepest.shared);
            deepest
                .ops
                .extend(self.stack[deepest.shared..].iter().map(|frame| frame.op));
            deepest.shared = self.stack.len();
            deepest.state = Some(self.state.clone());
        }
        Some(if self.completed_left == 0 {
            Step::Done(true)
        } else {
            Step::Arrived
        })
    }

    /// The legal outcomes of `op` here, without those no better than placing it in place
    /// of a pending op on top of the stack (or, both pending, than placing neither).
    fn outcomes(&self, op: usize) -> Vec<M::State> {
        let mut next = outcomes(self.model, &self.state, self.ops[op].1);
        let Some(top) = self.stack.last().filter(|top| self.pending(top.op)) else {
            return next;
        };
        if next.is_empty() {
            return next;
        }
        let mut without = outcomes(self.model, &top.before, self.ops[op].1);
        if self.pending(op) {
            without.push(top.before.clone());
        }
        next.retain(|with| {
            !without
                .iter()
                .any(|better| self.model.dominates(better, with))
        });
        next
    }

    /// Looks at the completed ops that may go next: if one can never be placed the
    /// branch fails; if one is legal without changing the state it goes first.
    fn arrive(&mut self) -> Step {
        let mut id = self.list.next(COMPLETED);
        let mut forced = None;
        while id != NIL && self.list.events[id].is_call {
            let op = self.list.events[id].op;
            id = self.list.next(id);
            let Operation {
                input,
                output: Some(output),
                ..
            } = self.ops[op].1
            else {
                continue;
            };
            if self.model.never_legal(&self.state, input, output) {
                return Step::Exhausted;
            }
            if forced.is_none() {
                let next = self.model.step(&self.state, input, output);
                forced = next
                    .filter(|next| *next == self.state)
                    .map(|next| (op, next));
            }
        }
        let Some((op, next)) = forced else {
            return Step::Completed(self.list.next(COMPLETED));
        };
        // Covered already means this configuration was explored from elsewhere.
        self.try_place(op, vec![next], true)
            .unwrap_or(Step::Exhausted)
    }

    fn step(&mut self, step: Step) -> Step {
        match step {
            Step::Arrived => self.arrive(),
            Step::Completed(at) if at != NIL && self.list.events[at].is_call => {
                let op = self.list.events[at].op;
                let outcomes = self.outcomes(op);
                let tried = self.try_place(op, outcomes, false);
                tried.unwrap_or(Step::Completed(self.list.next(at)))
            }
            Step::Completed(at) => {
                let until = self
                    .list
                    .events
                    .get(at)
                    .map_or(u64::MAX, |event| event.time);
                Step::Pending {
                    at: self.list.next(PENDING),
                    until,
                }
            }
            Step::Pending { at, until } if at != NIL && self.list.events[at].time <= until => {
                let op = self.list.events[at].op;
                let outcomes = self.outcomes(op);
                let tried = self.try_place(op, outcomes, false);
                tried.unwrap_or(Step::Pending {
                    at: self.list.next(at),
                    until,
                })
            }
            Step::Pending { .. } | Step::Exhausted => self.backtrack(),
            Step::Done(_) => step,
        }
    }

    /// Undoes placements until one has an untried outcome, or ops after it remain to be
    /// tried; a forced op failing fails the configuration below it as a whole.
    fn backtrack(&mut self) -> Step {
        loop {
            let Some(mut frame) = self.stack.pop() else {
                return Step::Done(false);
            };
            self.deepest.shared = self.deepest.shared.min(self.stack.len());
            if let Some(chosen) = self.first_new(&frame.outcomes, frame.chosen + 1) {
                self.state = frame.outcomes[chosen].clone();
                frame.chosen = chosen;
                self.stack.push(frame);
                return Step::Arrived;
            }
            let (op, pending) = (frame.op, self.pending(frame.op));
            self.state = frame.before;
            self.placed.toggle(op, pending);
            self.list.unlift(op);
            let after = self.list.next(self.list.call_of[op]);
            if pending {
                return Step::Pending {
                    at: after,
                    until: self.list.first_return(),
                };
            }
            self.completed_left += 1;
            if !frame.forced {
                return Step::Completed(after);
            }
        }
    }
}

fn outcomes<M: Model>(model: &M, state: &M::State, op: Op<'_, M>) -> Vec<M::State> {
    match (&op.ret, &op.output) {
        (Some(_), Some(output)) => model.step(state, &op.input, output).into_iter().collect(),
        _ => {
            let mut next = model.step_unknown(state, &op.input);
            next.retain(|candidate| candidate != state);
            next
        }
    }
}

fn search<M: Model>(
    model: &M,
    ops: &[(usize, Op<'_, M>)],
    deadline: Option<Instant>,
) -> CheckResult {
    let init = model.init();
    let ops: Vec<_> = ops
        .iter()
        .filter(|(_, op)| !op.is_indeterminate() || !model.never_effective(&init, &op.input))
        .copied()
        .collect();
    let completed_total = ops.iter().filter(|(_, op)| !op.is_indeterminate()).count();
    let mut search = Search {
        model,
        ops: &ops,
        list: EventList::new(&ops),
        placed: Placed::default(),
        memo: Memo::default(),
        stack: Vec::new(),
        state: init,
        completed_total,
        completed_left: completed_total,
        ever_placed: vec![false; ops.len()],
        deepest: Deepest {
            ops: Vec::new(),
            shared: 0,
            completed: 0,
            state: None,
        },
    };
    let mut step = if completed_total == 0 {
        Step::Done(true)
    } else {
        Step::Arrived
    };
    for steps in 0u64.. {
        if steps % CLOCK_EVERY == 0 && deadline.is_some_and(|at| Instant::now() >= at) {
            return CheckResult::Timeout;
        }
        step = match step {
            Step::Done(true) => return CheckResult::Linearizable,
            Step::Done(false) => break,
            _ => search.step(step),
        };
    }
    let explanation = explain(&search, &model.init());
    CheckResult::NotLinearizable { explanation }
}

/// How many ops an explanation lists per section.
const EXPLAIN_OPS: usize = 12;

fn describe<I: Debug, O: Debug>((label, op): (usize, &Operation<I, O>)) -> String {
    let (ret, output) = match (op.ret, &op.output, op.is_indeterminate()) {
        (Some(ret), Some(output), false) => (ret.to_string(), format!("{output:?}")),
        _ => ("never".to_string(), "unknown".to_string()),
    };
    let (client, call, input) = (op.client, op.call, &op.input);
    format!("op {label} (client {client}, called {call}, returned {ret}): {input:?} -> {output}")
}

fn explain<M: Model>(search: &Search<'_, M>, init: &M::State) -> String {
    let (ops, deepest) = (search.ops, &search.deepest);
    let mut text = String::new();
    let unplaceable = (0..ops.len())
        .filter(|&op| !ops[op].1.is_indeterminate() && !search.ever_placed[op])
        .min_by_key(|&op| (ops[op].1.ret, op));
    if let Some(op) = unplaceable {
        let _ = writeln!(
            text,
            "first completed op no order could place: {}",
            describe(ops[op])
        );
    }
    let (completed, all) = (deepest.completed, deepest.ops.len());
    let total = search.completed_total;
    let _ = writeln!(
        text,
        "longest linearizable prefix: {completed} of {total} completed ops ({all} ops in all)"
    );
    let skipped = all.saturating_sub(EXPLAIN_OPS);
    if skipped > 0 {
        let _ = writeln!(text, "  ... {skipped} earlier ops");
    }
    for &op in &deepest.ops[skipped..] {
        let _ = writeln!(text, "  {}", describe(ops[op]));
    }
    let _ = writeln!(
        text,
        "state after it: {:?}",
        deepest.state.as_ref().unwrap_or(init)
    );
    let mut placed = vec![false; ops.len()];
    for &op in &deepest.ops {
        placed[op] = true;
    }
    let unplaced = |op: &usize| !placed[*op] && !ops[*op].1.is_indeterminate();
    // The unplaced completed op that returned first bounds what could go next.
    let Some((due, _)) = (0..ops.len())
        .filter(unplaced)
        .filter_map(|op| ops[op].1.ret.map(|ret| (ret, op)))
        .min()
    else {
        return text;
    };
    let blocked: Vec<_> = (0..ops.len())
        .filter(unplaced)
        .filter(|&op| ops[op].1.call <= due)
        .collect();
    let _ = writeln!(
        text,
        "completed ops none of which can go next (called by {due}):"
    );
    for &op in blocked.iter().take(EXPLAIN_OPS) {
        let _ = writeln!(text, "  {}", describe(ops[op]));
    }
    if blocked.len() > EXPLAIN_OPS {
        let _ = writeln!(text, "  ... {} more", blocked.len() - EXPLAIN_OPS);
    }
    text
}

/// The bytes of a value: cheap to clone, shown as text when they are UTF-8.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Value(Arc<[u8]>);

impl Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::from(text.as_bytes())
    }
}

impl Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Ok(text) = std::str::from_utf8(&self.0) {
            return write!(f, "{text:?}");
        }
        f.write_str("0x")?;
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The model of one grid object: a value with a server-assigned version that strictly
/// increases on every write of the key (also across remove and re-create) and is never
/// reused. Versions start at 1. Expiry is not modelled: use objects that do not expire.
#[derive(Clone, Copy, Debug, Default)]
pub struct VersionedRegister;

/// The version of the current value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Seen in a response.
    Known(u64),
    /// Written by an op that got no response and not revealed by a later op yet; at
    /// least [`RegisterState::last_version`].
    Unconfirmed,
}

/// The state of one grid object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegisterState {
    /// The value and its version; `None` while absent.
    pub current: Option<(Value, Version)>,
    /// The smallest value the highest version assigned so far can have: exact once every
    /// version is known; each unconfirmed write adds one. 0 before the first write.
    pub last_version: u64,
}

impl RegisterState {
    /// The state with the current version revealed as `version`, if it can be that.
    fn pinned(&self, version: u64) -> Option<Self> {
        let (value, current) = self.current.as_ref()?;
        match *current {
            Version::Known(known) => (known == version).then(|| self.clone()),
            Version::Unconfirmed => (version >= self.last_version).then(|| Self {
                current: Some((value.clone(), Version::Known(version))),
                last_version: version,
            }),
        }
    }

    /// The state after writing `value` at `version` (`None`: unconfirmed), if legal.
    fn written(&self, value: &Value, version: Option<u64>) -> Option<Self> {
        let (version, last_version) = match version {
            Some(version) => (Version::Known(version), version),
            None => (Version::Unconfirmed, self.last_version.saturating_add(1)),
        };
        let current = Some((value.clone(), version));
        (last_version > self.last_version).then_some(Self {
            current,
            last_version,
        })
    }

    /// True if the object can never again be at `version` (holding `value`, if given),
    /// as `last_version` never decreases.
    fn gone(&self, version: u64, value: Option<&Value>) -> bool {
        if version != self.last_version {
            return version < self.last_version;
        }
        // Only the current object, confirmed or not, can be at the newest version.
        match (&self.current, value) {
            (None, _) => true,
            (Some((current, _)), Some(value)) => current != value,
            (Some(_), None) => false,
        }
    }
}

/// A request to one grid object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    /// Reads value and version.
    Read,
    /// Writes the value whether or not the object exists (upsert).
    Write(Value),
    /// Writes the value only if the object exists at `expected_version`.
    Cas {
        /// The version the caller read.
        expected_version: u64,
        /// The new value.
        value: Value,
    },
    /// Removes the object.
    Remove,
}

/// A grid object's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// `Read`: the value and version, or `None` if absent.
    ReadOk(Option<(Value, u64)>),
    /// `Write` or `Cas` succeeded with this new version.
    Written(u64),
    /// `Cas` failed: the current version, or `None` if absent (the grid's `NotFound`).
    Mismatch(Option<u64>),
    /// `Remove`: whether the object existed.
    Removed(bool),
}

impl Model for VersionedRegister {
    type State = RegisterState;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> RegisterState {
        RegisterState {
            current: None,
            last_version: 0,
        }
    }

    fn step(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> Option<RegisterState> {
        use RegisterInput as In;
        use RegisterOutput as Out;
        let absent = state.current.is_none();
        match (input, output) {
            (In::Read, Out::ReadOk(None)) | (In::Cas { .. }, Out::Mismatch(None)) => {
                absent.then(|| state.clone())
            }
            (In::Read, Out::ReadOk(Some((value, version)))) => {
                let (current, _) = state.current.as_ref()?;
                state.pinned(*version).filter(|_| current == value)
            }
            (In::Write(value), Out::Written(version)) => state.written(value, Some(*version)),
            (
                In::Cas {
                    expected_version,
                    value,
                },
                Out::Written(version),
            ) => state
                .pinned(*expected_version)?
                .written(value, Some(*version)),
            (
                In::Cas {
                    expected_version, ..
                },
                Out::Mismatch(Some(current)),
            ) => state
                .pinned(*current)
                .filter(|_| current != expected_version),
            (In::Remove, Out::Removed(existed)) => (*existed != absent).then(|| RegisterState {
                current: None,
                last_version: state.last_version,
            }),
            // An answer of the wrong kind for the request.
            _ => None,
        }
    }

    fn step_unknown(&self, state: &RegisterState, input: &RegisterInput) -> Vec<RegisterState> {
        // Outcomes that change nothing (mismatches, removing nothing) are left out.
        let next = match input {
            RegisterInput::Read => None,
            RegisterInput::Write(value) => state.written(value, None),
            RegisterInput::Cas {
                expected_version,
                value,
            } => state
                .pinned(*expected_version)
                .and_then(|at| at.written(value, None)),
            RegisterInput::Remove => state.current.as_ref().map(|_| RegisterState {
                current: None,
                last_version: state.last_version,
            }),
        };
        next.into_iter().collect()
    }

    /// Same current object and a bound on versions no higher: every write and every
    /// revealed version legal from `worse` is legal from `better`.
    fn dominates(&self, better: &RegisterState, worse: &RegisterState) -> bool {
        better.current == worse.current && better.last_version <= worse.last_version
    }

    /// Reads change nothing; a CAS expecting a version gone by can no longer succeed.
    fn never_effective(&self, state: &RegisterState, input: &RegisterInput) -> bool {
        match input {
            RegisterInput::Read => true,
            RegisterInput::Cas {
                expected_version, ..
            } => state.gone(*expected_version, None),
            RegisterInput::Write(_) | RegisterInput::Remove => false,
        }
    }

    fn never_legal(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> bool {
        use RegisterInput as In;
        use RegisterOutput as Out;
        match (input, output) {
            (In::Write(_), Out::Written(version)) => *version <= state.last_version,
            (
                In::Cas {
                    expected_version, ..
                },
                Out::Written(version),
            ) => *version <= state.last_version || state.gone(*expected_version, None),
            (_, Out::ReadOk(Some((value, version)))) => state.gone(*version, Some(value)),
            (_, Out::Mismatch(Some(version))) => state.gone(*version, None),
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;
