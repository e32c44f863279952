//! Command parsing and the texts commands answer with.

/// A command a user typed (after the prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    /// `new` or `reset`: a fresh agent context.
    New,
    Context,
    Usage,
    Stop,
    Status,
    Skills,
    Skill {
        name: String,
        on: bool,
    },
    Reload,
    Rollback,
    /// A known command used wrongly: what to tell the user.
    Misused(String),
    Unknown(String),
}

pub const NAMES: &[&str] = &[
    "help", "new", "reset", "context", "usage", "stop", "status", "skills", "skill", "reload",
    "rollback",
];

/// Parse the text after the prefix.
pub fn parse(rest: &str, prefix: &str) -> Command {
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or("").to_lowercase();
    let args: Vec<&str> = words.collect();
    match name.as_str() {
        "help" | "h" | "?" => Command::Help,
        "new" | "reset" => Command::New,
        "context" => Command::Context,
        "usage" => Command::Usage,
        "stop" | "cancel" => Command::Stop,
        "status" => Command::Status,
        "skills" => Command::Skills,
        "skill" => match args.as_slice() {
            [skill, state] => match state.to_lowercase().as_str() {
                "on" | "enable" => Command::Skill {
                    name: skill.to_string(),
                    on: true,
                },
                "off" | "disable" => Command::Skill {
                    name: skill.to_string(),
                    on: false,
                },
                _ => Command::Misused(format!(
                    "`{prefix}skill` takes `on` or `off`, not `{state}`: `{prefix}skill {skill} on`"
                )),
            },
            _ => Command::Misused(format!(
                "Usage: `{prefix}skill NAME on|off` (see `{prefix}skills` for the names)"
            )),
        },
        "reload" => Command::Reload,
        "rollback" => Command::Rollback,
        _ => Command::Unknown(name),
    }
}

/// The known command closest to `name`, if it is close enough to be a typo.
pub fn suggest(name: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .map(|n| (distance(name, n), *n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min()
        .map(|(_, n)| n)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// What reactions and edits do, for the help text.
pub struct Controls<'a> {
    pub stop: &'a str,
    pub withdraw: &'a str,
    /// An edit of an answered question asks again.
    pub reask: bool,
}

pub fn help(p: &str, admin: bool, c: &Controls) -> String {
    let mut s = format!(
        "**Commands**\n\n\
         - `{p}help`: this list\n\
         - `{p}new` or `{p}reset`: start a fresh agent context\n\
         - `{p}context`: tokens and messages in the current context\n\
         - `{p}usage`: tokens you have used (and what your quota leaves)\n\
         - `{p}stop`: stop the reply being written\n\
         - `{p}status`: agent connection, queue and version\n\
         - `{p}skills`: your skills; `{p}skill NAME on|off` to switch one\n"
    );
    if admin {
        s.push_str(&format!(
            "- `{p}reload`: swap in the guest file again (admin)\n\
             - `{p}rollback`: go back to the guest that ran before this one (admin)\n"
        ));
    }
    s.push_str(&format!(
        "\n**Reactions and edits**\n\n\
         - {stop} on a reply being written (or on your question): stop it\n\
         - {withdraw} on your question while it waits: withdraw it\n\
         - any other reaction on an answer goes to the agent as feedback\n\
         - editing a waiting question changes what is sent{reask}; deleting it withdraws it\n",
        stop = c.stop,
        withdraw = c.withdraw,
        reask = if c.reask {
            "; editing one already answered asks again"
        } else {
            ""
        },
    ));
    s.push_str("\nAnything else you write goes to the agent.");
    s
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
