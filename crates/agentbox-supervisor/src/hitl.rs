//! Recognising a screen that waits on a person.
//!
//! The supervisor calls [`detect`] on the agent's screen once output has settled. It looks at the
//! bottom of the screen, where prompts are, and scores what it finds:
//! - an explicit answer format at the end of a line (`[Y/n]`, `(yes/no)`, `(Y)es/(N)o [Yes]:`);
//! - a numbered menu with a selection cursor (the permission and setup dialogs of Claude Code,
//!   Codex and Gemini CLI draw these), or under a question;
//! - a confirmation phrase ("Do you want to proceed", "Do you trust the files", "Press enter to
//!   continue") next to a menu or ending a line with `?`;
//! - any last line that ends with `?`, but only once the agent has been quiet for the idle time:
//!   a question in passing output must not page anyone.
//!
//! A shell prompt (`user@host:~$`, `#`, `>>>`) as the last line vetoes everything: output above
//! it, however questioning, has been answered or was not a question. Scores are in 0..=1; the
//! supervisor opens a request at or above its threshold (0.85 by default).

use agentbox_core::HitlKind;
use std::time::Duration;

/// What the detector found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `yes-no`, `choices`, `confirm` or `question`.
    pub kind: HitlKind,
    pub score: f64,
    /// The line that asks (the question above a menu, or the prompt line).
    pub prompt: String,
}

/// Tuning for the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitlConfig {
    /// Open a request at or above this score.
    pub threshold: f64,
    /// Quiet time after which a last line ending in `?` counts as a question.
    pub idle: Duration,
    /// Quiet time before the screen is looked at (so a half-drawn screen is not judged).
    pub settle: Duration,
}

impl Default for HitlConfig {
    fn default() -> Self {
        Self { threshold: 0.85, idle: Duration::from_secs(30), settle: Duration::from_millis(400) }
    }
}

/// How many lines at the bottom of the screen are looked at.
const TAIL: usize = 16;

const FRAME_CHARS: &[char] = &['│', '┃', '║', '|', '╭', '╮', '╰', '╯', '─', '━', '═', '▌', '▐', '╌'];
const CURSORS: &[&str] = &["❯", "›", ">", "▶", "→", "●", "◉", "*", "▸", "➤"];

/// A line without the box drawing around it and surrounding blanks.
fn clean(line: &str) -> &str {
    line.trim().trim_matches(FRAME_CHARS).trim()
}

fn is_rule(line: &str) -> bool {
    !line.is_empty() && line.chars().all(|c| FRAME_CHARS.contains(&c) || c.is_whitespace())
}

/// `1. Yes`, `❯ 2) No`, `● 1. Trust folder`: the item's number and whether a cursor marks it.
fn menu_item(line: &str) -> Option<(u32, bool)> {
    let mut rest = line;
    let mut cursor = false;
    for c in CURSORS {
        if let Some(r) = rest.strip_prefix(c) {
            rest = r.trim_start();
            cursor = true;
            break;
        }
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    let after = &rest[digits.len()..];
    let after = after.strip_prefix('.').or_else(|| after.strip_prefix(')'))?;
    if !after.starts_with(' ') || after.trim().is_empty() {
        return None;
    }
    Some((digits.parse().ok()?, cursor))
}

/// Answer formats that end a prompt line. Matched on lowercase text.
const ANSWER_FORMATS: &[&str] = &[
    "[y/n]",
    "(y/n)",
    "[yes/no]",
    "(yes/no)",
    "(y/n)?",
    "[y/n]?",
    "(y)es/(n)o",
    "y/n?",
    "(y)",
    "[y]",
    "(yes/no/[fingerprint])",
];

/// What may follow an answer format on its line: punctuation, blanks and a `[default]`.
fn only_trailer(rest: &str) -> bool {
    let mut s = rest.trim();
    loop {
        s = s.trim_start_matches([':', '?', '>', ' ', '.']);
        if s.is_empty() {
            return true;
        }
        if s.starts_with('[') || s.starts_with('(') {
            let close = if s.starts_with('[') { ']' } else { ')' };
            match s.find(close) {
                Some(end) if end <= 24 => s = &s[end + 1..],
                _ => return false,
            }
        } else {
            // A default spelled out, such as aider's `[Yes]:`, has been consumed above; a
            // typed answer (`[y/N] y`) has not, and means the prompt was answered.
            return false;
        }
    }
}

fn answer_format(line: &str) -> bool {
    let lower = line.to_lowercase();
    ANSWER_FORMATS.iter().any(|f| lower.rfind(f).is_some_and(|at| only_trailer(&lower[at + f.len()..])))
}

/// Phrases of confirmation dialogs. Matched on lowercase text.
const CONFIRM_PHRASES: &[&str] = &[
    "do you want to",
    "would you like to",
    "are you sure",
    "press enter to continue",
    "do you trust",
    "is this a project you created or one you trust",
    "allow execution",
    "allow command",
    "waiting for approval",
    "requires approval",
    "approve this",
    "ok to proceed",
    "proceed?",
    "continue?",
    "enter to confirm",
    "enter to select",
    "use enter to select",
];

fn confirm_phrase(line: &str) -> bool {
    let lower = line.to_lowercase();
    CONFIRM_PHRASES.iter().any(|p| lower.contains(p))
}

/// A shell or REPL prompt waiting for a command: `user@host:~/x$`, `bash-5.2#`, `% `, `>>>`.
pub fn is_shell_prompt(line: &str) -> bool {
    let t = line.trim_end();
    if t.is_empty() {
        return false;
    }
    if matches!(t, ">>>" | "..." | "$" | "#" | "%" | ">" | "❯" | "»") {
        return true;
    }
    if t.starts_with("In [") && t.ends_with("]:") {
        return true;
    }
    let Some(last) = t.chars().last() else { return false };
    if !matches!(last, '$' | '#' | '%' | '>' | '»') {
        return false;
    }
    // Something like a prompt before the sign: user@host, a path, a (venv), bash-5.2.
    let head = &t[..t.len() - last.len_utf8()];
    head.contains('@')
        || head.contains(':')
        || head.contains('~')
        || head.contains('/')
        || head.ends_with(')')
        || head.starts_with("bash-")
        || head.starts_with("sh-")
        || head.starts_with("zsh")
}

/// Scores the screen (its text, rows separated by newlines). `idle` is how long the agent has
/// been quiet. Returns the best finding, whatever its score; callers compare with their threshold.
pub fn detect(screen: &str, idle: Duration, cfg: &HitlConfig) -> Option<Detection> {
    let rows: Vec<&str> = screen.lines().collect();
    let end = rows.iter().rposition(|r| !clean(r).is_empty() && !is_rule(r))? + 1;
    let raw_last = rows[end - 1].trim_end();
    if is_shell_prompt(raw_last) {
        return None;
    }
    let start = end.saturating_sub(TAIL);
    let tail: Vec<&str> =
        rows[start..end].iter().map(|r| clean(r)).filter(|r| !r.is_empty() && !is_rule(r)).collect();
    let last = *tail.last()?;
    let mut best: Option<Detection> = None;
    let mut offer = |kind: HitlKind, score: f64, prompt: &str| {
        if best.as_ref().is_none_or(|b| score > b.score) {
            best = Some(Detection { kind, score, prompt: prompt.chars().take(300).collect() });
        }
    };

    // An answer format on the last line, or close above a hint line.
    for (i, line) in tail.iter().rev().take(3).enumerate() {
        if answer_format(line) {
            offer(HitlKind::YesNo, if i == 0 { 0.95 } else { 0.85 }, line);
        }
    }

    // A numbered menu: consecutive items from 1, in the bottom part of the screen.
    let items: Vec<(usize, u32, bool)> =
        tail.iter().enumerate().filter_map(|(i, l)| menu_item(l).map(|(n, c)| (i, n, c))).collect();
    let menu_ok = items.len() >= 2
        && items.first().is_some_and(|m| m.1 == 1)
        && items.windows(2).all(|w| w[1].1 == w[0].1 + 1 && w[1].0 - w[0].0 <= 3)
        && items.last().is_some_and(|m| tail.len() - m.0 <= 8);
    if menu_ok {
        let first = items[0].0;
        let cursor = items.iter().any(|m| m.2);
        let question = tail[..first].iter().rev().take(4).find(|l| l.ends_with('?') || confirm_phrase(l));
        let hint = tail[items[items.len() - 1].0 + 1..].iter().any(|l| confirm_phrase(l));
        let prompt = question.copied().unwrap_or(tail[first]);
        let score = match (cursor, question.is_some() || hint) {
            (true, true) => 0.95,
            (true, false) => 0.85,
            (false, true) => 0.85,
            (false, false) => 0.4,
        };
        offer(HitlKind::Choices, score, prompt);
    }

    // Confirmation phrases near the bottom.
    for (i, line) in tail.iter().rev().take(4).enumerate() {
        if confirm_phrase(line) {
            let ends_question = line.ends_with('?') || line.ends_with("? ");
            let score = match (i, ends_question) {
                (0, true) => 0.9,
                (0, false) => 0.7,
                (_, true) => 0.75,
                _ => 0.5,
            };
            offer(HitlKind::Confirm, score, line);
        }
    }

    // A plain question, once the agent has gone quiet after asking it.
    let q = last.trim_end_matches([' ', ':']);
    if q.ends_with('?') && q.len() > 2 {
        let score = if idle >= cfg.idle { 0.9 } else { 0.5 };
        offer(HitlKind::Question, score, last);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(screen: &str, idle_secs: u64) -> f64 {
        detect(screen, Duration::from_secs(idle_secs), &HitlConfig::default()).map_or(0.0, |d| d.score)
    }

    #[test]
    fn answer_formats() {
        assert!(score("Overwrite config? [y/N] ", 0) >= 0.85);
        assert!(score("Continue (yes/no)?", 0) >= 0.85);
        assert!(score("Add .aider* to .gitignore (recommended)? (Y)es/(N)o [Yes]: ", 0) >= 0.85);
        // Answered: the typed answer follows the format.
        assert!(score("Overwrite config? [y/N] y", 0) < 0.85);
        assert!(score("Overwrite config? [y/N] y\nwriting config\ndone", 0) < 0.85);
        // A format mentioned in passing text is not a prompt.
        assert!(score("use [y/n] prompts to confirm each step of the install", 0) < 0.85);
    }

    #[test]
    fn menus_need_a_cursor_or_a_question() {
        let dialog = "Do you want to create hello.txt?\n ❯ 1. Yes\n   2. Yes, allow all edits\n   3. No\n\n Esc to cancel";
        let d = detect(dialog, Duration::ZERO, &HitlConfig::default()).unwrap();
        assert_eq!((d.kind, d.prompt.as_str()), (HitlKind::Choices, "Do you want to create hello.txt?"));
        assert!(d.score >= 0.85);
        let readme = "Steps:\n1. Install the tools\n2. Run the build\n3. Ship it";
        assert!(score(readme, 0) < 0.85);
        assert!(score(readme, 3600) < 0.85);
        // Not consecutive from 1: a numbered log, not a menu.
        assert!(score("❯ 4. four\n  7. seven", 0) < 0.85);
    }

    #[test]
    fn shell_prompts_veto() {
        for p in
            ["dev@box:~/app$ ", "bash-5.2# ", "(venv) dev@box:~$", ">>> ", "In [3]: ", "% ", "root@host:/# "]
        {
            assert!(is_shell_prompt(p), "{p}");
            assert_eq!(score(&format!("Really delete? [y/N] y\n{p}"), 3600), 0.0, "{p}");
        }
        for p in ["Continue? [y/N]", "Enter a number > 5", "is this ok?"] {
            assert!(!is_shell_prompt(p), "{p}");
        }
    }

    #[test]
    fn questions_count_only_after_the_idle_time() {
        assert!(score("building...\nWhich branch should I use?", 1) < 0.85);
        assert!(score("building...\nWhich branch should I use?", 30) >= 0.85);
        assert_eq!(score("", 3600), 0.0);
        assert_eq!(score("\n\n   \n", 3600), 0.0);
    }
}
