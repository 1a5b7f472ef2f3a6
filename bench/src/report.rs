//! One measured figure and how a set of them is printed: a table for people,
//! JSON for machines.

use serde::Serialize;

/// One measured figure of one benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The suite the figure belongs to: `mvcc`, `watch`, `wal`, ...
    pub suite: &'static str,
    /// What was measured, e.g. `put batch=100`.
    pub name: String,
    /// The figure itself (a median where the benchmark repeats).
    pub value: f64,
    /// Its unit, e.g. `ops/s`, `ms`, `B/watcher`.
    pub unit: &'static str,
    /// Anything a reader needs to interpret it (sample count, spread).
    pub note: String,
}

impl Row {
    pub fn new(suite: &'static str, name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Row { suite, name: name.into(), value, unit, note: String::new() }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// Formats rows as a fixed-width text table.
pub fn table(rows: &[Row]) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<6} {:<name_w$} {:>14} {:<10} {}\n", "suite", "name", "value", "unit", "note");
    for r in rows {
        out.push_str(&format!(
            "{:<6} {:<name_w$} {:>14} {:<10} {}\n",
            r.suite,
            r.name,
            format_value(r.value),
            r.unit,
            r.note
        ));
    }
    out
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Median of a non-empty sample.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 }
}
