//! Tests of the selected (unsorted) run digest against the crate's own
//! one-pass compression of the sorted run.

use datasketches::tdigest::TDigestMut;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::*;
use crate::profile::bins::order_key;

/// The crate's one compression pass over `sorted`: the values go in as
/// the buffered values of a serial image, and serializing compresses them
/// once (the path runs took before selection replaced the sort).
fn crate_one_pass(k: u16, sorted: &[f64]) -> Vec<u8> {
    let header = TDigestMut::new(10).unwrap().serialize();
    let mut bytes = vec![2u8, header[1], header[2]];
    bytes.extend_from_slice(&k.to_le_bytes());
    bytes.extend_from_slice(&[0, 0, 0]);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&sorted[0].to_le_bytes());
    bytes.extend_from_slice(&sorted[sorted.len() - 1].to_le_bytes());
    for v in sorted {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    TDigestMut::deserialize(&bytes).unwrap().serialize()
}

/// The centroids `(mean, weight)` of a serialized t-digest holding two or
/// more values.
fn centroids(image: &[u8]) -> Vec<(f64, u64)> {
    let count = u32::from_le_bytes(image[8..12].try_into().unwrap()) as usize;
    let at = 32;
    (0..count)
        .map(|i| {
            let c = &image[at + 16 * i..at + 16 * (i + 1)];
            (
                f64::from_le_bytes(c[..8].try_into().unwrap()),
                u64::from_le_bytes(c[8..].try_into().unwrap()),
            )
        })
        .collect()
}

/// The mean of sorted values, compensated (Neumaier) from the first.
fn exact_mean(sorted: &[f64]) -> f64 {
    let base = sorted[0];
    let (mut sum, mut carry) = (0.0f64, 0.0f64);
    for &v in sorted {
        let x = v - base;
        let t = sum + x;
        carry += if sum.abs() >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    base + (sum + carry) / sorted.len() as f64
}

fn image(q: &Quantiles) -> Vec<u8> {
    let json = serde_json::to_value(q).unwrap();
    base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        json.as_str().unwrap(),
    )
    .unwrap()
}

fn values(rng: &mut SmallRng, n: usize, shape: usize) -> Vec<f64> {
    (0..n)
        .map(|_| match shape {
            0 => rng.random_range(-1e3..1e3),
            1 => (rng.random_range(0.0f64..12.0)).exp(),
            2 => 1.7e18 + rng.random_range(0.0..8.64e13f64).floor(),
            _ => f64::from(rng.random_range(0..4u8)), // heavy ties
        })
        .collect()
}

/// For every length and k, the clusters are the crate's: the same weights
/// in the same order as its one pass over the sorted run; each mean as
/// close to the cluster's exact mean as the crate's or within 1e-12 of
/// the cluster's spread, plus two units in the last place (the crate
/// averages by interpolating value by value, so far from zero it drifts
/// by several units; the sum here rounds relative to the spread); the
/// same extremes.
#[test]
fn clusters_are_the_crates_one_pass_over_the_sorted_run() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut buffers = RunBuffers::default();
    let mut checked = 0;
    for k in [10u16, 100, 200] {
        for n in [
            2usize, 3, 5, 50, 51, 101, 999, 2_000, 8_192, 16_383, 16_384, 40_000,
        ] {
            for shape in 0..4 {
                let vals = values(&mut rng, n, shape);
                let mut sorted = vals.clone();
                sorted.sort_by(f64::total_cmp);
                let want = centroids(&crate_one_pass(k, &sorted));
                let mut keys: Vec<u64> = vals.iter().map(|&v| order_key(v)).collect();
                let got_q = digest_of_keys(&mut keys, k, &mut buffers);
                let got = centroids(&image(&got_q));
                assert_eq!(got.len(), want.len(), "k {k}, n {n}, shape {shape}");
                let mut start = 0;
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.1, w.1, "k {k}, n {n}, shape {shape}: weight {i}");
                    let cluster = &sorted[start..start + g.1 as usize];
                    start += g.1 as usize;
                    let exact = exact_mean(cluster);
                    let ulp = f64::EPSILON * exact.abs().max(f64::MIN_POSITIVE);
                    let spread = cluster[cluster.len() - 1] - cluster[0];
                    assert!(
                        (g.0 - exact).abs() <= (w.0 - exact).abs().max(1e-12 * spread) + 2.0 * ulp,
                        "k {k}, n {n}, shape {shape}: mean {i}: {} vs the crate's {}, exactly {exact}",
                        g.0,
                        w.0
                    );
                }
                assert_eq!(got_q.quantile(0.0), Some(sorted[0]));
                assert_eq!(got_q.quantile(1.0), Some(sorted[n - 1]));
                assert_eq!(got_q.weight(), n as u64);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 12 * 4);
}

/// After `partition_at`, each segment between cuts holds exactly the keys
/// of those ranks, for random cuts and lengths (both sides of the bucket
/// threshold), heavy ties, and one outlier far from the rest.
#[test]
fn partition_at_separates_every_cut() {
    let mut rng = SmallRng::seed_from_u64(3);
    for round in 0..240 {
        let n = rng.random_range(2..if round % 2 == 0 { 2_000 } else { 40_000 });
        let spread = if round % 3 == 0 { 8 } else { u64::MAX };
        let mut keys: Vec<u64> = (0..n).map(|_| rng.random_range(0..spread)).collect();
        if round % 5 == 0 {
            keys[n / 2] = u64::MAX - 1;
            for k in &mut keys[..n / 2] {
                *k >>= 40;
            }
        }
        let mut cuts: Vec<usize> = (0..rng.random_range(0..60))
            .map(|_| rng.random_range(1..n))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        partition_at(&mut keys, 0, &cuts, &mut Vec::new());
        let mut bounds = vec![0];
        bounds.extend(&cuts);
        bounds.push(n);
        for w in bounds.windows(2) {
            let mut segment = keys[w[0]..w[1]].to_vec();
            segment.sort_unstable();
            assert_eq!(segment, sorted[w[0]..w[1]], "round {round}: segment {w:?}");
        }
    }
}

/// The same run in the same order gives the same bytes; a run of one
/// value, of equal values, and of values far from zero stay exact at the
/// extremes and read back unchanged.
#[test]
fn run_digests_are_deterministic_and_read_back() {
    let mut buffers = RunBuffers::default();
    let mut rng = SmallRng::seed_from_u64(11);
    for vals in [
        vec![4.5],
        vec![2.0; 10_000],
        values(&mut rng, 16_384, 2),
        values(&mut rng, 777, 3),
    ] {
        let keys: Vec<u64> = vals.iter().map(|&v| order_key(v)).collect();
        let a = digest_of_keys(&mut keys.clone(), 100, &mut buffers);
        let b = digest_of_keys(&mut keys.clone(), 100, &mut RunBuffers::default());
        assert_eq!(image(&a), image(&b));
        let back: Quantiles = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(image(&back), image(&a));
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(a.quantile(0.0), Some(lo));
        assert_eq!(a.quantile(1.0), Some(hi));
    }
    assert_eq!(digest_of_keys(&mut [], 100, &mut buffers).weight(), 0);
}
