//! What packing would make of the frames in some files (logs `*.ftlog`, checkpoints
//! `*.ftck`: the same frames a resume and a state transfer send), per codec: the
//! measurement behind `logging_channel::pack` (its module doc has the figures).
//!
//!   cargo run --release -p logging-channel --example pack-ratio -- FILE...
//!
//! Each file's frames are cut into batches of at most 1 MiB (as a state transfer's wire
//! flushes them) and each batch compressed alone; the time is the best of 5 runs, in
//! milliseconds per MiB of frames, to compress and to decompress.
use std::time::Instant;

fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(*buf.first_chunk::<4>()?) as usize;
    (len > 0 && 8 + len <= buf.len()).then_some(8 + len)
}

/// Where the frames start (after a file's header): the first offset from which whole
/// frames run to the end of the file.
fn frames(file: &[u8]) -> &[u8] {
    for start in 0..file.len().min(4096) {
        let mut at = start;
        while let Some(n) = frame_len(&file[at..]) {
            at += n;
        }
        if at == file.len() && at > start {
            return &file[start..];
        }
    }
    file
}

fn batches(frames: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut start, mut at) = (Vec::new(), 0, 0);
    while let Some(n) = frame_len(&frames[at..]) {
        if at + n - start > 1 << 20 && at > start {
            out.push(&frames[start..at]);
            start = at;
        }
        at += n;
    }
    out.push(&frames[start..]);
    out
}

fn best_ms(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

type Codec = (&'static str, fn(&[u8]) -> Vec<u8>, fn(&[u8], usize) -> Vec<u8>);

fn main() {
    let codecs: [Codec; 3] = [
        (
            "zstd -1",
            |b| zstd::bulk::compress(b, 1).expect("zstd"),
            |c, n| zstd::bulk::decompress(c, n).expect("unzstd"),
        ),
        (
            "zstd -3",
            |b| zstd::bulk::compress(b, 3).expect("zstd"),
            |c, n| zstd::bulk::decompress(c, n).expect("unzstd"),
        ),
        ("lz4_flex", lz4_flex::block::compress, |c, n| lz4_flex::block::decompress(c, n).expect("unlz4")),
    ];
    println!(
        "{:<48} {:>9} {:>9}  {:<9} {:>8} {:>9} {:>9}",
        "file", "frames", "batches", "codec", "ratio", "ms/MiB c", "ms/MiB d"
    );
    for path in std::env::args().skip(1) {
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let frames = frames(&file);
        let batches = batches(frames);
        let mib = frames.len() as f64 / (1 << 20) as f64;
        let name = path.rsplit('/').take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/");
        for (codec, compress, decompress) in codecs {
            let packed: Vec<Vec<u8>> = batches.iter().map(|b| compress(b)).collect();
            let size: usize = packed.iter().map(Vec::len).sum();
            let c = best_ms(|| {
                for b in &batches {
                    std::hint::black_box(compress(b));
                }
            });
            let d = best_ms(|| {
                for (p, b) in packed.iter().zip(&batches) {
                    assert_eq!(decompress(p, b.len()).len(), b.len());
                }
            });
            println!(
                "{name:<48} {:>9} {:>9}  {codec:<9} {:>7.1}% {:>9.2} {:>9.2}",
                frames.len(),
                batches.len(),
                100.0 * size as f64 / frames.len() as f64,
                c / mib,
                d / mib
            );
        }
    }
}
