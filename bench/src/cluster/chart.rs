//! The cluster scenario's chart: a hand-written SVG of horizontal bar
//! panels, so the report needs no plotting tool.

use std::fmt::Write;

/// One bar: its label, its value, the text written after it, and its
/// colour (an SVG colour).
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub text: String,
    pub colour: &'static str,
}

/// A panel of bars sharing one linear scale from zero.
pub struct Panel {
    pub title: String,
    pub bars: Vec<Bar>,
}

const WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 250.0;
const TEXT_WIDTH: f64 = 140.0;
const BAR_HEIGHT: f64 = 18.0;
const BAR_GAP: f64 = 6.0;
const TITLE_HEIGHT: f64 = 28.0;
const PANEL_GAP: f64 = 18.0;
/// Colours for bars that are different things.
pub const COLOURS: [&str; 4] = ["#4878a8", "#e08a3c", "#5a9e5a", "#b85450"];

/// Escape text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `panels` stacked under `title`, with `caption` below them.
pub fn svg(title: &str, panels: &[Panel], caption: &str) -> String {
    let mut body = String::new();
    let mut y = 34.0;
    for panel in panels {
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#,
            y + 16.0,
            escape(&panel.title)
        );
        y += TITLE_HEIGHT;
        let max = panel.bars.iter().map(|b| b.value).fold(0.0, f64::max);
        let span = WIDTH - LABEL_WIDTH - TEXT_WIDTH - 20.0;
        for bar in &panel.bars {
            let width = if max > 0.0 {
                bar.value / max * span
            } else {
                0.0
            };
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LABEL_WIDTH,
                y + 13.0,
                escape(&bar.label)
            );
            let _ = writeln!(
                body,
                r#"<rect x="{:.1}" y="{y:.1}" width="{width:.1}" height="{BAR_HEIGHT}" fill="{}"/>"#,
                LABEL_WIDTH + 8.0,
                bar.colour
            );
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                LABEL_WIDTH + 14.0 + width,
                y + 13.0,
                escape(&bar.text)
            );
            y += BAR_HEIGHT + BAR_GAP;
        }
        y += PANEL_GAP;
    }
    let _ = writeln!(
        body,
        r##"<text x="10" y="{:.1}" font-size="11" fill="#555555">{}</text>"##,
        y + 4.0,
        escape(caption)
    );
    let height = y + 20.0;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">{}</text>
{body}</svg>
"#,
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_longest_and_text_is_escaped() {
        let panel = Panel {
            title: "a <b>".into(),
            bars: vec![
                Bar {
                    label: "x & y".into(),
                    value: 2.0,
                    text: "2".into(),
                    colour: COLOURS[0],
                },
                Bar {
                    label: "z".into(),
                    value: 1.0,
                    text: "1".into(),
                    colour: COLOURS[1],
                },
            ],
        };
        let svg = svg("t", &[panel], "c");
        let span = WIDTH - LABEL_WIDTH - TEXT_WIDTH - 20.0;
        assert!(svg.contains(&format!("width=\"{span:.1}\"")), "{svg}");
        assert!(
            svg.contains(&format!("width=\"{:.1}\"", span / 2.0)),
            "{svg}"
        );
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("x &amp; y"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
