//! PING, ECHO, SELECT, QUIT, AUTH, HELLO, CLIENT, CONFIG, INFO, COMMAND, unknown commands.

mod common;
use common::Server;
use resp_kv::ConnStatus;

#[test]
fn ping_replies_pong_or_echoes_its_argument() {
    let mut s = Server::new();
    assert_eq!(s.call(&["PING"]), "+PONG\r\n");
    assert_eq!(s.call(&["ping", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(s.call(&["PING", "a", "b"]), "-ERR wrong number of arguments for 'ping' command\r\n");
}

#[test]
fn inline_commands_work_like_arrays() {
    let mut s = Server::new();
    assert_eq!(s.raw(b"PING\r\n"), "+PONG\r\n");
    assert_eq!(s.raw(b"SET a \"b c\"\n"), "+OK\r\n");
    assert_eq!(s.raw(b"GET a\r\n"), "$3\r\nb c\r\n");
    assert_eq!(s.raw(b"\r\n"), "");
}

#[test]
fn echo_returns_its_argument() {
    let mut s = Server::new();
    assert_eq!(s.call(&["ECHO", "x y"]), "$3\r\nx y\r\n");
    assert_eq!(s.call(&["ECHO"]), "-ERR wrong number of arguments for 'echo' command\r\n");
}

#[test]
fn unknown_command_error_quotes_name_and_arguments() {
    let mut s = Server::new();
    assert_eq!(s.call(&["FOO", "x", "y"]), "-ERR unknown command 'FOO', with args beginning with: 'x' 'y' \r\n");
    assert_eq!(s.call(&["FOO"]), "-ERR unknown command 'FOO', with args beginning with: \r\n");
}

#[test]
fn unknown_command_error_flattens_line_breaks() {
    let mut s = Server::new();
    assert_eq!(s.call(&["A\r\nB"]), "-ERR unknown command 'A  B', with args beginning with: \r\n");
}

#[test]
fn select_accepts_only_database_zero() {
    let mut s = Server::new();
    assert_eq!(s.call(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(s.call(&["SELECT", "1"]), "-ERR DB index is out of range\r\n");
    assert_eq!(s.call(&["SELECT", "x"]), "-ERR value is not an integer or out of range\r\n");
}

#[test]
fn quit_replies_ok_then_closes_and_ignores_the_rest() {
    let mut s = Server::new();
    let mut input = common::encode(&["QUIT"]);
    input.extend(common::encode(&["SET", "a", "1"]));
    let (out, status) = s.feed(&input);
    assert_eq!(out, b"+OK\r\n");
    assert_eq!(status, ConnStatus::Close);
    assert_eq!(s.feed(&common::encode(&["PING"])), (vec![], ConnStatus::Close));
    assert_eq!(s.store.len(), 0);
}

#[test]
fn auth_without_password_configured_is_refused_like_redis() {
    let mut s = Server::new();
    assert!(s.call(&["AUTH", "pw"]).starts_with("-ERR AUTH <password> called without"));
    assert_eq!(s.call(&["AUTH", "default", "pw"]), "+OK\r\n");
    assert_eq!(s.call(&["AUTH", "bob", "pw"]), "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
}

#[test]
fn hello_3_is_refused_so_clients_fall_back_to_resp2() {
    let mut s = Server::new();
    assert_eq!(s.call(&["HELLO", "3"]), "-NOPROTO unsupported protocol version\r\n");
}

#[test]
fn hello_2_returns_server_map_as_flat_array() {
    let mut s = Server::new();
    let reply = s.call(&["HELLO", "2", "SETNAME", "me"]);
    assert!(reply.starts_with("*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), "{reply}");
    assert!(reply.contains("$5\r\nproto\r\n:2\r\n"));
    assert!(reply.contains("$4\r\nrole\r\n$6\r\nmaster\r\n"));
    assert!(reply.ends_with("$7\r\nmodules\r\n*0\r\n"));
    assert_eq!(s.call(&["CLIENT", "GETNAME"]), "$2\r\nme\r\n");
}

#[test]
fn client_setname_setinfo_getname_and_id() {
    let mut s = Server::new();
    assert_eq!(s.call(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(s.call(&["CLIENT", "SETNAME", "bench"]), "+OK\r\n");
    assert_eq!(s.call(&["CLIENT", "GETNAME"]), "$5\r\nbench\r\n");
    assert_eq!(s.call(&["CLIENT", "SETINFO", "lib-name", "redis-rs"]), "+OK\r\n");
    assert_eq!(s.call(&["CLIENT", "ID"]), ":1\r\n");
    assert_eq!(s.call(&["CLIENT", "ID"]), ":1\r\n");
}

#[test]
fn client_errors_follow_redis() {
    let mut s = Server::new();
    assert_eq!(
        s.call(&["CLIENT", "SETNAME", "a b"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(s.call(&["CLIENT", "SETNAME"]), "-ERR wrong number of arguments for 'client|setname' command\r\n");
    assert_eq!(s.call(&["CLIENT", "KILL"]), "-ERR unknown subcommand 'KILL'. Try CLIENT HELP.\r\n");
}

#[test]
fn config_get_answers_what_redis_benchmark_asks() {
    let mut s = Server::new();
    assert_eq!(s.call(&["CONFIG", "GET", "save"]), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_eq!(s.call(&["CONFIG", "GET", "appendonly"]), "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    assert_eq!(s.call(&["CONFIG", "GET", "nothing-like-this"]), "*0\r\n");
    assert_eq!(s.call(&["CONFIG", "GET", "maxmemory"]), "*2\r\n$9\r\nmaxmemory\r\n$8\r\n16777216\r\n");
}

#[test]
fn config_get_supports_globs() {
    let mut s = Server::new();
    let reply = s.call(&["CONFIG", "GET", "maxmemory*"]);
    assert!(reply.starts_with("*4\r\n"), "{reply}");
}

#[test]
fn config_set_and_unknown_subcommands_are_errors() {
    let mut s = Server::new();
    assert_eq!(
        s.call(&["CONFIG", "SET", "save", ""]),
        "-ERR Unknown option or number of arguments for CONFIG SET - 'save'\r\n"
    );
    assert_eq!(s.call(&["CONFIG", "GET"]), "-ERR wrong number of arguments for 'config|get' command\r\n");
    assert_eq!(s.call(&["CONFIG", "nope"]), "-ERR unknown subcommand 'nope'. Try CONFIG HELP.\r\n");
}

#[test]
fn command_docs_is_an_empty_array_for_redis_cli() {
    let mut s = Server::new();
    assert_eq!(s.call(&["COMMAND", "DOCS"]), "*0\r\n");
}

#[test]
fn command_count_and_info_describe_the_table() {
    let mut s = Server::new();
    let count = s.call(&["COMMAND", "COUNT"]);
    let n: usize = count.trim_start_matches(':').trim_end().parse().unwrap();
    assert!(n >= 25);
    assert_eq!(
        s.call(&["COMMAND", "INFO", "get", "nope"]),
        "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
         *0\r\n*0\r\n*0\r\n*0\r\n$-1\r\n"
    );
    assert!(s.call(&["COMMAND"]).starts_with(&format!("*{n}\r\n")));
}

#[test]
fn info_reports_every_section() {
    let mut s = Server::new();
    s.extra = "ftvmm_backup:live\r\n";
    s.call(&["SET", "a", "1", "EX", "100"]);
    s.call(&["SET", "b", "2"]);
    let reply = s.call(&["INFO"]);
    let body = reply.split_once("\r\n").unwrap().1;
    for line in [
        "# Server\r\nredis_version:7.0.0-ftvmm\r\n",
        "uptime_in_seconds:90061\r\nuptime_in_days:1\r\n",
        "\r\n\r\n# Clients\r\nconnected_clients:3\r\n",
        "# Memory\r\nused_memory:",
        "# Replication\r\nrole:master\r\n",
        "ftvmm_protected:yes\r\nftvmm_backup:live\r\n",
        "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in {body}");
    }
    let declared: usize = reply[1..reply.find("\r\n").unwrap()].parse().unwrap();
    assert_eq!(declared, body.len() - 2);
}

#[test]
fn info_section_selects_only_that_section() {
    let mut s = Server::new();
    s.role = "backup-live";
    let reply = s.call(&["info", "replication"]);
    assert!(reply.contains("# Replication\r\nrole:backup-live\r\n"));
    assert!(!reply.contains("# Server"));
    assert_eq!(s.call(&["INFO", "bogus"]), "$0\r\n\r\n");
}

#[test]
fn info_keyspace_is_empty_for_an_empty_store() {
    let mut s = Server::new();
    assert_eq!(s.call(&["INFO", "keyspace"]), "$12\r\n# Keyspace\r\n\r\n");
}
