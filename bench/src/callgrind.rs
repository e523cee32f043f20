//! Instruction counts from callgrind: repeatable where wall clocks on a shared 2-core machine
//! are not. The runner starts a binary under `valgrind --tool=callgrind --dump-instr=no`, sends
//! it SIGTERM when the stub sees its first `/next`, and callgrind writes its totals on the way
//! out; [`total_ir`] reads them.

/// The total `Ir` (instructions executed) of a callgrind output file: the `totals:` line, or
/// the `summary:` line of older formats.
pub fn total_ir(callgrind_out: &str) -> Option<u64> {
    let mut summary = None;
    for line in callgrind_out.lines() {
        if let Some(rest) = line.strip_prefix("totals:") {
            return first_number(rest);
        }
        if let Some(rest) = line.strip_prefix("summary:") {
            summary = first_number(rest);
        }
    }
    summary
}

fn first_number(rest: &str) -> Option<u64> {
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_totals_then_summary() {
        let out = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 123\nfn=(1) main\n3 4\ntotals: 670123\n";
        assert_eq!(total_ir(out), Some(670_123));
        assert_eq!(total_ir("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(total_ir("events: Ir\n"), None);
    }
}
