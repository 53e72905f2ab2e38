//! Drawing: the process table (tree-indented PIDs, sizes, ledger columns, growth and a PSS
//! sparkline), the detail view of one process, the help line and overlay. Every string from a
//! target (comm, cmdline, type names) goes through `escape::terminal` first.

use std::time::Instant;

use memlens_model::category::Category;
use memlens_model::units::SizeStyle;
use memlens_report::escape;
use memlens_report::recording_text::sparkline;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line as TextLine;
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use crate::app::{App, CensusState, LedgerEntry};

/// The help line at the bottom.
pub const HELP_LINE: &str = "q quit  ↑↓/j k select  Enter details  / filter  sort: p PSS  u USS  s swap  g growth  n name  h help";

const HELP: &[&str] = &[
    "memlens top: the host's Python processes as trees",
    "",
    "  q, Esc, Ctrl-C   quit (Esc leaves the detail view first)",
    "  ↑ ↓, j k         select a process; PgUp PgDn by ten",
    "  Enter            the selected process's ledger by category",
    "  c                (detail view) census of its objects: PAUSES the process briefly",
    "  /                filter by name or command line (Enter keeps it, Esc clears it)",
    "  p u s g n        sort by PSS, USS, swap, growth per second, name",
    "",
    "PSS/USS/swap: the kernel's smaps_rollup at every refresh. python-heap, native-heap,",
    "shared/copied (pages still shared with the parent / copied since the fork): from full",
    "ledgers of the trees on screen, read within a budget of half the interval per refresh.",
    "growth/s: PSS change over the last refresh interval.",
    "",
    "any key closes this help",
];

/// The view's styles: colours unless `NO_COLOR`, which keeps only bold and reverse video.
struct Styles {
    header: Style,
    selected: Style,
    dim: Style,
    warn: Style,
}

impl Styles {
    fn new(no_color: bool) -> Styles {
        if no_color {
            Styles {
                header: Style::default().add_modifier(Modifier::BOLD),
                selected: Style::default().add_modifier(Modifier::REVERSED),
                dim: Style::default(),
                warn: Style::default().add_modifier(Modifier::BOLD),
            }
        } else {
            Styles {
                header: Style::default()
                    .fg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
                selected: Style::default().bg(Color::Blue).fg(Color::White),
                dim: Style::default().fg(Color::DarkGray),
                warn: Style::default().fg(Color::Yellow),
            }
        }
    }
}

/// Draws the whole view.
pub fn draw(f: &mut Frame, app: &mut App) {
    let st = Styles::new(app.opts.no_color);
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(status_line(app)).style(st.header), top);
    match app.detail {
        Some(pid) => draw_detail(f, app, pid, body, &st),
        None => draw_table(f, app, body, &st),
    }
    let bottom_text = if app.editing_filter {
        format!(
            "filter: {}_   (Enter keep, Esc clear)",
            escape::terminal(&app.filter)
        )
    } else if app.detail.is_some() {
        "Esc back  c census (pauses the process briefly)  ↑↓ other process  q quit".to_string()
    } else {
        HELP_LINE.to_string()
    };
    f.render_widget(Paragraph::new(bottom_text).style(st.dim), bottom);
    if app.help {
        let area = centered(f.area(), 92, HELP.len() as u16 + 2);
        f.render_widget(Clear, area);
        let text: Vec<TextLine> = HELP.iter().map(|l| TextLine::from(*l)).collect();
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" help ")),
            area,
        );
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn status_line(app: &App) -> String {
    let sizes = SizeStyle::exact(app.opts.bytes);
    let procs: usize = app.trees.iter().map(|(_, p)| p.len()).sum();
    let pss: u64 = app
        .trees
        .iter()
        .flat_map(|(_, p)| p.iter())
        .map(|p| p.totals.pss)
        .sum();
    let mut s = format!(
        "memlens top  {procs} Python processes in {} trees  PSS {}  every {:?}  sort: {}",
        app.trees.len(),
        sizes.size(pss),
        app.opts.interval,
        app.sort.name()
    );
    if !app.filter.is_empty() {
        s.push_str(&format!("  filter: {}", escape::terminal(&app.filter)));
    }
    if app.unreadable > 0 {
        s.push_str(&format!("  {} unreadable (permission)", app.unreadable));
    }
    if !app.ledger_errors.is_empty() {
        s.push_str(&format!("  {} ledgers failed", app.ledger_errors.len()));
    }
    if let Some(e) = &app.ps_error {
        s.push_str(&format!("  ps failed: {}", escape::terminal(e)));
    }
    if app.ps_at.is_none() && app.ps_error.is_none() {
        s.push_str("  reading...");
    }
    s
}

fn category_pss(e: Option<&LedgerEntry>, c: Category) -> Option<u64> {
    e.map(|e| e.ledger.row(c).map_or(0, |r| r.amounts.pss))
}

/// `shared/copied` of a worker, `-` for a root, `n/a` when not measured, `...` not yet read.
fn sharing_cell(e: Option<&LedgerEntry>, sizes: SizeStyle) -> String {
    let Some(e) = e else { return "...".into() };
    match &e.ledger.sharing {
        None => "-".into(),
        Some(s) => match &s.figures {
            Some(f) if s.measured => format!(
                "{}/{}",
                sizes.size(f.shared_with_parent),
                sizes.size(f.copied)
            ),
            _ => "n/a".into(),
        },
    }
}

fn opt_size(v: Option<u64>, sizes: SizeStyle) -> String {
    v.map_or_else(|| "...".into(), |v| sizes.size(v).to_string())
}

fn draw_table(f: &mut Frame, app: &mut App, area: Rect, st: &Styles) {
    let sizes = SizeStyle::exact(app.opts.bytes);
    let lines = app.lines();
    let header = Row::new([
        "PID",
        "NAME",
        "PSS",
        "USS",
        "SWAP",
        "PY-HEAP",
        "NATIVE",
        "SHARED/COPIED",
        "GROWTH/s",
        "PSS HISTORY",
    ])
    .style(st.header);
    let selected_at = app
        .selected
        .and_then(|s| lines.iter().position(|l| l.process.pid == s));
    let visible = usize::from(area.height.saturating_sub(1)).max(1);
    let first = selected_at.map_or(0, |i| (i + 1).saturating_sub(visible));
    app.window = (first, visible);
    let rows = lines
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(i, l)| {
            let p = &l.process;
            let e = app.ledgers.get(&p.pid);
            let indent = if l.depth == 0 {
                String::new()
            } else {
                format!("{}└ ", "  ".repeat(l.depth as usize - 1))
            };
            let history: Vec<u64> = app
                .history
                .get(&p.pid)
                .map(|h| h.iter().map(|(_, v)| *v).collect())
                .unwrap_or_default();
            let growth = app
                .growth(p.pid)
                .map_or_else(|| "...".into(), |g| format_growth(g, sizes));
            let row = Row::new(vec![
                Cell::from(format!("{indent}{}", p.pid)),
                Cell::from(escape::terminal(&p.name)),
                Cell::from(sizes.size(p.totals.pss).to_string()),
                Cell::from(sizes.size(p.totals.uss).to_string()),
                Cell::from(sizes.size(p.totals.swap).to_string()),
                Cell::from(opt_size(category_pss(e, Category::PythonHeap), sizes)),
                Cell::from(opt_size(category_pss(e, Category::NativeHeap), sizes)),
                Cell::from(sharing_cell(e, sizes)),
                Cell::from(growth),
                Cell::from(sparkline(&history, 24)),
            ]);
            if Some(i) == selected_at {
                row.style(st.selected)
            } else {
                row
            }
        });
    let wide = if app.opts.bytes { 12 } else { 10 };
    let widths = [
        Constraint::Length(14),
        Constraint::Length(18),
        Constraint::Length(wide),
        Constraint::Length(wide),
        Constraint::Length(wide),
        Constraint::Length(wide),
        Constraint::Length(wide),
        Constraint::Length(2 * wide + 1),
        Constraint::Length(if app.opts.bytes { 20 } else { 14 }),
        Constraint::Min(10),
    ];
    if lines.is_empty() {
        let text = if app.ps_at.is_none() {
            "reading the process list..."
        } else if app.filter.is_empty() {
            "no Python process found"
        } else {
            "no process matches the filter"
        };
        f.render_widget(Paragraph::new(text).style(st.dim), area);
        return;
    }
    f.render_widget(Table::new(rows, widths).header(header), area);
}

fn format_growth(g: f64, sizes: SizeStyle) -> String {
    let sign = if g < 0.0 { "-" } else { "+" };
    let r = sizes.rate(g.abs()).to_string();
    format!("{sign}{r}")
}

fn draw_detail(f: &mut Frame, app: &App, pid: u32, area: Rect, st: &Styles) {
    let sizes = SizeStyle::exact(app.opts.bytes);
    let proc = app
        .trees
        .iter()
        .flat_map(|(_, p)| p.iter())
        .find(|p| p.pid == pid);
    let Some(proc) = proc else {
        f.render_widget(
            Paragraph::new(format!("process {pid} is gone (Esc to go back)")).style(st.warn),
            area,
        );
        return;
    };
    let [head, spark, ledger, census] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(4),
        Constraint::Length(14),
        Constraint::Min(4),
    ])
    .areas(area);
    let entry = app.ledgers.get(&pid);
    let age = entry.map_or_else(
        || "ledger not read yet".to_string(),
        |e| {
            format!(
                "ledger read {:.1}s ago",
                Instant::now().duration_since(e.at).as_secs_f64()
            )
        },
    );
    let head_text = vec![
        TextLine::from(format!(
            "PID {pid}  {}  PSS {}  USS {}  swap {}  {age}",
            escape::terminal(&proc.name),
            sizes.size(proc.totals.pss),
            sizes.size(proc.totals.uss),
            sizes.size(proc.totals.swap),
        )),
        TextLine::from(format!("cmdline: {}", escape::terminal(&proc.cmdline))),
    ];
    f.render_widget(Paragraph::new(head_text).wrap(Wrap { trim: false }), head);
    let history: Vec<u64> = app
        .history
        .get(&pid)
        .map(|h| h.iter().map(|(_, v)| *v).collect())
        .unwrap_or_default();
    f.render_widget(
        Sparkline::default()
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(" PSS history "),
            )
            .data(&history),
        spark,
    );
    draw_ledger(f, entry, ledger, st, sizes);
    draw_census(f, app, pid, census, st, sizes);
}

fn draw_ledger(f: &mut Frame, e: Option<&LedgerEntry>, area: Rect, st: &Styles, sizes: SizeStyle) {
    let block = Block::default()
        .borders(Borders::TOP)
        .title(" ledger by category ");
    let Some(e) = e else {
        f.render_widget(Paragraph::new("reading the ledger...").block(block), area);
        return;
    };
    let header =
        Row::new(["CATEGORY", "PSS", "USS", "RSS", "SWAP", "SHARED", "COPIED"]).style(st.header);
    let sharing = e
        .ledger
        .sharing
        .as_ref()
        .and_then(|s| s.figures.as_ref().filter(|_| s.measured));
    let rows = e.ledger.ledger.iter().map(|r| {
        let sh = sharing.and_then(|s| s.row(r.category));
        Row::new(vec![
            r.category.name().to_string(),
            sizes.size(r.amounts.pss).to_string(),
            sizes.size(r.amounts.uss).to_string(),
            sizes.size(r.amounts.rss).to_string(),
            sizes.size(r.amounts.swap).to_string(),
            sh.map_or("-".into(), |s| sizes.size(s.shared_with_parent).to_string()),
            sh.map_or("-".into(), |s| sizes.size(s.copied).to_string()),
        ])
    });
    let w = Constraint::Length(14);
    f.render_widget(
        Table::new(rows, [Constraint::Length(18), w, w, w, w, w, w])
            .header(header)
            .block(block),
        area,
    );
}

fn draw_census(f: &mut Frame, app: &App, pid: u32, area: Rect, st: &Styles, sizes: SizeStyle) {
    let block = Block::default().borders(Borders::TOP).title(" census ");
    let text = match &app.census {
        Some(CensusState::Running(p, since)) if *p == pid => format!(
            "census running for {:.1}s (the process is paused briefly while it is proven consistent)",
            since.elapsed().as_secs_f64()
        ),
        Some(CensusState::Done(p, Err(e))) if *p == pid => {
            format!("census failed: {}", escape::terminal(e))
        }
        Some(CensusState::Done(p, Ok(c))) if *p == pid => {
            let header = Row::new(["TYPE", "OBJECTS", "BYTES"]).style(st.header);
            let rows = c.types.iter().map(|(name, count, bytes)| {
                Row::new(vec![
                    escape::terminal(name),
                    count.to_string(),
                    sizes.size(*bytes).to_string(),
                ])
            });
            let title = format!(
                " census: {} objects, {} (top types by bytes) ",
                c.objects,
                sizes.size(c.bytes)
            );
            f.render_widget(
                Table::new(
                    rows,
                    [
                        Constraint::Length(40),
                        Constraint::Length(12),
                        Constraint::Length(14),
                    ],
                )
                .header(header)
                .block(Block::default().borders(Borders::TOP).title(title)),
                area,
            );
            return;
        }
        _ => "press c for a census of its objects by type: it PAUSES the process briefly (as `memlens census` does)".into(),
    };
    f.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(block),
        area,
    );
}
