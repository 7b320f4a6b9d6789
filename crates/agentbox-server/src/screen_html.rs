//! An agent's screen as HTML with its colours: the supervisor's formatted screen (escape
//! sequences) replayed through a terminal model of the agent's size, each run of cells with the
//! same colours and weight one `<span>`. The text is escaped by maud; only colours from the
//! model's own palette reach the style attribute.

use maud::{html, Markup};

/// The 16 colours of a terminal's palette (xterm's defaults).
const BASIC: [(u8, u8, u8); 16] = [
    (0, 0, 0),
    (205, 0, 0),
    (0, 205, 0),
    (205, 205, 0),
    (0, 0, 238),
    (205, 0, 205),
    (0, 205, 205),
    (229, 229, 229),
    (127, 127, 127),
    (255, 0, 0),
    (0, 255, 0),
    (255, 255, 0),
    (92, 92, 255),
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 255),
];

/// A colour as CSS, or None for the terminal's default.
fn css(c: vt100::Color) -> Option<String> {
    let (r, g, b) = match c {
        vt100::Color::Default => return None,
        vt100::Color::Rgb(r, g, b) => (r, g, b),
        vt100::Color::Idx(i @ 0..=15) => BASIC[usize::from(i)],
        vt100::Color::Idx(i @ 16..=231) => {
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            let i = i - 16;
            (level(i / 36), level((i / 6) % 6), level(i % 6))
        }
        vt100::Color::Idx(i) => {
            let v = 8 + (i - 232) * 10;
            (v, v, v)
        }
    };
    Some(format!("#{r:02x}{g:02x}{b:02x}"))
}

/// The style of a cell: colours (swapped when inverse) and weight. Empty for plain text.
fn style(cell: &vt100::Cell) -> String {
    let (mut fg, mut bg) = (css(cell.fgcolor()), css(cell.bgcolor()));
    if cell.inverse() {
        (fg, bg) = (bg.or_else(|| Some("#111111".into())), fg.or_else(|| Some("#dddddd".into())));
    }
    let mut s = String::new();
    if let Some(fg) = fg {
        s.push_str(&format!("color:{fg};"));
    }
    if let Some(bg) = bg {
        s.push_str(&format!("background:{bg};"));
    }
    if cell.bold() {
        s.push_str("font-weight:bold;");
    }
    s
}

/// `ansi` (a formatted screen) drawn at `rows` x `cols`, as lines of styled runs.
pub fn screen(ansi: &[u8], rows: u16, cols: u16) -> Markup {
    let nz = |n: u16| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
    let mut parser = vt100::Parser::new(nz(rows), nz(cols), 0);
    parser.process(ansi);
    let screen = parser.screen();
    let mut lines: Vec<Vec<(String, String)>> = Vec::new();
    for row in 0..rows {
        let mut runs: Vec<(String, String)> = Vec::new();
        for col in 0..cols {
            let Some(cell) = screen.cell(row, col) else { continue };
            if cell.is_wide_continuation() {
                continue;
            }
            let text = if cell.has_contents() { cell.contents() } else { " " };
            let st = style(cell);
            match runs.last_mut() {
                Some((s, t)) if *s == st => t.push_str(text),
                _ => runs.push((st, text.to_string())),
            }
        }
        // Trailing unstyled blanks are not drawn.
        if let Some((s, t)) = runs.last_mut() {
            if s.is_empty() {
                t.truncate(t.trim_end().len());
            }
        }
        lines.push(runs);
    }
    while lines.last().is_some_and(|l| l.iter().all(|(s, t)| s.is_empty() && t.is_empty())) {
        lines.pop();
    }
    html! {
        @for line in &lines {
            @for (st, text) in line {
                @if st.is_empty() { (text) } @else { span style=(st) { (text) } }
            }
            "\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_text_stays_escaped() {
        let html = screen(b"\x1b[31mred\x1b[0m <b>&\r\n\x1b[1;44mbold\x1b[0m", 24, 80).into_string();
        assert_eq!(
            html,
            "<span style=\"color:#cd0000;\">red</span> &lt;b&gt;&amp;\n\
             <span style=\"background:#0000ee;font-weight:bold;\">bold</span>\n"
        );
        assert_eq!(css(vt100::Color::Idx(196)).as_deref(), Some("#ff0000"));
        assert_eq!(css(vt100::Color::Idx(244)).as_deref(), Some("#808080"));
    }
}
