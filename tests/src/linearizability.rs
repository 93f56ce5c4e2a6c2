//! Linearizability checking for recorded histories of concurrent operations.
//!
//! - [`Model`]: a sequential specification (states, and which outputs are legal).
//! - [`check`]: Wing & Gong / Lowe search with memoization of (linearized set, state),
//!   the algorithm of Porcupine.
//! - [`check_per_key`]: checks each key's sub-history on its own (P-compositionality:
//!   a history of independent objects is linearizable iff each object's is).
//! - [`VersionedRegister`]: the model of one grid object (value plus server version).
//!
//! ```text
//! history --sort--> call/return events --WGL search--> Linearizable
//!                   (doubly linked list)   | step()      NotLinearizable { explanation }
//!                                          | memo (bitset, state)   Timeout
//! ```
//!
//! # The search
//!
//! Calls and returns are sorted by time into a linked list. Walking it from the head,
//! every call met before the first return belongs to an op that may take effect next;
//! the search tries each, applies it to the model, removes ("lifts") it from the list
//! and starts over. Meeting a return means that op was not placed in time, so the last
//! choice is undone. A (set of placed ops, model state) pair already explored is never
//! explored again, which keeps real histories with bounded concurrency near-linear.
//! Equal timestamps count as overlapping, so clock ties never cause a false alarm.
//! An indeterminate op placed right before an op that hides its effect (a blind
//! overwrite, or another indeterminate write) is pruned, using [`Model::dominates`]:
//! dropping it gives a shorter linearization, so only shortest ones need be searched.
//!
//! # Indeterminate operations
//!
//! An op without a response (`ret` or `output` is `None`: a timeout, a dropped
//! connection) may have taken effect at any moment after its call, or never. It gets no
//! return event (its return is at +infinity), so it can be placed at any later point;
//! the history is accepted once every *determinate* op is placed, leaving out the
//! indeterminate ops that never took effect. Placing one uses [`Model::step_unknown`].
//!
//! For [`VersionedRegister`] the hard part is the version an indeterminate write got,
//! which nobody saw. The state records it as [`Version::Unconfirmed`] and keeps
//! `last_version` as the *smallest value the highest version assigned so far can have*:
//! an unconfirmed write raises it by one (its version is at least one above the last).
//! A later op that reveals the version (a read of that value, a CAS mismatch reporting
//! it, a CAS that succeeded against it) pins it, legal iff it is at least that lower
//! bound; a later write needs a version above the bound. Choosing every unpinned version
//! as small as possible is always consistent, so this is exact for integer versions:
//! no false alarms, and no violation of the ordering hidden. The state space stays
//! finite because the unknown version is one symbol, not a guess per possible number.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A sequential specification of the object under test.
pub trait Model {
    /// A state of the object; compared and hashed for memoization, so keep it small.
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
    /// Every state `input` can lead to from `state` when its output is unknown. Leaving
    /// out outcomes that change nothing is fine: the search always considers the op
    /// never taking effect.
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Vec<Self::State>;
    /// True if every continuation legal from `worse` is also legal from `better`. The
    /// search uses it to skip placing an indeterminate op whose effect the next op
    /// hides. The default, equality, is always correct; a finer order prunes more.
    fn dominates(&self, better: &Self::State, worse: &Self::State) -> bool {
        better == worse
    }
    /// True if an indeterminate `input` can change neither `state` nor any state
    /// reachable from it (a read), so it need not be considered. The default, false, is
    /// always correct.
    fn never_effective(&self, state: &Self::State, input: &Self::Input) -> bool {
        let _ = (state, input);
        false
    }
    /// True if `output` can be a legal result of `input` neither in `state` nor in any
    /// state reachable from it, so a search that has not placed the op can give up. The
    /// default, false, is always correct; a sharper answer prunes more.
    fn never_legal(&self, state: &Self::State, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (state, input, output);
        false
    }
}

/// One client operation as recorded by a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Which client issued it (for explanations only; ops of one client must not overlap).
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
        Self {
            client,
            call,
            ret: Some(ret),
            input,
            output: Some(output),
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

    /// True unless both the return time and the output are known. For such an op both
    /// are ignored: it may take effect at any time after its call, or never.
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
        /// The longest linearizable prefix found, the state after it, and the ops that
        /// could not be placed next.
        explanation: String,
    },
    /// The search did not finish within its budget; nothing is known.
    Timeout,
}

/// Checks `history` against `model`, giving up with [`CheckResult::Timeout`] after
/// `budget` of searching.
///
/// # Panics
///
/// If an op returned before it was called: that is a bug in the recorder.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Duration,
) -> CheckResult {
    let ops: Vec<_> = history.iter().collect();
    let labels: Vec<_> = (0..history.len()).collect();
    search(model, &ops, &labels, deadline_after(budget))
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
    /// The first key (in key order) whose sub-history is not; op numbers in the
    /// explanation are indexes into the whole keyed history.
    NotLinearizable {
        /// The failing key.
        key: String,
        /// As in [`CheckResult::NotLinearizable`].
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
/// If an op returned before it was called.
pub fn check_per_key<M: Model>(
    model: &M,
    history: &[KeyedOperation<M::Input, M::Output>],
    budget: Duration,
) -> KeyedCheckResult {
    let deadline = deadline_after(budget);
    type Part<'a, I, O> = (Vec<&'a Operation<I, O>>, Vec<usize>);
    let mut by_key: BTreeMap<&str, Part<'_, M::Input, M::Output>> = BTreeMap::new();
    for (index, keyed) in history.iter().enumerate() {
        let (ops, labels) = by_key.entry(keyed.key.as_str()).or_default();
        ops.push(&keyed.op);
        labels.push(index);
    }
    let mut timed_out = Vec::new();
    for (key, (ops, labels)) in by_key {
        match search(model, &ops, &labels, deadline) {
            CheckResult::Linearizable => {}
            CheckResult::NotLinearizable { explanation } => {
                return KeyedCheckResult::NotLinearizable {
                    key: key.to_string(),
                    explanation,
                };
            }
            CheckResult::Timeout => timed_out.push(key.to_string()),
        }
    }
    if timed_out.is_empty() {
        KeyedCheckResult::Linearizable
    } else {
        KeyedCheckResult::Timeout { keys: timed_out }
    }
}

/// `None` means no deadline (the budget does not fit in an `Instant`).
fn deadline_after(budget: Duration) -> Option<Instant> {
    Instant::now().checked_add(budget)
}

/// Search steps between two reads of the clock.
const CLOCK_EVERY: u64 = 256;
const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return event in the doubly linked list of pending events.
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The pending events in time order; index [`HEAD`] is a sentinel.
struct EventList {
    events: Vec<Event>,
    call_of: Vec<usize>,
    /// [`NIL`] for indeterminate ops, whose return is at +infinity.
    return_of: Vec<usize>,
}

impl EventList {
    fn new<I, O>(ops: &[&Operation<I, O>], labels: &[usize]) -> Self {
        let mut times = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            // At equal times calls sort first: touching ops count as concurrent.
            times.push((op.call, false, index));
            if let (Some(ret), false) = (op.ret, op.is_indeterminate()) {
                assert!(
                    ret >= op.call,
                    "op {} returned before it was called",
                    labels[index]
                );
                times.push((ret, true, index));
            }
        }
        times.sort_unstable();
        let mut list = Self {
            events: Vec::with_capacity(times.len() + 1),
            call_of: vec![NIL; ops.len()],
            return_of: vec![NIL; ops.len()],
        };
        list.events.push(Event {
            op: NIL,
            is_call: false,
            prev: NIL,
            next: 1,
        });
        for (at, (_, is_return, op)) in times.into_iter().enumerate() {
            let id = at + 1;
            list.events.push(Event {
                op,
                is_call: !is_return,
                prev: id - 1,
                next: id + 1,
            });
            if is_return {
                list.return_of[op] = id;
            } else {
                list.call_of[op] = id;
            }
        }
        if let Some(last) = list.events.last_mut() {
            last.next = NIL;
        }
        list
    }

    fn first(&self) -> usize {
        self.events[HEAD].next
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
}

/// One placed op: the state before it and the outcomes it could have had.
struct Frame<S> {
    op: usize,
    before: S,
    outcomes: Vec<S>,
    chosen: usize,
    /// Placed by the forced-op rule, not as one choice among several.
    forced: bool,
}

/// The stack that placed the most determinate ops, kept incrementally: `ops[..shared]`
/// is known to equal the bottom of the current stack.
struct Deepest<S> {
    ops: Vec<usize>,
    shared: usize,
    determinate: usize,
    state: Option<S>,
}

impl<S: Clone> Deepest<S> {
    fn pushed(&mut self, stack: &[Frame<S>], state: &S, determinate: usize) {
        if determinate > self.determinate {
            self.determinate = determinate;
            self.ops.truncate(self.shared);
            self.ops
                .extend(stack[self.shared..].iter().map(|frame| frame.op));
            self.shared = stack.len();
            self.state = Some(state.clone());
        }
    }

    fn popped(&mut self, depth: usize) {
        self.shared = self.shared.min(depth);
    }
}

/// Explored (placed set, state) pairs, grouped by placed set so lookups borrow the set.
type Memo<S> = HashMap<Vec<u64>, Vec<S>>;

/// The index of the first outcome from `from` on that `memo` has not seen with `placed`,
/// recording it as seen.
fn first_new<S: Clone + Eq + Hash>(
    memo: &mut Memo<S>,
    placed: &[u64],
    outcomes: &[S],
    from: usize,
) -> Option<usize> {
    (from..outcomes.len()).find(|&index| {
        let state = &outcomes[index];
        match memo.get_mut(placed) {
            Some(seen) if seen.contains(state) => false,
            Some(seen) => {
                seen.push(state.clone());
                true
            }
            None => {
                memo.insert(placed.to_vec(), vec![state.clone()]);
                true
            }
        }
    })
}

fn outcomes<M: Model>(
    model: &M,
    state: &M::State,
    op: &Operation<M::Input, M::Output>,
) -> Vec<M::State> {
    match (&op.ret, &op.output) {
        (Some(_), Some(output)) => model.step(state, &op.input, output).into_iter().collect(),
        _ => {
            let mut next = model.step_unknown(state, &op.input);
            next.retain(|candidate| candidate != state);
            next
        }
    }
}

/// Drops the outcomes of `op`, about to be placed right after the indeterminate op of
/// `top`, that are no better than placing `op` without it (or, if `op` is indeterminate
/// too, than placing neither). A shortest linearization never contains such a pair, and
/// the search reaches the alternative anyway, so nothing is lost; without this, every
/// subset of pending writes that never took effect would be tried before each op.
fn drop_hidden<M: Model>(
    model: &M,
    top: &Frame<M::State>,
    op: &Operation<M::Input, M::Output>,
    next: &mut Vec<M::State>,
) {
    if next.is_empty() {
        return;
    }
    let mut without = outcomes(model, &top.before, op);
    if op.is_indeterminate() {
        without.push(top.before.clone());
    }
    next.retain(|with| !without.iter().any(|better| model.dominates(better, with)));
}

/// What a configuration allows before any choice.
enum Arrival<S> {
    /// Nothing special: try every op that may go next.
    Free,
    /// Some op can never be placed: give up on this configuration.
    Dead,
    /// This op goes next, leaving the state as it is.
    Forced(usize, S),
}

/// The depth-first search over (placed set, state) configurations.
struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [&'a Operation<M::Input, M::Output>],
    list: EventList,
    placed: Vec<u64>,
    memo: Memo<M::State>,
    stack: Vec<Frame<M::State>>,
    state: M::State,
    determinate_total: usize,
    determinate_left: usize,
    deepest: Deepest<M::State>,
}

impl<M: Model> Search<'_, M> {
    fn mark(&mut self, op: usize, placed: bool) {
        let (word, bit) = (op / 64, 1u64 << (op % 64));
        if placed {
            self.placed[word] |= bit;
        } else {
            self.placed[word] &= !bit;
        }
    }

    /// Places `op` with `outcomes[chosen]` (already recorded in the memo); true once
    /// every determinate op is placed.
    fn place(&mut self, op: usize, outcomes: Vec<M::State>, chosen: usize, forced: bool) -> bool {
        let before = std::mem::replace(&mut self.state, outcomes[chosen].clone());
        self.stack.push(Frame {
            op,
            before,
            outcomes,
            chosen,
            forced,
        });
        self.list.lift(op);
        if !self.ops[op].is_indeterminate() {
            self.determinate_left -= 1;
            let determinate = self.determinate_total - self.determinate_left;
            self.deepest.pushed(&self.stack, &self.state, determinate);
        }
        self.determinate_left == 0
    }

    /// Looks at the determinate ops that may go next (called before any unplaced op
    /// returned): if one can never be placed, this configuration fails; if one is legal
    /// without changing the state (a read that matches), placing it first loses nothing,
    /// as any linearization from here stays valid with it moved to the front.
    fn arrive(&self) -> Arrival<M::State> {
        let mut cursor = self.list.first();
        let mut forced = None;
        while cursor != NIL && self.list.events[cursor].is_call {
            let op = self.list.events[cursor].op;
            cursor = self.list.events[cursor].next;
            let (
                Operation {
                    input,
                    output: Some(output),
                    ..
                },
                false,
            ) = (self.ops[op], self.ops[op].is_indeterminate())
            else {
                continue;
            };
            if self.model.never_legal(&self.state, input, output) {
                return Arrival::Dead;
            }
            if forced.is_none() {
                let next = self.model.step(&self.state, input, output);
                forced = next
                    .filter(|next| *next == self.state)
                    .map(|next| (op, next));
            }
        }
        forced.map_or(Arrival::Free, |(op, next)| Arrival::Forced(op, next))
    }

    /// Undoes placements until one has an untried outcome (placing it; returns the
    /// cursor at the list head) or a choice among ops remains (returns the cursor after
    /// the undone op); `None` when nothing is left to try.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let mut frame = self.stack.pop()?;
            self.deepest.popped(self.stack.len());
            let retry = first_new(
                &mut self.memo,
                &self.placed,
                &frame.outcomes,
                frame.chosen + 1,
            );
            if let Some(chosen) = retry {
                self.state = frame.outcomes[chosen].clone();
                frame.chosen = chosen;
                self.stack.push(frame);
                return Some(self.list.first());
            }
            let op = frame.op;
            self.state = frame.before;
            self.mark(op, false);
            self.list.unlift(op);
            if !self.ops[op].is_indeterminate() {
                self.determinate_left += 1;
            }
            // A forced op failing means the configuration below it fails as a whole.
            if !frame.forced {
                return Some(self.list.events[self.list.call_of[op]].next);
            }
        }
    }
}

fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    labels: &[usize],
    deadline: Option<Instant>,
) -> CheckResult {
    // Ops without a response that could not change any state cannot matter.
    let init = model.init();
    let (ops, labels): (Vec<_>, Vec<_>) = ops
        .iter()
        .zip(labels)
        .filter(|(op, _)| !op.is_indeterminate() || !model.never_effective(&init, &op.input))
        .map(|(op, label)| (*op, *label))
        .unzip();
    let ops = ops.as_slice();
    let determinate_total = ops.iter().filter(|op| !op.is_indeterminate()).count();
    if determinate_total == 0 {
        return CheckResult::Linearizable;
    }
    let mut search = Search {
        model,
        ops,
        list: EventList::new(ops, &labels),
        placed: vec![0; ops.len().div_ceil(64)],
        memo: HashMap::new(),
        stack: Vec::new(),
        state: init,
        determinate_total,
        determinate_left: determinate_total,
        deepest: Deepest {
            ops: Vec::new(),
            shared: 0,
            determinate: 0,
            state: None,
        },
    };
    let mut cursor = search.list.first();
    // True when the cursor just arrived at a configuration (at the list head).
    let mut arrived = true;
    let mut steps = 0u64;
    loop {
        if steps % CLOCK_EVERY == 0 && deadline.is_some_and(|at| Instant::now() >= at) {
            return CheckResult::Timeout;
        }
        steps += 1;
        if std::mem::take(&mut arrived) {
            match search.arrive() {
                Arrival::Free => {}
                Arrival::Dead => cursor = NIL,
                Arrival::Forced(op, next) => {
                    search.mark(op, true);
                    let next = vec![next];
                    if first_new(&mut search.memo, &search.placed, &next, 0).is_some() {
                        if search.place(op, next, 0, true) {
                            return CheckResult::Linearizable;
                        }
                        (cursor, arrived) = (search.list.first(), true);
                        continue;
                    }
                    // Explored before from this very configuration, so it fails.
                    search.mark(op, false);
                    cursor = NIL;
                }
            }
        }
        if cursor != NIL && search.list.events[cursor].is_call {
            let op = search.list.events[cursor].op;
            let mut next = outcomes(model, &search.state, ops[op]);
            if let Some(top) = search
                .stack
                .last()
                .filter(|top| ops[top.op].is_indeterminate())
            {
                drop_hidden(model, top, ops[op], &mut next);
            }
            search.mark(op, true);
            let Some(chosen) = first_new(&mut search.memo, &search.placed, &next, 0) else {
                search.mark(op, false);
                cursor = search.list.events[cursor].next;
                continue;
            };
            if search.place(op, next, chosen, false) {
                return CheckResult::Linearizable;
            }
            (cursor, arrived) = (search.list.first(), true);
            continue;
        }
        // A determinate op returns here unplaced (the list cannot run out first while
        // determinate ops are left), or a forced op failed: undo the last choice.
        let Some(next) = search.backtrack() else {
            eprintln!(
                "DEBUG steps={steps} memo_sets={} memo_states={} deepest={}",
                search.memo.len(),
                search.memo.values().map(Vec::len).sum::<usize>(),
                search.deepest.ops.len()
            );
            return CheckResult::NotLinearizable {
                explanation: explain(ops, &labels, &search.deepest, &model.init()),
            };
        };
        arrived = next == search.list.first();
        cursor = next;
    }
}

/// How many placed ops, and how many blocked ops, an explanation lists.
const EXPLAIN_OPS: usize = 12;

fn describe<I: Debug, O: Debug>(label: usize, op: &Operation<I, O>) -> String {
    let ret = match (op.ret, op.is_indeterminate()) {
        (Some(ret), false) => ret.to_string(),
        _ => "never".to_string(),
    };
    let output = match (&op.output, op.is_indeterminate()) {
        (Some(output), false) => format!("{output:?}"),
        _ => "unknown".to_string(),
    };
    format!(
        "op {label} (client {}, called {}, returned {ret}): {:?} -> {output}",
        op.client, op.call, op.input
    )
}

fn explain<I: Debug, O: Debug, S: Debug>(
    ops: &[&Operation<I, O>],
    labels: &[usize],
    deepest: &Deepest<S>,
    init: &S,
) -> String {
    let mut placed = vec![false; ops.len()];
    for &op in &deepest.ops {
        placed[op] = true;
    }
    let completed = ops.iter().filter(|op| !op.is_indeterminate()).count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "longest linearizable prefix: {} of {completed} completed ops ({} ops in all)",
        deepest.determinate,
        deepest.ops.len()
    );
    let skipped = deepest.ops.len().saturating_sub(EXPLAIN_OPS);
    if skipped > 0 {
        let _ = writeln!(text, "  ... {skipped} earlier ops");
    }
    for &op in &deepest.ops[skipped..] {
        let _ = writeln!(text, "  {}", describe(labels[op], ops[op]));
    }
    let state = deepest.state.as_ref().unwrap_or(init);
    let _ = writeln!(text, "state after it: {state:?}");
    // The unplaced completed op that returns first bounds what could go next.
    let unplaced = |op: &usize| !placed[*op] && !ops[*op].is_indeterminate();
    let due = (0..ops.len())
        .filter(unplaced)
        .filter_map(|op| ops[op].ret.map(|ret| (ret, op)))
        .min();
    let Some((due_at, due_op)) = due else {
        return text;
    };
    let _ = writeln!(
        text,
        "no completed op below can go next without a dead end (op {} returned at {due_at}):",
        labels[due_op]
    );
    let blocked: Vec<_> = (0..ops.len())
        .filter(unplaced)
        .filter(|&op| ops[op].call <= due_at)
        .collect();
    for &op in blocked.iter().take(EXPLAIN_OPS) {
        let _ = writeln!(text, "  {}", describe(labels[op], ops[op]));
    }
    if blocked.len() > EXPLAIN_OPS {
        let _ = writeln!(text, "  ... {} more", blocked.len() - EXPLAIN_OPS);
    }
    text
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
    /// Written by an op that got no response, and not revealed by any later op yet; it
    /// is at least [`RegisterState::last_version`].
    Unconfirmed,
}

/// The state of one grid object.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegisterState {
    /// The value and its version; `None` while absent.
    pub current: Option<(Vec<u8>, Version)>,
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

    /// The state after a write that was assigned `version`, if that is a legal version.
    fn written(&self, value: &[u8], version: u64) -> Option<Self> {
        (version > self.last_version).then(|| Self {
            current: Some((value.to_vec(), Version::Known(version))),
            last_version: version,
        })
    }

    /// The state after a write whose version nobody saw.
    fn written_unconfirmed(&self, value: &[u8]) -> Self {
        Self {
            current: Some((value.to_vec(), Version::Unconfirmed)),
            last_version: self.last_version.saturating_add(1),
        }
    }
}

/// A request to one grid object.
#[derive(Clone, PartialEq, Eq)]
pub enum RegisterInput {
    /// Reads value and version.
    Read,
    /// Writes the value whether or not the object exists (upsert).
    Write(Vec<u8>),
    /// Writes the value only if the object exists at `expected_version`.
    Cas {
        /// The version the caller read.
        expected_version: u64,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes the object.
    Remove,
}

/// A grid object's answer.
#[derive(Clone, PartialEq, Eq)]
pub enum RegisterOutput {
    /// `Read`: the value and version, or `None` if absent.
    ReadOk(Option<(Vec<u8>, u64)>),
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
        match (input, output) {
            (In::Read, Out::ReadOk(None)) => state.current.is_none().then(|| state.clone()),
            (In::Read, Out::ReadOk(Some((value, version)))) => {
                let (current, _) = state.current.as_ref()?;
                if current != value {
                    return None;
                }
                state.pinned(*version)
            }
            (In::Write(value), Out::Written(version)) => state.written(value, *version),
            (
                In::Cas {
                    expected_version,
                    value,
                },
                Out::Written(version),
            ) => state.pinned(*expected_version)?.written(value, *version),
            (In::Cas { .. }, Out::Mismatch(None)) => state.current.is_none().then(|| state.clone()),
            (
                In::Cas {
                    expected_version, ..
                },
                Out::Mismatch(Some(current)),
            ) => {
                if current == expected_version {
                    return None;
                }
                state.pinned(*current)
            }
            (In::Remove, Out::Removed(existed)) => {
                (state.current.is_some() == *existed).then(|| RegisterState {
                    current: None,
                    last_version: state.last_version,
                })
            }
            // An answer of the wrong kind for the request.
            _ => None,
        }
    }

    /// Same current object, and a lower bound on versions no higher: every write and
    /// every revealed version legal from `worse` is legal from `better`.
    fn dominates(&self, better: &RegisterState, worse: &RegisterState) -> bool {
        better.current == worse.current && better.last_version <= worse.last_version
    }

    /// Reads change nothing; a CAS expecting a version below `last_version` can no
    /// longer succeed.
    fn never_effective(&self, state: &RegisterState, input: &RegisterInput) -> bool {
        match input {
            RegisterInput::Read => true,
            RegisterInput::Cas {
                expected_version, ..
            } => *expected_version < state.last_version,
            RegisterInput::Write(_) | RegisterInput::Remove => false,
        }
    }

    /// `last_version` never decreases, so a version below it can never be seen again,
    /// nor one at or below it be assigned.
    fn never_legal(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> bool {
        let floor = state.last_version;
        match (input, output) {
            (
                RegisterInput::Write(_) | RegisterInput::Cas { .. },
                RegisterOutput::Written(version),
            ) => *version <= floor,
            (
                _,
                RegisterOutput::ReadOk(Some((_, version)))
                | RegisterOutput::Mismatch(Some(version)),
            ) => *version < floor,
            _ => false,
        }
    }

    fn step_unknown(&self, state: &RegisterState, input: &RegisterInput) -> Vec<RegisterState> {
        // Outcomes that leave the state as it is (reads, mismatches, removing nothing)
        // are the same as never taking effect, so they are left out.
        match input {
            RegisterInput::Read => Vec::new(),
            RegisterInput::Write(value) => vec![state.written_unconfirmed(value)],
            RegisterInput::Cas {
                expected_version,
                value,
            } => state
                .pinned(*expected_version)
                .map(|at_expected| at_expected.written_unconfirmed(value))
                .into_iter()
                .collect(),
            RegisterInput::Remove => match state.current {
                Some(_) => vec![RegisterState {
                    current: None,
                    last_version: state.last_version,
                }],
                None => Vec::new(),
            },
        }
    }
}

/// Shows a value as text when it is UTF-8, else as hex, with an optional version.
struct Shown<'a>(&'a [u8], Option<Version>);

impl Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => write!(f, "{text:?}")?,
            Err(_) => {
                f.write_str("0x")?;
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
            }
        }
        match self.1 {
            Some(Version::Known(version)) => write!(f, "@{version}"),
            Some(Version::Unconfirmed) => f.write_str("@unconfirmed"),
            None => Ok(()),
        }
    }
}

impl Debug for RegisterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self
            .current
            .as_ref()
            .map(|(value, version)| Shown(value, Some(*version)));
        f.debug_struct("RegisterState")
            .field("current", &current)
            .field("last_version", &self.last_version)
            .finish()
    }
}

impl Debug for RegisterInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read => f.write_str("Read"),
            Self::Write(value) => f.debug_tuple("Write").field(&Shown(value, None)).finish(),
            Self::Cas {
                expected_version,
                value,
            } => f
                .debug_struct("Cas")
                .field("expected_version", expected_version)
                .field("value", &Shown(value, None))
                .finish(),
            Self::Remove => f.write_str("Remove"),
        }
    }
}

impl Debug for RegisterOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadOk(seen) => {
                let seen = seen
                    .as_ref()
                    .map(|(v, version)| Shown(v, Some(Version::Known(*version))));
                f.debug_tuple("ReadOk").field(&seen).finish()
            }
            Self::Written(version) => f.debug_tuple("Written").field(version).finish(),
            Self::Mismatch(current) => f.debug_tuple("Mismatch").field(current).finish(),
            Self::Removed(existed) => f.debug_tuple("Removed").field(existed).finish(),
        }
    }
}

#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;
