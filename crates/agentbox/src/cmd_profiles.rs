//! `profiles`, `keys`, `env`, `completion`.

use anyhow::{bail, Context, Result};

use crate::cli::{CompletionArgs, EnvArgs, EnvCommand, LoginArgs, LogoutArgs, ProfilesArgs};
use agentbox_engine::profiles::{self, find_credential, Found};
use agentbox_engine::secrets::Secrets;
use agentbox_engine::Home;

pub fn profiles(args: ProfilesArgs) -> Result<i32> {
    let home = Home::open()?;
    let all = profiles::all(&home)?;
    if args.json {
        let v: Vec<_> = all
            .iter()
            .map(|(p, origin)| serde_json::json!({ "name": p.name, "origin": origin, "profile": p }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{:<14} {:<26} {:<30} ORIGIN", "NAME", "COMMAND", "DESCRIPTION");
    for (p, origin) in all {
        println!("{:<14} {:<26} {:<30} {origin}", p.name, p.command.join(" "), p.description);
    }
    Ok(0)
}

pub fn keys(args: ProfilesArgs) -> Result<i32> {
    let home = Home::open()?;
    let secrets = Secrets::load(&home)?;
    let config = agentbox_engine::config::Config::load(&home)?;
    let host_home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let mut report = Vec::new();
    for (p, _) in profiles::all(&home)? {
        let groups: Vec<serde_json::Value> = p
            .credentials
            .iter()
            .map(|group| {
                let found = group.iter().find_map(|k| find_credential(k, &secrets).map(|f| (k.clone(), f)));
                let source = found.as_ref().map(|(_, f)| match f {
                    Found::Environment(_) => "environment",
                    Found::Stored(_) => "agentbox env",
                });
                serde_json::json!({ "any_of": group, "found": found.as_ref().map(|(k, _)| k), "source": source })
            })
            .collect();
        let opted_in = config.profiles.get(&p.name).map(|s| s.seed.clone()).unwrap_or_default();
        let logged_in = profiles::login_given(&p, &host_home, &opted_in);
        let withheld = profiles::login_withheld(&p, &host_home, &opted_in);
        let login = agentbox_engine::logins::status(&home, &p.name);
        let ready = logged_in || login.is_some() || groups.iter().all(|g| !g["found"].is_null());
        report.push(serde_json::json!({
            "profile": p.name, "credentials": groups, "logged_in": logged_in, "ready": ready,
            "login_hint": p.login_hint, "host_login_not_copied": withheld, "login": login,
            "login_available": p.login.is_some(),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    for r in &report {
        let status = if r["ready"] == true { "ready" } else { "missing" };
        println!("{:<14} {status}", r["profile"].as_str().unwrap_or_default());
        for g in r["credentials"].as_array().into_iter().flatten() {
            let names: Vec<&str> =
                g["any_of"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            match g["found"].as_str() {
                Some(k) => println!("    {k}: set ({})", g["source"].as_str().unwrap_or_default()),
                None => println!("    {}: not set", names.join(" | ")),
            }
        }
        if let Some(l) = r["login"].as_object() {
            let at = |k: &str| l.get(k).and_then(|v| v.as_u64()).map(agentbox_proxy::format_utc);
            let refreshed = at("refreshed_at").map(|t| format!(", refreshed {t}")).unwrap_or_default();
            println!(
                "    subscription login: kept here (imported {}{refreshed}); agents get placeholders",
                at("at").unwrap_or_default()
            );
        } else if r["login_available"] == true && r["ready"] != true {
            let name = r["profile"].as_str().unwrap_or_default();
            println!("    subscription login: none (import yours: agentbox login {name})");
        }
        if r["logged_in"] == true {
            println!("    logged in (auth file present and copied into agents)");
        } else if let Some(m) = r["host_login_not_copied"].as_str() {
            let name = r["profile"].as_str().unwrap_or_default();
            println!("    your login {m} is not copied into agents (opt in: [profiles.{name}] seed = [\"{m}\"] in config.toml)");
        }
        if r["ready"] != true {
            println!("    -> {}", r["login_hint"].as_str().unwrap_or_default());
        }
    }
    Ok(0)
}

pub fn login(args: LoginArgs) -> Result<i32> {
    let home = Home::open()?;
    let v = agentbox_engine::logins::import(&home, &args.profile, args.from.as_deref())?;
    eprintln!(
        "agentbox: {}'s login from {} is kept in AGENTBOX_HOME (0600); its agents get placeholders, \
         swapped by their proxy toward the provider (refreshes included)",
        v.profile, v.imported_from
    );
    Ok(0)
}

pub fn logout(args: LogoutArgs) -> Result<i32> {
    let home = Home::open()?;
    agentbox_engine::logins::remove(&home, &args.profile)?;
    eprintln!(
        "agentbox: {}'s stored login removed (its agents' requests that need it now fail)",
        args.profile
    );
    Ok(0)
}

pub fn env(args: EnvArgs) -> Result<i32> {
    let home = Home::open()?;
    match args.command {
        EnvCommand::Path => {
            println!("{}", Secrets::path(&home).display());
        }
        EnvCommand::List => {
            let s = Secrets::load(&home)?;
            for k in s.keys() {
                println!("{k}");
            }
        }
        EnvCommand::Get { key } => {
            let s = Secrets::load(&home)?;
            match s.get(&key) {
                Some(v) => println!("{v}"),
                None => bail!("{key} is not set (see `agentbox env list`)"),
            }
        }
        EnvCommand::Set { key, value } => {
            let (key, value) = match (key.split_once('='), value) {
                (Some((k, v)), None) => (k.to_string(), v.to_string()),
                (None, Some(v)) => (key, v),
                (Some(_), Some(_)) => bail!("give either KEY VALUE or KEY=VALUE, not both"),
                // Read from stdin, so that the value is in no shell history nor process list.
                (None, None) => (key.clone(), read_value(&key)?),
            };
            Secrets::load(&home)?.set(&key, &value)?;
        }
        EnvCommand::Unset { key } => {
            if !Secrets::load(&home)?.unset(&key)? {
                bail!("{key} is not set");
            }
        }
    }
    Ok(0)
}

/// The shell's hook: it asks `agentbox` itself for completions as you type, so agent names,
/// profiles and task ids come from this machine (the verbs and flags from the CLI's own
/// definition).
pub fn completion(args: CompletionArgs) -> Result<i32> {
    let shell = args.shell.to_string();
    let me = std::env::current_exe().context("finding this program")?;
    let out = std::process::Command::new(me)
        .env(crate::complete::VAR, &shell)
        .stdin(std::process::Stdio::null())
        .output()
        .context("writing the completion hook")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("no completion hook for {shell}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    std::io::Write::write_all(&mut std::io::stdout(), &out.stdout)?;
    Ok(0)
}

/// A secret's value from stdin: a line, typed without echo on a terminal.
fn read_value(key: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let saved = if stdin.is_terminal() {
        eprint!("value for {key} (not shown): ");
        std::io::stderr().flush()?;
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
            let _ = nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &quiet);
        }
        saved
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, t);
        eprintln!();
    }
    read?;
    let value = line.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        bail!("no value for {key} on stdin: `echo VALUE | agentbox env set {key}`, or type it");
    }
    Ok(value)
}
