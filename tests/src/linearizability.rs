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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
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
mod events;
use events::{Event, EventList, COMPLETED, NIL, PENDING};

mod placed;
use placed::Placed;

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
    Pending { at: usize, until: u64 },
    /// Nothing left to try here: undo the last choice.
    Exhausted,
    /// Linearizable (true) or not.
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
    let explanation = explain(&search, &model.init());
    CheckResult::NotLinearizable { explanation }
}

mod explain;
use explain::explain;

mod register;

pub use register::{
    RegisterInput, RegisterOutput, RegisterState, Value, Version, VersionedRegister,
};

#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;
