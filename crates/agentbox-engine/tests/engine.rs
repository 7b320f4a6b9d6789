//! The engine against a temporary AGENTBOX_HOME, without sandboxes: requests are checked before
//! anything is made, errors carry the kind every front end maps and the field they are about.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use agentbox_core::{Field, ManifestFormat, MountArg, SpawnSpec, WorkspaceSource};
use agentbox_engine::control::{Control, Local};
use agentbox_engine::spawn::check;
use agentbox_engine::views::Filter;
use agentbox_engine::{Home, Kind};

fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home")).unwrap();
    (dir, home)
}

fn spec(name: &str) -> SpawnSpec {
    SpawnSpec { name: name.into(), command: vec!["true".into()], ..Default::default() }
}

#[test]
fn spawn_requests_are_checked_field_by_field() {
    let (_d, home) = home();
    assert!(check(&home, &spec("ok")).is_ok());
    let cases: Vec<(SpawnSpec, Field)> = vec![
        (SpawnSpec { profile: Some("no-such-profile".into()), ..spec("a") }, Field::Profile),
        (
            SpawnSpec { workspace: WorkspaceSource::CopyOf { dir: "/no/such/dir".into() }, ..spec("a") },
            Field::FromDir,
        ),
        (
            SpawnSpec { workspace: WorkspaceSource::HostDir { dir: "relative".into() }, ..spec("a") },
            Field::Workspace,
        ),
        (
            SpawnSpec {
                workspace: WorkspaceSource::Git { url: "ext::sh -c x".into(), git_ref: None },
                ..spec("a")
            },
            Field::FromGit,
        ),
        (SpawnSpec { command: vec![OsString::from_vec(b"a\0b".to_vec())], ..spec("a") }, Field::Command),
        (SpawnSpec { prompt: Some(b"x\0".to_vec()), ..spec("a") }, Field::Prompt),
        (
            SpawnSpec {
                volumes: vec![MountArg { source: "rel/path".into(), target: None, writable: false }],
                ..spec("a")
            },
            Field::Volumes,
        ),
        (
            SpawnSpec {
                volumes: vec![MountArg { source: "/no/such/file".into(), target: None, writable: false }],
                ..spec("a")
            },
            Field::Volumes,
        ),
        (SpawnSpec { workdir: Some("".into()), ..spec("a") }, Field::Workdir),
    ];
    for (s, field) in cases {
        let e = check(&home, &s).unwrap_err();
        assert_eq!((e.kind(), e.field()), (Kind::Invalid, Some(field)), "{s:?}: {e}");
    }
    let e = check(&home, &spec("Bad Name")).unwrap_err();
    assert_eq!(e.kind(), Kind::Invalid, "{e}");
}

#[test]
fn an_empty_home_answers_with_kinds() {
    let (_d, home) = home();
    let local = Local::at(home).unwrap();
    assert!(local.list(&Filter::default()).unwrap().is_empty());
    assert!(local.hitl_list(true).unwrap().is_empty());
    assert!(local.tasks().unwrap().is_empty());
    assert!(local.events(10, None).unwrap().is_empty());
    let kind = |r: agentbox_engine::Result<()>| r.unwrap_err().kind();
    assert_eq!(kind(local.get("ghost").map(drop)), Kind::NotFound);
    assert_eq!(kind(local.kill("ghost").map(drop)), Kind::NotFound);
    assert_eq!(kind(local.remove("ghost", true)), Kind::NotFound);
    assert_eq!(kind(local.send("ghost", b"x")), Kind::NotFound);
    assert_eq!(kind(local.answer_hitl(7, "y", true).map(drop)), Kind::NotFound);
    assert_eq!(kind(local.task("abc").map(drop)), Kind::NotFound);
    assert_eq!(kind(local.get("Not A Name").map(drop)), Kind::Invalid);
    assert_eq!(kind(local.submit_task("version: '9'\n", ManifestFormat::Yaml).map(drop)), Kind::Invalid);
    assert_eq!(kind(local.submit_task("{", ManifestFormat::Json).map(drop)), Kind::Invalid);
}

#[test]
fn a_broken_config_is_the_persons_to_fix() {
    let (_d, home) = home();
    std::fs::write(home.root.join("config.toml"), "[network]\nallow = 3\n").unwrap();
    let e = agentbox_engine::config::Config::load(&home).unwrap_err();
    assert_eq!(e.kind(), Kind::Invalid);
    assert!(e.to_string().contains("config.toml"), "{e}");
    assert_eq!(Home::at("relative/home".into()).unwrap_err().kind(), Kind::Invalid);
}
