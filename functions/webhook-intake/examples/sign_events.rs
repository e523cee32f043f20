//! Writes the signed sample Function URL events of webhook-intake.
//!
//! ```text
//! cargo run -p webhook-intake --example sign-events                  # events/webhook-intake/*.json, fixed clock
//! cargo run -p webhook-intake --example sign-events -- --now --fresh --out /tmp/blapi-events
//! ```
//! `--now` signs with the current time (so a running function accepts it: the fixed clock of
//! the committed files is outside the 300 s tolerance), `--fresh` appends a unique suffix to
//! every event id (new events, not redeliveries of the committed ones), `--out DIR` writes elsewhere.
//! Bodies come from `events/webhook-intake/bodies/`, secrets from `infra/local-secrets.json`.

use std::path::PathBuf;
use webhook_intake::samples::{
    DEFAULT_SAMPLE, FIXED_NOW, LocalSecrets, SAMPLES, render, to_file_json, workspace_root,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = workspace_root(env!("CARGO_MANIFEST_DIR"));
    let events = root.join("events/webhook-intake");
    let mut out = events.clone();
    let mut at = FIXED_NOW;
    let mut suffix = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--now" => at = chrono::Utc::now().timestamp(),
            "--fresh" => suffix = Some(uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()),
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            other => {
                return Err(
                    format!("unknown argument {other}; use --now, --fresh, --out DIR").into(),
                );
            }
        }
    }
    let secrets = LocalSecrets::load(&root)?;
    std::fs::create_dir_all(&out)?;
    for sample in SAMPLES {
        let req = render(
            sample,
            &events.join("bodies"),
            &secrets,
            at,
            suffix.as_deref(),
        )?;
        let path = out.join(format!("{}.json", sample.name));
        std::fs::write(&path, to_file_json(&req))?;
        eprintln!("wrote {}", path.display());
        if sample.name == DEFAULT_SAMPLE {
            // What `make invoke-webhook-intake` sends without EVENT=.
            std::fs::write(out.join("default.json"), to_file_json(&req))?;
        }
    }
    Ok(())
}
