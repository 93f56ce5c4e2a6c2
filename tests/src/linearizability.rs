//! Linearizability checking for recorded histories of concurrent operations.
//!
//! - [`Model`]: a sequential specification (states, and which outputs are legal).
//! - [`check`]: Wing & Gong / Lowe search with memoization of (placed ops, state), the
//!   algorithm of Porcupine, with the pruning rules below.
//! - [`check_per_key`]: checks each key's sub-history on its own (P-compositionality:
//!   a history of independent objects is linearizable iff each object's is).
//! - [`VersionedRegister`]: the model of one grid object (value plus server version).
//!
//! ```text
//! ops ──sort──> completed ops: calls and returns ──┐
//!               pending ops:   calls, newest first ─┴─> depth-first search ──> verdict
//!                                                       memo · pruning · budget
//! ```
//!
//! # The search
//!
//! Completed ops' calls and returns are sorted by time into a linked list. Every call
//! before the first return belongs to an op that may take effect next; the search tries
//! each, applies it to the model, unlinks it and starts over. Meeting a return means that
//! op was not placed in time, so the last choice is undone. Equal timestamps count as
//! overlapping, so clock ties never raise a false alarm.
//!
//! A pending op (no response: a timeout, a dropped connection) may have taken effect at
//! any time after its call, or never: its return is at +infinity. It is tried after the
//! completed ops, whenever its call precedes the first unplaced return, through
//! [`Model::step_unknown`]. The history is accepted once every completed op is placed,
//! whatever pending ops are left.
//!
//! A configuration (completed ops placed, pending ops placed, state) is skipped when an
//! explored one *covers* it: the same completed ops, no more pending ops of any class
//! (below), and a state that [`Model::dominates`] it. The rest of the pruning is sound
//! because some linearization with the fewest pending ops survives each rule:
//! - an op that [`Model::never_legal`] rules out for good fails the branch;
//! - a completed op legal without changing the state (a matching read) goes first;
//! - a pending op is not placed right before an op that hides its effect (an overwrite);
//! - pending ops whose inputs are equal once [`Model::forget`] drops what no response
//!   showed form a class: only the latest called of a class is tried, and a placed set
//!   is remembered as a count per class (any placed one could have been placed later).
//!
//! Placed completed ops are remembered as 128-bit Zobrist fingerprints, as model checkers
//! such as TLC do: a collision could skip one configuration, at odds below 2^-80.
//!
//! # Versions nobody saw
//!
//! For [`VersionedRegister`] the version a pending write got is unknown. The state marks
//! it [`Version::Unconfirmed`] and keeps `last_version` as the *least value the highest
//! version assigned so far can have*: an unconfirmed write raises it by one. A later op
//! that reveals the version (a read of that value, a CAS mismatch reporting it, a CAS
//! that succeeded against it) pins it, legal iff it is at least that bound; a later write
//! needs a version above the bound. Taking every unpinned version as small as possible is
//! always consistent, so this is exact for integer versions while keeping one state per
//! outcome rather than one per guessed number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sequential specification of the object under test. The defaulted methods only
/// speed the search up; their defaults are always correct.
pub trait Model {
    /// A state of the object; compared often, so keep it small and cheap to clone.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked for.
    type Input: Clone + PartialEq + Debug;
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
    /// True if every continuation legal from `worse` is also legal from `better`.
    fn dominates(&self, better: &Self::State, worse: &Self::State) -> bool {
        better == worse
    }
    /// Rewrites pending ops' inputs to drop what no completed op's output can reveal
    /// (a value no read returned), so that interchangeable pending ops compare equal.
    fn forget(&self, pending: &mut [Self::Input], outputs: &[&Self::Output]) {
        let _ = (pending, outputs);
    }
    /// True if a pending `input` can change neither `state` nor any later state (a read).
    fn never_effective(&self, state: &Self::State, input: &Self::Input) -> bool {
        let _ = (state, input);
        false
    }
    /// True if `output` is a legal result of `input` neither in `state` nor later.
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
        let (ret, output) = (None, None);
        Self {
            client,
            call,
            ret,
            input,
            output,
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
        /// found, the state after it, and the completed ops that could not go next.
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
    let mut keys = Vec::new();
    for (key, ops) in by_key {
        match search(model, &ops, deadline) {
            CheckResult::Linearizable => {}
            CheckResult::NotLinearizable { explanation } => {
                let key = key.to_string();
                return KeyedCheckResult::NotLinearizable { key, explanation };
            }
            CheckResult::Timeout => keys.push(key.to_string()),
        }
    }
    match keys.is_empty() {
        true => KeyedCheckResult::Linearizable,
        false => KeyedCheckResult::Timeout { keys },
    }
}

/// An op with its number in the caller's history.
type Labeled<'a, M> = (
    usize,
    &'a Operation<<M as Model>::Input, <M as Model>::Output>,
);

/// Search steps between two reads of the clock.
const CLOCK_EVERY: u64 = 256;
const NIL: usize = usize::MAX;
/// Sentinels heading the list of completed ops' events and of pending ops' calls.
const COMPLETED: usize = 0;
const PENDING: usize = 1;

/// A call or return in one of the doubly linked lists of unplaced ops.
#[derive(Clone, Copy)]
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

    fn next(&self, id: usize) -> usize {
        self.events[id].next
    }

    /// Unlinks (`link` false) or relinks an event; relinking is valid in reverse order.
    fn link(&mut self, id: usize, link: bool) {
        let Event { prev, next, .. } = self.events[id];
        self.events[prev].next = if link { id } else { next };
        if next != NIL {
            self.events[next].prev = if link { id } else { prev };
        }
    }

    fn lift(&mut self, op: usize) {
        self.link(self.call_of[op], false);
        if self.return_of[op] != NIL {
            self.link(self.return_of[op], false);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.link(self.return_of[op], true);
        }
        self.link(self.call_of[op], true);
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

/// The placed ops: a fingerprint of the completed ones, and the pending ones both one
/// by one and as (class, count) pairs sorted by class.
struct Placed {
    completed: u128,
    pending: Vec<bool>,
    profile: Vec<(usize, usize)>,
}

impl Placed {
    /// Places or unplaces `op`, a pending op of `class` unless that is [`NIL`].
    fn toggle(&mut self, op: usize, class: usize) {
        if class == NIL {
            let (low, high) = (splitmix64(2 * op as u64), splitmix64(2 * op as u64 + 1));
            self.completed ^= u128::from(high) << 64 | u128::from(low);
            return;
        }
        self.pending[op] = !self.pending[op];
        let at = self
            .profile
            .binary_search_by_key(&class, |&(class, _)| class);
        match at {
            Ok(at) if self.pending[op] => self.profile[at].1 += 1,
            Ok(at) if self.profile[at].1 > 1 => self.profile[at].1 -= 1,
            Ok(at) => {
                self.profile.remove(at);
            }
            Err(at) => self.profile.insert(at, (class, 1)),
        }
    }

    /// True if this has placed at least as many of every class as `earlier`.
    fn at_least(&self, earlier: &[(usize, usize)]) -> bool {
        earlier.iter().all(|(class, count)| {
            let at = self
                .profile
                .binary_search_by_key(class, |&(class, _)| class);
            at.is_ok_and(|at| self.profile[at].1 >= *count)
        })
    }
}

/// SplitMix64's output function: a well-mixed 64-bit function of `seed`.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Explored configurations: by placed completed ops, the pending profile and state.
type Memo<S> = HashMap<u128, Vec<(Box<[(usize, usize)]>, S)>>;

/// One placed op: the state before it and the outcomes it could have had.
struct Frame<S> {
    op: usize,
    before: S,
    outcomes: Vec<S>,
    chosen: usize,
    /// Placed because it was legal without changing the state, not as one choice.
    forced: bool,
}

/// The stack that placed the most completed ops, kept incrementally: `ops[..shared]` is
/// known to equal the bottom of the current stack.
struct Deepest<S> {
    ops: Vec<usize>,
    shared: usize,
    placed: usize,
    state: Option<S>,
}

/// Where the search goes next.
#[derive(Clone, Copy)]
enum Step {
    /// At a new configuration: look for dead and forced ops.
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
    ops: &'a [Labeled<'a, M>],
    /// Inputs, pending ones as [`Model::forget`] left them.
    inputs: Vec<M::Input>,
    /// The earliest called pending op with an equal input; [`NIL`] for completed ops.
    class: Vec<usize>,
    /// The next later-called pending op with an equal input, or [`NIL`].
    twin: Vec<usize>,
    list: EventList,
    placed: Placed,
    memo: Memo<M::State>,
    stack: Vec<Frame<M::State>>,
    state: M::State,
    /// Completed ops in all, and not placed yet.
    completed: usize,
    completed_left: usize,
    ever_placed: Vec<bool>,
    deepest: Deepest<M::State>,
}

impl<M: Model> Search<'_, M> {
    fn output(&self, op: usize) -> Option<&M::Output> {
        self.ops[op]
            .1
            .output
            .as_ref()
            .filter(|_| self.class[op] == NIL)
    }

    /// The first of `outcomes[from..]` that no explored configuration covers, recorded.
    fn first_new(&mut self, outcomes: &[M::State], from: usize) -> Option<usize> {
        let seen = self.memo.entry(self.placed.completed).or_default();
        let index = (from..outcomes.len()).find(|&index| {
            !seen.iter().any(|(profile, explored)| {
                self.placed.at_least(profile) && self.model.dominates(explored, &outcomes[index])
            })
        })?;
        seen.push((self.placed.profile.clone().into(), outcomes[index].clone()));
        Some(index)
    }

    /// Places `op` with the first new of `outcomes`, if any.
    fn try_place(&mut self, op: usize, outcomes: Vec<M::State>, forced: bool) -> Option<Step> {
        self.placed.toggle(op, self.class[op]);
        let Some(chosen) = self.first_new(&outcomes, 0) else {
            self.placed.toggle(op, self.class[op]);
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
        if self.class[op] != NIL {
            return Some(Step::Arrived);
        }
        self.ever_placed[op] = true;
        self.completed_left -= 1;
        let (placed, deepest) = (self.completed - self.completed_left, &mut self.deepest);
        if placed > deepest.placed {
            deepest.ops.truncate(deepest.shared);
            deepest
                .ops
                .extend(self.stack[deepest.shared..].iter().map(|frame| frame.op));
            (deepest.shared, deepest.placed) = (self.stack.len(), placed);
            deepest.state = Some(self.state.clone());
        }
        Some(if self.completed_left == 0 {
            Step::Done(true)
        } else {
            Step::Arrived
        })
    }

    /// The legal outcomes of `op` here, less those no better than placing it instead of
    /// a pending op on top of the stack (or, both pending, than placing neither).
    fn outcomes(&self, op: usize) -> Vec<M::State> {
        let (input, output) = (&self.inputs[op], self.output(op));
        let mut next = outcomes(self.model, &self.state, input, output);
        let Some(top) = self.stack.last().filter(|top| self.class[top.op] != NIL) else {
            return next;
        };
        if next.is_empty() {
            return next;
        }
        let mut without = outcomes(self.model, &top.before, input, output);
        if self.class[op] != NIL {
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
        let (mut id, mut forced) = (self.list.next(COMPLETED), None);
        while id != NIL && self.list.events[id].is_call {
            let op = self.list.events[id].op;
            id = self.list.next(id);
            let (input, Some(output)) = (&self.inputs[op], self.output(op)) else {
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

    /// True if a later-called pending op with an equal input may go next: trying that
    /// one instead loses nothing, as it can go wherever this one can.
    fn has_later_twin(&self, op: usize, until: u64) -> bool {
        let mut twin = self.twin[op];
        while twin != NIL && self.ops[twin].1.call <= until {
            if !self.placed.pending[twin] {
                return true;
            }
            twin = self.twin[twin];
        }
        false
    }

    fn step(&mut self, step: Step) -> Step {
        match step {
            Step::Arrived => self.arrive(),
            Step::Completed(at) if at != NIL && self.list.events[at].is_call => {
                let op = self.list.events[at].op;
                let tried = self.try_place(op, self.outcomes(op), false);
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
            Step::Pending { at, until } if at != NIL => {
                let Event { op, time, next, .. } = self.list.events[at];
                let tried = match time > until || self.has_later_twin(op, until) {
                    true => None,
                    false => self.try_place(op, self.outcomes(op), false),
                };
                tried.unwrap_or(Step::Pending { at: next, until })
            }
            Step::Pending { .. } | Step::Exhausted => self.backtrack(),
            Step::Done(_) => step,
        }
    }

    /// Undoes placements until one has an untried outcome or ops after it remain to be
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
            let op = frame.op;
            self.state = frame.before;
            self.placed.toggle(op, self.class[op]);
            self.list.unlift(op);
            let at = self.list.next(self.list.call_of[op]);
            if self.class[op] != NIL {
                return Step::Pending {
                    at,
                    until: self.list.first_return(),
                };
            }
            self.completed_left += 1;
            if !frame.forced {
                return Step::Completed(at);
            }
        }
    }
}

fn outcomes<M: Model>(
    model: &M,
    state: &M::State,
    input: &M::Input,
    output: Option<&M::Output>,
) -> Vec<M::State> {
    let Some(output) = output else {
        let mut next = model.step_unknown(state, input);
        next.retain(|candidate| candidate != state);
        return next;
    };
    model.step(state, input, output).into_iter().collect()
}

fn search<M: Model>(model: &M, ops: &[Labeled<'_, M>], deadline: Option<Instant>) -> CheckResult {
    let (pending, completed): (Vec<_>, Vec<_>) =
        ops.iter().partition(|(_, op)| op.is_indeterminate());
    let outputs: Vec<_> = completed
        .iter()
        .filter_map(|(_, op)| op.output.as_ref())
        .collect();
    let mut forgotten: Vec<_> = pending.iter().map(|(_, op)| op.input.clone()).collect();
    model.forget(&mut forgotten, &outputs);
    let init = model.init();
    // Completed ops first, then the pending ops that could change some state.
    let mut ops: Vec<_> = completed
        .iter()
        .map(|&op| (op, op.1.input.clone()))
        .collect();
    let pending = pending.iter().zip(forgotten);
    ops.extend(
        pending
            .filter(|(_, input)| !model.never_effective(&init, input))
            .map(|(&op, input)| (op, input)),
    );
    let (ops, inputs): (Vec<_>, Vec<_>) = ops.into_iter().unzip();
    // Classes of pending ops with equal inputs, each chained in call order.
    let mut by_call: Vec<_> = (completed.len()..ops.len()).collect();
    by_call.sort_by_key(|&op| (ops[op].1.call, op));
    let (mut class, mut twin) = (vec![NIL; ops.len()], vec![NIL; ops.len()]);
    for (at, &op) in by_call.iter().enumerate() {
        class[op] = if class[op] == NIL { op } else { class[op] };
        if let Some(&later) = by_call[at + 1..]
            .iter()
            .find(|&&later| inputs[later] == inputs[op])
        {
            (twin[op], class[later]) = (later, class[op]);
        }
    }
    let mut search = Search {
        model,
        ops: &ops,
        inputs,
        class,
        twin,
        list: EventList::new(&ops),
        placed: Placed {
            completed: 0,
            pending: vec![false; ops.len()],
            profile: Vec::new(),
        },
        memo: HashMap::new(),
        stack: Vec::new(),
        state: init,
        completed: completed.len(),
        completed_left: completed.len(),
        ever_placed: vec![false; ops.len()],
        deepest: Deepest {
            ops: Vec::new(),
            shared: 0,
            placed: 0,
            state: None,
        },
    };
    let mut step = if completed.is_empty() {
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
    let explanation = explain(&search, completed.len(), &model.init());
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

/// Writes `title`, then up to [`EXPLAIN_OPS`] of `ops` (the last ones if `tail`).
fn list_ops<M: Model>(text: &mut String, title: &str, ops: &[Labeled<'_, M>], tail: bool) {
    let _ = writeln!(text, "{title}");
    let skipped = ops.len().saturating_sub(EXPLAIN_OPS);
    let shown = if tail {
        &ops[skipped..]
    } else {
        &ops[..ops.len() - skipped]
    };
    if skipped > 0 && tail {
        let _ = writeln!(text, "  ... {skipped} earlier ops");
    }
    for &op in shown {
        let _ = writeln!(text, "  {}", describe(op));
    }
    if skipped > 0 && !tail {
        let _ = writeln!(text, "  ... {skipped} more");
    }
}

fn explain<M: Model>(search: &Search<'_, M>, completed: usize, init: &M::State) -> String {
    let (
        ops,
        Deepest {
            ops: deepest,
            placed,
            state,
            ..
        },
    ) = (search.ops, &search.deepest);
    let mut text = String::new();
    // Ops are numbered completed ones first, so `op < completed` means completed.
    if let Some(op) = (0..completed)
        .filter(|&op| !search.ever_placed[op])
        .min_by_key(|&op| (ops[op].1.ret, op))
    {
        let _ = writeln!(
            text,
            "first completed op no order could place: {}",
            describe(ops[op])
        );
    }
    let title = format!("longest linearizable prefix: {placed} of {completed} completed ops");
    let prefix: Vec<_> = deepest.iter().map(|&op| ops[op]).collect();
    list_ops::<M>(&mut text, &title, &prefix, true);
    let _ = writeln!(text, "state after it: {:?}", state.as_ref().unwrap_or(init));
    let mut unplaced = vec![true; completed];
    deepest
        .iter()
        .filter(|&&op| op < completed)
        .for_each(|&op| unplaced[op] = false);
    let unplaced: Vec<_> = (0..completed)
        .filter(|&op| unplaced[op])
        .map(|op| ops[op])
        .collect();
    // The unplaced completed op that returned first bounds what could go next.
    let Some(due) = unplaced.iter().filter_map(|(_, op)| op.ret).min() else {
        return text;
    };
    let blocked: Vec<_> = unplaced
        .into_iter()
        .filter(|(_, op)| op.call <= due)
        .collect();
    let title = format!("completed ops called by {due}, none of which can go next:");
    list_ops::<M>(&mut text, &title, &blocked, false);
    text
}

/// The bytes of a value, shown as text when they are UTF-8.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Value(Option<Arc<[u8]>>);

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Some(bytes.into()))
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self(Some(text.as_bytes().into()))
    }
}

impl Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `None` stands for the value of a pending write that no read returned.
        let Some(bytes) = &self.0 else {
            return f.write_str("<never read>");
        };
        if let Ok(text) = std::str::from_utf8(bytes) {
            return write!(f, "{text:?}");
        }
        f.write_str("0x")?;
        bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
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
    /// The least value the highest version assigned so far can have: exact once every
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

    fn removed(&self) -> Self {
        Self {
            current: None,
            last_version: self.last_version,
        }
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
                    expected_version: expected,
                    value,
                },
                Out::Written(version),
            ) => state.pinned(*expected)?.written(value, Some(*version)),
            (
                In::Cas {
                    expected_version: expected,
                    ..
                },
                Out::Mismatch(Some(current)),
            ) => state.pinned(*current).filter(|_| current != expected),
            (In::Remove, Out::Removed(existed)) => (*existed != absent).then(|| state.removed()),
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
            RegisterInput::Remove => state.current.as_ref().map(|_| state.removed()),
        };
        next.into_iter().collect()
    }

    /// Same current object and a bound on versions no higher: every write and every
    /// revealed version legal from `worse` is legal from `better`.
    fn dominates(&self, better: &RegisterState, worse: &RegisterState) -> bool {
        better.current == worse.current && better.last_version <= worse.last_version
    }

    /// Only reads compare values, so a pending write's value no read returned is dropped.
    fn forget(&self, pending: &mut [RegisterInput], outputs: &[&RegisterOutput]) {
        let read: HashSet<&Value> = outputs
            .iter()
            .filter_map(|output| match output {
                RegisterOutput::ReadOk(Some((value, _))) => Some(value),
                _ => None,
            })
            .collect();
        for input in pending {
            if let RegisterInput::Write(value) | RegisterInput::Cas { value, .. } = input {
                if !read.contains(value) {
                    *value = Value(None);
                }
            }
        }
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

    /// `last_version` never decreases: a version below it is never seen again, and a new
    /// version must exceed it.
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
                    expected_version: expected,
                    ..
                },
                Out::Written(version),
            ) => *version <= state.last_version || state.gone(*expected, None),
            (_, Out::ReadOk(Some((value, version)))) => state.gone(*version, Some(value)),
            (_, Out::Mismatch(Some(version))) => state.gone(*version, None),
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;
