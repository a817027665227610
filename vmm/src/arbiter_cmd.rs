//! `ftvmm arbiter list|clear`: the groups an arbiter or witness location holds
//! records of, and removing them by hand (the rare manual case: members never
//! need it, since every deployment has its own group name).
use clap::Subcommand;
use std::process::ExitCode;
use vmm::host::arbiter::Location;
use vmm::host::records::{self, Which};

/// What to do with the records.
#[derive(Subcommand)]
pub enum ArbiterCommand {
    /// List the groups that have records there: arbiter claims (latest epoch, its
    /// holder, age) and witness records (epoch, vote, age).
    List {
        #[command(flatten)]
        at: At,
    },
    /// Remove one group's records (claims and witness record), or every group's.
    Clear {
        #[command(flatten)]
        at: At,
        /// The group whose records go (`ftvmm arbiter list` shows the names).
        #[arg(long, value_name = "NAME", required_unless_present = "all", conflicts_with = "all")]
        group_name: Option<String>,
        /// Every group's records; needs --yes-remove-every-group.
        #[arg(long)]
        all: bool,
        /// Confirms --all: members of a running group would lose their claims.
        #[arg(long, requires = "all")]
        yes_remove_every_group: bool,
    },
}

/// Where the records are.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct At {
    /// An arbiter: file:DIR or etcd:http://HOST:PORT[,...] (as the members' --arbiter).
    #[arg(long, value_name = "SPEC")]
    arbiter: Option<String>,
    /// A witness location (as the members' --witness); the same listing.
    #[arg(long, value_name = "SPEC")]
    witness: Option<String>,
}

impl At {
    fn location(&self) -> Result<Location, String> {
        let spec = self.arbiter.as_deref().or(self.witness.as_deref()).unwrap_or_default();
        Location::parse(spec).map_err(|e| e.to_string())
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs the command; errors go to stderr with exit code 1 (2 for usage).
pub fn run(command: &ArbiterCommand) -> ExitCode {
    let (at, which) = match command {
        ArbiterCommand::List { at } => (at, None),
        ArbiterCommand::Clear { all: true, yes_remove_every_group: false, .. } => {
            eprintln!(
                "error: --all removes the records of every group there, running ones too; add \
                 --yes-remove-every-group to confirm, or name one group with --group-name"
            );
            return ExitCode::from(2);
        }
        ArbiterCommand::Clear { at, all: true, .. } => (at, Some(Which::All)),
        ArbiterCommand::Clear { at, group_name, .. } => {
            (at, Some(Which::Group(group_name.clone().unwrap_or_default())))
        }
    };
    let location = match at.location() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shown = location.describe();
    let result = match which {
        None => records::list(&location).map(|l| {
            if l.is_empty() {
                println!("{shown} holds no records");
            } else {
                print!("{}", records::render(&l, now()));
            }
        }),
        Some(which) => match records::clear(&location, &which) {
            Ok(removed) => {
                print!("{}", records::describe_removed(&removed, &shown));
                Ok(())
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot read {shown}: {e}");
            ExitCode::from(1)
        }
    }
}
