//! CSV that is safe to open in a spreadsheet: every CSV Glimpse writes (the event export, the
//! stats API) goes through here.
//!
//! Text cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a
//! formula by Excel, LibreOffice or Google Sheets (OWASP "CSV injection"); they get a leading
//! single quote `'`, which spreadsheets show as text. So that the export still round-trips
//! exactly, a text cell that itself starts with `'` gets one too, and [`restore`] (used by the
//! import) removes exactly one leading `'`.
//!
//! Numbers are written as they are, including negative ones: only [`Cell::Number`], which can
//! be built from Rust numbers only, skips the rule, so visitor text never does.

use std::borrow::Cow;
use std::io::Write;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Characters that make a spreadsheet treat a cell as a formula, and `'`, the escape itself.
const NEEDS_PREFIX: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// `text` as a cell a spreadsheet shows as text.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    if text.starts_with(NEEDS_PREFIX) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The text [`neutralise`] was given.
pub fn restore(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(NEEDS_PREFIX) => rest,
        _ => cell,
    }
}

/// A text field of a serde-written CSV row: neutralised when written, restored when read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&neutralise(&self.0))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cell = String::deserialize(deserializer)?;
        Ok(Text(restore(&cell).to_string()))
    }
}

/// One cell of a row written with [`Writer::write_row`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// Text from anywhere (visitors, requests): neutralised.
    Text(Cow<'a, str>),
    /// A number the code computed, written as is (`-12` stays a number).
    Number(Number),
}

/// A number's text, which only Rust numbers (and JSON numbers) can produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Number(String);

macro_rules! number_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Number {
            fn from(n: $t) -> Self {
                Number(n.to_string())
            }
        }
    )*};
}
number_from!(
    u8,
    u16,
    u32,
    u64,
    i8,
    i16,
    i32,
    i64,
    f64,
    serde_json::Number
);

impl<'a> From<&'a str> for Cell<'a> {
    fn from(text: &'a str) -> Self {
        Cell::Text(Cow::Borrowed(text))
    }
}

impl From<String> for Cell<'_> {
    fn from(text: String) -> Self {
        Cell::Text(Cow::Owned(text))
    }
}

/// A code-computed JSON value: numbers as numbers, anything else as text.
impl From<&serde_json::Value> for Cell<'_> {
    fn from(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Number(n) => Cell::Number(Number::from(n.clone())),
            serde_json::Value::String(s) => Cell::Text(Cow::Owned(s.clone())),
            other => Cell::Text(Cow::Owned(other.to_string())),
        }
    }
}

/// The `csv` crate's writer (RFC 4180 quoting, CRLF line ends) with the formula rule applied
/// to every text cell.
pub struct Writer<W: Write> {
    inner: csv::Writer<W>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            inner: csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(out),
        }
    }

    /// Writes one row; the first row of a serde-written file is its header.
    pub fn serialize<T: Serialize>(&mut self, row: T) -> csv::Result<()> {
        self.inner.serialize(row)
    }

    /// Writes one row of cells.
    pub fn write_row<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) -> csv::Result<()> {
        let cells: Vec<Cow<'_, str>> = cells
            .into_iter()
            .map(|cell| match cell {
                Cell::Text(text) => match neutralise(&text) {
                    Cow::Borrowed(_) => text,
                    Cow::Owned(neutral) => Cow::Owned(neutral),
                },
                Cell::Number(Number(n)) => Cow::Owned(n),
            })
            .collect();
        self.inner.write_record(cells.iter().map(|c| c.as_bytes()))
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    /// The underlying output, flushed.
    pub fn into_inner(self) -> Result<W, std::io::Error> {
        self.inner
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_get_a_quote_and_come_back() {
        for text in [
            "=1+2", "+1", "-2+3", "@SUM(1)", "\t=1", "\r=1", "'", "'=1", "''",
        ] {
            let cell = neutralise(text);
            assert!(cell.starts_with('\''), "{text:?} → {cell:?}");
            assert_eq!(restore(&cell), text);
        }
        for text in ["", "/a", "DE", "1", "a=b", "x'"] {
            assert_eq!(neutralise(text), text);
            assert_eq!(restore(text), text);
        }
    }

    #[test]
    fn rows_quote_and_neutralise_text_but_not_numbers() {
        let mut w = Writer::new(Vec::new());
        w.write_row([Cell::from("page"), Cell::from("change")])
            .unwrap();
        w.write_row([
            Cell::from("=HYPERLINK(\"x\",\"y\")"),
            Cell::Number((-12i64).into()),
        ])
        .unwrap();
        w.write_row([Cell::from("-12"), Cell::from(&serde_json::json!(1.5))])
            .unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "page,change\r\n\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\",-12\r\n'-12,1.5\r\n"
        );
    }

    #[test]
    fn serde_rows_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Row {
            path: Text,
            n: i32,
        }
        let mut w = Writer::new(Vec::new());
        let row = Row {
            path: Text("@SUM(1)".into()),
            n: -1,
        };
        w.serialize(&row).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes), "path,n\r\n'@SUM(1),-1\r\n");
        let back: Row = csv::Reader::from_reader(bytes.as_slice())
            .deserialize()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(back, row);
    }
}
