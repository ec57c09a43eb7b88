//! Hierarchy: a trace's spans assembled into the seed's `TraceHierarchy` —
//! a tree ordered by start time, with each node's children and self time,
//! and the trace's totals (duration, tokens, cost, errors).
//!
//! Pure: takes spans, returns the tree. Spans whose parent is not among
//! them (the caller's own span, from `traceparent`) are roots; a malformed
//! parent cycle cannot loop it (such spans become roots too). Nesting is
//! capped at [`MAX_DEPTH`] (building and serializing the tree recurse, and
//! a chain of `traceparent`s can be any length): a span deeper than that
//! starts a new root, so no trace can overflow the stack.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::record::span::{Span, SpanStatus};

/// Deepest nesting of the tree; deeper spans become roots.
pub const MAX_DEPTH: usize = 100;

/// One span and what hangs from it.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub span: Span,
    /// Time not covered by any child (ms).
    pub self_time_ms: f64,
    pub children: Vec<Node>,
}

/// Sums over the whole trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub span_count: usize,
    pub start_time_us: i64,
    pub end_time_us: i64,
    /// First start to last end (ms).
    pub duration_ms: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Sum of the priced spans; `None` when no span has a price.
    pub cost_usd: Option<f64>,
    /// Some LLM span with tokens had no price: `cost_usd` is a lower bound.
    pub cost_incomplete: bool,
    pub tokens_estimated: bool,
    pub error_count: usize,
    pub llm_calls: usize,
    pub tool_calls: usize,
}

/// See the module docs.
#[derive(Debug, Clone, Serialize)]
pub struct TraceHierarchy {
    pub trace_id: String,
    pub roots: Vec<Node>,
    pub totals: Totals,
}

/// Assembles spans (of one trace; others are ignored) into the tree.
/// `None` when there are no spans.
pub fn assemble(mut spans: Vec<Span>) -> Option<TraceHierarchy> {
    let trace_id = spans.first()?.trace_id.clone();
    spans.retain(|s| s.trace_id == trace_id);
    spans.sort_by(|a, b| {
        (a.start_time_us, a.end_time_us, &a.span_id).cmp(&(
            b.start_time_us,
            b.end_time_us,
            &b.span_id,
        ))
    });
    let totals = totals(&spans);

    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref() {
            Some(p) if p != s.span_id && ids.contains(p) => {
                children.entry(p.to_string()).or_default().push(i)
            }
            _ => roots.push(i),
        }
    }
    let mut placed = vec![false; spans.len()];
    let mut slots: Vec<Option<Span>> = spans.into_iter().map(Some).collect();
    let mut out: Vec<Node> = roots
        .iter()
        .filter_map(|&i| build(i, &mut slots, &children, &mut placed, 1))
        .collect();
    // Spans only reachable through a parent cycle, or deeper than
    // MAX_DEPTH: make them roots.
    for i in 0..slots.len() {
        if !placed[i] {
            if let Some(n) = build(i, &mut slots, &children, &mut placed, 1) {
                out.push(n);
            }
        }
    }
    out.sort_by_key(|n| n.span.start_time_us);
    Some(TraceHierarchy {
        trace_id,
        roots: out,
        totals,
    })
}

fn build(
    i: usize,
    slots: &mut [Option<Span>],
    children: &HashMap<String, Vec<usize>>,
    placed: &mut [bool],
    depth: usize,
) -> Option<Node> {
    if placed[i] {
        return None;
    }
    placed[i] = true;
    let span = slots[i].take()?;
    let kids: Vec<Node> = match children.get(&span.span_id) {
        Some(c) if depth < MAX_DEPTH => c
            .iter()
            .filter_map(|&k| build(k, slots, children, placed, depth + 1))
            .collect(),
        _ => Vec::new(),
    };
    let self_time_ms = self_time(&span, &kids);
    Some(Node {
        span,
        self_time_ms,
        children: kids,
    })
}

/// The span's duration minus the union of its children's intervals,
/// clipped to the span.
fn self_time(span: &Span, kids: &[Node]) -> f64 {
    let (start, end) = (span.start_time_us, span.end_time_us.max(span.start_time_us));
    let mut intervals: Vec<(i64, i64)> = kids
        .iter()
        .map(|k| (k.span.start_time_us.max(start), k.span.end_time_us.min(end)))
        .filter(|(a, b)| b > a)
        .collect();
    intervals.sort_unstable();
    let mut covered = 0i64;
    let mut current: Option<(i64, i64)> = None;
    for (a, b) in intervals {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                covered += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((ca, cb)) = current {
        covered += cb - ca;
    }
    ((end - start - covered).max(0)) as f64 / 1000.0
}

fn totals(spans: &[Span]) -> Totals {
    let mut t = Totals {
        span_count: spans.len(),
        start_time_us: spans.iter().map(|s| s.start_time_us).min().unwrap_or(0),
        end_time_us: spans.iter().map(|s| s.end_time_us).max().unwrap_or(0),
        ..Totals::default()
    };
    t.duration_ms = (t.end_time_us - t.start_time_us).max(0) as f64 / 1000.0;
    for s in spans {
        t.input_tokens += s.input_tokens.unwrap_or(0);
        t.output_tokens += s.output_tokens.unwrap_or(0);
        t.tokens_estimated |= s.tokens_estimated;
        if s.status == SpanStatus::Failed {
            t.error_count += 1;
        }
        match s.operation_type.as_str() {
            "llm_call" => t.llm_calls += 1,
            "tool_call" => t.tool_calls += 1,
            _ => {}
        }
        match s.cost_usd {
            Some(c) => t.cost_usd = Some(t.cost_usd.unwrap_or(0.0) + c),
            None => {
                let billed = matches!(s.operation_type.as_str(), "llm_call" | "embedding");
                if billed && (s.input_tokens.is_some() || s.output_tokens.is_some()) {
                    t.cost_incomplete = true;
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> Span {
        let mut s = Span::start(start);
        s.trace_id = "t".into();
        s.span_id = id.into();
        s.parent_span_id = parent.map(str::to_string);
        s.end_time_us = end;
        s.duration_ms = (end - start) as f64 / 1000.0;
        s.status = SpanStatus::Completed;
        s.operation_type = "llm_call".into();
        s
    }

    #[test]
    fn agent_loop_tree_order_self_time_and_totals() {
        // root llm [0,100ms], tool [100,250] under root, llm2 [250,400], llm3 [500,600].
        let mut root = span("a", None, 0, 100_000);
        root.input_tokens = Some(10);
        root.output_tokens = Some(5);
        root.cost_usd = Some(0.001);
        let mut tool = span("t1", Some("a"), 100_000, 250_000);
        tool.operation_type = "tool_call".into();
        let mut l2 = span("b", Some("a"), 250_000, 400_000);
        l2.input_tokens = Some(20);
        l2.output_tokens = Some(8);
        l2.cost_usd = Some(0.002);
        let mut l3 = span("c", Some("a"), 500_000, 600_000);
        l3.status = SpanStatus::Failed;
        l3.input_tokens = Some(30);
        let caller = span("x", Some("not-here"), 700_000, 701_000);
        let mut other_trace = span("z", None, 0, 1);
        other_trace.trace_id = "other".into();
        let h = assemble(vec![l3, tool, caller, root, l2, other_trace]).unwrap();
        assert_eq!(
            h.roots.len(),
            2,
            "root and the span whose parent is the caller's"
        );
        let r = &h.roots[0];
        assert_eq!(r.span.span_id, "a");
        let kids: Vec<&str> = r.children.iter().map(|n| n.span.span_id.as_str()).collect();
        assert_eq!(kids, vec!["t1", "b", "c"]);
        // The children lie outside the root's own interval: all its time is its own.
        assert_eq!(r.self_time_ms, 100.0);
        let t = &h.totals;
        assert_eq!(t.span_count, 5);
        assert_eq!(t.duration_ms, 701.0);
        assert_eq!((t.input_tokens, t.output_tokens), (60, 13));
        assert!((t.cost_usd.unwrap() - 0.003).abs() < 1e-12);
        assert!(t.cost_incomplete, "c has tokens but no price");
        assert_eq!((t.error_count, t.llm_calls, t.tool_calls), (1, 4, 1));
    }

    #[test]
    fn self_time_subtracts_overlapping_children_once() {
        let parent = span("p", None, 0, 1_000_000);
        let c1 = span("c1", Some("p"), 100_000, 400_000);
        let c2 = span("c2", Some("p"), 300_000, 500_000);
        let c3 = span("c3", Some("p"), 900_000, 1_200_000);
        let h = assemble(vec![parent, c1, c2, c3]).unwrap();
        // Covered: [100,500] + [900,1000] = 500 ms.
        assert_eq!(h.roots[0].self_time_ms, 500.0);
    }

    #[test]
    fn a_chain_deeper_than_max_depth_is_split_into_roots() {
        // 100,000 spans, each the child of the one before.
        let n = 100_000;
        let spans: Vec<Span> = (0..n)
            .map(|i| {
                let parent = (i > 0).then(|| format!("s{}", i - 1));
                span(&format!("s{i}"), parent.as_deref(), i as i64, i as i64 + 1)
            })
            .collect();
        let h = assemble(spans).unwrap();
        fn depth(n: &Node) -> usize {
            1 + n.children.iter().map(depth).max().unwrap_or(0)
        }
        fn count(n: &Node) -> usize {
            1 + n.children.iter().map(count).sum::<usize>()
        }
        assert_eq!(h.roots.iter().map(count).sum::<usize>(), n);
        assert!(h.roots.iter().all(|r| depth(r) <= MAX_DEPTH));
        assert_eq!(h.roots.len(), n.div_ceil(MAX_DEPTH));
        // And it serializes (serde recursion is bounded by the depth too).
        assert!(serde_json::to_vec(&h).unwrap().len() > n);
    }

    #[test]
    fn cycles_do_not_loop() {
        let a = span("a", Some("b"), 0, 10);
        let b = span("b", Some("a"), 5, 20);
        let h = assemble(vec![a, b]).unwrap();
        let count = |n: &Node| 1 + n.children.len();
        assert_eq!(h.roots.iter().map(count).sum::<usize>(), 2);
        assert!(assemble(vec![]).is_none());
    }
}
