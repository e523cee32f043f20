//! The invoice as a PDF, made in-process (no browser in a Lambda).
//!
//! Written with `pdf-writer` (the typst project's PDF writer): a lean, maintained crate that
//! writes PDF objects and content streams and nothing else: no font shaping, images or
//! layout engine, and no dependency the tree does not already have (bitflags, itoa, memchr,
//! ryu). `printpdf` would bring a layout and font stack we do not need. The layout is ours
//! (A4, one column of lines, pages as needed).
//!
//! Text is set in the standard Helvetica and Helvetica-Bold with `WinAnsiEncoding`: every PDF
//! reader has them, nothing is embedded, and the text extracts as text (`pdftotext`, or the
//! tests' `lopdf`). Characters outside Windows-1252 print as `?`. The bytes are deterministic:
//! no creation date, no random file id; the only dates are the invoice's own.

use super::document::Document;
use pdf_writer::types::{ActionType, AnnotationType};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
const RIGHT: f32 = PAGE_W - MARGIN;
/// Lowest baseline of the body (the footer sits below).
const BOTTOM: f32 = 70.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

// Columns of the lines table: the description's width, and each number's right edge.
const DESC_W: f32 = 240.0;
const QTY_R: f32 = 345.0;
const UNIT_R: f32 = 415.0;
const TAX_R: f32 = 475.0;

/// Advance widths (1/1000 em) of Helvetica for ASCII 32..=126 (Adobe's AFM metrics).
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];
/// The same for Helvetica-Bold.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// Unicode -> Windows-1252 (`WinAnsiEncoding`); `?` for what it cannot show.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            0x20..=0x7e | 0xa0..=0xff => c as u8,
            0x2013 => 0x96,
            0x2014 => 0x97,
            0x2018 => 0x91,
            0x2019 => 0x92,
            0x201c => 0x93,
            0x201d => 0x94,
            0x2022 => 0x95,
            0x2026 => 0x85,
            0x20ac => 0x80,
            0x2122 => 0x99,
            0x0152 => 0x8c,
            0x0153 => 0x9c,
            0x0160 => 0x8a,
            0x0161 => 0x9a,
            0x017d => 0x8e,
            0x017e => 0x9e,
            0x0178 => 0x9f,
            0x09 | 0x0a | 0x0d => b' ',
            _ => b'?',
        })
        .collect()
}

/// The width of `s` in points.
fn width(s: &str, size: f32, bold: bool) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 = win_ansi(s)
        .iter()
        .map(|&b| match b {
            32..=126 => u32::from(table[usize::from(b - 32)]),
            0xa0 | 0xb7 => 278,
            0x97 => 1000,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Breaks `s` into lines no wider than `max` (at spaces; a longer word is cut).
fn wrap(s: &str, max: f32, size: f32, bold: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if width(&candidate, size, bold) <= max {
            line = candidate;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        let mut rest = word;
        while width(rest, size, bold) > max {
            let mut cut = rest.len();
            while cut > 1 && width(&rest[..cut], size, bold) > max {
                cut = rest[..cut - 1]
                    .char_indices()
                    .last()
                    .map_or(1, |(i, c)| i + c.len_utf8());
            }
            lines.push(rest[..cut].to_owned());
            rest = &rest[cut..];
        }
        line = rest.to_owned();
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// One page being laid out.
struct Page {
    content: Content,
    /// Link areas and their targets.
    links: Vec<(Rect, String)>,
}

/// The layout cursor over pages.
struct Layout<'a> {
    doc: &'a Document,
    pages: Vec<Page>,
    y: f32,
}

impl<'a> Layout<'a> {
    fn new(doc: &'a Document) -> Self {
        let mut l = Self {
            doc,
            pages: Vec::new(),
            y: 0.0,
        };
        l.new_page();
        l
    }

    fn new_page(&mut self) {
        self.pages.push(Page {
            content: Content::new(),
            links: Vec::new(),
        });
        self.y = PAGE_H - MARGIN;
    }

    fn page(&mut self) -> &mut Page {
        if self.pages.is_empty() {
            self.new_page();
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// Starts a new page when fewer than `needed` points are left above the footer.
    fn ensure(&mut self, needed: f32) -> bool {
        if self.y - needed < BOTTOM {
            self.new_page();
            return true;
        }
        false
    }

    fn text_at(&mut self, x: f32, y: f32, size: f32, bold: bool, gray: f32, s: &str) {
        let c = &mut self.page().content;
        c.set_fill_gray(gray);
        c.begin_text();
        c.set_font(if bold { BOLD } else { REGULAR }, size);
        c.next_line(x, y);
        c.show(Str(&win_ansi(s)));
        c.end_text();
    }

    fn left(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        self.text_at(x, y, size, bold, 0.0, s);
    }

    fn right(&mut self, right: f32, y: f32, size: f32, bold: bool, s: &str) {
        let x = right - width(s, size, bold);
        self.text_at(x, y, size, bold, 0.0, s);
    }

    fn rule(&mut self, y: f32, from: f32, to: f32, weight: f32) {
        let c = &mut self.page().content;
        c.set_stroke_gray(0.6);
        c.set_line_width(weight);
        c.move_to(from, y);
        c.line_to(to, y);
        c.stroke();
    }

    /// Wrapped text in the full width; moves the cursor below it.
    fn paragraph(&mut self, s: &str, size: f32, bold: bool) {
        for line in wrap(s, RIGHT - MARGIN, size, bold) {
            self.ensure(size + 4.0);
            let y = self.y;
            self.left(MARGIN, y, size, bold, &line);
            self.y -= size + 3.0;
        }
    }

    fn header(&mut self) {
        let doc = self.doc;
        let top = self.y;
        // The seller, top left.
        self.left(MARGIN, top - 4.0, 16.0, true, &doc.seller.name);
        let mut y = top - 22.0;
        let seller_lines = doc
            .seller
            .address
            .iter()
            .cloned()
            .chain(doc.seller.email.clone())
            .chain(doc.seller.tax_id.as_ref().map(|t| format!("Tax id: {t}")));
        for line in seller_lines {
            self.text_at(MARGIN, y, 9.0, false, 0.25, &line);
            y -= 12.0;
        }
        // The invoice's facts, top right.
        self.right(RIGHT, top - 6.0, 20.0, true, "INVOICE");
        let mut facts = vec![
            ("Invoice number", doc.number.clone()),
            ("Issue date", doc.issue_date.clone()),
            (
                "Due date",
                doc.due_date
                    .clone()
                    .unwrap_or_else(|| "Due on receipt".into()),
            ),
            (
                "Service period",
                format!("{} \u{2013} {}", doc.period_start, doc.period_end),
            ),
        ];
        if doc.status != "open" {
            facts.push(("Status", doc.status.clone()));
        }
        let mut ry = top - 26.0;
        for (label, value) in facts {
            self.text_at(330.0, ry, 9.0, false, 0.35, label);
            self.right(RIGHT, ry, 9.0, true, &value);
            ry -= 12.5;
        }
        self.y = y.min(ry) - 18.0;
        // Bill to.
        let b = &doc.bill_to;
        self.text_at(MARGIN, self.y, 8.5, true, 0.35, "BILL TO");
        self.y -= 14.0;
        let name = b.name.clone().unwrap_or_else(|| b.customer.clone());
        for line in wrap(&name, 300.0, 11.0, true) {
            let y = self.y;
            self.left(MARGIN, y, 11.0, true, &line);
            self.y -= 13.0;
        }
        let mut rest: Vec<String> = b.address.clone();
        rest.extend(b.tax_ids.iter().map(|t| format!("Tax id: {t}")));
        if b.name.is_some() {
            rest.push(format!("Customer {}", b.customer));
        }
        for line in rest.iter().flat_map(|l| wrap(l, 300.0, 9.0, false)) {
            let y = self.y;
            self.text_at(MARGIN, y, 9.0, false, 0.15, &line);
            self.y -= 11.5;
        }
        self.y -= 16.0;
    }

    fn table_head(&mut self) {
        let y = self.y;
        let amount = format!("Amount ({})", self.doc.code());
        self.text_at(MARGIN, y, 8.0, true, 0.35, "DESCRIPTION");
        for (right, label) in [
            (QTY_R, "QTY"),
            (UNIT_R, "UNIT PRICE"),
            (TAX_R, "TAX"),
            (RIGHT, amount.to_uppercase().as_str()),
        ] {
            let x = right - width(label, 8.0, true);
            self.text_at(x, y, 8.0, true, 0.35, label);
        }
        self.rule(y - 5.0, MARGIN, RIGHT, 1.2);
        self.y -= 19.0;
    }

    fn lines(&mut self) {
        self.table_head();
        let doc = self.doc;
        for l in &doc.lines {
            let desc = wrap(&l.description, DESC_W, 9.0, false);
            let mut details: Vec<String> = l.details.clone();
            if !l.tax_labels.is_empty() {
                details.push(format!("Tax: {}", l.tax_labels.join(", ")));
            }
            let details: Vec<String> = details
                .iter()
                .flat_map(|d| wrap(d, DESC_W, 7.5, false))
                .collect();
            let height = desc.len() as f32 * 11.0 + details.len() as f32 * 9.5 + 8.0;
            if self.ensure(height) {
                self.table_head();
            }
            let top = self.y;
            self.right(QTY_R, top, 9.0, false, &l.printed_quantity());
            if let Some(u) = &l.unit_price {
                self.right(UNIT_R, top, 9.0, false, u);
            }
            let tax = l
                .tax
                .map_or_else(|| "\u{2013}".to_owned(), |t| doc.money(t));
            self.right(TAX_R, top, 9.0, false, &tax);
            self.right(RIGHT, top, 9.0, false, &doc.money(l.amount));
            for line in &desc {
                let y = self.y;
                self.left(MARGIN, y, 9.0, false, line);
                self.y -= 11.0;
            }
            for line in &details {
                let y = self.y;
                self.text_at(MARGIN + 8.0, y, 7.5, false, 0.4, line);
                self.y -= 9.5;
            }
            self.rule(self.y + 4.0, MARGIN, RIGHT, 0.4);
            self.y -= 8.0;
        }
    }

    fn totals(&mut self) {
        let doc = self.doc;
        let rows = doc.totals();
        self.ensure(rows.len() as f32 * 16.0 + 10.0);
        self.y -= 4.0;
        for (label, amount, strong) in rows {
            let size = if strong { 10.5 } else { 9.0 };
            if strong {
                self.rule(self.y + size + 2.0, 330.0, RIGHT, 1.0);
                self.y -= 3.0;
            }
            let y = self.y;
            let label = wrap(&label, 140.0, size, strong).join(" ");
            self.left(330.0, y, size, strong, &label);
            self.right(RIGHT, y, size, strong, &doc.money(amount));
            self.y -= size + 6.0;
        }
        self.y -= 10.0;
    }

    fn notes(&mut self) {
        let doc = self.doc;
        if let Some(n) = &doc.tax_note {
            self.paragraph(n, 9.5, true);
            self.y -= 6.0;
        }
        if let Some(url) = &doc.pay_url {
            self.ensure(40.0);
            let y = self.y;
            self.left(MARGIN, y, 10.0, true, "Pay online:");
            self.y -= 13.0;
            for line in wrap(url, RIGHT - MARGIN, 8.5, false) {
                self.ensure(12.0);
                let y = self.y;
                let w = width(&line, 8.5, false);
                self.text_at(MARGIN, y, 8.5, false, 0.1, &line);
                self.page()
                    .links
                    .push((Rect::new(MARGIN, y - 2.0, MARGIN + w, y + 9.0), url.clone()));
                self.y -= 11.0;
            }
            self.y -= 6.0;
        }
        let mut footer = format!(
            "Amounts in {}, each line rounded half to even. Price book {}.",
            doc.code(),
            doc.price_book_version
        );
        if let Some(id) = &doc.stripe_invoice {
            footer.push_str(&format!(" Stripe invoice {id}."));
        }
        self.y -= 4.0;
        for line in wrap(&footer, RIGHT - MARGIN, 7.5, false) {
            self.ensure(10.0);
            let y = self.y;
            self.text_at(MARGIN, y, 7.5, false, 0.45, &line);
            self.y -= 9.5;
        }
    }
}

/// The PDF artifact (`invoices/{customer}/{period}.pdf`).
pub fn render_pdf(doc: &Document) -> Vec<u8> {
    let mut layout = Layout::new(doc);
    layout.header();
    layout.lines();
    layout.totals();
    layout.notes();
    let pages = layout.pages;
    let n = pages.len();

    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let mut next = 6;
    let mut alloc = || {
        next += 1;
        Ref::new(next - 1)
    };
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    let mut written = Vec::with_capacity(n);
    for (i, mut page) in pages.into_iter().enumerate() {
        // The footer, now that the page count is known.
        let footer = format!("Invoice {} \u{00b7} page {} of {n}", doc.number, i + 1);
        let c = &mut page.content;
        c.set_fill_gray(0.45);
        c.begin_text();
        c.set_font(REGULAR, 7.5);
        c.next_line(RIGHT - width(&footer, 7.5, false), 32.0);
        c.show(Str(&win_ansi(&footer)));
        c.end_text();
        let id = alloc();
        let content = alloc();
        let annotations: Vec<(Ref, Rect, String)> = page
            .links
            .into_iter()
            .map(|(rect, url)| (alloc(), rect, url))
            .collect();
        let mut p = pdf.page(id);
        p.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        p.parent(tree);
        p.contents(content);
        if !annotations.is_empty() {
            p.annotations(annotations.iter().map(|(r, _, _)| *r));
        }
        p.resources()
            .fonts()
            .pair(REGULAR, regular)
            .pair(BOLD, bold);
        p.finish();
        for (r, rect, url) in &annotations {
            let mut a = pdf.annotation(*r);
            a.subtype(AnnotationType::Link);
            a.rect(*rect);
            a.border(0.0, 0.0, 0.0, None);
            a.action()
                .action_type(ActionType::Uri)
                .uri(Str(url.as_bytes()));
        }
        pdf.stream(content, &page.content.finish());
        written.push(id);
    }
    pdf.pages(tree).kids(written).count(n as i32);
    for (id, name) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(id)
            .base_font(Name(name.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr(&format!("Invoice {}", doc.number)))
        .author(TextStr(&doc.seller.name))
        .producer(TextStr("blapi"));
    pdf.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The text of every page, read back as a PDF reader does (lopdf decodes the fonts'
    /// WinAnsi encoding), whitespace collapsed to single spaces.
    pub(crate) fn text_of(pdf: &[u8]) -> String {
        let doc = lopdf::Document::load_mem(pdf).expect("a readable PDF");
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        let text = doc.extract_text(&pages).expect("extractable text");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn widths_and_wrapping() {
        assert!((width("0", 10.0, false) - 5.56).abs() < 0.01);
        assert!(width("Total", 10.0, true) > width("Total", 10.0, false));
        let lines = wrap(
            "Platform fee · Cloud Starter (cloud-starter)",
            80.0,
            9.0,
            false,
        );
        assert!(lines.len() > 1, "{lines:?}");
        assert_eq!(
            lines.join(" "),
            "Platform fee · Cloud Starter (cloud-starter)"
        );
        let cut = wrap(&"x".repeat(200), 50.0, 9.0, false);
        assert!(cut.iter().all(|l| width(l, 9.0, false) <= 50.0));
        assert_eq!(cut.concat(), "x".repeat(200));
        assert_eq!(
            win_ansi("€ – ·字"),
            vec![0x80, b' ', 0x96, b' ', 0xb7, b'?']
        );
    }
}
