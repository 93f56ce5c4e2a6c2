//! A brute-force cross-check: on small random histories, the checker's verdict must match
//! trying every order with a model of concrete versions.

use super::*;

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
        let version = state.current.as_ref().map(|(_, version)| *version);
        let write = |value: &Value, new: u64| {
            let current = Some((value.clone(), new));
            (new > state.last).then_some(Concrete { current, last: new })
        };
        match (input, output) {
            (Read, ReadOk(seen)) => (*seen == state.current).then(|| state.clone()),
            (RegisterInput::Write(value), Written(new)) => write(value, *new),
            (
                RegisterInput::Cas {
                    expected_version,
                    value,
                },
                Written(new),
            ) => write(value, *new).filter(|_| version == Some(*expected_version)),
            (
                RegisterInput::Cas {
                    expected_version, ..
                },
                Mismatch(seen),
            ) => (version != Some(*expected_version) && *seen == version).then(|| state.clone()),
            (Remove, Removed(existed)) => {
                let removed = Concrete {
                    current: None,
                    last: state.last,
                };
                (*existed == version.is_some()).then_some(removed)
            }
            _ => None,
        }
    }

    fn step_unknown(&self, state: &Concrete, input: &RegisterInput) -> Vec<Concrete> {
        let outputs: Vec<_> = match input {
            Read => Vec::new(),
            Remove => vec![Removed(state.current.is_some())],
            _ => (state.last + 1..=self.max).map(Written).collect(),
        };
        outputs
            .iter()
            .filter_map(|output| self.step(state, input, output))
            .collect()
    }
}

/// Tries every order of `ops`, with no memo and no pruning.
fn brute_force(model: &ConcreteRegister, ops: &[Op], state: &Concrete, placed: u32) -> bool {
    let unplaced = |op: usize| placed & (1 << op) == 0;
    let returns = (0..ops.len()).filter(|&op| unplaced(op) && !ops[op].is_indeterminate());
    let Some(first_return) = returns.filter_map(|op| ops[op].ret).min() else {
        return true;
    };
    (0..ops.len())
        .filter(|&op| unplaced(op) && ops[op].call <= first_return)
        .any(|op| {
            let next = match (&ops[op].output, ops[op].is_indeterminate()) {
                (Some(output), false) => model
                    .step(state, &ops[op].input, output)
                    .into_iter()
                    .collect(),
                _ => model.step_unknown(state, &ops[op].input),
            };
            next.iter()
                .any(|next| brute_force(model, ops, next, placed | 1 << op))
        })
}

/// Up to 7 ops at random points inside random intervals, run in point order; then,
/// half the time, one output replaced by a random one.
fn small_history(rng: &mut Rng) -> Vec<Op> {
    let count = 1 + rng.below(7);
    let mut timed: Vec<(u64, Op)> = (0..count)
        .map(|i| {
            let value = format!("v{i}");
            let input = [Read, write(&value), cas(rng.below(4), &value), Remove];
            let input = input[rng.below(4) as usize].clone();
            let (call, length) = (rng.below(30), rng.below(15));
            let op = match rng.below(5) {
                0 => Operation::indeterminate(i as usize, call, input),
                _ => Operation::completed(i as usize, call, call + length, input, Removed(false)),
            };
            (call + rng.below(length + 1), op)
        })
        .collect();
    timed.sort_by_key(|(point, _)| *point);
    let mut object = Concrete {
        current: None,
        last: 0,
    };
    let mut history = Vec::new();
    for (_, mut op) in timed {
        let version = object.current.as_ref().map(|(_, version)| *version);
        let output = match &op.input {
            Read => ReadOk(object.current.clone()),
            RegisterInput::Cas {
                expected_version, ..
            } if version != Some(*expected_version) => Mismatch(version),
            RegisterInput::Write(_) | RegisterInput::Cas { .. } => {
                Written(object.last + 1 + rng.below(2))
            }
            Remove => Removed(version.is_some()),
        };
        // A pending op took effect or not; a completed one did, with its true output.
        if !op.is_indeterminate() || rng.below(2) == 0 {
            object = ConcreteRegister { max: 0 }
                .step(&object, &op.input, &output)
                .unwrap();
        }
        op.output = op.output.map(|_| output);
        history.push(op);
    }
    if rng.below(2) == 0 {
        let op = &mut history[rng.below(count) as usize];
        let random = [
            ReadOk(None),
            seen(&format!("v{}", rng.below(count)), rng.below(6)),
            Written(rng.below(6)),
            Mismatch(Some(rng.below(4)).filter(|version| *version > 0)),
        ];
        op.output = op
            .output
            .take()
            .map(|_| random[rng.below(4) as usize].clone());
    }
    history
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let (mut rng, mut accepted, mut rejected) = (Rng(3), 0, 0);
    for _ in 0..4000 {
        let history = small_history(&mut rng);
        // Room for every pending write above every version the history mentions.
        let mentioned = history
            .iter()
            .filter_map(|op| match (&op.input, &op.output) {
                (
                    _,
                    Some(Written(version) | Mismatch(Some(version)) | ReadOk(Some((_, version)))),
                ) => Some(*version),
                (
                    RegisterInput::Cas {
                        expected_version, ..
                    },
                    _,
                ) => Some(*expected_version),
                _ => None,
            });
        let max = mentioned.max().unwrap_or(0) + history.len() as u64 + 1;
        let model = ConcreteRegister { max };
        let expected = brute_force(&model, &history, &model.init(), 0);
        let linearizable = verdict(&history) == CheckResult::Linearizable;
        assert_eq!(linearizable, expected, "{history:#?}");
        // The search with the concrete model, without the abstraction, must agree too.
        let concrete = check(&model, &history, BUDGET) == CheckResult::Linearizable;
        assert_eq!(concrete, expected, "concrete model: {history:#?}");
        (accepted, rejected) = if expected {
            (accepted + 1, rejected)
        } else {
            (accepted, rejected + 1)
        };
    }
    assert!(
        accepted > 1000 && rejected > 1000,
        "{accepted} accepted, {rejected} rejected"
    );
}
