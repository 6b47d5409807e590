//! Tables and findings as `profile` and `check` print them.

use std::io::Write;
use std::path::Path;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::compare::Finding;
use crate::config::model::Rules;
use crate::escape::escape;
use crate::profile::{ALL, ProfileSummary};

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => String::new(),
        Some(x) if x.abs() >= 1e6 || (x != 0.0 && x.abs() < 1e-3) => format!("{x:.4e}"),
        Some(x) => format!("{x:.4}"),
    }
}

pub(super) fn print_summary(
    out: &mut impl Write,
    s: &ProfileSummary,
    rules: &Rules,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "dataset {}: {} rows in {} batch(es)",
        s.dataset, s.rows, s.batches
    )?;
    let mut names: Vec<&String> = s.slices.keys().collect();
    names.sort_by_key(|n| (n.as_str() != ALL, rules.trust.rank(n), n.to_string()));
    for name in names {
        let slice = &s.slices[name];
        let labels: Vec<String> = slice
            .label_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        // trust tags, labels, column names and values come from the data
        let line = format!(
            "slice {name}: {} rows; labels {{{}}}; duplicate share {:.2}%",
            slice.rows,
            labels.join(", "),
            slice.duplicate_share * 100.0
        );
        writeln!(out, "\n{}", escape(&line))?;
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header([
            "column", "count", "nulls", "missing", "min", "max", "mean", "stddev", "distinct",
            "top",
        ]);
        for (col, c) in &slice.columns {
            let top = c
                .top
                .as_ref()
                .map(|t| {
                    t.iter()
                        .map(|v| format!("{} ({})", escape(&v.value), v.count))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            t.add_row([
                escape(col).into_owned(),
                c.count.to_string(),
                c.nulls.to_string(),
                format!("{:.2}%", c.missing_rate * 100.0),
                fmt_num(c.min),
                fmt_num(c.max),
                fmt_num(c.mean),
                fmt_num(c.stddev),
                c.distinct_estimate
                    .map(|d| format!("{d:.0}"))
                    .unwrap_or_default(),
                top,
            ]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

pub(super) fn print_findings(
    out: &mut impl Write,
    file: &Path,
    findings: &[Finding],
) -> anyhow::Result<()> {
    // file names, columns, trust tags and the values in messages are untrusted
    let name = file.display().to_string();
    let name = escape(&name);
    if findings.is_empty() {
        writeln!(out, "{name}: no findings")?;
        return Ok(());
    }
    writeln!(out, "{name}: {} finding(s)", findings.len())?;
    for f in findings {
        let line = format!(
            "  [{}] {} {} {} {}: {}",
            f.severity.as_str(),
            f.check,
            f.column.as_deref().unwrap_or("-"),
            f.trust_tag,
            f.verdict.as_str(),
            f.message
        );
        writeln!(out, "{}", escape(&line))?;
    }
    Ok(())
}
