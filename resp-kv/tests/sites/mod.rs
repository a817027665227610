//! A cluster of in-memory sites for tests: run commands at a site, deliver its log
//! records to another in any order the test chooses.
#![allow(dead_code)]

use resp_kv::sites::{Policy, SiteAddr, SiteConfig};
use resp_kv::{Conn, Limits, ServerInfo, Store};

pub struct Site {
    pub store: Store,
    pub conn: Conn,
    pub now_ms: u64,
    /// Per origin index: next seq to deliver here.
    pub cursor: Vec<u64>,
}

pub struct Cluster {
    pub sites: Vec<Site>,
}

pub fn config(id: u8, n: u8, policy: Policy, wall_base_ms: u64) -> SiteConfig {
    SiteConfig {
        site_id: id,
        policy,
        sites: (1..=n).map(|i| SiteAddr { id: i, ip: [10, 78, i, 10], port: 6380 }).collect(),
        wall_base_ms,
        max_log_bytes: 64 << 20,
        max_memory_bytes: 64 << 20,
    }
}

impl Cluster {
    pub fn new(n: u8, policy: Policy) -> Cluster {
        Cluster::with_offsets(policy, &vec![0; usize::from(n)])
    }

    /// One site per offset; site i's clock is `1_700_000_000_000 + offsets[i]`.
    pub fn with_offsets(policy: Policy, offsets: &[i64]) -> Cluster {
        let n = offsets.len() as u8;
        let sites = (1..=n)
            .map(|id| {
                let base = (1_700_000_000_000i64 + offsets[usize::from(id - 1)]) as u64;
                Site {
                    store: Store::with_sites(Limits::default(), config(id, n, policy, base)),
                    conn: Conn::new(),
                    now_ms: 1_000,
                    cursor: vec![1; usize::from(n)],
                }
            })
            .collect();
        Cluster { sites }
    }

    /// Run one command line (inline protocol) at site `id` (1-based); returns the reply.
    pub fn cmd(&mut self, id: u8, line: &str) -> String {
        let site = &mut self.sites[usize::from(id - 1)];
        site.now_ms += 1;
        let mut out = Vec::new();
        let info = ServerInfo::default();
        let input = format!("{line}\r\n");
        site.conn.feed(input.as_bytes(), &mut site.store, site.now_ms, &info, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Deliver the next pending record of `from` to `to`; false if none is pending.
    pub fn deliver_one(&mut self, from: u8, to: u8) -> bool {
        if from == to {
            return false;
        }
        let (fi, ti) = (usize::from(from - 1), usize::from(to - 1));
        let seq = self.sites[ti].cursor[fi];
        let Some(entry) = self.sites[fi].store.sites().unwrap().log_entry(seq).cloned() else {
            return false;
        };
        let now = self.sites[ti].now_ms;
        let Ok(Some((resp_kv::sites::wire::Frame::Write { seq: framed, write }, _))) =
            resp_kv::sites::wire::decode(&entry.frame)
        else {
            panic!("log entry {seq} of site {from} is not a WRITE frame");
        };
        assert_eq!(framed, seq);
        let applied = self.sites[ti].store.sites_mut().unwrap().apply_remote(from, seq, &write, now);
        assert_eq!(applied, Ok(true), "record {seq} of site {from} at site {to}");
        self.sites[ti].cursor[fi] = seq + 1;
        true
    }

    /// Deliver everything `from` has to `to`.
    pub fn deliver_all(&mut self, from: u8, to: u8) {
        while self.deliver_one(from, to) {}
    }

    /// Deliver everything everywhere.
    pub fn heal(&mut self) {
        let n = self.sites.len() as u8;
        for from in 1..=n {
            for to in 1..=n {
                self.deliver_all(from, to);
            }
        }
    }

    pub fn digests(&self) -> Vec<u64> {
        self.sites.iter().map(|s| s.store.sites().unwrap().digest()).collect()
    }

    pub fn n(&self) -> u8 {
        self.sites.len() as u8
    }
}
