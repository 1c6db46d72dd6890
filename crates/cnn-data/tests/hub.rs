//! Hub datasets and model files from a fake local hub cache under a temp `HF_HOME` (no
//! network: `HF_HUB_OFFLINE` is set, so a `hub-download` build reads the cache only too).
//! One test function: it sets process-wide environment variables.

mod common;

use std::path::Path;

use cnn_data::{hub_cache_dir, hub_file, open, DataSpec};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lays out `datasets--OWNER--NAME/{refs/main, blobs/, snapshots/<sha>/...}` with the
/// snapshot files as symlinks into `blobs/`, as the hub clients do.
fn fake_repo(hub: &Path, repo_id: &str, files: &[(&str, Vec<u8>)]) {
    fake_repo_of("datasets", hub, repo_id, files)
}

/// [`fake_repo`] for repositories of `kind` (`datasets`, `models`).
fn fake_repo_of(kind: &str, hub: &Path, repo_id: &str, files: &[(&str, Vec<u8>)]) {
    let repo = hub.join(format!("{kind}--{}", repo_id.replace('/', "--")));
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

    model_files_are_found_in_the_cache(&hub);
}

/// `hub_file` (what `--init-from hub:OWNER/NAME/FILE` reads) on a model repository.
fn model_files_are_found_in_the_cache(hub: &Path) {
    let weights = b"not really safetensors".to_vec();
    fake_repo_of(
        "models",
        hub,
        "someone/resnet",
        &[
            ("model.safetensors", weights.clone()),
            ("sub/ckpt.pth", weights.clone()),
        ],
    );
    let snap = hub.join("models--someone--resnet/snapshots").join(SHA);
    let path = hub_file("someone/resnet", "main", "model.safetensors").unwrap();
    assert_eq!(path, snap.join("model.safetensors"));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        weights,
        "read through the symlink"
    );
    assert_eq!(
        hub_file("someone/resnet", "main", "sub/ckpt.pth").unwrap(),
        snap.join("sub/ckpt.pth")
    );
    // A commit hash as the revision (hf-hub only reads refs/<revision>).
    assert_eq!(
        hub_file("someone/resnet", SHA, "model.safetensors").unwrap(),
        snap.join("model.safetensors")
    );
    // A ref file ending in a newline, as some tools write it.
    std::fs::write(
        hub.join("models--someone--resnet/refs/v1"),
        format!("{SHA}\n"),
    )
    .unwrap();
    assert_eq!(
        hub_file("someone/resnet", "v1", "model.safetensors").unwrap(),
        snap.join("model.safetensors")
    );

    let e = hub_file("someone/resnet", "main", "absent.pth")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("absent.pth") && e.contains("hf download someone/resnet absent.pth"),
        "{e}"
    );
    let e = hub_file("nobody/net", "main", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("models--nobody--net") && e.contains("not in the local hub cache"),
        "{e}"
    );
    let e = hub_file("someone/resnet", "v2", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(e.contains("revision \"v2\" not cached"), "{e}");
    for bad in ["../model.safetensors", "/etc/passwd", "", "a//b"] {
        let e = hub_file("someone/resnet", "main", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a path inside the repository"), "{bad}: {e}");
    }
    assert!(hub_file("../etc", "main", "passwd").is_err());
}
