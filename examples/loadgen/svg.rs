//! Hand-written SVG line charts: latency percentile plots (log latency over a "nines" axis) and
//! added latency by concurrency. No plotting crate: a chart is a few hundred lines of text.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend text.
    pub(crate) name: String,
    /// Points in axis units (already transformed: logs taken where the axis is logarithmic).
    pub(crate) points: Vec<(f64, f64)>,
    /// Draw a dashed line.
    pub(crate) dashed: bool,
    /// Index into the palette (lines of one client share a colour).
    pub(crate) color: usize,
}

/// An axis: its range in axis units, its ticks and label.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    /// Axis title.
    pub(crate) label: String,
    /// Lowest value shown.
    pub(crate) min: f64,
    /// Highest value shown.
    pub(crate) max: f64,
    /// Tick positions (axis units) and their text.
    pub(crate) ticks: Vec<(f64, String)>,
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart with markers; points outside the axes are clamped to the frame.
pub(crate) fn line_chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let span = |a: &Axis| {
        if (a.max - a.min).abs() < f64::EPSILON {
            1.0
        } else {
            a.max - a.min
        }
    };
    let px = |v: f64| LEFT + ((v - x.min) / span(x)).clamp(0.0, 1.0) * plot_w;
    let py = |v: f64| TOP + plot_h - ((v - y.min) / span(y)).clamp(0.0, 1.0) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and ticks.
    for (v, label) in &x.ticks {
        let p = px(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{p:.1}" y1="{TOP:.1}" x2="{p:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 18.0,
            escape(label)
        );
    }
    for (v, label) in &y.ticks {
        let p = py(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT:.1}" y1="{p:.1}" x2="{:.1}" y2="{p:.1}" stroke="#e0e0e0"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            p + 4.0,
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        escape(&x.label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&y.label)
    );
    // Lines and legend.
    for (i, line) in series.iter().enumerate() {
        let color = COLORS[line.color % COLORS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| format!("{:.1},{:.1}", px(*a), py(*b)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        if !points.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                points.join(" ")
            );
        }
        // Markers only for sparse lines; a percentile curve has hundreds of points.
        if line.points.len() <= 16 {
            for p in &points {
                if let Some((a, b)) = p.split_once(',') {
                    let _ = writeln!(s, r#"<circle cx="{a}" cy="{b}" r="3.5" fill="{color}"/>"#);
                }
            }
        }
        let ly = TOP + 14.0 + i as f64 * 20.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            lx + 22.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 28.0,
            ly + 4.0,
            escape(&line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The "nines" position of quantile `q`: 0 at 0, 1 at 0.9, 2 at 0.99, ...
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

/// Latency percentile plot: x is the percentile on a nines scale (0 … 99.99), y the latency
/// in milliseconds on a log scale; one line per histogram (nanosecond values).
pub(crate) fn percentile_chart(title: &str, histograms: &[(&str, &Histogram<u64>)]) -> String {
    const MAX_NINES: f64 = 4.0;
    let mut series = Vec::new();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, (name, h)) in histograms.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let points: Vec<(f64, f64)> = (0..=200)
            .map(|step| {
                let x = MAX_NINES * f64::from(step) / 200.0;
                let q = 1.0 - 10f64.powf(-x);
                let ms = h.value_at_quantile(q) as f64 / 1e6;
                (x, ms.max(1e-4).log10())
            })
            .collect();
        for (_, y) in &points {
            lo = lo.min(*y);
            hi = hi.max(*y);
        }
        series.push(Series {
            name: (*name).to_owned(),
            points,
            dashed: i >= COLORS.len(),
            color: i,
        });
    }
    if !lo.is_finite() {
        (lo, hi) = (-1.0, 1.0);
    }
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let y_ticks = (lo as i32..=hi as i32)
        .map(|e| (f64::from(e), ms_label(10f64.powi(e))))
        .collect();
    let x_ticks = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]
        .iter()
        .map(|q| (nines(*q), format!("p{}", q * 100.0)))
        .collect();
    line_chart(
        title,
        &Axis {
            label: "percentile".to_owned(),
            min: 0.0,
            max: MAX_NINES,
            ticks: x_ticks,
        },
        &Axis {
            label: "latency (log scale)".to_owned(),
            min: lo,
            max: hi,
            ticks: y_ticks,
        },
        &series,
    )
}

fn ms_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms} ms")
    } else {
        format!("{} µs", ms * 1000.0)
    }
}

/// One line of [`by_concurrency_chart`]: name, `(concurrency, µs)` points, dashed, colour index.
pub(crate) type ConcurrencyLine = (String, Vec<(usize, f64)>, bool, usize);

/// Added latency by concurrency: x is the concurrency (log2 scale), y microseconds (linear).
pub(crate) fn by_concurrency_chart(title: &str, lines: &[ConcurrencyLine]) -> String {
    let mut concurrencies: Vec<usize> = lines
        .iter()
        .flat_map(|(_, p, _, _)| p.iter().map(|(c, _)| *c))
        .collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    let values = lines
        .iter()
        .flat_map(|(_, p, _, _)| p.iter().map(|(_, v)| *v));
    let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let step = nice_step((hi - lo) / 6.0);
    let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let mut y_ticks = Vec::new();
    let mut v = lo;
    while v <= hi + step / 2.0 {
        y_ticks.push((v, format!("{v}")));
        v += step;
    }
    let log2 = |c: usize| (c.max(1) as f64).log2();
    let series = lines
        .iter()
        .map(|(name, points, dashed, color)| Series {
            name: name.clone(),
            points: points.iter().map(|(c, v)| (log2(*c), *v)).collect(),
            dashed: *dashed,
            color: *color,
        })
        .collect::<Vec<_>>();
    let (x_min, x_max) = match (concurrencies.first(), concurrencies.last()) {
        (Some(a), Some(b)) if a != b => (log2(*a), log2(*b)),
        (Some(a), _) => (log2(*a) - 1.0, log2(*a) + 1.0),
        _ => (0.0, 1.0),
    };
    line_chart(
        title,
        &Axis {
            label: "concurrency (closed loop)".to_owned(),
            min: x_min,
            max: x_max,
            ticks: concurrencies
                .iter()
                .map(|c| (log2(*c), c.to_string()))
                .collect(),
        },
        &Axis {
            label: "added latency (µs)".to_owned(),
            min: lo,
            max: hi,
            ticks: y_ticks,
        },
        &series,
    )
}

/// A vertical line across a chart over time: at `t` seconds, its legend text, its colour index.
pub(crate) type Marker = (f64, String, usize);

/// One value over time: x is seconds (linear), y the value (linear, from a round number below
/// the lowest to one above the highest); `markers` are dashed vertical lines (events).
pub(crate) fn over_time_chart(
    title: &str,
    y_label: &str,
    name: &str,
    points: &[(f64, f64)],
    markers: &[Marker],
) -> String {
    let t_max = points.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let (lo, hi) = points
        .iter()
        .map(|p| p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let step = nice_step((hi - lo).max(1.0) / 6.0);
    let (y_min, y_max) = (
        (lo / step).floor() * step - step,
        (hi / step).ceil() * step + step,
    );
    let y_min = y_min.max(0.0);
    let mut y_ticks = Vec::new();
    let mut v = y_min;
    while v <= y_max + step / 2.0 {
        y_ticks.push((v, format!("{v}")));
        v += step;
    }
    let t_step = nice_step(t_max / 10.0);
    let x_ticks = (0..=(t_max / t_step) as u32)
        .map(|i| {
            let t = f64::from(i) * t_step;
            (t, format!("{t}"))
        })
        .collect();
    let mut series = vec![Series {
        name: name.to_owned(),
        points: points.to_vec(),
        dashed: false,
        color: 1,
    }];
    for (t, label, color) in markers {
        series.push(Series {
            name: label.clone(),
            points: vec![(*t, y_min), (*t, y_max)],
            dashed: true,
            color: *color,
        });
    }
    line_chart(
        title,
        &Axis {
            label: "seconds".to_owned(),
            min: 0.0,
            max: t_max,
            ticks: x_ticks,
        },
        &Axis {
            label: y_label.to_owned(),
            min: y_min,
            max: y_max,
            ticks: y_ticks,
        },
        &series,
    )
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags nest and close, attributes are quoted and no number is NaN.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("every tag closes") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "nested '<' in {tag}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name.to_owned());
            }
            // Text between tags must not hold a raw '&' that is not an entity.
            let text_end = rest[close..].find('<').map_or(rest.len(), |i| i + close);
            let text = &rest[close + 1..text_end];
            for (i, _) in text.match_indices('&') {
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"]
                        .iter()
                        .any(|e| text[i..].starts_with(e)),
                    "raw & in {text}"
                );
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn percentile_chart_is_well_formed() {
        let mut fast = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).unwrap();
        let mut slow = fast.clone();
        for i in 1..=1000u64 {
            fast.record(i * 1_000).unwrap();
            slow.record(i * 1_000_000).unwrap();
        }
        let empty = fast.clone();
        let mut empty = empty;
        empty.reset();
        let svg = percentile_chart(
            "before & after <loopback>",
            &[("before", &slow), ("after", &fast), ("none", &empty)],
        );
        assert_well_formed(&svg);
        assert!(svg.contains("before &amp; after &lt;loopback&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">p99.9<"));
    }

    #[test]
    fn by_concurrency_chart_is_well_formed() {
        let svg = by_concurrency_chart(
            "added latency",
            &[
                ("gateway p50".into(), vec![(1, 40.0), (64, 300.0)], false, 0),
                ("gateway p99".into(), vec![(1, 90.0), (64, -20.0)], true, 0),
            ],
        );
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains(">64<"));
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn over_time_chart_is_well_formed() {
        let points: Vec<(f64, f64)> = (0..=120).map(|i| (f64::from(i) * 5.0, 30.0)).collect();
        let svg = over_time_chart(
            "memory & time",
            "VmRSS (MB)",
            "VmRSS",
            &points,
            &[
                (200.0, "Redis killed".into(), 0),
                (205.0, "Redis back".into(), 3),
            ],
        );
        assert_well_formed(&svg);
        // The value line and one line per marker, each in the legend.
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains(">Redis killed<") && svg.contains(">600<"));
        assert_well_formed(&over_time_chart("empty", "MB", "none", &[], &[]));
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(13.0), 20.0);
        assert_eq!(nice_step(45.0), 50.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }
}
