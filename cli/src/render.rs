//! Output for people (tables) or scripts (`--json`).

use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;

pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

/// `12:04:05` today, the date otherwise.
pub fn time(t: &DateTime<Utc>) -> String {
    if t.date_naive() == Utc::now().date_naive() {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

pub fn short(id: &uuid::Uuid) -> String {
    id.to_string()[..8].to_string()
}

/// Shortens long text for a table cell.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
