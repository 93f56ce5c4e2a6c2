//! Synthetic histories for the checker and the grid object model, and a brute-force
//! cross-check on small random histories.

use std::time::{Duration, Instant};

use super::{
    check, check_per_key, CheckResult, KeyedCheckResult, KeyedOperation, Model, Operation,
    RegisterInput, RegisterOutput, Value, VersionedRegister,
};
use RegisterInput::{Read, Remove};
use RegisterOutput::{Mismatch, ReadOk, Removed, Written};

type Op = Operation<RegisterInput, RegisterOutput>;
type Keyed = KeyedOperation<RegisterInput, RegisterOutput>;

const BUDGET: Duration = Duration::from_secs(30);

fn write(value: &str) -> RegisterInput {
    RegisterInput::Write(value.into())
}

fn cas(expected_version: u64, value: &str) -> RegisterInput {
    let value = value.into();
    RegisterInput::Cas {
        expected_version,
        value,
    }
}

fn seen(value: &str, version: u64) -> RegisterOutput {
    ReadOk(Some((value.into(), version)))
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
    for read in [seen("a", 1), seen("b", 2)] {
        let w = [
            done(0, 10, write("a"), Written(1)),
            done(20, 50, write("b"), Written(2)),
        ];
        assert_linearizable(&[w[0].clone(), w[1].clone(), done(30, 40, Read, read)]);
    }
    // Touching intervals count as overlapping.
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        done(10, 20, Read, ReadOk(None)),
    ]);
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let explanation = assert_rejected(&[
        done(0, 10, write("a"), Written(1)),
        done(20, 30, write("b"), Written(2)),
        done(40, 50, Read, seen("a", 1)),
    ]);
    let expected = [
        "first completed op no order could place: op 2 (client 0, called 40, returned 50)",
        "longest linearizable prefix: 2 of 3 completed ops",
        "state after it: RegisterState { current: Some((\"b\", Known(2))), last_version: 2 }",
    ];
    for line in expected {
        assert!(explanation.contains(line), "{line} in {explanation}");
    }
}

#[test]
fn lost_acknowledged_write_is_rejected() {
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
    let wrong = [
        done(20, 30, cas(1, "b"), Mismatch(Some(1))), // the version did match
        done(20, 30, cas(7, "b"), Mismatch(Some(2))), // not the object's version
        done(20, 30, cas(2, "b"), Written(3)),        // success at the wrong version
        done(20, 30, cas(1, "b"), Mismatch(None)),    // NotFound for an existing object
        done(20, 30, cas(1, "b"), Written(1)),        // success without a new version
    ];
    for op in wrong {
        assert_rejected(&[done(0, 10, write("a"), Written(1)), op]);
    }
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
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, Read, seen("b", 7)),
        done(50, 60, write("c"), Written(8)),
    ]);
    // Revealed by a CAS mismatch, by the object existing, by a read after a CAS.
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, cas(1, "c"), Mismatch(Some(7))),
        done(50, 60, Read, seen("b", 7)),
    ]);
    assert_linearizable(&[pending(0, write("a")), done(30, 40, Remove, Removed(true))]);
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, cas(1, "b")),
        done(30, 40, Read, seen("b", 4)),
    ]);
}

#[test]
fn indeterminate_write_that_never_took_effect_is_accepted() {
    assert_linearizable(&[
        done(0, 10, write("a"), Written(1)),
        pending(20, write("b")),
        done(30, 40, Read, seen("a", 1)),
        // Dense versions: "b" cannot have consumed version 2.
        done(50, 60, write("c"), Written(2)),
        done(70, 80, Read, seen("c", 2)),
    ]);
    let mut history = vec![done(0, 10, write("a"), Written(1))];
    history.extend((0..40).map(|i| pending(20 + i, write(&format!("lost {i}")))));
    history.extend((0..200).map(|i| done(100 + 20 * i, 110 + 20 * i, Read, seen("a", 1))));
    assert_linearizable(&history);
}

#[test]
fn interchangeable_pending_ops_are_tried_once() {
    // 30 writes nobody read, then 30 removes in a row that each need one of them: any
    // choice of which write explains which remove is as good as another.
    let mut history: Vec<_> = (0..30)
        .map(|i| pending(i, write(&format!("w{i}"))))
        .collect();
    history.extend((0..30).map(|i| done(100 + 10 * i, 105 + 10 * i, Remove, Removed(true))));
    let started = Instant::now();
    assert_linearizable(&history);
    history.push(done(500, 505, Remove, Removed(true)));
    assert_rejected(&history);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn indeterminate_ops_are_constrained_by_their_call_and_version() {
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
    verdict(&[done(10, 5, Read, ReadOk(None))]);
}

#[test]
fn exhausted_budget_reports_timeout() {
    // Concurrent removes that each need a pending write: every subset of removes placed
    // is a distinct configuration, and the final read fails after all of them.
    let mut history: Vec<Op> = Vec::new();
    for i in 0..20 {
        history.push(pending(i, write(&format!("w{i}"))));
        history.push(done(i, 1000, Remove, Removed(true)));
    }
    history.push(done(2000, 2010, Read, seen("ghost", 99)));
    let started = Instant::now();
    let verdict = check(&VersionedRegister, &history, Duration::from_millis(100));
    assert_eq!(verdict, CheckResult::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let verdict = check(&VersionedRegister, &history[1..2], Duration::ZERO);
    assert_eq!(verdict, CheckResult::Timeout);
}

#[test]
fn per_key_check_names_the_failing_key() {
    let keyed = |key: &str, op: Op| Keyed {
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
    let KeyedCheckResult::NotLinearizable { key, explanation } =
        check_per_key(&VersionedRegister, &history, BUDGET)
    else {
        panic!("expected a violation");
    };
    assert_eq!(key, "bad");
    // Op numbers index the whole keyed history.
    assert!(explanation.contains("op 4 "), "{explanation}");
    let verdict = check_per_key(&VersionedRegister, &history[..4], BUDGET);
    assert_eq!(verdict, KeyedCheckResult::Linearizable);
    let keys = vec!["bad".to_string(), "good".to_string()];
    let verdict = check_per_key(&VersionedRegister, &history, Duration::ZERO);
    assert_eq!(verdict, KeyedCheckResult::Timeout { keys });
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
/// `100 * i`, within an interval reaching up to 400 either side, so ops more than 8
/// apart never overlap. 3% of ops get no response; half of those take no effect.
struct Simulated {
    history: Vec<Keyed>,
    /// The op's key's object right after each op.
    after: Vec<Option<(Value, u64)>>,
    /// Whether each op is an acknowledged write or successful CAS.
    acked_write: Vec<bool>,
}

fn simulate(seed: u64, count: usize, keys: u64) -> Simulated {
    let (mut rng, mut objects, mut sequence) = (Rng(seed), vec![None; keys as usize], 0);
    let mut sim = Simulated {
        history: Vec::new(),
        after: Vec::new(),
        acked_write: Vec::new(),
    };
    for i in 0..count {
        let key = rng.below(keys);
        let object: &mut Option<(Value, u64)> = &mut objects[key as usize];
        let value = Value::from(format!("v{i}").as_str());
        let current = object.as_ref().map(|(_, version)| *version);
        let input = match rng.below(100) {
            0..=39 => Read,
            40..=69 => RegisterInput::Write(value.clone()),
            70..=89 => {
                let expected_version = match (current, rng.below(4)) {
                    (Some(version), 0..=2) => version,
                    _ => rng.below(sequence + 2),
                };
                RegisterInput::Cas {
                    expected_version,
                    value: value.clone(),
                }
            }
            _ => Remove,
        };
        let indeterminate = rng.below(100) < 3;
        let applies = !indeterminate || rng.below(2) == 0;
        let output = match &input {
            Read => ReadOk(object.clone()),
            RegisterInput::Cas {
                expected_version, ..
            } if current != Some(*expected_version) => Mismatch(current),
            RegisterInput::Write(_) | RegisterInput::Cas { .. } => {
                sequence += 1 + rng.below(3);
                Written(sequence)
            }
            Remove => Removed(object.is_some()),
        };
        match (&output, applies) {
            (Written(version), true) => *object = Some((value, *version)),
            (Removed(_), true) => *object = None,
            _ => {}
        }
        let (client, point) = (i % 8, 100 * i as u64 + 400);
        let call = point - rng.below(401);
        let op = match indeterminate {
            true => Operation::indeterminate(client, call, input),
            false => Operation::completed(client, call, point + rng.below(401), input, output),
        };
        sim.acked_write
            .push(!op.is_indeterminate() && matches!(op.output, Some(Written(_))));
        sim.after.push(object.clone());
        sim.history.push(Keyed {
            key: format!("key-{key}"),
            op,
        });
    }
    sim
}

/// Makes a late read on `key` return that key's object as it was 30 of its ops earlier,
/// although an acknowledged write completed in between; returns the read's index.
fn make_one_read_stale(sim: &mut Simulated, key: &str) -> usize {
    let on_key: Vec<_> = (0..sim.history.len())
        .filter(|&i| sim.history[i].key == key)
        .collect();
    for at in (on_key.len() / 2..on_key.len()).rev() {
        let (read, old) = (on_key[at], on_key[at - 30]);
        let op = &sim.history[read].op;
        let between = &on_key[at - 29..at];
        let overwritten = between
            .iter()
            .any(|&b| b > old + 8 && b + 8 < read && sim.acked_write[b]);
        if let (Read, false, Some(stale), true) = (
            &op.input,
            op.is_indeterminate(),
            &sim.after[old],
            overwritten,
        ) {
            sim.history[read].op.output = Some(ReadOk(Some(stale.clone())));
            return read;
        }
    }
    panic!("no read to make stale");
}

#[test]
fn random_history_is_accepted_quickly_and_a_stale_read_in_it_is_found() {
    let mut sim = simulate(7, 2000, 1);
    let history: Vec<_> = sim.history.iter().map(|keyed| keyed.op.clone()).collect();
    let started = Instant::now();
    assert_linearizable(&history);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    let stale = make_one_read_stale(&mut sim, "key-0");
    let history: Vec<_> = sim.history.iter().map(|keyed| keyed.op.clone()).collect();
    let explanation = assert_rejected(&history);
    let blamed = format!("no order could place: op {stale} ");
    assert!(explanation.contains(&blamed), "op {stale}: {explanation}");
}

#[test]
fn large_keyed_history_checks_within_seconds() {
    let mut sim = simulate(11, 5000, 5);
    let started = Instant::now();
    let verdict = check_per_key(&VersionedRegister, &sim.history, BUDGET);
    assert_eq!(verdict, KeyedCheckResult::Linearizable);
    let stale = make_one_read_stale(&mut sim, "key-3");
    let verdict = check_per_key(&VersionedRegister, &sim.history, BUDGET);
    let KeyedCheckResult::NotLinearizable { key, explanation } = verdict else {
        panic!("expected a violation, got {verdict:?}");
    };
    assert_eq!(key, "key-3");
    assert!(
        explanation.contains(&format!("op {stale} ")),
        "op {stale}: {explanation}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The checker against a brute-force search on small random histories.
#[path = "linearizability_brute_tests.rs"]
mod brute;
