//! Arrow arrays in the shapes the profiler reads: any numeric, temporal or
//! boolean column as `f64`, any string column as a dictionary of Utf8
//! values with `i32` keys, and every row's hash for duplicate detection.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, PrimitiveArray,
    StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use foldhash::fast::FixedState;

use super::FastMap;

/// Any numeric, temporal or boolean array as f64 (timestamps as epoch microseconds).
pub(super) fn to_f64(array: &ArrayRef) -> Result<Float64Array, String> {
    let dt = array.data_type();
    // the common integer types in one vectorized pass each (arrow's cast
    // checks every value for a lossless conversion it does not need here,
    // and a timestamp went through three casts)
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
    match dt {
        DataType::Int64 => {
            return Ok(array
                .as_primitive::<Int64Type>()
                .unary::<_, Float64Type>(|v| v as f64));
        }
        DataType::Int32 => {
            return Ok(array
                .as_primitive::<Int32Type>()
                .unary::<_, Float64Type>(f64::from));
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            return Ok(array
                .as_primitive::<TimestampMicrosecondType>()
                .unary::<_, Float64Type>(|v| v as f64));
        }
        _ => {}
    }
    let arr: ArrayRef = match dt {
        DataType::Float64 => array.clone(),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            // other units and dates as microseconds, then the pass above
            let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())?;
            return to_f64(&micros);
        }
        DataType::Dictionary(_, _) => {
            let plain = cast(array, dict_value_type(dt)).map_err(|e| e.to_string())?;
            return to_f64(&plain);
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            return Err(format!(
                "it holds text ({dt}); declare it `kind: categorical` or `kind: text`"
            ));
        }
        _ => cast(array, &DataType::Float64).map_err(|e| e.to_string())?,
    };
    Ok(arr.as_primitive::<arrow::datatypes::Float64Type>().clone())
}

fn dict_value_type(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, v) => v,
        other => other,
    }
}

/// Any array as a dictionary of Utf8 values with i32 keys (dictionaries are
/// re-keyed without touching rows; plain strings are interned once).
pub(super) fn to_dictionary(array: &ArrayRef) -> Result<DictionaryArray<Int32Type>, String> {
    match array.data_type() {
        DataType::Dictionary(k, v) if **v == DataType::Utf8 => match **k {
            DataType::Int32 => Ok(array.as_dictionary::<Int32Type>().clone()),
            DataType::Int8 => rekey(array.as_dictionary::<Int8Type>()),
            DataType::Int16 => rekey(array.as_dictionary::<Int16Type>()),
            DataType::Int64 => rekey(array.as_dictionary::<Int64Type>()),
            DataType::UInt8 => rekey(array.as_dictionary::<UInt8Type>()),
            DataType::UInt16 => rekey(array.as_dictionary::<UInt16Type>()),
            DataType::UInt32 => rekey(array.as_dictionary::<UInt32Type>()),
            DataType::UInt64 => rekey(array.as_dictionary::<UInt64Type>()),
            _ => Err(format!("unsupported dictionary key type {k}")),
        },
        DataType::Utf8 => Ok(intern(array.as_string::<i32>().iter())),
        DataType::LargeUtf8 => Ok(intern(array.as_string::<i64>().iter())),
        DataType::Utf8View => Ok(intern(array.as_string_view().iter())),
        _ => {
            let text = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
            Ok(intern(text.as_string::<i32>().iter()))
        }
    }
}

fn rekey<K: ArrowDictionaryKeyType>(
    d: &DictionaryArray<K>,
) -> Result<DictionaryArray<Int32Type>, String>
where
    K::Native: TryInto<i32>,
{
    let keys: PrimitiveArray<Int32Type> = d
        .keys()
        .iter()
        .map(|k| k.and_then(|k| k.try_into().ok()))
        .collect();
    let values = cast(d.values(), &DataType::Utf8).map_err(|e| e.to_string())?;
    DictionaryArray::try_new(keys, values).map_err(|e| e.to_string())
}

/// Build a dictionary from a string iterator with a deterministic hash map.
fn intern<'a>(iter: impl Iterator<Item = Option<&'a str>>) -> DictionaryArray<Int32Type> {
    let (lower, _) = iter.size_hint();
    let mut index: FastMap<&'a str, i32> =
        FastMap::with_capacity_and_hasher(lower, FixedState::default());
    let mut values: Vec<&'a str> = Vec::new();
    let keys: PrimitiveArray<Int32Type> = iter
        .map(|v| {
            v.map(|s| {
                *index.entry(s).or_insert_with(|| {
                    values.push(s);
                    (values.len() - 1) as i32
                })
            })
        })
        .collect();
    let values = StringArray::from(values);
    DictionaryArray::try_new(keys, std::sync::Arc::new(values)).expect("keys index values")
}

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x5851_F42D_4C95_7F2D)
}

/// The hash a null value folds into a row's hash.
pub(super) const NULL_HASH: u64 = 0xA5A5_5A5A_0F0F_F0F0;

/// The one hash of a string value (xxh3, 64 bits, seed 0; stable across
/// platforms and versions of the crate). The duplicate-row hash, the
/// counting of text values and the distinct-count sketch all take it, so
/// profiling hashes each string once.
#[inline]
pub(super) fn value_hash(s: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(s.as_bytes())
}

/// Fold precomputed value hashes (one per row) into the row hashes.
pub(super) fn fold_hashes(hashes: &[u64], row_hash: &mut [u64]) {
    for (h, &v) in row_hash.iter_mut().zip(hashes) {
        *h = mix(*h, v);
    }
}

/// Fold one column into the per-row hashes used for duplicate detection.
pub(super) fn hash_column(array: &ArrayRef, row_hash: &mut [u64]) {
    const NULL: u64 = NULL_HASH;
    fn prim<T: ArrowPrimitiveType>(
        a: &PrimitiveArray<T>,
        out: &mut [u64],
        f: impl Fn(T::Native) -> u64,
    ) {
        match a.nulls() {
            None => {
                for (h, &v) in out.iter_mut().zip(a.values().iter()) {
                    *h = mix(*h, f(v));
                }
            }
            Some(n) => {
                for (i, (h, &v)) in out.iter_mut().zip(a.values().iter()).enumerate() {
                    *h = mix(*h, if n.is_valid(i) { f(v) } else { NULL });
                }
            }
        }
    }
    fn strs<'a>(it: impl Iterator<Item = Option<&'a str>>, out: &mut [u64]) {
        for (h, v) in out.iter_mut().zip(it) {
            let x = match v {
                Some(s) => value_hash(s),
                None => NULL,
            };
            *h = mix(*h, x);
        }
    }
    use arrow::datatypes as t;
    match array.data_type() {
        DataType::Int8 => prim(array.as_primitive::<t::Int8Type>(), row_hash, |v| v as u64),
        DataType::Int16 => prim(array.as_primitive::<t::Int16Type>(), row_hash, |v| v as u64),
        DataType::Int32 => prim(array.as_primitive::<t::Int32Type>(), row_hash, |v| v as u64),
        DataType::Int64 => prim(array.as_primitive::<t::Int64Type>(), row_hash, |v| v as u64),
        DataType::UInt8 => prim(array.as_primitive::<t::UInt8Type>(), row_hash, |v| v as u64),
        DataType::UInt16 => prim(array.as_primitive::<t::UInt16Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::UInt32 => prim(array.as_primitive::<t::UInt32Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::UInt64 => prim(array.as_primitive::<t::UInt64Type>(), row_hash, |v| v),
        DataType::Float32 => prim(array.as_primitive::<t::Float32Type>(), row_hash, |v| {
            v.to_bits() as u64
        }),
        DataType::Float64 => prim(array.as_primitive::<t::Float64Type>(), row_hash, |v| {
            v.to_bits()
        }),
        DataType::Date32 => prim(array.as_primitive::<t::Date32Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::Date64 => prim(array.as_primitive::<t::Date64Type>(), row_hash, |v| {
            v as u64
        }),
        DataType::Timestamp(TimeUnit::Second, _) => prim(
            array.as_primitive::<t::TimestampSecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => prim(
            array.as_primitive::<t::TimestampMillisecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => prim(
            array.as_primitive::<t::TimestampMicrosecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => prim(
            array.as_primitive::<t::TimestampNanosecondType>(),
            row_hash,
            |v| v as u64,
        ),
        DataType::Boolean => {
            let b: &BooleanArray = array.as_boolean();
            for (h, v) in row_hash.iter_mut().zip(b.iter()) {
                *h = mix(*h, v.map(|v| v as u64 + 1).unwrap_or(NULL));
            }
        }
        DataType::Utf8 => strs(array.as_string::<i32>().iter(), row_hash),
        DataType::LargeUtf8 => strs(array.as_string::<i64>().iter(), row_hash),
        DataType::Utf8View => strs(array.as_string_view().iter(), row_hash),
        DataType::Dictionary(_, _) => {
            if let Ok(dict) = to_dictionary(array) {
                let values = dict.values().as_string::<i32>();
                let hashes: Vec<u64> = (0..values.len())
                    .map(|k| {
                        if values.is_null(k) {
                            NULL
                        } else {
                            value_hash(values.value(k))
                        }
                    })
                    .collect();
                let keys = dict.keys();
                if keys.null_count() == 0 {
                    for (h, &k) in row_hash.iter_mut().zip(keys.values()) {
                        *h = mix(*h, hashes[k as usize]);
                    }
                } else {
                    for (h, k) in row_hash.iter_mut().zip(keys.iter()) {
                        *h = mix(*h, k.map(|k| hashes[k as usize]).unwrap_or(NULL));
                    }
                }
            }
        }
        _ => {
            if let Ok(text) = cast(array, &DataType::Utf8) {
                strs(text.as_string::<i32>().iter(), row_hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, TimestampMicrosecondArray};

    use super::*;

    /// The one-pass conversions give arrow's cast's values and nulls
    /// (extremes included: `i64` beyond 2^53 rounds the same way).
    #[test]
    fn fast_conversions_are_arrows_casts() {
        let big = [
            Some(i64::MIN),
            None,
            Some(-3),
            Some(0),
            Some((1 << 53) + 1),
            Some(i64::MAX),
        ];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(big.to_vec())),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                None,
                Some(7),
                Some(i32::MAX),
            ])),
            Arc::new(TimestampMicrosecondArray::from(big.to_vec()).with_timezone("UTC")),
        ];
        for array in arrays {
            let fast = to_f64(&array).unwrap();
            let ints = cast(&array, &DataType::Int64).unwrap();
            let slow = cast(&ints, &DataType::Float64).unwrap();
            let slow = slow.as_primitive::<arrow::datatypes::Float64Type>();
            assert_eq!(fast.nulls(), slow.nulls(), "{}", array.data_type());
            for i in 0..fast.len() {
                if fast.is_valid(i) {
                    assert_eq!(fast.value(i).to_bits(), slow.value(i).to_bits());
                }
            }
        }
    }
}
