//! INFO and COMMAND: the server describing itself.

use alloc::vec::Vec;

use crate::commands::{is, lookup, unknown_subcommand, Ctx, Spec, COMMANDS};
use crate::reply::{self, push_u64};
use crate::server_cmds::VERSION;

/// INFO sections in output order; `default`, `all` and `everything` select every one.
const SECTIONS: [&str; 6] = ["server", "clients", "memory", "replication", "sites", "keyspace"];

pub(crate) fn info(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let wanted = args.get(1..).unwrap_or(&[]);
    let every = wanted.is_empty() || wanted.iter().any(|w| is(w, "default") || is(w, "all") || is(w, "everything"));
    let mut text = Vec::new();
    for section in SECTIONS {
        if section == "sites" && ctx.store.sites.is_none() {
            continue;
        }
        if every || wanted.iter().any(|w| is(w, section)) {
            if !text.is_empty() {
                // Redis separates sections with a blank line.
                text.extend_from_slice(b"\r\n");
            }
            write_section(ctx, section, &mut text);
        }
    }
    reply::bulk(ctx.out, &text);
}

/// Append `name:value\r\n`.
fn field(text: &mut Vec<u8>, name: &str, value: &[u8]) {
    text.extend_from_slice(name.as_bytes());
    text.push(b':');
    text.extend_from_slice(value);
    text.extend_from_slice(b"\r\n");
}

fn number_field(text: &mut Vec<u8>, name: &str, value: u64) {
    let mut digits = Vec::new();
    push_u64(&mut digits, value);
    field(text, name, &digits);
}

fn write_section(ctx: &mut Ctx, section: &str, text: &mut Vec<u8>) {
    let info = ctx.info;
    match section {
        "server" => {
            text.extend_from_slice(b"# Server\r\n");
            field(text, "redis_version", VERSION.as_bytes());
            field(text, "redis_mode", b"standalone");
            let seconds = info.uptime_ms / 1000;
            number_field(text, "uptime_in_seconds", seconds);
            number_field(text, "uptime_in_days", seconds / 86_400);
        }
        "clients" => {
            text.extend_from_slice(b"# Clients\r\n");
            number_field(text, "connected_clients", info.connected_clients as u64);
            if info.max_clients > 0 {
                number_field(text, "maxclients", info.max_clients as u64);
            }
            let limits = ctx.store.limits();
            number_field(text, "proto_max_bulk_len", limits.max_bulk_bytes as u64);
            number_field(text, "ftvmm_max_request_bytes", limits.max_request_bytes as u64);
            text.extend_from_slice(info.clients_extra.as_bytes());
            if !info.clients_extra.is_empty() && !info.clients_extra.ends_with('\n') {
                text.extend_from_slice(b"\r\n");
            }
        }
        "memory" => {
            text.extend_from_slice(b"# Memory\r\n");
            number_field(text, "used_memory", ctx.store.used_bytes() as u64);
            let max = ctx.store.limits().max_memory_bytes as u64;
            number_field(text, "maxmemory", max);
            field(text, "maxmemory_policy", b"noeviction");
        }
        "replication" => {
            text.extend_from_slice(b"# Replication\r\n");
            field(text, "role", info.role.as_bytes());
            field(text, "connected_slaves", b"0");
            let protected: &[u8] = if info.protected { b"yes" } else { b"no" };
            field(text, "ftvmm_protected", protected);
            text.extend_from_slice(info.extra.as_bytes());
            // Keep the reply well-formed even if `extra` lacks its final line break.
            if !info.extra.is_empty() && !info.extra.ends_with('\n') {
                text.extend_from_slice(b"\r\n");
            }
        }
        "sites" => sites_section(ctx, text),
        _ => keyspace_section(ctx, text),
    }
}

fn keyspace_section(ctx: &mut Ctx, text: &mut Vec<u8>) {
    text.extend_from_slice(b"# Keyspace\r\n");
    ctx.store.expire_all(ctx.now_ms);
    // In sites mode the keys live in the replicated keyspace (which has no TTLs).
    let keys = ctx.store.sites().map_or(ctx.store.len(), |s| s.live_len());
    // Like Redis, an empty database gets no line at all.
    if keys == 0 {
        return;
    }
    text.extend_from_slice(b"db0:keys=");
    push_u64(text, keys as u64);
    text.extend_from_slice(b",expires=");
    push_u64(text, ctx.store.expires_count() as u64);
    text.extend_from_slice(b",avg_ttl=0\r\n");
}

/// COMMAND [COUNT | DOCS | INFO name... | LIST]. DOCS answers an empty array, which is
/// what redis-cli 7 needs to start (it then uses its built-in help).
pub(crate) fn command(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(sub) = args.get(1) else {
        reply::array_header(ctx.out, COMMANDS.len());
        return COMMANDS.iter().for_each(|spec| command_info(ctx.out, spec));
    };
    let names = args.get(2..).unwrap_or(&[]);
    if is(sub, "COUNT") && names.is_empty() {
        reply::int(ctx.out, i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX));
    } else if is(sub, "DOCS") {
        reply::array_header(ctx.out, 0);
    } else if is(sub, "INFO") && names.is_empty() {
        reply::array_header(ctx.out, COMMANDS.len());
        COMMANDS.iter().for_each(|spec| command_info(ctx.out, spec));
    } else if is(sub, "INFO") {
        reply::array_header(ctx.out, names.len());
        for name in names {
            match lookup(name) {
                Some(spec) => command_info(ctx.out, spec),
                None => reply::nil(ctx.out),
            }
        }
    } else if is(sub, "LIST") && names.is_empty() {
        reply::array_header(ctx.out, COMMANDS.len());
        COMMANDS.iter().for_each(|spec| reply::bulk(ctx.out, spec.name.as_bytes()));
    } else {
        unknown_subcommand(ctx.out, sub, "COMMAND");
    }
}

/// The 10-element RESP2 description Redis 7 gives per command (ACL categories, tips,
/// key specs and subcommands left empty).
fn command_info(out: &mut Vec<u8>, spec: &Spec) {
    reply::array_header(out, 10);
    reply::bulk(out, spec.name.as_bytes());
    reply::int(out, spec.arity);
    reply::array_header(out, spec.flags.len());
    spec.flags.iter().for_each(|flag| reply::simple(out, flag));
    reply::int(out, spec.first_key);
    reply::int(out, spec.last_key);
    reply::int(out, spec.step);
    for _ in 0..4 {
        reply::array_header(out, 0);
    }
}

/// `# Sites`: this site's identity, link cursors and the conflict counters.
fn sites_section(ctx: &mut Ctx, text: &mut Vec<u8>) {
    let Some(s) = ctx.store.sites() else {
        return;
    };
    text.extend_from_slice(b"# Sites\r\n");
    number_field(text, "site_id", u64::from(s.config().site_id));
    field(text, "sites_conflict", s.policy().name().as_bytes());
    number_field(text, "sites_peers", s.peers().count() as u64);
    let st = *s.stats();
    let counters = [
        ("sites_local_writes", st.local_writes),
        ("sites_remote_applied", st.remote_applied),
        ("sites_remote_superseded", st.remote_superseded),
        ("sites_duplicates_skipped", st.duplicates),
        ("sites_conflicts", st.conflicts),
        ("sites_lost_writes", st.lost_writes),
        ("sites_conflicted_keys", s.conflicted_keys() as u64),
        ("sites_siblings_folded", st.siblings_folded),
        ("sites_refused_records", st.refused),
        ("sites_log_bytes", s.log_bytes() as u64),
        ("sites_next_seq", s.next_seq()),
        ("sites_keys", s.live_len() as u64),
    ];
    for (name, value) in counters {
        number_field(text, name, value);
    }
    for peer in s.peers().collect::<Vec<_>>() {
        let name = crate::sites::text(format_args!("sites_peer_{peer}"));
        let value = crate::sites::text(format_args!("applied={},acked={}", s.applied_from(peer), s.acked_by(peer)));
        field(text, core::str::from_utf8(&name).unwrap_or("sites_peer"), &value);
    }
    field(text, "sites_digest", &crate::sites::text(format_args!("{:016x}", s.digest())));
}
