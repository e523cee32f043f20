//! Revenue reports built from daily [`Snapshot`]s: a CSV of the daily figures for the BI tool,
//! and a self-contained monthly HTML page for people (headline figures, the month's MRR
//! movements, hand-drawn inline SVG charts each with a text table beside it). Pure: no I/O.
//!
//! Money stays in integer minor units until [`format_minor`] writes it as text, so no amount
//! goes through floating point; only chart geometry (pixel positions) does.

use super::metrics::{Excluded, Movements, Ratio, Snapshot};
use crate::values::{Currency, format_minor};
use std::collections::BTreeMap;

/// The CSV columns, in order. The movement columns are the day's (since the day before).
const CSV_HEADER: &str = "date,currency,mrr,arr,movement_start,movement_new,movement_expansion,\
movement_reactivation,movement_contraction,movement_churn,movement_end,paying,trialing,\
churned_this_month,logo_churn_percent,nrr_percent,grr_percent,seats_licensed,\
renewal_pipeline_count,renewal_pipeline_amount,usage_revenue_period,usage_revenue";

/// One row per snapshot under a header row, RFC 4180 (CRLF line ends, fields quoted when
/// needed). Money is in major units as exact decimal text without the currency code (the
/// `currency` column says which); a ratio not available yet is an empty cell.
pub fn daily_csv(snapshots: &[Snapshot]) -> String {
    let mut out = csv_row(CSV_HEADER.split(',').map(str::to_owned));
    for s in snapshots {
        let money = |amount: i64| major(amount, &s.currency);
        let percent = |r: &Option<Ratio>| r.as_ref().map(|r| format!("{:.2}", r.percent));
        let (m, c, p) = (&s.movements, &s.customers, &s.renewal_pipeline);
        let row = [
            s.date.clone(),
            s.currency.to_string(),
            money(s.mrr),
            money(s.arr),
            money(m.start),
            money(m.new),
            money(m.expansion),
            money(m.reactivation),
            money(m.contraction),
            money(m.churn),
            money(m.end),
            c.paying.to_string(),
            c.trialing.to_string(),
            c.churned_this_month.to_string(),
            percent(&s.logo_churn).unwrap_or_default(),
            percent(&s.net_revenue_retention_12m).unwrap_or_default(),
            percent(&s.gross_revenue_retention_12m).unwrap_or_default(),
            s.seats_licensed.to_string(),
            p.count.to_string(),
            money(p.amount),
            s.usage_revenue_period.clone(),
            money(s.usage_revenue),
        ];
        out.push_str(&csv_row(row));
    }
    out
}

fn csv_row(fields: impl IntoIterator<Item = String>) -> String {
    let cells: Vec<String> = fields.into_iter().map(|f| csv_field(&f)).collect();
    format!("{}\r\n", cells.join(","))
}

/// Quotes a field holding a separator, a quote or a line break, doubling inner quotes.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Minor units as major-unit decimal text without the code (`123450, usd` -> `1234.50`).
fn major(amount: i64, currency: &Currency) -> String {
    let text = format_minor(amount, currency);
    text.split_once(' ')
        .map_or(text.as_str(), |(number, _)| number)
        .to_owned()
}

use crate::values::html_escape as esc;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em}\
td{text-align:right}th{text-align:left;background:#f4f4f4}caption{text-align:left;\
font-weight:bold}figure{margin:2em 0}figcaption{font-weight:bold;margin-bottom:.5em}\
svg{max-width:100%;height:auto;font-family:system-ui,sans-serif}.warn{color:#b00020}";

/// The MRR movements of the chart: class, label, colour; the first three stack upward.
const KINDS: [(&str, &str, &str); 5] = [
    ("new", "New", "#2e7d32"),
    ("expansion", "Expansion", "#66bb6a"),
    ("reactivation", "Reactivation", "#a5d6a7"),
    ("contraction", "Contraction", "#ef9a9a"),
    ("churn", "Churn", "#c62828"),
];
/// Colour of the end-of-month MRR line and its axis.
const LINE: &str = "#1f4e9c";
/// Health bands in display order: key, label, colour.
const BANDS: [(&str, &str, &str); 4] = [
    ("healthy", "Healthy", "#2e7d32"),
    ("watch", "Watch", "#f9a825"),
    ("at_risk", "At risk", "#c62828"),
    ("no_data", "No data", "#9e9e9e"),
];

/// The monthly report for `month` (`YYYY-MM`). `snapshots` are the month's daily snapshots,
/// oldest first (the last holds the latest figures and health band counts); `history` is the
/// MRR movements of each of the last months, oldest first, for the chart. With no snapshot
/// the page says there is no data for the month.
pub fn monthly_html(
    month: &str,
    snapshots: &[Snapshot],
    history: &[(String, Movements)],
) -> String {
    let title = format!("Revenue report {}", esc(month));
    let mut body = format!("<h1>{title}</h1>\n");
    match snapshots.last() {
        None => body.push_str(&format!("<p>There is no data for {}.</p>\n", esc(month))),
        Some(last) => {
            body.push_str(&format!("<p>Figures as of {}.</p>\n", esc(&last.date)));
            body.push_str(&headline(last));
            body.push_str(&month_movements(month, last));
            body.push_str(&mrr_chart(history, &last.currency));
            body.push_str(&health_chart(&last.health_bands));
            body.push_str(&excluded(&last.excluded));
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

/// A table of plain-text cells, all escaped here; the first cell of a row is its header.
fn table(caption: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = format!("<table>\n<caption>{}</caption>\n<tr>", esc(caption));
    for h in head {
        t.push_str(&format!("<th scope=\"col\">{}</th>", esc(h)));
    }
    t.push_str("</tr>\n");
    for (first, rest) in rows.iter().filter_map(|row| row.split_first()) {
        t.push_str(&format!("<tr><th scope=\"row\">{}</th>", esc(first)));
        for cell in rest {
            t.push_str(&format!("<td>{}</td>", esc(cell)));
        }
        t.push_str("</tr>\n");
    }
    t + "</table>\n"
}

/// The latest figures; a retention ratio is "not available" until 12 months of history.
fn headline(s: &Snapshot) -> String {
    let money = |a: i64| format_minor(a, &s.currency);
    let ratio = |r: &Option<Ratio>| {
        r.as_ref().map_or_else(
            || "not available".to_owned(),
            |r| format!("{:.2}% ({} of {})", r.percent, r.numerator, r.denominator),
        )
    };
    let (mtd, p) = (&s.movements_month_to_date, &s.renewal_pipeline);
    let usage = format!("Usage revenue of {}", s.usage_revenue_period);
    let (nrr, grr) = (
        ratio(&s.net_revenue_retention_12m),
        ratio(&s.gross_revenue_retention_12m),
    );
    let pipeline = format!("{} renewals, {}", p.count, money(p.amount));
    let rows = [
        ("MRR", money(s.mrr)),
        ("ARR", money(s.arr)),
        ("Net new MRR this month", money(mtd.end - mtd.start)),
        ("Paying customers", s.customers.paying.to_string()),
        ("Trialing customers", s.customers.trialing.to_string()),
        ("Logo churn this month", ratio(&s.logo_churn)),
        ("Net revenue retention, 12 months", nrr),
        ("Gross revenue retention, 12 months", grr),
        ("Seats licensed", s.seats_licensed.to_string()),
        ("Open renewal pipeline", pipeline),
        (usage.as_str(), money(s.usage_revenue)),
    ]
    .map(|(label, value)| vec![label.to_owned(), value]);
    table("Headline figures", &["Metric", "Value"], &rows)
}

/// Start + new + expansion + reactivation − contraction − churn = end, month to date; a
/// warning when the figures do not add up.
fn month_movements(month: &str, s: &Snapshot) -> String {
    let m = &s.movements_month_to_date;
    let money = |a: i64| format_minor(a, &s.currency);
    let rows = [
        ("Start of month MRR", m.start),
        ("+ New", m.new),
        ("+ Expansion", m.expansion),
        ("+ Reactivation", m.reactivation),
        ("\u{2212} Contraction", m.contraction),
        ("\u{2212} Churn", m.churn),
        ("= MRR", m.end),
    ]
    .map(|(label, amount)| vec![label.to_owned(), money(amount)]);
    let caption = format!("MRR movements in {month}");
    let mut out = table(&caption, &["Movement", "Amount"], &rows);
    if m.reconciled_end() != m.end {
        out.push_str(&format!(
            "<p class=\"warn\">The movements add up to {}, not {}.</p>\n",
            esc(&money(m.reconciled_end())),
            esc(&money(m.end))
        ));
    }
    out
}

/// Stacked movement bars per month around a zero line (gains up, losses down, one shared
/// scale), with end-of-month MRR as a line on its own scale (right axis).
fn mrr_chart(history: &[(String, Movements)], currency: &Currency) -> String {
    const CAPTION: &str = "MRR over time stacked by movement";
    if history.is_empty() {
        return format!("<h2>{CAPTION}</h2>\n<p>No monthly history.</p>\n");
    }
    let (left, top, plot_w, plot_h) = (100.0, 20.0, 600.0, 220.0);
    let money = |a: i64| format_minor(a, currency);
    let parts = |m: &Movements| {
        [m.new, m.expansion, m.reactivation, m.contraction, m.churn].map(|v| v.max(0))
    };
    let widest = |range: std::ops::Range<usize>| {
        let sum = |m: &Movements| parts(m)[range.clone()].iter().sum::<i64>();
        history.iter().map(|(_, m)| sum(m)).max().unwrap_or(0)
    };
    let (up_max, down_max) = (widest(0..3), widest(3..5));
    let end_max = history.iter().map(|(_, m)| m.end).max().unwrap_or(0).max(1);
    // All-zero movements: no scale to divide by; the zero line sits mid-plot.
    let span = up_max + down_max;
    let unit = if span == 0 { 0.0 } else { plot_h / span as f64 };
    let zero_y = if span == 0 {
        top + plot_h / 2.0
    } else {
        top + up_max as f64 * unit
    };
    let slot = plot_w / history.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 820 310\" width=\"820\" \
         height=\"310\" role=\"img\" aria-labelledby=\"mrr-title\" font-size=\"11\">\n\
         <title id=\"mrr-title\">{CAPTION}</title>\n"
    );
    let (mut points, mut rows) = (Vec::new(), Vec::new());
    for (i, (label, m)) in history.iter().enumerate() {
        let (x, text) = (left + slot * (i as f64 + 0.2), esc(label));
        let (mut up_y, mut down_y) = (zero_y, zero_y);
        for (k, (value, (class, name, colour))) in parts(m).into_iter().zip(KINDS).enumerate() {
            let h = value as f64 * unit;
            let y = if k < 3 {
                up_y -= h;
                up_y
            } else {
                down_y += h;
                down_y - h
            };
            if value > 0 {
                svg.push_str(&format!(
                    "<rect class=\"bar {class}\" x=\"{x:.2}\" y=\"{y:.2}\" width=\"{:.2}\" \
                     height=\"{h:.2}\" fill=\"{colour}\"><title>{text} {name}: {}</title></rect>\n",
                    slot * 0.6,
                    esc(&money(value))
                ));
            }
        }
        let cx = left + slot * (i as f64 + 0.5);
        let cy = top + plot_h - m.end.max(0) as f64 * plot_h / end_max as f64;
        points.push(format!("{cx:.2},{cy:.2}"));
        svg.push_str(&format!(
            "<circle cx=\"{cx:.2}\" cy=\"{cy:.2}\" r=\"4\" fill=\"{LINE}\">\
             <title>{text} MRR: {}</title></circle>\n\
             <text x=\"{cx:.2}\" y=\"{}\" text-anchor=\"middle\">{text}</text>\n",
            esc(&money(m.end)),
            top + plot_h + 18.0
        ));
        let mut row = vec![label.clone(), money(m.end)];
        row.extend(parts(m).map(money));
        rows.push(row);
    }
    let (axis_l, axis_r, bottom) = (left - 6.0, left + plot_w + 6.0, top + plot_h);
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{LINE}\" stroke-width=\"2\"/>\n\
         <line x1=\"{left}\" y1=\"{zero_y:.2}\" x2=\"{}\" y2=\"{zero_y:.2}\" stroke=\"#444\"/>\n\
         <text x=\"{axis_l}\" y=\"{top}\" text-anchor=\"end\">{}</text>\n\
         <text x=\"{axis_l}\" y=\"{zero_y:.2}\" text-anchor=\"end\">0</text>\n\
         <text x=\"{axis_l}\" y=\"{bottom}\" text-anchor=\"end\">\u{2212}{}</text>\n\
         <text x=\"{axis_r}\" y=\"{top}\" fill=\"{LINE}\">{}</text>\n\
         <text x=\"{axis_r}\" y=\"{bottom}\" fill=\"{LINE}\">0</text>\n",
        points.join(" "),
        left + plot_w,
        esc(&money(up_max)),
        esc(&money(down_max)),
        esc(&money(end_max)),
    ));
    for (i, (_, name, colour)) in KINDS.iter().enumerate() {
        let x = 20.0 + 120.0 * i as f64;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"280\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"290\">{name}</text>\n",
            x + 16.0
        ));
    }
    svg.push_str(&format!(
        "<line x1=\"620\" y1=\"286\" x2=\"640\" y2=\"286\" stroke=\"{LINE}\" stroke-width=\"2\"/>\
         <text x=\"646\" y=\"290\">End-of-month MRR (right axis)</text>\n</svg>\n"
    ));
    let head: Vec<&str> = ["Month", "End MRR"]
        .into_iter()
        .chain(KINDS.map(|k| k.1))
        .collect();
    format!(
        "<figure>\n<figcaption>{CAPTION}</figcaption>\n{svg}{}</figure>\n",
        table("MRR movements by month", &head, &rows)
    )
}

/// Horizontal bars of customers per health band, scaled to the largest band; bands outside
/// the four known ones are shown after them under their own name.
fn health_chart(bands: &BTreeMap<String, u64>) -> String {
    const CAPTION: &str = "Customers by health band";
    let count = |key: &str| bands.get(key).copied().unwrap_or(0);
    let mut items: Vec<(String, u64, &str)> = BANDS
        .iter()
        .map(|(key, label, colour)| (label.to_string(), count(key), *colour))
        .collect();
    let others = bands
        .iter()
        .filter(|(k, _)| !BANDS.iter().any(|b| b.0 == k.as_str()));
    items.extend(others.map(|(key, n)| (key.clone(), *n, "#607d8b")));
    let max = items.iter().map(|(_, n, _)| *n).max().unwrap_or(0).max(1);
    let height = items.len() * 28 + 10;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 700 {height}\" width=\"700\" \
         height=\"{height}\" role=\"img\" aria-labelledby=\"health-title\" font-size=\"12\">\n\
         <title id=\"health-title\">{CAPTION}</title>\n"
    );
    for (i, (label, n, colour)) in items.iter().enumerate() {
        let (y, w) = (5.0 + 28.0 * i as f64, *n as f64 * 500.0 / max as f64);
        svg.push_str(&format!(
            "<text x=\"110\" y=\"{}\" text-anchor=\"end\">{}</text><rect class=\"band\" \
             x=\"120\" y=\"{y}\" width=\"{w:.2}\" height=\"20\" fill=\"{colour}\"/>\
             <text x=\"{:.2}\" y=\"{}\">{n}</text>\n",
            y + 14.0,
            esc(label),
            126.0 + w,
            y + 14.0
        ));
    }
    svg.push_str("</svg>\n");
    let rows: Vec<Vec<String>> = items
        .into_iter()
        .map(|(l, n, _)| vec![l, n.to_string()])
        .collect();
    format!(
        "<figure>\n<figcaption>{CAPTION}</figcaption>\n{svg}{}</figure>\n",
        table("Customers per health band", &["Band", "Customers"], &rows)
    )
}

/// What the money figures leave out, when anything is.
fn excluded(list: &[Excluded]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.customer.clone(),
                e.subscription.clone().unwrap_or_default(),
                e.reason.clone(),
            ]
        })
        .collect();
    table(
        "Left out of the money figures",
        &["Customer", "Subscription", "Reason"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revenue::metrics::{Customers, Pipeline};

    fn mv([start, new, expansion, reactivation, contraction, churn, end]: [i64; 7]) -> Movements {
        Movements {
            start,
            new,
            expansion,
            reactivation,
            contraction,
            churn,
            end,
        }
    }

    fn month(label: &str, movements: [i64; 7]) -> (String, Movements) {
        (label.to_owned(), mv(movements))
    }

    fn snapshot(currency: &str) -> Snapshot {
        Snapshot {
            date: "2024-05-31".to_owned(),
            currency: currency.parse().expect("currency"),
            mrr: 123_450,
            arr: 1_481_400,
            movements: mv([120_000, 1_000, 2_450, 0, 0, 0, 123_450]),
            movements_month_to_date: mv([100_000, 20_000, 5_000, 450, 1_000, 1_000, 123_450]),
            mrr_by_currency: BTreeMap::new(),
            usage_revenue_period: "2024-04".to_owned(),
            usage_revenue: 9_905,
            customers: Customers {
                paying: 39,
                trialing: 4,
                paying_at_month_start: 40,
                churned_this_month: 1,
            },
            logo_churn: Ratio::new(1, 40),
            net_revenue_retention_12m: None,
            gross_revenue_retention_12m: Ratio::new(95, 100),
            seats_licensed: 310,
            renewal_pipeline: Pipeline {
                count: 3,
                amount: 50_000,
            },
            health_bands: [("healthy", 30), ("watch", 6), ("at_risk", 3)]
                .map(|(band, n)| (band.to_owned(), n))
                .into(),
            excluded: Vec::new(),
        }
    }

    /// The `height` of the first `<rect>` of class `bar {kind}`.
    fn bar_height(html: &str, kind: &str) -> f64 {
        let rest = &html[html.find(&format!("class=\"bar {kind}\"")).expect("bar")..];
        let from = rest.find("height=\"").expect("height") + 8;
        let to = from + rest[from..].find('"').expect("closing quote");
        rest[from..to].parse().expect("number")
    }

    #[test]
    fn csv_has_the_header_and_exact_values() {
        let csv = daily_csv(&[snapshot("usd")]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines.len(), 3, "header, row, empty after the last CRLF");
        assert_eq!(lines[0].split(',').count(), 22);
        assert!(lines[0].starts_with("date,currency,mrr,arr,movement_start,movement_new,"));
        assert!(lines[0].contains(",paying,trialing,churned_this_month,logo_churn_percent,"));
        assert!(lines[0].ends_with(",usage_revenue_period,usage_revenue"));
        // NRR is not available yet: an empty cell between logo churn and GRR.
        let row = "2024-05-31,usd,1234.50,14814.00,1200.00,10.00,24.50,0.00,0.00,0.00,1234.50,\
                   39,4,1,2.50,,95.00,310,3,500.00,2024-04,99.05";
        assert_eq!(lines[1], row);
    }

    #[test]
    fn csv_formats_zero_decimal_currencies_and_quotes_fields() {
        let mut s = snapshot("jpy");
        s.usage_revenue_period = "2024-04, \"late\"".to_owned();
        let csv = daily_csv(&[s]);
        let row = csv.split("\r\n").nth(1).expect("row");
        assert!(
            row.starts_with("2024-05-31,jpy,123450,1481400,120000,1000,2450,"),
            "{row}"
        );
        assert!(
            row.ends_with(",3,50000,\"2024-04, \"\"late\"\"\",9905"),
            "{row}"
        );
        assert_eq!(daily_csv(&[]), format!("{CSV_HEADER}\r\n"));
    }

    #[test]
    fn html_is_self_contained_with_both_charts_and_tables() {
        let history = [
            month("2024-04", [0, 100, 200, 0, 50, 0, 250]),
            month("2024-05", [0; 7]),
        ];
        let html = monthly_html("2024-05", &[snapshot("usd")], &history);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.to_lowercase().contains("<script"));
        let outside = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!outside.contains("http://") && !outside.contains("https://"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("role=\"img\"").count(), 2);
        for want in [
            "<title>Revenue report 2024-05</title>",
            "<title id=\"mrr-title\">",
            "<title id=\"health-title\">",
            "<th scope=\"row\">MRR</th><td>1234.50 USD</td>",
            "<th scope=\"row\">Net new MRR this month</th><td>234.50 USD</td>",
            "<th scope=\"row\">Logo churn this month</th><td>2.50% (1 of 40)</td>",
            "<th scope=\"row\">Net revenue retention, 12 months</th><td>not available</td>",
            "<th scope=\"row\">Usage revenue of 2024-04</th><td>99.05 USD</td>",
            "<th scope=\"row\">= MRR</th><td>1234.50 USD</td>",
            "<th scope=\"row\">2024-04</th><td>2.50 USD</td><td>1.00 USD</td><td>2.00 USD</td>",
            "<th scope=\"row\">Watch</th><td>6</td>",
            "<th scope=\"row\">No data</th><td>0</td>",
        ] {
            assert!(html.contains(want), "missing {want}");
        }
        assert!(
            !html.contains("class=\"warn\""),
            "the sample movements reconcile"
        );
        assert!(
            !html.contains("Left out of the money figures"),
            "nothing excluded"
        );
    }

    #[test]
    fn html_flags_movements_that_do_not_reconcile() {
        let mut s = snapshot("usd");
        s.movements_month_to_date.end += 1;
        let html = monthly_html("2024-05", &[s], &[]);
        assert!(html.contains("The movements add up to 1234.50 USD, not 1234.51 USD."));
    }

    #[test]
    fn html_escapes_outside_text() {
        let mut s = snapshot("usd");
        s.excluded.push(Excluded {
            customer: "<img src=x onerror=alert(1)>".to_owned(),
            subscription: Some("sub_\"'&".to_owned()),
            reason: "no rate for xyz".to_owned(),
        });
        let html = monthly_html("2024-05<b>", &[s], &[month("<i>", [1; 7])]);
        assert!(!html.contains("<img") && !html.contains("<b>") && !html.contains("<i>"));
        assert!(html.contains("<th scope=\"row\">&lt;img src=x onerror=alert(1)&gt;</th>"));
        assert!(html.contains("<td>sub_&quot;&#39;&amp;</td>"));
        assert!(
            html.contains("<th scope=\"row\">&lt;i&gt;</th>"),
            "escaped once in the table"
        );
    }

    #[test]
    fn html_without_snapshots_says_there_is_no_data() {
        let html = monthly_html("2024-05", &[], &[month("2024-05", [1, 2, 3, 4, 5, 6, 7])]);
        assert!(html.contains("<title>Revenue report 2024-05</title>"));
        assert!(html.contains("<p>There is no data for 2024-05.</p>"));
        assert!(!html.contains("<svg") && !html.contains("<table"));
    }

    #[test]
    fn html_with_zero_movements_or_no_history_has_finite_geometry() {
        let mut s = snapshot("usd");
        s.health_bands.clear();
        s.movements_month_to_date = Movements::default();
        for history in [
            vec![month("2024-04", [0; 7]), month("2024-05", [0; 7])],
            Vec::new(),
        ] {
            let html = monthly_html("2024-05", std::slice::from_ref(&s), &history);
            assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
            assert!(!html.contains("class=\"bar"), "no bar for a zero movement");
            assert!(html.contains("class=\"band\" x=\"120\" y=\"5\" width=\"0.00\""));
        }
    }

    #[test]
    fn bar_heights_are_proportional_to_amounts() {
        let history = [month("2024-05", [0, 1_000, 2_000, 0, 500, 0, 10_000])];
        let html = monthly_html("2024-05", &[snapshot("usd")], &history);
        let [new, expansion, contraction] =
            ["new", "expansion", "contraction"].map(|k| bar_height(&html, k));
        assert!(new > 10.0, "{new}");
        assert!((expansion - 2.0 * new).abs() < 0.02, "{expansion} vs {new}");
        assert!(
            (contraction - new / 2.0).abs() < 0.02,
            "{contraction} vs {new}"
        );
        // Gains and losses share one scale spanning the plot height (220).
        assert!((new + expansion + contraction - 220.0).abs() < 0.05);
        // Health bars: the largest band (30) is 500 wide, the others in proportion (6 -> 100).
        assert!(html.contains("width=\"500.00\"") && html.contains("width=\"100.00\""));
    }
}
