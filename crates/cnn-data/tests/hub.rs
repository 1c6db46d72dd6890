//! Hub datasets from a fake local hub cache under a temp `HF_HOME` (no network).
//! One test function: it sets process-wide environment variables.

mod common;

use std::path::Path;

use cnn_data::{hub_cache_dir, open, DataSpec};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lays out `datasets--OWNER--NAME/{refs/main, blobs/, snapshots/<sha>/...}` with the
/// snapshot files as symlinks into `blobs/`, as the hub clients do.
fn fake_repo(hub: &Path, repo_id: &str, files: &[(&str, Vec<u8>)]) {
    let repo = hub.join(format!("datasets--{}", repo_id.replace('/', "--")));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i:04}"));
        std::fs::write(&blob, bytes).unwrap();
        let link = repo.join("snapshots").join(SHA).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
    }
}

#[test]
fn hub_cache_is_read_offline() {
    let home = tempfile::tempdir().unwrap();
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let hub = home.path().join("hub");
    assert_eq!(hub_cache_dir(), hub);

    let jpeg = common::jpeg_bytes(8, 6);
    let mut files = vec![("README.md", b"# imagenette".to_vec())];
    for class in ["n01", "n02"] {
        for i in 0..3 {
            files.push((
                Box::leak(format!("train/{class}/{i}.JPEG").into_boxed_str()),
                jpeg.clone(),
            ));
        }
        files.push((
            Box::leak(format!("val/{class}/v.JPEG").into_boxed_str()),
            jpeg.clone(),
        ));
    }
    fake_repo(&hub, "frgfm/imagenette", &files);

    let ds = open(&DataSpec::hub("frgfm/imagenette")).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (6, 2));
    assert_eq!(ds.class_names(), ["n01", "n02"]);
    assert!(
        ds.description.contains("frgfm/imagenette@main") && ds.description.contains("0123456789")
    );
    // A commit hash works as the revision too.
    let by_sha = open(&DataSpec::Hub {
        repo_id: "frgfm/imagenette".into(),
        revision: SHA.into(),
        options: Default::default(),
    })
    .unwrap();
    assert_eq!(by_sha.train.len(), 6);
    // Images load through the symlinks.
    let b = cnn_data::Loader::new(&ds.train, cnn_data::LoaderConfig::train(4, 3))
        .unwrap()
        .batch(0, 0)
        .unwrap();
    assert_eq!(b.images.shape(), &[3, 3, 4, 4]);

    // `data/` prefix with a class-folder root (no split folders): split by the rule.
    let mut files = Vec::new();
    for class in ["a", "b"] {
        for i in 0..5 {
            files.push((
                Box::leak(format!("data/{class}/{i}.jpg").into_boxed_str()) as &str,
                jpeg.clone(),
            ));
        }
    }
    fake_repo(&hub, "someone/tiny", &files);
    let ds = open(&DataSpec::hub("someone/tiny")).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (8, 2));

    // HF_HUB_CACHE wins over HF_HOME.
    let other = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HUB_CACHE", other.path());
    assert_eq!(hub_cache_dir(), other.path());
    let e = open(&DataSpec::hub("someone/tiny"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not in the local hub cache") && e.contains("hf download"),
        "{e}"
    );
    std::env::remove_var("HF_HUB_CACHE");

    // Parquet-only repository, missing revision, malformed id: clear errors.
    fake_repo(
        &hub,
        "someone/parquet",
        &[("data/train-00000.parquet", b"PAR1".to_vec())],
    );
    let e = open(&DataSpec::hub("someone/parquet"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("parquet"), "{e}");
    let e = open(&DataSpec::Hub {
        repo_id: "someone/tiny".into(),
        revision: "v2".into(),
        options: Default::default(),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("revision \"v2\" not cached"), "{e}");
    assert!(open(&DataSpec::hub("../etc")).is_err());
}
