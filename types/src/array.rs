//! An array job's indices as Slurm and HyperQueue write them: `1-100`, `1,3,5-9:2`.
//!
//! Kept as runs, not expanded: `0-9999999` is one run, and the task at an offset (or
//! the offset of an index) is found by a binary search over the runs.

use std::fmt;
use std::str::FromStr;

/// The most runs one array may list (`1,3,5,...`).
pub const MAX_RUNS: usize = 10_000;

/// Indices `first`, `first + step`, ... up to `last`, which is one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: u32,
    pub last: u32,
    pub step: u32,
}

impl Run {
    fn len(&self) -> u64 {
        u64::from((self.last - self.first) / self.step) + 1
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first == self.last, self.step) {
            (true, _) => write!(f, "{}", self.first),
            (false, 1) => write!(f, "{}-{}", self.first, self.last),
            (false, step) => write!(f, "{}-{}:{step}", self.first, self.last),
        }
    }
}

/// An array's indices: runs in increasing order, none overlapping another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indices {
    runs: Vec<Run>,
    /// How many indices come before each run.
    before: Vec<u64>,
}

impl Indices {
    /// `first..=last`, every index.
    pub fn range(first: u32, last: u32) -> Self {
        let (first, last) = (first.min(last), first.max(last));
        Indices { runs: vec![Run { first, last, step: 1 }], before: vec![0] }
    }

    /// The runs given, in increasing order; refused (with the reason) when one has a
    /// step of 0 or is reversed, when two overlap, or when there are none or too many.
    /// A run's `last` that its step does not reach is brought down to one it does.
    pub fn new(mut runs: Vec<Run>) -> Result<Self, String> {
        if runs.is_empty() {
            return Err("no indices given".into());
        }
        if runs.len() > MAX_RUNS {
            return Err(format!("{} runs is more than the {MAX_RUNS} an array may list", runs.len()));
        }
        for run in &mut runs {
            if run.step == 0 {
                return Err(format!("'{}-{}:0': the step must be at least 1", run.first, run.last));
            }
            if run.first > run.last {
                return Err(format!("'{}-{}' is reversed: the start must not be after the end", run.first, run.last));
            }
            run.last -= (run.last - run.first) % run.step;
            if run.first == run.last {
                run.step = 1;
            }
        }
        runs.sort_by_key(|r| r.first);
        let mut before = Vec::with_capacity(runs.len());
        let mut count = 0u64;
        for (i, run) in runs.iter().enumerate() {
            if let Some(prev) = i.checked_sub(1).map(|p| runs[p]) {
                if run.first <= prev.last {
                    return Err(format!("'{run}' overlaps '{prev}': each index may be listed once"));
                }
            }
            before.push(count);
            count += run.len();
        }
        Ok(Indices { runs, before })
    }

    /// How many indices there are.
    pub fn len(&self) -> u64 {
        self.before.last().copied().unwrap_or(0) + self.runs.last().map_or(0, Run::len)
    }

    /// Never: an array has at least one index.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The smallest index.
    pub fn first(&self) -> u32 {
        self.runs.first().map_or(0, |r| r.first)
    }

    /// The largest index.
    pub fn last(&self) -> u32 {
        self.runs.last().map_or(0, |r| r.last)
    }

    /// Every index from `first()` to `last()`, with no gaps.
    pub fn is_range(&self) -> bool {
        matches!(self.runs.as_slice(), [run] if run.step == 1)
    }

    /// The index at `offset` (0 for the first).
    pub fn at(&self, offset: u64) -> Option<u32> {
        let i = self.before.partition_point(|&b| b <= offset).checked_sub(1)?;
        let run = self.runs[i];
        let k = offset - self.before[i];
        (k < run.len()).then(|| run.first + (k as u32) * run.step)
    }

    /// The offset of `index`, if it is one of them.
    pub fn offset_of(&self, index: u32) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.first <= index).checked_sub(1)?;
        let run = self.runs[i];
        let k = index - run.first;
        (index <= run.last && k.is_multiple_of(run.step)).then(|| self.before[i] + u64::from(k / run.step))
    }

    /// Every index, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs.iter().flat_map(|r| (r.first..=r.last).step_by(r.step as usize))
    }
}

impl fmt::Display for Indices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, run) in self.runs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{run}")?;
        }
        Ok(())
    }
}

/// `1-100`, `7`, `1,3,5-9:2`.
impl FromStr for Indices {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |n: &str| {
            n.trim().parse::<u32>().map_err(|_| match n == s {
                true => format!(
                    "'{}' is not an array: expected A-B (e.g. 1-100) or a list (e.g. 1,3,5-9:2)",
                    crate::shown(s)
                ),
                false => format!("'{}' in '{}' is not a whole number ≥ 0", crate::shown(n), crate::shown(s)),
            })
        };
        let mut runs = Vec::new();
        for part in s.split(',') {
            if runs.len() == MAX_RUNS {
                return Err(format!("'{}' lists more than the {MAX_RUNS} runs an array may have", crate::shown(s)));
            }
            let (range, step) = match part.split_once(':') {
                Some((range, step)) => (range, number(step)?),
                None => (part, 1),
            };
            let run = match range.split_once('-') {
                Some((a, b)) => Run { first: number(a)?, last: number(b)?, step },
                None if step == 1 => {
                    let n = number(range)?;
                    Run { first: n, last: n, step: 1 }
                }
                None => return Err(format!("'{}': a step needs a range (A-B:STEP)", crate::shown(part))),
            };
            runs.push(run);
        }
        Indices::new(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Indices {
        s.parse().unwrap()
    }

    #[test]
    fn lists_ranges_and_steps_read_and_print_the_same() {
        for text in ["1-100", "7", "1,3,5-9:2", "0-999999", "2-20:3,40"] {
            assert_eq!(parse(text).to_string(), text);
        }
        assert_eq!(parse("5-9:2,1,3").to_string(), "1,3,5-9:2");
        assert_eq!(parse("1-10:3").to_string(), "1-10:3");
        assert_eq!(parse("1-11:3").to_string(), "1-10:3", "a last index the step misses is dropped");
        assert_eq!(parse("4-5:2").to_string(), "4");
    }

    #[test]
    fn offsets_and_indices_map_both_ways() {
        let a = parse("1,3,5-9:2,20-22");
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 3, 5, 7, 9, 20, 21, 22]);
        assert_eq!(a.len(), 8);
        for (offset, index) in a.iter().enumerate() {
            assert_eq!(a.at(offset as u64), Some(index));
            assert_eq!(a.offset_of(index), Some(offset as u64));
        }
        for missing in [0, 2, 4, 6, 10, 19, 23, u32::MAX] {
            assert_eq!(a.offset_of(missing), None, "{missing}");
        }
        assert_eq!(a.at(8), None);
        assert_eq!((a.first(), a.last(), a.is_range()), (1, 22, false));
        assert!(parse("3-8").is_range());
        let big = parse("0-4294967295");
        assert_eq!(big.len(), 1 << 32);
        assert_eq!(big.at((1 << 32) - 1), Some(u32::MAX));
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Indices>().unwrap_err();
        assert!(err("10-1").contains("reversed"), "{}", err("10-1"));
        assert!(err("1-9:0").contains("step must be at least 1"));
        assert!(err("1-9,5").contains("overlaps"), "{}", err("1-9,5"));
        assert!(err("3,3").contains("overlaps"));
        assert!(err("a-3").contains("'a'"));
        assert!(err("1,,2").contains("''"));
        assert!(err("5:2").contains("needs a range"));
        assert!(err("1..5").contains("expected A-B"), "{}", err("1..5"));
        let many = (0..=MAX_RUNS).map(|i| (i * 2).to_string()).collect::<Vec<_>>().join(",");
        assert!(err(&many).contains("more than"));
    }
}
