//! Where a model's files come from: a local directory, or a Hugging Face hub id resolved through
//! the `hf-hub` crate and its cache (`HF_HOME`, `HF_ENDPOINT`; `HF_HUB_OFFLINE=1` means cache
//! only). A model is never half-found: every file the loader needs is resolved or the error says
//! which one is missing and why.

use std::path::{Path, PathBuf};

use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};

use super::preprocess::PREPROCESSOR_FILE;
use super::tokenizer::{MERGES_FILE, TOKENIZER_FILE, VOCAB_FILE};
use super::weights::{shards_of, PYTORCH_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE};
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";

/// True when `HF_HUB_OFFLINE` asks for the cache only (as `huggingface_hub` reads it).
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// Does `spec` look like a hub id (`name`, `owner/name`, optionally `@revision`) rather than a path?
pub fn looks_like_hub_id(spec: &str) -> bool {
    let id = spec.split('@').next().unwrap_or(spec);
    let parts: Vec<&str> = id.split('/').collect();
    !spec.starts_with(['.', '/', '~'])
        && (1..=2).contains(&parts.len())
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// Resolves a model given as a directory or a hub id to a local directory holding its files.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(Error::Model { model: spec.into(), msg: "is a file; expected a model directory or a hub id".into() });
    }
    if !looks_like_hub_id(spec) {
        return Err(Error::Model { model: spec.into(), msg: "model directory not found".into() });
    }
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (spec.to_string(), "main".to_string()),
    };
    let repo = Repo::with_revision(id, RepoType::Model, revision);
    HubFiles::new(repo, spec)?.fetch_model()
}

/// One file of a hub model repository (`owner/name`, optionally `@revision`), from the cache or
/// downloaded (unless `HF_HUB_OFFLINE`).
pub fn fetch_file(repo_spec: &str, file: &str) -> Result<PathBuf> {
    let (id, revision) = match repo_spec.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (repo_spec.to_string(), "main".to_string()),
    };
    let files = HubFiles::new(Repo::with_revision(id, RepoType::Model, revision), repo_spec)?;
    files.get(file).map_err(|m| files.err(m))
}

struct HubFiles {
    repo: Repo,
    spec: String,
    cache: Cache,
    api: Option<hf_hub::api::sync::ApiRepo>,
}

impl HubFiles {
    fn new(repo: Repo, spec: &str) -> Result<Self> {
        let cache = Cache::from_env();
        let api = if hub_offline() {
            None
        } else {
            let api = ApiBuilder::from_cache(cache.clone())
                .with_progress(true)
                .build()
                .map_err(|e| Error::Model { model: spec.into(), msg: format!("cannot set up the hub client: {e}") })?;
            Some(api.repo(repo.clone()))
        };
        Ok(HubFiles { repo, spec: spec.into(), cache, api })
    }

    /// One file: from the cache, else downloaded (unless offline).
    fn get(&self, file: &str) -> std::result::Result<PathBuf, String> {
        if let Some(p) = self.cache.repo(self.repo.clone()).get(file) {
            return Ok(p);
        }
        match &self.api {
            None => Err(format!("`{file}` is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set", self.cache.path().display())),
            Some(api) => api.get(file).map_err(|e| {
                format!(
                    "`{file}` is not in the Hugging Face cache at {} and could not be downloaded: {e}",
                    self.cache.path().display()
                )
            }),
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::Model { model: self.spec.clone(), msg }
    }

    fn fetch_model(&self) -> Result<PathBuf> {
        let config = self.get(CONFIG_FILE).map_err(|m| self.err(m))?;
        // The tokenizer: tokenizer.json, or the vocabulary and merges.
        if self.get(TOKENIZER_FILE).is_err() {
            self.get(VOCAB_FILE).and_then(|_| self.get(MERGES_FILE)).map_err(|m| self.err(format!("no tokenizer: {m}")))?;
        }
        // Optional: without it CLIP's default preprocessing for the config's image size is used.
        let _ = self.get(PREPROCESSOR_FILE);
        let weights = self.get(SAFETENSORS_FILE).map(|_| ()).or_else(|first| match self.get(SAFETENSORS_INDEX_FILE) {
            Ok(index) => {
                for shard in shards_of(&index).map_err(|e| e.to_string())? {
                    let name = shard.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                    self.get(&name)?;
                }
                Ok(())
            }
            Err(_) => self.get(PYTORCH_FILE).map(|_| ()).map_err(|_| format!("no weights: {first}")),
        });
        weights.map_err(|m| self.err(m))?;
        Ok(config.parent().expect("a cached file lives in a snapshot directory").to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(looks_like_hub_id("openai/clip-vit-large-patch14"));
        assert!(looks_like_hub_id("laion/CLIP-ViT-H-14-laion2B-s32B-b79K@main"));
        assert!(!looks_like_hub_id("./models/clip"));
        assert!(!looks_like_hub_id("/abs/clip"));
        assert!(!looks_like_hub_id("a/b/c"));
    }
}
