//! The shuffle's pieces: keys, partitions, spills and merges, on real files.

use super::*;

#[test]
fn keys_and_order() {
    assert_eq!(key(b"a b\tc\td"), b"a b");
    assert_eq!(key(b"nokey"), b"nokey");
    assert_eq!(by_key(b"ab\t9", b"abc\t1"), Ordering::Less);
    assert_eq!(by_key(b"ab\x01\t1", b"ab\t2"), Ordering::Greater, "by key, not by raw bytes");
    assert_eq!(fnv1a(b"hello"), 0xa430_d846_80aa_bd0b);
}

#[test]
fn partitions_spill_and_merge_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let mut parts = Partitions::new(dir.path(), 3, 200).unwrap();
    let mut input = Vec::new();
    for i in (0..500).rev() {
        input.extend_from_slice(format!("k{}\t{i}\n", i % 37).as_bytes());
    }
    assert_eq!(parts.collect(&input[..]).unwrap(), 500);
    assert!(parts.runs.iter().map(Vec::len).sum::<usize>() > 3, "it spilled");
    let files = parts.finish().unwrap();
    let mut total = 0;
    for (r, file) in files.iter().enumerate() {
        let text = std::fs::read(file).unwrap();
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        total += lines.len();
        assert!(lines.windows(2).all(|w| by_key(w[0], w[1]) != Ordering::Greater), "partition {r} is sorted");
        assert!(lines.iter().all(|l| fnv1a(key(l)) % 3 == r as u64), "partition {r} holds its keys");
    }
    assert_eq!(total, 500);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "runs are cleaned up");
}

/// Every line of `text` goes to exactly one of the splits, whole, wherever the
/// splits and the chunks of the stream fall.
#[test]
fn splits_take_each_line_exactly_once_whatever_the_chunking() {
    let text = b"alpha\nb\n\nlonger line here\nx\nlast without newline";
    let len = text.len() as u64;
    for cuts in [vec![len], vec![6, len - 6], vec![1, 1, 1, len - 3], vec![7, 7, 7, 7, 7, len - 35], vec![17, len - 17]]
    {
        for chunk in 1..=text.len() {
            let mut offset = 0;
            let mut got = Vec::new();
            for length in &cuts {
                let mut split = SplitLines::new(offset, *length);
                let mut pos = split.from() as usize;
                while !split.done() && pos < text.len() {
                    let next = (pos + chunk).min(text.len());
                    got.extend_from_slice(split.take(&text[pos..next]));
                    pos = next;
                }
                offset += length;
            }
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(text),
                "cuts {cuts:?}, chunks of {chunk}"
            );
        }
    }
}

#[test]
fn many_runs_merge_in_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for r in 0..(FAN_IN * 2 + 5) {
        let path = dir.path().join(format!("in-{r}"));
        std::fs::write(&path, format!("k{:04}\t{r}\nz\t{r}\n", r * 7 % 1000)).unwrap();
        runs.push(path);
    }
    let n = runs.len();
    let mut out = Vec::new();
    assert_eq!(merge_files(runs, dir.path(), &mut out).unwrap(), 2 * n as u64);
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(lines.windows(2).all(|w| by_key(w[0], w[1]) != Ordering::Greater));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "every run was deleted");
}

#[test]
fn merge_interleaves_sorted_runs() {
    let a: Vec<std::io::Result<Vec<u8>>> = vec![Ok(b"a\t1".to_vec()), Ok(b"c\t1".to_vec())];
    let b: Vec<std::io::Result<Vec<u8>>> = vec![Ok(b"b\t2".to_vec()), Ok(b"c\t2".to_vec())];
    let mut out = Vec::new();
    assert_eq!(merge_into(vec![a.into_iter(), b.into_iter()], &mut out).unwrap(), 4);
    assert_eq!(out, b"a\t1\nb\t2\nc\t1\nc\t2\n");
}
