//! Property tests: hostile bytes never panic and give bounded output; chunking of a
//! valid request stream never changes the result.

mod common;
use common::{encode, Server};
use proptest::prelude::*;
use resp_kv::{ConnStatus, Limits};

/// Protocol-ish fragments, so random inputs reach deep parser states, not just errors.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::sample::select(vec![
            &b"*"[..],
            b"$",
            b"\r\n",
            b"\r",
            b"\n",
            b"1",
            b"2",
            b"3",
            b"-1",
            b"0",
            b"99",
            b"SET",
            b"GET",
            b"INCR",
            b"ECHO",
            b"INFO",
            b" ",
            b"\"",
            b"'",
            b"\\x4",
            b"k",
            b"EX",
            b"PX",
            b"1000",
            b"QUIT",
            b"MGET",
            b"APPEND",
        ])
        .prop_map(|f| f.to_vec()),
    ]
}

fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(fragment(), 0..60).prop_map(|parts| parts.concat())
}

fn feed_in_chunks(s: &mut Server, input: &[u8], cuts: &[usize]) -> (Vec<u8>, ConnStatus) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut status = ConnStatus::Open;
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(input.len())) {
        let (chunk_out, chunk_status) = s.feed(&input[start..cut]);
        out.extend(chunk_out);
        status = chunk_status;
        start = cut;
    }
    (out, status)
}

/// A small vocabulary of valid commands over few keys, so they interact.
fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
    let value = "[a-z0-9 ]{0,12}";
    prop_oneof![
        (key.clone(), value).prop_map(|(k, v)| vec!["SET".into(), k, v]),
        (key.clone(), 1u32..5).prop_map(|(k, s)| vec!["SET".into(), k, "x".into(), "PX".into(), s.to_string()]),
        key.clone().prop_map(|k| vec!["GET".into(), k]),
        key.clone().prop_map(|k| vec!["INCR".into(), k]),
        (key.clone(), -5i64..5).prop_map(|(k, n)| vec!["INCRBY".into(), k, n.to_string()]),
        (key.clone(), value).prop_map(|(k, v)| vec!["APPEND".into(), k, v]),
        key.clone().prop_map(|k| vec!["DEL".into(), k]),
        key.clone().prop_map(|k| vec!["PTTL".into(), k]),
        Just(vec!["MGET".into(), "a".into(), "b".into(), "c".into()]),
        Just(vec!["DBSIZE".into()]),
        Just(vec!["PING".into()]),
    ]
}

/// Commands as wire bytes, mixing array and inline framing.
fn request_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((command(), any::<bool>()), 0..40).prop_map(|cmds| {
        let mut bytes = Vec::new();
        for (args, inline) in cmds {
            if inline && args.iter().all(|a| !a.is_empty() && !a.contains(' ')) {
                bytes.extend_from_slice(args.join(" ").as_bytes());
                bytes.extend_from_slice(b"\r\n");
            } else {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                bytes.extend(encode(&refs));
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_output_is_bounded(
        input in hostile_input(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut s = Server::new();
        let (out, _) = feed_in_chunks(&mut s, &input, &cuts);
        // Largest reply per input byte is COMMAND's table (~5 KiB for 8 bytes).
        prop_assert!(out.len() <= 1024 * input.len() + 1024);
        prop_assert!(s.conn.pending_bytes() <= input.len());
    }

    #[test]
    fn random_raw_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut s = Server::with_limits(Limits { max_request_bytes: 64, max_bulk_bytes: 64, max_args: 4,
            max_memory_bytes: 256, max_conn_buffer: 64 });
        let (out, _) = s.feed(&input);
        prop_assert!(out.len() <= 1024 * input.len() + 1024);
        prop_assert!(s.store.used_bytes() <= 256);
    }

    #[test]
    fn chunked_feeding_matches_whole_feeding(
        input in request_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut whole = Server::new();
        let (expected, _) = whole.feed(&input);
        let mut chunked = Server::new();
        let (got, status) = feed_in_chunks(&mut chunked, &input, &cuts);
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
        prop_assert_eq!(status, ConnStatus::Open);
        let probe = ["MGET", "a", "b", "c"];
        prop_assert_eq!(whole.call(&probe), chunked.call(&probe));
        prop_assert_eq!(whole.store.used_bytes(), chunked.store.used_bytes());
    }
}
