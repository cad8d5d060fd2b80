//! Plain tables (no borders, like `kubectl get`), wrapped to the terminal's width when stdout
//! is a terminal and left at their natural width when piped.

use comfy_table::{presets, ContentArrangement, Table};

/// Prints `rows` under `header`, or `empty` when there are none.
pub fn print(header: &[&str], rows: Vec<Vec<String>>, empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
        return;
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header.to_vec());
    match terminal_size::terminal_size() {
        Some((terminal_size::Width(width), _)) => {
            table.set_content_arrangement(ContentArrangement::Dynamic).set_width(width);
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    for row in rows {
        table.add_row(row);
    }
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}
