//! Greedy generation through athena-runtime against the reference path on fixed prompts:
//! `cargo run --release --example greedy-compare -- FILE.gguf [N]` prints, per prompt, whether
//! the reference's greedy choice agrees at each of N steps (default 32), the first divergence
//! with its logit gap, and the largest logit difference.

use std::path::PathBuf;

/// Five prompts of different kinds (facts, code, a list, a chat-style question, prose).
const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Here are three tips for staying healthy:",
    "Question: What is the boiling point of water?\nAnswer:",
    "Once upon a time, in a small village by the sea,",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next().map(PathBuf::from) else {
        eprintln!("usage: greedy-compare FILE.gguf [N]");
        std::process::exit(2);
    };
    let n = args
        .next()
        .map_or(32, |s| s.parse().expect("N must be a number"));
    let reports = athena::eval::greedy::compare(&file, &PROMPTS, n).unwrap_or_else(|e| {
        eprintln!("greedy-compare: {e}");
        std::process::exit(1)
    });
    println!("| prompt | tokens | same as reference | first divergence (step, reference logit gap) | max logit diff |");
    println!("|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {:?} | {} + {} | {} | {} | {:.4} |",
            r.prompt,
            r.prompt_tokens,
            r.generated,
            if r.divergence.is_none() { "yes" } else { "no" },
            r.divergence.map_or("-".to_string(), |(s, gap)| format!(
                "step {s}, gap {gap:.4}"
            )),
            r.max_logit_diff
        );
    }
    for r in &reports {
        println!("\n{:?} ->{:?}", r.prompt, r.text);
    }
}
