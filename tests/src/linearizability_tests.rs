//! Synthetic histories for the checker and the grid object model.

use std::time::{Duration, Instant};

use super::{
    check, check_per_key, CheckResult, KeyedCheckResult, KeyedOperation, Operation, RegisterInput,
    RegisterOutput, VersionedRegister,
};

type Op = Operation<RegisterInput, RegisterOutput>;

const BUDGET: Duration = Duration::from_secs(30);

fn write(value: &str) -> RegisterInput {
    RegisterInput::Write(value.as_bytes().to_vec())
}

fn cas(expected_version: u64, value: &str) -> RegisterInput {
    RegisterInput::Cas {
        expected_version,
        value: value.as_bytes().to_vec(),
    }
}

fn seen(value: &str, version: u64) -> RegisterOutput {
    RegisterOutput::ReadOk(Some((value.as_bytes().to_vec(), version)))
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
    use RegisterInput::Read;
    use RegisterOutput::Written;
    // Overlapping writes can take effect in any increasing run of their versions, each
    // run a distinct configuration, and the final read fails after all of them.
    let mut history: Vec<Op> = (0..40)
        .map(|i| done(i, 1000, write(&format!("w{i}")), Written(i + 1)))
        .collect();
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
        check(&VersionedRegister, &history[..1], Duration::ZERO),
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
    after: Vec<Option<(Vec<u8>, u64)>>,
    /// Whether each op is an acknowledged write or successful CAS.
    acked_write: Vec<bool>,
}

fn simulate(seed: u64, count: usize, keys: usize, clients: usize, spread: u64) -> Simulated {
    use RegisterInput::{Read, Remove};
    use RegisterOutput::{Mismatch, ReadOk, Removed, Written};
    let mut rng = Rng(seed);
    let mut objects: Vec<Option<(Vec<u8>, u64)>> = vec![None; keys];
    let mut sequence = 0;
    let mut sim = Simulated {
        history: Vec::new(),
        after: Vec::new(),
        acked_write: Vec::new(),
    };
    for i in 0..count {
        let key = rng.below(keys as u64) as usize;
        let object = &mut objects[key];
        let value = format!("v{i}").into_bytes();
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
