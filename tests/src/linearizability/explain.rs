//! Human-readable explanations of a failed check: the longest linearizable prefix found,
//! the state after it, and the operations that could not go next.

use std::fmt::{Debug, Write as _};

use super::{Labeled, Model, Operation, Search};

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

pub(super) fn explain<M: Model>(search: &Search<'_, M>, init: &M::State) -> String {
    let (ops, completed, deepest) = (search.ops, search.completed, &search.deepest);
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
    let placed = deepest.placed;
    let title = format!("longest linearizable prefix: {placed} of {completed} completed ops");
    let prefix: Vec<_> = deepest.ops.iter().map(|&op| ops[op]).collect();
    list_ops::<M>(&mut text, &title, &prefix, true);
    let state = deepest.state.as_ref().unwrap_or(init);
    let _ = writeln!(text, "state after it: {state:?}");
    let mut unplaced = vec![true; completed];
    deepest
        .ops
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
