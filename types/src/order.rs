//! The order a task wrote its stdout and stderr in, so that `task logs --both` can
//! show them interleaved as they came.
//!
//! The agent reads the task's two pipes and notes each stretch of bytes it kept
//! ([`Runs::push`]); the stretches alternate between the streams, so the record is
//! a list of lengths, stdout's first (a first length of 0 when stderr came first).
//! It is bounded: after [`MAX_RUNS`] stretches nothing more is noted, and what
//! follows is shown stdout first, then stderr, saying so ([`interleave`]).

/// The most stretches one attempt's record holds.
pub const MAX_RUNS: usize = 8192;

/// The order of one attempt's output so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    lengths: Vec<u64>,
    /// A stretch did not fit: nothing after it is noted.
    full: bool,
}

impl Runs {
    /// Notes `n` more bytes of stderr (or of stdout); nothing once full.
    pub fn push(&mut self, stderr: bool, n: u64) {
        if n == 0 || self.full {
            return;
        }
        let next_is_stderr = self.lengths.len() % 2 == 1;
        if let Some(last) = self.lengths.last_mut().filter(|_| next_is_stderr != stderr) {
            *last += n;
        } else if self.lengths.len() + 1 + usize::from(self.lengths.is_empty() && stderr) <= MAX_RUNS {
            if self.lengths.is_empty() && stderr {
                self.lengths.push(0);
            }
            self.lengths.push(n);
        } else {
            self.full = true;
        }
    }

    /// The lengths, alternately stdout's and stderr's, stdout's first.
    pub fn lengths(&self) -> &[u64] {
        &self.lengths
    }

    /// A record as received, if it is one: at most [`MAX_RUNS`] lengths, within
    /// what was written of each stream.
    pub fn checked(lengths: Vec<u64>, written: [u64; 2]) -> Option<Runs> {
        let mut sums = [0u64; 2];
        for (i, n) in lengths.iter().enumerate() {
            sums[i % 2] = sums[i % 2].checked_add(*n)?;
        }
        (lengths.len() <= MAX_RUNS && sums[0] <= written[0] && sums[1] <= written[1])
            .then_some(Runs { lengths, full: false })
    }

    /// As stored: the lengths in decimal, separated by spaces.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(self.lengths.len() * 4);
        for (i, n) in self.lengths.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&n.to_string());
        }
        text
    }

    /// From [`Runs::to_text`]; `None` if it is not that.
    pub fn from_text(text: &str) -> Option<Runs> {
        let lengths: Option<Vec<u64>> = text.split_ascii_whitespace().map(|n| n.parse().ok()).collect();
        lengths.filter(|l| l.len() <= MAX_RUNS).map(|lengths| Runs { lengths, full: false })
    }
}

/// A stretch of one stream, in the order shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    pub stderr: bool,
    pub data: &'a [u8],
    /// The first piece whose place was not recorded (all after it are too).
    pub unordered: bool,
}

/// `stdout` and `stderr` cut into the stretches `runs` records, in order; what the
/// record does not cover (past [`MAX_RUNS`], or a marker the coordinator added)
/// follows, stdout's then stderr's, the first of them `unordered` if both streams
/// have such a rest.
pub fn interleave<'a>(stdout: &'a [u8], stderr: &'a [u8], runs: &[u64]) -> Vec<Piece<'a>> {
    let streams = [stdout, stderr];
    let mut at = [0usize; 2];
    let mut pieces = Vec::with_capacity(runs.len() + 2);
    for (i, &n) in runs.iter().enumerate() {
        let s = i % 2;
        let end = at[s].saturating_add(usize::try_from(n).unwrap_or(usize::MAX)).min(streams[s].len());
        if end > at[s] {
            pieces.push(Piece { stderr: s == 1, data: &streams[s][at[s]..end], unordered: false });
        }
        at[s] = end;
    }
    let both_left = at[0] < stdout.len() && at[1] < stderr.len();
    for s in 0..2 {
        if at[s] < streams[s].len() {
            let first = both_left && s == 0;
            pieces.push(Piece { stderr: s == 1, data: &streams[s][at[s]..], unordered: first });
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(pushes: &[(bool, u64)]) -> Vec<u64> {
        let mut r = Runs::default();
        for &(stderr, n) in pushes {
            r.push(stderr, n);
        }
        r.lengths().to_vec()
    }

    #[test]
    fn stretches_of_one_stream_merge_and_stderr_first_starts_with_zero() {
        assert_eq!(runs(&[(false, 3), (false, 4), (true, 2), (false, 0), (false, 1)]), vec![7, 2, 1]);
        assert_eq!(runs(&[(true, 5), (false, 1)]), vec![0, 5, 1]);
        assert_eq!(runs(&[]), Vec::<u64>::new());
    }

    #[test]
    fn a_full_record_notes_nothing_more() {
        let mut r = Runs::default();
        for i in 0..MAX_RUNS {
            r.push(i % 2 == 1, 1);
        }
        let last_is_stderr = MAX_RUNS.is_multiple_of(2);
        r.push(last_is_stderr, 5);
        assert_eq!((r.lengths().len(), r.lengths().last()), (MAX_RUNS, Some(&6)), "the last stretch still grows");
        // Once a stretch did not fit, the last one must not grow past it.
        r.push(!last_is_stderr, 1);
        r.push(last_is_stderr, 5);
        assert_eq!((r.lengths().len(), r.lengths().last()), (MAX_RUNS, Some(&6)));
    }

    #[test]
    fn the_text_form_reads_back_and_refuses_what_it_is_not() {
        let r = Runs { lengths: vec![0, 12, 3], full: false };
        assert_eq!(r.to_text(), "0 12 3");
        assert_eq!(Runs::from_text("0 12 3"), Some(r));
        assert_eq!(Runs::from_text(""), Some(Runs::default()));
        assert_eq!(Runs::from_text("1 x"), None);
    }

    #[test]
    fn a_received_record_must_fit_what_was_written() {
        assert!(Runs::checked(vec![3, 2, 1], [4, 2]).is_some());
        assert!(Runs::checked(vec![3, 3], [4, 2]).is_none(), "more stderr than written");
        assert!(Runs::checked(vec![u64::MAX, 0, 1], [u64::MAX, 0]).is_none(), "a sum that overflows");
        assert!(Runs::checked(vec![0; MAX_RUNS + 1], [0, 0]).is_none(), "too long");
    }

    #[test]
    fn pieces_come_in_the_recorded_order_and_the_rest_says_it_is_unordered() {
        let shown = |pieces: Vec<Piece>| {
            pieces
                .iter()
                .map(|p| {
                    let tag = if p.stderr { "e" } else { "o" };
                    let mark = if p.unordered { "?" } else { "" };
                    format!("{mark}{tag}:{}", String::from_utf8_lossy(p.data))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(interleave(b"ab", b"XY", &[1, 2, 1])), ["o:a", "e:XY", "o:b"]);
        assert_eq!(shown(interleave(b"ab", b"X", &[0, 1, 2])), ["e:X", "o:ab"]);
        // The record covers the start only: the rest is said to be unordered.
        assert_eq!(shown(interleave(b"abc", b"XYZ", &[1, 1])), ["o:a", "e:X", "?o:bc", "e:YZ"]);
        // Only one stream has a rest (a truncation marker): nothing to say.
        assert_eq!(shown(interleave(b"ab[cut]", b"X", &[2, 1])), ["o:ab", "e:X", "o:[cut]"]);
        // No record and one stream: just that stream.
        assert_eq!(shown(interleave(b"", b"only", &[])), ["e:only"]);
        // A record longer than what was read (a read capped by the client) stops at the data.
        assert_eq!(shown(interleave(b"a", b"", &[5, 5])), ["o:a"]);
    }
}
