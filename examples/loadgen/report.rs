//! Text output: durations, percentages, changes, and Markdown tables that read well both in a
//! terminal and pasted into `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::time::Duration;

/// A duration with a unit that keeps three significant digits: `812 µs`, `48.0 ms`, `1.25 s`.
pub(crate) fn dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{} µs", sig3(ns / 1_000.0))
    } else if ns < 1_000_000_000.0 {
        format!("{} ms", sig3(ns / 1_000_000.0))
    } else {
        format!("{} s", sig3(ns / 1_000_000_000.0))
    }
}

/// A signed duration difference in microseconds: `+23.4 µs`, `-1.20 µs`.
pub(crate) fn delta_us(after: Duration, before: Duration) -> String {
    let us = (after.as_nanos() as f64 - before.as_nanos() as f64) / 1_000.0;
    let sign = if us < 0.0 { "-" } else { "+" };
    format!("{sign}{} µs", sig3(us.abs()))
}

/// Three significant digits, no exponent.
pub(crate) fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A share as a percentage: `2.30%`, `0.020%`.
pub(crate) fn pct(share: f64) -> String {
    let p = share * 100.0;
    if p != 0.0 && p.abs() < 0.1 {
        format!("{p:.3}%")
    } else {
        format!("{p:.2}%")
    }
}

/// How `after` compares with `before` for a lower-is-better number: `-96.2%`.
pub(crate) fn change(before: f64, after: f64) -> String {
    if before == 0.0 {
        return "n/a".to_owned();
    }
    let c = (after - before) / before * 100.0;
    let sign = if c < 0.0 { "-" } else { "+" };
    format!("{sign}{}%", sig3(c.abs()))
}

/// A higher-is-better ratio: `31.2x`.
pub(crate) fn times(before: f64, after: f64) -> String {
    if before == 0.0 {
        return "n/a".to_owned();
    }
    format!("{}x", sig3(after / before))
}

/// A Markdown table with padded columns.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header.
    pub(crate) fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            rows: vec![header.into_iter().map(Into::into).collect()],
        }
    }

    /// Appends a row (short rows are padded with empty cells).
    pub(crate) fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Renders it; the first column is left-aligned, the others right-aligned.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![3usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (r, row) in self.rows.iter().enumerate() {
            out.push('|');
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let pad = width - cell.chars().count();
                if i == 0 {
                    let _ = write!(out, " {cell}{} |", " ".repeat(pad));
                } else {
                    let _ = write!(out, " {}{cell} |", " ".repeat(pad));
                }
            }
            out.push('\n');
            if r == 0 {
                out.push('|');
                for (i, width) in widths.iter().enumerate() {
                    if i == 0 {
                        let _ = write!(out, " {} |", "-".repeat(*width));
                    } else {
                        let _ = write!(out, " {}: |", "-".repeat(width - 1));
                    }
                }
                out.push('\n');
            }
        }
        out
    }
}

/// The median of some numbers (mean of the middle two for an even count); 0 when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Parses `30s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_three_digits() {
        assert_eq!(dur(Duration::from_nanos(812)), "812 ns");
        assert_eq!(dur(Duration::from_micros(812)), "812 µs");
        assert_eq!(dur(Duration::from_micros(48_000)), "48.0 ms");
        assert_eq!(dur(Duration::from_millis(1250)), "1.25 s");
        assert_eq!(
            delta_us(Duration::from_micros(150), Duration::from_micros(100)),
            "+50.0 µs"
        );
        assert_eq!(
            delta_us(Duration::from_micros(99), Duration::from_micros(100)),
            "-1.00 µs"
        );
    }

    #[test]
    fn changes_and_shares() {
        assert_eq!(change(1250.0, 48.0), "-96.2%");
        assert_eq!(change(1000.0, 280.0), "-72.0%");
        assert_eq!(change(0.0, 1.0), "n/a");
        assert_eq!(times(80.0, 2500.0), "31.2x");
        assert_eq!(pct(0.023), "2.30%");
        assert_eq!(pct(0.0002), "0.020%");
        assert_eq!(pct(0.0), "0.00%");
    }

    #[test]
    fn table_is_aligned_markdown() {
        let mut t = Table::new(["metric", "before", "after"]);
        t.row(["P50", "1.25 s", "48.0 ms"]);
        t.row(["errors"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "| metric | before |   after |");
        assert_eq!(lines[1], "| ------ | -----: | ------: |");
        assert_eq!(lines[2], "| P50    | 1.25 s | 48.0 ms |");
        assert_eq!(lines[3], "| errors |        |         |");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn medians_and_durations_parse() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
