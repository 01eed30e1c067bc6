//! `sluicectl watch`: a full-screen view refreshed every interval (services, backends with
//! state, weight, health check and sessions; packets, bytes and connections per second; drops
//! by reason), on ratatui with crossterm. `q` (or Esc, Ctrl-C) quits.

use super::client::{self, Failure};
use super::output::{self, Format};
use super::services::Services;
use super::stats::{Counts, Stats};
use crate::admin::{call, Request, Response};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use std::path::Path;
use std::time::{Duration, Instant};

/// What the screen shows: the last readings, and the last failure to read, if any.
#[derive(Debug, Default)]
pub struct Screen {
    pub interval: Duration,
    pub services: Option<Services>,
    pub totals: Option<Stats<u64>>,
    pub rates: Option<Stats<f64>>,
    pub error: Option<String>,
}

/// Runs until `q`; returns the exit status (that of the first reading if it fails).
pub fn run(socket: &Path, format: Format, interval: Duration) -> u8 {
    let mut screen = Screen { interval, ..Screen::default() };
    if let Err(failure) = screen.refresh(socket) {
        return print(format, &failure);
    }
    if format == Format::Json {
        return json_lines(socket, screen, interval);
    }
    let mut terminal = ratatui::init();
    let quit = live(&mut terminal, socket, &mut screen);
    ratatui::restore();
    match quit {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluicectl: the terminal: {e}");
            2
        }
    }
}

fn print(format: Format, got: &Failure) -> u8 {
    let p = output::render(format, got);
    print!("{}", p.stdout);
    eprint!("{}", p.stderr);
    p.code
}

/// `-o json`: the rates, one line per interval, until a reading fails.
fn json_lines(socket: &Path, mut screen: Screen, interval: Duration) -> u8 {
    loop {
        std::thread::sleep(interval);
        if let Err(failure) = screen.refresh(socket) {
            return print(Format::Json, &failure);
        }
        if let Some(rates) = &screen.rates {
            print(Format::Json, &Ok(super::answer(rates)));
        }
    }
}

/// Draws, refreshes every interval, until a quitting key.
fn live(terminal: &mut ratatui::DefaultTerminal, socket: &Path, screen: &mut Screen) -> std::io::Result<()> {
    let mut next = Instant::now() + screen.interval;
    loop {
        terminal.draw(|f| draw(f, screen))?;
        while let Some(wait) = next.checked_duration_since(Instant::now()) {
            if event::poll(wait)? && quits(&event::read()?) {
                return Ok(());
            }
        }
        next += screen.interval;
        // A failed reading stays on screen until one succeeds.
        let _ = screen.refresh(socket);
    }
}

/// `q`, Esc or Ctrl-C.
pub fn quits(e: &Event) -> bool {
    let Event::Key(k) = e else { return false };
    k.kind == KeyEventKind::Press
        && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)))
}

impl Screen {
    /// Reads services and stats again; the rates are from the previous stats to these.
    fn refresh(&mut self, socket: &Path) -> Result<(), Failure> {
        let got = read_services(socket).and_then(|s| Ok((s, client::stats(socket)?)));
        match got {
            Ok((services, totals)) => {
                self.rates = self.totals.as_ref().map(|before| totals.rate_since(before));
                (self.services, self.totals, self.error) = (Some(services), Some(totals), None);
                Ok(())
            }
            Err(failure) => {
                self.error = Some(output::render(Format::Text, &failure).stderr.trim_end().to_string());
                Err(failure)
            }
        }
    }
}

fn read_services(socket: &Path) -> Result<Services, Failure> {
    match call(socket, &Request::Services) {
        Ok(Response::Ok { data: Some(d), .. }) => serde_json::from_value(d)
            .map_err(|e| Err(format!("sluiced answered services in another shape: {e}"))),
        Ok(Response::Ok { .. }) => {
            Err(Err("sluiced answered services without data (an older sluiced?)".into()))
        }
        other => Err(other),
    }
}

/// The whole screen: a title line, the services table, the drops table.
pub fn draw(f: &mut Frame, screen: &Screen) {
    let drops = drop_rows(screen);
    let [title, services, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(drops.len() as u16 + 3),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(title_line(screen)), title);
    let header = Row::new([
        "SERVICE/BACKEND",
        "ADDRESS",
        "STATE",
        "WEIGHT",
        "SESSIONS",
        "PKT/S",
        "BYTES/S",
        "CONN/S",
        "CHECK",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [14, 24, 9, 6, 8, 10, 12, 8, 40].map(Constraint::Min);
    let table =
        Table::new(service_rows(screen), widths).header(header).block(Block::bordered().title(" services "));
    f.render_widget(table, services);
    let header = Row::new(["REASON", "PER S", "TOTAL"]).style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [24, 10, 14].map(Constraint::Length);
    f.render_widget(
        Table::new(drops, widths).header(header).block(Block::bordered().title(" drops ")),
        bottom,
    );
}

fn title_line(screen: &Screen) -> Line<'static> {
    let generation = screen.services.as_ref().map_or_else(|| "-".into(), |s| s.generation.to_string());
    let mut text = format!("sluicectl watch: generation {generation}, every {:?}; q quits", screen.interval);
    if let Some(e) = &screen.error {
        text = format!("{text}; {e}");
    }
    Line::from(text)
}

/// A service's line, then one per backend.
fn service_rows(screen: &Screen) -> Vec<Row<'static>> {
    let Some(services) = &screen.services else { return Vec::new() };
    let rates = screen.rates.as_ref();
    let mut rows = Vec::new();
    for s in &services.services {
        let rate = rates.and_then(|r| r.services.iter().find(|x| x.id == s.id));
        let counts = rate.map(|r| r.counts);
        rows.push(row(
            [s.name.clone(), s.vip.clone(), String::new(), String::new(), s.sessions.to_string()],
            counts,
            String::new(),
        ));
        for b in &s.backends {
            let counts = rate.and_then(|r| r.backends.iter().find(|x| x.id == b.id)).map(|x| x.counts);
            let fields = [
                String::new(),
                b.label.clone(),
                b.state.clone(),
                b.weight.to_string(),
                b.sessions.to_string(),
            ];
            rows.push(row(fields, counts, b.check.clone().unwrap_or_else(|| "unchecked".into())));
        }
    }
    rows
}

fn row(fields: [String; 5], rates: Option<Counts<f64>>, check: String) -> Row<'static> {
    let per_s = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    let [a, b, c, d, e] = fields;
    Row::new([
        a,
        b,
        c,
        d,
        e,
        per_s(rates.map(|r| r.packets)),
        per_s(rates.map(|r| r.bytes)),
        per_s(rates.map(|r| r.connections)),
        check,
    ])
}

/// Drops by reason, those with any so far.
fn drop_rows(screen: &Screen) -> Vec<Row<'static>> {
    let Some(totals) = &screen.totals else { return Vec::new() };
    totals
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| {
            let rate = screen
                .rates
                .as_ref()
                .and_then(|r| r.drops.get(reason))
                .map_or_else(|| "-".into(), |r| format!("{r:.0}"));
            Row::new([reason.clone(), rate, n.to_string()])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::services::tests::services;
    use crate::ctl::stats::tests::reading;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyEvent;
    use ratatui::Terminal;

    /// The screen drawn on a 160 x 30 terminal, as lines of text, borders blanked.
    fn shown(screen: &Screen) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(160, 30)).unwrap();
        t.draw(|f| draw(f, screen)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().replace('│', " ")).collect())
            .collect()
    }

    fn line_with<'a>(lines: &'a [String], text: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in\n{}", lines.join("\n")))
    }

    #[test]
    fn shows_rates_per_service_and_backend_with_state_and_drops() {
        let screen = Screen {
            interval: Duration::from_secs(1),
            services: Some(services()),
            totals: Some(reading(2000, 2)),
            rates: Some(reading(2000, 2).rate_since(&reading(1000, 1))),
            error: None,
        };
        let lines = shown(&screen);
        let web: Vec<&str> = line_with(&lines, "198.18.0.10:80").split_whitespace().collect();
        // name, vip, sessions, packets/s, bytes/s, connections/s.
        assert_eq!(web[..6], ["web", "198.18.0.10:80", "8", "300", "30000", "30"], "{web:?}");
        let b: Vec<&str> = line_with(&lines, "198.19.0.12").split_whitespace().collect();
        assert_eq!(b[..8], ["198.19.0.12", "drained", "1", "4", "200", "20000", "20", "unchecked"], "{b:?}");
        let drops: Vec<&str> = line_with(&lines, "no_backend").split_whitespace().collect();
        assert_eq!(drops[..3], ["no_backend", "4", "8"]);
        assert!(line_with(&lines, "generation 2").contains("q quits"));
    }

    #[test]
    fn no_rates_before_the_second_reading() {
        let screen = Screen {
            interval: Duration::from_secs(1),
            services: Some(services()),
            totals: Some(reading(1000, 1)),
            error: Some("sluicectl: sluiced is not running".into()),
            ..Screen::default()
        };
        let lines = shown(&screen);
        let web: Vec<&str> = line_with(&lines, "198.18.0.10:80").split_whitespace().collect();
        assert_eq!(web[3..6], ["-", "-", "-"], "{web:?}");
        assert!(line_with(&lines, "generation 2").contains("sluiced is not running"));
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |c, m| Event::Key(KeyEvent::new(c, m));
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&Event::FocusGained));
    }
}
