//! The packed `data` column: a row's series in a few bytes each, decoded defensively (a short or
//! malformed blob is an error, never a panic).
//!
//! Layout: a tag byte (1 raw, 2 rollup); a label table (`u8` count, then `u8` length + UTF-8
//! bytes each); a `u16` LE series count; then per series the metric code (`u8`) and label index
//! (`u8`), followed by the value (`f64` LE) for raw rows, or by count (`u32`), min, max, sum,
//! last (`f64`) and the time of last (`i64`) for rollups. Raw rows cost 10 bytes per series.

use super::{Agg, Point};
use crate::error::{Result, StoreError};

const RAW: u8 = 1;
const ROLLUP: u8 = 2;

fn labels_of<'a>(labels: impl Iterator<Item = &'a str>) -> Result<Vec<&'a str>> {
    let mut table: Vec<&str> = Vec::new();
    for label in labels {
        if !table.contains(&label) {
            if table.len() == usize::from(u8::MAX) || label.len() > usize::from(u8::MAX) {
                return Err(StoreError::Invalid(
                    "too many or too long metric labels".into(),
                ));
            }
            table.push(label);
        }
    }
    Ok(table)
}

fn header(tag: u8, table: &[&str], series: usize) -> Result<Vec<u8>> {
    let n = u16::try_from(series).map_err(|_| StoreError::Invalid("too many series".into()))?;
    let mut out = Vec::with_capacity(4 + series * 10);
    out.push(tag);
    out.push(table.len() as u8);
    for label in table {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.extend_from_slice(&n.to_le_bytes());
    Ok(out)
}

fn index(table: &[&str], label: &str) -> u8 {
    table.iter().position(|l| *l == label).unwrap_or(0) as u8
}

pub(crate) fn encode_raw(points: &[Point]) -> Result<Vec<u8>> {
    let table = labels_of(points.iter().map(|p| p.label.as_str()))?;
    let mut out = header(RAW, &table, points.len())?;
    for p in points {
        out.push(p.code);
        out.push(index(&table, &p.label));
        out.extend_from_slice(&p.value.to_le_bytes());
    }
    Ok(out)
}

pub(crate) fn encode_rollup(series: &[Agg]) -> Result<Vec<u8>> {
    let table = labels_of(series.iter().map(|a| a.label.as_str()))?;
    let mut out = header(ROLLUP, &table, series.len())?;
    for a in series {
        out.push(a.code);
        out.push(index(&table, &a.label));
        out.extend_from_slice(&(a.count.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        for v in [a.min, a.max, a.sum, a.last] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&a.last_at.to_le_bytes());
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(StoreError::Invalid("truncated metrics row".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.arr()?))
    }
}

/// Decodes either kind of row into aggregates; a raw value becomes a count of one at `at_ms`.
pub(crate) fn decode(bytes: &[u8], at_ms: i64) -> Result<Vec<Agg>> {
    let mut r = Reader(bytes);
    let tag = r.u8()?;
    if tag != RAW && tag != ROLLUP {
        return Err(StoreError::Invalid(format!(
            "unknown metrics row tag {tag}"
        )));
    }
    let n_labels = r.u8()?;
    let mut table = Vec::with_capacity(usize::from(n_labels));
    for _ in 0..n_labels {
        let len = r.u8()?;
        let text = std::str::from_utf8(r.take(usize::from(len))?)
            .map_err(|_| StoreError::Invalid("metrics label is not UTF-8".into()))?;
        table.push(text);
    }
    let n = u16::from_le_bytes(r.arr()?);
    let per = if tag == RAW { 10 } else { 2 + 4 + 40 };
    if r.0.len() < usize::from(n) * per {
        return Err(StoreError::Invalid("truncated metrics row".into()));
    }
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let code = r.u8()?;
        let label = table
            .get(usize::from(r.u8()?))
            .copied()
            .unwrap_or_default()
            .to_string();
        if tag == RAW {
            let value = r.f64()?;
            out.push(Agg::of(&Point { code, label, value }, at_ms));
        } else {
            let count = u64::from(u32::from_le_bytes(r.arr()?));
            let (min, max, sum, last) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
            let last_at = i64::from_le_bytes(r.arr()?);
            out.push(Agg {
                code,
                label,
                count,
                min,
                max,
                sum,
                last,
                last_at,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_garbage_is_an_error() {
        let points = vec![
            Point {
                code: 0,
                label: String::new(),
                value: 12.5,
            },
            Point {
                code: 9,
                label: "/".into(),
                value: 1e12,
            },
            Point {
                code: 9,
                label: "/boot".into(),
                value: 3.0,
            },
            Point {
                code: 12,
                label: "eth0".into(),
                value: 7.0,
            },
        ];
        let raw = encode_raw(&points).unwrap();
        let aggs = decode(&raw, 5).unwrap();
        assert_eq!(aggs.len(), 4);
        assert_eq!(aggs[2].label, "/boot");
        assert_eq!(aggs[1].last, 1e12);
        assert_eq!(aggs[3].last_at, 5);
        assert_eq!(decode(&encode_rollup(&aggs).unwrap(), 0).unwrap(), aggs);
        for cut in 0..raw.len() {
            assert!(decode(&raw[..cut], 0).is_err(), "cut at {cut}");
        }
        assert!(decode(&[7, 0, 0, 0], 0).is_err());
    }
}
