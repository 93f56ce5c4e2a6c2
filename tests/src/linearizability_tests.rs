//! Synthetic histories for the checker and the grid object model.

use std::time::{Duration, Instant};

use super::{
    check, check_per_key, CheckResult, KeyedCheckResult, KeyedOperation, Model, Operation,
    RegisterInput, RegisterOutput, Value, VersionedRegister,
};

type Op = Operation<RegisterInput, RegisterOutput>;

const BUDGET: Duration = Duration::from_secs(30);

fn write(value: &str) -> RegisterInput {
    RegisterInput::Write(value.into())
}

fn cas(expected_version: u64, value: &str) -> RegisterInput {
    RegisterInput::Cas {
        expected_version,
        value: value.into(),
    }
}

fn seen(value: &str, version: u64) -> RegisterOutput {
    RegisterOutput::ReadOk(Some((value.into(), version)))
}

fn done(call: u64, ret: u64, input: RegisterInput, output: RegisterOutput) -> Op {
    Operation::completed(0, call, ret, input, output)
}

fn pending(call: u64, input: RegisterInput) -> Op {
    Operation::indeterminate(1, call, input)
}

fn verdict(history: &[Op]) -> CheckResult {
    check(&VersionedRegister, history, BUDGET)
}

fn assert_linearizable(history: &[Op]) {
    assert_eq!(verdict(history), CheckResult::Linearizable, "{history:#?}");
}

/// Returns the explanation.
fn assert_rejected(history: &[Op]) -> String {
    match verdict(history) {
        CheckResult::NotLinearizable { explanation } => explanation,
        other => panic!("expected a violation, got {other:?} for {history:#?}"),
    }
}

#[test]
fn empty_and_sequential_histories_are_linearizable() {
    use RegisterInput::{Read, Remove};
    use RegisterOutput::{Mismatch, ReadOk, Removed, Written};
    assert_linearizable(&[]);
    assert_linearizable(&[
        done(0, 1, Read, ReadOk(None)),
        done(2, 3, write("a"), Written(1)),
        done(4, 5, Read, seen("a", 1)),
        done(6, 7, cas(1, "b"), Written(4)),
        done(8, 9, cas(1, "c"), Mismatch(Some(4))),
        done(10, 11, Read, seen("b", 4)),
        done(12, 13, Remove, Removed(true)),
        done(14, 15, Remove, Removed(false)),
        done(16, 17, cas(4, "d"), Mismatch(None)),
        done(18, 19, Read, ReadOk(None)),
        done(20, 21, write("e"), Written(9)),
        done(22, 23, Read, seen("e", 9)),
    ]);
}

#[test]
fn overlapping_read_may_see_old_or_new_value() {
    use RegisterInput::Read;
    use RegisterOutput::Written;
    for read in [seen("a", 1), seen("b", 2)] {
        assert_linearizable(&[
            done(0, 10, write("a"), Written(1)),
            done(20, 50, write("b"), Written(2)),
            done(30, 40, Read, read),
        ]);
    }
    // Touching intervals count as overlapping.
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        done(10, 20, Read, RegisterOutput::ReadOk(None)),
    ]);
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    use RegisterInput::Read;
    use RegisterOutput::Written;
    let explanation = assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        done(20, 30, write("b"), Written(2)),
        done(40, 50, Read, seen("a", 1)),
    ]);
    assert!(
        explanation.contains("longest linearizable prefix: 2 of 3 completed ops"),
        "{explanation}"
    );
    assert!(
        explanation.contains("op 2 (client 0, called 40, returned 50)"),
        "{explanation}"
    );
}

#[test]
fn lost_acknowledged_write_is_rejected() {
    use RegisterInput::Read;
    use RegisterOutput::{ReadOk, Written};
    assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        done(20, 30, Read, seen("a", 1)),
        done(40, 50, write("b"), Written(2)),
        done(60, 70, Read, seen("a", 1)),
    ]);
    assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        done(20, 30, Read, ReadOk(None)),
    ]);
}

#[test]
fn cas_with_wrong_outcome_is_rejected() {
    use RegisterInput::Read;
    use RegisterOutput::{Mismatch, Written};
    let base = || vec![done(0, 10, write("a"), Written(1))];
    let wrong = [
        // Mismatch although the version matched.
        done(20, 30, cas(1, "b"), Mismatch(Some(1))),
        // Mismatch reporting a version the object does not have.
        done(20, 30, cas(7, "b"), Mismatch(Some(2))),
        // Success at the wrong version.
        done(20, 30, cas(2, "b"), Written(3)),
        // NotFound for an object that exists.
        done(20, 30, cas(1, "b"), Mismatch(None)),
        // Success without a new version.
        done(20, 30, cas(1, "b"), Written(1)),
    ];
    for op in wrong {
        let mut history = base();
        history.push(op);
        assert_rejected(&history);
    }
    // Success on a missing object.
    assert_rejected(&[done(0, 10, cas(0, "b"), Written(1))]);
    // A successful CAS must be visible afterwards.
    assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        done(20, 30, cas(1, "b"), Written(2)),
        done(40, 50, Read, seen("a", 1)),
    ]);
}

#[test]
fn versions_must_increase_across_writes_and_recreation() {
    use RegisterInput::Remove;
    use RegisterOutput::{Removed, Written};
    assert_rejected(&[
        done(0, 10, write("a"), Written(5)),
        done(20, 30, write("b"), Written(3)),
    ]);
    assert_rejected(&[
        done(0, 10, write("a"), Written(5)),
        done(20, 30, Remove, Removed(true)),
        done(40, 50, write("b"), Written(5)),
    ]);
    // Overlapping writes may take effect in version order rather than call order.
    assert_linearizable(&[
        done(0, 30, write("a"), Written(5)),
        done(10, 20, write("b"), Written(3)),
    ]);
}

#[test]
fn indeterminate_write_that_took_effect_is_accepted() {
    use RegisterInput::{Read, Remove};
    use RegisterOutput::{Mismatch, Removed, Written};
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, Read, seen("b", 7)),
        done(50, 60, write("c"), Written(8)),
    ]);
    // Revealed by a CAS mismatch instead of a read.
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, cas(1, "c"), Mismatch(Some(7))),
        done(50, 60, Read, seen("b", 7)),
    ]);
    // Revealed only by the object existing.
    assert_linearizable(&[pending(0, write("a")), done(30, 40, Remove, Removed(true))]);
    // An indeterminate CAS that succeeded.
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, cas(1, "b")),
        done(30, 40, Read, seen("b", 4)),
    ]);
}

#[test]
fn indeterminate_write_that_never_took_effect_is_accepted() {
    use RegisterInput::Read;
    use RegisterOutput::Written;
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, Read, seen("a", 1)),
        // Dense versions: "b" cannot have consumed version 2.
        done(50, 60, write("c"), Written(2)),
        done(70, 80, Read, seen("c", 2)),
    ]);
    // Many writes that never took effect are cheap to rule out.
    let mut history = vec![done(0, 10, write("a"), Written(1))];
    for i in 0..40 {
        history.push(pending(20 + i, write(&format!("lost {i}"))));
    }
    for i in 0..200 {
        history.push(done(100 + 20 * i, 110 + 20 * i, Read, seen("a", 1)));
    }
    assert_linearizable(&history);
}

#[test]
fn indeterminate_ops_are_constrained_by_their_call_and_version() {
    use RegisterInput::Read;
    use RegisterOutput::Written;
    // Observed before it was called.
    assert_rejected(&[done(0, 10, Read, seen("b", 1)), pending(20, write("b"))]);
    // Observed with a version not above the last one.
    assert_rejected(&[
        done(0, 10, write("a"), Written(5)),
        pending(20, write("b")),
        done(30, 40, Read, seen("b", 5)),
    ]);
    // Its version was 2, so a later write cannot get 2 as well.
    assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, Read, seen("b", 2)),
        done(50, 60, write("c"), Written(2)),
    ]);
    // Observed after a later acknowledged write, whose version is higher.
    assert_rejected(&[
        pending(0, write("b")),
        done(10, 20, write("a"), Written(3)),
        done(30, 40, Read, seen("b", 2)),
    ]);
    // A CAS at a version the object never had cannot have succeeded.
    assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, cas(9, "b")),
        done(30, 40, Read, seen("b", 12)),
    ]);
}

#[test]
fn indeterminate_write_cannot_be_observed_then_undone() {
    use RegisterInput::Read;
    use RegisterOutput::Written;
    assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, Read, seen("b", 5)),
        done(50, 60, Read, seen("a", 1)),
    ]);
}

#[test]
#[should_panic(expected = "op 0 returned before it was called")]
fn op_returning_before_its_call_is_a_recorder_bug() {
    verdict(&[done(
        10,
        5,
        RegisterInput::Read,
        RegisterOutput::ReadOk(None),
    )]);
}

#[test]
fn exhausted_budget_reports_timeout() {
    use RegisterInput::{Read, Remove};
    use RegisterOutput::Removed;
    // Each remove needs some pending write before it, and every pairing is a distinct
    // configuration; the final read fails after all of them.
    let mut history: Vec<Op> = Vec::new();
    for i in 0..20 {
        history.push(pending(i, write(&format!("w{i}"))));
        history.push(done(i, 1000, Remove, Removed(true)));
    }
    history.push(done(2000, 2010, Read, seen("ghost", 99)));
    let started = Instant::now();
    let budget = Duration::from_millis(100);
    assert_eq!(
        check(&VersionedRegister, &history, budget),
        CheckResult::Timeout
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        check(&VersionedRegister, &history[1..2], Duration::ZERO),
        CheckResult::Timeout
    );
}

/// splitmix64: a deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

/// A linearizable keyed history from a sequential simulation: op `i` takes effect at
/// `100 * i` and its interval spreads up to `spread` either side of that point.
struct Simulated {
    history: Vec<KeyedOperation<RegisterInput, RegisterOutput>>,
    /// The key's object right after each op.
    after: Vec<Option<(Value, u64)>>,
    /// Whether each op is an acknowledged write or successful CAS.
    acked_write: Vec<bool>,
}

fn simulate(seed: u64, count: usize, keys: usize, clients: usize, spread: u64) -> Simulated {
    use RegisterInput::{Read, Remove};
    use RegisterOutput::{Mismatch, ReadOk, Removed, Written};
    let mut rng = Rng(seed);
    let mut objects: Vec<Option<(Value, u64)>> = vec![None; keys];
    let mut sequence = 0;
    let mut sim = Simulated {
        history: Vec::new(),
        after: Vec::new(),
        acked_write: Vec::new(),
    };
    for i in 0..count {
        let key = rng.below(keys as u64) as usize;
        let object = &mut objects[key];
        let value = Value::from(format!("v{i}").as_str());
        let current = object.as_ref().map(|(_, version)| *version);
        let roll = rng.below(100);
        let input = match roll {
            0..=39 => Read,
            40..=69 => RegisterInput::Write(value.clone()),
            70..=89 => {
                let expected = match (current, rng.below(4)) {
                    (Some(version), 0..=2) => version,
                    _ => rng.below(sequence + 2),
                };
                RegisterInput::Cas {
                    expected_version: expected,
                    value: value.clone(),
                }
            }
            _ => Remove,
        };
        // Some ops lose their response; about half of those never take effect.
        let indeterminate = rng.below(100) < 3;
        let applies = !indeterminate || rng.below(2) == 0;
        let output = match &input {
            Read => ReadOk(object.clone()),
            RegisterInput::Write(_) | RegisterInput::Cas { .. } => {
                let fits = match &input {
                    RegisterInput::Cas {
                        expected_version, ..
                    } => current == Some(*expected_version),
                    _ => true,
                };
                if fits && applies {
                    sequence += 1 + rng.below(3);
                    *object = Some((value, sequence));
                    Written(sequence)
                } else {
                    Mismatch(current)
                }
            }
            Remove => {
                let existed = object.is_some();
                if applies {
                    *object = None;
                }
                Removed(existed)
            }
        };
        let point = 100 * i as u64 + spread;
        let call = point - rng.below(spread + 1);
        let op = if indeterminate {
            Operation::indeterminate(i % clients, call, input)
        } else {
            let ret = point + rng.below(spread + 1);
            Operation::completed(i % clients, call, ret, input, output.clone())
        };
        sim.acked_write
            .push(!indeterminate && matches!(output, Written(_)));
        sim.after.push(object.clone());
        sim.history.push(KeyedOperation {
            key: format!("key-{key}"),
            op,
        });
    }
    sim
}

/// Makes one late read of a single-key simulation return the object as it was 30 ops
/// earlier, although an acknowledged write completed in between; returns its index.
fn make_one_read_stale(sim: &mut Simulated) -> usize {
    let count = sim.history.len();
    for read in (count / 2..count).rev() {
        let op = &sim.history[read].op;
        if op.is_indeterminate() || op.input != RegisterInput::Read {
            continue;
        }
        // Ops more than 8 apart never overlap with a spread of 400.
        let old = read - 30;
        let overwritten = (old + 9..read - 8).any(|between| sim.acked_write[between]);
        if let (Some(stale), true) = (&sim.after[old], overwritten) {
            sim.history[read].op.output = Some(RegisterOutput::ReadOk(Some(stale.clone())));
            return read;
        }
    }
    panic!("no read to make stale");
}

fn unkeyed(sim: &Simulated) -> Vec<Op> {
    sim.history.iter().map(|keyed| keyed.op.clone()).collect()
}

#[test]
fn random_history_is_accepted_quickly_and_a_stale_read_in_it_is_found() {
    let mut sim = simulate(7, 2000, 1, 8, 400);
    let started = Instant::now();
    assert_linearizable(&unkeyed(&sim));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let stale = make_one_read_stale(&mut sim);
    let explanation = assert_rejected(&unkeyed(&sim));
    assert!(
        explanation.contains("longest linearizable prefix"),
        "{explanation}"
    );
    assert!(
        explanation.contains(&format!("op {stale} ")),
        "op {stale}: {explanation}"
    );
}

#[test]
fn per_key_check_names_the_failing_key() {
    use RegisterInput::Read;
    use RegisterOutput::Written;
    let keyed = |key: &str, op: Op| KeyedOperation {
        key: key.to_string(),
        op,
    };
    let history = vec![
        keyed("good", done(0, 10, write("a"), Written(1))),
        keyed("bad", done(5, 15, write("x"), Written(2))),
        keyed("good", done(20, 30, Read, seen("a", 1))),
        keyed("bad", done(25, 35, write("y"), Written(3))),
        keyed("bad", done(40, 50, Read, seen("x", 2))),
    ];
    match check_per_key(&VersionedRegister, &history, BUDGET) {
        KeyedCheckResult::NotLinearizable { key, explanation } => {
            assert_eq!(key, "bad");
            // Op numbers index the whole keyed history.
            assert!(explanation.contains("op 4 "), "{explanation}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
    assert_eq!(
        check_per_key(&VersionedRegister, &history[..4], BUDGET),
        KeyedCheckResult::Linearizable
    );
    assert_eq!(
        check_per_key(&VersionedRegister, &history, Duration::ZERO),
        KeyedCheckResult::Timeout {
            keys: vec!["bad".to_string(), "good".to_string()]
        }
    );
}

#[test]
fn large_keyed_history_checks_within_seconds() {
    let sim = simulate(11, 5000, 5, 8, 400);
    let started = Instant::now();
    assert_eq!(
        check_per_key(&VersionedRegister, &sim.history, BUDGET),
        KeyedCheckResult::Linearizable
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// The grid object with concrete versions: a pending write may get any version up to
/// `max`. Slow, but with no `Unconfirmed` abstraction to get wrong.
struct ConcreteRegister {
    max: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Concrete {
    current: Option<(Value, u64)>,
    last: u64,
}

impl Model for ConcreteRegister {
    type State = Concrete;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Concrete {
        Concrete {
            current: None,
            last: 0,
        }
    }

    fn step(
        &self,
        state: &Concrete,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> Option<Concrete> {
        use RegisterInput as In;
        use RegisterOutput as Out;
        let version = state.current.as_ref().map(|(_, version)| *version);
        let write = |value: &Value, new: u64| Concrete {
            current: Some((value.clone(), new)),
            last: new,
        };
        match (input, output) {
            (In::Read, Out::ReadOk(seen)) => (*seen == state.current).then(|| state.clone()),
            (In::Write(value), Out::Written(new)) => {
                (*new > state.last).then(|| write(value, *new))
            }
            (
                In::Cas {
                    expected_version,
                    value,
                },
                Out::Written(new),
            ) => (version == Some(*expected_version) && *new > state.last)
                .then(|| write(value, *new)),
            (
                In::Cas {
                    expected_version, ..
                },
                Out::Mismatch(seen),
            ) => (version != Some(*expected_version) && *seen == version).then(|| state.clone()),
            (In::Remove, Out::Removed(existed)) => {
                (*existed == version.is_some()).then(|| Concrete {
                    current: None,
                    last: state.last,
                })
            }
            _ => None,
        }
    }

    fn step_unknown(&self, state: &Concrete, input: &RegisterInput) -> Vec<Concrete> {
        let version = state.current.as_ref().map(|(_, version)| *version);
        let outputs: Vec<_> = match input {
            RegisterInput::Read => Vec::new(),
            RegisterInput::Cas {
                expected_version, ..
            } if version != Some(*expected_version) => Vec::new(),
            RegisterInput::Write(_) | RegisterInput::Cas { .. } => (state.last + 1..=self.max)
                .map(RegisterOutput::Written)
                .collect(),
            RegisterInput::Remove => vec![RegisterOutput::Removed(version.is_some())],
        };
        outputs
            .iter()
            .filter_map(|output| self.step(state, input, output))
            .collect()
    }
}

/// Tries every order, with no memo and no pruning.
fn brute_force(model: &ConcreteRegister, ops: &[Op], state: &Concrete, placed: u32) -> bool {
    let unplaced = |op: usize| placed & (1 << op) == 0;
    if (0..ops.len()).all(|op| !unplaced(op) || ops[op].is_indeterminate()) {
        return true;
    }
    let first_return = (0..ops.len())
        .filter(|&op| unplaced(op) && !ops[op].is_indeterminate())
        .filter_map(|op| ops[op].ret)
        .min()
        .unwrap();
    (0..ops.len())
        .filter(|&op| unplaced(op) && ops[op].call <= first_return)
        .any(|op| {
            let next = match &ops[op].output {
                Some(output) if !ops[op].is_indeterminate() => model
                    .step(state, &ops[op].input, output)
                    .into_iter()
                    .collect(),
                _ => model.step_unknown(state, &ops[op].input),
            };
            next.iter()
                .any(|next| brute_force(model, ops, next, placed | 1 << op))
        })
}

/// A small history: ops at random points inside random intervals, run in point order,
/// then sometimes one output replaced by a random one.
fn small_history(rng: &mut Rng) -> Vec<Op> {
    use RegisterInput::{Read, Remove};
    use RegisterOutput::{Mismatch, ReadOk, Removed, Written};
    let count = 1 + rng.below(7) as usize;
    let mut timed: Vec<(u64, Op)> = (0..count)
        .map(|i| {
            let input = match rng.below(4) {
                0 => Read,
                1 => write(&format!("v{i}")),
                2 => cas(rng.below(4), &format!("v{i}")),
                _ => Remove,
            };
            let (call, length) = (rng.below(30), rng.below(15));
            let point = call + rng.below(length + 1);
            let op = match rng.below(5) {
                0 => Operation::indeterminate(i, call, input),
                _ => Operation::completed(i, call, call + length, input, Removed(false)),
            };
            (point, op)
        })
        .collect();
    timed.sort_by_key(|(point, _)| *point);
    let mut sim = Concrete {
        current: None,
        last: 0,
    };
    let mut history = Vec::new();
    for (_, mut op) in timed {
        // A pending op took effect or not; a completed one did, with its true output.
        let version = sim.current.as_ref().map(|(_, version)| *version);
        let output = match &op.input {
            Read => ReadOk(sim.current.clone()),
            RegisterInput::Cas {
                expected_version, ..
            } if version != Some(*expected_version) => Mismatch(version),
            RegisterInput::Write(_) | RegisterInput::Cas { .. } => {
                Written(sim.last + 1 + rng.below(2))
            }
            Remove => Removed(version.is_some()),
        };
        if !op.is_indeterminate() || rng.below(2) == 0 {
            sim = ConcreteRegister { max: 0 }
                .step(&sim, &op.input, &output)
                .unwrap();
        }
        if !op.is_indeterminate() {
            op.output = Some(output);
        }
        history.push(op);
    }
    if rng.below(2) == 0 {
        let op = &mut history[rng.below(count as u64) as usize];
        let random = match rng.below(4) {
            0 => ReadOk(None),
            1 => seen(&format!("v{}", rng.below(count as u64)), rng.below(6)),
            2 => Written(rng.below(6)),
            _ => Mismatch(Some(rng.below(4)).filter(|version| *version > 0)),
        };
        if !op.is_indeterminate() {
            op.output = Some(random);
        }
    }
    history
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = Rng(3);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..4000 {
        let history = small_history(&mut rng);
        // Room for every pending write above every version the history mentions.
        let pending = history.iter().filter(|op| op.is_indeterminate()).count() as u64;
        let mentioned = history
            .iter()
            .filter_map(|op| match (&op.input, &op.output) {
                (
                    _,
                    Some(
                        RegisterOutput::Written(version) | RegisterOutput::Mismatch(Some(version)),
                    ),
                ) => Some(*version),
                (_, Some(RegisterOutput::ReadOk(Some((_, version))))) => Some(*version),
                (
                    RegisterInput::Cas {
                        expected_version, ..
                    },
                    _,
                ) => Some(*expected_version),
                _ => None,
            });
        let model = ConcreteRegister {
            max: mentioned.max().unwrap_or(0) + pending + 1,
        };
        let expected = brute_force(&model, &history, &model.init(), 0);
        let linearizable = verdict(&history) == CheckResult::Linearizable;
        assert_eq!(linearizable, expected, "{history:#?}");
        // The generic search with the concrete model must agree as well.
        let concrete = check(&model, &history, BUDGET) == CheckResult::Linearizable;
        assert_eq!(concrete, expected, "concrete model: {history:#?}");
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(
        accepted > 1000 && rejected > 1000,
        "{accepted} accepted, {rejected} rejected"
    );
}
