//! Walking `thresholds:`, `sketch:` and `limits:`.

use serde_yaml::Value;

use super::{
    Bound, Fields, LIMIT_KEYS, Limits, SKETCH_KEYS, SketchParams, THRESHOLD_KEYS, Thresholds,
    Walker,
};

impl Walker {
    pub(super) fn thresholds(&mut self, path: &str, v: &Value) -> Thresholds {
        let mut t = Thresholds::default();
        let Some(m) = self.map(
            path,
            v,
            "`thresholds: { false_alarms_per_1000_batches: 2 }`",
        ) else {
            return t;
        };
        let mut f = Fields::new(path, m, THRESHOLD_KEYS);
        for old in ["fdr", "k_sigma"] {
            if let Some((p, _)) = f.get(old) {
                self.problem(
                    &p,
                    format!(
                        "`{old}` is gone: decisions now follow a false-alarm budget; write e.g. `false_alarms_per_1000_batches: 2` (how many clean batches in 1,000 may raise a finding)."
                    ),
                );
            }
        }
        if let Some((p, v)) = f.get("false_alarms_per_1000_batches")
            && let Some(x) = self.real(&p, v, Bound::Positive, "`false_alarms_per_1000_batches: 2`")
        {
            if x >= 1000.0 {
                self.problem(
                    &p,
                    format!(
                        "a budget of {x} false alarms per 1,000 batches would alarm on every batch; write a number below 1000, e.g. `false_alarms_per_1000_batches: 2`."
                    ),
                );
            } else {
                t.false_alarms_per_1000_batches = x;
            }
        }
        let reals: [(&str, Bound, &mut f64); 12] = [
            (
                "row_count_min_rel_change",
                Bound::NonNegative,
                &mut t.row_count_min_rel_change,
            ),
            (
                "tag_share_min_abs_change",
                Bound::Unit,
                &mut t.tag_share_min_abs_change,
            ),
            (
                "missing_min_abs_change",
                Bound::Unit,
                &mut t.missing_min_abs_change,
            ),
            (
                "range_min_share_outside",
                Bound::Unit,
                &mut t.range_min_share_outside,
            ),
            ("psi", Bound::NonNegative, &mut t.psi),
            ("js", Bound::Unit, &mut t.js),
            ("top_min_share", Bound::Unit, &mut t.top_min_share),
            ("rare_share", Bound::Unit, &mut t.rare_share),
            (
                "label_min_abs_change",
                Bound::Unit,
                &mut t.label_min_abs_change,
            ),
            ("unseen_min_share", Bound::Unit, &mut t.unseen_min_share),
            (
                "duplicate_min_share",
                Bound::Unit,
                &mut t.duplicate_min_share,
            ),
            (
                "malformed_max_share",
                Bound::Unit,
                &mut t.malformed_max_share,
            ),
        ];
        for (key, bound, slot) in reals {
            if let Some((p, v)) = f.get(key) {
                let example = format!("`{key}: {}`", *slot);
                if let Some(x) = self.real(&p, v, bound, &example) {
                    *slot = x;
                }
            }
        }
        if let Some((p, v)) = f.get("range_quantiles")
            && let Some((lo, hi)) = self.pair(&p, v, "`range_quantiles: [0.001, 0.999]`")
        {
            if lo < 0.0 || hi > 1.0 {
                self.problem(
                    &p,
                    format!(
                        "quantiles must lie between 0 and 1, found [{lo}, {hi}]; write e.g. `range_quantiles: [0.001, 0.999]`."
                    ),
                );
            } else {
                t.range_quantiles = (lo, hi);
            }
        }
        let max = usize::MAX as u64;
        if let Some((p, v)) = f.get("psi_bins")
            && let Some(n) = self.whole(&p, v, 2, max, "`psi_bins: 10`")
        {
            t.psi_bins = n as usize;
        }
        if let Some((p, v)) = f.get("top_k")
            && let Some(n) = self.whole(&p, v, 1, max, "`top_k: 10`")
        {
            t.top_k = n as usize;
        }
        if let Some((p, v)) = f.get("min_slice_rows")
            && let Some(n) = self.whole(&p, v, 1, u64::MAX, "`min_slice_rows: 200`")
        {
            t.min_slice_rows = n;
        }
        if let Some((p, v)) = f.get("min_slice_value_rows")
            && let Some(n) = self.whole(&p, v, 1, u64::MAX, "`min_slice_value_rows: 50`")
        {
            t.min_slice_value_rows = n;
        }
        if let Some((p, v)) = f.get("max_findings_per_batch")
            && let Some(n) = self.whole(&p, v, 1, 100_000, "`max_findings_per_batch: 50`")
        {
            t.max_findings_per_batch = n as usize;
        }
        f.finish(self);
        t
    }

    pub(super) fn sketch(&mut self, path: &str, v: &Value) -> SketchParams {
        let mut s = SketchParams::default();
        let Some(m) = self.map(path, v, "`sketch: { tdigest_k: 100 }`") else {
            return s;
        };
        let mut f = Fields::new(path, m, SKETCH_KEYS);
        if let Some((p, v)) = f.get("tdigest_k")
            && let Some(n) = self.whole(&p, v, 10, u16::MAX.into(), "`tdigest_k: 100`")
        {
            s.tdigest_k = n as u16;
        }
        if let Some((p, v)) = f.get("hll_lg_k")
            && let Some(n) = self.whole(&p, v, 4, 21, "`hll_lg_k: 12`")
        {
            s.hll_lg_k = n as u8;
        }
        if let Some((p, v)) = f.get("frequent_items_map")
            && let Some(n) = self.whole(&p, v, 8, 1 << 40, "`frequent_items_map: 1024`")
        {
            if n.is_power_of_two() {
                s.frequent_items_map = n as usize;
            } else {
                let up = n.next_power_of_two();
                let down = up / 2;
                let near = if n - down <= up - n { down } else { up };
                self.problem(
                    &p,
                    format!(
                        "the frequent-items map size must be a power of two (8, 16, 32, ...), found {n}; write `frequent_items_map: {near}` instead."
                    ),
                );
            }
        }
        f.finish(self);
        s
    }

    pub(super) fn limits(&mut self, path: &str, v: &Value) -> Limits {
        let mut l = Limits::default();
        let Some(m) = self.map(path, v, "`limits: { max_rows: 100000000 }`") else {
            return l;
        };
        let mut f = Fields::new(path, m, LIMIT_KEYS);
        if let Some((p, v)) = f.get("max_file_bytes")
            && let Some(n) = self.whole(&p, v, 1, u64::MAX, "`max_file_bytes: 2147483648`")
        {
            l.max_file_bytes = n;
        }
        if let Some((p, v)) = f.get("max_rows")
            && let Some(n) = self.whole(&p, v, 1, u64::MAX, "`max_rows: 100000000`")
        {
            l.max_rows = n;
        }
        if let Some((p, v)) = f.get("max_string_len")
            && let Some(n) = self.whole(&p, v, 1, usize::MAX as u64, "`max_string_len: 65536`")
        {
            l.max_string_len = n as usize;
        }
        f.finish(self);
        l
    }
}
