//! The guest flags a log carries: `ftvmm record` writes them into the log's header
//! (logging-channel's guest configuration block, one `flag=value` line each), and
//! `ftvmm replay --log FILE` takes them from there, so a replay needs no other flag.
//! A flag given to the replay anyway must agree with the recorded one, or the replay
//! is refused naming the flag. (Memory size and tick rate are in the fixed header and
//! taken from it, as before.) A version 1 log carries no flags: the replay then needs
//! the recording's flags, as it always did.
use crate::{VmArgs, WorkloadArg};
use clap::ValueEnum;
use std::path::PathBuf;

/// What the guest runs, by its `--workload` name.
fn workload_name(w: WorkloadArg) -> String {
    w.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

impl VmArgs {
    /// The guest flags to record, as `flag=value` lines (`boot_wall_ms` resolved).
    pub fn recorded_flags(&self, boot_wall_ms: u64) -> String {
        let workload = self.workload.unwrap_or(if self.guest_ip.is_some() {
            WorkloadArg::KvServer
        } else {
            WorkloadArg::Selftest
        });
        let mut out = format!("workload={}\n", workload_name(workload));
        let mut line = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push_str(&format!("{flag}={v}\n"));
            }
        };
        line("kernel", self.kernel.as_ref().map(|k| k.display().to_string()));
        line("guest-ip", self.guest_ip.clone());
        line("gateway", self.gateway.clone());
        line("mac", self.mac.clone());
        line("site-id", self.site_id.map(|s| s.to_string()));
        line("sites", self.sites.clone());
        line("conflict", self.conflict.clone());
        line("clock-offset-ms", (self.clock_offset_ms != 0).then(|| self.clock_offset_ms.to_string()));
        line("boot-wall-ms", self.site_id.map(|_| boot_wall_ms.to_string()));
        out
    }

    /// Takes every flag `recorded` lists that was not given; one that was given must
    /// agree. The error names the flag and both values.
    pub fn adopt_recorded(&mut self, recorded: &str) -> Result<(), String> {
        for line in recorded.lines().filter(|l| !l.is_empty()) {
            let (flag, value) =
                line.split_once('=').ok_or_else(|| format!("the log's guest flags are corrupt: {line:?}"))?;
            let differs = |given: String| {
                format!(
                    "--{flag} {given} differs from the log, which was recorded with --{flag} {value}: \
                     leave --{flag} out (the log carries it) or give the recorded value"
                )
            };
            let bad = |what: &str| format!("the log's --{flag} {value:?} is not a valid {what}");
            match flag {
                "workload" => {
                    let w = WorkloadArg::from_str(value, true).map_err(|_| bad("workload"))?;
                    match self.workload {
                        Some(given) if workload_name(given) != value => return Err(differs(workload_name(given))),
                        _ => self.workload = Some(w),
                    }
                }
                "kernel" => adopt(&mut self.kernel, PathBuf::from(value), |k| k.display().to_string(), differs)?,
                "guest-ip" => adopt(&mut self.guest_ip, value.to_string(), String::clone, differs)?,
                "gateway" => adopt(&mut self.gateway, value.to_string(), String::clone, differs)?,
                "mac" => {
                    if let Some(given) = &self.mac {
                        if !given.eq_ignore_ascii_case(value) {
                            return Err(differs(given.clone()));
                        }
                    }
                    self.mac = Some(value.to_string());
                }
                "site-id" => {
                    let v = value.parse().map_err(|_| bad("site id"))?;
                    adopt(&mut self.site_id, v, u8::to_string, differs)?
                }
                "sites" => adopt(&mut self.sites, value.to_string(), String::clone, differs)?,
                "conflict" => adopt(&mut self.conflict, value.to_string(), String::clone, differs)?,
                "clock-offset-ms" => {
                    let v: i64 = value.parse().map_err(|_| bad("offset"))?;
                    if self.clock_offset_ms != 0 && self.clock_offset_ms != v {
                        return Err(differs(self.clock_offset_ms.to_string()));
                    }
                    self.clock_offset_ms = v;
                }
                "boot-wall-ms" => {
                    let v = value.parse().map_err(|_| bad("time"))?;
                    adopt(&mut self.boot_wall_ms, v, u64::to_string, differs)?
                }
                _ => return Err(format!("the log was recorded with --{flag}, which this ftvmm does not know: replay it with the ftvmm that recorded it")),
            }
        }
        Ok(())
    }
}

/// `slot` takes `recorded` unless it holds another value (then the error, from `differs`).
fn adopt<T: PartialEq>(
    slot: &mut Option<T>,
    recorded: T,
    show: impl Fn(&T) -> String,
    differs: impl Fn(String) -> String,
) -> Result<(), String> {
    match slot {
        Some(given) if *given != recorded => Err(differs(show(given))),
        _ => {
            *slot = Some(recorded);
            Ok(())
        }
    }
}

/// The guest flags in the log at `path`: `None` if it carries none (version 1) or
/// cannot be read (the replay itself then says why).
pub fn read(path: &std::path::Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let (reader, _) = logging_channel::LogReader::open(std::io::BufReader::new(file)).ok()?;
    reader.config().map(|c| String::from_utf8_lossy(c).into_owned())
}
