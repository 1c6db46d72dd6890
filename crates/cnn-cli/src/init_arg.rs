//! `--init-from FILE|hub:OWNER/NAME[@REV]/FILE`: the weights file a run starts from.

use anyhow::Context;
use cnn_train::InitFrom;
use std::path::Path;

/// The help text of `--init-from`.
pub const HELP: &str = "Initial weights: a safetensors or PyTorch .pth file, or \
hub:OWNER/NAME[@REV]/FILE from the local Hugging Face hub cache. Every tensor whose name and \
shape match is loaded; the classifier starts fresh when the class count differs. Ignored \
with --resume (the checkpoint continues the run) [default: the seeded initialisation]";

/// The file `arg` names, made absolute, with `arg` kept as the source.
pub fn resolve(arg: &str) -> anyhow::Result<InitFrom> {
    let path = match arg.strip_prefix("hub:") {
        Some(spec) => {
            let mut parts = spec.splitn(3, '/');
            let (Some(owner), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("--init-from {arg}: expected hub:OWNER/NAME[@REV]/FILE");
            };
            let (name, revision) = name.split_once('@').unwrap_or((name, "main"));
            cnn_data::hub_file(&format!("{owner}/{name}"), revision, file)
                .with_context(|| format!("--init-from {arg}"))?
        }
        None => {
            let path = Path::new(arg);
            if !path.is_file() {
                anyhow::bail!("{arg}: no such weights file (--init-from)");
            }
            // Absolute, so config.json says which file whatever folder ran it.
            std::fs::canonicalize(path).with_context(|| arg.to_string())?
        }
    };
    Ok(InitFrom {
        source: arg.to_string(),
        path,
    })
}
