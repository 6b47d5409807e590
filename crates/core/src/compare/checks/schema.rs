//! Schema changes of the batch against the baseline (always batch level).

use super::{BatchProfile, Check, Finding, Severity, Verdict};

/// Columns named one by one in a schema finding; the rest are counted.
const SCHEMA_LISTED: usize = 10;
/// Characters of a column name quoted in a message (names are untrusted).
const NAME_CHARS: usize = 64;

/// Schema changes: one finding per kind of change (new, missing, retyped)
/// per batch, however many columns it concerns, so a batch with 5,000
/// unexpected columns raises one alert that lists ten of them and counts
/// the rest, not 5,000. A single column keeps the column's name in
/// `column` (routes and fingerprints match it); a group has none.
pub(in crate::compare) fn schema_findings(
    profile: &BatchProfile,
    reference: &BatchProfile,
) -> Vec<Finding> {
    let (mut new, mut retyped, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (col, ty) in &profile.schema {
        match reference.schema.get(col) {
            None => new.push((col.as_str(), "", ty.as_str())),
            Some(base) if !base.split(" | ").any(|b| b == ty) => {
                retyped.push((col.as_str(), base.as_str(), ty.as_str()))
            }
            _ => {}
        }
    }
    for (col, ty) in &reference.schema {
        if !profile.schema.contains_key(col) {
            missing.push((col.as_str(), ty.as_str(), ""));
        }
    }
    [
        (Check::SchemaNewColumn, new, Severity::Warning),
        (Check::SchemaRetypedColumn, retyped, Severity::Critical),
        (Check::SchemaMissingColumn, missing, Severity::Critical),
    ]
    .into_iter()
    .filter_map(|(check, cols, severity)| schema_group(check, &cols, severity))
    .collect()
}

fn schema_group(check: Check, cols: &[(&str, &str, &str)], severity: Severity) -> Option<Finding> {
    let name = |c: &str| -> String {
        if c.chars().count() > NAME_CHARS {
            format!("{}…", c.chars().take(NAME_CHARS).collect::<String>())
        } else {
            c.to_string()
        }
    };
    let one = |(col, base, obs): &(&str, &str, &str)| match check {
        Check::SchemaNewColumn => format!("`{}` ({obs})", name(col)),
        Check::SchemaMissingColumn => format!("`{}` ({base})", name(col)),
        _ => format!("`{}` from {base} to {obs}", name(col)),
    };
    let message = match cols {
        [] => return None,
        [(col, base, obs)] => match check {
            Check::SchemaNewColumn => {
                format!("new column `{}` ({obs}) is not in the baseline", name(col))
            }
            Check::SchemaMissingColumn => format!(
                "column `{}` ({base}) is in the baseline but missing from this batch",
                name(col)
            ),
            _ => format!("column `{}` changed type from {base} to {obs}", name(col)),
        },
        _ => {
            let listed: Vec<String> = cols.iter().take(SCHEMA_LISTED).map(one).collect();
            let more = match cols.len().saturating_sub(SCHEMA_LISTED) {
                0 => String::new(),
                k => format!(" and {k} more"),
            };
            let what = match check {
                Check::SchemaNewColumn => "new columns are not in the baseline",
                Check::SchemaMissingColumn => "columns of the baseline are missing from this batch",
                _ => "columns changed type",
            };
            format!("{} {what}: {}{more}", cols.len(), listed.join(", "))
        }
    };
    let mut f = Finding::batch_level(check, Verdict::DataQuality, severity, message);
    if let [(col, _, _)] = cols {
        f.column = Some(col.to_string());
    }
    let n = cols.len() as f64;
    (f.baseline_value, f.observed_value) = match check {
        Check::SchemaNewColumn => (0.0, n),
        Check::SchemaMissingColumn => (n, 0.0),
        _ => (n, n),
    };
    Some(f)
}
