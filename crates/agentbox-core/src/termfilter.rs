//! What the person's terminal may receive from a sandbox.
//!
//! Output relayed from an agent (`attach`, `run`, `exec -t`) goes straight to the person's
//! terminal, which does more than draw: it can set the clipboard (OSC 52), answer queries by
//! typing into its input (title reports, DECRQSS), run file transfers (iTerm2's OSC 1337, kitty's
//! OSC 5113), pass anything to an outer terminal (tmux's DCS passthrough), and it keeps the modes
//! the agent set (mouse tracking, alternate screen, bracketed paste) after the agent is gone.
//!
//! [`TermFilter`] is a streaming filter over those bytes, fed in chunks of any size. It removes:
//! - OSC 52 (clipboard) entirely, unless the person opted in, and then only writes, never reads;
//! - OSC 1337 and OSC 5113 (file transfer), APC, SOS and PM strings (kitty graphics can read
//!   local files);
//! - DCS `$q` (DECRQSS) and DCS `tmux;` (passthrough), and the title and icon-label reports
//!   `CSI 20 t` / `CSI 21 t`, whose answers would be typed into the agent.
//!
//! It passes everything else (colours, cursor movement, titles, hyperlinks, colour and cursor
//! position queries that TUIs need) and records the modes the agent turns on, so that
//! [`TermFilter::restore`] gives the bytes that put the terminal back as it was.

/// What the person allows beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// Let OSC 52 clipboard writes through (never clipboard reads).
    pub clipboard_write: bool,
}

impl FilterOptions {
    /// The person's choice from the environment: `AGENTBOX_CLIPBOARD=write`.
    pub fn from_env_value(value: Option<&str>) -> Self {
        Self { clipboard_write: matches!(value, Some("write" | "1" | "yes" | "true")) }
    }
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;
/// Longest CSI kept whole; longer ones are dropped (no terminal needs more).
const MAX_CSI: usize = 256;
/// Bytes of an OSC or DCS buffered to decide on it.
const MAX_PREFIX: usize = 32;

/// Private modes that are off by default and are turned off again by [`TermFilter::restore`].
const OFF_BY_DEFAULT: &[u16] =
    &[1, 9, 47, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1015, 1016, 1047, 1049, 2004, 2026];
/// Private modes that are on by default (autowrap, cursor visible).
const ON_BY_DEFAULT: &[u16] = &[7, 25];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    Osc,
    Dcs,
    /// APC, SOS, PM: always dropped.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC; `buf` holds it.
    Esc,
    /// Inside `ESC [`; `buf` holds the sequence so far.
    Csi,
    /// Inside an overlong CSI that is being dropped.
    CsiDrop,
    /// Inside an OSC or DCS whose fate is not known yet; `buf` holds it.
    Prefix(Str),
    /// The rest of a string: passed or dropped, up to its terminator. `esc`: the previous byte was
    /// ESC (maybe the start of `ESC \`).
    Body {
        kind: Str,
        pass: bool,
        esc: bool,
    },
}

/// The streaming filter; see the module documentation.
#[derive(Debug, Clone)]
pub struct TermFilter {
    opts: FilterOptions,
    state: State,
    buf: Vec<u8>,
    modes: Modes,
}

/// Terminal state the agent changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Modes {
    /// Off-by-default modes now on, on-by-default modes now off.
    changed: Vec<u16>,
    app_keypad: bool,
    kitty_pushes: u32,
    kitty_flags: bool,
    modify_other_keys: bool,
    cursor_style: bool,
    scroll_region: bool,
}

impl TermFilter {
    pub fn new(opts: FilterOptions) -> Self {
        Self { opts, state: State::Ground, buf: Vec::new(), modes: Modes::default() }
    }

    /// Filters `input`, appending what may reach the terminal to `out`. A sequence split across
    /// calls is held until it is complete.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Ground {
                // Plain text up to the next ESC goes out as one slice.
                let next = input[i..].iter().position(|&b| b == ESC).map_or(input.len(), |p| i + p);
                out.extend_from_slice(&input[i..next]);
                i = next;
                if i == input.len() {
                    break;
                }
            }
            self.byte(input[i], out);
            i += 1;
        }
    }

    /// Filters a whole buffer (one-shot output): [`feed`](Self::feed), then [`finish`](Self::finish).
    pub fn filter(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        self.feed(input, &mut out);
        self.finish(&mut out);
        out
    }

    /// Ends the stream: a string that was being passed gets its terminator (else the terminal
    /// would swallow whatever comes next into it); an unfinished sequence is dropped.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let State::Body { pass: true, .. } = self.state {
            out.extend_from_slice(b"\x1b\\");
        }
        self.buf.clear();
        self.state = State::Ground;
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Ground => {
                if b == ESC {
                    self.buf.clear();
                    self.buf.push(b);
                    self.state = State::Esc;
                } else {
                    out.push(b);
                }
            }
            State::Esc => self.after_esc(b, out),
            State::Csi => self.csi(b, out),
            State::CsiDrop => self.csi_drop(b, out),
            State::Prefix(kind) => self.prefix(kind, b, out),
            State::Body { kind, pass, esc } => self.body(kind, pass, esc, b, out),
        }
    }

    /// A C0 control inside an escape sequence: terminals execute it and carry on with the
    /// sequence, so it goes out at once and the sequence stays pending.
    fn is_executed_control(b: u8) -> bool {
        b < 0x20 && b != ESC && b != CAN && b != SUB
    }

    fn after_esc(&mut self, b: u8, out: &mut Vec<u8>) {
        if Self::is_executed_control(b) {
            out.push(b);
            return;
        }
        self.buf.push(b);
        match b {
            b'[' => self.state = State::Csi,
            b']' => self.state = State::Prefix(Str::Osc),
            b'P' => self.state = State::Prefix(Str::Dcs),
            b'_' | b'X' | b'^' => {
                self.buf.clear();
                self.state = State::Body { kind: Str::Other, pass: false, esc: false };
            }
            ESC => {
                // ESC ESC: the first one does nothing on a terminal; it is not sent, so that no
                // ESC ever goes out ahead of a sequence that is then dropped.
                self.buf.clear();
                self.buf.push(ESC);
            }
            CAN | SUB => {
                self.buf.clear();
                self.state = State::Ground;
            }
            // Intermediate bytes (ESC ( B, ESC # 8, ...): wait for the final byte.
            0x20..=0x2f if self.buf.len() < 4 => {}
            _ => {
                match b {
                    b'=' => self.modes.app_keypad = true,
                    b'>' => self.modes.app_keypad = false,
                    b'c' => self.modes = Modes::default(), // RIS: the terminal resets itself
                    _ => {}
                }
                out.extend_from_slice(&self.buf);
                self.buf.clear();
                self.state = State::Ground;
            }
        }
    }

    fn csi(&mut self, b: u8, out: &mut Vec<u8>) {
        if Self::is_executed_control(b) {
            out.push(b);
            return;
        }
        match b {
            ESC => {
                // A new sequence interrupts an unfinished one, which is dropped.
                self.buf.clear();
                self.buf.push(ESC);
                self.state = State::Esc;
            }
            CAN | SUB => {
                self.buf.clear();
                self.state = State::Ground;
            }
            0x40..=0x7e => {
                self.buf.push(b);
                if self.csi_allowed() {
                    out.extend_from_slice(&self.buf);
                }
                self.buf.clear();
                self.state = State::Ground;
            }
            _ => {
                self.buf.push(b);
                if self.buf.len() > MAX_CSI {
                    // Nothing legitimate is this long: drop it up to its final byte.
                    self.buf.clear();
                    self.state = State::CsiDrop;
                }
            }
        }
    }

    fn csi_drop(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            ESC => {
                self.buf.clear();
                self.buf.push(ESC);
                self.state = State::Esc;
            }
            CAN | SUB | 0x40..=0x7e => self.state = State::Ground,
            b if Self::is_executed_control(b) => out.push(b),
            _ => {}
        }
    }

    /// Decides on a complete CSI in `buf` (`ESC [ ... final`), recording mode changes.
    fn csi_allowed(&mut self) -> bool {
        let body = &self.buf[2..];
        let Some((&last, inner)) = body.split_last() else { return true };
        let params = String::from_utf8_lossy(inner).into_owned();
        match (last, params.as_str()) {
            // Title and icon-label reports: the terminal would type the agent-set title back.
            (b't', "20" | "21") => false,
            (b'h' | b'l', p) if p.starts_with('?') => {
                for n in p[1..].split(';').filter_map(|n| n.parse::<u16>().ok()) {
                    self.modes.private_mode(n, last == b'h');
                }
                true
            }
            (b'u', p) if p.starts_with('>') => {
                self.modes.kitty_pushes = self.modes.kitty_pushes.saturating_add(1).min(1024);
                true
            }
            (b'u', p) if p.starts_with('<') => {
                let n = p[1..].parse::<u32>().unwrap_or(1);
                self.modes.kitty_pushes = self.modes.kitty_pushes.saturating_sub(n);
                true
            }
            (b'u', p) if p.starts_with('=') => {
                self.modes.kitty_flags = true;
                true
            }
            (b'm', p) if p.starts_with('>') => {
                self.modes.modify_other_keys = p != ">4" && p != ">4;0";
                true
            }
            (b'q', p) if p.ends_with(' ') => {
                self.modes.cursor_style = true;
                true
            }
            (b'r', p) if !p.starts_with('?') => {
                self.modes.scroll_region = !p.is_empty();
                true
            }
            _ => true,
        }
    }

    fn prefix(&mut self, kind: Str, b: u8, out: &mut Vec<u8>) {
        if b == CAN || b == SUB {
            self.buf.clear();
            self.state = State::Ground;
            return;
        }
        if Self::is_executed_control(b) && !(b == BEL && kind == Str::Osc) {
            // Ignored inside an OSC, executed inside a DCS's parameters.
            if kind == Str::Dcs {
                out.push(b);
            }
            return;
        }
        let terminated = (b == BEL && kind == Str::Osc) || b == ESC;
        if !terminated {
            self.buf.push(b);
        }
        let decided = match kind {
            Str::Osc => self.osc_decision(terminated),
            Str::Dcs => self.dcs_decision(terminated),
            Str::Other => Some(false),
        };
        let decided = match decided {
            None if self.buf.len() >= MAX_PREFIX => Some(false),
            d => d,
        };
        let Some(pass) = decided else { return };
        if pass {
            out.extend_from_slice(&self.buf);
        }
        self.buf.clear();
        if b == BEL && kind == Str::Osc {
            if pass {
                out.push(BEL);
            }
            self.state = State::Ground;
        } else {
            // An ESC is held until the next byte says whether it is the string terminator.
            self.state = State::Body { kind, pass, esc: b == ESC };
        }
    }

    /// `Some(pass)` once the OSC in `buf` (`ESC ] ...`) can be judged; `terminated`: its end came.
    fn osc_decision(&self, terminated: bool) -> Option<bool> {
        let body = &self.buf[2..];
        let semi = body.iter().position(|&c| c == b';');
        let number = match semi {
            Some(p) => &body[..p],
            None if terminated => body,
            None if body.iter().all(u8::is_ascii_digit) => return None,
            None => return Some(true),
        };
        match number {
            b"52" => {
                if !self.opts.clipboard_write {
                    return Some(false);
                }
                // OSC 52 ; selection ; data: a query has `?` as its data.
                let rest = &body[semi.map_or(body.len(), |p| p + 1)..];
                match rest.iter().position(|&c| c == b';') {
                    Some(p) if rest.len() > p + 1 => Some(rest[p + 1] != b'?'),
                    _ if terminated => Some(false),
                    _ => None,
                }
            }
            b"1337" | b"5113" | b"5522" => Some(false),
            _ => Some(true),
        }
    }

    /// `Some(pass)` once the DCS in `buf` (`ESC P ...`) can be judged.
    fn dcs_decision(&self, terminated: bool) -> Option<bool> {
        let body = &self.buf[2..];
        if body.starts_with(b"tmux;") || body.starts_with(b"$q") {
            return Some(false);
        }
        if b"tmux;".starts_with(body) || b"$q".starts_with(body) {
            return if terminated { Some(false) } else { None };
        }
        Some(true)
    }

    fn body(&mut self, kind: Str, pass: bool, esc: bool, b: u8, out: &mut Vec<u8>) {
        if esc {
            // The held ESC: with `\` it ends the string; with anything else it ends the string
            // and starts a new sequence, and a passed string gets a proper terminator first.
            if pass {
                out.extend_from_slice(b"\x1b\\");
            }
            if b == b'\\' {
                self.state = State::Ground;
                return;
            }
            self.buf.clear();
            self.buf.push(ESC);
            self.state = State::Esc;
            self.byte(b, out);
            return;
        }
        match b {
            ESC => self.state = State::Body { kind, pass, esc: true },
            BEL if kind == Str::Osc => {
                if pass {
                    out.push(BEL);
                }
                self.state = State::Ground;
            }
            CAN | SUB => {
                // The terminal aborts the string too: it must see the abort of one it was sent.
                if pass {
                    out.push(b);
                }
                self.state = State::Ground;
            }
            _ => {
                if pass {
                    out.push(b);
                }
            }
        }
    }

    /// The bytes that undo what the agent changed: modes it turned on, the alternate screen,
    /// keyboard protocols, colours. Sent when a person detaches or the command ends.
    pub fn restore(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.finish(&mut out);
        let m = &self.modes;
        if m.scroll_region {
            out.extend_from_slice(b"\x1b[r");
        }
        for alt in [1049u16, 1047, 47] {
            if m.changed.contains(&alt) {
                out.extend_from_slice(format!("\x1b[?{alt}l").as_bytes());
            }
        }
        for n in &m.changed {
            if [1049u16, 1047, 47].contains(n) {
                continue;
            }
            let set = if ON_BY_DEFAULT.contains(n) { 'h' } else { 'l' };
            out.extend_from_slice(format!("\x1b[?{n}{set}").as_bytes());
        }
        if m.app_keypad {
            out.extend_from_slice(b"\x1b>");
        }
        if m.kitty_pushes > 0 {
            out.extend_from_slice(format!("\x1b[<{}u", m.kitty_pushes).as_bytes());
        }
        if m.kitty_flags {
            out.extend_from_slice(b"\x1b[=0;1u");
        }
        if m.modify_other_keys {
            out.extend_from_slice(b"\x1b[>4m");
        }
        if m.cursor_style {
            out.extend_from_slice(b"\x1b[0 q");
        }
        out.extend_from_slice(b"\x1b[0m");
        out
    }
}

impl Modes {
    fn private_mode(&mut self, n: u16, set: bool) {
        let changed = if ON_BY_DEFAULT.contains(&n) {
            !set
        } else if OFF_BY_DEFAULT.contains(&n) {
            set
        } else {
            return;
        };
        self.changed.retain(|m| *m != n);
        if changed {
            self.changed.push(n);
        }
    }
}

/// Makes an agent-chosen string (a name, a path, a reason, prompt text) safe to print on one line
/// of a terminal: control characters and escape sequences become visible escapes (`\x1b`, `\n`).
pub fn escape_for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            // Bidirectional overrides reorder what the person reads (CVE-2021-42574).
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Vec<u8> {
        TermFilter::new(FilterOptions::default()).filter(input)
    }

    #[test]
    fn ordinary_output_passes_unchanged() {
        let s: &[u8] = b"hello \x1b[1;31mred\x1b[0m \x1b[2J\x1b[H\x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1b[6n \x1b]11;?\x07 \x1b(B \x1bPq#0;2;0;0;0\x1b\\ done";
        assert_eq!(run(s), s);
    }

    #[test]
    fn clipboard_file_transfer_and_reports_are_removed() {
        for (input, want) in [
            (&b"a\x1b]52;c;aGVsbG8=\x07b"[..], &b"ab"[..]),
            (b"a\x1b]52;c;?\x1b\\b", b"ab"),
            (b"a\x1b]1337;File=name=eA==:AAAA\x07b", b"ab"),
            (b"a\x1b]5113;ac=send\x1b\\b", b"ab"),
            (b"a\x1b[21tb\x1b[20t", b"ab"),
            (b"a\x1bP$qm\x1b\\b", b"ab"),
            // A terminal ends the DCS at the inner ESC; the OSC 52 after it is dropped too.
            (b"a\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\b", b"a\x1b\\b"),
            (b"a\x1b_Gf=100,t=f;L2V0Yy9wYXNzd2Q=\x1b\\b", b"ab"),
            (b"a\x1b^pm\x1b\\b\x1bXsos\x1b\\c", b"abc"),
        ] {
            assert_eq!(String::from_utf8_lossy(&run(input)), String::from_utf8_lossy(want), "{input:?}");
        }
    }

    /// A terminal executes C0 controls inside an escape sequence and goes on with it, and an ESC
    /// sent ahead of a dropped sequence would join whatever comes next: neither may smuggle a
    /// clipboard write past the filter.
    #[test]
    fn controls_and_stray_escapes_cannot_smuggle_a_sequence() {
        for input in [
            &b"\x1b\n]52;c;aGk=\x07"[..],
            b"\x1b\x1b[21t]52;c;aGk=\x07",
            b"\x1b]0;t\x1b\x1b[21t]52;c;aGk=\x07",
            b"\x1b]0;t\x1b[21t]52;c;aGk=\x07",
            b"\x1b[\r]52;c;aGk=\x07",
        ] {
            let out = run(input);
            let mut i = 0;
            // Wherever an ESC goes out, the complete sequence it starts goes out with it.
            while let Some(p) = out[i..].iter().position(|&b| b == ESC) {
                let at = i + p;
                assert!(!out[at..].starts_with(b"\x1b]52"), "{input:?} -> {out:?}");
                let next = out.get(at + 1).copied();
                assert!(next.is_some_and(|n| n >= 0x20), "{input:?} -> {out:?}: dangling ESC");
                i = at + 1;
            }
        }
        // A passed string interrupted by another sequence is terminated properly.
        assert_eq!(run(b"\x1b]0;t\x1b[1m"), b"\x1b]0;t\x1b\\\x1b[1m");
    }

    #[test]
    fn clipboard_writes_pass_only_when_opted_in_and_reads_never() {
        let mut f = TermFilter::new(FilterOptions { clipboard_write: true });
        assert_eq!(f.filter(b"\x1b]52;c;aGk=\x07"), b"\x1b]52;c;aGk=\x07");
        assert_eq!(f.filter(b"x\x1b]52;c;?\x07y"), b"xy");
        assert_eq!(FilterOptions::from_env_value(Some("write")), FilterOptions { clipboard_write: true });
        assert_eq!(FilterOptions::from_env_value(None), FilterOptions::default());
    }

    #[test]
    fn modes_the_agent_set_are_restored() {
        let mut f = TermFilter::new(FilterOptions::default());
        f.filter(b"\x1b[?1049h\x1b[?1000;1006h\x1b[?2004h\x1b[?25l\x1b=\x1b[>1u\x1b[2;20r\x1b[5 q");
        let r = String::from_utf8(f.restore()).unwrap();
        for want in [
            "\x1b[?1049l",
            "\x1b[?1000l",
            "\x1b[?1006l",
            "\x1b[?2004l",
            "\x1b[?25h",
            "\x1b>",
            "\x1b[<1u",
            "\x1b[r",
            "\x1b[0 q",
            "\x1b[0m",
        ] {
            assert!(r.contains(want), "{want:?} missing from {r:?}");
        }
        // Modes turned off again need nothing.
        let mut f = TermFilter::new(FilterOptions::default());
        f.filter(b"\x1b[?2004h\x1b[?2004l\x1b[?1000h\x1bc");
        assert_eq!(f.restore(), b"\x1b[0m");
    }

    /// Any input, cut into chunks anywhere, gives the same output as in one piece; nothing
    /// panics; no OSC 52 introducer ever reaches the output.
    #[test]
    fn fuzz_chunking_and_no_clipboard_leak() {
        let mut rng = crate::testing::XorShift::new(0x7e57_f11e_0bad_cafe);
        let alphabet = b"\x1b\x07\\[]P_^X52;c?1337tmux$q0a\x18h\x9b";
        for _ in 0..4000 {
            let n = rng.below(80);
            let input: Vec<u8> = (0..n).map(|_| rng.pick(alphabet)).collect();
            let whole = run(&input);
            let mut f = TermFilter::new(FilterOptions::default());
            let mut chunked = Vec::new();
            let mut i = 0;
            while i < input.len() {
                let step = 1 + rng.below(5);
                f.feed(&input[i..(i + step).min(input.len())], &mut chunked);
                i += step;
            }
            f.finish(&mut chunked);
            assert_eq!(whole, chunked, "{input:?}");
            assert_eq!(run(&whole), whole, "not idempotent: {input:?} -> {whole:?}");
            assert!(!whole.windows(5).any(|w| w == b"\x1b]52;"), "{input:?} -> {whole:?}");
        }
    }

    #[test]
    fn agent_strings_are_escaped_for_terminals() {
        assert_eq!(escape_for_terminal("ok name"), "ok name");
        assert_eq!(escape_for_terminal("a\x1b]52;c;x\x07b\n"), "a\\x1b]52;c;x\\x07b\\n");
        assert_eq!(escape_for_terminal("\u{202e}txt"), "\\u{202e}txt");
    }
}
